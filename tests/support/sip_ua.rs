//! A small SIP user agent over UDP and an RTP/SRTP peer for the media bridge tests: it calls
//! the gateway with a participant token, sends a tone (PCMU, or AMR-WB bandwidth-efficient
//! through codecs' encoder and packetizer) and RFC 4733 digits on a 20 ms clock, and decodes
//! what the gateway sends back so that the tests can judge the audio itself.
//!
//! Threads are stopped and joined when the peer drops; every wait is bounded.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use codecs::amrwb::{AmrWbDecoder, AmrWbEncoder, FRAME_SAMPLES, MAX_FRAME_BYTES, Mode};
use codecs::g711::{self, Law};
use codecs::rfc4733::{Event, EventPayload, TelephoneEventSender};
use codecs::rfc4867::{Cmr, Depacketizer, PacketFrames, Packetizer, PayloadConfig};
use interwork::media::srtp::SrtpSession;
use interwork::sip::sdp::{SrtpKeys, SrtpSuite};

/// Payload types of our offers.
pub const PT_PCMU: u8 = 0;
pub const PT_AMRWB: u8 = 96;
pub const PT_EVENT: u8 = 101;

/// How long a SIP transaction may take.
const SIP_LIMIT: Duration = Duration::from_secs(10);

/// The codec the peer offers (and sends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerCodec {
    /// G.711 µ-law over RTP/AVP.
    Pcmu,
    /// AMR-WB bandwidth-efficient over RTP/SAVP with SDES AES_CM_128_HMAC_SHA1_80.
    AmrWbSrtp,
}

impl PeerCodec {
    pub fn rate(self) -> u32 {
        match self {
            Self::Pcmu => 8_000,
            Self::AmrWbSrtp => 16_000,
        }
    }
}

/// One call from the test to the gateway.
pub struct SipUa {
    sock: UdpSocket,
    gw: SocketAddr,
    local: SocketAddr,
    call_id: String,
    tag: String,
    remote_tag: String,
    target: String,
    cseq: u32,
    branch: u32,
}

