//! A placed call's states and what moves it: the INVITE and its responses, the dialog it makes,
//! requests inside it both ways, and the session timer. The states live here; what moves them
//! is in `outgoing` (requests we send), `responses` (their answers), `incoming` (the far end's
//! requests and our answers to its offers) and `timers`.

use std::time::{Duration, Instant};

use super::super::message::{self, Method, Request, Response, header_param, header_uri};
use super::super::refusal::Refusal;
use super::digest::Challenge;
use super::{CallRef, Credentials, Dial, EndReason, Sent, Timer, Uac, UacConfig, UacError, UacEvent, UacOutput};
use crate::sip::transaction::{Peer, TxId};
use outgoing::Target;

mod incoming;
mod outgoing;
mod responses;
mod timers;

/// The methods a placed call's dialog takes.
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, UPDATE, PRACK, OPTIONS, INFO";

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
