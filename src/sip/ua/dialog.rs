//! A call's dialog (RFC 3261 §12) and what happens inside it: ACK, BYE, re-INVITE, UPDATE, INFO,
//! OPTIONS, CSeq ordering, the 2xx retransmission (§13.3.1.4), session timers (RFC 4028) and
//! hanging up.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::super::message::{Method, Request, Response, header_uri};
use super::super::refusal::Refusal;
use super::super::sdp::{self, Direction, Negotiated};
use super::{
    BYE_TIMEOUT, CallEvent, CallNo, Inbound, Leg, MediaCommand, OfferState, Output, RoomsCommand, T1, T2, Transport,
    TxId, UserAgent,
};
use crate::ids::{AccountId, ParticipantId, SessionId};
use crate::interconnect::InterconnectMode;

/// The timers of a call; the deadline kept in the call tells a live timer from a stale one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKind {
    /// The ringing delay is over: answer.
    Answer,
    /// Retransmit the 2xx, or give up waiting for its ACK.
    Retransmit,
    /// RFC 4028: the session interval is running out.
    SessionExpiry,
    /// Our BYE got no final response.
    ByeTimeout,
}

/// Where a call is.
#[derive(Debug)]
pub(super) enum State {
    /// 180 sent; the 200 goes out at `answer_at`.
    Ringing {
        /// The INVITE's transaction.
        tx: TxId,
        /// The INVITE, for a 487 on CANCEL.
        invite: Box<Request>,
        /// The 200 to send.
        ok: Box<Response>,
        /// When.
        answer_at: Instant,
    },
    /// 200 sent, waiting for the ACK.
    Answered {
        /// Asked to end meanwhile: BYE once the ACK comes (RFC 3261 §15).
        end_after_ack: Option<Ending>,
    },
    /// ACK received: the dialog is confirmed.
    Confirmed {
        /// Since when.
        since: Instant,
    },
    /// We sent BYE.
    Terminating {
        /// When we stop waiting for its answer.
        give_up: Instant,
        /// Why we hung up.
        ending: Ending,
        /// When the call had been confirmed (`None`: its 2xx was never ACKed).
        connected_at: Option<Instant>,
    },
}

/// Why we end a call, and who else already knows.
#[derive(Debug, Clone)]
pub(super) struct Ending {
    /// For the BYE's Reason and the call record.
    pub(super) reason: String,
    /// The participant already left its session (API removal, session gone): the rooms are
    /// not told again when the call ends.
    pub(super) left_session: bool,
}

impl Ending {
    /// The gateway or the peer ends the call; the rooms learn of it when it is over.
    pub(super) fn by_gateway(reason: &str) -> Self {
        Self { reason: reason.to_string(), left_session: false }
    }
}

/// Where a call's media is: offer/answer done or not, the leg started or not.
#[derive(Debug)]
pub(super) enum MediaState {
    /// No agreement yet (our offer waits for the ACK's answer).
    Unagreed,
    /// Agreed; the leg starts with the 200.
    Agreed(Negotiated),
    /// The leg runs with this agreement; a new one updates it.
    Started(Negotiated),
}

impl MediaState {
    /// The agreement in force, if any.
    pub(super) fn negotiated(&self) -> Option<&Negotiated> {
        match self {
            Self::Unagreed => None,
            Self::Agreed(n) | Self::Started(n) => Some(n),
        }
    }
}

/// A 2xx to an INVITE being retransmitted until its ACK.
#[derive(Debug)]
pub(super) struct PendingAck {
    pub(super) tx: TxId,
    pub(super) ok: Response,
    pub(super) interval: Duration,
    pub(super) next: Instant,
    pub(super) give_up: Instant,
}

/// RFC 4028 state.
#[derive(Debug, Clone, Copy)]
pub(super) struct SessionTimer {
    /// Session interval, seconds.
    pub(super) interval: u32,
    /// True when we refresh (refresher=uas); else the caller does and we watch.
    pub(super) we_refresh: bool,
    /// When we act: refresh, or BYE for a missed refresh.
    pub(super) deadline: Instant,
}