impl SipUa {
    pub fn new(gw: SocketAddr) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let local = sock.local_addr().unwrap();
        let n = interwork::ids::random_id(10);
        Self {
            sock,
            gw,
            local,
            call_id: format!("{n}@bridge-test"),
            tag: format!("t{n}"),
            remote_tag: String::new(),
            target: format!("sip:gw@{gw}"),
            cseq: 0,
            branch: 0,
        }
    }

    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// INVITE with `token` in User-to-User and `sdp`; ACKs the 200 and returns its SDP.
    pub fn invite(&mut self, token: &str, sdp: &str) -> String {
        let (status, response) = self.try_invite(token, sdp);
        assert_eq!(status, 200, "the INVITE was answered {status}:\n{response}");
        body(&response).to_string()
    }

    /// An INVITE with `token`; returns the final status and response, and completes the dialog
    /// (ACK) when it is 200.
    pub fn try_invite(&mut self, token: &str, sdp: &str) -> (u16, String) {
        let extra = format!("User-to-User: {token};encoding=jwt\r\n");
        let (status, response) = self.transaction("INVITE", &extra, sdp);
        if status != 200 {
            return (status, response);
        }
        if let Some(tag) = header(&response, &["To", "t"]).and_then(|to| param(&to, "tag")) {
            self.remote_tag = tag;
        }
        if let Some(contact) = header(&response, &["Contact", "m"])
            && let (Some(a), Some(b)) = (contact.find('<'), contact.find('>'))
        {
            self.target = contact[a + 1..b].to_string();
        }
        self.ack();
        (status, response)
    }

    /// A re-INVITE with `sdp`; ACKs the 200 and returns its SDP.
    pub fn reinvite(&mut self, sdp: &str) -> String {
        let (status, response) = self.transaction("INVITE", "", sdp);
        assert_eq!(status, 200, "the re-INVITE was answered {status}:\n{response}");
        self.ack();
        body(&response).to_string()
    }

    /// BYE; returns the final status.
    pub fn bye(&mut self) -> u16 {
        self.transaction("BYE", "", "").0
    }

    fn next_branch(&mut self) -> String {
        self.branch += 1;
        format!("z9hG4bK{}-{}", self.tag, self.branch)
    }

    fn request(&mut self, method: &str, cseq: u32, extra: &str, body: &str) -> String {
        let uri = if method == "INVITE" && self.remote_tag.is_empty() {
            format!("sip:gw@{}", self.gw)
        } else {
            self.target.clone()
        };
        let to_tag = if self.remote_tag.is_empty() { String::new() } else { format!(";tag={}", self.remote_tag) };
        let ctype = if body.is_empty() { "" } else { "Content-Type: application/sdp\r\n" };
        let branch = self.next_branch();
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             From: <sip:tester@{local}>;tag={tag}\r\nTo: <sip:gw@{gw}>{to_tag}\r\nCall-ID: {cid}\r\n\
             CSeq: {cseq} {method}\r\nContact: <sip:tester@{local}>\r\nMax-Forwards: 70\r\n{extra}{ctype}\
             Content-Length: {len}\r\n\r\n{body}",
            local = self.local,
            tag = self.tag,
            gw = self.gw,
            cid = self.call_id,
            len = body.len(),
        )
    }

    /// Sends a request (retransmitting every 500 ms) until its final response; answers the
    /// gateway's own requests meanwhile.
    fn transaction(&mut self, method: &str, extra: &str, body: &str) -> (u16, String) {
        self.cseq += 1;
        let cseq = self.cseq;
        let request = self.request(method, cseq, extra, body);
        let deadline = Instant::now() + SIP_LIMIT;
        let mut next_send = Instant::now();
        let mut buf = vec![0u8; 65_535];
        loop {
            assert!(Instant::now() < deadline, "no final answer to {method} within {SIP_LIMIT:?}");
            if Instant::now() >= next_send {
                self.sock.send_to(request.as_bytes(), self.gw).unwrap();
                next_send = Instant::now() + Duration::from_millis(500);
            }
            let Ok((n, from)) = self.sock.recv_from(&mut buf) else { continue };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !text.starts_with("SIP/2.0 ") {
                self.answer_request(&text, from);
                continue;
            }
            let status: u16 = text[8..11].parse().unwrap_or(0);
            let same = header(&text, &["CSeq"]).is_some_and(|c| c.trim() == format!("{cseq} {method}"));
            if same && status >= 200 {
                return (status, text);
            }
        }
    }

    fn ack(&mut self) {
        let ack = self.request("ACK", self.cseq, "", "");
        self.sock.send_to(ack.as_bytes(), self.gw).unwrap();
    }

    /// 200 to whatever the gateway asks (BYE, OPTIONS, UPDATE without SDP).
    fn answer_request(&self, request: &str, from: SocketAddr) {
        if request.starts_with("ACK ") {
            return;
        }
        let mut response = String::from("SIP/2.0 200 OK\r\n");
        for line in request.split("\r\n").skip(1) {
            if line.is_empty() {
                break;
            }
            let name = line.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
            if ["via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"].contains(&name.as_str()) {
                response.push_str(line);
                response.push_str("\r\n");
            }
        }
        response.push_str("Content-Length: 0\r\n\r\n");
        let _ = self.sock.send_to(response.as_bytes(), from);
    }
}

/// The value of the first header named one of `names` (case-insensitive).
pub fn header(message: &str, names: &[&str]) -> Option<String> {
    for line in message.split("\r\n").skip(1) {
        if line.is_empty() {
            return None;
        }
        let Some((name, value)) = line.split_once(':') else { continue };
        if names.iter().any(|n| n.eq_ignore_ascii_case(name.trim())) {
            return Some(value.trim().to_string());
        }
    }
    None
}

fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim() == name).then(|| v.trim().to_string())
    })
}

