//! The tokio shell around the SIP cores: one task owns the [`Transactions`] and the
//! [`UserAgent`] and feeds them messages from the transports, rooms events, media events and
//! timers, on tokio's clock (so paused-time tests drive it); it carries out their outputs
//! (bytes to the sockets, RTP sockets, rooms changes, metrics, logs and callbacks).
//!
//! A call's media is a leg on one of the media workers ([`crate::media::worker`]), on an
//! RTP/RTCP socket pair from the configured range, joined to the WebRTC forwarder. The actor
//! keeps a record per live leg (its participant, session and a drain [`CallGuard`]); when a
//! call ends, the leg's counters come back and the `sipLegEnded` callback and "SIP leg ended" log line carry
//! them (one call record).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::message::Request;
use super::transaction::{ClientTx, Limits, Peer, Timers, Transactions, TxOutput};
use super::transport::{Inbox, Incoming, LATE, Lane, LoadMeter, Outbound, TcpConnector, TlsSettings, Transports};
use super::ua::{
    Admitted, CallEvent, CallNo, Event, Inbound, MediaCommand, Output, RoomsCommand, Transport, UaConfig, UserAgent,
};
use crate::config::Config;
use crate::control::callback_events::{
    CallbackEvent, DtmfEvent, LegMedia, SipLegConnectedEvent, SipLegEndedEvent, timestamp,
};
use crate::control::callbacks::Callbacks;
use crate::drain::{CallGuard, Drain};
use crate::ids::{ParticipantId, SessionId};
use crate::media::bridge::{LegNotice, LegSetup, LegSummary};
use crate::media::ports::{PortRange, RtpPair};
use crate::media::router::Forwarder;
use crate::media::worker::MediaWorkers;
use crate::metrics::{InviteLabels, Metrics};
use crate::rooms::RoomsHandle;
use crate::tokens::{self, TokenError, VerifiedTokens, Verifier};

/// Messages from the transports waiting for the actor; past it, UDP requests get 503 at the
/// socket and stream connections wait (back-pressure rather than unbounded memory).
const INCOMING_QUEUE: usize = 8192;

/// Capacity of the actor's queue of other inputs.
const INPUT_QUEUE: usize = 1024;

/// Notices from all media legs (inactivity, DTMF) waiting for the actor; a leg whose notice
/// does not fit repeats it (inactivity) or loses it (a DTMF callback; browsers still got it).
const NOTICE_QUEUE: usize = 1024;

/// How long a stopped leg may take to hand back its counters before it is aborted.
const LEG_STOP_GRACE: Duration = Duration::from_secs(1);

/// Inputs of the actor besides the transports' messages.
enum Input {
    Event(Event),
    /// A call's media task ended; its counters when it ran.
    MediaEnded {
        call: CallNo,
        summary: Option<Box<LegSummary>>,
    },
    /// The config was reloaded (SIGHUP).
    Reload {
        trusted_peers: Vec<ipnet::IpNet>,
    },
}

/// A live media leg, as the actor sees it.
struct MediaLeg {
    guard: CallGuard,
    participant: ParticipantId,
    session: SessionId,
}

/// A call whose media is stopping: the end is reported once both its `Ended` event and its
/// leg's counters are in, in either order (the media stops first when we hang up).
#[derive(Default)]
struct Stopping {
    ended: Option<CallEvent>,
    /// The leg's counters, once its task is over (`None` inside when it failed).
    summary: Option<Option<LegSummary>>,
}

/// Hands reloaded settings to the running user agent.
#[derive(Clone, Debug)]
pub struct SipReloader(mpsc::Sender<Input>);

impl SipReloader {
    /// New `sip.trusted_peers`; `false` when the user agent is gone.
    pub async fn trusted_peers(&self, trusted_peers: Vec<ipnet::IpNet>) -> bool {
        self.0.send(Input::Reload { trusted_peers }).await.is_ok()
    }
}

