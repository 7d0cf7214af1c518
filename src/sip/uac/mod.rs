//! Calls we place (the UAC side of RFC 3261 §8.1, §12–§15), sans-IO: INVITE with or without an
//! offer, provisional responses and reliable ones with PRACK (RFC 3262), the ACK of a 2xx (and
//! of its retransmissions), digest challenges (RFC 7616, RFC 8760; see [`digest`]), CANCEL,
//! BYE, re-INVITE and UPDATE (RFC 3311) both ways, and session timers as refresher or watcher
//! (RFC 4028).
//!
//! [`Uac`] sits beside the user agent of answered calls, on the transaction layer: it returns
//! [`UacOutput::Request`]s for the shell to send as client transactions, and is fed their
//! responses ([`Uac::handle_response`]), their failures ([`Uac::request_failed`]), the
//! in-dialog requests the far end sends ([`Uac::handle_request`], [`Uac::handle_ack`]) and the
//! time. It reads no clock, draws its tags, branches, Call-IDs and client nonces from a seeded
//! generator, and does no I/O.
//!
//! One call is one dialog: when an INVITE forks and several 2xx come, the first one wins and
//! every other is ACKed and sent BYE (§13.2.2.4). Requests all go to the dial's next hop (the
//! trunk or outbound proxy), with the dialog's route set in Route headers.

mod dialog;
pub mod digest;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore as _, SeedableRng as _};

use super::message::{Method, Request, Response};
use super::transaction::{Peer, Transport, TxId};
use dialog::{Call, CallState};

/// Names a call placed through [`Uac::dial`].
pub type CallRef = u64;

/// The UAC's settings.
#[derive(Clone, Debug)]
pub struct UacConfig {
    /// Our address as the far end reaches it: the Via sent-by and the Contact.
    pub local: SocketAddr,
    /// How our requests travel (the Via transport, the Contact's `transport` parameter).
    pub transport: Transport,
    /// The `User-Agent` value.
    pub user_agent: String,
    /// The RFC 4028 session interval we ask for, seconds; `None` asks for no session timer.
    pub session_expires: Option<u32>,
    /// The smallest interval we accept (RFC 4028 `Min-SE`, at least 90).
    pub min_se: u32,
    /// `Require: 100rel` (the far end must send reliable provisionals) rather than `Supported`.
    pub require_100rel: bool,
    /// RFC 3261 T1: the 2xx retransmission base for re-INVITEs we answer.
    pub t1: Duration,
    /// Seed of the generator of tags, branches, Call-IDs and client nonces.
    pub rng_seed: [u8; 32],
}

impl UacConfig {
    /// Defaults for a UAC reached at `local` over `transport`: 1800 s sessions, Min-SE 90,
    /// 100rel supported.
    pub fn new(local: SocketAddr, transport: Transport, rng_seed: [u8; 32]) -> Self {
        Self {
            local,
            transport,
            user_agent: concat!("interwork/", env!("CARGO_PKG_VERSION")).to_string(),
            session_expires: Some(1800),
            min_se: 90,
            require_100rel: false,
            t1: Duration::from_millis(500),
            rng_seed,
        }
    }
}

/// Digest credentials for the challenges of a call's next hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

/// A call to place.
#[derive(Clone, Debug)]
pub struct Dial {
    /// The Request-URI.
    pub uri: String,
    /// The From URI (our side; the tag is ours to add).
    pub from: String,
    /// The To URI.
    pub to: String,
    /// Where every request of the call goes.
    pub next_hop: Peer,
    /// The SDP offer; `None` sends the INVITE without one and the far end offers in its answer.
    pub offer: Option<Vec<u8>>,
    /// Answers to 401/407 challenges; `None` ends the call on a challenge.
    pub credentials: Option<Credentials>,
    /// Extra header fields of the INVITE (e.g. P-Asserted-Identity, Geolocation).
    pub headers: Vec<(String, String)>,
}