impl SessionTimer {
    pub(super) fn new(now: Instant, interval: u32, we_refresh: bool) -> Self {
        let mut t = Self { interval, we_refresh, deadline: now };
        t.restart(now);
        t
    }

    /// Starts a new interval at `now` (a refresh happened).
    pub(super) fn restart(&mut self, now: Instant) {
        let interval = Duration::from_secs(u64::from(self.interval));
        self.deadline = if self.we_refresh {
            // RFC 4028 §10: the refresher sends its refresh at half the interval.
            now + interval / 2
        } else {
            // RFC 4028 §10: the other side sends BYE at the interval minus min(32 s, interval / 3).
            now + interval - (interval / 3).min(Duration::from_secs(32))
        };
    }
}

/// One call: a dialog and what it carries.
#[derive(Debug)]
pub(super) struct Call {
    pub(super) call_id: String,
    pub(super) local_tag: String,
    pub(super) participant: ParticipantId,
    pub(super) session: SessionId,
    pub(super) account: AccountId,
    pub(super) mode: InterconnectMode,
    pub(super) transport: Transport,
    pub(super) source: SocketAddr,
    /// The peer's From (with its tag): our To on requests we send.
    pub(super) remote_uri: String,
    /// The To we answer with (with our tag): our From on requests we send.
    pub(super) local_uri: String,
    /// The peer's Contact URI.
    pub(super) remote_target: String,
    /// Record-Route of the INVITE, in order (RFC 3261 §12.1.1).
    pub(super) route_set: Vec<String>,
    /// The top Via branch of the initial INVITE: a retransmission of it carries the same.
    pub(super) invite_branch: Option<String>,
    pub(super) remote_cseq: u32,
    pub(super) local_cseq: u32,
    pub(super) state: State,
    pub(super) rtp_port: u16,
    pub(super) sdp_session: u64,
    pub(super) sdp_version: u64,
    pub(super) media: MediaState,
    pub(super) last_answer: Option<String>,
    pub(super) offer: OfferState,
    pub(super) pending: Option<PendingAck>,
    pub(super) session_timer: Option<SessionTimer>,
    pub(super) invite_at: Instant,
}

impl Call {
    /// The peer holds the call: it offered `sendonly` or `inactive` (RFC 3264 §8.4).
    pub(super) fn on_hold(&self) -> bool {
        self.media.negotiated().is_some_and(|n| matches!(n.remote_direction, Direction::SendOnly | Direction::Inactive))
    }

    /// Who this call is, for events.
    pub(super) fn leg(&self, call: CallNo) -> Leg {
        Leg {
            call,
            call_id: self.call_id.clone(),
            participant: self.participant.clone(),
            session: self.session.clone(),
            account: self.account.clone(),
            mode: self.mode,
        }
    }

    pub(super) fn is_confirmed(&self) -> bool {
        matches!(self.state, State::Confirmed { .. })
    }

    /// When the dialog was confirmed, if it was.
    pub(super) fn connected_at(&self) -> Option<Instant> {
        match self.state {
            State::Confirmed { since } => Some(since),
            State::Terminating { connected_at, .. } => connected_at,
            State::Ringing { .. } | State::Answered { .. } => None,
        }
    }

    /// The media command for a new agreement: the leg's start the first time, an update after.
    pub(super) fn media_for(&mut self, call: CallNo, negotiated: Negotiated) -> MediaCommand {
        let started = matches!(self.media, MediaState::Started(_));
        self.media = MediaState::Started(negotiated.clone());
        if started {
            return MediaCommand::Update { call, negotiated: Box::new(negotiated) };
        }
        MediaCommand::Start {
            call,
            participant: self.participant.clone(),
            session: self.session.clone(),
            mode: self.mode,
            local_port: self.rtp_port,
            negotiated: Box::new(negotiated),
        }
    }
}

