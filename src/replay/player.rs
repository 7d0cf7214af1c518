//! The thin tokio layer of the replay: per call one SIP socket (UDP, or a TCP connection), one
//! RTP socket and one task that sends the script's steps on time, retransmits over UDP
//! (RFC 3261 §17.1: T1 doubling), ACKs final answers, answers the gateway's requests with 200,
//! and feeds the media task with the gateway's address and keys. Every wait has a deadline.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use super::audio::{ReceiveFormat, ReceivedAudio, decode};
use super::capture::{Transport, message_len};
use super::expect::RequestOutcome;
use super::rewrite::CallRewriter;
use super::script::{Call, ClientRequest, MediaPacket, WaitFor, media_addr, sdes_key};
use crate::media::srtp::SrtpSession;
use crate::sip::message::{self, Message, Method, Request, Response};
use crate::sip::sdp::{SrtpKeys, SrtpSuite};

/// How the player runs.
#[derive(Clone, Debug)]
pub struct PlayOptions {
    /// The gateway's SIP address.
    pub target: SocketAddr,
    /// 1.0 = the capture's timing; 2.0 = twice as fast.
    pub speed: f64,
    /// How long a request may wait for its final answer.
    pub timeout: Duration,
    /// `X-Interconnect-Mode` for every INVITE, when set.
    pub mode: Option<String>,
}

/// What happened to one call.
#[derive(Debug)]
pub struct CallResult {
    /// Each client request, in order.
    pub requests: Vec<RequestOutcome>,
    /// What the gateway sent us, decoded (when media was negotiated).
    pub audio: Option<ReceivedAudio>,
    /// Things worth telling (the gateway hung up, we sent a BYE to end the call).
    pub notes: Vec<String>,
}

/// Plays one call from `start` (the capture's first SIP message).
pub async fn play_call(
    call: Arc<Call>,
    tokens: HashMap<String, String>,
    opts: PlayOptions,
    start: Instant,
) -> CallResult {
    let mut requests: Vec<RequestOutcome> = call
        .steps
        .iter()
        .map(|s| RequestOutcome {
            method: s.request.method().to_string(),
            cseq: s.request.cseq(),
            response: None,
            note: None,
        })
        .collect();
    let link = match Link::open(call.transport, opts.target, opts.timeout).await {
        Ok(l) => l,
        Err(e) => {
            for r in &mut requests {
                r.note = Some(format!("cannot reach {} over {}: {e}", opts.target, call.transport.via_name()));
            }
            return CallResult { requests, audio: None, notes: Vec::new() };
        }
    };
    let rtp = match UdpSocket::bind(SocketAddr::new(link.local.ip(), 0)).await {
        Ok(s) => s,
        Err(e) => {
            for r in &mut requests {
                r.note = Some(format!("cannot bind an RTP socket: {e}"));
            }
            return CallResult { requests, audio: None, notes: Vec::new() };
        }
    };
    let local_rtp = rtp.local_addr().unwrap_or(SocketAddr::new(link.local.ip(), 0));
    let mut rw = CallRewriter::new(link.local, call.transport, opts.target, local_rtp);
    rw.tokens = tokens;
    let (media_tx, media_rx) = mpsc::channel(16);
    let (media_done_tx, media_done_rx) = oneshot::channel();
    let media = tokio::spawn(run_media(
        rtp,
        call.media.clone(),
        call.captured_key.clone(),
        opts.speed,
        start,
        media_rx,
        media_done_tx,
    ));
    let mut player = CallPlayer {
        call: &call,
        opts: &opts,
        start,
        link,
        rw,
        requests,
        txns: Vec::new(),
        acks: HashMap::new(),
        media: media_tx,
        media_done: Some(media_done_rx),
        dialog: DialogState::Early,
        notes: Vec::new(),
        lag: Duration::ZERO,
        offered_by_gateway: false,
        finals: HashMap::new(),
        gateway_sdp: None,
    };
    player.run().await;
    let _ = player.media.send(MediaCmd::Stop).await;
    let received = match tokio::time::timeout(Duration::from_secs(5), media).await {
        Ok(Ok(r)) => r,
        _ => None,
    };
    CallResult { requests: player.requests, audio: received, notes: player.notes }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DialogState {
    Early,
    Confirmed,
    EndedByGateway,
    Ended,
}

struct Txn {
    step: usize,
    method: String,
    cseq: Option<u32>,
    sent: Option<Request>,
    bytes: Vec<u8>,
    provisional: bool,
    done: bool,
    next_retx: Option<Instant>,
    interval: Duration,
    deadline: Instant,
}

struct CallPlayer<'a> {
    call: &'a Call,
    opts: &'a PlayOptions,
    start: Instant,
    link: Link,
    rw: CallRewriter,
    requests: Vec<RequestOutcome>,
    txns: Vec<Txn>,
    /// ACKs sent, by INVITE CSeq, for retransmitted final answers.
    acks: HashMap<u32, Vec<u8>>,
    media: mpsc::Sender<MediaCmd>,
    media_done: Option<oneshot::Receiver<()>>,
    dialog: DialogState,
    notes: Vec<String>,
    lag: Duration,
    offered_by_gateway: bool,
    /// Final answers to our INVITEs, by CSeq.
    finals: HashMap<u32, Response>,
    /// The gateway's latest SDP (answer or offer).
    gateway_sdp: Option<Vec<u8>>,
}

