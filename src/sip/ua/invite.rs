//! The initial INVITE: admission (CONTRACT §5's failure table, in the order a gateway checks),
//! offer/answer, and the dialog it creates.

use std::time::{Duration, Instant};

use super::super::message::{Request, Response};
use super::super::refusal::{Refusal, quoted_text};
use super::super::sdp;
use super::super::uui;
use super::dialog::{Call, MediaState, SessionTimer, State, TimerKind, is_sdp, session_expires_value};
use super::{Admitted, CallNo, Inbound, MediaCommand, OfferState, Output, RoomsCommand, UserAgent};
use crate::interconnect::InterconnectMode;
use crate::tokens::TokenError;

/// Extensions we support in `Require` (RFC 3261 §8.2.2.3).
const SUPPORTED_EXTENSIONS: &[&str] = &["timer"];

/// An initial INVITE between its arrival and its dialog: waiting for the shell to verify its
/// token, then to reserve its RTP port (both asked as outputs, answered as events).
pub(super) struct PendingInvite {
    inbound: Inbound,
    stage: Stage,
}

/// What a pending INVITE waits for.
enum Stage {
    /// [`Event::Admission`](super::Event::Admission).
    Token,
    /// [`Event::PortReserved`](super::Event::PortReserved), with what admission found.
    Port { admitted: Admitted, mode: InterconnectMode, timer: Option<SessionTimerTerms> },
}

impl UserAgent {
    /// A new INVITE: the checks that need nothing from outside, then the token goes out for
    /// verification ([`Output::Admit`]).
    pub(super) fn handle_invite(&mut self, now: Instant, inbound: Inbound) {
        // The INVITE again after its transaction ended on our 2xx (a 2xx ends an INVITE server
        // transaction, RFC 3261 §17.2.1): the client missed the 2xx, which the dialog sends
        // again until the ACK (§13.3.1.4), also in answer to this copy. Not a new call.
        if let Some(ok) = self.retransmitted_ok(&inbound.request) {
            self.outputs.push_back(Output::Respond { tx: inbound.tx, response: ok });
            return;
        }
        let token = match self.precheck(now, &inbound) {
            Ok(token) => token,
            Err(refusal) => return self.refuse(&inbound, refusal, None),
        };
        let call = self.next_call;
        self.next_call += 1;
        self.by_tx.insert(inbound.tx, call);
        self.admitting.insert(call, PendingInvite { inbound, stage: Stage::Token });
        self.outputs.push_back(Output::Admit { call, token });
    }

    /// The shell's verdict on a pending INVITE's token: the checks that need the participant,
    /// then the RTP port goes out for reservation ([`Output::ReservePort`]).
    pub(super) fn handle_admission(&mut self, call: CallNo, result: Result<Admitted, TokenError>) {
        let Some(pending) = self.admitting.get(&call) else { return };
        if !matches!(pending.stage, Stage::Token) {
            return;
        }
        let mut mode = None;
        match self.admit(&pending.inbound.request, result, &mut mode) {
            Ok(stage) => {
                if let Some(p) = self.admitting.get_mut(&call) {
                    p.stage = stage;
                }
                self.outputs.push_back(Output::ReservePort { call });
            }
            Err(refusal) => {
                if let Some(p) = self.admitting.remove(&call) {
                    self.by_tx.remove(&p.inbound.tx);
                    self.refuse(&p.inbound, refusal, mode);
                }
            }
        }
    }

    /// The shell reserved (or could not reserve) a pending INVITE's RTP port: offer/answer and
    /// the dialog.
    pub(super) fn handle_port(&mut self, now: Instant, call: CallNo, port: Option<u16>) {
        let Some(pending) = self.admitting.remove(&call) else {
            // Cancelled meanwhile: give the port back.
            if port.is_some() {
                self.outputs.push_back(Output::Media(MediaCommand::Stop { call }));
            }
            return;
        };
        let PendingInvite { inbound, stage: Stage::Port { admitted, mode, timer } } = pending else {
            self.admitting.insert(call, pending);
            return;
        };
        self.by_tx.remove(&inbound.tx);
        let Some(port) = port else { return self.refuse(&inbound, Refusal::NoRtpPort, Some(mode)) };
        match self.negotiate_media(call, port, &inbound.request) {
            Ok(media) => self.create_dialog(now, &inbound, call, admitted, mode, timer, media),
            Err(refusal) => self.refuse(&inbound, refusal, Some(mode)),
        }
    }

