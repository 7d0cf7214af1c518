//! The task that drives the forwarder: it owns the shared UDP socket, the [`Sfu`] and the
//! channels to the device sockets, reads the clock, and follows the rooms' change channel so
//! that subscription changes made through the API take effect at once.
//!
//! One task, no lock around media: device sockets send [`Command`]s on one bounded channel; the
//! task answers on one bounded channel per device, and a device that lets its channel fill up is
//! dropped rather than awaited.
//!
//! The media bridge (SIP legs) reaches the forwarder through the same channel with a
//! [`Forwarder`] handle: a leg publishes its transcoded Opus as an external publisher, receives
//! the Opus frames of the streams its participant hears as an external subscriber (shared, not
//! decoded here: the legs' media workers decode them, spreading that work over the cores; on a
//! bounded channel of its own, [`ExternalMedia`]; a leg that does not keep up loses frames,
//! counted), and sends and receives DTMF.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::protocol::{CloseReason, ServerMessage};

use super::sfu::{Change, ExternalSubscriberId, Parked, PeerId, PeerInfo, Scope, Sfu, SfuConfig, SfuError, SfuEvent};
use crate::ids::{ParticipantId, SessionId};
use crate::media::router::{ExternalMedia, LegRequest};
use crate::rooms::{RoomEvent, Rooms, RoomsHandle};

/// Commands waiting for the driver, from all device sockets together.
pub(crate) const COMMAND_CHANNEL_CAPACITY: usize = 1024;

/// Messages waiting for one device. A device that does not read 256 messages is not reading.
pub(crate) const DEVICE_CHANNEL_CAPACITY: usize = 256;

/// Largest datagram read; bigger ones are truncated and then fail to parse.
const RECV_BUFFER: usize = 2048;

/// From a device socket to the driver.
#[derive(Debug)]
pub(crate) enum Command {
    /// A device authenticated: make its peer.
    Attach {
        info: PeerInfo,
        to_device: mpsc::Sender<ToDevice>,
        reply: oneshot::Sender<Result<PeerId, SfuError>>,
    },
    /// The socket is gone.
    Detach {
        peer: PeerId,
    },
    Publish {
        peer: PeerId,
        request_id: u32,
        audio: bool,
        video: bool,
    },
    Unpublish {
        peer: PeerId,
        request_id: u32,
    },
    Answer {
        peer: PeerId,
        sdp: String,
    },
    Candidate {
        peer: PeerId,
        candidate: String,
    },
    Dtmf {
        peer: PeerId,
        tones: String,
    },
}

/// From the driver to one device socket.
#[derive(Debug)]
pub(crate) enum ToDevice {
    Message(ServerMessage),
    Close(CloseReason),
}

/// The forwarder's addresses from `[media]`: where datagrams arrive and what is announced.
pub(crate) fn sfu_config(listen: SocketAddr, public_ip: Option<std::net::IpAddr>) -> SfuConfig {
    let port = listen.port();
    let mut candidates = Vec::new();
    if !listen.ip().is_unspecified() {
        candidates.push(listen);
    }
    if let Some(ip) = public_ip {
        let public = SocketAddr::new(ip, port);
        if !candidates.contains(&public) {
            candidates.push(public);
        }
    }
    if candidates.is_empty() {
        // Listening on every interface with nothing to announce: loopback is the one address
        // sure to be there; `media.public_ip` is the fix (`Config::warnings` says so at start).
        candidates.push(SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), port));
    }
    let local = if listen.ip().is_unspecified() { candidates[0] } else { listen };
    SfuConfig::new(local, candidates)
}

/// The driver's state between wake-ups.
pub(crate) struct Driver {
    sfu: Sfu,
    rooms: RoomsHandle,
    devices: HashMap<PeerId, mpsc::Sender<ToDevice>>,
    /// External subscribers' channels (SIP legs).
    externals: HashMap<ExternalSubscriberId, mpsc::Sender<ExternalMedia>>,
    /// Frames and tones an external subscriber's full channel refused.
    external_dropped: u64,
    /// Sessions whose subscriptions must be recomputed at the next flush.
    stale: Stale,
    /// Targeted changes ([`Change::Stream`], [`Change::Subscriber`]) since the last flush.
    changes: Vec<Change>,
}

/// What changed since subscriptions were last computed.
#[derive(Debug, Default)]
enum Stale {
    /// Nothing.
    #[default]
    Clean,
    /// These sessions (a few: past [`MAX_STALE_SESSIONS`] it becomes `All`).
    Sessions(Vec<SessionId>),
    /// Anything (events were lost, or a participant left every session).
    All,
}

/// Most sessions refreshed one by one (a refresh costs the sum over its sessions, so a list is
/// never dearer than a pass over everything; the bound only keeps the de-duplication cheap).
const MAX_STALE_SESSIONS: usize = 256;

