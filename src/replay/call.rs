//! The client side of one replayed call as a sans-IO state machine: which captured request goes
//! when, transactions and their retransmissions (RFC 3261 §17.1), ACKs, answers to the
//! gateway's own requests, and what the media side must know.
//!
//! No sockets and no clock: time is an argument. The driver (`player`) feeds it and drains it:
//!
//! 1. inputs: [`CallCore::handle_timeout`] when [`CallCore::poll_timeout`] passes,
//!    [`CallCore::handle_message`] for each SIP message received, [`CallCore::handle_media_done`]
//!    when the captured RTP has all been sent, [`CallCore::handle_closed`] when the transport
//!    closed;
//! 2. after each input, [`CallCore::poll_output`] until `None`, then arm a timer at
//!    [`CallCore::poll_timeout`]; `None` there means the call is over.
//!
//! Timing: each step is due at `start + captured offset / speed + lag`, and not before the
//! responses it waits for ([`super::script::Wait`]); when the gateway is slower than the
//! capture, `lag` grows so that the rest of the call keeps its captured spacing. Every wait is
//! bounded by the request timeout.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::audio::ReceiveFormat;
use super::capture::Transport;
use super::expect::RequestOutcome;
use super::rewrite::CallRewriter;
use super::script::{Call, ClientRequest, WaitFor, cseq_of, media_addr, sdes_key};
use crate::ids::random_id;
use crate::sip::message::{self, Message, Method, Request, Response};
use crate::sip::sdp::SrtpSuite;

/// What the driver must do.
#[derive(Debug)]
pub enum Output {
    /// Send bytes on the call's SIP transport: to the gateway, or (UDP) to `to`.
    Send {
        /// The message.
        bytes: Vec<u8>,
        /// Where, when not the gateway's address (an answer goes where the request came from).
        to: Option<SocketAddr>,
    },
    /// Where media goes now, with which keys, and what comes back.
    Media(MediaUpdate),
    /// The call is over for media: stop sending, hand over what was received.
    StopMedia,
}

/// The media side of an offer/answer exchange.
#[derive(Clone, Debug)]
pub struct MediaUpdate {
    /// Where the gateway receives RTP (`None` while it holds the call).
    pub remote: Option<SocketAddr>,
    /// The gateway's SDES key, for what it sends.
    pub their_key: Option<(SrtpSuite, Vec<u8>)>,
    /// The key we offered and it accepted, for what we send.
    pub our_key: Option<(SrtpSuite, Vec<u8>)>,
    /// What the gateway sends.
    pub format: Option<ReceiveFormat>,
    /// How late the call runs against the capture.
    pub lag: Duration,
}

/// How a call is played.
#[derive(Clone, Debug)]
pub struct CallConfig {
    /// 1.0 = as captured.
    pub speed: f64,
    /// How long a request may wait for its final answer.
    pub timeout: Duration,
    /// `X-Interconnect-Mode` for every INVITE, when set.
    pub mode: Option<String>,
}

/// One call's client side.
pub struct CallCore {
    call: Call,
    config: CallConfig,
    start: Instant,
    rw: CallRewriter,
    requests: Vec<RequestOutcome>,
    notes: Vec<String>,
    txns: Vec<Txn>,
    /// ACKs sent, by INVITE CSeq, for retransmitted final answers.
    acks: HashMap<u32, Vec<u8>>,
    /// Final answers to our INVITEs, by CSeq.
    finals: HashMap<u32, Response>,
    /// The gateway's latest SDP (answer or offer).
    gateway_sdp: Option<Vec<u8>>,
    offered_by_gateway: bool,
    dialog: Dialog,
    phase: Phase,
    next: usize,
    lag: Duration,
    media_done: bool,
    out: VecDeque<Output>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialog {
    Early,
    Confirmed,
    EndedByGateway,
    Ended,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Sending the captured requests.
    Steps,
    /// All sent and answered: letting the captured media finish, at most until the deadline.
    MediaTail(Instant),
    /// The capture left the call up: our BYE is out.
    Closing,
    /// Nothing more to do.
    Done,
}

/// One client transaction.
struct Txn {
    /// The script step it sends; `None` for our own BYE.
    step: Option<usize>,
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

enum Waits {
    Met,
    Pending,
    Failed(String),
}

impl CallCore {
    /// A call whose capture clock starts at `start`; `rw` knows our addresses and the tokens.
    pub fn new(call: Call, rw: CallRewriter, config: CallConfig, start: Instant) -> Self {
        let requests = call.unanswered(None);
        Self {
            call,
            config,
            start,
            rw,
            requests,
            notes: Vec::new(),
            txns: Vec::new(),
            acks: HashMap::new(),
            finals: HashMap::new(),
            gateway_sdp: None,
            offered_by_gateway: false,
            dialog: Dialog::Early,
            phase: Phase::Steps,
            next: 0,
            lag: Duration::ZERO,
            media_done: false,
            out: VecDeque::new(),
        }
    }