    /// A CANCEL reached a pending INVITE: 487, and it is forgotten (a port reserved for it
    /// later is given back).
    pub(super) fn cancel_pending(&mut self, call: CallNo) -> bool {
        let Some(p) = self.admitting.remove(&call) else { return false };
        self.by_tx.remove(&p.inbound.tx);
        let mode = match &p.stage {
            Stage::Port { mode, .. } => Some(*mode),
            Stage::Token => None,
        };
        self.refuse(&p.inbound, Refusal::Cancelled, mode);
        true
    }

    /// Refuses every pending INVITE (the drain is over).
    pub(super) fn refuse_pending(&mut self) {
        let pending: Vec<CallNo> = self.admitting.keys().copied().collect();
        for call in pending {
            if let Some(p) = self.admitting.remove(&call) {
                self.by_tx.remove(&p.inbound.tx);
                self.refuse(&p.inbound, Refusal::Draining, None);
            }
        }
    }

    /// Load, request sanity and the token's presence, in the order a gateway checks
    /// (CONTRACT §5); the token to verify.
    fn precheck(&mut self, now: Instant, inbound: &Inbound) -> Result<String, Refusal> {
        let req = &inbound.request;
        self.check_load(now, inbound.source.ip())?;
        check_request(req)?;
        if self.is_merged(req) {
            return Err(Refusal::Merged);
        }
        let values: Vec<&str> = req.headers.get_all("User-to-User").collect();
        Ok(uui::participant_token(&values).map_err(Refusal::UserToUser)?.token)
    }

    /// What needs the participant: the mode, one leg each, the conference's bound, the session
    /// timer and a body we can read. `mode` is set once known, for the refusal's metric.
    fn admit(
        &self,
        req: &Request,
        result: Result<Admitted, TokenError>,
        mode: &mut Option<InterconnectMode>,
    ) -> Result<Stage, Refusal> {
        let admitted = result.map_err(Refusal::Token)?;
        let chosen = self.interconnect_mode(req, &admitted)?;
        *mode = Some(chosen);
        self.check_leg_limits(&admitted, chosen)?;
        let timer = self.session_timer(req)?;
        if !req.body.is_empty() && !is_sdp(req) {
            return Err(Refusal::UnsupportedBody);
        }
        Ok(Stage::Port { admitted, mode: chosen, timer })
    }

    /// Load and policy: draining, trusted sources, rate, capacity.
    fn check_load(&mut self, now: Instant, ip: std::net::IpAddr) -> Result<(), Refusal> {
        if self.draining {
            return Err(Refusal::Draining);
        }
        if !self.config.trusted_peers.is_empty() && !self.config.trusted_peers.iter().any(|n| n.contains(&ip)) {
            return Err(Refusal::UntrustedSource);
        }
        if !self.rate_allows(now, ip) {
            return Err(Refusal::SourceRate);
        }
        if self.calls.len() + self.admitting.len() >= self.config.max_calls as usize {
            return Err(Refusal::MaxCalls);
        }
        Ok(())
    }

    /// The interconnect mode: the header, else the token's, else the default.
    fn interconnect_mode(&self, req: &Request, admitted: &Admitted) -> Result<InterconnectMode, Refusal> {
        match req.headers.get("X-Interconnect-Mode").map(|m| m.trim().to_ascii_lowercase()) {
            None => Ok(admitted.mode.unwrap_or(self.config.default_mode)),
            Some(m) => match m.as_str() {
                "transfer" => Ok(InterconnectMode::Transfer),
                "bridge" => Ok(InterconnectMode::Bridge),
                "conference" => Ok(InterconnectMode::Conference),
                _ => Err(Refusal::BadMode),
            },
        }
    }

    /// One live leg per participant; a bounded conference.
    fn check_leg_limits(&self, admitted: &Admitted, mode: InterconnectMode) -> Result<(), Refusal> {
        let pending_leg = self.admitting.values().any(|p| match &p.stage {
            Stage::Port { admitted: other, .. } => other.participant == admitted.participant,
            Stage::Token => false,
        });
        if self.by_participant.contains_key(&admitted.participant) || pending_leg {
            return Err(Refusal::ParticipantBusy);
        }
        if mode == InterconnectMode::Conference {
            let legs = self
                .calls
                .values()
                .filter(|c| c.session == admitted.session && c.mode == InterconnectMode::Conference)
                .count();
            if legs >= self.config.max_conference_legs as usize {
                return Err(Refusal::ConferenceFull);
            }
        }
        Ok(())
    }

