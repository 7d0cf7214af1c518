//! The SIP transports (RFC 3261 §18): UDP, TCP and TLS sockets, as a thin tokio shell.
//!
//! Every message is parsed once, here, by [`super::message::parse`], and handed to the endpoint
//! as [`Incoming::Message`]; what does not parse is answered 400/505 (513 for a stream message
//! over the size limit) without reaching the endpoint. Streams are cut by
//! [`super::framing::StreamFramer`].
//!
//! Each stream connection is one task that owns its socket: when the task ends, the file
//! descriptor goes with it. Connections are capped in total and per source address; a
//! connection must deliver its first message within [`FIRST_MESSAGE`], and a message once begun
//! must be complete within [`INCOMPLETE_MESSAGE`] (slow-loris), and an idle connection closes
//! after [`IDLE`]. At the file-descriptor limit the accept loop backs off and says so once.
//!
//! The endpoint keeps the table of live connections (it learns of them by
//! [`Incoming::Opened`] and [`Incoming::Closed`]) and sends through [`Outbound`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::framing::{Frame, PONG, StreamFramer};
use super::message::{self, Message};
use super::refusal::{Refusal, STATELESS_TAG};
use super::transaction::{ConnId, Peer, Transport};

pub use crate::metrics::{MalformedLabels, TransportCounters};

/// Most stream connections at once.
pub const MAX_CONNECTIONS: usize = 4096;
/// Most stream connections from one IP address.
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 256;
/// A new connection's first message must be complete this soon.
pub const FIRST_MESSAGE: Duration = Duration::from_secs(10);
/// A message, once begun, must be complete this soon.
pub const INCOMPLETE_MESSAGE: Duration = Duration::from_secs(10);
/// A connection with no traffic for this long closes (dialogs refresh well within it).
pub const IDLE: Duration = Duration::from_secs(3600);
/// How long a write to a stream may take before the connection is dropped.
const WRITE_LIMIT: Duration = Duration::from_secs(10);
/// Messages queued towards one connection; a peer that does not read loses its connection.
const WRITE_QUEUE: usize = 256;
/// Largest message on any transport.
const MAX_MESSAGE: usize = message::MAX_MESSAGE_LEN;
/// The SIP UDP socket's receive and send buffers.
const UDP_BUFFER: usize = 4 << 20;
/// A new INVITE that would wait longer than this for the endpoint, while the wait has stayed
/// above it for [`SHED_AFTER`], is refused at once with 503: answering it late would only bring
/// its retransmissions (the caller's timer A) on top of the load, and calls already admitted
/// keep their latency.
pub const SHED_WAIT: Duration = Duration::from_millis(20);
/// How long the wait must stay above [`SHED_WAIT`] before new INVITEs are shed: a burst (a
/// peer that sends what it held back while it was descheduled) drains within it and costs no
/// call; overload keeps a standing queue and is shed (the idea of CoDel, RFC 8289).
pub const SHED_AFTER: Duration = Duration::from_millis(50);
/// An estimated wait this long sheds at once, however new: it bounds the latency of a sudden
/// flood. Below [`LATE`], so that what the door lets in is rarely refused by the endpoint
/// after all (a 503 once read is a 503 within a millisecond, a late one is not).
pub const SHED_WAIT_MAX: Duration = Duration::from_millis(20);
/// A new INVITE the endpoint takes after waiting this long is refused there with 503
/// ([`super::transaction::Transactions::handle_late_message`]): the door's estimate can be
/// wrong (a core shared with media, a burst), this bounds the wait of every call admitted.
pub const LATE: Duration = Duration::from_millis(30);
/// The endpoint's drain rate is averaged over windows of this much of its time, or of
/// [`METER_WINDOW_MESSAGES`] messages if sooner: long enough that the scheduler's slices (the
/// endpoint's thread shares a core with media and the receiver) average out instead of being
/// taken for the cost of one message, short enough to follow a change of load.
const METER_WINDOW: Duration = Duration::from_millis(50);
/// See [`METER_WINDOW`].
const METER_WINDOW_MESSAGES: u64 = 256;

/// The endpoint's measured cost per message, shared with the receivers so that they can tell,
/// from the length of the queue, how long a new request would wait.
#[derive(Debug)]
pub struct LoadMeter {
    /// Moving average of the time one message takes to leave the queue, nanoseconds.
    service_ns: AtomicU64,
    /// The window being measured: its time (nanoseconds) and messages.
    window_ns: AtomicU64,
    window_messages: AtomicU64,
    /// Messages the endpoint handled, ever.
    handled: AtomicU64,
    /// When the last message was done (nanoseconds after `base`), and whether others were
    /// waiting behind it then (the low bit): only the endpoint writes it.
    last_done: AtomicU64,
    /// When a message last went into an empty queue (nanoseconds after `base`).
    nonempty_since: AtomicU64,
    /// Since when (nanoseconds after `base`, plus one; 0: not) every message taken had waited
    /// over [`SHED_WAIT`].
    over_since: AtomicU64,
    /// That has lasted [`SHED_AFTER`]: new INVITEs are shed.
    standing: AtomicBool,
    base: Instant,
}