/// Handle on the running SIP side.
pub struct SipService {
    inputs: mpsc::Sender<Input>,
    /// The endpoint's load, as the transports shed by it.
    meter: Arc<LoadMeter>,
    /// Where SIP listens (UDP and TCP).
    pub local: SocketAddr,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl SipService {
    /// Binds the SIP transports and starts the user agent.
    pub async fn start(
        config: &Config,
        rooms: RoomsHandle,
        verifier: Arc<Verifier>,
        drain: Drain,
        callbacks: Callbacks,
        metrics: Arc<Metrics>,
        forwarder: Forwarder,
    ) -> anyhow::Result<Self> {
        let cancel = CancellationToken::new();
        let tls = match (&config.sip.tls_listen, &config.sip.tls_cert, &config.sip.tls_key) {
            (Some(addr), Some(cert), Some(key)) => {
                use anyhow::Context as _;
                let cert = std::fs::read(cert).with_context(|| format!("sip.tls_cert: {}", cert.display()))?;
                let key = std::fs::read(key).with_context(|| format!("sip.tls_key: {}", key.display()))?;
                Some(TlsSettings { listen: addr.0, cert, key })
            }
            _ => None,
        };
        let transports =
            Transports::start(config.sip.listen.0, tls, INCOMING_QUEUE, metrics.sip_transport.clone(), cancel.clone())
                .await?;
        let local = transports.local;
        let tls_port = transports.tls_local.map(|a| a.port());
        tracing::info!(%local, "SIP listening on UDP and TCP");
        let media_ip = config.media.public_ip.unwrap_or_else(|| advertised_ip(local.ip()));
        let ua = UserAgent::new(UaConfig {
            default_mode: config.sip.default_mode,
            max_calls: config.sip.max_calls,
            max_conference_legs: config.sip.max_conference_legs,
            trusted_peers: config.sip.trusted_peers.clone(),
            invite_rate: config.sip.invite_rate,
            srtp: config.media.srtp,
            media_ip,
            contact_host: SocketAddr::new(media_ip, local.port()).to_string(),
            answer_delay: config.sip.answer_delay,
            session_expires: config.sip.session_expires,
            min_se: config.sip.min_se,
            rng_seed: {
                let mut seed = [0; 32];
                crate::ids::fill_random(&mut seed);
                seed
            },
        });
        let limits = Limits { max_pending: config.sip.max_pending as usize, ..Limits::default() };
        let (inputs, rx) = mpsc::channel(INPUT_QUEUE);
        let ports = PortPool::new(local.ip(), config.media.rtp_port_min, config.media.rtp_port_max);
        let (udp, incoming, meter, connector) = transports.into_parts();
        let (notices, notices_rx) = mpsc::channel(NOTICE_QUEUE);
        let workers = MediaWorkers::spawn(config.media.workers, forwarder.clone(), notices, metrics.media.clone())?;
        let actor = Actor {
            txs: Transactions::new(Timers::default(), limits),
            ua,
            env: DriverEnv { verifier, verified: VerifiedTokens::default(), rooms: rooms.clone(), ports },
            inputs: inputs.clone(),
            clients: HashMap::new(),
            outbound: Outbound::default(),
            udp,
            connector,
            meter: meter.clone(),
            via_host: SocketAddr::new(media_ip, local.port()),
            tls_via_host: tls_port.map(|p| SocketAddr::new(media_ip, p)),
            media: HashMap::new(),
            workers,
            stopping: HashMap::new(),
            forwarder,
            rooms,
            drain,
            callbacks,
            metrics,
            rtp_timeout: config.media.rtp_timeout,
            latching: config.media.latching,
        };
        let task = tokio::spawn(actor.run(incoming, rx, notices_rx, cancel.clone()));
        Ok(Self { inputs, meter, local, cancel, task })
    }

    /// The address SIP listens on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The SIP endpoint's load meter (messages handled, cost per message).
    pub fn load(&self) -> Arc<LoadMeter> {
        self.meter.clone()
    }

    /// What a config reload can change on the SIP side, for the SIGHUP handler.
    pub fn reloader(&self) -> SipReloader {
        SipReloader(self.inputs.clone())
    }

    /// Draining: new INVITEs get 503.
    pub async fn drain(&self) {
        let _ = self.inputs.send(Input::Event(Event::Drain)).await;
    }

    /// The drain timeout passed: BYE every call, wait briefly for the BYEs, stop.
    pub async fn stop(self, grace: Duration) {
        let _ = self.inputs.send(Input::Event(Event::DrainOver)).await;
        let deadline = tokio::time::Instant::now() + grace;
        // The actor ends its calls; give the BYEs a moment to leave and be answered.
        tokio::time::sleep_until(deadline).await;
        self.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.task).await;
    }
}

