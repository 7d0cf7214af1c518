//! `ua`: the call logic of the SIP side (CONTRACT §5), sans-IO.
//!
//! A [`UserAgent`] is fed requests of server transactions, CANCELs and ACKs that reach them, the
//! outcome of the requests it sent, rooms events and media events, each with the time `now`. It
//! answers with [`Output`]s: responses for a transaction, in-dialog requests to send (BYE,
//! UPDATE), media commands, rooms commands and call events. It never touches a socket or a clock;
//! `sip::driver` does that and feeds it.
//!
//! Drive contract: after each `handle_*` call, drain [`UserAgent::poll_output`] until `None`,
//! then arm one timer at [`UserAgent::poll_timeout`] and call [`UserAgent::handle_timeout`] when
//! it passes. Spurious or late timeouts are no-ops.
//!
//! Dialogs live here, not in the SIP stack: the stack does transport and transactions (RFC 3261
//! §17, RFC 6026); this module does dialogs (§12), the UAS core's 2xx retransmission (§13.3.1.4),
//! in-dialog methods, offer/answer state, session timers (RFC 4028), admission by participant
//! token and the interconnect modes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore as _, SeedableRng as _};

use super::message::{Request, Response};
use super::refusal::Refusal;
use super::sdp::{self, Negotiated, PendingOffer};
use crate::ids::{AccountId, ParticipantId, SessionId};
use crate::interconnect::InterconnectMode;
use crate::rooms::{LeaveReason, RoomEvent};
use crate::sip::sdp::SrtpPolicy;
use crate::tokens::TokenError;

mod dialog;
mod invite;
#[cfg(test)]
mod tests;

/// Names a call (one dialog) inside the user agent.
pub type CallNo = u64;

/// The start of the branch of every request we send: a request that carries it in a Via has
/// come back to us (RFC 3261 §16.3 step 4 loop detection, as far as a UA can tell).
pub const OUR_BRANCH_PREFIX: &str = "z9hG4bKiw";

/// Methods we answer (the `Allow` header).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO";

/// RFC 3261 T1 and T2: the 2xx retransmission schedule (§13.3.1.4).
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

/// How long we wait for the final response to a BYE before forgetting the call anyway.
const BYE_TIMEOUT: Duration = Duration::from_secs(32);

/// Most sources tracked by the INVITE rate limiter; beyond it, full buckets are forgotten.
const MAX_RATE_SOURCES: usize = 10_000;

/// The user agent's settings.
#[derive(Clone, Debug)]
pub struct UaConfig {
    /// Mode when neither the header nor the token names one.
    pub default_mode: InterconnectMode,
    /// Most concurrent calls.
    pub max_calls: u32,
    /// Most legs in one conference session.
    pub max_conference_legs: u32,
    /// Sources allowed to send INVITEs; empty = anyone.
    pub trusted_peers: Vec<IpNet>,
    /// New INVITEs per second per source.
    pub invite_rate: u32,
    /// SRTP policy.
    pub srtp: SrtpPolicy,
    /// Address announced in SDP.
    pub media_ip: IpAddr,
    /// `host:port` for our Contact.
    pub contact_host: String,
    /// Time to ring (180) before answering; zero answers at once.
    pub answer_delay: Duration,
    /// Session interval we ask for when the caller supports timers (RFC 4028).
    pub session_expires: u32,
    /// The smallest session interval we accept (Min-SE).
    pub min_se: u32,
    /// Seed of the user agent's own random generator (ChaCha20: tags, `o=` ids and SRTP keys
    /// come from it). The shell draws it from the OS; tests fix it.
    pub rng_seed: [u8; 32],
}

pub use super::transaction::{Transport, TxId};

/// A request that opened a server transaction.
#[derive(Clone, Debug)]
pub struct Inbound {
    /// Its transaction.
    pub tx: TxId,
    /// Where it came from (after rport).
    pub source: SocketAddr,
    /// Over what.
    pub transport: Transport,
    /// The request.
    pub request: Request,
}

/// Who a participant token admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// The participant.
    pub participant: ParticipantId,
    /// The session the leg joins.
    pub session: SessionId,
    /// The participant's account.
    pub account: AccountId,
    /// The token's `mode` claim.
    pub mode: Option<InterconnectMode>,
}