impl UserAgent {
    /// A request with a To tag: it belongs to a dialog, or gets 481.
    pub(super) fn handle_in_dialog(&mut self, now: Instant, inbound: Inbound) {
        let req = &inbound.request;
        let key = (req.call_id().to_string(), req.to_tag().unwrap_or_default().to_string());
        let Some(&call) = self.by_dialog.get(&key) else {
            if req.method != Method::Ack {
                self.reject(&inbound, Refusal::NoSuchDialog);
            }
            return;
        };
        if req.method == Method::Ack {
            // The ACK of our 2xx (RFC 3261 §13.3.1.4) has a transaction of its own: match it to
            // the 2xx we are retransmitting by CSeq. Anything else is a stray, ignored.
            let awaited = self.calls.get(&call).and_then(|c| c.pending.as_ref()).and_then(|p| {
                let cseq = p.ok.headers.get("CSeq").and_then(|v| super::super::message::parse_cseq(v).ok());
                cseq.filter(|(n, _)| *n == req.cseq()).map(|_| p.tx)
            });
            if let Some(tx) = awaited {
                self.handle_ack(now, tx, inbound.request);
            }
            return;
        }
        // RFC 3261 §12.2.2: requests in a dialog come in CSeq order.
        let cseq = req.cseq();
        let Some(c) = self.calls.get_mut(&call) else { return };
        if req.method != Method::Cancel {
            if cseq <= c.remote_cseq {
                self.reject(&inbound, Refusal::CSeqOutOfOrder);
                return;
            }
            c.remote_cseq = cseq;
        }
        match req.method {
            Method::Bye => self.handle_bye(now, call, inbound),
            Method::Invite => self.handle_reinvite(now, call, inbound),
            Method::Update => self.handle_update(now, call, inbound),
            Method::Info => self.handle_info(call, inbound),
            Method::Options => {
                let mut r = self.response(&inbound.request, 200, None);
                r.headers.push("Allow", super::ALLOW);
                self.outputs.push_back(Output::Respond { tx: inbound.tx, response: r });
            }
            Method::Cancel => self.reject(&inbound, Refusal::NoSuchTransaction),
            _ => {
                self.reject(&inbound, Refusal::MethodNotAllowed { allow: super::ALLOW });
            }
        }
    }

    fn handle_bye(&mut self, now: Instant, call: CallNo, inbound: Inbound) {
        let r = self.response(&inbound.request, 200, None);
        self.outputs.push_back(Output::Respond { tx: inbound.tx, response: r });
        self.finish(now, call, "remote BYE");
    }

    fn handle_reinvite(&mut self, now: Instant, call: CallNo, inbound: Inbound) {
        let Some(c) = self.calls.get(&call) else { return };
        if let Some(p) = &c.pending
            && !matches!(c.offer, OfferState::AwaitingAnswer(_))
        {
            // Our 2xx carried the answer, so that exchange is closed; a new INVITE with a
            // higher CSeq means the client's INVITE transaction completed on our 2xx (RFC 3261
            // §14.1: no new INVITE while one is in progress) and its ACK is on the way or lost.
            // Take it as acknowledged rather than answer 491 to a legitimate re-INVITE.
            let tx = p.tx;
            self.by_tx.remove(&tx);
            self.acknowledged(now, call, &[]);
        }
        let Some(c) = self.calls.get(&call) else { return };
        if c.pending.is_some() || matches!(c.offer, OfferState::AwaitingAnswer(_)) || !c.is_confirmed() {
            // An offer/answer exchange is still open (RFC 3261 §14.2, RFC 6337 §3.1).
            self.reject(&inbound, Refusal::RequestPending);
            return;
        }
        let Some(mut ok) = self.session_update(now, call, &inbound) else { return };
        self.refresh_session_timer(now, call, &inbound.request, &mut ok);
        let ok_retransmit = ok.clone();
        self.outputs.push_back(Output::Respond { tx: inbound.tx, response: ok });
        self.by_tx.insert(inbound.tx, call);
        if let Some(c) = self.calls.get_mut(&call) {
            c.pending = Some(PendingAck {
                tx: inbound.tx,
                ok: ok_retransmit,
                interval: T1,
                next: now + T1,
                give_up: now + 64 * T1,
            });
        }
        self.schedule(now + T1, call, TimerKind::Retransmit);
    }