/// What the user agent asks of the node: token verification and RTP ports.
struct DriverEnv {
    verifier: Arc<Verifier>,
    /// Tokens already verified: participants call again (bridge mode re-attach, redials).
    verified: VerifiedTokens,
    rooms: RoomsHandle,
    ports: PortPool,
}

impl DriverEnv {
    /// Verifies a participant token and finds its participant (CONTRACT §3).
    fn admit(&mut self, token: &str) -> Result<Admitted, TokenError> {
        let verified = self.verifier.verify_remembered(token, SystemTime::now(), &mut self.verified)?;
        let admission = tokens::admission(verified, &self.rooms)?;
        let account = self
            .rooms
            .read(|r| r.participant_by_id(&admission.token.participant).map(|p| p.account.clone()))
            .ok_or_else(|| TokenError::UnknownParticipant(admission.token.participant.to_string()))?;
        Ok(Admitted {
            participant: admission.token.participant,
            session: admission.session,
            account,
            mode: admission.token.mode,
        })
    }

    /// Reserves an RTP port for `call`; `None` when the range is exhausted.
    fn allocate_rtp(&mut self, call: CallNo) -> Option<u16> {
        self.ports.reserve(call)
    }
}

struct Actor {
    txs: Transactions,
    ua: UserAgent,
    env: DriverEnv,
    inputs: mpsc::Sender<Input>,
    /// Requests the user agent sent, by client transaction: whose outcome it waits for.
    clients: HashMap<ClientTx, CallNo>,
    /// Live stream connections.
    outbound: Outbound,
    udp: Arc<tokio::net::UdpSocket>,
    connector: TcpConnector,
    /// Our cost per message, for the transports' overload shedding.
    meter: Arc<LoadMeter>,
    /// The sent-by of our Vias over UDP and TCP, and over TLS.
    via_host: SocketAddr,
    tls_via_host: Option<SocketAddr>,
    media: HashMap<CallNo, MediaLeg>,
    /// The threads that carry the legs.
    workers: MediaWorkers,
    stopping: HashMap<CallNo, Stopping>,
    forwarder: Forwarder,
    rooms: RoomsHandle,
    drain: Drain,
    callbacks: Callbacks,
    metrics: Arc<Metrics>,
    rtp_timeout: Duration,
    latching: crate::media::leg::Latching,
}

