//! A placed call's states and what moves it: the INVITE and its responses, the dialog it makes,
//! requests inside it both ways, and the session timer.

use std::time::{Duration, Instant};

use super::super::message::{self, Method, Request, Response, header_param, header_uri};
use super::digest::Challenge;
use super::{CallRef, Credentials, Dial, EndReason, Sent, Timer, Uac, UacConfig, UacError, UacEvent, UacOutput};
use crate::sip::transaction::{Peer, TxId};

/// How many times one request is resent with credentials before the call gives up.
const AUTH_TRIES: u8 = 2;

/// RFC 3261 T2: the longest interval between 2xx retransmissions.
const T2: Duration = Duration::from_secs(4);

/// One placed call.
pub(super) struct Call {
    pub(super) call_id: String,
    next_hop: Peer,
    request_uri: String,
    /// Our From value, with our tag.
    from: String,
    /// The To value as dialled (no tag).
    to: String,
    credentials: Option<Credentials>,
    extra_headers: Vec<(String, String)>,
    /// The last CSeq we used.
    cseq: u32,
    /// Our current session description (re-sent by re-INVITE refreshes).
    local_sdp: Option<Vec<u8>>,
    /// The session interval we ask for (raised by 422).
    session_expires: Option<u32>,
    /// Requests sent and not yet finally answered (for digest retries and failure reports).
    outstanding: Vec<Outstanding>,
    /// An offer of the far end awaiting [`Uac::answer`].
    pending_offer: Option<OfferFrom>,
    pub(super) state: CallState,
}

/// A request awaiting its final response.
struct Outstanding {
    request: Request,
    /// How many times it was resent with credentials.
    auth_tries: u8,
}

/// Where the far end's pending offer came in, which says where the answer goes.
enum OfferFrom {
    /// A reliable provisional: the answer goes in its PRACK.
    Provisional { rack: String, remote_tag: String, target: String, routes: Vec<String> },
    /// The INVITE's 2xx: the answer goes in the ACK.
    Final,
    /// A re-INVITE: the answer goes in its 2xx.
    ReInvite { tx: TxId, request: Box<Request> },
    /// An UPDATE: the answer goes in its 2xx.
    Update { tx: TxId, request: Box<Request> },
}

/// Where a call is.
pub(super) enum CallState {
    /// INVITE sent; no 2xx yet.
    Inviting(Inviting),
    /// The 2xx came and was ACKed (or its ACK waits for our answer).
    Confirmed(Box<Dialog>),
    /// We sent BYE.
    Ending {
        /// Why, for the owner once the BYE is answered.
        why: EndReason,
    },
}

/// The INVITE's progress.
pub(super) struct Inviting {
    /// The INVITE as last sent (CANCEL copies it).
    invite: Request,
    /// A provisional came: CANCEL may go (§9.1).
    pub(super) provisional: bool,
    /// The owner hung up; CANCEL sent or waiting for the first provisional.
    pub(super) cancel_wanted: bool,
    /// We got the answer to our offer already (in a 1xx).
    answered: bool,
    /// The last RSeq of a reliable provisional (RFC 3262 §4).
    rseq: Option<u32>,
    /// A 422 was followed once.
    raised_interval: bool,
}

/// A confirmed dialog (§12).
pub(super) struct Dialog {
    remote_tag: String,
    /// The To value with the far end's tag.
    to: String,
    remote_target: String,
    /// Record-Route, reversed (§12.1.2).
    routes: Vec<String>,
    remote_cseq: Option<u32>,
    /// The far end allows UPDATE: refreshes use it instead of re-INVITE.
    peer_update: bool,
    invite_cseq: u32,
    /// The ACK of the INVITE's 2xx, resent when the 2xx is (§13.2.2.4).
    ack: Option<Vec<u8>>,
    /// Our re-INVITE or UPDATE in progress.
    pub(super) modifying: Option<Modifying>,
    session: Option<SessionTimer>,
    /// The 2xx of a re-INVITE we answered, retransmitted until its ACK (§13.3.1.4).
    retransmit: Option<Retransmit>,
    /// Our 2xx to a re-INVITE without an offer carried the offer: its ACK carries the answer.
    answer_in_ack: bool,
}