/// Names one request the UAC sent, for reporting its transaction's failure.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Sent {
    /// Its call.
    pub call: CallRef,
    /// Its CSeq number.
    pub cseq: u32,
    /// Its method.
    pub method: Method,
}

/// What the UAC wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UacOutput {
    /// Send as a new client transaction; if it fails, tell [`Uac::request_failed`].
    Request {
        /// What it is.
        sent: Sent,
        /// The request (our Via and branch on top).
        request: Request,
        /// Where.
        to: Peer,
    },
    /// Send outside any transaction (the ACK of a 2xx, a 2xx retransmission).
    Transmit {
        /// Where.
        to: Peer,
        /// A whole message.
        bytes: Vec<u8>,
    },
    /// Answer server transaction `tx` (an in-dialog request of the far end).
    Respond {
        /// The transaction.
        tx: TxId,
        /// The response.
        response: Response,
    },
    /// Something the call's owner learns.
    Event {
        /// The call.
        call: CallRef,
        /// What happened.
        event: UacEvent,
    },
}

/// What happens to a call, for its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UacEvent {
    /// A provisional response other than 100 (180 ringing, 183 progress).
    Progress {
        /// Its status.
        status: u16,
    },
    /// The far end's answer to our offer (in a reliable or early 1xx, a 2xx, an ACK).
    Answer {
        /// The SDP.
        sdp: Vec<u8>,
    },
    /// The far end's offer; reply with [`Uac::answer`].
    Offer {
        /// The SDP.
        sdp: Vec<u8>,
    },
    /// The INVITE got its 2xx: the call is up.
    Connected,
    /// A re-INVITE or UPDATE we sent was refused; the call goes on.
    ModifyFailed {
        /// The final status.
        status: u16,
    },
    /// The call is over (or never started); nothing more comes for it.
    Ended {
        /// Why.
        why: EndReason,
    },
}

/// Why a call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The INVITE got a final 3xx–6xx.
    Refused {
        /// The status.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
    /// We cancelled it before an answer.
    Cancelled,
    /// No final response came in time (timer B or F, 408) or the transport failed.
    Timeout,
    /// A challenge could not be answered: no credentials, a refused answer, or a challenge we
    /// cannot parse.
    AuthFailed {
        /// 401 or 407.
        status: u16,
    },
    /// We hung up.
    HungUp,
    /// The far end sent BYE.
    RemoteHangup,
    /// The session timer ran out without a refresh (RFC 4028 §10); we sent BYE.
    SessionExpired,
    /// The far end no longer knows the dialog (481 or 408 to an in-dialog request, RFC 5057).
    DialogLost,
}

/// Why an operation on a call was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UacError {
    /// No such call (it ended, or never was).
    #[error("no such call")]
    NoCall,
    /// Not in this state of the call (e.g. a re-INVITE before it is connected).
    #[error("not possible in the call's state")]
    State,
    /// An offer/answer exchange or another re-INVITE/UPDATE is in progress (RFC 3261 §14.1).
    #[error("another offer/answer exchange is in progress")]
    Pending,
    /// The request URI or an address is not usable.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Timers of calls; the deadline kept in the call tells a live entry from a stale one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// RFC 4028: refresh, or give up on a refresh that did not come.
    Session,
    /// Retransmit the 2xx of a re-INVITE we answered, or give up waiting for its ACK.
    Retransmit,
}

/// Every call placed and not yet over.
pub struct Uac {
    config: UacConfig,
    rng: ChaCha20Rng,
    calls: HashMap<CallRef, Call>,
    by_call_id: HashMap<String, CallRef>,
    timers: BinaryHeap<Reverse<(Instant, CallRef, Timer)>>,
    outputs: VecDeque<UacOutput>,
    next_call: CallRef,
}

impl Uac {
    /// A UAC with no calls.
    pub fn new(config: UacConfig) -> Self {
        let rng = ChaCha20Rng::from_seed(config.rng_seed);
        Self {
            config,
            rng,
            calls: HashMap::new(),
            by_call_id: HashMap::new(),
            timers: BinaryHeap::new(),
            outputs: VecDeque::new(),
            next_call: 1,
        }
    }

