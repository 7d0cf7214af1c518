//! Media workers: a fixed pool of threads, each carrying many SIP legs (CONTRACT §6).
//!
//! A worker owns its legs whole: the sans-IO [`SipLeg`], the [`Bridge`] around it (Opus encode,
//! the mix the peer hears), its RTP and RTCP sockets and the queue the forwarder fills with the
//! Opus the leg hears, which the worker decodes once per publisher for all its legs that hear it
//! (the legs of a session share a worker). It sleeps until the next leg is due, then runs one pass: for every leg whose
//! 20 ms tick has come it drains the leg's socket (`recvmmsg`, each datagram with the kernel's
//! arrival time), takes the heard frames waiting in the leg's queue, runs the tick and sends
//! what came out. Nothing waits on a leg's socket or queue, so no task wakes per leg or per
//! frame: the forwarder's frames and the peer's datagrams wait where they are until the tick.
//!
//! ## Phases
//!
//! A new leg's ticks fall in one of [`PHASES`] phases of the 20 ms period, in turn, so that a
//! worker's passes are small and regular rather than one burst of every leg every 20 ms. Once
//! its peer's packets flow, a leg's tick moves to just after they usually arrive
//! ([`super::pacing`]), on a 2 ms grid: a packet no longer waits up to a period for the tick
//! that reads it, and the phones' own phases keep the passes spread. A tick publishes what the
//! peer said; the mix the peer hears comes [`MIX_LAG`] later, so that a leg hears what its
//! session-mates ticking at the same moment published without waiting a period for it.
//!
//! ## Arrival times
//!
//! A datagram is read at its leg's tick, up to 20 ms after it arrived. The jitter buffer
//! measures transit from arrival times, and the time of the read would make a steady stream
//! look 20 ms jittery whenever its packets land near the tick; so sockets carry the kernel's
//! receive timestamp (`SO_TIMESTAMPNS`), mapped onto the monotonic clock once per pass. (The
//! kernel turns stamping on a moment after the first socket of the system asks; the few
//! datagrams before that are stamped when read, as they were without it.)
//!
//! ## Why threads
//!
//! A pass is CPU work of up to a few milliseconds; on a thread of its own (one per core by
//! default, `media.workers`) it never holds up the SIP and HTTP tasks of the main runtime, and
//! the kernel spreads the workers over the cores. Each thread runs a small tokio runtime only
//! to sleep, read its commands and wait for the forwarder's answers when a leg joins.
//!
//! ## Tick timing
//!
//! Each 20 ms of wall time produces exactly one frame each way, so the RTP timestamps we send
//! stay true to the wall clock and the peer's jitter buffer sees a stall as late packets rather
//! than a clock running slow; a stall longer than [`MAX_CATCH_UP`] is not caught up (the frames
//! of the stall are lost and the peer conceals them).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, setsockopt, sockopt};
use nix::sys::time::TimeSpec;
use std::io::IoSliceMut;
use tokio::sync::{mpsc, oneshot};

use super::bridge::{Bridge, CallNo, LegNotice, LegSetup, LegSummary, Registration, TICK};
use super::counters::{LegCounters, MediaCounters};
use super::heard::HeardDecoders;
use super::leg::{Channel, LegConfig, LegEvent, MTU, Received, SipLeg};
use super::pacing::Pacer;
use super::params::Negotiated;
use super::ports::Lease;
use super::router::{ExternalMedia, Forwarder};
use crate::ids::SessionId;

/// The longest stall whose missed ticks are caught up.
pub const MAX_CATCH_UP: Duration = Duration::from_millis(100);
/// Phases of the tick period that legs are spread over.
pub const PHASES: u32 = 4;
/// How long after its tick a leg mixes what it hears: by then the frames its session-mates
/// published at about the same moment (legs whose peers send within a few milliseconds of
/// each other, ticking at the same or the next grid point) have come back from the forwarder,
/// instead of waiting a whole period for the next mix. For a publisher at any other phase it
/// is only a different phase of the same wait. (Measured, `benches/media_load.sh`: phone →
/// phone p99 through a conference 48.8 ms with 4 ms, 32.7 ms with 6 ms, 100 legs.)
pub const MIX_LAG: Duration = Duration::from_millis(6);
/// How often a leg checks for RTP inactivity and publishes its counters.
pub const INACTIVITY_CHECK: Duration = Duration::from_millis(500);
/// Frames and tones from the forwarder waiting for a leg: about a second of one publisher.
pub const MEDIA_QUEUE: usize = 64;
/// Datagrams taken from a socket in one system call.
const BATCH: usize = 8;
/// Most system calls per socket per tick: a leg that falls behind catches up over a few ticks
/// rather than starving the others.
const MAX_BATCHES: usize = 4;
/// Largest datagram read from a leg's sockets.
const RECV_BUFFER: usize = 2048;
/// The RTCP socket is read every this many ticks (RTCP comes every few seconds; with rtcp-mux
/// it comes on the RTP socket).
const RTCP_EVERY: u32 = 5;

