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
        publisher_pairs(self.scoped_endpoints(scope).map(|(_, e)| e))
    }

    /// Who publishes the streams of `session` that flow (parked ones left out): what a new SIP
    /// mixer there may hear.
    fn flowing_publishers(&self, session: &SessionId) -> Vec<(SessionId, ParticipantId)> {
        let streams = self.by_session.get(session).into_iter().flat_map(|i| i.endpoints.iter());
        publisher_pairs(streams.filter_map(|id| self.endpoints.get(id)))
    }

    /// True when the peer's ICE and DTLS are up.
    pub fn is_connected(&self, peer: PeerId) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.rtc.is_connected())
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

/// The distinct (session, publisher) pairs of `streams`, sorted.
fn publisher_pairs<'a>(streams: impl Iterator<Item = &'a Endpoint>) -> Vec<(SessionId, ParticipantId)> {
    let mut v: Vec<_> = streams.map(|e| (e.session.clone(), e.participant.clone())).collect();
    v.sort();
    v.dedup();
    v
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

mod external;
mod peers;
mod subscriptions;

#[cfg(test)]
mod tests;