    /// Time passed: send what is due, retransmit, give up on what timed out.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.drive(now);
    }

    /// A SIP message from the gateway (`from`: its source address).
    pub fn handle_message(&mut self, now: Instant, bytes: &[u8], from: SocketAddr) {
        match message::parse(bytes) {
            Ok(Message::Response(r)) => self.handle_response(r),
            Ok(Message::Request(r)) => self.handle_request(r, from),
            // A response our parser refuses is still an answer: read its status and CSeq.
            Err(_) => {
                if let Some(r) = loose_response(bytes) {
                    self.handle_response(r);
                }
            }
        }
        self.drive(now);
    }

    /// The media side sent the last captured packet.
    pub fn handle_media_done(&mut self, now: Instant) {
        self.media_done = true;
        self.drive(now);
    }

    /// The transport closed (TCP): nothing more will be answered.
    pub fn handle_closed(&mut self, now: Instant) {
        if self.phase != Phase::Done {
            self.notes.push("the gateway closed the connection".into());
        }
        for t in &mut self.txns {
            t.done = true;
        }
        self.phase = Phase::Done;
        self.drive(now);
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Self::handle_timeout`] must be called next; `None` once the call is over.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Done {
            return None;
        }
        let mut at: Option<Instant> = None;
        let mut take = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        for t in self.txns.iter().filter(|t| !t.done) {
            take(t.deadline);
            if let Some(r) = t.next_retx {
                take(r);
            }
        }
        match self.phase {
            Phase::Steps if self.next < self.call.steps.len() => {
                if let Waits::Met = self.waits(self.next) {
                    take(self.due(self.next));
                }
            }
            Phase::MediaTail(deadline) => take(deadline),
            _ => {}
        }
        at
    }

    /// The call is over.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// What happened to each request, and the notes.
    pub fn into_outcome(self) -> (Vec<RequestOutcome>, Vec<String>) {
        (self.requests, self.notes)
    }

    /// Applies every consequence of `now` until nothing changes.
    fn drive(&mut self, now: Instant) {
        // Each pass either sends a step, gives one up, expires a transaction or moves the phase:
        // all finite, so the bound is only a guard against our own bugs.
        for _ in 0..(self.call.steps.len() + self.txns.len() + 16) * 4 {
            if !self.step_once(now) {
                return;
            }
        }
    }

    /// One change, if one is due; `false` when there is none.
    fn step_once(&mut self, now: Instant) -> bool {
        // 1. Transactions: deadlines and retransmissions.
        for i in 0..self.txns.len() {
            if self.txns[i].done {
                continue;
            }
            if now >= self.txns[i].deadline {
                self.txns[i].done = true;
                if let Some(step) = self.txns[i].step {
                    let secs = self.config.timeout.as_secs_f64();
                    self.requests[step].note = Some(format!("no final answer within {secs:.1} s"));
                }
                return true;
            }
            if self.txns[i].next_retx.is_some_and(|at| now >= at) {
                let t = &mut self.txns[i];
                t.interval = (t.interval * 2).min(T2);
                t.next_retx = Some(now + t.interval);
                let bytes = t.bytes.clone();
                self.out.push_back(Output::Send { bytes, to: None });
            }
        }
        // 2. The script.
        match self.phase {
            Phase::Steps if self.next < self.call.steps.len() => {
                let due = self.due(self.next);
                match self.waits(self.next) {
                    Waits::Met if now >= due => {
                        // Late (the gateway answered later than in the capture): the rest of the
                        // call shifts by as much, keeping its captured spacing.
                        self.lag += now - due;
                        self.send_step(now, self.next);
                        self.next += 1;
                        true
                    }
                    Waits::Met => false,
                    Waits::Failed(why) => {
                        self.requests[self.next].note = Some(format!("not sent: {why}"));
                        self.next += 1;
                        true
                    }
                    Waits::Pending => false,
                }
            }
            Phase::Steps if self.txns.iter().all(|t| t.done) => {
                let last = self.call.media.last().map_or(Duration::ZERO, |p| p.at);
                let tail = self.start + last.div_f64(self.config.speed) + self.lag + MEDIA_GRACE;
                self.phase = Phase::MediaTail(tail.max(now));
                true
            }
            Phase::MediaTail(deadline) if self.dialog != Dialog::Confirmed || self.media_done || now >= deadline => {
                if self.dialog == Dialog::Confirmed {
                    self.notes.push("the capture left the call up: the replay sent BYE".into());
                    self.out.push_back(Output::StopMedia);
                    self.send_bye(now);
                    self.phase = Phase::Closing;
                } else {
                    self.out.push_back(Output::StopMedia);
                    self.phase = Phase::Done;
                }
                true
            }
            Phase::Closing if self.txns.iter().all(|t| t.done) => {
                self.dialog = Dialog::Ended;
                self.phase = Phase::Done;
                true
            }
            _ => false,
        }
    }

    fn due(&self, step: usize) -> Instant {
        self.start + self.call.steps[step].at.div_f64(self.config.speed) + self.lag
    }

    fn waits(&self, step: usize) -> Waits {
        for w in &self.call.steps[step].waits {
            let Some(t) = self.txns.iter().find(|t| t.step == Some(w.step)) else {
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
        if in_dialog && self.dialog == Dialog::EndedByGateway {
            return Waits::Failed("the gateway had ended the dialog".into());
        }
        Waits::Met
    }

    fn send_step(&mut self, now: Instant, index: usize) {
        let (bytes, sent) = match &self.call.steps[index].request {
            ClientRequest::Parsed(captured) if captured.method == Method::Ack => {
                let captured = captured.clone();
                self.send_ack_step(index, &captured);
                return;
            }
            ClientRequest::Parsed(captured) => {
                let mut req = self.rw.request(captured);
                if req.method == Method::Invite
                    && let Some(mode) = &self.config.mode
                {
                    req.headers.set("X-Interconnect-Mode", mode.clone());
                }
                if req.method == Method::Bye {
                    self.out.push_back(Output::StopMedia);
                    self.dialog = Dialog::Ended;
                }
                (req.to_bytes(), Some(req))
            }
            ClientRequest::Raw { bytes, .. } => (self.rw.raw(bytes), None),
        };
        let step = &self.call.steps[index];
        let (method, cseq) = (step.request.method().to_string(), step.request.cseq());
        self.start_txn(now, Some(index), method, cseq, sent, bytes);
    }

    fn start_txn(
        &mut self,
        now: Instant,
        step: Option<usize>,
        method: String,
        cseq: Option<u32>,
        sent: Option<Request>,
        bytes: Vec<u8>,
    ) {
        self.out.push_back(Output::Send { bytes: bytes.clone(), to: None });
        // Over TCP the transport retransmits (RFC 3261 §17.1.1.2: timer A only for UDP).
        let udp = self.call.transport == Transport::Udp;
        self.txns.push(Txn {
            step,
            method,
            cseq,
            sent,
            bytes,
            provisional: false,
            done: false,
            next_retx: udp.then_some(now + T1),
            interval: T1,
            deadline: now + self.config.timeout,
        });
    }

    /// The captured ACK: for the INVITE's final answer as the replay got it.
    fn send_ack_step(&mut self, index: usize, captured: &Request) {
        let cseq = captured.cseq();
        if self.acks.contains_key(&cseq) {
            self.requests[index].note = Some("sent when the final answer came".into());
            return;
        }
        let invite =
            self.txns.iter().find(|t| t.method == "INVITE" && t.cseq == Some(cseq)).and_then(|t| t.sent.clone());
        let (Some(invite), Some(response)) = (invite, self.finals.get(&cseq).cloned()) else {
            self.requests[index].note = Some("not sent: the INVITE had no final answer".into());
            return;
        };
        let ack = self.rw.ack(&invite, &response, Some(captured));
        self.send_ack(cseq, &ack);
        if !ack.body.is_empty() {
            // A late offer: our answer went in this ACK.
            self.negotiated();
        }
    }

    fn send_ack(&mut self, cseq: u32, ack: &Request) {
        let bytes = ack.to_bytes();
        self.out.push_back(Output::Send { bytes: bytes.clone(), to: None });
        self.acks.insert(cseq, bytes);
    }

    fn handle_response(&mut self, r: Response) {
        if r.headers.get("Call-ID").is_some_and(|c| c != self.rw.call_id) {
            return;
        }
        let (cseq, method) = cseq_of(&r.headers);
        let Some(i) = self
            .txns
            .iter()
            .rposition(|t| t.method.eq_ignore_ascii_case(&method) && (t.cseq.is_none() || t.cseq == cseq))
            .or_else(|| self.txns.iter().rposition(|t| t.cseq.is_none() && t.sent.is_none()))
        else {
            return;
        };
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
                self.out.push_back(Output::Send { bytes: ack, to: None });
            }
            return;
        }
        self.txns[i].done = true;
        self.txns[i].next_retx = None;
        let Some(step) = self.txns[i].step else { return };
        self.requests[step].response =
            Some((r.status, r.reason.clone(), r.headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()));
        if !is_invite {
            return;
        }
        self.finals.insert(cseq, r.clone());
        self.rw.learn(&r);
        let success = (200..300).contains(&r.status);
        if success && self.dialog == Dialog::Early {
            self.dialog = Dialog::Confirmed;
        }
        if success && !r.body.is_empty() {
            self.gateway_sdp = Some(r.body.clone());
            // Without an offer of ours, the gateway offered (late offer): we answer in the ACK.
            let sent_offer = self.txns[i].sent.as_ref().is_some_and(|s| !s.body.is_empty());
            self.offered_by_gateway = !sent_offer;
            if sent_offer {
                self.negotiated();
            }
        }
        // The ACK: at once for a failure (RFC 3261 §17.1.1.3) or when the capture has none;
        // else when the captured ACK is due, with its body.
        let at = self.call.steps[step].at;
        let captured_ack =
            self.call.steps.iter().any(|s| s.request.method() == "ACK" && s.request.cseq() == Some(cseq) && s.at >= at);
        if (!success || !captured_ack)
            && let Some(invite) = self.txns[i].sent.clone()
        {
            let ack = self.rw.ack(&invite, &r, None);
            self.send_ack(cseq, &ack);
        }
    }

    fn handle_request(&mut self, r: Request, from: SocketAddr) {
        if r.method == Method::Ack {
            return;
        }
        if r.call_id() != self.rw.call_id {
            let response = Response::to(&r, 481, "Call/Transaction Does Not Exist", None);
            self.out.push_back(Output::Send { bytes: response.to_bytes(), to: Some(from) });
            return;
        }
        let response = self.rw.answer(&r);
        self.out.push_back(Output::Send { bytes: response.to_bytes(), to: Some(from) });
        match r.method {
            Method::Bye => {
                if self.dialog != Dialog::Ended && self.dialog != Dialog::EndedByGateway {
                    self.notes.push("the gateway sent BYE".into());
                }
                self.dialog = Dialog::EndedByGateway;
                self.out.push_back(Output::StopMedia);
            }
            Method::Invite | Method::Update if !r.body.is_empty() => {
                self.gateway_sdp = Some(r.body.clone());
                self.negotiated();
            }
            _ => {}
        }
    }

    /// Both SDPs known: tell the media side where to send, with which keys, what to decode.
    fn negotiated(&mut self) {
        let (Some(theirs), Some(ours)) = (self.gateway_sdp.clone(), self.rw.last_sdp.clone()) else { return };
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
        self.out.push_back(Output::Media(MediaUpdate {
            remote: media_addr(&theirs),
            their_key: sdes_key(&theirs),
            our_key,
            format,
            lag: self.lag,
        }));
    }

    /// A BYE of our own, to end a call the capture left up.
    fn send_bye(&mut self, now: Instant) {
        let invite = self.txns.iter().find(|t| t.method == "INVITE").and_then(|t| t.sent.clone());
        let (Some(target), Some(invite)) = (self.rw.remote_target.clone(), invite) else { return };
        let mut headers = message::Headers::default();
        headers.push(
            "Via",
            format!(
                "SIP/2.0/{} {};branch=z9hG4bK{};rport",
                self.call.transport.via_name(),
                self.rw.local_sip,
                random_id(12)
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
        self.start_txn(now, None, "BYE".into(), Some(cseq), Some(bye), bytes);
    }
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

/// RFC 3261 §17.1.1.1: the first retransmission interval.
const T1: Duration = Duration::from_millis(500);
/// RFC 3261 §17.1.2.2: the longest retransmission interval for non-INVITE requests.
const T2: Duration = Duration::from_secs(4);
/// How long after the last captured RTP packet is due the call may still wait for the media
/// side to report it sent.
const MEDIA_GRACE: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::capture::{Capture, Packet};
    use crate::replay::script;

    const CLIENT: &str = "10.0.0.1:5060";
    const SERVER: &str = "10.0.0.2:5060";
    const GATEWAY: &str = "127.0.0.1:5070";

    fn packet(ms: u64, from_client: bool, text: &str) -> Packet {
        let (src, dst) = if from_client { (CLIENT, SERVER) } else { (SERVER, CLIENT) };
        Packet {
            ts: Duration::from_secs(1_700_000_000) + Duration::from_millis(ms),
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            transport: Transport::Udp,
            payload: text.as_bytes().to_vec(),
        }
    }

    fn req(method: &str, cseq: u32, branch: &str, to_tag: &str) -> String {
        format!(
            "{method} sip:gw@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP {CLIENT};branch={branch}\r\nFrom: <sip:a@x>;tag=1\r\n\
             To: <sip:gw@y>{to_tag}\r\nCall-ID: c1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    }

    /// The gateway's response to the request the core sent (its bytes).
    fn answer(sent: &[u8], status: u16, to_tag: Option<&str>) -> Vec<u8> {
        let Ok(Message::Request(r)) = message::parse(sent) else { panic!("the core sent a request") };
        Response::to(&r, status, message::reason_phrase(status), to_tag).to_bytes()
    }

    fn core(packets: Vec<Packet>, t0: Instant) -> CallCore {
        let capture = Capture { packets, ..Capture::default() };
        let call = script::build(&capture).unwrap().calls.remove(0);
        let rw = CallRewriter::new(
            "127.0.0.1:40000".parse().unwrap(),
            Transport::Udp,
            GATEWAY.parse().unwrap(),
            "127.0.0.1:41000".parse().unwrap(),
        );
        let config = CallConfig { speed: 1.0, timeout: Duration::from_secs(4), mode: None };
        CallCore::new(call, rw, config, t0)
    }

    fn sent(core: &mut CallCore) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(o) = core.poll_output() {
            if let Output::Send { bytes, .. } = o {
                out.push(bytes);
            }
        }
        out
    }

    fn starts(bytes: &[u8], prefix: &str) -> bool {
        bytes.starts_with(prefix.as_bytes())
    }

    #[test]
    fn an_unanswered_invite_is_retransmitted_on_t1_then_given_up() {
        let t0 = Instant::now();
        let mut c = core(vec![packet(0, true, &req("INVITE", 1, "z9hG4bKa", ""))], t0);
        c.handle_timeout(t0);
        assert_eq!(sent(&mut c).len(), 1);
        let mut sends = Vec::new();
        // Virtual time: jump from deadline to deadline, bounded.
        for _ in 0..20 {
            let Some(at) = c.poll_timeout() else { break };
            c.handle_timeout(at);
            sends.extend(sent(&mut c).into_iter().map(|_| at.duration_since(t0)));
        }
        assert!(c.is_done());
        // RFC 3261 §17.1.1.2: 0.5, 1.5, 3.5 s; the 4 s timeout ends it.
        assert_eq!(sends, [Duration::from_millis(500), Duration::from_millis(1500), Duration::from_millis(3500)]);
        let (requests, _) = c.into_outcome();
        assert_eq!(requests[0].note.as_deref(), Some("no final answer within 4.0 s"));
    }

    #[test]
    fn cancel_waits_for_the_provisional_and_a_487_is_acked_on_the_invite_branch() {
        let t0 = Instant::now();
        let gw: SocketAddr = GATEWAY.parse().unwrap();
        let mut c = core(
            vec![
                packet(0, true, &req("INVITE", 1, "z9hG4bKa", "")),
                packet(
                    10,
                    false,
                    "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:gw@y>;tag=g\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
                ),
                packet(100, true, &req("CANCEL", 1, "z9hG4bKa", "")),
            ],
            t0,
        );
        c.handle_timeout(t0);
        let invite = sent(&mut c).remove(0);
        // Due at 100 ms, but no response yet: the CANCEL waits (and the call shifts).
        c.handle_timeout(t0 + Duration::from_millis(300));
        assert!(sent(&mut c).is_empty());
        c.handle_message(t0 + Duration::from_millis(300), &answer(&invite, 180, Some("g")), gw);
        let out = sent(&mut c);
        assert!(out.len() == 1 && starts(&out[0], "CANCEL "), "the CANCEL goes at once");
        let cancel = out[0].clone();
        c.handle_message(t0 + Duration::from_millis(310), &answer(&cancel, 200, Some("g")), gw);
        c.handle_message(t0 + Duration::from_millis(320), &answer(&invite, 487, Some("g")), gw);
        let out = sent(&mut c);
        assert!(out.len() == 1 && starts(&out[0], "ACK "));
        let (Ok(Message::Request(ack)), Ok(Message::Request(inv))) = (message::parse(&out[0]), message::parse(&invite))
        else {
            panic!("requests")
        };
        assert_eq!(ack.branch(), inv.branch());
        // A retransmitted 487 gets the same ACK again.
        c.handle_message(t0 + Duration::from_millis(900), &answer(&invite, 487, Some("g")), gw);
        assert_eq!(sent(&mut c), out);
        for _ in 0..10 {
            let Some(at) = c.poll_timeout() else { break };
            c.handle_timeout(at);
        }
        assert!(c.is_done());
        let (requests, _) = c.into_outcome();
        assert_eq!(requests[0].response.as_ref().map(|r| r.0), Some(487));
        assert_eq!(requests[1].response.as_ref().map(|r| r.0), Some(200));
    }

    #[test]
    fn a_slow_answer_shifts_the_rest_of_the_call_and_a_call_left_up_gets_a_bye() {
        let t0 = Instant::now();
        let gw: SocketAddr = GATEWAY.parse().unwrap();
        let ok = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:gw@y>;tag=g\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let mut c = core(
            vec![
                packet(0, true, &req("INVITE", 1, "z9hG4bKa", "")),
                packet(50, false, ok),
                packet(60, true, &req("ACK", 1, "z9hG4bKb", ";tag=g")),
                packet(1060, true, &req("INFO", 2, "z9hG4bKc", ";tag=g")),
            ],
            t0,
        );
        c.handle_timeout(t0);
        let invite = sent(&mut c).remove(0);
        // Answered 2 s late instead of after 50 ms.
        let late = t0 + Duration::from_secs(2);
        let mut ok = Response::to(
            &match message::parse(&invite) {
                Ok(Message::Request(r)) => r,
                _ => panic!(),
            },
            200,
            "OK",
            Some("g"),
        );
        ok.headers.push("Contact", "<sip:gw@127.0.0.1:5070>");
        c.handle_message(late, &ok.to_bytes(), gw);
        let out = sent(&mut c);
        assert!(
            out.len() == 1 && starts(&out[0], "ACK sip:gw@127.0.0.1:5070 "),
            "the ACK at once: it is overdue: {:?}",
            out.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect::<Vec<_>>()
        );
        // The INFO keeps its captured second after the ACK's due time (60 ms, shifted).
        let info_at = c.poll_timeout().unwrap();
        assert_eq!(info_at.duration_since(t0), Duration::from_millis(1060) + (late - (t0 + Duration::from_millis(60))));
        c.handle_timeout(info_at);
        let info = sent(&mut c).remove(0);
        assert!(starts(&info, "INFO sip:gw@127.0.0.1:5070 "));
        c.handle_message(info_at, &answer(&info, 200, None), gw);
        // Nothing captured after the INFO and the dialog is up: after the media grace, a BYE.
        let mut bye = None;
        for _ in 0..10 {
            let Some(at) = c.poll_timeout() else { break };
            c.handle_timeout(at);
            if let Some(b) = sent(&mut c).into_iter().find(|b| starts(b, "BYE ")) {
                c.handle_message(at, &answer(&b, 200, None), gw);
                bye = Some(b);
            }
        }
        assert!(bye.is_some(), "the replay ends the call");
        assert!(c.is_done());
        let (_, notes) = c.into_outcome();
        assert_eq!(notes, ["the capture left the call up: the replay sent BYE"]);
    }
}