/// What the SIP driver asks of a worker.
#[derive(Debug)]
enum Command {
    /// Carry a new leg.
    Start(Box<LegSetup>),
    /// A re-INVITE or UPDATE agreed new media (address, codec, keys, hold).
    Update { call: CallNo, negotiated: Box<Negotiated> },
    /// The call is over: the leg's part of the call record goes to `summary`.
    Stop { call: CallNo, summary: oneshot::Sender<LegSummary> },
    /// Tests: make `call`'s leg panic at its next run.
    #[cfg(test)]
    Poison { call: CallNo },
    /// The forwarder answered a leg's publish and subscribe (see [`join`]).
    Joined { call: CallNo, registration: Registration, media: Option<mpsc::Receiver<ExternalMedia>> },
}

/// Why a leg was not started or changed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The worker is gone (shutting down), or the call has no leg.
    #[error("the media worker is not taking commands")]
    Unavailable,
}

/// The SIP driver's handle on the pool: which worker carries which call.
///
/// The legs of one session go to the same worker: what they hear of each other and of the
/// session's browsers is then decoded once, on that worker. A new session goes to the least
/// loaded worker.
#[derive(Debug)]
pub struct MediaWorkers {
    /// Unbounded on purpose: a lost `Stop` would leak a leg with its sockets, and every
    /// command stands for a call event the SIP side already bounds (`sip.max_calls`, the
    /// INVITE rate), so the queue cannot outgrow them.
    workers: Vec<mpsc::UnboundedSender<Command>>,
    /// Where each live call's leg is, and its session.
    placed: HashMap<CallNo, (usize, SessionId)>,
    /// Each session with live legs: its worker and how many legs it has there.
    sessions: HashMap<SessionId, (usize, usize)>,
    /// Legs per worker, to place a new session on the least loaded.
    load: Vec<usize>,
    /// The driver's notices, for a leg that could not be handed to a worker.
    notices: mpsc::Sender<LegNotice>,
}

