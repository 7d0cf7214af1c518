//! The requests a placed call sends: building them in the dialog, INVITE, CANCEL, BYE,
//! re-INVITE/UPDATE, PRACK, the ACK of a 2xx, and the same request again with an answer to a
//! digest challenge.

use super::*;

/// Parts of a request inside the call.
pub(super) struct Target<'a> {
    pub(super) uri: &'a str,
    pub(super) to: &'a str,
    pub(super) routes: &'a [String],
}

impl Uac {
    /// A request of `call` with fresh Via branch, our From and the call's Call-ID.
    pub(super) fn build(&mut self, call: CallRef, method: Method, cseq: u32, target: Target<'_>) -> Request {
        let branch = format!("z9hG4bK{}", self.random_token(16));
        let c = &self.calls[&call];
        let mut headers = message::Headers::default();
        headers.push(
            "Via",
            format!("SIP/2.0/{} {};branch={branch};rport", self.config.transport.via_name(), self.config.local),
        );
        headers.push("Max-Forwards", "70");
        headers.push("From", c.from.as_str());
        headers.push("To", target.to);
        headers.push("Call-ID", c.call_id.as_str());
        headers.push("CSeq", format!("{cseq} {method}"));
        for route in target.routes {
            headers.push("Route", route.as_str());
        }
        if matches!(method, Method::Invite | Method::Update) {
            headers.push("Contact", self.contact());
            headers.push("Allow", ALLOW);
        }
        headers.push("User-Agent", self.config.user_agent.as_str());
        Request { method, uri: target.uri.to_string(), headers, body: Vec::new() }
    }

    pub(super) fn contact(&self) -> String {
        let transport = match self.config.transport {
            crate::sip::transaction::Transport::Udp => "",
            crate::sip::transaction::Transport::Tcp => ";transport=tcp",
            crate::sip::transaction::Transport::Tls => ";transport=tls",
        };
        format!("<sip:interwork@{}{transport}>", self.config.local)
    }