/// The actor's clock: tokio's, so that paused-time tests drive the SIP cores.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Actor {
    async fn run(
        mut self,
        mut inbox: Inbox,
        mut inputs: mpsc::Receiver<Input>,
        mut notices: mpsc::Receiver<LegNotice>,
        cancel: CancellationToken,
    ) {
        let mut room_events = self.rooms.subscribe();
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        loop {
            let deadline = match (self.ua.poll_timeout(), self.txs.poll_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(at) = deadline {
                let at = tokio::time::Instant::from_std(at);
                if sleep.deadline() != at {
                    sleep.as_mut().reset(at);
                }
            }
            // In this order: what finishes admitted calls before what starts new ones
            // (transport::Lane), and timers before both.
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                () = &mut sleep, if deadline.is_some() => {
                    let now = now();
                    self.txs.handle_timeout(now);
                    self.ua.handle_timeout(now);
                }
                input = inputs.recv() => match input {
                    Some(input) => self.handle(input),
                    None => return,
                },
                notice = notices.recv() => if let Some(notice) = notice {
                    self.notice(notice);
                },
                message = inbox.dialogs.recv() => match message {
                    Some(m) => self.take_dialog_message(m),
                    None => return,
                },
                event = room_events.recv() => match event {
                    Ok(e) => self.ua.handle_event(now(), Event::Room(e)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "SIP side lagged behind rooms events");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                message = inbox.new.recv() => match message {
                    Some(m) => {
                        // What a transport put in the other lane before this message (a
                        // connection's Opened) may have come after this select found that lane
                        // empty: it is taken first, or the answer has nowhere to go.
                        for _ in 0..inbox.dialogs.len() {
                            match inbox.dialogs.try_recv() {
                                Ok(earlier) => self.take_dialog_message(earlier),
                                Err(_) => break,
                            }
                        }
                        // The load meter times this lane only: its drain rate, counting what
                        // the other lane and the timers took meanwhile, is a new INVITE's wait.
                        let started = std::time::Instant::now();
                        let backlog = !inbox.new.is_empty();
                        self.incoming(m, Lane::New, started, backlog);
                        self.carry_out();
                        self.meter.served(started, std::time::Instant::now(), backlog);
                    }
                    None => return,
                },
            }
            self.carry_out();
            self.metrics.sip_active_dialogs.set(self.ua.call_count() as i64);
        }
    }

    /// Takes one of [`Lane::Dialogs`].
    fn take_dialog_message(&mut self, incoming: Incoming) {
        self.incoming(incoming, Lane::Dialogs, std::time::Instant::now(), false);
        self.meter.handled_in_dialogs();
    }

    /// Takes what the transports handed over, from `lane` at `taken`; `backlog`: others wait
    /// behind it there.
    fn incoming(&mut self, incoming: Incoming, lane: Lane, taken: std::time::Instant, backlog: bool) {
        match incoming {
            Incoming::Message { message, from, received } => {
                let waited = taken.saturating_duration_since(received);
                self.metrics.sip_queue_seconds.observe(waited.as_secs_f64());
                match lane {
                    Lane::Dialogs => self.txs.handle_message(now(), message, from),
                    Lane::New => {
                        self.meter.taken(waited, taken);
                        // Late behind a queue is overload; late with nothing behind is a thread
                        // descheduled for a while (a busy test machine), and answering costs
                        // nothing more than refusing.
                        if waited > LATE && backlog {
                            if self.txs.handle_late_message(now(), message, from) {
                                self.metrics.sip_transport.shed_late.inc();
                            }
                        } else {
                            self.txs.handle_message(now(), message, from);
                        }
                    }
                }
            }
            Incoming::Opened { conn, addr, transport, writer } => self.outbound.opened(conn, addr, transport, writer),
            Incoming::Closed { conn } => self.outbound.closed(conn),
        }
    }

    fn handle(&mut self, input: Input) {
        let now = now();
        match input {
            Input::Event(e) => {
                if matches!(e, Event::DrainOver) {
                    tracing::info!(calls = self.ua.call_count(), "ending live calls");
                }
                self.ua.handle_event(now, e);
            }
            Input::MediaEnded { call, summary } => match self.stopping.get_mut(&call) {
                // (Boxed in the queue: a summary is large next to the other inputs.)
                Some(Stopping { ended: Some(_), .. }) => {
                    if let Some(ended) = self.stopping.remove(&call).and_then(|s| s.ended) {
                        self.report_end(ended, summary.as_deref());
                    }
                }
                Some(stopping) => stopping.summary = Some(summary.map(|s| *s)),
                None => {}
            },
            Input::Reload { trusted_peers } => self.ua.set_trusted_peers(trusted_peers),
        }
    }

    fn notice(&mut self, notice: LegNotice) {
        match notice {
            LegNotice::Inactive { call } => self.ua.handle_event(Instant::now(), Event::MediaInactive { call }),
            LegNotice::Failed { call } => self.ua.handle_event(Instant::now(), Event::MediaFailed { call }),
            LegNotice::Dtmf { call, digit, duration } => {
                let Some(leg) = self.media.get(&call) else { return };
                let participant = leg.participant.clone();
                tracing::info!(participant = %participant, tone = %digit, "DTMF by RFC 4733");
                let event = CallbackEvent::Dtmf(DtmfEvent {
                    timestamp: timestamp(SystemTime::now()),
                    participant_id: participant.as_str().into(),
                    tone: digit.to_string(),
                    duration_ms: duration.as_millis() as u64,
                });
                self.callback(&participant, &event);
            }
        }
    }

    /// Runs both cores' outputs until neither has any: the user agent's answers become
    /// transaction inputs and the transactions' requests become user agent inputs.
    fn carry_out(&mut self) {
        loop {
            let mut busy = false;
            while let Some(output) = self.txs.poll_output() {
                busy = true;
                self.transaction_output(output);
            }
            while let Some(output) = self.ua.poll_output() {
                busy = true;
                self.ua_output(output);
            }
            if !busy {
                return;
            }
        }
    }

    fn transaction_output(&mut self, output: TxOutput) {
        let now = now();
        match output {
            TxOutput::Transmit { to, bytes } => self.transmit(&to, bytes),
            TxOutput::Request { tx, request, from } => {
                let inbound = Inbound { tx, source: from.addr, transport: from.transport, request };
                self.ua.handle_request(now, inbound);
            }
            TxOutput::Ack { request, from } => {
                // The ACK of a 2xx: the dialog layer matches it (no transaction of ours).
                let inbound = Inbound { tx: 0, source: from.addr, transport: from.transport, request };
                self.ua.handle_request(now, inbound);
            }
            TxOutput::Cancelled { tx } => self.ua.handle_event(now, Event::Cancel { tx }),
            TxOutput::Response { client, response } => {
                if response.status >= 200
                    && let Some(call) = self.clients.remove(&client)
                {
                    self.ua.handle_event(now, Event::Sent { call, status: Some(response.status) });
                }
            }
            TxOutput::Timeout { client } => {
                if let Some(call) = self.clients.remove(&client) {
                    self.ua.handle_event(now, Event::Sent { call, status: None });
                }
            }
            TxOutput::Shed { .. } => {
                self.metrics.sip_transport.shed.inc();
            }
        }
    }

    fn ua_output(&mut self, output: Output) {
        match output {
            Output::Respond { tx, response } => self.txs.respond(now(), tx, &response),
            Output::Send { call, request, destination, transport } => self.send(call, request, destination, transport),
            // Answered at once here; the user agent would wait for the answer as long as it took.
            Output::Admit { call, token } => {
                let result = self.env.admit(&token);
                self.ua.handle_event(now(), Event::Admission { call, result });
            }
            Output::ReservePort { call } => {
                let port = self.env.allocate_rtp(call);
                self.ua.handle_event(now(), Event::PortReserved { call, port });
            }
            Output::Media(command) => self.media(command),
            Output::Rooms(command) => self.rooms_command(command),
            Output::Call(event) => self.call_event(event),
        }
    }

    /// Puts bytes on the wire: UDP at once (a full socket buffer loses the datagram, as the
    /// network may, and retransmission covers it), streams through their connection's queue,
    /// opening a TCP connection when there is none.
    fn transmit(&mut self, to: &Peer, bytes: Vec<u8>) {
        match to.transport {
            Transport::Udp => {
                if let Err(e) = self.udp.try_send_to(&bytes, to.addr) {
                    tracing::debug!(addr = %to.addr, error = %e, "SIP datagram not sent");
                }
            }
            Transport::Tcp | Transport::Tls => {
                if let Err(bytes) = self.outbound.send(to, bytes) {
                    if to.transport == Transport::Tcp {
                        self.connector.connect(to.addr, bytes);
                    } else {
                        tracing::warn!(addr = %to.addr, "no TLS connection to the SIP peer: message not sent");
                    }
                }
            }
        }
    }

    /// Sends a request of the user agent's as a client transaction, with our Via on top.
    fn send(&mut self, call: CallNo, mut request: Request, destination: SocketAddr, transport: Transport) {
        let host = match transport {
            Transport::Tls => self.tls_via_host.unwrap_or(self.via_host),
            _ => self.via_host,
        };
        let branch = format!("{}{}", super::ua::OUR_BRANCH_PREFIX, crate::ids::random_id(16));
        let mut headers = super::message::Headers::default();
        headers.push("Via", format!("SIP/2.0/{} {host};branch={branch};rport", transport.via_name()));
        for (n, v) in request.headers.iter() {
            headers.push(n, v);
        }
        request.headers = headers;
        let to = Peer { addr: destination, transport, conn: None };
        match self.txs.send_request(now(), request, to) {
            Ok(client) => {
                self.clients.insert(client, call);
            }
            Err(e) => {
                tracing::warn!(call, %destination, error = %e, "in-dialog request not sent");
                self.ua.handle_event(now(), Event::Sent { call, status: None });
            }
        }
    }

    fn media(&mut self, command: MediaCommand) {
        match command {
            MediaCommand::Start { call, participant, session, mode, local_port, negotiated } => {
                let Some(ports) = self.env.ports.take(call) else {
                    tracing::error!(call, local_port, "media start without a reserved port");
                    return;
                };
                let setup = LegSetup {
                    call,
                    participant: participant.clone(),
                    session: session.clone(),
                    negotiated,
                    ports,
                    rtp_timeout: self.rtp_timeout,
                    latching: self.latching,
                    keep_stream: mode == crate::interconnect::InterconnectMode::Bridge,
                    counters: self.metrics.media.clone(),
                };
                if let Err(e) = self.workers.start(setup) {
                    // The workers' notice ends the call (`Event::MediaFailed`).
                    tracing::error!(call, error = %e, "the media leg could not start");
                    return;
                }
                self.media.insert(call, MediaLeg { guard: self.drain.call(), participant, session });
                self.metrics.media_active_legs.set(self.media.len() as i64);
            }
            MediaCommand::Update { call, negotiated } => {
                if self.media.contains_key(&call)
                    && let Err(e) = self.workers.update(call, negotiated)
                {
                    tracing::warn!(call, error = %e, "media update lost");
                }
            }
            MediaCommand::Stop { call } => {
                self.env.ports.release(call);
                let removed = self.media.remove(&call);
                self.metrics.media_active_legs.set(self.media.len() as i64);
                if let Some(MediaLeg { guard, .. }) = removed {
                    // The leg's counters come back for the call record, then the drain guard goes.
                    let summary = self.workers.stop(call);
                    self.stopping.insert(call, Stopping::default());
                    let inputs = self.inputs.clone();
                    tokio::spawn(async move {
                        let summary = tokio::time::timeout(LEG_STOP_GRACE, summary).await.ok().and_then(Result::ok);
                        drop(guard);
                        let _ = inputs.send(Input::MediaEnded { call, summary: summary.map(Box::new) }).await;
                    });
                }
            }
        }
    }

    /// A change the call logic asks of the rooms, run beside the driver: its commit syncs to
    /// disk, and SIP does not wait for that.
    fn rooms_command(&mut self, command: RoomsCommand) {
        let rooms = self.rooms.clone();
        tokio::spawn(async move {
            let result = match &command {
                RoomsCommand::RemoveFromSession { account, session, participant } => {
                    rooms.remove_from_session(account, session, participant).await
                }
                RoomsCommand::MarkConference { session } => rooms.mark_conference(session).await,
            };
            if let Err(e) = result {
                // The participant may have left in the meantime; nothing to undo.
                tracing::debug!(error = %e, ?command, "rooms command not applied");
            }
        });
    }

    fn call_event(&mut self, event: CallEvent) {
        match event {
            CallEvent::InviteAnswered { call_id, status, mode, setup, reason } => {
                let mode = mode.map_or("unknown", mode_name);
                self.metrics.sip_invites.get_or_create(&InviteLabels { status, mode }).inc();
                if status == 200 {
                    self.metrics.sip_setup_seconds.observe(setup.as_secs_f64());
                }
                tracing::info!(call_id = %call_id, status, mode, reason = reason.as_deref().unwrap_or(""), "INVITE answered");
            }
            CallEvent::Connected(leg) => {
                tracing::info!(
                    call_id = %leg.call_id, participant = %leg.participant, session = %leg.session,
                    mode = mode_name(leg.mode), "SIP leg connected"
                );
                let event = CallbackEvent::SipLegConnected(SipLegConnectedEvent {
                    timestamp: timestamp(SystemTime::now()),
                    account_id: leg.account.as_str().into(),
                    session_id: leg.session.as_str().into(),
                    participant_id: leg.participant.as_str().into(),
                    call_id: leg.call_id.to_string(),
                    mode: leg.mode.into(),
                });
                self.callback(&leg.participant, &event);
            }
            CallEvent::Ended { ref leg, .. } => match self.stopping.get_mut(&leg.call) {
                // Its media stopped already: report with the leg's counters.
                Some(Stopping { summary: Some(_), .. }) => {
                    let call = leg.call;
                    let summary = self.stopping.remove(&call).and_then(|s| s.summary).flatten();
                    self.report_end(event, summary.as_ref());
                }
                // Its media is stopping: report when the leg's counters are back.
                Some(stopping) => stopping.ended = Some(event),
                None => self.report_end(event, None),
            },
            CallEvent::Dtmf { call, participant, tone, duration_ms } => {
                tracing::info!(participant = %participant, tone = %tone, "DTMF by SIP INFO");
                // Browsers hear it too (SDK onDtmf), as they do RFC 4733 digits.
                if let Some(leg) = self.media.get(&call) {
                    self.forwarder.dtmf(leg.session.clone(), participant.clone(), tone);
                }
                let event = CallbackEvent::Dtmf(DtmfEvent {
                    timestamp: timestamp(SystemTime::now()),
                    participant_id: participant.as_str().into(),
                    tone: tone.to_string(),
                    duration_ms: u64::from(duration_ms),
                });
                self.callback(&participant, &event);
            }
        }
    }

    /// The call record: the "SIP leg ended" line and the `sipLegEnded` callback, with the
    /// media leg's counters when it ran.
    fn report_end(&self, event: CallEvent, summary: Option<&LegSummary>) {
        let CallEvent::Ended { leg, duration, reason } = event else {
            return;
        };
        let stats = summary.map(|s| s.stats);
        let codec = summary.map_or("", |s| s.codec);
        let packets_received = stats.map_or(0, |s| s.packets_received);
        let packets_sent = stats.map_or(0, |s| s.packets_sent);
        let packets_lost = stats.map_or(0, |s| s.packets_lost);
        let jitter_ms = stats.map_or(0.0, |s| s.jitter.as_secs_f64() * 1000.0);
        let concealed = stats.map_or(0, |s| s.jitter_buffer.concealed);
        let auth_failures = stats.map_or(0, |s| s.auth_failures);
        let to_webrtc_ms = summary.map_or(0, |s| s.latency_to_webrtc.as_millis() as u64);
        let to_sip_ms = summary.map_or(0, |s| s.latency_to_sip.as_millis() as u64);
        if let Some(s) = summary {
            self.metrics.media_leg_jitter_seconds.observe(s.stats.jitter.as_secs_f64());
        }
        tracing::info!(
            call_id = %leg.call_id, participant = %leg.participant, session = %leg.session, mode = mode_name(leg.mode),
            duration_ms = duration.as_millis() as u64, reason = %reason, codec,
            packets_received, packets_sent, packets_lost, jitter_ms, concealed_frames = concealed,
            auth_failures, latency_to_webrtc_ms = to_webrtc_ms, latency_to_sip_ms = to_sip_ms,
            "SIP leg ended"
        );
        let event = CallbackEvent::SipLegEnded(SipLegEndedEvent {
            timestamp: timestamp(SystemTime::now()),
            account_id: leg.account.as_str().into(),
            session_id: leg.session.as_str().into(),
            participant_id: leg.participant.as_str().into(),
            call_id: leg.call_id.to_string(),
            mode: leg.mode.into(),
            duration_ms: duration.as_millis() as u64,
            reason,
            media: summary.map(|_| LegMedia {
                codec: codec.to_string(),
                packets_received,
                packets_sent,
                packets_lost,
                jitter_ms,
                concealed_frames: concealed,
                auth_failures,
                latency_to_webrtc_ms: to_webrtc_ms,
                latency_to_sip_ms: to_sip_ms,
            }),
        });
        self.callback(&leg.participant, &event);
    }

    fn callback(&self, participant: &crate::ids::ParticipantId, event: &CallbackEvent) {
        let url = self.rooms.read(|r| r.participant_by_id(participant).and_then(|p| p.callback_url.clone()));
        if let Some(url) = url {
            self.callbacks.send(&url, event);
        }
    }
}

