//! What the far end sends inside a placed call's dialog: BYE, re-INVITE and UPDATE (offers for
//! the owner, or refreshes answered here), the ACK of our 2xx; and the owner's answers to offers.

use super::*;

impl Uac {
    /// A request the far end sent inside one of our calls; `false` when it is not ours (the
    /// caller answers it otherwise).
    pub fn handle_request(&mut self, now: Instant, tx: TxId, request: Request) -> bool {
        let Some(call) = self.call_of(request.call_id()) else { return false };
        let c = self.calls.get_mut(&call).expect("indexed");
        let ours = request.to_tag().is_some_and(|t| c.from.ends_with(&format!(";tag={t}")));
        let Some(d) = c.dialog().filter(|d| ours && request.from_tag() == Some(d.remote_tag.as_str())) else {
            self.refuse(tx, &request, &Refusal::NoSuchDialog);
            return true;
        };
        let cseq = request.cseq();
        if d.remote_cseq.is_some_and(|last| cseq <= last) {
            self.refuse(tx, &request, &Refusal::CSeqOutOfOrder);
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
                self.refuse(tx, &request, &Refusal::MethodNotAllowed { allow: ALLOW });
            }
        }
        true
    }

    /// Refuses an in-dialog request of the far end.
    pub(super) fn refuse(&mut self, tx: TxId, request: &Request, refusal: &Refusal) {
        let mut r = Response::to(request, refusal.status(), message::reason_phrase(refusal.status()), None);
        refusal.write(&mut r);
        self.outputs.push_back(UacOutput::Respond { tx, response: r });
    }

    /// A response inside the dialog, with our Contact for target refreshes.
    pub(super) fn respond(&mut self, tx: TxId, request: &Request, status: u16, body: Option<&[u8]>) -> Response {
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
    pub(super) fn remote_modify(&mut self, now: Instant, call: CallRef, tx: TxId, request: Request) {
        let c = self.calls.get_mut(&call).expect("caller checked");
        let min_se = self.config.min_se;
        let glare = c.pending_offer.is_some()
            || c.dialog()
                .is_some_and(|d| d.modifying.as_ref().is_some_and(|m| m.sdp.is_some() || m.method == Method::Invite));
        if glare && (request.method == Method::Invite || has_sdp(&request.headers, &request.body)) {
            // §14.2: an exchange of ours is in progress.
            self.refuse(tx, &request, &Refusal::RequestPending);
            return;
        }
        if let Some(asked) = request.headers.get("Session-Expires").and_then(session_expires)
            && asked.0 < min_se
        {
            self.refuse(tx, &request, &Refusal::IntervalTooSmall { min_se });
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
    pub(super) fn accept_modify(
        &mut self,
        now: Instant,
        call: CallRef,
        tx: TxId,
        request: &Request,
        body: Option<Vec<u8>>,
    ) {
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
    pub(super) fn refresh_session(&mut self, now: Instant, call: CallRef, request: &Request) -> Option<(String, bool)> {
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
    pub(in crate::sip::uac) fn answer_offer(
        &mut self,
        now: Instant,
        call: CallRef,
        sdp: Option<Vec<u8>>,
    ) -> Result<(), UacError> {
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
                    self.refuse(tx, &request, &Refusal::OfferRefused);
                }
            },
        }
        Ok(())
    }
}