impl MediaWorkers {
    /// Starts `count` workers (at least one; 0 means one per core) that join legs to
    /// `forwarder`, tell the driver on `notices` and count into `counters`.
    pub fn spawn(
        count: usize,
        forwarder: Forwarder,
        notices: mpsc::Sender<LegNotice>,
        counters: MediaCounters,
    ) -> std::io::Result<Self> {
        let count = match count {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut workers = Vec::with_capacity(count);
        for index in 0..count {
            let (tx, rx) = mpsc::unbounded_channel();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (forwarder, worker_notices, counters, commands) =
                (forwarder.clone(), notices.clone(), counters.clone(), tx.downgrade());
            std::thread::Builder::new().name(format!("media-{index}")).spawn(move || {
                // Made on its thread: the batch headers hold raw pointers and never move.
                let worker = Worker::new(forwarder, worker_notices, counters, commands);
                runtime.block_on(worker.run(rx));
            })?;
            workers.push(tx);
        }
        Ok(Self { load: vec![0; workers.len()], workers, placed: HashMap::new(), sessions: HashMap::new(), notices })
    }

    /// Hands a new leg to the worker of its session, or the least loaded one. A leg that cannot
    /// run (its worker is gone, or it fails to start there) is also a [`LegNotice::Failed`]:
    /// the call cannot go on without its media.
    pub fn start(&mut self, setup: LegSetup) -> Result<(), WorkerError> {
        let (call, session) = (setup.call, setup.session.clone());
        if self.placed.contains_key(&call) {
            // A leg started again for the same call replaces the old one.
            drop(self.stop(call));
        }
        let index = match self.sessions.get(&session) {
            Some(&(index, _)) => index,
            None => (0..self.load.len()).min_by_key(|&i| self.load[i]).unwrap_or(0),
        };
        if self.workers[index].send(Command::Start(Box::new(setup))).is_err() {
            let _ = self.notices.try_send(LegNotice::Failed { call });
            return Err(WorkerError::Unavailable);
        }
        self.load[index] += 1;
        self.sessions.entry(session.clone()).or_insert((index, 0)).1 += 1;
        self.placed.insert(call, (index, session));
        Ok(())
    }

    /// Takes `call` out of the books; its worker, when it had one.
    fn forget(&mut self, call: CallNo) -> Option<usize> {
        let (index, session) = self.placed.remove(&call)?;
        self.load[index] -= 1;
        if let Some((_, legs)) = self.sessions.get_mut(&session) {
            *legs -= 1;
            if *legs == 0 {
                self.sessions.remove(&session);
            }
        }
        Some(index)
    }

    /// New media agreed for `call`'s leg.
    pub fn update(&self, call: CallNo, negotiated: Box<Negotiated>) -> Result<(), WorkerError> {
        let index = self.placed.get(&call).ok_or(WorkerError::Unavailable)?.0;
        self.workers[index].send(Command::Update { call, negotiated }).map_err(|_| WorkerError::Unavailable)
    }

    /// Ends `call`'s leg; its part of the call record comes on the returned channel (closed
    /// when the leg is unknown or its worker is gone).
    pub fn stop(&mut self, call: CallNo) -> oneshot::Receiver<LegSummary> {
        let (summary, receiver) = oneshot::channel();
        if let Some(index) = self.forget(call) {
            // A worker that is gone drops `summary`: the caller hears of it.
            let _ = self.workers[index].send(Command::Stop { call, summary });
        }
        receiver
    }

    /// Live legs.
    pub fn len(&self) -> usize {
        self.placed.len()
    }

    /// Whether no leg is live.
    pub fn is_empty(&self) -> bool {
        self.placed.is_empty()
    }
}

/// One worker: its legs and the buffers every leg's pass reuses.
struct Worker {
    forwarder: Forwarder,
    notices: mpsc::Sender<LegNotice>,
    counters: MediaCounters,
    /// For the join tasks' answers; weak, so that the worker ends when the driver's handle goes.
    commands: mpsc::WeakUnboundedSender<Command>,
    legs: Vec<Slot>,
    /// Legs started, for their phases.
    started: u32,
    receiver: Receiver,
    /// What the worker's legs hear, each publisher decoded once per band for all of them.
    decoders: HeardDecoders,
    tx_buf: Vec<u8>,
    /// The worker's start: the origin of its legs' tick grid.
    epoch: Instant,
}

/// A leg on a worker.
struct Slot {
    call: CallNo,
    leg: SipLeg,
    bridge: Bridge,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    /// The port pair's place in the range, given back after the sockets.
    _lease: Lease,
    /// What the leg hears, once joined.
    media: Option<mpsc::Receiver<ExternalMedia>>,
    registration: Option<Registration>,
    counters: LegCounters,
    rtp_timeout: Duration,
    next_tick: Instant,
    /// Moves `next_tick` to just after the peer's packets arrive.
    pacer: Pacer,
    /// The mixes owed by the ticks run so far: when they are due ([`MIX_LAG`] after the first
    /// of them) and how many.
    owed_mixes: Option<(Instant, u32)>,
    next_check: Instant,
    ticks: u32,
    /// Tests: the next run panics, as a bug in the leg's code would.
    #[cfg(test)]
    poisoned: bool,
}

impl Worker {
    fn new(
        forwarder: Forwarder,
        notices: mpsc::Sender<LegNotice>,
        counters: MediaCounters,
        commands: mpsc::WeakUnboundedSender<Command>,
    ) -> Self {
        Self {
            forwarder,
            notices,
            counters,
            commands,
            legs: Vec::new(),
            started: 0,
            receiver: Receiver::new(),
            decoders: HeardDecoders::new(),
            tx_buf: vec![0; MTU],
            epoch: Instant::now(),
        }
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            let wake = self.next_wake().map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(command) => self.handle(command),
                    None => break,
                },
                () = sleep_until(wake), if wake.is_some() => {}
            }
            let started = Instant::now();
            if self.pass(started) {
                self.counters.busy_seconds.inc_by(started.elapsed().as_secs_f64());
            }
        }
        // The driver is gone (shutting down): the legs leave the forwarder as they drop.
    }

    /// The earliest moment a leg needs the worker.
    fn next_wake(&self) -> Option<Instant> {
        self.legs.iter().map(|s| s.next_due()).min()
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Start(setup) => self.start(*setup),
            Command::Update { call, negotiated } => {
                if let Some(index) = self.legs.iter().position(|s| s.call == call) {
                    let slot = &mut self.legs[index];
                    if !isolate(|| slot.update(negotiated)) {
                        self.fail(index);
                    }
                }
            }
            Command::Stop { call, summary } => {
                if let Some(index) = self.legs.iter().position(|s| s.call == call) {
                    let mut slot = self.legs.swap_remove(index);
                    // What arrived since the last tick still counts in the call record.
                    slot.receive(&Clock::read(), &mut self.receiver, true);
                    let _ = summary.send(slot.finish());
                }
            }
            #[cfg(test)]
            Command::Poison { call } => {
                if let Some(slot) = self.legs.iter_mut().find(|s| s.call == call) {
                    slot.poisoned = true;
                }
            }
            Command::Joined { call, registration, media } => {
                match self.legs.iter_mut().find(|s| s.call == call) {
                    Some(slot) => slot.joined(registration, media),
                    // The call ended first: dropping the registration leaves the forwarder.
                    None => drop(registration),
                }
            }
        }
    }

    fn start(&mut self, setup: LegSetup) {
        let now = Instant::now();
        let LegSetup { call, participant, session, negotiated, ports, rtp_timeout, latching, keep_stream, counters } =
            setup;
        let failed = |what: &str, error: &dyn std::fmt::Display| {
            tracing::warn!(call, %error, "{what}");
            let _ = self.notices.try_send(LegNotice::Failed { call });
        };
        let leg = match SipLeg::new(now, &negotiated, LegConfig { latching, ..LegConfig::random(SystemTime::now()) }) {
            Ok(leg) => leg,
            Err(e) => return failed("the media leg could not run", &e),
        };
        for socket in [&ports.rtp, &ports.rtcp] {
            if let Err(e) = socket.set_nonblocking(true) {
                return failed("the media leg's socket cannot be non-blocking", &e);
            }
            // Without arrival times the leg still runs, its jitter measured at the ticks.
            if let Err(e) = setsockopt(socket, sockopt::ReceiveTimestampns, &true) {
                tracing::debug!(call, error = %e, "no kernel receive timestamps");
            }
        }
        let bridge = Bridge::new(call, participant.clone(), session.clone(), self.forwarder.clone(), &negotiated);
        let phase = TICK / PHASES * (self.started % PHASES);
        self.started = self.started.wrapping_add(1);
        self.legs.push(Slot {
            call,
            leg,
            bridge,
            rtp: ports.rtp,
            rtcp: ports.rtcp,
            _lease: ports.lease,
            media: None,
            registration: None,
            counters: LegCounters::new(counters),
            rtp_timeout,
            next_tick: now + phase,
            pacer: Pacer::new(self.epoch),
            owed_mixes: None,
            next_check: now + INACTIVITY_CHECK,
            ticks: 0,
            #[cfg(test)]
            poisoned: false,
        });
        // Joining the forwarder waits for its answers: off the pass, in a task of this thread.
        if let Some(commands) = self.commands.upgrade() {
            tokio::spawn(join(self.forwarder.clone(), call, participant, session, keep_stream, commands));
        }
    }

    /// Runs every leg that is due; whether any was.
    fn pass(&mut self, now: Instant) -> bool {
        let clock = Clock::read();
        let mut worked = false;
        let mut i = 0;
        while i < self.legs.len() {
            let slot = &mut self.legs[i];
            if slot.next_due() > now {
                i += 1;
                continue;
            }
            worked = true;
            let Self { receiver, decoders, notices, tx_buf, .. } = self;
            let ran = isolate(|| {
                slot.run(now, &clock, receiver, decoders, notices);
                slot.transmit(tx_buf);
            });
            if ran {
                i += 1;
            } else {
                self.fail(i);
            }
        }
        worked
    }

    /// Drops the leg at `index` after a panic, and tells the driver the call cannot go on.
    fn fail(&mut self, index: usize) {
        let slot = self.legs.swap_remove(index);
        tracing::error!(call = slot.call, "the media leg failed and was dropped");
        if self.notices.try_send(LegNotice::Failed { call: slot.call }).is_err() {
            tracing::error!(call = slot.call, "the SIP driver was not told of the failed leg");
        }
        // Dropping the slot leaves the forwarder and frees the ports; the panic may have left
        // it half-updated, which dropping tolerates.
        drop(slot);
    }
}