    fn handle_update(&mut self, now: Instant, call: CallNo, inbound: Inbound) {
        let has_offer = !inbound.request.body.is_empty();
        let mut ok = if has_offer {
            match self.session_update(now, call, &inbound) {
                Some(ok) => ok,
                None => return,
            }
        } else {
            let tag = self.calls.get(&call).map(|c| c.local_tag.clone());
            self.response(&inbound.request, 200, tag.as_deref())
        };
        self.refresh_session_timer(now, call, &inbound.request, &mut ok);
        self.outputs.push_back(Output::Respond { tx: inbound.tx, response: ok });
    }

    /// The offer of a re-INVITE or UPDATE (or, for a re-INVITE without SDP, our new offer):
    /// the 200 to send, or `None` when a refusal was sent.
    fn session_update(&mut self, _now: Instant, call: CallNo, inbound: &Inbound) -> Option<Response> {
        let policy = sdp::Policy { srtp: self.config.srtp };
        let c = self.calls.get(&call)?;
        let (port, session, version, tag) = (c.rtp_port, c.sdp_session, c.sdp_version + 1, c.local_tag.clone());
        let local = self.local_media(port, session, version);
        let mut ok = self.response(&inbound.request, 200, Some(&tag));
        self.add_dialog_headers(&mut ok, inbound.transport, &inbound.request);
        if inbound.request.body.is_empty() {
            // A re-INVITE without an offer: ours goes in the 200, the answer in the ACK.
            let (offer, pending) = sdp::offer(&local, &policy);
            let c = self.calls.get_mut(&call)?;
            c.sdp_version += 1;
            c.offer = OfferState::AwaitingAnswer(Box::new(pending));
            ok.headers.push("Content-Type", "application/sdp");
            ok.body = offer.into_bytes();
            return Some(ok);
        }
        if !is_sdp(&inbound.request) {
            self.reject(inbound, Refusal::UnsupportedBody);
            return None;
        }
        let previous = self.calls.get(&call)?.media.negotiated().cloned();
        match sdp::answer(&inbound.request.body, &local, &policy, previous.as_ref()) {
            Err(e) => {
                // The old media stays as it was (RFC 3261 §14.2).
                let refusal = Refusal::Sdp(e);
                let mut r = self.response(&inbound.request, refusal.status(), Some(&tag));
                refusal.write(&mut r);
                self.outputs.push_back(Output::Respond { tx: inbound.tx, response: r });
                None
            }
            Ok((answer, negotiated)) => {
                let c = self.calls.get_mut(&call)?;
                let body = match &c.last_answer {
                    Some(last) if sdp::same_session_content(last, &answer) => last.clone(),
                    _ => {
                        c.sdp_version += 1;
                        c.last_answer = Some(answer.clone());
                        answer
                    }
                };
                ok.headers.push("Content-Type", "application/sdp");
                ok.body = body.into_bytes();
                let command = c.media_for(call, negotiated);
                self.outputs.push_back(Output::Media(command));
                Some(ok)
            }
        }
    }

    fn handle_info(&mut self, call: CallNo, inbound: Inbound) {
        let ctype = inbound.request.headers.get("Content-Type").unwrap_or("").to_ascii_lowercase();
        let body = String::from_utf8_lossy(&inbound.request.body).to_string();
        let tone = if ctype.starts_with("application/dtmf-relay") {
            parse_dtmf_relay(&body)
        } else if ctype.starts_with("application/dtmf") {
            body.trim().chars().next().filter(|c| is_dtmf(*c)).map(|c| (c, 250))
        } else if inbound.request.body.is_empty() {
            // An empty INFO is a keepalive (RFC 6086 §4.2.2 legacy usage).
            let r = self.response(&inbound.request, 200, None);
            self.outputs.push_back(Output::Respond { tx: inbound.tx, response: r });
            return;
        } else {
            self.reject(&inbound, Refusal::UnsupportedInfo);
            return;
        };
        let Some((tone, duration_ms)) = tone else {
            self.reject(&inbound, Refusal::NoDtmfSignal);
            return;
        };
        let r = self.response(&inbound.request, 200, None);
        self.outputs.push_back(Output::Respond { tx: inbound.tx, response: r });
        if let Some(c) = self.calls.get(&call) {
            let participant = c.participant.clone();
            self.outputs.push_back(Output::Call(CallEvent::Dtmf { call, participant, tone, duration_ms }));
        }
    }