fn body(message: &str) -> &str {
    message.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// Our SDP offer for `codec` on `rtp_port`, direction `direction`; `key` is our SDES master key
/// and salt for the SRTP offer.
pub fn offer(codec: PeerCodec, rtp_port: u16, direction: &str, version: u32, key: &[u8]) -> String {
    let head = format!("v=0\r\no=- 4242 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n");
    match codec {
        PeerCodec::Pcmu => format!(
            "{head}m=audio {rtp_port} RTP/AVP {PT_PCMU} {PT_EVENT}\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:{PT_EVENT} telephone-event/8000\r\na=fmtp:{PT_EVENT} 0-15\r\na=ptime:20\r\na={direction}\r\n"
        ),
        PeerCodec::AmrWbSrtp => format!(
            "{head}m=audio {rtp_port} RTP/SAVP {PT_AMRWB} {PT_EVENT}\r\na=rtpmap:{PT_AMRWB} AMR-WB/16000\r\n\
             a=rtpmap:{PT_EVENT} telephone-event/16000\r\na=fmtp:{PT_EVENT} 0-15\r\na=ptime:20\r\n\
             a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\na={direction}\r\n",
            base64::engine::general_purpose::STANDARD.encode(key)
        ),
    }
}

/// Where the answer wants RTP, and its SDES key when it has one.
pub fn read_answer(sdp: &str) -> (SocketAddr, Option<Vec<u8>>) {
    let mut ip = "127.0.0.1".to_string();
    let mut port = 0;
    let mut key = None;
    for line in sdp.lines() {
        if let Some(c) = line.strip_prefix("c=IN IP4 ") {
            ip = c.trim().to_string();
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            port = m.split(' ').next().unwrap().parse().unwrap();
        } else if let Some(a) = line.strip_prefix("a=crypto:") {
            let inline = a.split("inline:").nth(1).unwrap();
            let b64 = inline.split(['|', ' ', '\r']).next().unwrap();
            key = Some(base64::engine::general_purpose::STANDARD.decode(b64).unwrap());
        }
    }
    (format!("{ip}:{port}").parse().unwrap(), key)
}

/// What the media peer sends.
struct Control {
    tone_hz: f64,
    digits: VecDeque<char>,
}

/// What the media peer received.
#[derive(Default)]
pub struct Received {
    /// Decoded audio at the codec's rate, newest last (the last 30 s at most).
    pub pcm: VecDeque<i16>,
    /// Digits whose RFC 4733 end packet arrived, in order.
    pub digits: Vec<char>,
    /// Datagrams that did not authenticate or decode.
    pub bad: u64,
    last_event_ts: Option<u32>,
}

/// The RTP side of the test's call: a sender and a receiver thread on one socket.
pub struct MediaPeer {
    pub codec: PeerCodec,
    pub local: SocketAddr,
    control: Arc<Mutex<Control>>,
    received: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    socket: Arc<UdpSocket>,
    pub key: Vec<u8>,
}

impl MediaPeer {
    /// Binds the RTP socket; nothing is sent until [`MediaPeer::start`].
    pub fn bind(codec: PeerCodec) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut key = vec![0u8; SrtpSuite::AesCm128HmacSha1_80.master_len()];
        interwork::ids::fill_random(&mut key);
        Self {
            codec,
            local: socket.local_addr().unwrap(),
            control: Arc::new(Mutex::new(Control { tone_hz: 0.0, digits: VecDeque::new() })),
            received: Arc::new(Mutex::new(Received::default())),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            socket: Arc::new(socket),
            key,
        }
    }

    pub fn offer(&self, direction: &str, version: u32) -> String {
        offer(self.codec, self.local.port(), direction, version, &self.key)
    }

    /// Starts sending a `tone_hz` sine to `answer`'s address and receiving.
    pub fn start(&mut self, answer: &str, tone_hz: f64) {
        let (to, their_key) = read_answer(answer);
        self.control.lock().unwrap().tone_hz = tone_hz;
        let keys = their_key.map(|remote_key| SrtpKeys {
            suite: SrtpSuite::AesCm128HmacSha1_80,
            tag: 1,
            remote_key,
            local_key: self.key.clone(),
        });
        assert_eq!(keys.is_some(), self.codec == PeerCodec::AmrWbSrtp, "SRTP in the answer: {answer}");
        let (codec, socket, control, stop) = (self.codec, self.socket.clone(), self.control.clone(), self.stop.clone());
        let tx_keys = keys.clone();
        self.threads.push(std::thread::spawn(move || send_loop(codec, &socket, to, tx_keys, &control, &stop)));
        let (socket, received, stop) = (self.socket.clone(), self.received.clone(), self.stop.clone());
        self.threads.push(std::thread::spawn(move || receive_loop(codec, &socket, keys, &received, &stop)));
    }

    pub fn set_tone(&self, hz: f64) {
        self.control.lock().unwrap().tone_hz = hz;
    }

    pub fn send_digits(&self, digits: &str) {
        self.control.lock().unwrap().digits.extend(digits.chars());
    }

    pub fn digits(&self) -> Vec<char> {
        self.received.lock().unwrap().digits.clone()
    }

    /// The last `duration` of received audio (less when less arrived).
    pub fn recent(&self, duration: Duration) -> Vec<i16> {
        let r = self.received.lock().unwrap();
        let n = (duration.as_secs_f64() * f64::from(self.codec.rate())) as usize;
        r.pcm.iter().skip(r.pcm.len().saturating_sub(n)).copied().collect()
    }

    /// Polls until the last second of received audio has a dominant frequency within `tolerance`
    /// of `hz` at more than -40 dBFS, at most `limit`; returns (frequency, level).
    pub fn wait_for_tone(&self, hz: f64, tolerance: f64, limit: Duration) -> (f64, f64) {
        let deadline = Instant::now() + limit;
        loop {
            let pcm = self.recent(Duration::from_secs(1));
            let (f, level) = if pcm.len() as u32 >= self.codec.rate() {
                (
                    codecs::pcm::analysis::dominant_frequency(&pcm, self.codec.rate()),
                    codecs::pcm::analysis::rms_dbfs(&pcm),
                )
            } else {
                (0.0, f64::NEG_INFINITY)
            };
            if (f - hz).abs() <= tolerance && level > -40.0 {
                return (f, level);
            }
            assert!(
                Instant::now() < deadline,
                "the SIP side did not hear {hz} Hz within {limit:?}: last second {f:.1} Hz at {level:.1} dBFS, {} samples, {} bad datagrams",
                pcm.len(),
                self.received.lock().unwrap().bad
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls until `digits` arrived as RFC 4733, at most `limit`.
    pub fn wait_for_digits(&self, digits: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        let want: Vec<char> = digits.chars().collect();
        loop {
            let got = self.digits();
            if got.ends_with(&want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "RFC 4733 digits {digits:?} did not arrive within {limit:?}; got {got:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for MediaPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn send_loop(
    codec: PeerCodec,
    socket: &UdpSocket,
    to: SocketAddr,
    keys: Option<SrtpKeys>,
    control: &Mutex<Control>,
    stop: &AtomicBool,
) {
    let mut srtp = keys.map(|k| SrtpSession::new(&k).unwrap());
    let rate = codec.rate();
    let samples = (rate / 50) as usize;
    let mut encoder = AmrWbEncoder::new(false).unwrap();
    let packetizer = Packetizer::new(PayloadConfig::bandwidth_efficient());
    let mut te = TelephoneEventSender::new(rate, 20);
    let mut pcm = [0i16; FRAME_SAMPLES];
    let mut frame = [0u8; MAX_FRAME_BYTES];
    let mut packet = vec![0u8; 1500];
    let (mut seq, mut ts, ssrc) = (1000u16, 160_000u32, 0x5eed_0001u32);
    let mut phase = 0.0f64;
    let mut marker = true;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Paced on absolute deadlines: one 20 ms frame per 20 ms of wall time.
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        }
        next += Duration::from_millis(20);
        let (hz, digit) = {
            let mut c = control.lock().unwrap();
            let digit = if te.is_idle() { c.digits.pop_front() } else { None };
            (c.tone_hz, digit)
        };
        if let Some(d) = digit {
            te.start(ts, Event::from_dtmf(d).unwrap(), 10, 160).unwrap();
        }
        // An event's packets all carry the event's start time (RFC 4733 §2.5.1.2).
        let mut packet_ts = ts;
        let (pt, m, len) = if let Some(ev) = te.poll_packet() {
            packet[12..16].copy_from_slice(&ev.payload.to_bytes());
            packet_ts = ev.timestamp;
            (PT_EVENT, ev.marker, 4)
        } else {
            for s in pcm[..samples].iter_mut() {
                *s = (0.3 * 32767.0 * phase.sin()) as i16;
                phase += 2.0 * std::f64::consts::PI * hz / f64::from(rate);
            }
            phase %= 2.0 * std::f64::consts::PI;
            match codec {
                PeerCodec::Pcmu => (PT_PCMU, false, g711::encode(Law::Mu, &pcm[..samples], &mut packet[12..]).unwrap()),
                PeerCodec::AmrWbSrtp => {
                    let encoded = encoder.encode(&pcm, Mode::M8, &mut frame).unwrap();
                    let n = packetizer.packetize(Cmr::NoRequest, &[encoded.frame(&frame)], &mut packet[12..]).unwrap();
                    (PT_AMRWB, false, n)
                }
            }
        };
        packet[0] = 0x80;
        packet[1] = pt | if marker || m { 0x80 } else { 0 };
        marker = false;
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        packet[4..8].copy_from_slice(&packet_ts.to_be_bytes());
        packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
        let mut n = 12 + len;
        if let Some(s) = srtp.as_mut() {
            n = s.protect_rtp(&mut packet, n).unwrap();
        }
        let _ = socket.send_to(&packet[..n], to);
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(samples as u32);
    }
}

fn receive_loop(
    codec: PeerCodec,
    socket: &UdpSocket,
    keys: Option<SrtpKeys>,
    received: &Mutex<Received>,
    stop: &AtomicBool,
) {
    // The session's receive context is keyed with the gateway's key (`remote_key`).
    let mut srtp = keys.map(|k| SrtpSession::new(&k).unwrap());
    let depacketizer = Depacketizer::new(PayloadConfig::bandwidth_efficient());
    let mut frames = PacketFrames::new();
    let mut decoder = AmrWbDecoder::new().unwrap();
    let mut buf = vec![0u8; 2048];
    let mut plain = vec![0u8; 2048];
    let mut pcm = [0i16; FRAME_SAMPLES];
    let limit = 30 * codec.rate() as usize;
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, _)) = socket.recv_from(&mut buf) else { continue };
        if n < 12 || buf[0] >> 6 != 2 || (200..=204).contains(&buf[1]) {
            continue;
        }
        let packet: &[u8] = match srtp.as_mut() {
            Some(s) => match s.unprotect_rtp(&buf[..n], &mut plain) {
                Ok(len) => &plain[..len],
                Err(_) => {
                    received.lock().unwrap().bad += 1;
                    continue;
                }
            },
            None => &buf[..n],
        };
        let pt = packet[1] & 0x7f;
        let ts = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let start = 12 + 4 * usize::from(packet[0] & 0x0f);
        let start = if packet[0] & 0x10 != 0 && packet.len() >= start + 4 {
            start + 4 + 4 * usize::from(u16::from_be_bytes([packet[start + 2], packet[start + 3]]))
        } else {
            start
        };
        let Some(payload) = packet.get(start..) else { continue };
        let mut r = received.lock().unwrap();
        match pt {
            PT_EVENT => {
                // One digit per event: its end packet comes three times with one timestamp.
                if let Ok(ev) = EventPayload::parse(payload)
                    && ev.end
                    && r.last_event_ts != Some(ts)
                {
                    r.last_event_ts = Some(ts);
                    if let Some(d) = ev.event.dtmf() {
                        r.digits.push(d);
                    }
                }
            }
            PT_PCMU if codec == PeerCodec::Pcmu => {
                let mut out = [0i16; 480];
                let len = payload.len().min(out.len());
                let k = g711::decode(Law::Mu, &payload[..len], &mut out).unwrap_or(0);
                r.pcm.extend(&out[..k]);
            }
            PT_AMRWB if codec == PeerCodec::AmrWbSrtp => match depacketizer.depacketize(payload, &mut frames) {
                Ok(_) => {
                    for f in frames.iter() {
                        if decoder.decode(f, &mut pcm).is_ok() {
                            r.pcm.extend(&pcm);
                        }
                    }
                }
                Err(_) => r.bad += 1,
            },
            _ => r.bad += 1,
        }
        let excess = r.pcm.len().saturating_sub(limit);
        r.pcm.drain(..excess);
    }
}