impl Default for LoadMeter {
    fn default() -> Self {
        Self {
            service_ns: AtomicU64::new(0),
            window_ns: AtomicU64::new(0),
            window_messages: AtomicU64::new(0),
            handled: AtomicU64::new(0),
            last_done: AtomicU64::new(0),
            nonempty_since: AtomicU64::new(0),
            over_since: AtomicU64::new(0),
            standing: AtomicBool::new(false),
            base: Instant::now(),
        }
    }
}

impl LoadMeter {
    fn since_base(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX / 2)
    }

    /// The endpoint took a message at `started` and was done with it at `done`; `backlog`: others
    /// were waiting when it took it. A message that waited behind another left the queue
    /// `done - previous done` after it: the drain rate, which counts what the endpoint's thread
    /// did between messages (timers, other tasks on a shared core) as well as the message
    /// itself. A message that found the queue empty tells only its own cost.
    pub fn served(&self, started: Instant, done: Instant, backlog: bool) {
        let (started, done) = (self.since_base(started), self.since_base(done));
        let last = self.last_done.swap((done << 1) | u64::from(backlog), Ordering::Relaxed);
        let waited = last & 1 == 1;
        let spent = if waited { done.saturating_sub(last >> 1) } else { done.saturating_sub(started) };
        self.record(Duration::from_nanos(spent));
    }

    /// One message took `spent` to leave the queue. Only the endpoint calls this (the atomics
    /// are for the receivers' reads).
    pub fn record(&self, spent: Duration) {
        self.handled.fetch_add(1, Ordering::Relaxed);
        let sum =
            self.window_ns.load(Ordering::Relaxed).saturating_add(u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX));
        let messages = self.window_messages.load(Ordering::Relaxed) + 1;
        if sum < METER_WINDOW.as_nanos() as u64 && messages < METER_WINDOW_MESSAGES {
            self.window_ns.store(sum, Ordering::Relaxed);
            self.window_messages.store(messages, Ordering::Relaxed);
            return;
        }
        self.window_ns.store(0, Ordering::Relaxed);
        self.window_messages.store(0, Ordering::Relaxed);
        // The window's mean, unclipped: a slice the thread spent elsewhere is part of how fast
        // the queue drains. Averaged with the windows before (halving their weight each time).
        let mean = sum / messages;
        let old = self.service_ns.load(Ordering::Relaxed);
        let new = if old == 0 { mean } else { old / 2 + mean / 2 };
        self.service_ns.store(new, Ordering::Relaxed);
    }

    /// The endpoint handled a message of [`Lane::Dialogs`] (not timed: see [`LoadMeter::served`]).
    pub fn handled_in_dialogs(&self) {
        self.handled.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages the endpoint handled so far: how busy SIP has been between two readings.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// How long a message behind `queued` others would wait.
    pub fn wait(&self, queued: usize) -> Duration {
        Duration::from_nanos(self.service_ns.load(Ordering::Relaxed).saturating_mul(queued as u64))
    }

    /// How long the endpoint has not taken a message while `queued` wait: a lower bound of the
    /// head of the queue's wait that grows during a stall, when no message is done and the
    /// average cannot move (a worker busy elsewhere for a while would otherwise let the queue
    /// fill with INVITEs that are all answered late).
    fn stalled(&self, queued: usize, now: Instant) -> Duration {
        if queued == 0 {
            return Duration::ZERO;
        }
        let last = (self.last_done.load(Ordering::Relaxed) >> 1).max(self.nonempty_since.load(Ordering::Relaxed));
        Duration::from_nanos(self.since_base(now).saturating_sub(last))
    }

    /// A message went into the queue at `now` behind `queued` others.
    fn arrived(&self, queued: usize, now: Instant) {
        if queued == 0 {
            self.nonempty_since.store(self.since_base(now), Ordering::Relaxed);
        }
    }

    /// The endpoint took, at `now`, a message that had waited `sojourn` since the transport
    /// read it. Every message taken for [`SHED_AFTER`] having waited over [`SHED_WAIT`] is a
    /// standing queue (the measure of CoDel, RFC 8289): a burst drains within it and costs no
    /// call, overload does not. The first message that waited less ends it. Measured, not
    /// estimated: the endpoint's thread shares its core with the forwarder and the legs, whose
    /// share no per-message cost can tell.
    pub fn taken(&self, sojourn: Duration, now: Instant) {
        if sojourn <= SHED_WAIT {
            self.over_since.store(0, Ordering::Relaxed);
            self.standing.store(false, Ordering::Relaxed);
            return;
        }
        let at = self.since_base(now) + 1;
        let since = match self.over_since.load(Ordering::Relaxed) {
            0 => {
                self.over_since.store(at, Ordering::Relaxed);
                at
            }
            since => since,
        };
        if at.saturating_sub(since) >= SHED_AFTER.as_nanos() as u64 {
            self.standing.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a new INVITE arriving at `now` behind `queued` messages is shed: the queue is
    /// standing ([`LoadMeter::taken`]), or the wait it would have, from the drain rate or from
    /// how long nothing was taken, is over [`SHED_WAIT_MAX`] (a sudden flood, before any of it
    /// is taken). Nothing ahead of it: never.
    pub fn overloaded(&self, queued: usize, now: Instant) -> bool {
        queued > 0
            && (self.standing.load(Ordering::Relaxed)
                || self.wait(queued).max(self.stalled(queued, now)) > SHED_WAIT_MAX)
    }
}

/// Which of the endpoint's two queues a message waits in. What carries calls already admitted
/// (responses, ACKs, in-dialog requests, connection changes) never waits behind what would start
/// new ones, so that overload delays and sheds new calls only, and the wait the door measures
/// is the one a new INVITE will have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// What belongs to a dialog or a transaction we have: taken first.
    Dialogs,
    /// Requests outside a dialog (no To tag): a new INVITE, its CANCEL (in the same lane, so
    /// that it follows its INVITE), OPTIONS, REGISTER.
    New,
}

impl Lane {
    /// The lane of `message`.
    pub fn of(message: &Message) -> Self {
        match message {
            Message::Request(r) if r.method != message::Method::Ack && r.to_tag().is_none() => Self::New,
            _ => Self::Dialogs,
        }
    }
}

/// What the transports do with a parsed message before the endpoint's queues.
enum Door {
    /// The ACK of one of our stateless answers: nobody needs it (see
    /// [`super::refusal::STATELESS_TAG`]).
    Drop,
    /// A new INVITE (no To tag) the endpoint is too loaded to take
    /// ([`LoadMeter::overloaded`]): answered 503 here.
    Shed,
    /// Into the lane's queue, read at this instant.
    Queue(Instant, Lane),
}

/// Decides at the door for `message`, with `queued` messages in the [`Lane::New`] queue; what
/// goes into that queue is counted as arriving there.
fn at_the_door(message: &Message, meter: &LoadMeter, queued: usize) -> Door {
    let now = Instant::now();
    if let Message::Request(r) = message {
        match r.method {
            message::Method::Ack if r.to_tag().is_some_and(|t| t.starts_with(STATELESS_TAG)) => return Door::Drop,
            message::Method::Invite if r.to_tag().is_none() && meter.overloaded(queued, now) => return Door::Shed,
            _ => {}
        }
    }
    let lane = Lane::of(message);
    if lane == Lane::New {
        meter.arrived(queued, now);
    }
    Door::Queue(now, lane)
}

/// The transports' ends of the endpoint's queues.
#[derive(Clone)]
struct Sink {
    dialogs: mpsc::Sender<Incoming>,
    new: mpsc::Sender<Incoming>,
}

impl Sink {
    /// Messages waiting in the [`Lane::New`] queue.
    fn new_queued(&self) -> usize {
        self.new.max_capacity() - self.new.capacity()
    }

    fn lane(&self, lane: Lane) -> &mpsc::Sender<Incoming> {
        match lane {
            Lane::Dialogs => &self.dialogs,
            Lane::New => &self.new,
        }
    }
}

/// The endpoint's ends of its queues, one per [`Lane`]: it takes from `dialogs` first.
pub struct Inbox {
    /// [`Lane::Dialogs`], and every [`Incoming::Opened`] and [`Incoming::Closed`].
    pub dialogs: mpsc::Receiver<Incoming>,
    /// [`Lane::New`].
    pub new: mpsc::Receiver<Incoming>,
}

/// What the transports hand to the endpoint.
#[derive(Debug)]
pub enum Incoming {
    /// A parsed message.
    Message {
        /// The message.
        message: Message,
        /// Where it came from.
        from: Peer,
        /// When the transport read it (its wait for the endpoint shows in the metrics).
        received: Instant,
    },
    /// A stream connection is up; send to it through `writer`.
    Opened {
        /// Its id.
        conn: ConnId,
        /// The peer's address.
        addr: SocketAddr,
        /// TCP or TLS.
        transport: Transport,
        /// Its write queue.
        writer: mpsc::Sender<Vec<u8>>,
    },
    /// A stream connection is gone.
    Closed {
        /// Its id.
        conn: ConnId,
    },
}

/// Stream connections as the endpoint sees them: the one owner of this table.
#[derive(Default)]
pub struct Outbound {
    conns: HashMap<ConnId, (SocketAddr, Transport, mpsc::Sender<Vec<u8>>)>,
    by_addr: HashMap<(SocketAddr, Transport), ConnId>,
}

impl Outbound {
    /// Takes note of an [`Incoming::Opened`] or [`Incoming::Closed`].
    pub fn opened(&mut self, conn: ConnId, addr: SocketAddr, transport: Transport, writer: mpsc::Sender<Vec<u8>>) {
        self.conns.insert(conn, (addr, transport, writer));
        self.by_addr.insert((addr, transport), conn);
    }

    /// See [`Outbound::opened`].
    pub fn closed(&mut self, conn: ConnId) {
        if let Some((addr, transport, _)) = self.conns.remove(&conn)
            && self.by_addr.get(&(addr, transport)) == Some(&conn)
        {
            self.by_addr.remove(&(addr, transport));
        }
        if self.conns.is_empty() && self.conns.capacity() > 1024 {
            self.conns = HashMap::new();
            self.by_addr = HashMap::new();
        }
    }

    /// Live connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Queues `bytes` on the connection `to` names (or any to its address); gives them back
    /// when there is none. A connection that is not reading loses them and is dropped, which
    /// closes it.
    pub fn send(&mut self, to: &Peer, bytes: Vec<u8>) -> Result<(), Vec<u8>> {
        let conn = to
            .conn
            .filter(|c| self.conns.contains_key(c))
            .or_else(|| self.by_addr.get(&(to.addr, to.transport)).copied());
        let Some(conn) = conn else { return Err(bytes) };
        let Some((_, _, writer)) = self.conns.get(&conn) else { return Err(bytes) };
        match writer.try_send(bytes) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Lost with the connection, as on a network that drops it: not worth a new one.
                tracing::warn!(conn, addr = %to.addr, "SIP connection not reading: closing it");
                self.closed(conn);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(bytes)) => {
                self.closed(conn);
                Err(bytes)
            }
        }
    }
}