    /// Calls not yet over.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is in progress.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The call an in-dialog message belongs to, by its Call-ID.
    pub fn call_of(&self, call_id: &str) -> Option<CallRef> {
        self.by_call_id.get(call_id).copied()
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<UacOutput> {
        self.outputs.pop_front()
    }

    /// When [`Uac::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Places a call: sends its INVITE.
    pub fn dial(&mut self, now: Instant, dial: Dial) -> Result<CallRef, UacError> {
        if dial.uri.is_empty() || dial.uri.contains(['\r', '\n', ' ']) {
            return Err(UacError::Invalid("request URI"));
        }
        if [&dial.from, &dial.to].iter().any(|v| v.is_empty() || v.contains(['\r', '\n', '<', '>'])) {
            return Err(UacError::Invalid("From or To URI"));
        }
        let id = self.next_call;
        self.next_call += 1;
        let call_id = format!("{}@interwork", self.random_token(20));
        let local_tag = self.random_token(10);
        let call = Call::new(dial, call_id.clone(), local_tag, &self.config);
        self.by_call_id.insert(call_id, id);
        self.calls.insert(id, call);
        self.send_invite(now, id);
        Ok(id)
    }

    /// Cancels a call not yet answered (CANCEL once a provisional came, §9.1), or hangs up one
    /// that is (BYE).
    pub fn hang_up(&mut self, now: Instant, call: CallRef) -> Result<(), UacError> {
        let c = self.calls.get_mut(&call).ok_or(UacError::NoCall)?;
        match &mut c.state {
            CallState::Inviting(inviting) => {
                if inviting.cancel_wanted {
                    return Ok(());
                }
                inviting.cancel_wanted = true;
                if inviting.provisional {
                    self.send_cancel(call);
                }
                Ok(())
            }
            CallState::Confirmed(_) => {
                self.send_bye(now, call, EndReason::HungUp);
                Ok(())
            }
            CallState::Ending { .. } => Ok(()),
        }
    }

    /// Sends a new offer in the dialog: re-INVITE, or UPDATE with `update`.
    pub fn modify(&mut self, now: Instant, call: CallRef, sdp: Vec<u8>, update: bool) -> Result<(), UacError> {
        let c = self.calls.get_mut(&call).ok_or(UacError::NoCall)?;
        if !matches!(c.state, CallState::Confirmed(_)) {
            return Err(UacError::State);
        }
        if c.busy() {
            return Err(UacError::Pending);
        }
        self.send_modify(now, call, Some(sdp), update, false);
        Ok(())
    }

    /// The answer to the far end's [`UacEvent::Offer`]; `None` refuses it (488, or for an offer
    /// in a 2xx, an ACK followed by BYE as §13.2.2.4 requires).
    pub fn answer(&mut self, now: Instant, call: CallRef, sdp: Option<Vec<u8>>) -> Result<(), UacError> {
        self.answer_offer(now, call, sdp)
    }

    /// Timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, call, timer))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Session => self.session_timeout(now, call),
                Timer::Retransmit => self.retransmit_timeout(now, call),
            }
        }
    }

    fn schedule(&mut self, at: Instant, call: CallRef, timer: Timer) {
        self.timers.push(Reverse((at, call, timer)));
    }

    fn event(&mut self, call: CallRef, event: UacEvent) {
        self.outputs.push_back(UacOutput::Event { call, event });
    }

    /// Ends `call`: forgets it and tells its owner.
    fn end(&mut self, call: CallRef, why: EndReason) {
        if let Some(c) = self.calls.remove(&call) {
            self.by_call_id.remove(&c.call_id);
            self.event(call, UacEvent::Ended { why });
        }
    }

    /// Random base-36 characters: tags, Call-IDs, branches, client nonces.
    fn random_token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        (0..len).map(|_| ALPHABET[(self.rng.next_u32() % 36) as usize] as char).collect()
    }
}