impl Slot {
    fn next_due(&self) -> Instant {
        let mut due = self.next_tick.min(self.next_check);
        if let Some((mix, _)) = self.owed_mixes {
            due = due.min(mix);
        }
        match self.leg.poll_timeout() {
            Some(at) => due.min(at),
            None => due,
        }
    }

    /// Everything due at `now`: the ticks, the leg's timers, the inactivity check.
    fn run(
        &mut self,
        now: Instant,
        clock: &Clock,
        receiver: &mut Receiver,
        decoders: &mut HeardDecoders,
        notices: &mpsc::Sender<LegNotice>,
    ) {
        #[cfg(test)]
        assert!(!self.poisoned, "a poisoned leg");
        if self.next_tick <= now {
            let due = self.next_tick;
            if now.saturating_duration_since(self.next_tick) > MAX_CATCH_UP {
                // A stall too long to catch up: its frames are lost.
                self.next_tick = now;
            }
            let arrival = self.receive(clock, receiver, self.ticks.is_multiple_of(RTCP_EVERY));
            while self.next_tick <= now {
                self.bridge.publish(now, &mut self.leg);
                self.owed_mixes.get_or_insert((self.next_tick + MIX_LAG, 0)).1 += 1;
                self.next_tick += TICK;
                self.ticks = self.ticks.wrapping_add(1);
            }
            if let Some(moved) = self.pacer.observe(due, arrival, self.next_tick)
                && moved > now
            {
                self.next_tick = moved;
            }
        }
        if let Some((at, owed)) = self.owed_mixes
            && at <= now
        {
            self.owed_mixes = None;
            for _ in 0..owed {
                if let Some(media) = &mut self.media {
                    while let Ok(m) = media.try_recv() {
                        self.bridge.handle_media(now, &mut self.leg, decoders, m);
                    }
                }
                self.bridge.mix(now, &mut self.leg);
            }
        }
        if self.leg.poll_timeout().is_some_and(|at| at <= now) {
            self.leg.handle_timeout(now);
        }
        if self.next_check <= now {
            self.next_check = now + INACTIVITY_CHECK;
            self.counters.publish(&self.bridge.counts(&self.leg));
            if self.leg.is_inactive(now, self.rtp_timeout) {
                let _ = notices.try_send(LegNotice::Inactive { call: self.call });
            }
        }
        while let Some(event) = self.leg.poll_event() {
            if let LegEvent::DtmfEnded { digit, duration } = event {
                self.bridge.dtmf(digit);
                let _ = notices.try_send(LegNotice::Dtmf { call: self.call, digit, duration });
            }
        }
    }