/// The running transports.
pub struct Transports {
    /// The UDP socket, for sending.
    pub udp: Arc<UdpSocket>,
    /// Where SIP listens (UDP and TCP).
    pub local: SocketAddr,
    /// Where SIP listens for TLS, when it does.
    pub tls_local: Option<SocketAddr>,
    /// Messages and connection changes for the endpoint.
    pub incoming: Inbox,
    /// Where the endpoint records its cost per message.
    pub meter: Arc<LoadMeter>,
    connector: Connector,
}

/// Opens outgoing TCP connections (for requests to a peer we have no connection to).
#[derive(Clone)]
struct Connector {
    shared: Arc<Shared>,
    sink: Sink,
}

/// What the accept loops and connection tasks share: ids and the connection counts.
struct Shared {
    next_conn: AtomicU64,
    meter: Arc<LoadMeter>,
    counts: Mutex<Counts>,
    counters: TransportCounters,
    cancel: CancellationToken,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// A connection's place in the counts, given back when it ends.
struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Shared {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let from_ip = counts.by_ip.get(&ip).copied().unwrap_or(0);
        if counts.total >= MAX_CONNECTIONS || from_ip >= MAX_CONNECTIONS_PER_SOURCE {
            return None;
        }
        counts.total += 1;
        counts.by_ip.insert(ip, from_ip + 1);
        Some(Slot { shared: self.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.shared.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.total -= 1;
        if let Some(n) = counts.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.by_ip.remove(&self.ip);
            }
        }
        if counts.by_ip.is_empty() && counts.by_ip.capacity() > 1024 {
            counts.by_ip = HashMap::new();
        }
    }
}