    /// A refresh (re-INVITE or UPDATE) restarts the session timer; the 200 states the interval.
    fn refresh_session_timer(&mut self, now: Instant, call: CallNo, req: &Request, ok: &mut Response) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        let Some(mut timer) = c.session_timer else { return };
        if let Some(interval) = req.headers.get("Session-Expires").and_then(session_expires_value) {
            timer.interval = interval.max(self.config.min_se);
        }
        timer.restart(now);
        c.session_timer = Some(timer);
        let refresher = if timer.we_refresh { "uas" } else { "uac" };
        ok.headers.push("Session-Expires", format!("{};refresher={refresher}", timer.interval));
        ok.headers.push("Require", "timer");
        let deadline = timer.deadline;
        self.schedule(deadline, call, TimerKind::SessionExpiry);
    }

    /// Contact, Record-Route, Allow and Supported of a 2xx or 18x that makes or refreshes a dialog.
    pub(super) fn add_dialog_headers(&self, r: &mut Response, transport: Transport, req: &Request) {
        let param = match transport {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
        };
        r.headers.push("Contact", format!("<sip:interwork@{}{param}>", self.config.contact_host));
        for rr in req.headers.get_all("Record-Route") {
            r.headers.push("Record-Route", rr);
        }
        r.headers.push("Allow", super::ALLOW);
        r.headers.push("Supported", "timer");
    }

    /// Ends a call from our side: BYE when the dialog is confirmed, later when it is not yet.
    pub(super) fn hang_up(&mut self, now: Instant, call: CallNo, reason: &str) {
        self.end(now, call, Ending::by_gateway(reason));
    }

    /// Ends a call in whatever state it is, the way that state allows.
    pub(super) fn end(&mut self, now: Instant, call: CallNo, ending: Ending) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        match &mut c.state {
            State::Ringing { tx, invite, .. } => {
                let (tx, invite) = (*tx, invite.clone());
                let response = self.refusal(&invite, &Refusal::EndedWhileRinging(ending.reason.clone()));
                self.outputs.push_back(Output::Respond { tx, response });
                self.answered(now, call, 480, Some(&ending.reason));
                self.finish(now, call, &ending.reason);
            }
            State::Answered { end_after_ack } => {
                // RFC 3261 §15: no BYE before the ACK; it goes out when the ACK comes.
                match end_after_ack {
                    Some(first) => first.left_session |= ending.left_session,
                    None => *end_after_ack = Some(ending),
                }
            }
            State::Confirmed { since } => {
                let since = Some(*since);
                self.bye(now, call, ending, since);
            }
            State::Terminating { ending: first, .. } => first.left_session |= ending.left_session,
        }
    }

    /// Sends BYE and waits for its answer; the media stops at once.
    fn bye(&mut self, now: Instant, call: CallNo, ending: Ending, connected_at: Option<Instant>) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        c.local_cseq += 1;
        let give_up = now + BYE_TIMEOUT;
        let reason = super::super::refusal::reason(200, &ending.reason);
        c.state = State::Terminating { give_up, ending, connected_at };
        // The call is over for us: no RTP while the BYE's transaction runs (up to 64*T1 more
        // to a peer that never ACKed). The record waits for the leg's counters and the
        // dialog's end, whichever comes last.
        self.outputs.push_back(Output::Media(MediaCommand::Stop { call }));
        let mut bye = self.in_dialog_request(call, Method::Bye);
        if let Some(bye) = bye.as_mut() {
            bye.0.headers.push("Reason", reason);
        }
        if let Some((request, destination, transport)) = bye {
            self.outputs.push_back(Output::Send { call, request, destination, transport });
        }
        self.schedule(give_up, call, TimerKind::ByeTimeout);
    }

    /// A request in the dialog of `call`, with where to send it (RFC 3261 §12.2.1.1).
    pub(super) fn in_dialog_request(&self, call: CallNo, method: Method) -> Option<(Request, SocketAddr, Transport)> {
        let c = self.calls.get(&call)?;
        let loose = c.route_set.first().is_none_or(|r| header_uri(r).contains(";lr"));
        let (uri, routes): (String, Vec<String>) = if loose {
            (c.remote_target.clone(), c.route_set.clone())
        } else {
            // A strict router: it becomes the Request-URI, the target goes last (§12.2.1.1).
            let mut routes: Vec<String> = c.route_set[1..].to_vec();
            routes.push(format!("<{}>", c.remote_target));
            (header_uri(&c.route_set[0]).to_string(), routes)
        };
        let mut req = Request { method: method.clone(), uri, headers: Default::default(), body: Vec::new() };
        for r in &routes {
            req.headers.push("Route", r.clone());
        }
        req.headers.push("Max-Forwards", "70");
        req.headers.push("From", c.local_uri.clone());
        req.headers.push("To", c.remote_uri.clone());
        req.headers.push("Call-ID", c.call_id.clone());
        req.headers.push("CSeq", format!("{} {}", c.local_cseq, method));
        req.headers.push("User-Agent", concat!("interwork/", env!("CARGO_PKG_VERSION")));
        let next_hop = c.route_set.first().map_or(c.remote_target.as_str(), |r| header_uri(r));
        let destination = uri_socket_addr(next_hop).unwrap_or(c.source);
        Some((req, destination, c.transport))
    }

    /// The final response to a request we sent.
    pub(super) fn handle_sent(&mut self, now: Instant, call: CallNo, status: Option<u16>) {
        let Some(c) = self.calls.get(&call) else { return };
        if let State::Terminating { ending, .. } = &c.state {
            let reason = ending.reason.clone();
            self.finish(now, call, &reason);
        } else if status.is_some_and(|s| s == 481 || s == 408) || status.is_none() {
            // Our refresh found no dialog or no peer (RFC 4028 §10, RFC 5057): the call is gone.
            self.hang_up(now, call, "session refresh failed");
        }
    }

    /// Forgets a call: media stopped, maps cleaned, the end reported.
    pub(super) fn finish(&mut self, now: Instant, call: CallNo, reason: &str) {
        let Some(c) = self.calls.remove(&call) else { return };
        self.by_dialog.remove(&(c.call_id.clone(), c.local_tag.clone()));
        self.by_tx.retain(|_, v| *v != call);
        if self.by_participant.get(&c.participant) == Some(&call) {
            self.by_participant.remove(&c.participant);
        }
        self.outputs.push_back(Output::Media(MediaCommand::Stop { call }));
        // CONTRACT §5 transfer mode: the leg is the participant's media for its whole life.
        let connected_at = c.connected_at();
        let left_session = match &c.state {
            State::Answered { end_after_ack: Some(ending) } | State::Terminating { ending, .. } => ending.left_session,
            _ => false,
        };
        if c.mode == InterconnectMode::Transfer && !left_session && connected_at.is_some() {
            self.outputs.push_back(Output::Rooms(RoomsCommand::RemoveFromSession {
                account: c.account.clone(),
                session: c.session.clone(),
                participant: c.participant.clone(),
            }));
        }
        if connected_at.is_some() || matches!(c.state, State::Answered { .. } | State::Terminating { .. }) {
            let duration = connected_at.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
            self.outputs.push_back(Output::Call(CallEvent::Ended {
                leg: c.leg(call),
                duration,
                reason: reason.to_string(),
            }));
        }
    }

    /// A timer of `call` came due.
    pub(super) fn fire(&mut self, now: Instant, call: CallNo, kind: TimerKind, at: Instant) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        match kind {
            TimerKind::Answer => {
                let State::Ringing { answer_at, .. } = &c.state else { return };
                if *answer_at != at {
                    return;
                }
                let State::Ringing { tx, ok, .. } =
                    std::mem::replace(&mut c.state, State::Answered { end_after_ack: None })
                else {
                    return;
                };
                self.send_ok(now, call, tx, *ok);
            }
            TimerKind::Retransmit => {
                let Some(p) = c.pending.as_mut() else { return };
                if p.next != at {
                    return;
                }
                if now >= p.give_up {
                    // RFC 3261 §13.3.1.4: no ACK in 64*T1 ends the dialog.
                    c.pending = None;
                    if matches!(c.state, State::Answered { .. }) {
                        self.bye(now, call, Ending::by_gateway("no ACK"), None);
                    } else {
                        self.hang_up(now, call, "no ACK");
                    }
                    return;
                }
                p.interval = (p.interval * 2).min(T2);
                // The last wait ends at 64*T1 exactly, not at the next retransmission after it.
                p.next = (now + p.interval).min(p.give_up);
                let (tx, ok, next) = (p.tx, p.ok.clone(), p.next);
                self.outputs.push_back(Output::Respond { tx, response: ok });
                self.schedule(next, call, TimerKind::Retransmit);
            }
            TimerKind::SessionExpiry => {
                let Some(mut timer) = c.session_timer else { return };
                if timer.deadline != at {
                    return;
                }
                if timer.we_refresh {
                    c.local_cseq += 1;
                    timer.restart(now);
                    c.session_timer = Some(timer);
                    self.schedule(timer.deadline, call, TimerKind::SessionExpiry);
                    if let Some((mut request, destination, transport)) = self.in_dialog_request(call, Method::Update) {
                        request.headers.push("Session-Expires", format!("{};refresher=uas", timer.interval));
                        request.headers.push("Supported", "timer");
                        self.outputs.push_back(Output::Send { call, request, destination, transport });
                    }
                } else {
                    self.hang_up(now, call, "session timer expired");
                }
            }
            TimerKind::ByeTimeout => {
                if let State::Terminating { give_up, ending, .. } = &c.state
                    && *give_up == at
                {
                    let reason = ending.reason.clone();
                    self.finish(now, call, &reason);
                }
            }
        }
    }

    /// Sends the 200 of an initial INVITE and starts its retransmission.
    pub(super) fn send_ok(&mut self, now: Instant, call: CallNo, tx: TxId, ok: Response) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        if !matches!(c.state, State::Answered { .. }) {
            c.state = State::Answered { end_after_ack: None };
        }
        c.pending = Some(PendingAck { tx, ok: ok.clone(), interval: T1, next: now + T1, give_up: now + 64 * T1 });
        let start = match &c.media {
            MediaState::Agreed(n) => Some(c.media_for(call, n.clone())),
            MediaState::Unagreed | MediaState::Started(_) => None,
        };
        self.outputs.push_back(Output::Respond { tx, response: ok });
        if let Some(start) = start {
            self.outputs.push_back(Output::Media(start));
        }
        self.schedule(now + T1, call, TimerKind::Retransmit);
        self.answered(now, call, 200, None);
    }

    /// Reports the final answer to an initial INVITE.
    pub(super) fn answered(&mut self, now: Instant, call: CallNo, status: u16, reason: Option<&str>) {
        let Some(c) = self.calls.get(&call) else { return };
        self.outputs.push_back(Output::Call(CallEvent::InviteAnswered {
            call_id: c.call_id.clone(),
            status,
            mode: Some(c.mode),
            setup: now.saturating_duration_since(c.invite_at).min(Duration::from_secs(3600)),
            reason: reason.map(str::to_string),
        }));
    }

    /// An ACK reached the INVITE transaction `tx`.
    pub(super) fn handle_ack(&mut self, now: Instant, tx: TxId, ack: Request) {
        let Some(&call) = self.by_tx.get(&tx) else { return };
        self.by_tx.remove(&tx);
        let Some(c) = self.calls.get_mut(&call) else { return };
        if c.pending.as_ref().is_none_or(|p| p.tx != tx) {
            return;
        }
        self.acknowledged(now, call, &ack.body);
    }

    /// The 2xx awaiting an ACK on `call` is acknowledged (`body`: the ACK's, the answer to a
    /// late offer): stop retransmitting it, confirm the dialog, take the answer.
    fn acknowledged(&mut self, now: Instant, call: CallNo, body: &[u8]) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        c.pending = None;
        let mut media = None;
        let mut failed = None;
        if let OfferState::AwaitingAnswer(pending) = std::mem::replace(&mut c.offer, OfferState::Stable) {
            match sdp::accept_answer(&pending, body) {
                Ok(negotiated) => media = Some(c.media_for(call, negotiated)),
                Err(e) => failed = Some(Ending::by_gateway(&format!("unusable SDP answer in the ACK: {e}"))),
            }
        }
        let (first, end) = match &c.state {
            State::Answered { end_after_ack } => (true, end_after_ack.clone()),
            _ => (false, None),
        };
        if first {
            c.state = State::Confirmed { since: now };
        }
        let event = first.then(|| CallEvent::Connected(c.leg(call)));
        if let Some(m) = media {
            self.outputs.push_back(Output::Media(m));
        }
        if let Some(e) = event {
            self.outputs.push_back(Output::Call(e));
        }
        if let Some(ending) = failed.or(end) {
            self.end(now, call, ending);
        }
    }

    /// A CANCEL for the INVITE transaction `tx` (before its final response).
    pub(super) fn handle_cancel(&mut self, now: Instant, tx: TxId) {
        let Some(&call) = self.by_tx.get(&tx) else { return };
        if self.cancel_pending(call) {
            return;
        }
        let Some(c) = self.calls.get(&call) else { return };
        if let State::Ringing { tx, invite, .. } = &c.state {
            let refusal = Refusal::Cancelled;
            let mut response = self.response(invite, refusal.status(), Some(&c.local_tag));
            refusal.write(&mut response);
            self.outputs.push_back(Output::Respond { tx: *tx, response });
            self.answered(now, call, 487, Some("cancelled"));
            self.finish(now, call, "cancelled");
        }
    }
}