    /// Feeds the leg what waits on its RTP socket, and on its RTCP socket with `rtcp`; when
    /// the last audio on the RTP socket arrived, if the kernel dated it.
    fn receive(&mut self, clock: &Clock, receiver: &mut Receiver, rtcp: bool) -> Option<Instant> {
        let leg = &mut self.leg;
        let mut last = None;
        receiver.drain(&self.rtp, clock, |at, from, datagram| {
            // A refused datagram is counted in the leg's stats; the peer's audio sets the pace,
            // by the kernel's arrival times only (a datagram without one is dated at the pass,
            // which would pull the tick later at every window).
            if let Ok(Received::Audio | Received::TelephoneEvent) = leg.handle_datagram(at, from, datagram)
                && at < clock.now
            {
                last = Some(at);
            }
        });
        if rtcp {
            receiver.drain(&self.rtcp, clock, |at, from, datagram| {
                let _ = leg.handle_datagram(at, from, datagram);
            });
        }
        last
    }

    /// Sends what the leg produced. Never waits: a full socket buffer loses the datagram, as the
    /// network would.
    fn transmit(&mut self, buf: &mut [u8]) {
        while let Some(t) = self.leg.poll_transmit(buf) {
            let socket = match t.channel {
                Channel::Rtp => &self.rtp,
                Channel::Rtcp => &self.rtcp,
            };
            if let Err(e) = socket.send_to(&buf[..t.len], t.to) {
                tracing::trace!(call = self.call, error = %e, "RTP send failed");
            }
        }
    }

    fn update(&mut self, negotiated: Box<Negotiated>) {
        match self.leg.update(Instant::now(), &negotiated) {
            Ok(()) => self.bridge.update(&negotiated),
            Err(e) => tracing::warn!(call = self.call, error = %e, "the leg refused the new media"),
        }
        // Hold shows as muted in the SDK (CONTRACT §4).
        self.bridge.show_hold(&self.leg);
    }

    fn joined(&mut self, registration: Registration, media: Option<mpsc::Receiver<ExternalMedia>>) {
        if registration.endpoint.is_none() {
            tracing::warn!(call = self.call, "the forwarder is gone; the leg runs without WebRTC");
        }
        self.bridge.endpoint = registration.endpoint.clone();
        self.bridge.show_hold(&self.leg);
        self.registration = Some(registration);
        self.media = media;
    }

    /// The leg's part of the call record; leaving the forwarder as the slot drops.
    fn finish(mut self) -> LegSummary {
        self.counters.publish(&self.bridge.counts(&self.leg));
        self.bridge.summary(&self.leg)
    }
}

/// Publishes the leg's stream and subscribes it to what its participant hears, then hands the
/// result to the worker. Dropped half-way (the worker shutting down), the registration leaves
/// the forwarder.
async fn join(
    forwarder: Forwarder,
    call: CallNo,
    participant: crate::ids::ParticipantId,
    session: SessionId,
    keep_stream: bool,
    commands: mpsc::UnboundedSender<Command>,
) {
    let mut registration = Registration::new(forwarder.clone(), keep_stream);
    registration.endpoint = forwarder.publish(participant.clone(), session.clone()).await;
    let (media_tx, media) = mpsc::channel(MEDIA_QUEUE);
    registration.subscriber = forwarder.subscribe(participant, session, media_tx).await;
    // Without a subscription the channel is closed: nothing to read.
    let media = registration.subscriber.is_some().then_some(media);
    // A worker that is gone drops the command, and the registration with it.
    let _ = commands.send(Command::Joined { call, registration, media });
}

/// Runs `f`, containing a panic in it (a bug in one leg's code) to that leg: `false` when it
/// panicked. The worker's other legs go on; the caller drops the leg.
fn isolate(f: impl FnOnce()) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_ok()
}

/// Sleeps until `at`; forever without one (the `select!` branch is then disabled anyway).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The pass's moment on both clocks, to place the kernel's receive timestamps (wall clock) on
/// the monotonic one.
struct Clock {
    now: Instant,
    wall: SystemTime,
}

impl Clock {
    /// Both clocks read together: the wall clock between two monotonic readings close to each
    /// other (a thread preempted between two reads would misplace every arrival of the pass by
    /// the time it lost, and the jitter buffer would play that much too early).
    fn read() -> Self {
        let mut best = None;
        for _ in 0..4 {
            let before = Instant::now();
            let wall = SystemTime::now();
            let spread = before.elapsed();
            let clock = Self { now: before + spread / 2, wall };
            if spread < Duration::from_micros(20) {
                return clock;
            }
            if best.as_ref().is_none_or(|(s, _)| spread < *s) {
                best = Some((spread, clock));
            }
        }
        best.map(|(_, clock)| clock).unwrap_or_else(|| Self { now: Instant::now(), wall: SystemTime::now() })
    }

    /// When a datagram stamped `at` arrived: never after the pass, at most a second before it
    /// (a wall clock that jumped gives the pass's own time).
    fn arrival(&self, at: Option<TimeSpec>) -> Instant {
        let Some(at) = at else { return self.now };
        let stamped = SystemTime::UNIX_EPOCH + Duration::from(at);
        match self.wall.duration_since(stamped) {
            Ok(ago) if ago <= Duration::from_secs(1) => self.now.checked_sub(ago).unwrap_or(self.now),
            _ => self.now,
        }
    }
}