/// TLS settings: where to listen, and the certificate chain and key in PEM.
pub struct TlsSettings {
    /// Address.
    pub listen: SocketAddr,
    /// Certificate chain, PEM.
    pub cert: Vec<u8>,
    /// Private key, PEM.
    pub key: Vec<u8>,
}

impl Transports {
    /// Binds UDP and TCP on `listen` (one port for both) and TLS when asked; `queue` bounds the
    /// messages waiting for the endpoint in each [`Lane`].
    pub async fn start(
        listen: SocketAddr,
        tls: Option<TlsSettings>,
        queue: usize,
        counters: TransportCounters,
        cancel: CancellationToken,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let udp = UdpSocket::bind(listen).await.with_context(|| format!("cannot listen for SIP on UDP {listen}"))?;
        // Room for bursts while the receiver waits for a core: a full buffer drops requests
        // that come back half a second later as retransmissions. The kernel caps it at
        // net.core.rmem_max.
        let sock = socket2::SockRef::from(&udp);
        let _ = sock.set_recv_buffer_size(UDP_BUFFER);
        let _ = sock.set_send_buffer_size(UDP_BUFFER);
        let local = udp.local_addr()?;
        let tcp = TcpListener::bind(local).await.with_context(|| format!("cannot listen for SIP on TCP {local}"))?;
        let udp = Arc::new(udp);
        let (dialogs, dialogs_rx) = mpsc::channel(queue);
        let (new, new_rx) = mpsc::channel(queue);
        let (sink, incoming) = (Sink { dialogs, new }, Inbox { dialogs: dialogs_rx, new: new_rx });
        let meter = Arc::new(LoadMeter::default());
        let shared = Arc::new(Shared {
            next_conn: AtomicU64::new(1),
            meter: meter.clone(),
            counts: Mutex::new(Counts::default()),
            counters: counters.clone(),
            cancel: cancel.clone(),
        });
        spawn_udp_receiver(&udp, sink.clone(), meter.clone(), counters.clone(), cancel.clone())?;
        tokio::spawn(accept(tcp, None, shared.clone(), sink.clone()));
        let mut tls_local = None;
        if let Some(settings) = tls {
            let acceptor = tls_acceptor(&settings.cert, &settings.key)?;
            let listener = TcpListener::bind(settings.listen)
                .await
                .with_context(|| format!("cannot listen for SIP on TLS {}", settings.listen))?;
            tls_local = Some(listener.local_addr()?);
            tokio::spawn(accept(listener, Some(acceptor), shared.clone(), sink.clone()));
        }
        Ok(Self { udp, local, tls_local, incoming, meter, connector: Connector { shared, sink } })
    }