/// Most commands, and most rooms events, taken after an event before the changes are flushed.
const BATCH: usize = 64;

impl Stale {
    fn session(&mut self, session: SessionId) {
        match self {
            Self::Clean => *self = Self::Sessions(vec![session]),
            Self::Sessions(v) if v.contains(&session) => {}
            Self::Sessions(v) if v.len() < MAX_STALE_SESSIONS => v.push(session),
            Self::Sessions(_) => *self = Self::All,
            Self::All => {}
        }
    }
}

impl Driver {
    pub(crate) fn new(config: SfuConfig, rooms: RoomsHandle) -> Self {
        Self {
            sfu: Sfu::new(config),
            rooms,
            devices: HashMap::new(),
            externals: HashMap::new(),
            external_dropped: 0,
            stale: Stale::Clean,
            changes: Vec::new(),
        }
    }

    /// Runs until `shutdown` resolves, then closes every device with 1001.
    pub(crate) async fn run(
        mut self,
        socket: UdpSocket,
        mut commands: mpsc::Receiver<Command>,
        mut legs: mpsc::Receiver<LegRequest>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut rooms_events = self.rooms.subscribe();
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            let deadline = self.sfu.poll_timeout().map(tokio::time::Instant::from_std);
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => break,
                r = socket.recv_from(&mut buf) => match r {
                    Ok((n, source)) => self.sfu.handle_datagram(now(), source, &buf[..n]),
                    // ICMP errors from a vanished peer surface here on Linux; nothing to do.
                    Err(e) => tracing::trace!(error = %e, "UDP receive failed"),
                },
                c = commands.recv() => match c {
                    Some(c) => self.handle_command(c),
                    None => break,
                },
                r = legs.recv() => match r {
                    Some(r) => self.handle_leg(r),
                    None => break,
                },
                e = rooms_events.recv() => match e {
                    Ok(e) => self.handle_room_event(e),
                    Err(broadcast::error::RecvError::Lagged(_)) => self.stale = Stale::All,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                () = sleep => self.sfu.handle_timeout(now()),
            }
            // What else is already waiting is taken before the flush: under load (a wave of SIP
            // calls joining and leaving) one subscription refresh then serves a batch of
            // changes, so that the work per change falls as the load rises instead of each
            // change paying a refresh of its session.
            for _ in 0..BATCH {
                match commands.try_recv() {
                    Ok(c) => self.handle_command(c),
                    Err(_) => break,
                }
            }
            for _ in 0..BATCH {
                match legs.try_recv() {
                    Ok(r) => self.handle_leg(r),
                    Err(_) => break,
                }
            }
            for _ in 0..BATCH {
                match rooms_events.try_recv() {
                    Ok(e) => self.handle_room_event(e),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => self.stale = Stale::All,
                    Err(_) => break,
                }
            }
            self.flush(&socket);
        }
        for (_, tx) in self.devices.drain() {
            let _ = tx.try_send(ToDevice::Close(CloseReason::GoingAway));
        }
    }

    fn handle_command(&mut self, c: Command) {
        let now = now();
        match c {
            Command::Attach { info, to_device, reply } => {
                let r = self.sfu.add_peer(now, info);
                if let Ok(peer) = r {
                    self.devices.insert(peer, to_device);
                }
                let _ = reply.send(r);
            }
            Command::Detach { peer } => {
                self.devices.remove(&peer);
                self.sfu.remove_peer(now, peer, None);
            }
            Command::Publish { peer, request_id, audio, video } => {
                self.sfu.handle_publish(now, peer, request_id, audio, video);
            }
            Command::Unpublish { peer, request_id } => self.sfu.handle_unpublish(now, peer, request_id),
            Command::Answer { peer, sdp } => self.sfu.handle_answer(now, peer, &sdp),
            Command::Candidate { peer, candidate } => self.sfu.handle_candidate(now, peer, &candidate),
            Command::Dtmf { peer, tones } => self.sfu.handle_dtmf(peer, &tones),
        }
    }

    /// Takes a SIP leg's request.
    fn handle_leg(&mut self, r: LegRequest) {
        let now = now();
        match r {
            LegRequest::Publish { participant, session, reply } => {
                let endpoint = self.sfu.add_external_publisher(participant, session);
                if let Err(endpoint) = reply.send(endpoint) {
                    // The leg went away while asking.
                    self.sfu.remove_external_publisher(now, &endpoint);
                }
            }
            LegRequest::Frame { endpoint, rtp_time, data } => {
                // An unknown endpoint is a leg whose unpublish raced its last frame.
                let _ = self.sfu.handle_external_frame(now, &endpoint, rtp_time, data);
            }
            LegRequest::Unpublish { endpoint } => self.sfu.remove_external_publisher(now, &endpoint),
            LegRequest::Park { endpoint } => self.sfu.park_external_publisher(now, &endpoint),
            LegRequest::Muted { endpoint, muted } => {
                let _ = self.sfu.set_external_muted(&endpoint, muted);
            }
            LegRequest::Subscribe { participant, session, frames, reply } => {
                let id = self.sfu.add_external_subscriber(participant, session);
                if reply.send(id).is_ok() {
                    self.externals.insert(id, frames);
                } else {
                    self.sfu.remove_external_subscriber(id);
                }
            }
            LegRequest::Unsubscribe { subscriber } => {
                self.externals.remove(&subscriber);
                self.sfu.remove_external_subscriber(subscriber);
            }
            LegRequest::Dtmf { session, participant, tone } => self.dtmf(&session, &participant, tone),
        }
    }

    /// Delivers a tone to the devices and external subscribers that hear its sender.
    fn dtmf(&mut self, session: &SessionId, participant: &ParticipantId, tone: char) {
        let audience: HashSet<ParticipantId> =
            self.rooms.read(|r| r.audience(session, participant)).into_iter().collect();
        self.sfu.fan_out_dtmf(session, participant, tone, |l| audience.contains(l));
    }

    /// Hands `media` to an external subscriber; a full channel loses it (counted).
    fn deliver_external(&mut self, subscriber: ExternalSubscriberId, media: ExternalMedia) {
        let Some(tx) = self.externals.get(&subscriber) else { return };
        match tx.try_send(media) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.external_dropped += 1;
                tracing::trace!(
                    subscriber = subscriber.0,
                    dropped = self.external_dropped,
                    "external subscriber too slow"
                );
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // The leg ended without unsubscribing (aborted): forget it.
                self.externals.remove(&subscriber);
                self.sfu.remove_external_subscriber(subscriber);
            }
        }
    }

    fn handle_room_event(&mut self, e: RoomEvent) {
        let now = now();
        match e {
            RoomEvent::ParticipantLeft { session, participant, .. } => {
                if let Some(peer) = self.sfu.peer_of(&participant)
                    && self.sfu.peer_info(peer).is_some_and(|i| i.session == session)
                {
                    self.sfu.remove_peer(now, peer, Some(CloseReason::Removed));
                }
                self.sfu.remove_parked(now, Parked::Of(&participant, &session));
                self.stale.session(session);
            }
            RoomEvent::ParticipantDeleted { participant, .. } => {
                if let Some(peer) = self.sfu.peer_of(&participant) {
                    self.sfu.remove_peer(now, peer, Some(CloseReason::Removed));
                }
                self.sfu.remove_parked(now, Parked::OfParticipant(&participant));
                self.stale = Stale::All;
            }
            RoomEvent::SessionEnded { session, .. } => {
                for peer in self.sfu.peers_in(&session) {
                    self.sfu.remove_peer(now, peer, Some(CloseReason::Removed));
                }
                self.sfu.remove_parked(now, Parked::InSession(&session));
                self.stale.session(session);
            }
            RoomEvent::SubscriptionsChanged { session, .. } | RoomEvent::ParticipantJoined { session, .. } => {
                self.stale.session(session);
            }
            RoomEvent::SessionCreated { .. } | RoomEvent::ParticipantCreated { .. } => {}
        }
    }

    /// Sends what the forwarder produced, delivers its events, and refreshes subscriptions
    /// once per wake-up when something made them stale.
    fn flush(&mut self, socket: &UdpSocket) {
        loop {
            while let Some(t) = self.sfu.poll_transmit() {
                // Never awaited: a full socket buffer drops the datagram, as the network would.
                if let Err(e) = socket.try_send_to(&t.contents, t.destination) {
                    tracing::trace!(error = %e, destination = %t.destination, "UDP send failed");
                }
            }
            let mut any = false;
            while let Some(e) = self.sfu.poll_event() {
                any = true;
                self.deliver(e);
            }
            if !self.changes.is_empty() {
                any = true;
                self.apply_changes();
            }
            match std::mem::take(&mut self.stale) {
                Stale::Clean => {}
                Stale::Sessions(sessions) => {
                    any = true;
                    self.refresh(Scope::Sessions(&sessions));
                }
                Stale::All => {
                    any = true;
                    self.refresh(Scope::All);
                }
            }
            if !any {
                return;
            }
        }
    }

    fn deliver(&mut self, e: SfuEvent) {
        match e {
            SfuEvent::ToDevice(peer, m) => {
                let Some(tx) = self.devices.get(&peer) else { return };
                // Keep the last slot for a close message.
                if tx.capacity() <= 1 {
                    let _ = tx.try_send(ToDevice::Close(CloseReason::TooSlow));
                    self.devices.remove(&peer);
                    self.sfu.remove_peer(now(), peer, None);
                    return;
                }
                let _ = tx.try_send(ToDevice::Message(m));
            }
            SfuEvent::CloseDevice(peer, reason) => {
                if let Some(tx) = self.devices.remove(&peer) {
                    let _ = tx.try_send(ToDevice::Close(reason));
                }
            }
            SfuEvent::SubscriptionsStale { session, change: Change::Any } => self.stale.session(session),
            SfuEvent::SubscriptionsStale { change, .. } => self.changes.push(change),
            SfuEvent::Dtmf { session, participant, tone } => self.dtmf(&session, &participant, tone),
            SfuEvent::ExternalFrame { subscriber, endpoint, rtp_time, data } => {
                self.deliver_external(subscriber, ExternalMedia::Frame { endpoint, rtp_time, data });
            }
            SfuEvent::ExternalDtmf { subscriber, participant, tone } => {
                self.deliver_external(subscriber, ExternalMedia::Dtmf { participant, tone });
            }
        }
    }

    /// Closes peers whose participant left their session, then recomputes who receives what.
    /// Applies the targeted changes taken since the last flush, with one look at the rooms.
    fn apply_changes(&mut self) {
        let changes = std::mem::take(&mut self.changes);
        let pairs: Vec<_> = changes.iter().map(|c| self.sfu.change_pairs(c)).collect();
        let hears = self.rooms.read(|r| {
            let mut hears = HashSet::new();
            for (listeners, publishers) in &pairs {
                hears.extend(hearing(r, listeners, publishers));
            }
            hears
        });
        let now = now();
        for change in &changes {
            self.sfu.apply_change(now, change, |s, l, p| hears.contains(&(s, l, p)));
        }
    }

    fn refresh(&mut self, scope: Scope<'_>) {
        let now = now();
        let listeners = self.sfu.listeners(scope);
        let publishers = self.sfu.publishers(scope);
        let (gone, hears) = self.rooms.read(|r| {
            let gone: Vec<PeerId> = self
                .sfu
                .peer_ids(scope)
                .into_iter()
                .filter(|peer| {
                    self.sfu.peer_info(*peer).is_some_and(|i| !r.sessions_of(&i.participant).contains(&i.session))
                })
                .collect();
            (gone, hearing(r, &listeners, &publishers))
        });
        for peer in gone {
            self.sfu.remove_peer(now, peer, Some(CloseReason::Removed));
        }
        self.sfu.refresh_subscriptions(now, scope, |s, l, p| hears.contains(&(s, l, p)));
    }
}