fn mode_name(mode: crate::interconnect::InterconnectMode) -> &'static str {
    match mode {
        crate::interconnect::InterconnectMode::Transfer => "transfer",
        crate::interconnect::InterconnectMode::Bridge => "bridge",
        crate::interconnect::InterconnectMode::Conference => "conference",
    }
}

/// The address to announce when listening on a wildcard: loopback stays loopback, otherwise
/// the operator sets `media.public_ip`.
fn advertised_ip(ip: IpAddr) -> IpAddr {
    if ip.is_unspecified() {
        // A wildcard listener cannot announce itself; 127.0.0.1 is right for local tests and
        // `media.public_ip` is the knob for everything else.
        IpAddr::from([127, 0, 0, 1])
    } else {
        ip
    }
}

/// RTP/RTCP port pairs from the configured range, reserved for calls until their legs start.
struct PortPool {
    range: PortRange,
    reserved: HashMap<CallNo, RtpPair>,
}

impl PortPool {
    fn new(ip: IpAddr, min: u16, max: u16) -> Self {
        Self { range: PortRange::new(ip, min, max), reserved: HashMap::new() }
    }

    /// Binds a free pair for `call`; `None` when the whole range is taken.
    fn reserve(&mut self, call: CallNo) -> Option<u16> {
        let (port, pair) = self.range.reserve()?;
        self.reserved.insert(call, pair);
        Some(port)
    }

    fn take(&mut self, call: CallNo) -> Option<RtpPair> {
        self.reserved.remove(&call)
    }

    fn release(&mut self, call: CallNo) {
        self.reserved.remove(&call);
    }
}