    /// Splits off the parts the endpoint keeps.
    pub fn into_parts(self) -> (Arc<UdpSocket>, Inbox, Arc<LoadMeter>, TcpConnector) {
        (self.udp, self.incoming, self.meter, TcpConnector(self.connector))
    }
}

/// Opens outgoing TCP connections for the endpoint.
#[derive(Clone)]
pub struct TcpConnector(Connector);

impl TcpConnector {
    /// Connects to `addr` and sends `bytes` first; the connection then announces itself as
    /// [`Incoming::Opened`] like an accepted one.
    pub fn connect(&self, addr: SocketAddr, bytes: Vec<u8>) {
        let Connector { shared, sink } = self.0.clone();
        tokio::spawn(async move {
            let Some(slot) = shared.admit(addr.ip()) else {
                tracing::warn!(%addr, "no SIP connection slot for an outgoing connection");
                return;
            };
            match tokio::time::timeout(FIRST_MESSAGE, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nodelay(true);
                    serve(stream, addr, Transport::Tcp, conn, slot, shared, sink, Some(bytes)).await;
                }
                Ok(Err(e)) => tracing::warn!(%addr, error = %e, "cannot connect to the SIP peer over TCP"),
                Err(_) => tracing::warn!(%addr, "timed out connecting to the SIP peer over TCP"),
            }
        });
    }
}

fn tls_acceptor(cert: &[u8], key: &[u8]) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use anyhow::Context as _;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .context("sip.tls_cert: not a PEM certificate chain")?;
    anyhow::ensure!(!certs.is_empty(), "sip.tls_cert: no certificate in the file");
    let key = PrivateKeyDer::from_pem_slice(key).context("sip.tls_key: not a PEM private key")?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("sip.tls_cert and sip.tls_key do not make a usable pair")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Starts [`receive_udp`] on a thread of its own, with a runtime of its own polling a duplicate
/// of the socket: on a loaded node the async workers are busy with media and calls, and a
/// receiver among them reads late, so that requests wait unseen in the socket's buffer (a
/// measured 2 MB, hundreds of milliseconds) where no shedding can reach them. On its own
/// thread it reads as soon as a datagram arrives and the kernel shares the cores between it
/// and the workers; what it does per datagram is small (one parse, a queue push or a 503).
/// Under a current-thread runtime (the tests in paused time) it stays on that runtime, so
/// that virtual time cannot move on while a datagram crosses threads.
fn spawn_udp_receiver(
    udp: &Arc<UdpSocket>,
    sink: Sink,
    meter: Arc<LoadMeter>,
    counters: TransportCounters,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread {
        tokio::spawn(receive_udp(udp.clone(), sink, meter, counters, cancel));
        return Ok(());
    }
    let own: std::net::UdpSocket =
        socket2::SockRef::from(&**udp).try_clone().context("cannot duplicate the SIP UDP socket")?.into();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("cannot start the SIP UDP receiver's runtime")?;
    std::thread::Builder::new()
        .name("sip-udp-rx".into())
        .spawn(move || {
            runtime.block_on(async move {
                match UdpSocket::from_std(own) {
                    Ok(socket) => receive_udp(Arc::new(socket), sink, meter, counters, cancel).await,
                    Err(e) => tracing::error!(error = %e, "SIP UDP receiver cannot register its socket"),
                }
            });
        })
        .context("cannot start the SIP UDP receiver's thread")?;
    Ok(())
}

/// Reads datagrams, parses each once, and answers what does not parse. A request the endpoint
/// has no room for is answered 503 here, at once.
async fn receive_udp(
    socket: Arc<UdpSocket>,
    sink: Sink,
    meter: Arc<LoadMeter>,
    counters: TransportCounters,
    cancel: CancellationToken,
) {
    // One byte over the largest message, to tell a datagram that was cut.
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    loop {
        let (len, from) = tokio::select! {
            () = cancel.cancelled() => return,
            // The endpoint is gone (its runtime shut down without a stop).
            () = sink.dialogs.closed() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on Linux: not fatal.
                    tracing::debug!(error = %e, "SIP UDP receive error");
                    continue;
                }
            },
        };
        let bytes = &buf[..len];
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let peer = Peer { addr: from, transport: Transport::Udp, conn: None };
        match message::parse(bytes) {
            Ok(message) => {
                let refused = match at_the_door(&message, &meter, sink.new_queued()) {
                    Door::Drop => None,
                    Door::Shed => Some(message),
                    Door::Queue(received, lane) => {
                        match sink.lane(lane).try_send(Incoming::Message { message, from: peer, received }) {
                            Err(mpsc::error::TrySendError::Full(Incoming::Message { message, .. })) => Some(message),
                            _ => None,
                        }
                    }
                };
                if let Some(message) = refused {
                    counters.shed.inc();
                    if let Some(answer) = overloaded(&message) {
                        let _ = socket.try_send_to(&answer, from);
                    }
                }
            }
            Err(e) => {
                let outcome = match Refusal::Malformed(e).answer_unparsed(bytes) {
                    Some(answer) => {
                        let _ = socket.try_send_to(&answer, from);
                        "answered"
                    }
                    None => "dropped",
                };
                counters.malformed.get_or_create(&MalformedLabels { outcome }).inc();
            }
        }
    }
}

