//! The forwarder core: every browser peer connection (a str0m [`Rtc`]) behind one UDP port, and
//! the Opus forwarding between them by subscriptions (a selective forwarding unit: frames are
//! passed on as they came, never decoded).
//!
//! Sans-IO, like str0m itself: [`Sfu`] is fed `(now, input)` through `handle_*` methods and
//! gives back datagrams to send ([`Sfu::poll_transmit`]), messages for devices and other parts
//! ([`Sfu::poll_event`]) and when it next needs time ([`Sfu::poll_timeout`]). The driver owns
//! the socket, the clock and the channels (`driver.rs`).
//!
//! Demultiplexing: a datagram goes to the peer that last received from its source address;
//! from a new address only a STUN check can start a peer, and it goes to the peer whose ICE
//! credentials it names ([`Rtc::accepts`]).
//!
//! Negotiation: the server always offers and the browser always answers, one offer at a time
//! per peer; changes made while an offer is out are folded into the next one. A publisher gets
//! a `recvonly` m-line for its microphone; a subscriber gets one `sendonly` m-line per stream it
//! hears, with the stream's endpoint id as the `msid` stream id, stopped (and recycled by the
//! next offer) when the stream goes away.
//!
//! Forwarding: an endpoint is one published stream. Its frames are mapped onto the endpoint's
//! [`Timeline`] once and written, as the same reference-counted buffer, into every subscriber's
//! m-line; str0m gives each m-line its own SSRC and sequence numbers. Non-browser publishers and
//! subscribers (the SIP legs of the media bridge) use the same endpoints through
//! [`Sfu::add_external_publisher`] and [`Sfu::add_external_subscriber`].
//!
//! Lifetimes: a peer whose media stops for [`SfuConfig::idle_timeout`] (or that never connects
//! within [`SfuConfig::setup_timeout`] of its first offer) is removed; the endpoints of a removed
//! peer stay for [`SfuConfig::reconnect_grace`] so that the same participant publishing again
//! from a new connection continues the same stream, then they become unavailable.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use super::protocol::{CloseReason, ErrorCode, ServerMessage, StreamInfo, is_dtmf_tone};
use super::timeline::{SourceGeneration, Timeline};
use crate::ids::{ParticipantId, SessionId};
use crate::rooms::model::MediaType;

/// Default for [`SfuConfig::idle_timeout`]: browsers send a STUN consent check at least every
/// 5 s (RFC 7675 §5.1) and RTCP every few seconds, so 15 s of silence means the peer is gone.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Default for [`SfuConfig::setup_timeout`]: ICE and DTLS take well under a second on a working
/// path; a peer not connected 20 s after its offer will not connect.
pub const DEFAULT_SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Default for [`SfuConfig::reconnect_grace`]: long enough for a page reload to publish again.
pub const DEFAULT_RECONNECT_GRACE: Duration = Duration::from_secs(2);

/// Most source addresses remembered per peer (ICE may try a few before settling).
const MAX_ADDRS_PER_PEER: usize = 8;

/// How the forwarder is set up.
#[derive(Clone, Debug)]
pub struct SfuConfig {
    /// The address the shared socket receives on (`media.webrtc_listen`, or the announced
    /// address when that is unspecified): the destination of every received datagram.
    pub local: SocketAddr,
    /// Host candidates announced to browsers: the listen address and `media.public_ip`.
    pub candidates: Vec<SocketAddr>,
    /// See [`DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`DEFAULT_SETUP_TIMEOUT`].
    pub setup_timeout: Duration,
    /// See [`DEFAULT_RECONNECT_GRACE`].
    pub reconnect_grace: Duration,
}

impl SfuConfig {
    /// A config with the default timeouts.
    pub fn new(local: SocketAddr, candidates: Vec<SocketAddr>) -> Self {
        Self {
            local,
            candidates,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            setup_timeout: DEFAULT_SETUP_TIMEOUT,
            reconnect_grace: DEFAULT_RECONNECT_GRACE,
        }
    }
}

/// Names a browser peer (one device socket) inside the forwarder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

pub use crate::media::router::ExternalSubscriberId;

pub use crate::ids::EndpointId;

/// Who a peer is.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The participant.
    pub participant: ParticipantId,
    /// The session it was admitted to.
    pub session: SessionId,
    /// What it may publish.
    pub permissions: Vec<MediaType>,
}

/// Which sessions a subscription refresh looks at: all, or a few that changed (a call event
/// touches one or two; their peers, streams and subscribers come from a per-session index).
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    /// Every session.
    All,
    /// These sessions.
    Sessions(&'a [SessionId]),
}

/// What made a session's subscriptions stale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Anything (peers, permissions): the whole session is recomputed.
    Any,
    /// A new external stream (a SIP leg's): only who hears its publisher is to subscribe.
    Stream(EndpointId),
    /// A new external subscriber (a SIP leg's mixer): only what it hears is to be found.
    Subscriber(ExternalSubscriberId),
}

/// Something for the driver to deliver.
#[derive(Debug)]
pub enum SfuEvent {
    /// A message for a device's socket.
    ToDevice(PeerId, ServerMessage),
    /// Close a device's socket; the peer is already gone.
    CloseDevice(PeerId, CloseReason),
    /// Endpoints or peers of `session` changed: who receives what there must be recomputed
    /// ([`Sfu::refresh_subscriptions`]), or, for a targeted change, only what it touches
    /// ([`Sfu::apply_change`]).
    SubscriptionsStale {
        /// The session.
        session: SessionId,
        /// What changed.
        change: Change,
    },
    /// A device sent a DTMF tone; deliver with [`Sfu::fan_out_dtmf`].
    Dtmf {
        /// The sender's session.
        session: SessionId,
        /// The sender.
        participant: ParticipantId,
        /// The tone.
        tone: char,
    },
    /// An Opus frame for a non-browser subscriber.
    ExternalFrame {
        /// The subscriber.
        subscriber: ExternalSubscriberId,
        /// The stream (names its publisher too: one `Arc`, no per-frame allocation).
        endpoint: EndpointId,
        /// On the endpoint's continuous timeline, 48 kHz.
        rtp_time: MediaTime,
        /// The Opus frame, shared with every other subscriber.
        data: Arc<[u8]>,
    },
    /// A DTMF tone for a non-browser subscriber.
    ExternalDtmf {
        /// The subscriber.
        subscriber: ExternalSubscriberId,
        /// Who sent it.
        participant: ParticipantId,
        /// The tone.
        tone: char,
    },
}

/// Why the forwarder refused a call of its API.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SfuError {
    /// No such peer (it was removed meanwhile).
    #[error("no such peer")]
    UnknownPeer,
    /// No such endpoint.
    #[error("no such endpoint")]
    UnknownEndpoint,
    /// str0m refused to set up a peer.
    #[error("cannot set up the peer connection")]
    PeerSetup,
}