impl CallPlayer<'_> {
    async fn run(&mut self) {
        let mut next = 0;
        loop {
            let now = Instant::now();
            // 1. The next step: on time, after what it waits for.
            let mut wake = now + Duration::from_secs(3600);
            if next < self.call.steps.len() {
                let step = &self.call.steps[next];
                let due = self.start + step.at.div_f64(self.opts.speed) + self.lag;
                match self.waits_state(next) {
                    Waits::Met if now >= due => {
                        self.send_step(next).await;
                        next += 1;
                        continue;
                    }
                    Waits::Met => wake = wake.min(due),
                    Waits::Failed(why) => {
                        self.requests[next].note = Some(format!("not sent: {why}"));
                        next += 1;
                        continue;
                    }
                    Waits::Pending => {
                        // The gateway is slower than the capture: the rest of the call shifts.
                        if now > due {
                            self.lag += now - due;
                        }
                    }
                }
            } else if self.txns.iter().all(|t| t.done) {
                break;
            }
            // 2. Retransmissions and deadlines.
            let mut expired = false;
            for i in 0..self.txns.len() {
                if self.txns[i].done {
                    continue;
                }
                if now >= self.txns[i].deadline {
                    self.txns[i].done = true;
                    let step = self.txns[i].step;
                    let secs = self.opts.timeout.as_secs_f64();
                    self.requests[step].note = Some(format!("no final answer within {secs:.1} s"));
                    expired = true;
                    continue;
                }
                wake = wake.min(self.txns[i].deadline);
                if let Some(at) = self.txns[i].next_retx {
                    if now >= at {
                        let _ = self.link.send(&self.txns[i].bytes, self.opts.target).await;
                        let t = &mut self.txns[i];
                        t.interval = (t.interval * 2).min(T2);
                        t.next_retx = Some(now + t.interval);
                    }
                    wake = wake.min(self.txns[i].next_retx.unwrap_or(wake));
                }
            }
            if expired {
                // Steps waiting for it may now go (or be given up).
                continue;
            }
            // 3. Whatever comes first.
            tokio::select! {
                incoming = self.link.rx.recv() => match incoming {
                    Some((bytes, from)) => self.handle_incoming(&bytes, from).await,
                    None => {
                        self.notes.push("the gateway closed the connection".into());
                        for t in &mut self.txns {
                            t.done = true;
                        }
                        if next >= self.call.steps.len() {
                            break;
                        }
                    }
                },
                _ = sleep_until(wake) => {}
            }
        }
        self.finish().await;
    }

    /// After the last step: let the captured media finish, then end a dialog left open.
    async fn finish(&mut self) {
        if let Some(done) = self.media_done.take() {
            let limit = self.media_end().saturating_duration_since(Instant::now()) + Duration::from_secs(1);
            // While waiting, keep answering the gateway.
            let deadline = Instant::now() + limit;
            tokio::pin!(done);
            loop {
                tokio::select! {
                    _ = &mut done => break,
                    incoming = self.link.rx.recv() => match incoming {
                        Some((bytes, from)) => self.handle_incoming(&bytes, from).await,
                        None => break,
                    },
                    _ = sleep_until(deadline) => break,
                }
            }
        }
        if self.dialog == DialogState::Confirmed {
            self.notes.push("the capture left the call up: the replay sent BYE".into());
            let _ = self.media.send(MediaCmd::Stop).await;
            self.bye().await;
        }
    }

    fn media_end(&self) -> Instant {
        let last = self.call.media.last().map_or(Duration::ZERO, |p| p.at);
        self.start + last.div_f64(self.opts.speed) + self.lag
    }

    fn waits_state(&self, step: usize) -> Waits {
        for w in &self.call.steps[step].waits {
            let Some(t) = self.txns.iter().find(|t| t.step == w.step) else {
                // The step waited for was not sent.
                return Waits::Failed(format!("{} was not sent", self.call.steps[w.step].request.method()));
            };
            let answered = match w.kind {
                WaitFor::AnyResponse => t.provisional || self.requests[w.step].response.is_some(),
                WaitFor::Final => self.requests[w.step].response.is_some(),
            };
            if answered {
                continue;
            }
            if t.done {
                return Waits::Failed(format!("no answer to {}", t.method));
            }
            return Waits::Pending;
        }
        let in_dialog = match &self.call.steps[step].request {
            ClientRequest::Parsed(r) => r.to_tag().is_some() && r.method != Method::Cancel,
            ClientRequest::Raw { .. } => false,
        };
        if in_dialog && self.dialog == DialogState::EndedByGateway {
            return Waits::Failed("the gateway had ended the dialog".into());
        }
        Waits::Met
    }

    async fn send_step(&mut self, index: usize) {
        let step = &self.call.steps[index];
        let (bytes, sent) = match &step.request {
            ClientRequest::Parsed(captured) if captured.method == Method::Ack => {
                self.send_ack_step(index, captured).await;
                return;
            }
            ClientRequest::Parsed(captured) => {
                let mut req = self.rw.request(captured);
                if req.method == Method::Invite
                    && let Some(mode) = &self.opts.mode
                {
                    req.headers.set("X-Interconnect-Mode", mode.clone());
                }
                if req.method == Method::Bye {
                    let _ = self.media.send(MediaCmd::Stop).await;
                    self.dialog = DialogState::Ended;
                }
                (req.to_bytes(), Some(req))
            }
            ClientRequest::Raw { bytes, .. } => (self.rw.raw(bytes), None),
        };
        let now = Instant::now();
        if let Err(e) = self.link.send(&bytes, self.opts.target).await {
            self.requests[index].note = Some(format!("send failed: {e}"));
            return;
        }
        let udp = self.call.transport == Transport::Udp;
        self.txns.push(Txn {
            step: index,
            method: step.request.method().to_string(),
            cseq: step.request.cseq(),
            sent,
            bytes,
            provisional: false,
            done: false,
            next_retx: udp.then_some(now + T1),
            interval: T1,
            deadline: now + self.opts.timeout,
        });
    }

    /// The captured ACK: for the INVITE's final answer as the replay got it.
    async fn send_ack_step(&mut self, index: usize, captured: &Request) {
        let cseq = captured.cseq();
        if self.acks.contains_key(&cseq) {
            self.requests[index].note = Some("sent when the final answer came".into());
            return;
        }
        let Some((invite, response)) = self.final_of_invite(cseq) else {
            self.requests[index].note = Some("not sent: the INVITE had no final answer".into());
            return;
        };
        let ack = self.rw.ack(&invite, &response, Some(captured));
        self.send_ack(cseq, &ack).await;
        if !ack.body.is_empty() {
            // A late offer: our answer went in this ACK.
            self.negotiated().await;
        }
    }

    fn final_of_invite(&self, cseq: u32) -> Option<(Request, Response)> {
        let t = self.txns.iter().find(|t| t.method == "INVITE" && t.cseq == Some(cseq))?;
        Some((t.sent.clone()?, self.finals.get(&cseq)?.clone()))
    }

    async fn send_ack(&mut self, cseq: u32, ack: &Request) {
        let bytes = ack.to_bytes();
        let _ = self.link.send(&bytes, self.opts.target).await;
        self.acks.insert(cseq, bytes);
    }

    async fn handle_incoming(&mut self, bytes: &[u8], from: SocketAddr) {
        match message::parse(bytes) {
            Ok(Message::Response(r)) => self.handle_response(r).await,
            Ok(Message::Request(r)) => self.handle_request(r, from).await,
            Err(_) => {
                // A response our parser refuses is still an answer: read its status and CSeq.
                if let Some(r) = loose_response(bytes) {
                    self.handle_response(r).await;
                }
            }
        }
    }

    async fn handle_response(&mut self, r: Response) {
        if r.headers.get("Call-ID").is_some_and(|c| c != self.rw.call_id) {
            return;
        }
        let (cseq, method) = super::script::cseq_of(&r.headers);
        let Some(i) = self
            .txns
            .iter()
            .rposition(|t| t.method.eq_ignore_ascii_case(&method) && (t.cseq.is_none() || t.cseq == cseq))
            .or_else(|| self.txns.iter().rposition(|t| t.cseq.is_none() && t.sent.is_none()))
        else {
            return;
        };
        let step = self.txns[i].step;
        let is_invite = self.txns[i].method == "INVITE";
        if r.status < 200 {
            self.txns[i].provisional = true;
            if is_invite {
                // RFC 3261 §17.1.1.2: a provisional answer stops INVITE retransmissions.
                self.txns[i].next_retx = None;
            }
            return;
        }
        let cseq = cseq.unwrap_or(0);
        if self.txns[i].done {
            // A retransmitted final answer: our ACK got lost.
            if is_invite && let Some(ack) = self.acks.get(&cseq).cloned() {
                let _ = self.link.send(&ack, self.opts.target).await;
            }
            return;
        }
        self.txns[i].done = true;
        self.txns[i].next_retx = None;
        self.requests[step].response =
            Some((r.status, r.reason.clone(), r.headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()));
        if !is_invite {
            return;
        }
        self.finals.insert(cseq, r.clone());
        self.rw.learn(&r);
        let success = (200..300).contains(&r.status);
        if success && self.dialog == DialogState::Early {
            self.dialog = DialogState::Confirmed;
        }
        if success && !r.body.is_empty() {
            self.gateway_sdp = Some(r.body.clone());
            // Without an offer of ours, the gateway offered (late offer): we answer in the ACK.
            let sent_offer = self.txns[i].sent.as_ref().is_some_and(|s| !s.body.is_empty());
            self.offered_by_gateway = !sent_offer;
            if sent_offer {
                self.negotiated().await;
            }
        }
        let captured_ack =
            self.call.steps.iter().any(|s| {
                s.request.method() == "ACK" && s.request.cseq() == Some(cseq) && s.at >= self.call.steps[step].at
            });
        if !success || !captured_ack {
            let Some(invite) = self.txns[i].sent.clone() else { return };
            let ack = self.rw.ack(&invite, &r, None);
            self.send_ack(cseq, &ack).await;
        }
    }

    /// Both SDPs known: tell the media task where to send, with which keys, what to decode.
    async fn negotiated(&mut self) {
        let (Some(theirs), Some(ours)) = (self.gateway_sdp.clone(), self.rw.last_sdp.clone()) else { return };
        let remote = media_addr(&theirs);
        let their_key = sdes_key(&theirs);
        let tag = String::from_utf8_lossy(&theirs)
            .lines()
            .find_map(|l| l.strip_prefix("a=crypto:")?.split_whitespace().next()?.parse::<u32>().ok());
        let our_key = tag
            .and_then(|t| self.rw.offered_key(t))
            .or_else(|| self.rw.offered_keys.first().map(|(_, s, k)| (*s, k.clone())));
        let format = if self.offered_by_gateway {
            ReceiveFormat::from_sdp(ours.as_bytes())
        } else {
            ReceiveFormat::from_sdp(&theirs)
        };
        let _ = self.media.send(MediaCmd::Negotiated { remote, their_key, our_key, format, lag: self.lag }).await;
    }

    async fn handle_request(&mut self, r: Request, from: SocketAddr) {
        if r.method == Method::Ack {
            return;
        }
        if r.call_id() != self.rw.call_id {
            let response = Response::to(&r, 481, "Call/Transaction Does Not Exist", None);
            let _ = self.link.send(&response.to_bytes(), from).await;
            return;
        }
        let response = self.rw.answer(&r);
        let _ = self.link.send(&response.to_bytes(), from).await;
        match r.method {
            Method::Bye => {
                if self.dialog != DialogState::Ended {
                    self.notes.push("the gateway sent BYE".into());
                }
                self.dialog = DialogState::EndedByGateway;
                let _ = self.media.send(MediaCmd::Stop).await;
            }
            Method::Invite | Method::Update if !r.body.is_empty() => {
                self.gateway_sdp = Some(r.body.clone());
                self.negotiated().await;
            }
            _ => {}
        }
    }

    /// A BYE of our own, to end a call the capture left up.
    async fn bye(&mut self) {
        let (Some(target), Some(invite)) = (
            self.rw.remote_target.clone(),
            self.txns.iter().find(|t| t.method == "INVITE").and_then(|t| t.sent.clone()),
        ) else {
            return;
        };
        let mut headers = message::Headers::default();
        headers.push(
            "Via",
            format!(
                "SIP/2.0/{} {};branch=z9hG4bK{};rport",
                self.call.transport.via_name(),
                self.link.local,
                crate::ids::random_id(12)
            ),
        );
        for name in ["From", "Call-ID"] {
            headers.push(name, invite.headers.get(name).unwrap_or_default());
        }
        let to = invite.headers.get("To").unwrap_or_default();
        let to = match &self.rw.remote_tag {
            Some(tag) if message::header_param(to, "tag").is_none() => format!("{to};tag={tag}"),
            _ => to.to_string(),
        };
        headers.push("To", to);
        let cseq = self.txns.iter().filter_map(|t| t.cseq).max().unwrap_or(1) + 1;
        headers.push("CSeq", format!("{cseq} BYE"));
        headers.push("Max-Forwards", "70");
        let bye = Request { method: Method::Bye, uri: target, headers, body: Vec::new() };
        let bytes = bye.to_bytes();
        // Best effort, bounded: resend on T1 until any answer.
        let deadline = Instant::now() + self.opts.timeout.min(Duration::from_secs(4));
        let mut interval = T1;
        while Instant::now() < deadline {
            let _ = self.link.send(&bytes, self.opts.target).await;
            let wait = sleep_until((Instant::now() + interval).min(deadline));
            tokio::pin!(wait);
            tokio::select! {
                incoming = self.link.rx.recv() => match incoming {
                    Some((b, _)) if matches!(message::parse(&b), Ok(Message::Response(ref r)) if r.headers.get("CSeq").is_some_and(|c| c.ends_with("BYE"))) => break,
                    Some((b, from)) => self.handle_incoming(&b, from).await,
                    None => break,
                },
                _ = &mut wait => interval = (interval * 2).min(T2),
            }
        }
        self.dialog = DialogState::Ended;
    }
}