/// The interval of a Session-Expires value (`1800;refresher=uac`).
pub(super) fn session_expires_value(v: &str) -> Option<u32> {
    v.split(';').next()?.trim().parse().ok()
}

/// True when the request's body is SDP (or untyped, which we read as SDP).
pub(super) fn is_sdp(req: &Request) -> bool {
    req.headers.get("Content-Type").is_none_or(|t| t.trim().to_ascii_lowercase().starts_with("application/sdp"))
}

fn is_dtmf(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '*' | '#' | 'A' | 'B' | 'C' | 'D')
}

/// `Signal=5\r\nDuration=160` (the de facto application/dtmf-relay body).
fn parse_dtmf_relay(body: &str) -> Option<(char, u32)> {
    let mut tone = None;
    let mut duration = 250;
    for line in body.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        match k.trim().to_ascii_lowercase().as_str() {
            "signal" => {
                let v = v.trim();
                tone = match v {
                    "10" => Some('*'),
                    "11" => Some('#'),
                    _ => v.chars().next().map(|c| c.to_ascii_uppercase()).filter(|c| is_dtmf(*c) && v.len() == 1),
                };
            }
            "duration" => duration = v.trim().parse().unwrap_or(250).min(10_000),
            _ => {}
        }
    }
    tone.map(|t| (t, duration))
}

/// The socket address of a SIP URI with an IP literal host (`sip:u@10.0.0.1:5070;transport=udp`).
pub(super) fn uri_socket_addr(uri: &str) -> Option<SocketAddr> {
    let (scheme, rest) = uri.split_once(':')?;
    let default_port = if scheme.eq_ignore_ascii_case("sips") { 5061 } else { 5060 };
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = rest.split([';', '?', '>']).next()?;
    if let Ok(addr) = hostport.parse::<SocketAddr>() {
        return Some(addr);
    }
    let host = hostport.trim_start_matches('[').trim_end_matches(']');
    host.parse::<std::net::IpAddr>().ok().map(|ip| SocketAddr::new(ip, default_port))
}