/// A re-INVITE or UPDATE we sent.
pub(super) struct Modifying {
    cseq: u32,
    method: Method,
    /// A session refresh, not the owner's change: its outcome is not reported.
    refresh: bool,
    sdp: Option<Vec<u8>>,
}

/// RFC 4028 state of a dialog.
struct SessionTimer {
    interval: u32,
    /// Our refresh is due (`None` when the far end refreshes or ours went).
    refresh_at: Option<Instant>,
    /// Without a refresh by then, the session is over.
    expire_at: Instant,
}

impl SessionTimer {
    fn start(now: Instant, interval: u32, we_refresh: bool) -> Self {
        let secs = Duration::from_secs(u64::from(interval));
        Self { interval, refresh_at: we_refresh.then(|| now + secs / 2), expire_at: now + secs }
    }

    /// When to act: our refresh, else the BYE shortly before expiry (RFC 4028 §10: the smaller
    /// of 32 s and a third of the interval).
    fn deadline(&self) -> Instant {
        self.refresh_at.unwrap_or_else(|| self.expire_at - Duration::from_secs(u64::from((self.interval / 3).min(32))))
    }

    fn we_refresh(&self) -> bool {
        self.refresh_at.is_some()
    }
}

struct Retransmit {
    bytes: Vec<u8>,
    interval: Duration,
    next: Instant,
    give_up: Instant,
}

impl Call {
    pub(super) fn new(dial: Dial, call_id: String, local_tag: String, config: &UacConfig) -> Self {
        let invite = Request {
            method: Method::Invite,
            uri: dial.uri.clone(),
            headers: message::Headers::default(),
            body: Vec::new(),
        };
        Self {
            call_id,
            next_hop: dial.next_hop,
            request_uri: dial.uri,
            from: format!("<{}>;tag={local_tag}", dial.from),
            to: format!("<{}>", dial.to),
            credentials: dial.credentials,
            extra_headers: dial.headers,
            cseq: 0,
            local_sdp: dial.offer,
            session_expires: config.session_expires.map(|s| s.max(config.min_se)),
            outstanding: Vec::new(),
            pending_offer: None,
            state: CallState::Inviting(Inviting {
                invite,
                provisional: false,
                cancel_wanted: false,
                answered: false,
                rseq: None,
                raised_interval: false,
            }),
        }
    }

    /// An offer/answer exchange is in progress either way (RFC 3261 §14.1).
    pub(super) fn busy(&self) -> bool {
        self.pending_offer.is_some() || matches!(&self.state, CallState::Confirmed(d) if d.modifying.is_some())
    }

    fn dialog(&mut self) -> Option<&mut Dialog> {
        match &mut self.state {
            CallState::Confirmed(d) => Some(d),
            _ => None,
        }
    }
}

/// Parts of a request inside the call.
struct Target<'a> {
    uri: &'a str,
    to: &'a str,
    routes: &'a [String],
}