/// Inputs besides new requests.
#[derive(Clone, Debug)]
pub enum Event {
    /// A CANCEL matched the INVITE transaction `tx` before its final response (the stack has
    /// answered the CANCEL 200).
    Cancel {
        /// The INVITE's transaction.
        tx: TxId,
    },
    /// An ACK reached the INVITE transaction `tx`.
    Ack {
        /// The INVITE's transaction.
        tx: TxId,
        /// The ACK.
        request: Request,
    },
    /// A request we sent got its final response (`None`: it timed out).
    Sent {
        /// The call it belongs to.
        call: CallNo,
        /// The final status.
        status: Option<u16>,
    },
    /// The verdict on the token of a pending INVITE ([`Output::Admit`]).
    Admission {
        /// The pending call.
        call: CallNo,
        /// Whom the token admits, or why not.
        result: Result<Admitted, TokenError>,
    },
    /// The RTP port reserved for a pending INVITE ([`Output::ReservePort`]); `None` when the
    /// range is exhausted.
    PortReserved {
        /// The pending call.
        call: CallNo,
        /// The port.
        port: Option<u16>,
    },
    /// A rooms change.
    Room(RoomEvent),
    /// The call's RTP stopped for the inactivity timeout.
    MediaInactive {
        /// The call.
        call: CallNo,
    },
    /// The call's media leg failed and is gone: the call cannot go on.
    MediaFailed {
        /// The call.
        call: CallNo,
    },
    /// Draining started: refuse new calls.
    Drain,
    /// The drain timeout passed: end every call.
    DrainOver,
}

/// What the user agent wants done.
#[derive(Clone, Debug)]
pub enum Output {
    /// Send `response` on transaction `tx`.
    Respond {
        /// The transaction.
        tx: TxId,
        /// The response.
        response: Response,
    },
    /// Send `request` in the dialog of `call` (a new client transaction). The driver adds the
    /// Via and sends it to `destination`.
    Send {
        /// The call.
        call: CallNo,
        /// The request, without Via.
        request: Request,
        /// Where to send it.
        destination: SocketAddr,
        /// Over what.
        transport: Transport,
    },
    /// Verify a participant token (CONTRACT §3) and find its participant; answer with
    /// [`Event::Admission`].
    Admit {
        /// The pending call.
        call: CallNo,
        /// The token from User-to-User.
        token: String,
    },
    /// Reserve an RTP port for a call; answer with [`Event::PortReserved`]. Released by
    /// [`MediaCommand::Stop`].
    ReservePort {
        /// The call.
        call: CallNo,
    },
    /// Media of a call.
    Media(MediaCommand),
    /// A change the rooms must make.
    Rooms(RoomsCommand),
    /// Something to log, count and report.
    Call(CallEvent),
}

/// Commands to the media side.
#[derive(Clone, Debug)]
pub enum MediaCommand {
    /// Media is agreed: start the leg on the port reserved for it.
    Start {
        /// The call.
        call: CallNo,
        /// Its participant and session.
        participant: ParticipantId,
        /// Its session.
        session: SessionId,
        /// The interconnect mode: a bridge leg's stream outlives it (CONTRACT §5).
        mode: InterconnectMode,
        /// The reserved local RTP port.
        local_port: u16,
        /// What was agreed.
        negotiated: Box<Negotiated>,
    },
    /// A re-INVITE or UPDATE changed the media (address, codec, hold).
    Update {
        /// The call.
        call: CallNo,
        /// What is agreed now.
        negotiated: Box<Negotiated>,
    },
    /// The call is over, or never started: release its port.
    Stop {
        /// The call.
        call: CallNo,
    },
}

/// Changes the rooms must make because of SIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomsCommand {
    /// A transfer-mode leg ended from SIP: its participant leaves the session.
    RemoveFromSession {
        /// Owner.
        account: AccountId,
        /// The session.
        session: SessionId,
        /// The participant.
        participant: ParticipantId,
    },
    /// A conference leg joined: the session gets the conference lifetime.
    MarkConference {
        /// The session.
        session: SessionId,
    },
}

/// Who a SIP leg is: what its log lines and callbacks name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leg {
    /// The call.
    pub call: CallNo,
    /// Call-ID.
    pub call_id: String,
    /// Participant.
    pub participant: ParticipantId,
    /// Session.
    pub session: SessionId,
    /// Account.
    pub account: AccountId,
    /// Mode.
    pub mode: InterconnectMode,
}

/// What happened to calls, for logs, metrics and callbacks.
#[derive(Clone, Debug, PartialEq)]
pub enum CallEvent {
    /// An initial INVITE got its final response.
    InviteAnswered {
        /// Call-ID.
        call_id: String,
        /// The final status.
        status: u16,
        /// The mode, once known.
        mode: Option<InterconnectMode>,
        /// Time from INVITE to the final response.
        setup: Duration,
        /// Why, for failures.
        reason: Option<String>,
    },
    /// A leg is up (ACK received).
    Connected(Leg),
    /// A leg ended.
    Ended {
        /// The leg.
        leg: Leg,
        /// How long it was connected.
        duration: Duration,
        /// Who ended it and why.
        reason: String,
    },
    /// A DTMF digit came by SIP INFO.
    Dtmf {
        /// The call.
        call: CallNo,
        /// Participant.
        participant: ParticipantId,
        /// The tone: 0-9, *, #, A-D.
        tone: char,
        /// Its duration.
        duration_ms: u32,
    },
}