    pub(super) fn send(&mut self, call: CallRef, request: Request) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        let sent = Sent { call, cseq: request.cseq(), method: request.method.clone() };
        let to = c.next_hop;
        if request.method != Method::Cancel {
            c.outstanding.push(Outstanding { request: request.clone(), auth_tries: 0 });
        }
        self.outputs.push_back(UacOutput::Request { sent, request, to });
    }

    /// Sends the call's (next) INVITE: the first, or after a challenge or a 422.
    pub(in crate::sip::uac) fn send_invite(&mut self, _now: Instant, call: CallRef) {
        let config = self.config.clone();
        let Some(c) = self.calls.get_mut(&call) else { return };
        c.cseq += 1;
        let (cseq, uri, to) = (c.cseq, c.request_uri.clone(), c.to.clone());
        let mut invite = self.build(call, Method::Invite, cseq, Target { uri: &uri, to: &to, routes: &[] });
        let c = self.calls.get_mut(&call).expect("present above");
        let h = &mut invite.headers;
        let mut supported = vec!["timer"];
        if config.require_100rel {
            h.push("Require", "100rel");
        } else {
            supported.push("100rel");
        }
        h.push("Supported", supported.join(", "));
        if let Some(se) = c.session_expires {
            h.push("Session-Expires", se.to_string());
            h.push("Min-SE", config.min_se.to_string());
        }
        for (name, value) in &c.extra_headers {
            h.push(name, value.as_str());
        }
        if let Some(sdp) = &c.local_sdp {
            h.push("Content-Type", "application/sdp");
            invite.body = sdp.clone();
        }
        if let CallState::Inviting(inviting) = &mut c.state {
            inviting.invite = invite.clone();
        }
        self.send(call, invite);
    }

    /// CANCEL for the call's INVITE (§9.1: same Request-URI, Call-ID, From, To, CSeq number and
    /// top Via as the INVITE).
    pub(in crate::sip::uac) fn send_cancel(&mut self, call: CallRef) {
        let Some(CallState::Inviting(inviting)) = self.calls.get(&call).map(|c| &c.state) else { return };
        let invite = &inviting.invite;
        let mut cancel = Request {
            method: Method::Cancel,
            uri: invite.uri.clone(),
            headers: message::Headers::default(),
            body: Vec::new(),
        };
        for name in ["Via", "Max-Forwards", "From", "To", "Call-ID"] {
            if let Some(v) = invite.headers.get(name) {
                cancel.headers.push(name, v);
            }
        }
        cancel.headers.push("CSeq", format!("{} CANCEL", invite.cseq()));
        for route in invite.headers.get_all("Route") {
            cancel.headers.push("Route", route);
        }
        self.send(call, cancel);
    }

    /// BYE in the confirmed dialog; the call ends with `why` once it is answered.
    pub(in crate::sip::uac) fn send_bye(&mut self, _now: Instant, call: CallRef, why: EndReason) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        let CallState::Confirmed(d) = &c.state else { return };
        c.cseq += 1;
        let cseq = c.cseq;
        let (uri, to, routes) = (d.remote_target.clone(), d.to.clone(), d.routes.clone());
        c.state = CallState::Ending { why };
        let bye = self.build(call, Method::Bye, cseq, Target { uri: &uri, to: &to, routes: &routes });
        self.send(call, bye);
    }

    /// A re-INVITE or UPDATE: the owner's new offer, or a session refresh (`refresh`; UPDATE
    /// without a body when the far end allows it, else a re-INVITE with our current offer).
    pub(in crate::sip::uac) fn send_modify(
        &mut self,
        _now: Instant,
        call: CallRef,
        sdp: Option<Vec<u8>>,
        update: bool,
        refresh: bool,
    ) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        let local_sdp = c.local_sdp.clone();
        let Some(d) = c.dialog() else { return };
        let update = if refresh { d.peer_update } else { update };
        let sdp = if refresh && !update { local_sdp } else { sdp };
        let (uri, to, routes) = (d.remote_target.clone(), d.to.clone(), d.routes.clone());
        // A refresh is ours to make: we are its refresher.
        let refresher = d.session.as_ref().map(|s| (s.interval, s.we_refresh() || refresh));
        c.cseq += 1;
        let cseq = c.cseq;
        let method = if update { Method::Update } else { Method::Invite };
        let mut request = self.build(call, method.clone(), cseq, Target { uri: &uri, to: &to, routes: &routes });
        request.headers.push("Supported", "timer, 100rel");
        if let Some((interval, we)) = refresher {
            // The roles named are this transaction's: we are its UAC.
            request.headers.push("Session-Expires", format!("{interval};refresher={}", if we { "uac" } else { "uas" }));
        }
        if let Some(sdp) = &sdp {
            request.headers.push("Content-Type", "application/sdp");
            request.body = sdp.clone();
        }
        if let Some(d) = self.calls.get_mut(&call).and_then(Call::dialog) {
            d.modifying = Some(Modifying { cseq, method, refresh, sdp });
        }
        self.send(call, request);
    }

    /// The ACK of the INVITE's 2xx (§13.2.2.4), with our answer when the 2xx carried the offer.
    pub(super) fn send_ack(&mut self, call: CallRef, cseq: u32, body: Option<Vec<u8>>) -> Vec<u8> {
        let Some(c) = self.calls.get(&call) else { return Vec::new() };
        let Some((uri, to, routes)) = (match &c.state {
            CallState::Confirmed(d) => Some((d.remote_target.clone(), d.to.clone(), d.routes.clone())),
            _ => None,
        }) else {
            return Vec::new();
        };
        let mut ack = self.build(call, Method::Ack, cseq, Target { uri: &uri, to: &to, routes: &routes });
        if let Some(sdp) = body {
            ack.headers.push("Content-Type", "application/sdp");
            ack.body = sdp;
        }
        let bytes = ack.to_bytes();
        let to = self.calls[&call].next_hop;
        self.outputs.push_back(UacOutput::Transmit { to, bytes: bytes.clone() });
        bytes
    }

    /// A 401 or 407: the request again with an answer to the challenge, unless we cannot.
    pub(super) fn challenged(&mut self, call: CallRef, outstanding: Outstanding, response: &Response) {
        let status = response.status;
        let c = self.calls.get_mut(&call).expect("caller checked");
        let proxy = status == 407;
        let header = if proxy { "Proxy-Authenticate" } else { "WWW-Authenticate" };
        let challenges: Vec<Challenge> =
            response.headers.get_all(header).filter_map(|v| Challenge::parse(v, proxy).ok()).collect();
        let answered_before =
            outstanding.request.headers.get(if proxy { "Proxy-Authorization" } else { "Authorization" }).is_some();
        let stale = challenges.iter().all(|ch| ch.stale);
        let usable = c.credentials.is_some()
            && !challenges.is_empty()
            && outstanding.auth_tries < AUTH_TRIES
            && (!answered_before || stale);
        if !usable {
            self.auth_failed(call, outstanding.request.method, status);
            return;
        }
        let creds = c.credentials.clone().expect("checked");
        let mut request = outstanding.request;
        c.cseq += 1;
        let cseq = c.cseq;
        let method = request.method.clone();
        request.headers.set("CSeq", format!("{cseq} {method}"));
        let branch = format!("z9hG4bK{}", self.random_token(16));
        let via = format!("SIP/2.0/{} {};branch={branch};rport", self.config.transport.via_name(), self.config.local);
        request.headers.set("Via", via);
        // Answers of other realms (a proxy's and the server's) stay; this status's are replaced.
        let answer_header = challenges[0].answer_header();
        request.headers.remove(answer_header);
        for challenge in &challenges {
            let cnonce = self.random_token(16);
            let value = challenge.answer(&creds.username, &creds.password, method.as_str(), &request.uri, 1, &cnonce);
            request.headers.push(answer_header, value);
        }
        let c = self.calls.get_mut(&call).expect("present");
        match (&mut c.state, &method) {
            (CallState::Inviting(i), Method::Invite) => i.invite = request.clone(),
            (CallState::Confirmed(d), Method::Invite | Method::Update) => {
                if let Some(m) = d.modifying.as_mut() {
                    m.cseq = cseq;
                }
            }
            _ => {}
        }
        let tries = outstanding.auth_tries + 1;
        let sent = Sent { call, cseq, method };
        c.outstanding.push(Outstanding { request: request.clone(), auth_tries: tries });
        let to = c.next_hop;
        self.outputs.push_back(UacOutput::Request { sent, request, to });
    }

    pub(super) fn auth_failed(&mut self, call: CallRef, method: Method, status: u16) {
        let state = self.calls.get(&call).map(|c| matches!(c.state, CallState::Inviting(_)));
        match (state, method) {
            (Some(true), Method::Invite) => self.end(call, EndReason::AuthFailed { status }),
            (Some(_), Method::Bye) => {
                if let Some(CallState::Ending { why }) = self.calls.get(&call).map(|c| &c.state) {
                    let why = why.clone();
                    self.end(call, why);
                }
            }
            (Some(false), Method::Invite | Method::Update) => {
                let refresh = self
                    .calls
                    .get_mut(&call)
                    .and_then(Call::dialog)
                    .and_then(|d| d.modifying.take())
                    .is_some_and(|m| m.refresh);
                if !refresh {
                    self.event(call, UacEvent::ModifyFailed { status });
                }
            }
            _ => {}
        }
    }

    pub(super) fn send_prack(
        &mut self,
        call: CallRef,
        rack: &str,
        remote_tag: &str,
        target: &str,
        routes: &[String],
        body: Option<Vec<u8>>,
    ) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        c.cseq += 1;
        let cseq = c.cseq;
        let to = format!("{};tag={remote_tag}", c.to);
        let mut prack = self.build(call, Method::Prack, cseq, Target { uri: target, to: &to, routes });
        prack.headers.push("RAck", rack);
        if let Some(sdp) = body {
            prack.headers.push("Content-Type", "application/sdp");
            prack.body = sdp;
        }
        self.send(call, prack);
    }
}