/// Batched reads with `recvmmsg`, into buffers allocated once per worker.
struct Receiver {
    headers: MultiHeaders<SockaddrStorage>,
    buffers: Box<[[u8; RECV_BUFFER]; BATCH]>,
}

impl Receiver {
    fn new() -> Self {
        Self {
            headers: MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(TimeSpec))),
            buffers: Box::new([[0; RECV_BUFFER]; BATCH]),
        }
    }

    /// Feeds everything waiting on `socket` to `deliver(arrival, source, datagram)`, at most
    /// [`MAX_BATCHES`] system calls.
    fn drain(&mut self, socket: &UdpSocket, clock: &Clock, mut deliver: impl FnMut(Instant, SocketAddr, &[u8])) {
        for _ in 0..MAX_BATCHES {
            let mut meta = [(0usize, None::<SocketAddr>, None::<TimeSpec>); BATCH];
            let received = {
                let mut buffers = self.buffers.iter_mut();
                let mut slices: [[IoSliceMut<'_>; 1]; BATCH] =
                    std::array::from_fn(|_| [IoSliceMut::new(buffers.next().expect("BATCH buffers"))]);
                match recvmmsg(socket.as_raw_fd(), &mut self.headers, slices.iter_mut(), MsgFlags::MSG_DONTWAIT, None) {
                    Ok(results) => {
                        let mut n = 0;
                        for (slot, message) in meta.iter_mut().zip(results) {
                            let stamp = message.cmsgs().ok().and_then(|mut cmsgs| {
                                cmsgs.find_map(|c| match c {
                                    ControlMessageOwned::ScmTimestampns(at) => Some(at),
                                    _ => None,
                                })
                            });
                            *slot = (message.bytes, message.address.and_then(|a| socket_addr(&a)), stamp);
                            n += 1;
                        }
                        n
                    }
                    Err(Errno::EAGAIN | Errno::EINTR) => return,
                    Err(e) => {
                        // ICMP errors (a peer's port closed) surface here; the next call goes on.
                        tracing::trace!(error = %e, "RTP receive failed");
                        return;
                    }
                }
            };
            for (buffer, (len, from, stamp)) in self.buffers.iter().zip(&meta[..received]) {
                if let Some(from) = from {
                    deliver(clock.arrival(*stamp), *from, &buffer[..(*len).min(RECV_BUFFER)]);
                }
            }
            if received < BATCH {
                return;
            }
        }
    }
}

fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    address.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    //! The worker's reads on real loopback sockets, and a leg carried by a real worker thread
    //! against a phone played by a second `SipLeg`.

    use std::net::Ipv4Addr;

    use codecs::pcm::analysis::tone;

    use super::*;
    use crate::ids::{EndpointId, ParticipantId, SessionId};
    use crate::media::params::Codec;
    use crate::media::ports::PortRange;
    use crate::media::resample::WIDE_FRAME;
    use crate::media::router::{ExternalSubscriberId, LegRequest};

    fn bound() -> UdpSocket {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        socket.set_nonblocking(true).unwrap();
        setsockopt(&socket, sockopt::ReceiveTimestampns, &true).unwrap();
        socket
    }

    fn drained(receiver: &mut Receiver, socket: &UdpSocket, clock: &Clock) -> Vec<(Instant, SocketAddr, Vec<u8>)> {
        let mut got = Vec::new();
        receiver.drain(socket, clock, |at, from, datagram| got.push((at, from, datagram.to_vec())));
        got
    }

    #[test]
    fn a_burst_is_read_in_batches_in_order_with_the_kernels_arrival_times() {
        let socket = bound();
        let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let to = socket.local_addr().unwrap();
        let mut receiver = Receiver::new();
        // The kernel turns receive timestamps on for the whole system a moment after the first
        // socket asks (deferred work); until then datagrams are stamped when read. Wait for it,
        // bounded: a datagram read 5 ms after it was sent must say so.
        let stamping = (0..100).any(|_| {
            sender.send_to(b"probe", to).unwrap();
            std::thread::sleep(Duration::from_millis(5));
            let clock = Clock::read();
            let got = drained(&mut receiver, &socket, &clock);
            got.len() == 1 && got[0].0 + Duration::from_millis(4) <= clock.now
        });
        assert!(stamping, "the kernel never stamped a datagram on arrival");
        let sent_at = Instant::now();
        for i in 0..40u8 {
            sender.send_to(&[i; 100], to).unwrap();
        }
        // Read well after they arrived: the arrival times must be the kernel's, not the read's.
        std::thread::sleep(Duration::from_millis(30));
        let clock = Clock::read();
        let first = drained(&mut receiver, &socket, &clock);
        // One read takes at most MAX_BATCHES batches; the rest waits for the next.
        assert_eq!(first.len(), MAX_BATCHES * BATCH);
        let second = drained(&mut receiver, &socket, &Clock::read());
        assert_eq!(second.len(), 40 - MAX_BATCHES * BATCH);
        assert!(drained(&mut receiver, &socket, &Clock::read()).is_empty());
        for (i, (at, from, datagram)) in first.iter().chain(&second).enumerate() {
            assert_eq!(datagram, &vec![i as u8; 100]);
            assert_eq!(*from, sender.local_addr().unwrap());
            assert!(
                *at + Duration::from_millis(20) <= clock.now,
                "datagram {i} stamped at the read: {:?} before the read, sent {:?} before",
                clock.now - *at,
                clock.now - sent_at
            );
            assert!(*at + Duration::from_millis(5) >= sent_at, "datagram {i} stamped before it was sent");
        }
    }

    #[test]
    fn a_timestamp_from_a_wall_clock_that_jumped_is_the_pass_time() {
        let clock = Clock::read();
        let future =
            TimeSpec::from(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap() + Duration::from_secs(5));
        let past =
            TimeSpec::from(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap() - Duration::from_secs(5));
        assert_eq!(clock.arrival(Some(future)), clock.now);
        assert_eq!(clock.arrival(Some(past)), clock.now);
        assert_eq!(clock.arrival(None), clock.now);
    }

    /// Answers the legs' publish and subscribe, counts the frames they publish; the subscribers'
    /// queues are kept so that the legs hear `heard` every frame.
    async fn forwarder(mut requests: mpsc::Receiver<LegRequest>, frames: mpsc::UnboundedSender<usize>) {
        let mut subscribers = Vec::new();
        while let Some(request) = requests.recv().await {
            match request {
                LegRequest::Publish { reply, .. } => {
                    let _ = reply.send(EndpointId("sip".into()));
                }
                LegRequest::Subscribe { frames, reply, .. } => {
                    subscribers.push(frames);
                    let _ = reply.send(ExternalSubscriberId(1));
                }
                LegRequest::Frame { data, .. } => {
                    let _ = frames.send(data.len());
                }
                _ => {}
            }
        }
    }

    fn setup(call: CallNo, session: &str, ports: crate::media::ports::RtpPair) -> LegSetup {
        LegSetup {
            call,
            participant: ParticipantId::from(format!("p{call}").as_str()),
            session: SessionId::from(session),
            negotiated: Box::new(Negotiated::sendrecv(Codec::Pcmu, "127.0.0.1:9".parse().unwrap())),
            ports,
            rtp_timeout: Duration::from_secs(30),
            latching: Default::default(),
            keep_stream: false,
            counters: MediaCounters::default(),
        }
    }

    #[tokio::test]
    async fn the_legs_of_a_session_share_a_worker_and_new_sessions_go_to_the_least_loaded() {
        let (requests, requests_rx) = mpsc::channel(1024);
        let (frames_tx, _frames) = mpsc::unbounded_channel();
        tokio::spawn(forwarder(requests_rx, frames_tx));
        let (notices, _notices) = mpsc::channel(16);
        let mut workers = MediaWorkers::spawn(2, Forwarder::new(requests), notices, MediaCounters::default()).unwrap();
        let mut range = PortRange::new(Ipv4Addr::LOCALHOST.into(), 40_000, 60_000);
        for (call, session) in [(1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "a")] {
            workers.start(setup(call, session, range.reserve().unwrap().1)).unwrap();
        }
        let worker = |w: &MediaWorkers, call| w.placed[&call].0;
        assert_eq!(worker(&workers, 1), worker(&workers, 3));
        assert_eq!(worker(&workers, 1), worker(&workers, 5));
        assert_ne!(worker(&workers, 1), worker(&workers, 2), "b went to the idle worker");
        assert_eq!(worker(&workers, 4), worker(&workers, 2), "c went to the less loaded one");
        assert_eq!(workers.load, [3, 2]);
        // Every leg of "a" ends: a new "a" is a new session, placed by load again.
        for call in [1, 3, 5] {
            tokio::time::timeout(Duration::from_secs(5), workers.stop(call)).await.unwrap().unwrap();
        }
        assert!(!workers.sessions.contains_key(&SessionId::from("a")));
        assert_eq!(workers.load, [0, 2]);
        workers.start(setup(6, "a", range.reserve().unwrap().1)).unwrap();
        assert_eq!(worker(&workers, 6), 0);
        assert_eq!(workers.len(), 3);
    }

    #[tokio::test]
    async fn a_leg_that_panics_is_dropped_and_reported_and_its_workers_other_legs_go_on() {
        let (requests, requests_rx) = mpsc::channel(1024);
        let (frames_tx, _frames) = mpsc::unbounded_channel();
        tokio::spawn(forwarder(requests_rx, frames_tx));
        let (notices, mut notices_rx) = mpsc::channel(16);
        let mut workers = MediaWorkers::spawn(1, Forwarder::new(requests), notices, MediaCounters::default()).unwrap();
        let mut range = PortRange::new(Ipv4Addr::LOCALHOST.into(), 40_000, 60_000);
        workers.start(setup(1, "s", range.reserve().unwrap().1)).unwrap();
        workers.start(setup(2, "s", range.reserve().unwrap().1)).unwrap();
        workers.workers[0].send(Command::Poison { call: 1 }).unwrap();
        let notice = tokio::time::timeout(Duration::from_secs(5), notices_rx.recv()).await.unwrap();
        assert_eq!(notice, Some(LegNotice::Failed { call: 1 }));
        // The worker goes on: the other leg still runs and gives its record back; the failed
        // one has none.
        let other = tokio::time::timeout(Duration::from_secs(5), workers.stop(2)).await.unwrap();
        assert!(other.is_ok());
        let failed = tokio::time::timeout(Duration::from_secs(5), workers.stop(1)).await.unwrap();
        assert!(failed.is_err());
    }

    #[tokio::test]
    async fn a_leg_that_cannot_start_is_reported_failed() {
        let (requests, _requests_rx) = mpsc::channel(1024);
        let (notices, mut notices_rx) = mpsc::channel(16);
        let mut workers = MediaWorkers::spawn(1, Forwarder::new(requests), notices, MediaCounters::default()).unwrap();
        let mut range = PortRange::new(Ipv4Addr::LOCALHOST.into(), 40_000, 60_000);
        // RTP/SAVP agreed without keys: the leg refuses to run in the clear.
        let mut broken = setup(7, "s", range.reserve().unwrap().1);
        broken.negotiated.profile = crate::media::params::Profile::Savp;
        workers.start(broken).unwrap();
        let notice = tokio::time::timeout(Duration::from_secs(5), notices_rx.recv()).await.unwrap();
        assert_eq!(notice, Some(LegNotice::Failed { call: 7 }));
        // With its worker gone (its queue closed), a new leg is refused and reported the same way.
        let (closed, _) = mpsc::unbounded_channel();
        workers.workers[0] = closed;
        let refused = workers.start(setup(8, "t", range.reserve().unwrap().1));
        assert!(matches!(refused, Err(WorkerError::Unavailable)));
        assert!(!workers.placed.contains_key(&8));
        let notice = tokio::time::timeout(Duration::from_secs(5), notices_rx.recv()).await.unwrap();
        assert_eq!(notice, Some(LegNotice::Failed { call: 8 }));
    }

    #[tokio::test]
    async fn a_worker_carries_a_leg_both_ways_and_gives_its_counters_back() {
        let (requests, requests_rx) = mpsc::channel(1024);
        let (frames_tx, mut frames) = mpsc::unbounded_channel();
        tokio::spawn(forwarder(requests_rx, frames_tx));
        let (notices, _notices) = mpsc::channel(16);
        let mut workers = MediaWorkers::spawn(1, Forwarder::new(requests), notices, MediaCounters::default()).unwrap();

        let phone_socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let phone_addr = phone_socket.local_addr().unwrap();
        let (port, ports) = PortRange::new(Ipv4Addr::LOCALHOST.into(), 40_000, 60_000).reserve().unwrap();
        let gateway = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        workers
            .start(LegSetup {
                call: 7,
                participant: ParticipantId::from("p"),
                session: SessionId::from("s"),
                negotiated: Box::new(Negotiated::sendrecv(Codec::Pcmu, phone_addr)),
                ports,
                rtp_timeout: Duration::from_secs(30),
                latching: Default::default(),
                keep_stream: false,
                counters: MediaCounters::default(),
            })
            .unwrap();
        assert_eq!(workers.len(), 1);

        // The phone speaks 1 s of a tone, paced at 20 ms.
        let mut phone = SipLeg::new(
            Instant::now(),
            &Negotiated::sendrecv(Codec::Pcmu, gateway),
            LegConfig::random(SystemTime::now()),
        )
        .unwrap();
        let pcm = tone(16_000, 1000.0, -10.0, WIDE_FRAME * 50);
        let mut buf = [0u8; MTU];
        let mut interval = tokio::time::interval(TICK);
        let mut sent = 0;
        for chunk in pcm.chunks_exact(WIDE_FRAME) {
            interval.tick().await;
            phone.send_audio(Instant::now(), chunk.try_into().unwrap());
            while let Some(t) = phone.poll_transmit(&mut buf) {
                if t.channel == Channel::Rtp {
                    phone_socket.send_to(&buf[..t.len], t.to).unwrap();
                    sent += 1;
                }
            }
        }
        // Browsers get the phone: frames published once the jitter buffer plays (bounded wait).
        let published = tokio::time::timeout(Duration::from_secs(5), async {
            let mut n = 0;
            while n < 20 {
                frames.recv().await.unwrap();
                n += 1;
            }
            n
        })
        .await
        .expect("the leg publishes the phone's audio");
        assert_eq!(published, 20);

        let summary = tokio::time::timeout(Duration::from_secs(5), workers.stop(7)).await.unwrap().unwrap();
        assert!(workers.is_empty());
        assert_eq!(summary.codec, "PCMU");
        assert_eq!(summary.stats.packets_received, sent);
        assert!(summary.frames_published >= 20, "{summary:?}");
        // The phone heard the leg: RTP came back to its socket from the gateway's port.
        phone_socket.set_nonblocking(true).unwrap();
        let mut back = 0;
        let mut datagram = [0u8; 2048];
        while let Ok((_, from)) = phone_socket.recv_from(&mut datagram) {
            assert_eq!(from.port(), port);
            back += 1;
        }
        assert!(back >= 40, "{back} packets came back");
    }
}