/// Counters of things that cost a packet rather than an error.
#[derive(Clone, Copy, Debug, Default)]
pub struct SfuCounters {
    /// Datagrams no peer accepted.
    pub unrouted_datagrams: u64,
    /// Datagrams that are not STUN, DTLS, RTP or RTCP.
    pub unparsable_datagrams: u64,
    /// Frames written to subscribers.
    pub frames_forwarded: u64,
    /// Frames a subscriber's peer refused.
    pub frames_dropped: u64,
}

/// The forwarder.
pub struct Sfu {
    config: SfuConfig,
    crypto: Arc<str0m::crypto::CryptoProvider>,
    dtls_cert: Option<str0m::config::DtlsCert>,
    next_id: u64,
    peers: HashMap<PeerId, Peer>,
    by_addr: HashMap<SocketAddr, PeerId>,
    by_participant: HashMap<ParticipantId, PeerId>,
    endpoints: BTreeMap<EndpointId, Endpoint>,
    /// Each participant's endpoints (one, mostly): finding a stream to adopt or park must not
    /// walk every stream of the node.
    by_owner: HashMap<ParticipantId, Vec<EndpointId>>,
    /// What each session holds, so that a refresh scoped to a few sessions touches only theirs.
    by_session: HashMap<SessionId, SessionIndex>,
    /// No orphaned stream expires before this (none: there are none); a hint that may be early,
    /// so that timeouts do not walk every stream on every wake-up.
    orphans_due: Option<Instant>,
    externals: HashMap<ExternalSubscriberId, ExternalSubscriber>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SfuEvent>,
    /// Peers with input since they were last polled (each at most once: `Peer::dirty`).
    dirty: Vec<PeerId>,
    /// Reused for the events of one peer's poll, so that forwarding can borrow other peers.
    scratch: Vec<Event>,
    counters: SfuCounters,
}

/// The peers, streams and external subscribers of one session.
#[derive(Default)]
struct SessionIndex {
    peers: Vec<PeerId>,
    /// Streams that flow or may (a browser's, a SIP leg's, an orphan within its grace).
    endpoints: BTreeSet<EndpointId>,
    /// Parked bridge streams ([`Source::Parked`]): quiet until the participant's next leg.
    /// Browsers keep them (muted); SIP mixers subscribe only when they flow again, so that a
    /// leg joining a session of thousands of parked participants does not pay for each.
    parked: BTreeSet<EndpointId>,
    externals: Vec<ExternalSubscriberId>,
}

impl SessionIndex {
    fn is_empty(&self) -> bool {
        self.peers.is_empty() && self.endpoints.is_empty() && self.parked.is_empty() && self.externals.is_empty()
    }

    /// Every stream: flowing and parked.
    fn streams(&self) -> impl Iterator<Item = &EndpointId> {
        self.endpoints.iter().chain(&self.parked)
    }
}

