//! The responses to a placed call's requests, and their transactions' failures: how the INVITE
//! progresses (provisionals, reliable ones, the 2xx, forks, refusals) and what a re-INVITE or
//! UPDATE of ours came to.

use super::*;

impl Uac {
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

    pub(super) fn invite_response(&mut self, now: Instant, call: CallRef, cseq: u32, response: Response) {
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

    pub(super) fn provisional(&mut self, call: CallRef, response: Response) {
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

    /// The INVITE's first 2xx: the dialog is made, ACKed (or its ACK waits for our answer).
    pub(super) fn answered(&mut self, now: Instant, call: CallRef, cseq: u32, response: Response) {
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
    pub(super) fn invite_2xx_again(&mut self, call: CallRef, response: &Response) {
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
    pub(super) fn refused(&mut self, now: Instant, call: CallRef, response: Response) {
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

    pub(super) fn modify_response(&mut self, now: Instant, call: CallRef, cseq: u32, response: Response) {
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
    pub(super) fn end_lost(&mut self, _now: Instant, call: CallRef) {
        self.end(call, EndReason::DialogLost);
    }
}