impl Uac {
    /// A request of `call` with fresh Via branch, our From and the call's Call-ID.
    fn build(&mut self, call: CallRef, method: Method, cseq: u32, target: Target<'_>) -> Request {
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
            headers.push("Allow", "INVITE, ACK, CANCEL, BYE, UPDATE, PRACK, OPTIONS, INFO");
        }
        headers.push("User-Agent", self.config.user_agent.as_str());
        Request { method, uri: target.uri.to_string(), headers, body: Vec::new() }
    }

    fn contact(&self) -> String {
        let transport = match self.config.transport {
            crate::sip::transaction::Transport::Udp => "",
            crate::sip::transaction::Transport::Tcp => ";transport=tcp",
            crate::sip::transaction::Transport::Tls => ";transport=tls",
        };
        format!("<sip:interwork@{}{transport}>", self.config.local)
    }

    fn send(&mut self, call: CallRef, request: Request) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        let sent = Sent { call, cseq: request.cseq(), method: request.method.clone() };
        let to = c.next_hop;
        if request.method != Method::Cancel {
            c.outstanding.push(Outstanding { request: request.clone(), auth_tries: 0 });
        }
        self.outputs.push_back(UacOutput::Request { sent, request, to });
    }

    /// Sends the call's (next) INVITE: the first, or after a challenge or a 422.
    pub(super) fn send_invite(&mut self, _now: Instant, call: CallRef) {
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
    pub(super) fn send_cancel(&mut self, call: CallRef) {
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
    pub(super) fn send_bye(&mut self, _now: Instant, call: CallRef, why: EndReason) {
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
    pub(super) fn send_modify(
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
    fn send_ack(&mut self, call: CallRef, cseq: u32, body: Option<Vec<u8>>) -> Vec<u8> {
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

    /// A response to a request of ours.
    pub fn handle_response(&mut self, now: Instant, response: Response) {
        let Some(call) = self.call_of(response.headers.get("Call-ID").unwrap_or("")) else { return };
        let Some((cseq, method)) =
            response.headers.get("CSeq").and_then(|v| message::parse_cseq(v).ok()).map(|(n, m)| (n, Method::parse(m)))
        else {
            return;
        };
        let status = response.status;
        if status >= 200 {
            let Some(c) = self.calls.get_mut(&call) else { return };
            let Some(i) = c.outstanding.iter().position(|o| o.request.cseq() == cseq && o.request.method == method)
            else {
                // A retransmitted final: only the INVITE's 2xx matters (its ACK is resent).
                if method == Method::Invite && (200..300).contains(&status) {
                    self.invite_2xx_again(call, &response);
                }
                return;
            };
            let outstanding = c.outstanding.remove(i);
            if matches!(status, 401 | 407) && method != Method::Cancel {
                self.challenged(call, outstanding, &response);
                return;
            }
        }
        match method {
            Method::Invite => self.invite_response(now, call, cseq, response),
            Method::Update => self.modify_response(now, call, cseq, response),
            Method::Bye if status >= 200 => {
                if let Some(CallState::Ending { why }) = self.calls.get(&call).map(|c| &c.state) {
                    let why = why.clone();
                    self.end(call, why);
                }
            }
            _ => {}
        }
    }

    /// A transaction of ours failed (timer B or F, or the transport).
    pub fn request_failed(&mut self, now: Instant, sent: Sent) {
        let Some(c) = self.calls.get_mut(&sent.call) else { return };
        c.outstanding.retain(|o| !(o.request.cseq() == sent.cseq && o.request.method == sent.method));
        match (&c.state, &sent.method) {
            (CallState::Inviting(i), Method::Invite) => {
                let why = if i.cancel_wanted { EndReason::Cancelled } else { EndReason::Timeout };
                self.end(sent.call, why);
            }
            (CallState::Ending { why }, Method::Bye) => {
                let why = why.clone();
                self.end(sent.call, why);
            }
            (CallState::Confirmed(d), Method::Invite | Method::Update)
                if d.modifying.as_ref().is_some_and(|m| m.cseq == sent.cseq) =>
            {
                // RFC 5057: a timed-out request inside the dialog ends it.
                self.send_bye(now, sent.call, EndReason::DialogLost);
            }
            _ => {}
        }
    }

    /// A 401 or 407: the request again with an answer to the challenge, unless we cannot.
    fn challenged(&mut self, call: CallRef, outstanding: Outstanding, response: &Response) {
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

    fn auth_failed(&mut self, call: CallRef, method: Method, status: u16) {
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

    fn invite_response(&mut self, now: Instant, call: CallRef, cseq: u32, response: Response) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        match &mut c.state {
            CallState::Inviting(i) if i.invite.cseq() == cseq => match response.status {
                100 => {}
                101..=199 => self.provisional(call, response),
                200..=299 => self.answered(now, call, cseq, response),
                _ => self.refused(now, call, response),
            },
            CallState::Confirmed(d) if d.modifying.as_ref().is_some_and(|m| m.cseq == cseq) => {
                self.modify_response(now, call, cseq, response);
            }
            CallState::Confirmed(_) | CallState::Ending { .. } if (200..300).contains(&response.status) => {
                self.invite_2xx_again(call, &response);
            }
            _ => {}
        }
    }

    fn provisional(&mut self, call: CallRef, response: Response) {
        let c = self.calls.get_mut(&call).expect("caller checked");
        let offered = c.local_sdp.is_some();
        let CallState::Inviting(i) = &mut c.state else { return };
        let reliable = list_has(response.headers.get("Require"), "100rel");
        let rseq = response.headers.get("RSeq").and_then(|v| v.trim().parse::<u32>().ok());
        let remote_tag = to_tag(&response);
        if reliable {
            let (Some(rseq), Some(remote_tag)) = (rseq, remote_tag) else { return };
            match i.rseq {
                // A retransmission (or out of order): already acknowledged, not processed again.
                Some(last) if rseq != last.wrapping_add(1) => return,
                _ => i.rseq = Some(rseq),
            }
            let rack = format!("{rseq} {} INVITE", i.invite.cseq());
            let target = contact_uri(&response).unwrap_or_else(|| c.request_uri.clone());
            let routes = route_set(&response);
            let newly_provisional = !i.provisional;
            i.provisional = true;
            let cancel_now = newly_provisional && i.cancel_wanted;
            let sdp = has_sdp(&response.headers, &response.body).then(|| response.body.clone());
            let status = response.status;
            let answered = i.answered;
            i.answered = answered || (offered && sdp.is_some());
            self.event(call, UacEvent::Progress { status });
            match sdp {
                Some(sdp) if !offered => {
                    // The offer is in the reliable 1xx: its PRACK carries the answer.
                    let c = self.calls.get_mut(&call).expect("present");
                    c.pending_offer =
                        Some(OfferFrom::Provisional { rack, remote_tag: remote_tag.to_string(), target, routes });
                    self.event(call, UacEvent::Offer { sdp });
                }
                sdp => {
                    if let Some(sdp) = sdp.filter(|_| !answered) {
                        self.event(call, UacEvent::Answer { sdp });
                    }
                    self.send_prack(call, &rack, remote_tag, &target, &routes, None);
                }
            }
            if cancel_now {
                self.send_cancel(call);
            }
            return;
        }
        let newly_provisional = !i.provisional;
        i.provisional = true;
        let cancel_now = newly_provisional && i.cancel_wanted;
        let early_answer =
            (offered && !i.answered && has_sdp(&response.headers, &response.body)).then(|| response.body.clone());
        if early_answer.is_some() {
            i.answered = true;
        }
        if response.status != 100 {
            self.event(call, UacEvent::Progress { status: response.status });
        }
        if let Some(sdp) = early_answer {
            self.event(call, UacEvent::Answer { sdp });
        }
        if cancel_now {
            self.send_cancel(call);
        }
    }

    fn send_prack(
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

    /// The INVITE's first 2xx: the dialog is made, ACKed (or its ACK waits for our answer).
    fn answered(&mut self, now: Instant, call: CallRef, cseq: u32, response: Response) {
        let c = self.calls.get_mut(&call).expect("caller checked");
        let CallState::Inviting(i) = &c.state else { return };
        let (cancelled, answered) = (i.cancel_wanted, i.answered);
        let offered = c.local_sdp.is_some();
        let session = match response.headers.get("Session-Expires") {
            Some(v) => session_expires(v).map(|(interval, refresher)| {
                SessionTimer::start(now, interval, !refresher.is_some_and(|r| r.eq_ignore_ascii_case("uas")))
            }),
            None => None,
        };
        let dialog = Dialog {
            remote_tag: to_tag(&response).unwrap_or_default().to_string(),
            to: response.headers.get("To").unwrap_or(&c.to).to_string(),
            remote_target: contact_uri(&response).unwrap_or_else(|| c.request_uri.clone()),
            routes: route_set(&response),
            remote_cseq: None,
            peer_update: list_has(response.headers.get("Allow"), "UPDATE"),
            invite_cseq: cseq,
            ack: None,
            modifying: None,
            session,
            retransmit: None,
            answer_in_ack: false,
        };
        let deadline = dialog.session.as_ref().map(SessionTimer::deadline);
        c.state = CallState::Confirmed(Box::new(dialog));
        // A provisional's offer left unanswered is moot now.
        c.pending_offer = None;
        if let Some(at) = deadline {
            self.schedule(at, call, Timer::Session);
        }
        let sdp = has_sdp(&response.headers, &response.body).then(|| response.body.clone());
        if !offered && let Some(sdp) = sdp.clone().filter(|_| !cancelled) {
            // The offer is in the 2xx: the ACK waits for the owner's answer.
            let c = self.calls.get_mut(&call).expect("present");
            c.pending_offer = Some(OfferFrom::Final);
            self.event(call, UacEvent::Connected);
            self.event(call, UacEvent::Offer { sdp });
            return;
        }
        let ack = self.send_ack(call, cseq, None);
        if let Some(d) = self.calls.get_mut(&call).and_then(Call::dialog) {
            d.ack = Some(ack);
        }
        if cancelled {
            // The CANCEL crossed the 2xx: the call is up, so it ends with BYE (§9.1).
            self.send_bye(now, call, EndReason::Cancelled);
            return;
        }
        if let Some(sdp) = sdp.filter(|_| offered && !answered) {
            self.event(call, UacEvent::Answer { sdp });
        }
        self.event(call, UacEvent::Connected);
    }

    /// A 2xx to the INVITE after the first: ACK it again, or when it comes from another fork,
    /// ACK it and end that dialog (§13.2.2.4).
    fn invite_2xx_again(&mut self, call: CallRef, response: &Response) {
        let Some(c) = self.calls.get(&call) else { return };
        let CallState::Confirmed(d) = &c.state else { return };
        if to_tag(response) == Some(d.remote_tag.as_str()) {
            if let Some(ack) = d.ack.clone() {
                let to = c.next_hop;
                self.outputs.push_back(UacOutput::Transmit { to, bytes: ack });
            }
            return;
        }
        let (cseq, next_hop) = (d.invite_cseq, c.next_hop);
        let fork = response.headers.get("To").unwrap_or("").to_string();
        let target = contact_uri(response).unwrap_or_else(|| c.request_uri.clone());
        let routes = route_set(response);
        let mut ack = self.build(call, Method::Ack, cseq, Target { uri: &target, to: &fork, routes: &routes });
        ack.headers.remove("User-Agent");
        self.outputs.push_back(UacOutput::Transmit { to: next_hop, bytes: ack.to_bytes() });
        let bye = self.build(call, Method::Bye, cseq + 1, Target { uri: &target, to: &fork, routes: &routes });
        // Not tracked: that dialog is not the call's, and its BYE's answer changes nothing.
        self.outputs.push_back(UacOutput::Request {
            sent: Sent { call, cseq: cseq + 1, method: Method::Bye },
            request: bye,
            to: next_hop,
        });
    }

    /// A final 3xx–6xx to the INVITE (the transaction layer ACKed it).
    fn refused(&mut self, now: Instant, call: CallRef, response: Response) {
        let c = self.calls.get_mut(&call).expect("caller checked");
        let CallState::Inviting(i) = &mut c.state else { return };
        let status = response.status;
        if status == 422
            && !i.raised_interval
            && !i.cancel_wanted
            && let Some(min) = response.headers.get("Min-SE").and_then(session_expires).map(|(s, _)| s)
        {
            i.raised_interval = true;
            c.session_expires = Some(c.session_expires.unwrap_or(0).max(min));
            self.send_invite(now, call);
            return;
        }
        let why = match status {
            487 if i.cancel_wanted => EndReason::Cancelled,
            408 => EndReason::Timeout,
            _ => EndReason::Refused { status, reason: response.reason.clone() },
        };
        self.end(call, why);
    }

    fn modify_response(&mut self, now: Instant, call: CallRef, cseq: u32, response: Response) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        let Some(d) = c.dialog() else { return };
        if d.modifying.as_ref().is_none_or(|m| m.cseq != cseq) || response.status < 200 {
            return;
        }
        let m = d.modifying.take().expect("checked");
        let status = response.status;
        if (200..300).contains(&status) {
            if let Some(v) = response.headers.get("Session-Expires").and_then(session_expires) {
                // The refresher named is the role in this transaction: "uac" is us.
                let we = !v.1.is_some_and(|r| r.eq_ignore_ascii_case("uas"));
                d.session = Some(SessionTimer::start(now, v.0, we));
            } else if let Some(s) = d.session.as_ref() {
                d.session = Some(SessionTimer::start(now, s.interval, s.we_refresh() || m.refresh));
            }
            let deadline = d.session.as_ref().map(SessionTimer::deadline);
            if m.sdp.is_some() {
                c.local_sdp = m.sdp.clone();
            }
            if m.method == Method::Invite {
                self.send_ack(call, cseq, None);
            }
            if let Some(at) = deadline {
                self.schedule(at, call, Timer::Session);
            }
            if !m.refresh && m.sdp.is_some() && has_sdp(&response.headers, &response.body) {
                self.event(call, UacEvent::Answer { sdp: response.body });
            }
            return;
        }
        match status {
            481 | 408 => self.end_lost(now, call),
            422 if m.refresh => {
                if let Some(min) = response.headers.get("Min-SE").and_then(session_expires).map(|(s, _)| s)
                    && let Some(s) = d.session.as_mut()
                    && s.interval < min
                {
                    s.interval = min;
                    self.send_modify(now, call, None, false, true);
                }
            }
            _ if m.refresh => {}
            _ => self.event(call, UacEvent::ModifyFailed { status }),
        }
    }

    /// The far end no longer has the dialog: over, without a BYE.
    fn end_lost(&mut self, _now: Instant, call: CallRef) {
        self.end(call, EndReason::DialogLost);
    }

    /// A request the far end sent inside one of our calls; `false` when it is not ours (the
    /// caller answers it otherwise).
    pub fn handle_request(&mut self, now: Instant, tx: TxId, request: Request) -> bool {
        let Some(call) = self.call_of(request.call_id()) else { return false };
        let c = self.calls.get_mut(&call).expect("indexed");
        let ours = request.to_tag().is_some_and(|t| c.from.ends_with(&format!(";tag={t}")));
        let Some(d) = c.dialog().filter(|d| ours && request.from_tag() == Some(d.remote_tag.as_str())) else {
            let r = Response::to(&request, 481, message::reason_phrase(481), None);
            self.outputs.push_back(UacOutput::Respond { tx, response: r });
            return true;
        };
        let cseq = request.cseq();
        if d.remote_cseq.is_some_and(|last| cseq <= last) {
            let r = Response::to(&request, 500, "Server Internal Error", None);
            self.outputs.push_back(UacOutput::Respond { tx, response: r });
            return true;
        }
        d.remote_cseq = Some(cseq);
        match request.method {
            Method::Bye => {
                self.respond(tx, &request, 200, None);
                self.end(call, EndReason::RemoteHangup);
            }
            Method::Invite | Method::Update => self.remote_modify(now, call, tx, request),
            Method::Options | Method::Info => {
                self.respond(tx, &request, 200, None);
            }
            _ => {
                let mut r = Response::to(&request, 405, message::reason_phrase(405), None);
                r.headers.push("Allow", "INVITE, ACK, CANCEL, BYE, UPDATE, PRACK, OPTIONS, INFO");
                self.outputs.push_back(UacOutput::Respond { tx, response: r });
            }
        }
        true
    }

    /// A response inside the dialog, with our Contact for target refreshes.
    fn respond(&mut self, tx: TxId, request: &Request, status: u16, body: Option<&[u8]>) -> Response {
        let mut r = Response::to(request, status, message::reason_phrase(status), None);
        if matches!(request.method, Method::Invite | Method::Update) && (200..300).contains(&status) {
            r.headers.push("Contact", self.contact());
        }
        if let Some(body) = body {
            r.headers.push("Content-Type", "application/sdp");
            r.body = body.to_vec();
        }
        self.outputs.push_back(UacOutput::Respond { tx, response: r.clone() });
        r
    }

    /// A re-INVITE or UPDATE from the far end: an offer for the owner, or a refresh answered here.
    fn remote_modify(&mut self, now: Instant, call: CallRef, tx: TxId, request: Request) {
        let c = self.calls.get_mut(&call).expect("caller checked");
        let min_se = self.config.min_se;
        let glare = c.pending_offer.is_some()
            || c.dialog()
                .is_some_and(|d| d.modifying.as_ref().is_some_and(|m| m.sdp.is_some() || m.method == Method::Invite));
        if glare && (request.method == Method::Invite || has_sdp(&request.headers, &request.body)) {
            // §14.2: an exchange of ours is in progress.
            let mut r = Response::to(&request, 491, message::reason_phrase(491), None);
            r.headers.push("Retry-After", "2");
            self.outputs.push_back(UacOutput::Respond { tx, response: r });
            return;
        }
        if let Some(asked) = request.headers.get("Session-Expires").and_then(session_expires)
            && asked.0 < min_se
        {
            let mut r = Response::to(&request, 422, message::reason_phrase(422), None);
            r.headers.push("Min-SE", min_se.to_string());
            self.outputs.push_back(UacOutput::Respond { tx, response: r });
            return;
        }
        let c = self.calls.get_mut(&call).expect("present");
        if let Some(target) = request.headers.get("Contact").map(|v| header_uri(v).to_string())
            && let Some(d) = c.dialog()
        {
            d.remote_target = target;
        }
        if !request.body.is_empty() && has_sdp(&request.headers, &request.body) {
            let sdp = request.body.clone();
            c.pending_offer = Some(if request.method == Method::Invite {
                OfferFrom::ReInvite { tx, request: Box::new(request) }
            } else {
                OfferFrom::Update { tx, request: Box::new(request) }
            });
            self.event(call, UacEvent::Offer { sdp });
            return;
        }
        // A refresh without an offer: a re-INVITE's 2xx offers our current session (its ACK
        // answers), an UPDATE's carries none.
        let body = (request.method == Method::Invite).then(|| c.local_sdp.clone()).flatten();
        if body.is_some()
            && let Some(d) = c.dialog()
        {
            d.answer_in_ack = true;
        }
        self.accept_modify(now, call, tx, &request, body);
    }

    /// Sends the 2xx of the far end's re-INVITE or UPDATE, restarting the session timer.
    fn accept_modify(&mut self, now: Instant, call: CallRef, tx: TxId, request: &Request, body: Option<Vec<u8>>) {
        let session_header = self.refresh_session(now, call, request);
        let mut r = Response::to(request, 200, "OK", None);
        r.headers.push("Contact", self.contact());
        if let Some((value, require)) = session_header {
            r.headers.push("Session-Expires", value);
            if require {
                r.headers.push("Require", "timer");
            }
        }
        if let Some(body) = body {
            r.headers.push("Content-Type", "application/sdp");
            r.body = body;
        }
        if request.method == Method::Invite && !self.calls[&call].next_hop.transport.is_reliable() {
            let t1 = self.config.t1;
            let bytes = r.to_bytes();
            if let Some(d) = self.calls.get_mut(&call).and_then(Call::dialog) {
                d.retransmit = Some(Retransmit { bytes, interval: t1, next: now + t1, give_up: now + 64 * t1 });
            }
            self.schedule(now + t1, call, Timer::Retransmit);
        }
        self.outputs.push_back(UacOutput::Respond { tx, response: r });
    }

    /// Restarts the session timer for a refresh request of the far end; the Session-Expires
    /// value of our 2xx and whether it requires `timer`.
    fn refresh_session(&mut self, now: Instant, call: CallRef, request: &Request) -> Option<(String, bool)> {
        let d = self.calls.get_mut(&call).and_then(Call::dialog)?;
        let asked = request.headers.get("Session-Expires").and_then(session_expires);
        let interval = asked.map(|a| a.0).or(d.session.as_ref().map(|s| s.interval))?;
        // Roles of this transaction: the far end is its UAC.
        let they_refresh = match asked.and_then(|a| a.1) {
            Some(r) => r.eq_ignore_ascii_case("uac"),
            None => !d.session.as_ref().is_some_and(SessionTimer::we_refresh),
        };
        d.session = Some(SessionTimer::start(now, interval, !they_refresh));
        let deadline = d.session.as_ref().map(SessionTimer::deadline).expect("set");
        self.schedule(deadline, call, Timer::Session);
        let require =
            list_has(request.headers.get("Supported"), "timer") || list_has(request.headers.get("Require"), "timer");
        Some((format!("{interval};refresher={}", if they_refresh { "uac" } else { "uas" }), require))
    }

    /// An ACK that matched no transaction: the ACK of a 2xx we sent to a re-INVITE.
    pub fn handle_ack(&mut self, _now: Instant, request: &Request) -> bool {
        let Some(call) = self.call_of(request.call_id()) else { return false };
        let Some(d) = self.calls.get_mut(&call).and_then(Call::dialog) else { return true };
        d.retransmit = None;
        if std::mem::take(&mut d.answer_in_ack) && !request.body.is_empty() && has_sdp(&request.headers, &request.body)
        {
            self.event(call, UacEvent::Answer { sdp: request.body.clone() });
        }
        true
    }

    /// The owner's answer to the far end's offer.
    pub(super) fn answer_offer(&mut self, now: Instant, call: CallRef, sdp: Option<Vec<u8>>) -> Result<(), UacError> {
        let c = self.calls.get_mut(&call).ok_or(UacError::NoCall)?;
        let offer = c.pending_offer.take().ok_or(UacError::State)?;
        if sdp.is_some() {
            c.local_sdp.clone_from(&sdp);
        }
        match offer {
            OfferFrom::Provisional { rack, remote_tag, target, routes } => {
                self.send_prack(call, &rack, &remote_tag, &target, &routes, sdp);
                if self.calls.get(&call).is_some_and(|c| c.local_sdp.is_none()) {
                    // Refused: nothing can be set up without an answer.
                    self.hang_up(now, call)?;
                }
            }
            OfferFrom::Final => {
                let cseq = match &self.calls[&call].state {
                    CallState::Confirmed(d) => d.invite_cseq,
                    _ => return Err(UacError::State),
                };
                let refused = sdp.is_none();
                let ack = self.send_ack(call, cseq, sdp);
                if let Some(d) = self.calls.get_mut(&call).and_then(Call::dialog) {
                    d.ack = Some(ack);
                }
                if refused {
                    // §13.2.2.4: ACK, then BYE when the offer cannot be answered.
                    self.send_bye(now, call, EndReason::HungUp);
                }
            }
            OfferFrom::ReInvite { tx, request } | OfferFrom::Update { tx, request } => match sdp {
                Some(sdp) => self.accept_modify(now, call, tx, &request, Some(sdp)),
                None => {
                    self.respond(tx, &request, 488, None);
                }
            },
        }
        Ok(())
    }

    pub(super) fn session_timeout(&mut self, now: Instant, call: CallRef) {
        let Some(d) = self.calls.get_mut(&call).and_then(Call::dialog) else { return };
        let Some(s) = d.session.as_mut() else { return };
        if s.deadline() > now {
            return; // A stale entry: the timer restarted since.
        }
        if s.refresh_at.take().is_some() {
            let busy = d.modifying.is_some();
            let deadline = s.deadline();
            self.schedule(deadline, call, Timer::Session);
            if !busy {
                self.send_modify(now, call, None, false, true);
            }
            return;
        }
        self.send_bye(now, call, EndReason::SessionExpired);
    }

    pub(super) fn retransmit_timeout(&mut self, now: Instant, call: CallRef) {
        let Some(d) = self.calls.get_mut(&call).and_then(Call::dialog) else { return };
        let Some(r) = d.retransmit.as_mut() else { return };
        if r.next > now {
            return;
        }
        if r.give_up <= now {
            d.retransmit = None;
            // §13.3.1.4: no ACK for our 2xx: the dialog ends with BYE.
            self.send_bye(now, call, EndReason::DialogLost);
            return;
        }
        r.interval = (r.interval * 2).min(T2);
        r.next = now + r.interval;
        let (bytes, next) = (r.bytes.clone(), r.next);
        let to = self.calls[&call].next_hop;
        self.outputs.push_back(UacOutput::Transmit { to, bytes });
        self.schedule(next, call, Timer::Retransmit);
    }
}

fn to_tag(response: &Response) -> Option<&str> {
    response.headers.get("To").and_then(|v| header_param(v, "tag")).filter(|t| !t.is_empty())
}

fn contact_uri(response: &Response) -> Option<String> {
    response.headers.get("Contact").map(|v| header_uri(v).to_string()).filter(|u| !u.is_empty())
}

/// Record-Route of a response, in the order the UAC uses it (§12.1.2: reversed).
fn route_set(response: &Response) -> Vec<String> {
    let mut routes: Vec<String> = response.headers.get_all("Record-Route").flat_map(message::split_list).collect();
    routes.reverse();
    routes
}

/// Whether a comma-separated option list (Require, Supported, Allow) names `option`.
fn list_has(value: Option<&str>, option: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|o| o.trim().eq_ignore_ascii_case(option)))
}

/// `Session-Expires: 1800;refresher=uac` (or a `Min-SE` value) → (1800, Some("uac")).
fn session_expires(value: &str) -> Option<(u32, Option<&str>)> {
    let mut parts = value.split(';');
    let secs = parts.next()?.trim().parse().ok().filter(|s| *s > 0)?;
    let refresher = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("refresher").then(|| v.trim())
    });
    Some((secs, refresher))
}

/// A body that is a session description (a missing Content-Type is taken as SDP).
fn has_sdp(headers: &message::Headers, body: &[u8]) -> bool {
    !body.is_empty()
        && headers.get("Content-Type").is_none_or(|t| t.trim().to_ascii_lowercase().starts_with("application/sdp"))
}