/// The 503 for a request nobody has room for, or that would wait too long (responses and ACKs
/// get nothing).
fn overloaded(message: &Message) -> Option<Vec<u8>> {
    let Message::Request(request) = message else { return None };
    if request.method == message::Method::Ack {
        return None;
    }
    let tag = format!("{STATELESS_TAG}{}", crate::ids::random_id(10));
    let refusal = Refusal::Overloaded;
    let mut r = message::Response::to(request, refusal.status(), message::reason_phrase(refusal.status()), Some(&tag));
    refusal.write(&mut r);
    Some(r.to_bytes())
}

/// Accepts stream connections, within the caps, backing off at the file-descriptor limit.
async fn accept(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, shared: Arc<Shared>, sink: Sink) {
    let transport = if tls.is_some() { Transport::Tls } else { Transport::Tcp };
    let mut backoff = Duration::from_millis(10);
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            () = shared.cancel.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, addr) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(10);
                a
            }
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS: the connection stays in the backlog; wait for file
                // descriptors to come back rather than spin on the error.
                let now = tokio::time::Instant::now();
                if last_warning.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10)) {
                    tracing::warn!(error = %e, ?transport, "cannot accept SIP connections; backing off");
                    last_warning = Some(now);
                }
                tokio::select! {
                    () = shared.cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Some(slot) = shared.admit(addr.ip()) else {
            shared.counters.connections_refused.inc();
            // Dropping the stream closes it at once.
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        let (shared, sink, tls) = (shared.clone(), sink.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve(stream, addr, transport, conn, slot, shared, sink, None).await,
                Some(acceptor) => match tokio::time::timeout(FIRST_MESSAGE, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => serve(stream, addr, transport, conn, slot, shared, sink, None).await,
                    Ok(Err(e)) => tracing::debug!(%addr, error = %e, "SIP TLS handshake failed"),
                    Err(_) => tracing::debug!(%addr, "SIP TLS handshake timed out"),
                },
            }
        });
    }
}

/// Carries one connection until it closes, fails, idles out or breaks the framing; then its
/// socket closes with the task.
#[allow(clippy::too_many_arguments)]
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    addr: SocketAddr,
    transport: Transport,
    conn: ConnId,
    slot: Slot,
    shared: Arc<Shared>,
    sink: Sink,
    first: Option<Vec<u8>>,
) {
    let _slot = slot;
    let (writer, mut queue) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    if sink.dialogs.send(Incoming::Opened { conn, addr, transport, writer }).await.is_err() {
        return;
    }
    let (mut reader, mut write_half) = tokio::io::split(stream);
    let peer = Peer { addr, transport, conn: Some(conn) };
    let why = async {
        if let Some(bytes) = first
            && write_all(&mut write_half, &bytes).await.is_err()
        {
            return "write failed";
        }
        let mut framer = StreamFramer::new(MAX_MESSAGE);
        let mut buf = vec![0u8; 16 * 1024];
        let mut seen_message = false;
        let mut started: Option<tokio::time::Instant> = None;
        let mut deadline = tokio::time::Instant::now() + FIRST_MESSAGE;
        loop {
            tokio::select! {
                () = shared.cancel.cancelled() => return "shutdown",
                () = tokio::time::sleep_until(deadline) => {
                    return if framer.in_message() || !seen_message { "incomplete message" } else { "idle" };
                }
                out = queue.recv() => match out {
                    Some(bytes) => if write_all(&mut write_half, &bytes).await.is_err() { return "write failed" },
                    None => return "dropped by the endpoint",
                },
                n = reader.read(&mut buf) => {
                    let n = match n { Ok(0) | Err(_) => return "closed by the peer", Ok(n) => n };
                    framer.push(&buf[..n]);
                    loop {
                        match framer.next_frame() {
                            Ok(None) => break,
                            Ok(Some(Frame::Ping)) => if write_all(&mut write_half, PONG).await.is_err() { return "write failed" },
                            Ok(Some(Frame::Message(bytes))) => {
                                seen_message = true;
                                match message::parse(&bytes) {
                                    Ok(message) => {
                                        match at_the_door(&message, &shared.meter, sink.new_queued()) {
                                            Door::Drop => {}
                                            Door::Shed => {
                                                shared.counters.shed.inc();
                                                if let Some(answer) = overloaded(&message)
                                                    && write_all(&mut write_half, &answer).await.is_err()
                                                {
                                                    return "write failed";
                                                }
                                            }
                                            Door::Queue(received, lane) => {
                                                if sink.lane(lane).send(Incoming::Message { message, from: peer, received }).await.is_err() {
                                                    return "shutdown";
                                                }
                                            }
                                        }
                                    }
                                    Err(e) => {
                                        let outcome = match Refusal::Malformed(e).answer_unparsed(&bytes) {
                                            Some(answer) => {
                                                if write_all(&mut write_half, &answer).await.is_err() { return "write failed" }
                                                "answered"
                                            }
                                            None => "dropped",
                                        };
                                        shared.counters.malformed.get_or_create(&MalformedLabels { outcome }).inc();
                                    }
                                }
                            }
                            Err(e) => {
                                let answer = Refusal::answer_unframed(e);
                                shared.counters.malformed.get_or_create(&MalformedLabels { outcome: "answered" }).inc();
                                if let Some(answer) = answer {
                                    let _ = write_all(&mut write_half, &answer).await;
                                }
                                return "message refused";
                            }
                        }
                    }
                    // A message must be whole within its limit from its first byte, however
                    // slowly the rest trickles in.
                    let now = tokio::time::Instant::now();
                    match (framer.in_message(), started) {
                        (true, None) => {
                            started = Some(now);
                            deadline = deadline.min(now + INCOMPLETE_MESSAGE);
                        }
                        (true, Some(_)) => {}
                        (false, _) => {
                            started = None;
                            if seen_message {
                                deadline = now + IDLE;
                            }
                        }
                    }
                }
            }
        }
    }
    .await;
    tracing::debug!(conn, %addr, why, "SIP connection closed");
    let _ = tokio::time::timeout(Duration::from_secs(1), write_half.shutdown()).await;
    let _ = sink.dialogs.send(Incoming::Closed { conn }).await;
}