enum Waits {
    Met,
    Pending,
    Failed(String),
}

/// Status, reason and headers of a response our parser refuses (for the expectations only).
fn loose_response(bytes: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(bytes);
    let first = text.lines().next()?;
    let rest = first.strip_prefix("SIP/2.0 ")?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    let mut headers = message::Headers::default();
    for line in text.split("\r\n\r\n").next()?.lines().skip(1) {
        if let Some((n, v)) = line.split_once(':') {
            headers.push(n.trim(), v.trim());
        }
    }
    Some(Response { status: code.parse().ok()?, reason: reason.to_string(), headers, body: Vec::new() })
}

/// The SIP transport of one call, with a task reading into `rx`.
struct Link {
    local: SocketAddr,
    rx: mpsc::Receiver<(Vec<u8>, SocketAddr)>,
    udp: Option<Arc<UdpSocket>>,
    tcp: Option<tokio::net::tcp::OwnedWriteHalf>,
}

impl Link {
    async fn open(transport: Transport, target: SocketAddr, limit: Duration) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(64);
        match transport {
            Transport::Udp => {
                let any = if target.is_ipv4() {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                } else {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                };
                // The address the kernel would send from toward the target: ours in Via/Contact.
                let probe = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
                probe.connect(target).await?;
                let ip = probe.local_addr()?.ip();
                let socket = Arc::new(UdpSocket::bind(SocketAddr::new(ip, 0)).await?);
                let local = socket.local_addr()?;
                let reader = socket.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_535];
                    while let Ok((n, from)) = reader.recv_from(&mut buf).await {
                        if tx.send((buf[..n].to_vec(), from)).await.is_err() {
                            break;
                        }
                    }
                });
                Ok(Self { local, rx, udp: Some(socket), tcp: None })
            }
            Transport::Tcp => {
                let stream = tokio::time::timeout(limit, TcpStream::connect(target))
                    .await
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
                let local = stream.local_addr()?;
                let (mut read, write) = stream.into_split();
                tokio::spawn(async move {
                    let mut buf: Vec<u8> = Vec::new();
                    let mut chunk = vec![0u8; 16 * 1024];
                    while let Ok(n) = read.read(&mut chunk).await {
                        if n == 0 || buf.len() > message::MAX_MESSAGE_LEN * 4 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        loop {
                            let skip = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
                            buf.drain(..skip);
                            let Some(len) = message_len(&buf) else { break };
                            let msg: Vec<u8> = buf.drain(..len).collect();
                            if tx.send((msg, target)).await.is_err() {
                                return;
                            }
                        }
                    }
                });
                Ok(Self { local, rx, udp: None, tcp: Some(write) })
            }
        }
    }

    async fn send(&mut self, bytes: &[u8], to: SocketAddr) -> std::io::Result<()> {
        if let Some(s) = &self.udp {
            s.send_to(bytes, to).await.map(|_| ())
        } else if let Some(w) = &mut self.tcp {
            w.write_all(bytes).await
        } else {
            Ok(())
        }
    }
}