/// The call logic.
pub struct UserAgent {
    config: UaConfig,
    calls: HashMap<CallNo, dialog::Call>,
    /// Dialog lookup: (Call-ID, our tag) → call.
    by_dialog: HashMap<(String, String), CallNo>,
    /// Initial INVITE transactions → call, while they may see a CANCEL or an ACK.
    by_tx: HashMap<TxId, CallNo>,
    /// INVITEs waiting for their admission or their port.
    admitting: HashMap<CallNo, invite::PendingInvite>,
    /// The one live leg of a participant.
    by_participant: HashMap<ParticipantId, CallNo>,
    timers: BinaryHeap<Reverse<(Instant, CallNo, dialog::TimerKind)>>,
    rate: HashMap<IpAddr, (f64, Instant)>,
    outputs: std::collections::VecDeque<Output>,
    next_call: CallNo,
    draining: bool,
    rng: ChaCha20Rng,
}

impl UserAgent {
    /// A user agent with no calls.
    pub fn new(config: UaConfig) -> Self {
        let rng = ChaCha20Rng::from_seed(config.rng_seed);
        Self {
            config,
            calls: HashMap::new(),
            by_dialog: HashMap::new(),
            by_tx: HashMap::new(),
            admitting: HashMap::new(),
            by_participant: HashMap::new(),
            timers: BinaryHeap::new(),
            rate: HashMap::new(),
            outputs: std::collections::VecDeque::new(),
            next_call: 1,
            draining: false,
            rng,
        }
    }

    /// New `sip.trusted_peers` (SIGHUP): later INVITEs are checked against them; live calls
    /// stay.
    pub fn set_trusted_peers(&mut self, peers: Vec<IpNet>) {
        self.config.trusted_peers = peers;
    }

    /// Live calls.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// A request that opened a server transaction.
    pub fn handle_request(&mut self, now: Instant, inbound: Inbound) {
        let looped = inbound
            .request
            .headers
            .get_all("Via")
            .any(|v| super::message::header_param(v, "branch").is_some_and(|b| b.starts_with(OUR_BRANCH_PREFIX)));
        if looped && inbound.request.method != super::message::Method::Ack {
            return self.reject(&inbound, Refusal::Loop);
        }
        let in_dialog = inbound.request.to_tag().is_some();
        match (&inbound.request.method, in_dialog) {
            (super::message::Method::Invite, false) => self.handle_invite(now, inbound),
            (super::message::Method::Options, false) => self.handle_options(inbound),
            (_, true) => self.handle_in_dialog(now, inbound),
            (super::message::Method::Ack, false) => {}
            (super::message::Method::Bye | super::message::Method::Update | super::message::Method::Info, false) => {
                self.reject(&inbound, Refusal::NoSuchDialog);
            }
            (super::message::Method::Cancel, false) => self.reject(&inbound, Refusal::NoSuchTransaction),
            (_, false) => {
                self.reject(&inbound, Refusal::MethodNotAllowed { allow: ALLOW });
            }
        }
    }