async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_LIMIT, w.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Message {
        message::parse(text.as_bytes()).unwrap()
    }

    const INVITE: &str = "INVITE sip:gw@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
        From: <sip:a@h>;tag=1\r\nTo: <sip:gw@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";

    /// Whether the door sheds `message`.
    fn shed_new_invite(message: &Message, meter: &LoadMeter, queued: usize) -> bool {
        matches!(at_the_door(message, meter, queued), Door::Shed)
    }

    /// A meter that has measured `per_message` for a while (several windows).
    fn steady(per_message: Duration) -> LoadMeter {
        let meter = LoadMeter::default();
        for _ in 0..8 * METER_WINDOW_MESSAGES {
            meter.record(per_message);
        }
        meter
    }

    /// Whether the door drops `message` as the ACK of a shed 503.
    fn acks_a_shed_answer(message: &Message) -> bool {
        matches!(at_the_door(message, &LoadMeter::default(), 0), Door::Drop)
    }

    #[test]
    fn what_finishes_admitted_calls_goes_in_the_first_lane() {
        let with_tag =
            |method: &str| parse(&INVITE.replace("INVITE", method).replace("To: <sip:gw@h>", "To: <sip:gw@h>;tag=x"));
        for method in ["BYE", "ACK", "INVITE", "UPDATE", "INFO"] {
            assert_eq!(Lane::of(&with_tag(method)), Lane::Dialogs, "{method}");
        }
        let response = parse(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n\
            To: <sip:gw@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(Lane::of(&response), Lane::Dialogs);
        // An ACK without a To tag is for no call of ours; it never waits behind new calls.
        assert_eq!(Lane::of(&parse(&INVITE.replace("INVITE", "ACK"))), Lane::Dialogs);
        for method in ["INVITE", "CANCEL", "OPTIONS", "REGISTER"] {
            assert_eq!(Lane::of(&parse(&INVITE.replace("INVITE", method))), Lane::New, "{method}");
        }
    }

    #[test]
    fn only_new_invites_are_shed_and_only_when_the_queue_would_make_them_wait() {
        let meter = steady(Duration::from_micros(100));
        // 100 µs a message: 200 queued is 20 ms, 201 is over.
        assert!(meter.wait(200) <= SHED_WAIT + Duration::from_micros(1));
        let invite = parse(INVITE);
        assert!(!shed_new_invite(&invite, &meter, 10));
        assert!(shed_new_invite(&invite, &meter, 1000));
        // In-dialog requests and everything else always pass: they finish calls already admitted.
        let reinvite = parse(&INVITE.replace("To: <sip:gw@h>", "To: <sip:gw@h>;tag=x"));
        assert!(!shed_new_invite(&reinvite, &meter, 1000));
        let bye = parse(&INVITE.replace("INVITE", "BYE").replace("To: <sip:gw@h>", "To: <sip:gw@h>;tag=x"));
        assert!(!shed_new_invite(&bye, &meter, 1000));
        // The 503's ACK is known by its tag and stays at the door; other ACKs go on.
        let Some(answer) = overloaded(&invite) else { panic!("a 503") };
        let Message::Response(answer) = parse(&String::from_utf8(answer).unwrap()) else { panic!("a response") };
        let to = answer.headers.get("To").unwrap();
        let tag = to[to.find("tag=").unwrap() + 4..].to_owned();
        let ack = |tag: &str| {
            parse(&INVITE.replace("INVITE", "ACK").replace("To: <sip:gw@h>", &format!("To: <sip:gw@h>;tag={tag}")))
        };
        assert!(acks_a_shed_answer(&ack(&tag)));
        assert!(!acks_a_shed_answer(&ack("x")));
        assert!(!acks_a_shed_answer(&bye));
        // Only a standing queue sheds: messages that waited 30 ms are tolerated for SHED_AFTER,
        // then new INVITEs are shed until one is taken that waited less than SHED_WAIT.
        let calm = steady(Duration::from_micros(100));
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // The endpoint takes a message that waited `waited`, and is done with it at once (the
        // drain rate stays that of `steady`: only the sojourn changes).
        let take = |waited: Duration, at: Instant| {
            calm.served(at, at, false);
            calm.taken(waited, at);
        };
        take(ms(30), t0);
        assert!(!calm.overloaded(10, t0));
        take(ms(30), t0 + ms(30));
        assert!(!calm.overloaded(10, t0 + ms(30)));
        take(ms(30), t0 + SHED_AFTER);
        assert!(calm.overloaded(10, t0 + SHED_AFTER));
        assert!(!calm.overloaded(0, t0 + SHED_AFTER), "nothing to wait behind");
        take(ms(5), t0 + ms(60));
        assert!(!calm.overloaded(10, t0 + ms(60)), "the queue drained");
        // A burst: one long wait, then short ones, never sheds.
        take(ms(35), t0 + ms(70));
        take(ms(2), t0 + ms(80));
        take(ms(35), t0 + ms(130));
        assert!(!calm.overloaded(10, t0 + ms(130)));
        // A flood past SHED_WAIT_MAX sheds at once, before any of it is taken.
        let flood = steady(Duration::from_micros(100));
        let t1 = Instant::now();
        flood.served(t1, t1, false);
        assert!(!flood.overloaded(150, t1));
        assert!(flood.overloaded(700, t1));
        // A stall: nothing is taken while messages wait, the average cannot move, the wait
        // grows with the stall.
        let stall = steady(Duration::from_micros(100));
        let t = Instant::now();
        stall.served(t, t, false);
        stall.arrived(0, t);
        assert!(!stall.overloaded(5, t + Duration::from_millis(10)));
        assert!(stall.overloaded(5, t + SHED_WAIT_MAX + Duration::from_millis(1)));
        // After a long calm the first messages are not taken for a stall.
        let later = t + Duration::from_secs(10);
        stall.arrived(0, later);
        assert!(!stall.overloaded(1, later + Duration::from_millis(1)));
        // A thread preempted for 30 ms among messages of 100 µs: the window holding it drained
        // at a quarter of the usual rate, and the estimate rises by less than that (the
        // window is averaged with those before): 100 queued still make no shed.
        meter.record(Duration::from_millis(30));
        for _ in 0..METER_WINDOW_MESSAGES {
            meter.record(Duration::from_micros(100));
        }
        let after_preemption = meter.wait(100);
        assert!(
            after_preemption > Duration::from_millis(12) && after_preemption < SHED_WAIT_MAX,
            "{after_preemption:?}"
        );
        assert!(!shed_new_invite(&invite, &meter, 100));
        // The scheduler's slices on a shared core: 3 ms of 30 µs messages, then 3 ms elsewhere.
        // Each message is cheap, the queue drains at half that rate, and the estimate says so
        // (an average clipped per sample would say 30 µs and let the queue grow twice as long).
        let sliced = LoadMeter::default();
        for _ in 0..20 {
            for i in 0..100 {
                sliced.record(if i == 0 { Duration::from_millis(3) } else { Duration::from_micros(30) });
            }
        }
        let per_message = sliced.wait(1);
        assert!(per_message > Duration::from_micros(50) && per_message < Duration::from_micros(70), "{per_message:?}");
        // A lasting slowdown shows within a few windows.
        for _ in 0..250 {
            meter.record(Duration::from_millis(1));
        }
        assert!(meter.wait(100) > Duration::from_millis(80), "{:?}", meter.wait(100));
        // A calm endpoint: the average follows, within a few windows of messages.
        for _ in 0..16 * METER_WINDOW_MESSAGES {
            meter.record(Duration::from_micros(1));
        }
        assert!(!shed_new_invite(&invite, &meter, 1000));
        let Some(answer) = overloaded(&invite) else { panic!("an answer") };
        let text = String::from_utf8(answer).unwrap();
        assert!(text.starts_with("SIP/2.0 503 ") && text.contains("Retry-After: 5\r\n"), "{text}");
    }
}