/// Which parked streams [`Sfu::remove_parked`] removes.
#[derive(Clone, Copy, Debug)]
pub enum Parked<'a> {
    /// The participant's in the session (it left the session).
    Of(&'a ParticipantId, &'a SessionId),
    /// The participant's in any session (it was deleted).
    OfParticipant(&'a ParticipantId),
    /// Every one in the session (it ended).
    InSession(&'a SessionId),
}

struct Peer {
    info: PeerInfo,
    rtc: Rtc,
    next_timeout: Instant,
    addrs: Vec<SocketAddr>,
    last_rx: Instant,
    offered_at: Option<Instant>,
    connected: bool,
    pending: Option<Pending>,
    /// Streams this peer receives: endpoint → its m-line.
    sending: BTreeMap<EndpointId, SendSlot>,
    /// Streams this peer should receive (from the last refresh).
    wanted: BTreeSet<EndpointId>,
    /// m-lines to stop at the next offer.
    to_stop: Vec<Mid>,
    publish: PublishState,
    /// The m-line that keeps the transport up is in the session.
    anchored: bool,
    /// Listed in `Sfu::dirty` (a flag, so that marking is O(1) per frame and subscriber).
    dirty: bool,
}

struct SendSlot {
    mid: Mid,
    active: bool,
}

struct Pending {
    offer: SdpPendingOffer,
    added: Vec<(EndpointId, Mid)>,
    publish: Option<(Mid, u32)>,
}

enum PublishState {
    None,
    /// Asked for; goes into the next offer.
    Wanted(u32),
    /// In the offer that is out.
    Offered,
    /// Flowing.
    Active {
        mid: Mid,
        endpoint: EndpointId,
    },
}

struct Endpoint {
    participant: ParticipantId,
    session: SessionId,
    source: Source,
    generation: SourceGeneration,
    timeline: Timeline,
    targets: Vec<Target>,
    /// Its publisher sends nothing for now (a held SIP leg, a parked bridge stream).
    muted: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Peer(PeerId, Mid),
    External,
    /// Its publisher is gone; it is removed at this time unless adopted.
    Orphaned(Instant),
    /// A bridge-mode SIP leg ended: kept, quiet, until the participant's next leg adopts it or
    /// the participant leaves (CONTRACT §5).
    Parked,
}

impl Endpoint {
    fn new(participant: ParticipantId, session: SessionId, source: Source) -> Self {
        Self {
            participant,
            session,
            source,
            generation: SourceGeneration::default(),
            timeline: Timeline::new(Frequency::FORTY_EIGHT_KHZ),
            targets: Vec::new(),
            muted: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Peer { peer: PeerId, mid: Mid, pt: Option<Pt> },
    External(ExternalSubscriberId),
}

struct ExternalSubscriber {
    participant: ParticipantId,
    session: SessionId,
    wanted: BTreeSet<EndpointId>,
}

impl Sfu {
    /// A forwarder with no peers.
    pub fn new(config: SfuConfig) -> Self {
        let crypto = str0m::crypto::from_feature_flags();
        // One certificate for every peer: generating a key pair per peer costs milliseconds, and
        // the fingerprint is per offer anyway.
        let dtls_cert = crypto.dtls_provider.generate_certificate();
        Self {
            config,
            crypto: Arc::new(crypto),
            dtls_cert,
            next_id: 1,
            peers: HashMap::new(),
            by_addr: HashMap::new(),
            by_participant: HashMap::new(),
            endpoints: BTreeMap::new(),
            by_owner: HashMap::new(),
            by_session: HashMap::new(),
            orphans_due: None,
            externals: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            dirty: Vec::new(),
            scratch: Vec::new(),
            counters: SfuCounters::default(),
        }
    }

    // ----- getters -----

    /// Counters.
    pub fn counters(&self) -> SfuCounters {
        self.counters
    }

    /// Number of live peers.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// The peers of a session (to close them when it ends).
    pub fn peers_in(&self, session: &SessionId) -> Vec<PeerId> {
        self.by_session.get(session).map(|i| i.peers.clone()).unwrap_or_default()
    }

    /// The peer of a participant, if it has one.
    pub fn peer_of(&self, participant: &ParticipantId) -> Option<PeerId> {
        self.by_participant.get(participant).copied()
    }

    /// Who a peer is.
    pub fn peer_info(&self, peer: PeerId) -> Option<&PeerInfo> {
        self.peers.get(&peer).map(|p| &p.info)
    }

    /// Every peer.
    pub fn peer_ids(&self, scope: Scope<'_>) -> Vec<PeerId> {
        self.scoped_peers(scope).map(|(id, _)| *id).collect()
    }

    /// The peers in `scope`.
    fn scoped_peers<'a>(&'a self, scope: Scope<'a>) -> Box<dyn Iterator<Item = (&'a PeerId, &'a Peer)> + 'a> {
        match scope {
            Scope::All => Box::new(self.peers.iter()),
            Scope::Sessions(sessions) => Box::new(
                sessions
                    .iter()
                    .filter_map(|s| self.by_session.get(s))
                    .flat_map(|i| i.peers.iter())
                    .filter_map(|id| self.peers.get_key_value(id)),
            ),
        }
    }

    /// The streams in `scope`.
    fn scoped_endpoints<'a>(
        &'a self,
        scope: Scope<'a>,
    ) -> Box<dyn Iterator<Item = (&'a EndpointId, &'a Endpoint)> + 'a> {
        match scope {
            Scope::All => Box::new(self.endpoints.iter()),
            Scope::Sessions(sessions) => Box::new(
                sessions
                    .iter()
                    .filter_map(|s| self.by_session.get(s))
                    .flat_map(|i| i.streams())
                    .filter_map(|id| self.endpoints.get_key_value(id)),
            ),
        }
    }

    /// The external subscribers in `scope`.
    fn scoped_externals<'a>(
        &'a self,
        scope: Scope<'a>,
    ) -> Box<dyn Iterator<Item = (&'a ExternalSubscriberId, &'a ExternalSubscriber)> + 'a> {
        match scope {
            Scope::All => Box::new(self.externals.iter()),
            Scope::Sessions(sessions) => Box::new(
                sessions
                    .iter()
                    .filter_map(|s| self.by_session.get(s))
                    .flat_map(|i| i.externals.iter())
                    .filter_map(|id| self.externals.get_key_value(id)),
            ),
        }
    }

    /// Who receives streams in `scope` (peers and external subscribers): the listener side of
    /// the subscription check.
    pub fn listeners(&self, scope: Scope<'_>) -> Vec<(SessionId, ParticipantId)> {
        let peers = self.scoped_peers(scope).map(|(_, p)| (p.info.session.clone(), p.info.participant.clone()));
        let externals = self.scoped_externals(scope).map(|(_, s)| (s.session.clone(), s.participant.clone()));
        peers.chain(externals).collect()
    }

    /// Who publishes streams in `scope`: the publisher side of the subscription check.
    pub fn publishers(&self, scope: Scope<'_>) -> Vec<(SessionId, ParticipantId)> {
        let mut v: Vec<_> =
            self.scoped_endpoints(scope).map(|(_, e)| (e.session.clone(), e.participant.clone())).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Who publishes the streams of `session` that flow (parked ones left out): what a new SIP
    /// mixer there may hear.
    fn flowing_publishers(&self, session: &SessionId) -> Vec<(SessionId, ParticipantId)> {
        let mut v: Vec<_> = self
            .by_session
            .get(session)
            .into_iter()
            .flat_map(|i| i.endpoints.iter())
            .filter_map(|id| self.endpoints.get(id))
            .map(|e| (e.session.clone(), e.participant.clone()))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// True when the peer's ICE and DTLS are up.
    pub fn is_connected(&self, peer: PeerId) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.rtc.is_connected())
    }

    // ----- peers -----

    /// Adds a browser peer. Another peer of the same participant is replaced: it is removed and
    /// its device closed with [`CloseReason::Replaced`] (the newest tab wins).
    pub fn add_peer(&mut self, now: Instant, info: PeerInfo) -> Result<PeerId, SfuError> {
        if let Some(old) = self.by_participant.get(&info.participant).copied() {
            self.remove_peer(now, old, Some(CloseReason::Replaced));
        }
        let mut builder = Rtc::builder()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, false)
            .set_crypto_provider(self.crypto.clone());
        if let Some(cert) = &self.dtls_cert {
            builder = builder.set_dtls_cert(cert.clone());
        }
        let mut rtc = builder.build(now);
        for addr in &self.config.candidates {
            let c = Candidate::host(*addr, "udp").map_err(|_| SfuError::PeerSetup)?;
            rtc.add_local_candidate(c);
        }
        let id = PeerId(self.next_id);
        self.next_id += 1;
        self.by_participant.insert(info.participant.clone(), id);
        let info_session = info.session.clone();
        self.by_session.entry(info_session.clone()).or_default().peers.push(id);
        self.peers.insert(
            id,
            Peer {
                info,
                rtc,
                next_timeout: now,
                addrs: Vec::new(),
                last_rx: now,
                offered_at: None,
                connected: false,
                pending: None,
                sending: BTreeMap::new(),
                wanted: BTreeSet::new(),
                to_stop: Vec::new(),
                publish: PublishState::None,
                anchored: false,
                dirty: false,
            },
        );
        self.mark_dirty(id);
        self.events.push_back(SfuEvent::SubscriptionsStale { session: info_session, change: Change::Any });
        self.drive(now);
        Ok(id)
    }

    /// Removes a peer: its socket is closed with `reason` (none when the socket is already
    /// gone), its streams are orphaned for the reconnect grace, and it stops receiving.
    pub fn remove_peer(&mut self, now: Instant, peer: PeerId, reason: Option<CloseReason>) {
        let Some(mut p) = self.peers.remove(&peer) else { return };
        self.unindex(&p.info.session.clone(), |i| i.peers.retain(|q| *q != peer));
        p.rtc.disconnect();
        for a in &p.addrs {
            if self.by_addr.get(a) == Some(&peer) {
                self.by_addr.remove(a);
            }
        }
        if self.by_participant.get(&p.info.participant) == Some(&peer) {
            self.by_participant.remove(&p.info.participant);
        }
        if let PublishState::Active { endpoint, .. } = &p.publish
            && let Some(e) = self.endpoints.get_mut(endpoint)
        {
            let at = now + self.config.reconnect_grace;
            e.source = Source::Orphaned(at);
            self.orphans_due = Some(self.orphans_due.map_or(at, |d| d.min(at)));
        }
        // Only its session's streams can name it (`refresh_subscriptions`).
        let streams: Vec<EndpointId> =
            self.by_session.get(&p.info.session).map(|i| i.streams().cloned().collect()).unwrap_or_default();
        for id in streams {
            if let Some(e) = self.endpoints.get_mut(&id) {
                e.targets.retain(|t| !matches!(t, Target::Peer { peer: q, .. } if *q == peer));
            }
        }
        if let Some(reason) = reason {
            self.events.push_back(SfuEvent::CloseDevice(peer, reason));
        }
        self.events.push_back(SfuEvent::SubscriptionsStale { session: p.info.session.clone(), change: Change::Any });
        tracing::debug!(peer = peer.0, participant = %p.info.participant, ?reason, "peer removed");
    }

    /// A device asks to publish.
    pub fn handle_publish(&mut self, now: Instant, peer: PeerId, request_id: u32, audio: bool, video: bool) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        let refuse =
            |code, message: &str| SfuEvent::ToDevice(peer, ServerMessage::error(code, message, Some(request_id)));
        for (asked, kind, name) in [(audio, MediaType::Audio, "AUDIO"), (video, MediaType::Video, "VIDEO")] {
            if asked && !p.info.permissions.contains(&kind) {
                let msg = format!("this participant's publishPermissions do not include {name}");
                self.events.push_back(refuse(ErrorCode::PermissionDenied, &msg));
                return;
            }
        }
        if video {
            self.events.push_back(refuse(ErrorCode::Unsupported, "this gateway forwards audio only"));
            return;
        }
        if !audio {
            self.events.push_back(refuse(ErrorCode::InvalidArgument, "nothing to publish: set audio"));
            return;
        }
        match &p.publish {
            PublishState::Active { mid, endpoint } => {
                let stream = stream_info(endpoint, &p.info.participant, *mid, false);
                self.events.push_back(SfuEvent::ToDevice(peer, ServerMessage::Published { request_id, stream }));
            }
            PublishState::Wanted(_) | PublishState::Offered => {
                self.events.push_back(refuse(ErrorCode::OutOfOrder, "a publish is already in progress"));
            }
            PublishState::None => {
                p.publish = PublishState::Wanted(request_id);
                self.negotiate(now, peer);
            }
        }
    }

    /// A device stops publishing. Its stream becomes unavailable to subscribers at once.
    pub fn handle_unpublish(&mut self, now: Instant, peer: PeerId, request_id: u32) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        match std::mem::replace(&mut p.publish, PublishState::None) {
            PublishState::Active { mid, endpoint } => {
                p.to_stop.push(mid);
                self.remove_endpoint(now, &endpoint);
                self.negotiate(now, peer);
            }
            PublishState::Offered => {
                // The answer will find no publish wanted and stop the m-line.
            }
            PublishState::Wanted(_) | PublishState::None => {}
        }
        self.events.push_back(SfuEvent::ToDevice(peer, ServerMessage::Unpublished { request_id }));
    }

    /// A device's SDP answer to the offer that is out.
    pub fn handle_answer(&mut self, now: Instant, peer: PeerId, sdp: &str) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        let Some(pending) = p.pending.take() else {
            let e = ServerMessage::error(ErrorCode::OutOfOrder, "no offer is waiting for an answer", None);
            self.events.push_back(SfuEvent::ToDevice(peer, e));
            return;
        };
        let answer = match SdpAnswer::from_sdp_string(sdp) {
            Ok(a) => a,
            Err(e) => {
                // The offer stays out: a corrected answer may still come.
                p.pending = Some(pending);
                let e = ServerMessage::error(ErrorCode::InvalidArgument, format!("the answer is not SDP: {e}"), None);
                self.events.push_back(SfuEvent::ToDevice(peer, e));
                return;
            }
        };
        if let Err(e) = p.rtc.sdp_api().accept_answer(pending.offer, answer) {
            tracing::debug!(peer = peer.0, error = %e, "answer refused");
            self.remove_peer(now, peer, Some(CloseReason::MediaFailed));
            return;
        }
        self.mark_dirty(peer);
        // Streams whose m-lines are now negotiated start flowing.
        for (endpoint, mid) in pending.added {
            let Some(p) = self.peers.get_mut(&peer) else { return };
            let still = p.sending.get_mut(&endpoint).filter(|s| s.mid == mid);
            let Some(slot) = still else { continue };
            let Some(e) = self.endpoints.get_mut(&endpoint) else { continue };
            slot.active = true;
            e.targets.push(Target::Peer { peer, mid, pt: None });
            let info = stream_info(&endpoint, &e.participant, mid, e.muted);
            self.events.push_back(SfuEvent::ToDevice(peer, ServerMessage::StreamAvailable(info)));
        }
        if let Some((mid, request_id)) = pending.publish {
            self.activate_publish(now, peer, mid, request_id);
        }
        self.negotiate(now, peer);
        self.drive(now);
    }

    /// A trickled candidate of the browser. Not needed (the server is ICE-lite and learns the
    /// browser's addresses from its checks) but used when given.
    pub fn handle_candidate(&mut self, now: Instant, peer: PeerId, candidate: &str) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        let text = candidate.trim();
        if text.is_empty() {
            return;
        }
        let text = text.strip_prefix("a=").unwrap_or(text);
        if let Ok(c) = Candidate::from_sdp_string(text) {
            p.rtc.add_remote_candidate(c);
            self.mark_dirty(peer);
            self.drive(now);
        }
    }

    /// DTMF tones from a device: checked here, delivered by [`Sfu::fan_out_dtmf`].
    pub fn handle_dtmf(&mut self, peer: PeerId, tones: &str) {
        let Some(p) = self.peers.get(&peer) else { return };
        if tones.is_empty()
            || tones.chars().count() > super::protocol::MAX_DTMF_TONES
            || !tones.chars().all(is_dtmf_tone)
        {
            let e = ServerMessage::error(
                ErrorCode::InvalidArgument,
                format!("tones must be 1 to {} of 0-9 * # A-D", super::protocol::MAX_DTMF_TONES),
                None,
            );
            self.events.push_back(SfuEvent::ToDevice(peer, e));
            return;
        }
        for tone in tones.chars() {
            self.events.push_back(SfuEvent::Dtmf {
                session: p.info.session.clone(),
                participant: p.info.participant.clone(),
                tone,
            });
        }
    }

    /// Delivers a tone from `participant` to every device and external subscriber in `session`
    /// that hears it.
    pub fn fan_out_dtmf(
        &mut self,
        session: &SessionId,
        participant: &ParticipantId,
        tone: char,
        mut hears: impl FnMut(&ParticipantId) -> bool,
    ) {
        for (id, p) in &self.peers {
            if &p.info.session == session && hears(&p.info.participant) {
                let m = ServerMessage::Dtmf { participant_id: participant.to_string(), tone };
                self.events.push_back(SfuEvent::ToDevice(*id, m));
            }
        }
        for (id, s) in &self.externals {
            if &s.session == session && hears(&s.participant) {
                self.events.push_back(SfuEvent::ExternalDtmf {
                    subscriber: *id,
                    participant: participant.clone(),
                    tone,
                });
            }
        }
    }

    // ----- network and time -----

    /// A datagram from `source` on the shared socket.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        let Ok(receive) = Receive::new(Protocol::Udp, source, self.config.local, data) else {
            self.counters.unparsable_datagrams += 1;
            return;
        };
        let input = Input::Receive(now, receive);
        let known =
            self.by_addr.get(&source).copied().filter(|id| self.peers.get(id).is_some_and(|p| p.rtc.accepts(&input)));
        // A new address: only the peer whose ICE credentials the STUN check names accepts it.
        let target = known.or_else(|| self.peers.iter().find(|(_, p)| p.rtc.accepts(&input)).map(|(id, _)| *id));
        let Some(id) = target else {
            self.counters.unrouted_datagrams += 1;
            return;
        };
        let Some(p) = self.peers.get_mut(&id) else { return };
        if known.is_none() && p.addrs.len() < MAX_ADDRS_PER_PEER {
            p.addrs.push(source);
            self.by_addr.insert(source, id);
        }
        p.last_rx = now;
        if let Err(e) = p.rtc.handle_input(input) {
            tracing::trace!(peer = id.0, error = %e, "input refused");
        }
        self.mark_dirty(id);
        self.drive(now);
    }

    /// Time has come (at or after [`Sfu::poll_timeout`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for (id, p) in &mut self.peers {
            let idle = p.connected && now.saturating_duration_since(p.last_rx) >= self.config.idle_timeout;
            let never = !p.connected
                && p.offered_at.is_some_and(|t| now.saturating_duration_since(t) >= self.config.setup_timeout);
            if idle || never {
                expired.push(*id);
            } else if p.next_timeout <= now && !p.dirty {
                p.dirty = true;
                self.dirty.push(*id);
            }
        }
        for id in expired {
            tracing::debug!(peer = id.0, "peer media timed out");
            self.remove_peer(now, id, Some(CloseReason::MediaFailed));
        }
        if self.orphans_due.is_some_and(|at| at <= now) {
            let orphans: Vec<EndpointId> = self
                .endpoints
                .iter()
                .filter(|(_, e)| matches!(e.source, Source::Orphaned(at) if at <= now))
                .map(|(id, _)| id.clone())
                .collect();
            for e in orphans {
                self.remove_endpoint(now, &e);
            }
            self.orphans_due = self
                .endpoints
                .values()
                .filter_map(|e| match e.source {
                    Source::Orphaned(at) => Some(at),
                    _ => None,
                })
                .min();
        }
        self.drive(now);
    }

    /// When [`Sfu::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let peers = self.peers.values().flat_map(|p| {
            let life = if p.connected {
                Some(p.last_rx + self.config.idle_timeout)
            } else {
                p.offered_at.map(|t| t + self.config.setup_timeout)
            };
            std::iter::once(p.next_timeout).chain(life)
        });
        peers.chain(self.orphans_due).min()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<SfuEvent> {
        self.events.pop_front()
    }

    // ----- subscriptions -----

    /// Recomputes what every peer and external subscriber receives: the endpoints of its
    /// session whose publisher it hears (`hears(session, listener, publisher)`, from the rooms).
    /// Streams it no longer hears become unavailable at once; new ones come with the next offer.
    pub fn refresh_subscriptions(
        &mut self,
        now: Instant,
        scope: Scope<'_>,
        mut hears: impl FnMut(&SessionId, &ParticipantId, &ParticipantId) -> bool,
    ) {
        // Streams by session, so that each listener only looks at its own session's: the work
        // is the sum over the sessions in scope of listeners × streams there, not every
        // listener × every stream of the node.
        let mut streams: HashMap<&SessionId, Vec<(&EndpointId, &ParticipantId, bool)>> = HashMap::new();
        for (eid, e) in self.scoped_endpoints(scope) {
            streams.entry(&e.session).or_default().push((eid, &e.participant, e.source == Source::Parked));
        }
        let mut wanted_by = |session: &SessionId, listener: &ParticipantId, parked_too: bool| -> BTreeSet<EndpointId> {
            streams
                .get(session)
                .into_iter()
                .flatten()
                .filter(|(_, _, parked)| parked_too || !parked)
                // Never one's own stream, whatever the rooms say.
                .filter(|(_, publisher, _)| *publisher != listener && hears(session, listener, publisher))
                .map(|(eid, _, _)| (*eid).clone())
                .collect()
        };
        let peers: Vec<(PeerId, BTreeSet<EndpointId>)> = self
            .scoped_peers(scope)
            .map(|(id, p)| (*id, wanted_by(&p.info.session, &p.info.participant, true)))
            .filter(|(id, wanted)| self.peers.get(id).is_some_and(|p| *wanted != p.wanted))
            .collect();
        let externals: Vec<(ExternalSubscriberId, BTreeSet<EndpointId>)> =
            self.scoped_externals(scope).map(|(id, s)| (*id, wanted_by(&s.session, &s.participant, false))).collect();
        for (id, wanted) in peers {
            self.set_wanted(now, id, wanted);
        }
        for (id, wanted) in externals {
            let Some(s) = self.externals.get_mut(&id) else { continue };
            let before = std::mem::replace(&mut s.wanted, wanted);
            let target = Target::External(id);
            for eid in before.iter().filter(|e| !s.wanted.contains(*e)) {
                if let Some(e) = self.endpoints.get_mut(eid) {
                    e.targets.retain(|t| *t != target);
                }
            }
            // Only what changed: a stream's targets name this subscriber exactly when its
            // `wanted` does (a removed stream leaves every `wanted`, ids are never reused, and
            // parking a stream takes it out of every external subscriber's).
            for eid in s.wanted.iter().filter(|e| !before.contains(*e)) {
                if let Some(e) = self.endpoints.get_mut(eid) {
                    e.targets.push(target);
                }
            }
        }
        self.drive(now);
    }

    /// The listeners and publishers a targeted change brings together, for the rooms check
    /// (as [`Sfu::listeners`] and [`Sfu::publishers`] do for a scope); empty for
    /// [`Change::Any`] and for what is gone.
    #[allow(clippy::type_complexity)]
    pub fn change_pairs(&self, change: &Change) -> (Vec<(SessionId, ParticipantId)>, Vec<(SessionId, ParticipantId)>) {
        match change {
            Change::Any => (Vec::new(), Vec::new()),
            Change::Stream(endpoint) => match self.endpoints.get(endpoint) {
                Some(e) => (
                    self.listeners(Scope::Sessions(std::slice::from_ref(&e.session))),
                    vec![(e.session.clone(), e.participant.clone())],
                ),
                None => (Vec::new(), Vec::new()),
            },
            Change::Subscriber(id) => match self.externals.get(id) {
                Some(s) => (vec![(s.session.clone(), s.participant.clone())], self.flowing_publishers(&s.session)),
                None => (Vec::new(), Vec::new()),
            },
        }
    }

    /// Applies a targeted change: a new stream goes to who hears its publisher, a new external
    /// subscriber gets what it hears; the rest of the session is left as it is. The work is
    /// one pass over the session, where [`Sfu::refresh_subscriptions`] compares every listener
    /// with every stream: a wave of SIP legs joining a session of a few dozen would otherwise
    /// pay the square at every join. [`Change::Any`] does nothing here.
    pub fn apply_change(
        &mut self,
        now: Instant,
        change: &Change,
        mut hears: impl FnMut(&SessionId, &ParticipantId, &ParticipantId) -> bool,
    ) {
        match change {
            Change::Any => {}
            Change::Stream(endpoint) => {
                let Some(e) = self.endpoints.get(endpoint) else { return };
                let (session, publisher) = (e.session.clone(), e.participant.clone());
                let (peers, externals) =
                    self.by_session.get(&session).map(|i| (i.peers.clone(), i.externals.clone())).unwrap_or_default();
                for id in peers {
                    let Some(p) = self.peers.get(&id) else { continue };
                    if p.info.participant == publisher
                        || p.wanted.contains(endpoint)
                        || !hears(&session, &p.info.participant, &publisher)
                    {
                        continue;
                    }
                    let mut wanted = p.wanted.clone();
                    wanted.insert(endpoint.clone());
                    self.set_wanted(now, id, wanted);
                }
                for id in externals {
                    let Some(s) = self.externals.get_mut(&id) else { continue };
                    if s.participant == publisher
                        || s.wanted.contains(endpoint)
                        || !hears(&session, &s.participant, &publisher)
                    {
                        continue;
                    }
                    s.wanted.insert(endpoint.clone());
                    if let Some(e) = self.endpoints.get_mut(endpoint) {
                        e.targets.push(Target::External(id));
                    }
                }
            }
            Change::Subscriber(id) => {
                let Some(s) = self.externals.get(id) else { return };
                // Parked streams are left out: they join the mix when they flow again.
                let heard: Vec<EndpointId> = self
                    .by_session
                    .get(&s.session)
                    .into_iter()
                    .flat_map(|i| i.endpoints.iter())
                    .filter(|eid| {
                        self.endpoints.get(*eid).is_some_and(|e| {
                            e.participant != s.participant
                                && !s.wanted.contains(*eid)
                                && hears(&s.session, &s.participant, &e.participant)
                        })
                    })
                    .cloned()
                    .collect();
                for eid in heard {
                    if let Some(e) = self.endpoints.get_mut(&eid) {
                        e.targets.push(Target::External(*id));
                    }
                    if let Some(s) = self.externals.get_mut(id) {
                        s.wanted.insert(eid);
                    }
                }
            }
        }
        self.drive(now);
    }

    fn set_wanted(&mut self, now: Instant, peer: PeerId, wanted: BTreeSet<EndpointId>) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        let gone: Vec<EndpointId> = p.sending.keys().filter(|e| !wanted.contains(*e)).cloned().collect();
        for endpoint in gone {
            if let Some(slot) = p.sending.remove(&endpoint) {
                p.to_stop.push(slot.mid);
                if slot.active {
                    let m = ServerMessage::StreamUnavailable { endpoint_id: endpoint.0.to_string() };
                    self.events.push_back(SfuEvent::ToDevice(peer, m));
                }
            }
            if let Some(e) = self.endpoints.get_mut(&endpoint) {
                e.targets.retain(|t| !matches!(t, Target::Peer { peer: q, .. } if *q == peer));
            }
        }
        p.wanted = wanted;
        self.negotiate(now, peer);
    }

    /// Makes and sends the next offer of `peer` if something changed and none is out.
    fn negotiate(&mut self, now: Instant, peer: PeerId) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        if p.pending.is_some() {
            return;
        }
        let mut api = p.rtc.sdp_api();
        // The first offer starts with an inactive audio m-line that is never used nor stopped:
        // it carries the BUNDLE tag, so stopping every stream m-line (the participant hears
        // nobody for a while) keeps the BUNDLE group, ICE and DTLS up, as browsers require. (A
        // data channel would do too, but Chromium aborts an SCTP association it did not ask for.)
        if !p.anchored && (!p.wanted.is_empty() || matches!(p.publish, PublishState::Wanted(_))) {
            api.add_media(MediaKind::Audio, Direction::Inactive, None, None, None);
            p.anchored = true;
        }
        for mid in p.to_stop.drain(..) {
            api.stop_media(mid);
        }
        let mut added = Vec::new();
        for endpoint in &p.wanted {
            if !p.sending.contains_key(endpoint) {
                let track = format!("{}-audio", endpoint.0);
                let mid = api.add_media(
                    MediaKind::Audio,
                    Direction::SendOnly,
                    Some(endpoint.0.to_string()),
                    Some(track),
                    None,
                );
                p.sending.insert(endpoint.clone(), SendSlot { mid, active: false });
                added.push((endpoint.clone(), mid));
            }
        }
        let mut publish = None;
        if let PublishState::Wanted(request_id) = p.publish {
            let mid = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
            publish = Some((mid, request_id));
            p.publish = PublishState::Offered;
        }
        if let Some((offer, pending)) = api.apply() {
            p.pending = Some(Pending { offer: pending, added, publish });
            p.offered_at.get_or_insert(now);
            let m = ServerMessage::Offer {
                sdp: offer.to_sdp_string(),
                publish_mid: publish.map(|(mid, _)| mid.to_string()),
            };
            self.events.push_back(SfuEvent::ToDevice(peer, m));
        }
        self.mark_dirty(peer);
    }

    fn activate_publish(&mut self, now: Instant, peer: PeerId, mid: Mid, request_id: u32) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        if !matches!(p.publish, PublishState::Offered) {
            // Unpublished while the offer was out.
            p.to_stop.push(mid);
            return;
        }
        let participant = p.info.participant.clone();
        let session = p.info.session.clone();
        // The same participant publishing again within the grace continues its old stream.
        let adopted = self
            .owned(&participant, &session)
            .find(|(_, e)| matches!(e.source, Source::Orphaned(_)))
            .map(|(id, _)| id.clone());
        let endpoint = if let Some(id) = adopted
            && let Some(e) = self.endpoints.get_mut(&id)
        {
            e.source = Source::Peer(peer, mid);
            e.generation.0 += 1;
            id
        } else {
            self.insert_endpoint(Endpoint::new(participant.clone(), session.clone(), Source::Peer(peer, mid)))
        };
        if let Some(p) = self.peers.get_mut(&peer) {
            p.publish = PublishState::Active { mid, endpoint: endpoint.clone() };
        }
        let stream = stream_info(&endpoint, &participant, mid, false);
        self.events.push_back(SfuEvent::ToDevice(peer, ServerMessage::Published { request_id, stream }));
        self.events.push_back(SfuEvent::SubscriptionsStale { session, change: Change::Any });
        tracing::debug!(peer = peer.0, endpoint = %endpoint.0, ?now, "published");
    }

    fn remove_endpoint(&mut self, now: Instant, endpoint: &EndpointId) {
        let Some(e) = self.endpoints.remove(endpoint) else { return };
        self.unindex(&e.session, |i| {
            i.endpoints.remove(endpoint);
            i.parked.remove(endpoint);
        });
        if let Some(owned) = self.by_owner.get_mut(&e.participant) {
            owned.retain(|id| id != endpoint);
            if owned.is_empty() {
                self.by_owner.remove(&e.participant);
            }
        }
        for t in e.targets {
            if let Target::Peer { peer, .. } = t
                && let Some(p) = self.peers.get_mut(&peer)
            {
                p.wanted.remove(endpoint);
                if let Some(slot) = p.sending.remove(endpoint) {
                    p.to_stop.push(slot.mid);
                }
                let m = ServerMessage::StreamUnavailable { endpoint_id: endpoint.0.to_string() };
                self.events.push_back(SfuEvent::ToDevice(peer, m));
                self.negotiate(now, peer);
            }
        }
        // Only the stream's own session subscribes to it (`refresh_subscriptions`): its peers
        // and external subscribers are the ones to update, not every one of the node.
        let (peers, externals) =
            self.by_session.get(&e.session).map(|i| (i.peers.clone(), i.externals.clone())).unwrap_or_default();
        // Subscribers whose m-line was still being negotiated.
        let waiting: Vec<PeerId> = peers
            .into_iter()
            .filter(|id| self.peers.get(id).is_some_and(|p| p.sending.contains_key(endpoint)))
            .collect();
        for peer in waiting {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.wanted.remove(endpoint);
                if let Some(slot) = p.sending.remove(endpoint) {
                    p.to_stop.push(slot.mid);
                }
            }
            self.negotiate(now, peer);
        }
        for id in externals {
            if let Some(s) = self.externals.get_mut(&id) {
                s.wanted.remove(endpoint);
            }
        }
        // Every subscriber of the stream was updated above: nothing to recompute.
    }

    // ----- non-browser publishers and subscribers -----

    /// A non-browser publisher of Opus frames (a SIP leg's transcoded audio) in `session`.
    /// Its frames go to every subscriber that hears `participant` once subscriptions are
    /// refreshed. The participant's parked stream, when it has one in this session, is
    /// continued instead (bridge re-attach): browsers keep their track, and its RTP time may
    /// start anywhere while subscribers' timelines go on.
    pub fn add_external_publisher(&mut self, participant: ParticipantId, session: SessionId) -> EndpointId {
        let parked =
            self.owned(&participant, &session).find(|(_, e)| e.source == Source::Parked).map(|(id, _)| id.clone());
        if let Some(id) = parked
            && let Some(e) = self.endpoints.get_mut(&id)
        {
            e.source = Source::External;
            e.generation.0 += 1;
            if let Some(i) = self.by_session.get_mut(&session) {
                i.parked.remove(&id);
                i.endpoints.insert(id.clone());
            }
            let _ = self.set_external_muted(&id, false);
            // Browsers kept it; the SIP mixers that hear it take it again.
            self.events.push_back(SfuEvent::SubscriptionsStale { session, change: Change::Stream(id.clone()) });
            return id;
        }
        let id = self.insert_endpoint(Endpoint::new(participant, session.clone(), Source::External));
        self.events.push_back(SfuEvent::SubscriptionsStale { session, change: Change::Stream(id.clone()) });
        id
    }

    /// A bridge-mode leg ended: its stream stays, muted, for the participant's next leg
    /// ([`Sfu::add_external_publisher`]), unless another leg already publishes for the
    /// participant (a new INVITE before the old leg's BYE): one stream per participant.
    pub fn park_external_publisher(&mut self, now: Instant, endpoint: &EndpointId) {
        let Some(e) = self.endpoints.get(endpoint) else { return };
        let (participant, session) = (e.participant.clone(), e.session.clone());
        let other_live =
            self.owned(&participant, &session).any(|(id, o)| id != endpoint && o.source == Source::External);
        if other_live {
            self.remove_endpoint(now, endpoint);
            return;
        }
        let Some(e) = self.endpoints.get_mut(endpoint) else { return };
        e.source = Source::Parked;
        // Out of every SIP mixer: it sends nothing until adopted ([`SessionIndex::parked`]).
        let mut mixers = Vec::new();
        e.targets.retain(|t| match t {
            Target::External(id) => {
                mixers.push(*id);
                false
            }
            Target::Peer { .. } => true,
        });
        for id in mixers {
            if let Some(s) = self.externals.get_mut(&id) {
                s.wanted.remove(endpoint);
            }
        }
        if let Some(i) = self.by_session.get_mut(&session) {
            i.endpoints.remove(endpoint);
            i.parked.insert(endpoint.clone());
        }
        let _ = self.set_external_muted(endpoint, true);
    }

    /// Removes the parked streams `which` names (found through the indexes: a leave costs the
    /// same however many streams the node holds).
    pub fn remove_parked(&mut self, now: Instant, which: Parked<'_>) {
        let of_owner = |participant: &ParticipantId, session: Option<&SessionId>| -> Vec<EndpointId> {
            self.by_owner
                .get(participant)
                .into_iter()
                .flatten()
                .filter(|id| {
                    self.endpoints
                        .get(*id)
                        .is_some_and(|e| e.source == Source::Parked && session.is_none_or(|s| e.session == *s))
                })
                .cloned()
                .collect()
        };
        let doomed = match which {
            Parked::Of(participant, session) => of_owner(participant, Some(session)),
            Parked::OfParticipant(participant) => of_owner(participant, None),
            Parked::InSession(session) => {
                self.by_session.get(session).map(|i| i.parked.iter().cloned().collect()).unwrap_or_default()
            }
        };
        for endpoint in doomed {
            self.remove_endpoint(now, &endpoint);
        }
    }

    /// An external publisher stops or starts sending (its SIP leg holds or resumes the call,
    /// a bridge stream is parked or continued): the devices that receive it are told, so
    /// that the SDK can show it muted. Nothing happens when nothing changed.
    pub fn set_external_muted(&mut self, endpoint: &EndpointId, muted: bool) -> Result<(), SfuError> {
        let e = self.endpoints.get_mut(endpoint).ok_or(SfuError::UnknownEndpoint)?;
        if e.muted == muted {
            return Ok(());
        }
        e.muted = muted;
        for t in &e.targets {
            if let Target::Peer { peer, .. } = t {
                let m = ServerMessage::StreamMuted { endpoint_id: endpoint.0.to_string(), muted };
                self.events.push_back(SfuEvent::ToDevice(*peer, m));
            }
        }
        Ok(())
    }

    /// One Opus frame (20 ms, 48 kHz RTP time) from an external publisher.
    pub fn handle_external_frame(
        &mut self,
        now: Instant,
        endpoint: &EndpointId,
        rtp_time: MediaTime,
        data: Arc<[u8]>,
    ) -> Result<(), SfuError> {
        if !self.endpoints.contains_key(endpoint) {
            return Err(SfuError::UnknownEndpoint);
        }
        self.forward(now, endpoint, now, rtp_time, data);
        self.drive(now);
        Ok(())
    }

    /// Removes an external publisher; its stream becomes unavailable.
    pub fn remove_external_publisher(&mut self, now: Instant, endpoint: &EndpointId) {
        self.remove_endpoint(now, endpoint);
    }

    /// A non-browser subscriber (a SIP leg's mixer) for `participant` in `session`: it gets
    /// [`SfuEvent::ExternalFrame`] for every stream the participant hears.
    pub fn add_external_subscriber(&mut self, participant: ParticipantId, session: SessionId) -> ExternalSubscriberId {
        let id = ExternalSubscriberId(self.next_id);
        self.next_id += 1;
        self.by_session.entry(session.clone()).or_default().externals.push(id);
        self.externals
            .insert(id, ExternalSubscriber { participant, session: session.clone(), wanted: BTreeSet::new() });
        self.events.push_back(SfuEvent::SubscriptionsStale { session, change: Change::Subscriber(id) });
        id
    }

    /// Removes an external subscriber.
    pub fn remove_external_subscriber(&mut self, id: ExternalSubscriberId) {
        // The streams that name it as a target are exactly those it wants (see
        // `refresh_subscriptions`).
        let Some(s) = self.externals.remove(&id) else { return };
        self.unindex(&s.session, |i| i.externals.retain(|x| *x != id));
        for eid in &s.wanted {
            if let Some(e) = self.endpoints.get_mut(eid) {
                e.targets.retain(|t| *t != Target::External(id));
            }
        }
    }

    /// `participant`'s endpoints in `session`.
    fn owned<'a>(
        &'a self,
        participant: &ParticipantId,
        session: &'a SessionId,
    ) -> impl Iterator<Item = (&'a EndpointId, &'a Endpoint)> + 'a {
        self.by_owner
            .get(participant)
            .into_iter()
            .flatten()
            .filter_map(|id| self.endpoints.get_key_value(id))
            .filter(move |(_, e)| e.session == *session)
    }

    /// Changes `session`'s index, dropping it once empty.
    fn unindex(&mut self, session: &SessionId, change: impl FnOnce(&mut SessionIndex)) {
        if let Some(index) = self.by_session.get_mut(session) {
            change(index);
            if index.is_empty() {
                self.by_session.remove(session);
            }
        }
    }

    /// Adds a new endpoint under a fresh id, indexed by its owner and session.
    fn insert_endpoint(&mut self, endpoint: Endpoint) -> EndpointId {
        let id = EndpointId::generate();
        self.by_owner.entry(endpoint.participant.clone()).or_default().push(id.clone());
        self.by_session.entry(endpoint.session.clone()).or_default().endpoints.insert(id.clone());
        self.endpoints.insert(id.clone(), endpoint);
        id
    }

    // ----- driving str0m -----

    /// Polls every dirty peer until it only has a timeout left, handling its events;
    /// forwarding may dirty other peers, which are polled in turn.
    fn drive(&mut self, now: Instant) {
        while let Some(id) = self.dirty.pop() {
            self.poll_peer(now, id);
        }
    }

    fn mark_dirty(&mut self, id: PeerId) {
        if let Some(p) = self.peers.get_mut(&id)
            && !p.dirty
        {
            p.dirty = true;
            self.dirty.push(id);
        }
    }

    fn poll_peer(&mut self, now: Instant, id: PeerId) {
        let Some(p) = self.peers.get_mut(&id) else { return };
        p.dirty = false;
        // Always moving time forward is allowed and cheap, and str0m may have changed its mind
        // about the next timeout since it last told us (an answer accepted, a frame written).
        if let Err(e) = p.rtc.handle_input(Input::Timeout(now)) {
            tracing::trace!(peer = id.0, error = %e, "timeout refused");
        }
        let mut events = std::mem::take(&mut self.scratch);
        let mut failed = false;
        loop {
            if !p.rtc.is_alive() {
                failed = true;
                break;
            }
            match p.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    p.next_timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => self.transmits.push_back(t),
                Ok(Output::Event(e)) => events.push(e),
                Err(e) => {
                    tracing::debug!(peer = id.0, error = %e, "peer failed");
                    failed = true;
                    break;
                }
            }
        }
        for event in events.drain(..) {
            self.handle_event(now, id, event);
        }
        self.scratch = events;
        if failed {
            self.remove_peer(now, id, Some(CloseReason::MediaFailed));
        }
    }

    fn handle_event(&mut self, now: Instant, id: PeerId, event: Event) {
        match event {
            Event::Connected => {
                if let Some(p) = self.peers.get_mut(&id) {
                    p.connected = true;
                    p.last_rx = now;
                }
                tracing::debug!(peer = id.0, "peer connected");
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.remove_peer(now, id, Some(CloseReason::MediaFailed));
            }
            Event::MediaData(d) => {
                let Some(p) = self.peers.get(&id) else { return };
                let PublishState::Active { mid, endpoint } = &p.publish else { return };
                if *mid != d.mid {
                    return;
                }
                let endpoint = endpoint.clone();
                self.forward(now, &endpoint, d.network_time, d.time, d.data);
            }
            Event::Closed => self.remove_peer(now, id, Some(CloseReason::MediaFailed)),
            _ => {}
        }
    }

    /// Writes one frame of `endpoint` to each of its subscribers.
    fn forward(&mut self, now: Instant, endpoint: &EndpointId, wallclock: Instant, time: MediaTime, data: Arc<[u8]>) {
        let Self { endpoints, peers, events, dirty, counters, .. } = self;
        let Some(e) = endpoints.get_mut(endpoint) else { return };
        let out = e.timeline.map(now, e.generation, time);
        for t in &mut e.targets {
            match t {
                Target::Peer { peer, mid, pt } => {
                    let Some(p) = peers.get_mut(peer) else { continue };
                    if !p.rtc.is_connected() {
                        continue;
                    }
                    let Some(writer) = p.rtc.writer(*mid) else {
                        counters.frames_dropped += 1;
                        continue;
                    };
                    let pt = match *pt {
                        Some(pt) => pt,
                        None => {
                            let Some(found) =
                                writer.payload_params().find(|pp| pp.spec().codec == Codec::Opus).map(|pp| pp.pt())
                            else {
                                counters.frames_dropped += 1;
                                continue;
                            };
                            *pt = Some(found);
                            found
                        }
                    };
                    match writer.write(pt, wallclock, out, data.clone()) {
                        Ok(()) => counters.frames_forwarded += 1,
                        Err(_) => counters.frames_dropped += 1,
                    }
                    if !p.dirty {
                        p.dirty = true;
                        dirty.push(*peer);
                    }
                }
                Target::External(subscriber) => {
                    counters.frames_forwarded += 1;
                    events.push_back(SfuEvent::ExternalFrame {
                        subscriber: *subscriber,
                        endpoint: endpoint.clone(),
                        rtp_time: out,
                        data: data.clone(),
                    });
                }
            }
        }
    }
}

fn stream_info(endpoint: &EndpointId, participant: &ParticipantId, mid: Mid, muted: bool) -> StreamInfo {
    StreamInfo {
        endpoint_id: endpoint.0.to_string(),
        participant_id: participant.to_string(),
        media_types: vec![MediaType::Audio],
        mid: mid.to_string(),
        muted,
    }
}

#[cfg(test)]
#[path = "sfu_tests.rs"]
mod tests;