    /// Any other input.
    pub fn handle_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Cancel { tx } => self.handle_cancel(now, tx),
            Event::Ack { tx, request } => self.handle_ack(now, tx, request),
            Event::Sent { call, status } => self.handle_sent(now, call, status),
            Event::Admission { call, result } => self.handle_admission(call, result),
            Event::PortReserved { call, port } => self.handle_port(now, call, port),
            Event::Room(e) => self.handle_room(now, e),
            Event::MediaInactive { call } => {
                if let Some(c) = self.calls.get(&call)
                    && !c.on_hold()
                    && c.is_confirmed()
                {
                    self.hang_up(now, call, "RTP timeout");
                }
            }
            // Whatever the call's state: `end` waits for the ACK where it must.
            Event::MediaFailed { call } => self.hang_up(now, call, "media failure"),
            Event::Drain => self.draining = true,
            Event::DrainOver => {
                self.refuse_pending();
                let calls: Vec<CallNo> = self.calls.keys().copied().collect();
                for call in calls {
                    self.hang_up(now, call, "shutdown");
                }
            }
        }
    }

    /// Timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, call, kind))) = self.timers.peek().cloned() {
            if at > now {
                break;
            }
            self.timers.pop();
            self.fire(now, call, kind, at);
        }
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`UserAgent::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    // ----- shared helpers -----

    fn schedule(&mut self, at: Instant, call: CallNo, kind: dialog::TimerKind) {
        self.timers.push(Reverse((at, call, kind)));
    }

    /// A response to `req` with our Server header and, for 18x/2xx, the dialog's tag.
    fn response(&self, req: &Request, status: u16, to_tag: Option<&str>) -> Response {
        let mut r = Response::to(req, status, super::message::reason_phrase(status), to_tag);
        r.headers.push("Server", concat!("interwork/", env!("CARGO_PKG_VERSION")));
        r
    }

    /// A refusal with a Warning and a Reason saying why (CONTRACT §5).
    fn reject(&mut self, inbound: &Inbound, refusal: Refusal) {
        let response = self.refusal(&inbound.request, &refusal);
        self.outputs.push_back(Output::Respond { tx: inbound.tx, response });
    }

    fn refusal(&mut self, req: &Request, refusal: &Refusal) -> Response {
        let tag = self.random_tag(10);
        let mut r = self.response(req, refusal.status(), Some(&tag));
        refusal.write(&mut r);
        r
    }

    fn handle_options(&mut self, inbound: Inbound) {
        if self.draining {
            self.reject(&inbound, Refusal::Draining);
            return;
        }
        let tag = self.random_tag(10);
        let mut r = self.response(&inbound.request, 200, Some(&tag));
        r.headers.push("Allow", ALLOW);
        r.headers.push("Accept", "application/sdp, application/dtmf-relay");
        r.headers.push("Supported", "timer");
        self.outputs.push_back(Output::Respond { tx: inbound.tx, response: r });
    }

    fn handle_room(&mut self, now: Instant, event: RoomEvent) {
        let (participant, session, reason) = match &event {
            RoomEvent::ParticipantLeft { participant, session, reason, .. } => (participant, session, *reason),
            _ => return,
        };
        let Some(&call) = self.by_participant.get(participant) else { return };
        let Some(c) = self.calls.get(&call) else { return };
        if &c.session != session {
            return;
        }
        // CONTRACT §2 and §5: removal through the API ends a transfer-mode leg; a session or
        // participant that is gone ends every leg bridged to it.
        let ends = match reason {
            LeaveReason::Removed => c.mode == InterconnectMode::Transfer,
            LeaveReason::SessionDeleted | LeaveReason::SessionExpired | LeaveReason::ParticipantDeleted => true,
        };
        if ends {
            let why = match reason {
                LeaveReason::Removed => "participant removed",
                LeaveReason::SessionDeleted => "session deleted",
                LeaveReason::SessionExpired => "session expired",
                LeaveReason::ParticipantDeleted => "participant deleted",
            };
            self.end(now, call, dialog::Ending { reason: why.to_string(), left_session: true });
        }
    }

    /// Token bucket per source: true when one more INVITE is allowed now.
    fn rate_allows(&mut self, now: Instant, ip: IpAddr) -> bool {
        let rate = f64::from(self.config.invite_rate);
        if self.rate.len() >= MAX_RATE_SOURCES && !self.rate.contains_key(&ip) {
            self.rate
                .retain(|_, (tokens, at)| *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < rate);
        }
        let (tokens, at) = self.rate.entry(ip).or_insert((rate, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(rate);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl UserAgent {
    /// Our view of the SDP's local media for a call, with fresh keying material.
    fn local_media(&mut self, port: u16, session_id: u64, version: u64) -> sdp::LocalMedia {
        let mut keying = [0; sdp::KEYING_LEN];
        self.rng.fill_bytes(&mut keying);
        sdp::LocalMedia { addr: self.config.media_ip, rtp_port: port, session_id, session_version: version, keying }
    }

    /// A tag (RFC 3261 §19.3: at least 32 random bits) of `len` base-36 characters.
    fn random_tag(&mut self, len: usize) -> String {
        const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        (0..len).map(|_| ALPHABET[(self.rng.next_u32() % 36) as usize] as char).collect()
    }

    /// A fresh `o=` session id (RFC 4566 §5.2).
    fn sdp_session_id(&mut self) -> u64 {
        u64::from(self.rng.next_u32())
    }
}

/// The offer/answer state of a dialog (RFC 3264): which side owes an answer.
#[derive(Clone, Debug)]
enum OfferState {
    /// Nothing pending.
    Stable,
    /// We sent an offer in a 2xx; the answer comes in the ACK.
    AwaitingAnswer(Box<PendingOffer>),
}