    /// The session timer (RFC 4028 §8–9): whether there is one, its interval and whether we
    /// refresh.
    fn session_timer(&self, req: &Request) -> Result<Option<SessionTimerTerms>, Refusal> {
        let supports_timer = req
            .headers
            .get_all("Supported")
            .chain(req.headers.get_all("Require"))
            .flat_map(|v| v.split(','))
            .any(|o| o.trim().eq_ignore_ascii_case("timer"));
        let asked = req.headers.get("Session-Expires");
        let asked_interval = asked.and_then(session_expires_value);
        if asked.is_some() && asked_interval.is_none() {
            return Err(Refusal::MalformedSessionExpires);
        }
        if let Some(interval) = asked_interval
            && interval < self.config.min_se
        {
            return Err(Refusal::IntervalTooSmall { min_se: self.config.min_se });
        }
        if !supports_timer && asked.is_none() {
            return Ok(None);
        }
        let interval = asked_interval.unwrap_or(self.config.session_expires);
        let we_refresh = if supports_timer {
            asked
                .and_then(|v| super::super::message::header_param(&format!(">{v}"), "refresher").map(str::to_string))
                .is_some_and(|r| r.eq_ignore_ascii_case("uas"))
        } else {
            true
        };
        Ok(Some(SessionTimerTerms { interval, we_refresh, required: supports_timer }))
    }

    /// A port, then offer/answer: our answer to the INVITE's offer, or our offer when it had
    /// none.
    fn negotiate_media(&mut self, call: CallNo, port: u16, req: &Request) -> Result<Media, Refusal> {
        let sdp_session = self.sdp_session_id();
        let local = self.local_media(port, sdp_session, 1);
        let policy = sdp::Policy { srtp: self.config.srtp };
        if req.body.is_empty() {
            let (offer, pending) = sdp::offer(&local, &policy);
            return Ok(Media {
                port,
                sdp_session,
                body: offer,
                negotiated: None,
                offer: OfferState::AwaitingAnswer(Box::new(pending)),
            });
        }
        match sdp::answer(&req.body, &local, &policy, None) {
            Ok((answer, n)) => {
                Ok(Media { port, sdp_session, body: answer, negotiated: Some(n), offer: OfferState::Stable })
            }
            Err(e) => {
                self.outputs.push_back(Output::Media(MediaCommand::Stop { call }));
                Err(Refusal::Sdp(e))
            }
        }
    }

    /// The dialog of an admitted call: its 200 (or 180 first, with an answer delay).
    #[allow(clippy::too_many_arguments)]
    fn create_dialog(
        &mut self,
        now: Instant,
        inbound: &Inbound,
        call: CallNo,
        admitted: Admitted,
        mode: InterconnectMode,
        timer: Option<SessionTimerTerms>,
        media: Media,
    ) {
        let req = &inbound.request;
        let Media { port, sdp_session, body, negotiated, offer } = media;
        let local_tag = self.random_tag(12);
        let mut ok = self.response(req, 200, Some(&local_tag));
        self.add_dialog_headers(&mut ok, inbound.transport, req);
        let session_timer = timer.map(|t| {
            let refresher = if t.we_refresh { "uas" } else { "uac" };
            ok.headers.push("Session-Expires", format!("{};refresher={refresher}", t.interval));
            if t.required {
                ok.headers.push("Require", "timer");
            }
            SessionTimer::new(now + self.config.answer_delay, t.interval, t.we_refresh)
        });
        ok.headers.push("Content-Type", "application/sdp");
        let last_answer = negotiated.is_some().then(|| body.clone());
        ok.body = body.into_bytes();
        let to = ok.headers.get("To").unwrap_or_default().to_string();
        let remote_target = req
            .headers
            .get("Contact")
            .map(|c| super::super::message::header_uri(c).to_string())
            .filter(|c| c.contains(':'))
            .unwrap_or_else(|| format!("sip:{}", inbound.source));
        let c = Call {
            call_id: req.call_id().to_string(),
            local_tag: local_tag.clone(),
            participant: admitted.participant.clone(),
            session: admitted.session.clone(),
            account: admitted.account.clone(),
            mode,
            transport: inbound.transport,
            source: inbound.source,
            remote_uri: req.headers.get("From").unwrap_or_default().to_string(),
            local_uri: to,
            remote_target,
            route_set: req.headers.get_all("Record-Route").flat_map(super::super::message::split_list).collect(),
            invite_branch: req.branch().map(str::to_string),
            remote_cseq: req.cseq(),
            local_cseq: 1,
            state: State::Answered { end_after_ack: None },
            rtp_port: port,
            sdp_session,
            sdp_version: 1,
            media: negotiated.map_or(MediaState::Unagreed, MediaState::Agreed),
            last_answer,
            offer,
            pending: None,
            session_timer,
            invite_at: now,
        };
        tracing::debug!(call_id = %c.call_id, participant = %c.participant, ?mode, "INVITE admitted");
        self.calls.insert(call, c);
        self.by_dialog.insert((req.call_id().to_string(), local_tag.clone()), call);
        self.by_tx.insert(inbound.tx, call);
        self.by_participant.insert(admitted.participant.clone(), call);
        if let Some(t) = session_timer {
            self.schedule(t.deadline, call, TimerKind::SessionExpiry);
        }
        if mode == InterconnectMode::Conference {
            self.outputs.push_back(Output::Rooms(RoomsCommand::MarkConference { session: admitted.session }));
        }
        if self.config.answer_delay.is_zero() {
            self.send_ok(now, call, inbound.tx, ok);
        } else {
            let mut ringing = self.response(req, 180, Some(&local_tag));
            self.add_dialog_headers(&mut ringing, inbound.transport, req);
            self.outputs.push_back(Output::Respond { tx: inbound.tx, response: ringing });
            let answer_at = now + self.config.answer_delay;
            if let Some(c) = self.calls.get_mut(&call) {
                c.state = State::Ringing {
                    tx: inbound.tx,
                    invite: Box::new(inbound.request.clone()),
                    ok: Box::new(ok),
                    answer_at,
                };
            }
            self.schedule(answer_at, call, TimerKind::Answer);
        }
    }