/// Orders for the media task.
enum MediaCmd {
    /// Where to send and with which keys; what the gateway sends.
    Negotiated {
        remote: Option<SocketAddr>,
        their_key: Option<(SrtpSuite, Vec<u8>)>,
        our_key: Option<(SrtpSuite, Vec<u8>)>,
        format: Option<ReceiveFormat>,
        lag: Duration,
    },
    /// Stop sending and hand over what was received.
    Stop,
}

/// Sends the captured RTP (decrypted with the captured key, protected with ours) on the
/// capture's clock from the moment the gateway's address is known, and collects what the
/// gateway sends. Returns the decoded audio when a format was negotiated.
async fn run_media(
    socket: UdpSocket,
    packets: Vec<MediaPacket>,
    captured_key: Option<(SrtpSuite, Vec<u8>)>,
    speed: f64,
    start: Instant,
    mut cmds: mpsc::Receiver<MediaCmd>,
    done: oneshot::Sender<()>,
) -> Option<ReceivedAudio> {
    let mut done = Some(done);
    let mut remote: Option<SocketAddr> = None;
    let mut format: Option<ReceiveFormat> = None;
    let mut tx: Option<SrtpSession> = None;
    let mut rx: Option<SrtpSession> = None;
    let mut their_key_now: Option<(SrtpSuite, Vec<u8>)> = None;
    let mut lag = Duration::ZERO;
    let mut next = 0usize;
    let mut received: Vec<Vec<u8>> = Vec::new();
    let mut bad_rx = 0usize;
    let mut buf = vec![0u8; 2048];
    let mut plain = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    loop {
        if next >= packets.len()
            && let Some(d) = done.take()
        {
            let _ = d.send(());
        }
        let due = packets.get(next).filter(|_| remote.is_some()).map(|p| start + p.at.div_f64(speed) + lag);
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                Some(MediaCmd::Negotiated { remote: r, their_key, our_key, format: f, lag: l }) => {
                    if remote.is_none() {
                        // The first packets are due now at the latest: a slow answer shifts them.
                        let first_due = packets.get(next).map(|p| start + p.at.div_f64(speed) + l);
                        lag = l + first_due.map_or(Duration::ZERO, |d| Instant::now().saturating_duration_since(d));
                    }
                    if r.is_some() {
                        remote = r;
                    }
                    if f.is_some() {
                        format = f;
                    }
                    if let (Some((suite, ours)), Some((_, captured))) = (&our_key, &captured_key)
                        && tx.is_none()
                    {
                        tx = SrtpSession::new(&SrtpKeys { suite: *suite, tag: 1, remote_key: captured.clone(), local_key: ours.clone() }).ok();
                    }
                    if their_key != their_key_now
                        && let Some((suite, theirs)) = &their_key
                    {
                        let local_key = our_key.as_ref().map_or_else(|| theirs.clone(), |(_, k)| k.clone());
                        rx = SrtpSession::new(&SrtpKeys { suite: *suite, tag: 1, remote_key: theirs.clone(), local_key }).ok();
                        their_key_now = their_key.clone();
                    }
                }
                // The call is over: what is still in flight is not waited for.
                Some(MediaCmd::Stop) | None => break,
            },
            got = socket.recv_from(&mut buf) => {
                let Ok((n, _)) = got else { continue };
                if n < 12 || (200..=206).contains(&buf[1]) {
                    continue;
                }
                match rx.as_mut() {
                    Some(s) => match s.unprotect_rtp(&buf[..n], &mut plain) {
                        Ok(len) => received.push(plain[..len].to_vec()),
                        Err(_) => bad_rx += 1,
                    },
                    None => received.push(buf[..n].to_vec()),
                }
            },
            _ = sleep_until(due.unwrap_or(Instant::now() + Duration::from_secs(3600))), if due.is_some() => {
                let data = &packets[next].data;
                next += 1;
                let Some(to) = remote else { continue };
                let len = match (&captured_key, tx.as_mut()) {
                    // Captured SRTP: opened with the captured key, closed with ours (one session
                    // holds both: remote = captured, local = ours).
                    (Some(_), Some(session)) => match session.unprotect_rtp(data, &mut plain) {
                        Ok(n) => {
                            out[..n].copy_from_slice(&plain[..n]);
                            match session.protect_rtp(&mut out, n) {
                                Ok(m) => m,
                                Err(_) => continue,
                            }
                        }
                        Err(_) => continue,
                    },
                    _ => {
                        let n = data.len().min(out.len());
                        out[..n].copy_from_slice(&data[..n]);
                        n
                    }
                };
                let _ = socket.send_to(&out[..len], to).await;
            }
        }
    }
    let format = format?;
    let mut audio = decode(&format, &received);
    audio.bad += bad_rx;
    Some(audio)
}

/// RFC 3261 §17.1.1.1: the first retransmission interval.
const T1: Duration = Duration::from_millis(500);
/// RFC 3261 §17.1.2.2: the longest retransmission interval for non-INVITE requests.
const T2: Duration = Duration::from_secs(4);