/// The (session, listener, publisher) triples among `listeners` and `publishers` where the
/// rooms say the listener hears the publisher; a listener is checked against its own session's
/// publishers only. Borrowed, not cloned: a refresh of a busy session asks this for every pair.
fn hearing<'a>(
    rooms: &Rooms,
    listeners: &'a [(SessionId, ParticipantId)],
    publishers: &'a [(SessionId, ParticipantId)],
) -> HashSet<(&'a SessionId, &'a ParticipantId, &'a ParticipantId)> {
    let mut by_session: HashMap<&SessionId, Vec<&ParticipantId>> = HashMap::new();
    for (ps, p) in publishers {
        by_session.entry(ps).or_default().push(p);
    }
    let mut hears = HashSet::new();
    for (ls, l) in listeners {
        for p in by_session.get(ls).into_iter().flatten() {
            if rooms.hears(ls, l, p) {
                hears.insert((ls, l, *p));
            }
        }
    }
    hears
}

/// The clock, through tokio so that paused-time tests reach the core.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_come_from_the_listen_address_and_the_public_ip() {
        let c = sfu_config("127.0.0.1:19000".parse().unwrap(), None);
        assert_eq!((c.local, c.candidates.clone()), ("127.0.0.1:19000".parse().unwrap(), vec![c.local]));
        let c = sfu_config("10.0.0.2:19000".parse().unwrap(), Some("203.0.113.9".parse().unwrap()));
        assert_eq!(c.candidates, vec!["10.0.0.2:19000".parse().unwrap(), "203.0.113.9:19000".parse().unwrap()]);
        assert_eq!(c.local, "10.0.0.2:19000".parse().unwrap());
        // Listening everywhere: the public address is announced and is where datagrams arrive.
        let c = sfu_config("0.0.0.0:19000".parse().unwrap(), Some("203.0.113.9".parse().unwrap()));
        assert_eq!(c.candidates, vec!["203.0.113.9:19000".parse().unwrap()]);
        assert_eq!(c.local, "203.0.113.9:19000".parse().unwrap());
    }
}