    /// An initial INVITE with the same Call-ID, From tag and CSeq as a call we have, arriving
    /// by another path (another branch): RFC 3261 §8.2.2.2.
    /// The 2xx awaiting its ACK when `req` is a copy of that call's initial INVITE (same
    /// Call-ID, From tag, CSeq and branch).
    fn retransmitted_ok(&self, req: &Request) -> Option<Response> {
        let (call_id, from_tag, cseq, branch) = (req.call_id(), req.from_tag(), req.cseq(), req.branch()?);
        self.calls.values().find_map(|c| {
            let same = c.call_id == call_id
                && super::super::message::header_param(&c.remote_uri, "tag") == from_tag
                && c.remote_cseq == cseq
                && c.invite_branch.as_deref() == Some(branch)
                && matches!(c.state, State::Answered { .. });
            same.then(|| c.pending.as_ref().map(|p| p.ok.clone())).flatten()
        })
    }

    fn is_merged(&self, req: &Request) -> bool {
        let (call_id, from_tag, cseq) = (req.call_id(), req.from_tag(), req.cseq());
        self.calls.values().any(|c| {
            c.call_id == call_id
                && super::super::message::header_param(&c.remote_uri, "tag") == from_tag
                && c.remote_cseq == cseq
        })
    }

    /// Refuses the INVITE: the response, the call event for callbacks and metrics, a log line.
    fn refuse(&mut self, inbound: &Inbound, refusal: Refusal, mode: Option<InterconnectMode>) {
        let response = self.refusal(&inbound.request, &refusal);
        let reason = quoted_text(&refusal.to_string());
        tracing::info!(call_id = %inbound.request.call_id(), status = response.status, %reason, "INVITE refused");
        self.outputs.push_back(Output::Call(super::CallEvent::InviteAnswered {
            call_id: inbound.request.call_id().to_string(),
            status: response.status,
            mode,
            setup: Duration::ZERO,
            reason: Some(reason),
        }));
        self.outputs.push_back(Output::Respond { tx: inbound.tx, response });
    }
}

/// The terms of an RFC 4028 session timer for a new call.
#[derive(Clone, Copy, Debug)]
struct SessionTimerTerms {
    interval: u32,
    we_refresh: bool,
    /// The caller supports `timer`: our 2xx requires it.
    required: bool,
}

/// A new call's media: its port, our SDP and the offer/answer state.
struct Media {
    port: u16,
    sdp_session: u64,
    body: String,
    negotiated: Option<sdp::Negotiated>,
    offer: OfferState,
}

/// Request sanity: hops, extensions, a From tag.
fn check_request(req: &Request) -> Result<(), Refusal> {
    if req.headers.get("Max-Forwards").is_some_and(|v| v.trim() == "0") {
        return Err(Refusal::TooManyHops);
    }
    let unsupported: Vec<String> = req
        .headers
        .get_all("Require")
        .flat_map(|v| v.split(','))
        .map(|o| o.trim().to_ascii_lowercase())
        .filter(|o| !o.is_empty() && !SUPPORTED_EXTENSIONS.contains(&o.as_str()))
        .collect();
    if !unsupported.is_empty() {
        return Err(Refusal::UnsupportedExtension(unsupported));
    }
    if req.from_tag().is_none() {
        return Err(Refusal::NoFromTag);
    }
    Ok(())
}
