//! The initial INVITE: admission (CONTRACT §5's failure table, in the order a gateway checks),
//! offer/answer, and the dialog it creates.

use std::time::{Duration, Instant};

use super::super::message::{Request, Response};
use super::super::sdp;
use super::super::uui;
use super::dialog::{Call, SessionTimer, State, TimerKind, is_sdp, session_expires_value};
use super::{Env, Inbound, MediaCommand, OfferState, Output, RoomsCommand, UserAgent};
use crate::interconnect::InterconnectMode;

/// Extensions we support in `Require` (RFC 3261 §8.2.2.3).
const SUPPORTED_EXTENSIONS: &[&str] = &["timer"];

impl UserAgent {
    pub(super) fn handle_invite(&mut self, now: Instant, inbound: Inbound, env: &mut dyn Env) {
        let req = &inbound.request;
        // 0. The INVITE again after its transaction ended on our 2xx (a 2xx ends an INVITE
        // server transaction, RFC 3261 §17.2.1): the client missed the 2xx, which the dialog
        // sends again until the ACK (§13.3.1.4), also in answer to this copy. Not a new call.
        if let Some(ok) = self.retransmitted_ok(req) {
            self.outputs.push_back(Output::Respond { tx: inbound.tx, response: ok });
            return;
        }
        // 1. Load and policy: draining, trusted sources, rate, capacity.
        if self.draining {
            return self.refuse_busy(&inbound, "draining", 30);
        }
        let ip = inbound.source.ip();
        if !self.config.trusted_peers.is_empty() && !self.config.trusted_peers.iter().any(|n| n.contains(&ip)) {
            return self.refuse(&inbound, 403, "source address not in sip.trusted_peers", None);
        }
        if !self.rate_allows(now, ip) {
            return self.refuse_busy(&inbound, "too many INVITEs from this source", 1);
        }
        if self.calls.len() >= self.config.max_calls as usize {
            return self.refuse_busy(&inbound, "max_calls reached", 5);
        }
        // 2. Request sanity: hops, merged requests, extensions.
        if req.headers.get("Max-Forwards").is_some_and(|v| v.trim() == "0") {
            return self.refuse(&inbound, 483, "Max-Forwards reached zero", None);
        }
        if self.is_merged(req) {
            return self.refuse(&inbound, 482, "merged request", None);
        }
        let unsupported: Vec<String> = req
            .headers
            .get_all("Require")
            .flat_map(|v| v.split(','))
            .map(|o| o.trim().to_ascii_lowercase())
            .filter(|o| !o.is_empty() && !SUPPORTED_EXTENSIONS.contains(&o.as_str()))
            .collect();
        if !unsupported.is_empty() {
            let mut r = self.refusal(req, 420, "unsupported extension");
            r.headers.push("Unsupported", unsupported.join(", "));
            return self.answer_failure(&inbound, r, None);
        }
        if req.from_tag().is_none() {
            return self.refuse(&inbound, 400, "From has no tag", None);
        }
        // 3. Who: the participant token in User-to-User.
        let values: Vec<&str> = req.headers.get_all("User-to-User").collect();
        let uui = match uui::participant_token(&values) {
            Ok(u) => u,
            Err(e) => return self.refuse(&inbound, 403, &format!("User-to-User: {e}"), None),
        };
        let admitted = match env.admit(&uui.token) {
            Ok(a) => a,
            Err(e) => {
                let status = super::super::refusal::token_status(&e);
                return self.refuse(&inbound, status, &format!("participant token: {e}"), None);
            }
        };
        // 4. Mode: header, else token, else default.
        let mode = match req.headers.get("X-Interconnect-Mode").map(|m| m.trim().to_ascii_lowercase()) {
            None => admitted.mode.unwrap_or(self.config.default_mode),
            Some(m) => match m.as_str() {
                "transfer" => InterconnectMode::Transfer,
                "bridge" => InterconnectMode::Bridge,
                "conference" => InterconnectMode::Conference,
                _ => return self.refuse(&inbound, 400, "X-Interconnect-Mode is transfer, bridge or conference", None),
            },
        };
        // 5. One live leg per participant; a bounded conference.
        if self.by_participant.contains_key(&admitted.participant) {
            return self.refuse(&inbound, 486, "the participant already has a live SIP leg", Some(mode));
        }
        if mode == InterconnectMode::Conference {
            let legs = self
                .calls
                .values()
                .filter(|c| c.session == admitted.session && c.mode == InterconnectMode::Conference)
                .count();
            if legs >= self.config.max_conference_legs as usize {
                return self.refuse_busy(&inbound, "the conference is full", 30);
            }
        }
        // 6. Session timer (RFC 4028 §8-9).
        let supports_timer = req
            .headers
            .get_all("Supported")
            .chain(req.headers.get_all("Require"))
            .flat_map(|v| v.split(','))
            .any(|o| o.trim().eq_ignore_ascii_case("timer"));
        let asked = req.headers.get("Session-Expires");
        let asked_interval = asked.and_then(session_expires_value);
        if asked.is_some() && asked_interval.is_none() {
            return self.refuse(&inbound, 400, "malformed Session-Expires", Some(mode));
        }
        if let Some(interval) = asked_interval
            && interval < self.config.min_se
        {
            let mut r = self.refusal(req, 422, "session interval too small");
            r.headers.push("Min-SE", self.config.min_se.to_string());
            return self.answer_failure(&inbound, r, Some(mode));
        }
        let timer = (supports_timer || asked.is_some()).then(|| {
            let interval = asked_interval.unwrap_or(self.config.session_expires);
            let we_refresh = if supports_timer {
                asked
                    .and_then(|v| {
                        super::super::message::header_param(&format!(">{v}"), "refresher").map(str::to_string)
                    })
                    .is_some_and(|r| r.eq_ignore_ascii_case("uas"))
            } else {
                true
            };
            (interval, we_refresh)
        });
        // 7. Media: a port, then offer/answer.
        if !req.body.is_empty() && !is_sdp(req) {
            return self.refuse(&inbound, 415, "only application/sdp bodies are understood", Some(mode));
        }
        let call = self.next_call;
        self.next_call += 1;
        let Some(port) = env.allocate_rtp(call) else {
            return self.refuse_busy(&inbound, "no RTP port free", 5);
        };
        let sdp_session = self.sdp_session_id();
        let local = self.local_media(port, sdp_session, 1);
        let policy = sdp::Policy { srtp: self.config.srtp };
        let (body, negotiated, offer) = if req.body.is_empty() {
            let (offer, pending) = sdp::offer(&local, &policy);
            (offer, None, OfferState::AwaitingAnswer(Box::new(pending)))
        } else {
            match sdp::answer(&req.body, &local, &policy, None) {
                Ok((answer, n)) => (answer, Some(n), OfferState::Stable),
                Err(e) => {
                    self.outputs.push_back(Output::Media(MediaCommand::Stop { call }));
                    let (code, text) = e.warning();
                    let tag = self.random_tag(10);
                    let mut r = self.response(req, e.status(), Some(&tag));
                    r.headers.push("Warning", super::super::refusal::warning(code, &text));
                    r.headers.push("Reason", super::super::refusal::reason(e.status(), &text));
                    return self.answer_failure(&inbound, r, Some(mode));
                }
            }
        };
        // 8. The dialog.
        let local_tag = self.random_tag(12);
        let mut ok = self.response(req, 200, Some(&local_tag));
        self.add_dialog_headers(&mut ok, inbound.transport, req);
        let session_timer = timer.map(|(interval, we_refresh)| {
            let refresher = if we_refresh { "uas" } else { "uac" };
            ok.headers.push("Session-Expires", format!("{interval};refresher={refresher}"));
            if supports_timer {
                ok.headers.push("Require", "timer");
            }
            SessionTimer::new(now + self.config.answer_delay, interval, we_refresh)
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
            state: State::Answered,
            rtp_port: port,
            sdp_session,
            sdp_version: 1,
            negotiated,
            last_answer,
            offer,
            pending: None,
            session_timer,
            invite_at: now,
            connected_at: None,
            media_started: false,
            left_rooms: false,
            end_after_ack: None,
            end_reason: None,
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
                && matches!(c.state, State::Answered);
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

    fn refuse(&mut self, inbound: &Inbound, status: u16, why: &str, mode: Option<InterconnectMode>) {
        let r = self.refusal(&inbound.request, status, why);
        self.answer_failure(inbound, r, mode);
    }

    /// 503 with Retry-After (CONTRACT §5: draining, over max_calls, over the conference limit).
    fn refuse_busy(&mut self, inbound: &Inbound, why: &str, retry_after: u32) {
        let mut r = self.refusal(&inbound.request, 503, why);
        r.headers.push("Retry-After", retry_after.to_string());
        self.answer_failure(inbound, r, None);
    }

    fn answer_failure(&mut self, inbound: &Inbound, response: Response, mode: Option<InterconnectMode>) {
        let reason = response
            .headers
            .get("Warning")
            .and_then(|w| w.split_once('"'))
            .map(|(_, t)| t.trim_end_matches('"').to_string());
        tracing::info!(
            call_id = %inbound.request.call_id(),
            status = response.status,
            reason = reason.as_deref().unwrap_or(""),
            "INVITE refused"
        );
        self.outputs.push_back(Output::Call(super::CallEvent::InviteAnswered {
            call_id: inbound.request.call_id().to_string(),
            status: response.status,
            mode,
            setup: Duration::ZERO,
            reason,
        }));
        self.outputs.push_back(Output::Respond { tx: inbound.tx, response });
    }
}
