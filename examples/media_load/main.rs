//! External media load generator for a running interwork daemon (issue 13, item 4).
//!
//! Creates sessions of 4 participants through the HTTP API (everyone subscribed to the whole
//! session), places one SIP call per participant with `X-Interconnect-Mode: conference` over
//! real UDP on loopback (a minimal UAC of its own: INVITE, ACK, BYE), sends 20 ms frames from
//! every leg (a tone with pauses, each leg its own pitch; PCMU over RTP, or AMR-WB mode 8
//! bandwidth-efficient over SRTP with SDES AES_CM_128_HMAC_SHA1_80), encoded ahead of the run
//! and paced by one timer loop on one thread, and counts what the gateway sends back. Before and after a steady window (after all
//! calls are up and a warm-up) it reads the daemon's CPU (utime + stime, /proc/<pid>/stat) and
//! RSS (VmRSS, /proc/<pid>/status), and in the same run it times the matched ceiling: the bare
//! codec calls of one leg per 20 ms (G.711 decode, Opus encode at 8 kHz complexity 5, Opus
//! decode, G.711 encode), in CPU time over 2,000 frames.
//!
//! Latency phone → phone through the conference: the first leg of each session replaces one
//! frame a second by a loud 20 ms burst; the other three legs time when a frame whose peak
//! crosses a threshold arrives after it. Phone → browser: `--browsers` listening browsers per
//! session (str0m peers over real UDP, signalled over `/v1/device` like the SDK; `browser.rs`)
//! decode what they hear and time the same bursts. Over the window it also reads the daemon's
//! `heard_late` and `frames_concealed` counters from `/metrics`, its own CPU, and how many of
//! its sends were more than 10 ms behind their clock.
//!
//! ```text
//! cargo run --release --example media_load -- --legs 50 --codec pcmu|amrwb --seconds 20 \
//!     --http 127.0.0.1:28080 --sip 127.0.0.1:25060 --pid <daemon pid>
//! ```
//!
//! Credentials: `--user` (default `bench`) and INTERWORK_ACCOUNTS_DEFAULT_PASSWORD (default
//! `bench`). Every loop is bounded in count and time; it talks to loopback only.

#![allow(unsafe_code, missing_docs, unreachable_pub)]

mod browser;

use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

use base64::Engine as _;
use codecs::amrwb::{AmrWbDecoder, AmrWbEncoder, FRAME_SAMPLES, MAX_FRAME_BYTES, Mode};
use codecs::g711::{self, Law};
use codecs::opus::{MAX_PACKET_BYTES, OpusDecoder, OpusEncoder, OpusEncoderConfig, SampleRate};
use codecs::rfc4867::{Cmr, Depacketizer, PacketFrames, Packetizer, PayloadConfig};
use interwork::media::params::{SrtpKeys, SrtpSuite};
use interwork::media::srtp::SrtpSession;

const SESSION_SIZE: usize = 4;
const FRAME: Duration = Duration::from_millis(20);
const SIP_LIMIT: Duration = Duration::from_secs(10);
/// A burst every this many frames from the first leg of each session.
const BURST_EVERY: u64 = 50;
/// A detection this long after a burst is that burst's (bursts of phones and of browsers are
/// half a second apart).
const MATCH_WINDOW: Duration = Duration::from_millis(300);
/// Peak (of the decoded µ-law frame) above which a received frame is the burst.
const BURST_THRESHOLD: i16 = 16_000;
const PT_PCMU: u8 = 0;
const PT_AMRWB: u8 = 96;

/// The codec every leg offers and sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Codec {
    /// G.711 µ-law over RTP/AVP.
    Pcmu,
    /// AMR-WB bandwidth-efficient mode 8 over RTP/SAVP, SDES AES_CM_128_HMAC_SHA1_80.
    AmrWbSrtp,
}

impl Codec {
    fn samples(self) -> usize {
        match self {
            Self::Pcmu => 160,
            Self::AmrWbSrtp => FRAME_SAMPLES,
        }
    }

    fn rate(self) -> f64 {
        (self.samples() * 50) as f64
    }

    fn pt(self) -> u8 {
        match self {
            Self::Pcmu => PT_PCMU,
            Self::AmrWbSrtp => PT_AMRWB,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::AmrWbSrtp => "AMR-WB over SRTP",
        }
    }
}

struct Args {
    legs: usize,
    codec: Codec,
    seconds: u64,
    warmup: u64,
    http: String,
    sip: SocketAddr,
    pid: Option<u32>,
    user: String,
    password: String,
    ceiling_frames: usize,
    /// Listening browsers per session.
    browsers: usize,
}

fn args() -> Args {
    let mut a = Args {
        legs: 20,
        codec: Codec::Pcmu,
        seconds: 20,
        warmup: 3,
        http: "127.0.0.1:28080".into(),
        sip: "127.0.0.1:25060".parse().unwrap(),
        pid: None,
        user: "bench".into(),
        password: std::env::var("INTERWORK_ACCOUNTS_DEFAULT_PASSWORD").unwrap_or_else(|_| "bench".into()),
        ceiling_frames: 2_000,
        browsers: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--legs" => a.legs = value().parse().expect("--legs N"),
            "--codec" => {
                a.codec = match value().as_str() {
                    "pcmu" => Codec::Pcmu,
                    "amrwb" => Codec::AmrWbSrtp,
                    other => panic!("--codec pcmu|amrwb, not {other}"),
                }
            }
            "--seconds" => a.seconds = value().parse().expect("--seconds S"),
            "--warmup" => a.warmup = value().parse().expect("--warmup S"),
            "--http" => a.http = value(),
            "--sip" => a.sip = value().parse().expect("--sip ADDR"),
            "--pid" => a.pid = Some(value().parse().expect("--pid PID")),
            "--user" => a.user = value(),
            "--ceiling-frames" => a.ceiling_frames = value().parse().expect("--ceiling-frames N"),
            "--browsers" => a.browsers = value().parse().expect("--browsers N"),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(a.legs > 0 && a.legs <= 2_000, "--legs 1..=2000");
    assert!(a.seconds > 0 && a.seconds <= 3_600, "--seconds 1..=3600");
    assert!(a.browsers <= 4, "--browsers 0..=4");
    a
}

// ---------------------------------------------------------------------------------------------
// /proc and CPU clocks

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime of `pid` in clock ticks.
fn proc_cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the daemon's /proc/<pid>/stat");
    // Fields after the command name, which ends with the last ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// VmRSS of `pid` in KB.
fn proc_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon's /proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec the call writes into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The signal

/// One 20 ms frame of leg `leg`'s signal at frame index `f`, 8 kHz: a tone of its own pitch
/// (speech-like level, -20 dBFS) 600 ms on and 400 ms off, the phase of the pattern spread by
/// leg; `burst`: a loud 1 kHz frame instead.
fn signal(leg: usize, f: u64, burst: bool, rate: f64, phase: &mut f64, out: &mut [i16]) {
    let (hz, amp) = if burst {
        (1_000.0, 0.9)
    } else {
        let on = (f + leg as u64 * 7) % 50 < 30;
        (300.0 + 37.0 * (leg % 20) as f64, if on { 0.1 } else { 0.0 })
    };
    for s in out.iter_mut() {
        *s = (amp * 32767.0 * phase.sin()) as i16;
        *phase += 2.0 * std::f64::consts::PI * hz / rate;
    }
    *phase %= 2.0 * std::f64::consts::PI;
}

// ---------------------------------------------------------------------------------------------
// The matched ceiling

/// The payloads leg `leg` sends, one per frame of a 50-frame (1 s) cycle, encoded once ahead of
/// the run so that the generator spends no codec time while the daemon is measured; the first
/// leg of a session has its burst at frame 25.
fn payload_cycle(codec: Codec, leg: usize, burst: bool) -> Vec<Vec<u8>> {
    let mut phase = 0.0;
    let mut pcm = [0i16; FRAME_SAMPLES];
    let mut amr = (codec == Codec::AmrWbSrtp).then(|| AmrWbEncoder::new(false).unwrap());
    let packetizer = Packetizer::new(PayloadConfig::bandwidth_efficient());
    (0..BURST_EVERY)
        .map(|f| {
            let pcm = &mut pcm[..codec.samples()];
            signal(leg, f, burst && f == BURST_EVERY / 2, codec.rate(), &mut phase, pcm);
            match amr.as_mut() {
                None => {
                    let mut p = vec![0u8; 160];
                    g711::encode(Law::Mu, pcm, &mut p).unwrap();
                    p
                }
                Some(enc) => {
                    let mut bits = [0u8; MAX_FRAME_BYTES];
                    let encoded = enc.encode(&pcm[..].try_into().unwrap(), Mode::M8, &mut bits).unwrap();
                    let mut p = [0u8; 128];
                    let n = packetizer.packetize(Cmr::NoRequest, &[encoded.frame(&bits)], &mut p).unwrap();
                    p[..n].to_vec()
                }
            }
        })
        .collect()
}

/// CPU µs per leg-second of the bare codec calls of one leg, both directions per 20 ms frame —
/// PCMU: G.711 decode + Opus encode (8 kHz, c5, 24 kb/s) + Opus decode (of the 8 kHz Opus
/// another leg of the conference publishes) + G.711 encode; AMR-WB: depacketize + AMR-WB
/// decode + Opus encode (16 kHz, c5) + Opus decode (16 kHz) + AMR-WB encode (mode 8) +
/// packetize — alone, and with one UDP send and one receive per direction on loopback (4
/// syscalls per frame).
fn matched_ceiling(codec: Codec, frames: usize) -> (f64, f64) {
    let rate = if codec == Codec::Pcmu { SampleRate::Hz8000 } else { SampleRate::Hz16000 };
    let samples = codec.samples();
    let cycle = payload_cycle(codec, 1, false);
    let depacketizer = Depacketizer::new(PayloadConfig::bandwidth_efficient());
    let packetizer = Packetizer::new(PayloadConfig::bandwidth_efficient());
    let mut amr_frames = PacketFrames::new();
    let mut amr_dec = AmrWbDecoder::new().unwrap();
    let mut amr_enc = AmrWbEncoder::new(false).unwrap();
    // The Opus another leg publishes (its own encoder, not timed).
    let mut other = OpusEncoder::new(rate, OpusEncoderConfig::default()).unwrap();
    let mut heard = Vec::with_capacity(BURST_EVERY as usize);
    let mut phase = 0.0;
    let mut pcm = [0i16; FRAME_SAMPLES];
    for f in 0..BURST_EVERY {
        signal(2, f, false, codec.rate(), &mut phase, &mut pcm[..samples]);
        let mut out = [0u8; MAX_PACKET_BYTES];
        let n = other.encode(&pcm[..samples], &mut out).unwrap();
        heard.push(out[..n].to_vec());
    }
    let mut encoder = OpusEncoder::new(rate, OpusEncoderConfig::default()).unwrap();
    let mut decoder = OpusDecoder::new(rate).unwrap();
    let (mut pcm, mut back) = ([0i16; FRAME_SAMPLES], [0i16; FRAME_SAMPLES]);
    let mut bits = [0u8; MAX_FRAME_BYTES];
    let mut opus = [0u8; MAX_PACKET_BYTES];
    let mut out = [0u8; 172];
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let mut rx = [0u8; 1500];
    let mut codec_cpu = Duration::ZERO;
    let mut udp_cpu = Duration::ZERO;
    for f in 0..frames {
        let payload = &cycle[f % cycle.len()];
        let t0 = thread_cpu();
        let len = match codec {
            Codec::Pcmu => {
                g711::decode(Law::Mu, payload, &mut pcm[..160]).unwrap();
                let n = encoder.encode(&pcm[..160], &mut opus).unwrap();
                black_box(&opus[..n]);
                decoder.decode(&heard[f % heard.len()], &mut back[..160]).unwrap();
                g711::encode(Law::Mu, &back[..160], &mut out[12..]).unwrap()
            }
            Codec::AmrWbSrtp => {
                depacketizer.depacketize(payload, &mut amr_frames).unwrap();
                amr_dec.decode(amr_frames.get(0).unwrap(), &mut pcm).unwrap();
                let n = encoder.encode(&pcm, &mut opus).unwrap();
                black_box(&opus[..n]);
                decoder.decode(&heard[f % heard.len()], &mut back).unwrap();
                let encoded = amr_enc.encode(&back, Mode::M8, &mut bits).unwrap();
                packetizer.packetize(Cmr::NoRequest, &[encoded.frame(&bits)], &mut out[12..]).unwrap()
            }
        };
        black_box(&out);
        let t1 = thread_cpu();
        a.send_to(&out[..12 + len], b_addr).unwrap();
        black_box(b.recv_from(&mut rx).unwrap());
        b.send_to(&out[..12 + len], a_addr).unwrap();
        black_box(a.recv_from(&mut rx).unwrap());
        let t2 = thread_cpu();
        codec_cpu += t1 - t0;
        udp_cpu += t2 - t1;
    }
    let leg_seconds = frames as f64 * FRAME.as_secs_f64();
    let codec_us = codec_cpu.as_secs_f64() * 1e6 / leg_seconds;
    (codec_us, codec_us + udp_cpu.as_secs_f64() * 1e6 / leg_seconds)
}

// ---------------------------------------------------------------------------------------------
// HTTP API

struct Api {
    http: reqwest::blocking::Client,
    base: String,
    user: String,
    password: String,
}

impl Api {
    fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        self.send(reqwest::Method::POST, path, body).json().expect("JSON")
    }

    fn put(&self, path: &str, body: serde_json::Value) {
        self.send(reqwest::Method::PUT, path, body);
    }

    /// `method` on `path` of the account with `body`, which must succeed.
    fn send(&self, method: reqwest::Method, path: &str, body: serde_json::Value) -> reqwest::blocking::Response {
        let r = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.password))
            .json(&body)
            .send()
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(r.status().is_success(), "{method} {path}: {}", r.status());
        r
    }

    /// The daemon's media counters of SIP legs (`interwork_media_leg_total{kind=…}`) from
    /// `/metrics`: (heard_late, frames_concealed, rtp_lost); zeros when unreadable.
    fn media_counters(&self, http: &str) -> [f64; 3] {
        let text = self
            .http
            .get(format!("http://{http}/metrics"))
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        let value = |kind: &str| {
            let prefix = format!("interwork_media_leg_total{{kind=\"{kind}\"}} ");
            text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
        };
        [value("heard_late"), value("frames_concealed"), value("rtp_lost")]
    }

    fn delete(&self, path: &str) {
        let _ = self.http.delete(format!("{}{path}", self.base)).basic_auth(&self.user, Some(&self.password)).send();
    }
}

// ---------------------------------------------------------------------------------------------
// SIP UAC (patterns of tests/support/sip_ua.rs)

struct Uac {
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

impl Uac {
    fn new(gw: SocketAddr, n: usize) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let local = sock.local_addr().unwrap();
        let pid = std::process::id();
        Self {
            sock,
            gw,
            local,
            call_id: format!("load-{pid}-{n}@media-load"),
            tag: format!("t{pid}x{n}"),
            remote_tag: String::new(),
            target: format!("sip:gw@{gw}"),
            cseq: 0,
            branch: 0,
        }
    }

    fn request(&mut self, method: &str, cseq: u32, extra: &str, body: &str) -> String {
        let uri = if method == "INVITE" && self.remote_tag.is_empty() {
            format!("sip:gw@{}", self.gw)
        } else {
            self.target.clone()
        };
        let to_tag = if self.remote_tag.is_empty() { String::new() } else { format!(";tag={}", self.remote_tag) };
        let ctype = if body.is_empty() { "" } else { "Content-Type: application/sdp\r\n" };
        self.branch += 1;
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{tag}-{branch};rport\r\n\
             From: <sip:load@{local}>;tag={tag}\r\nTo: <sip:gw@{gw}>{to_tag}\r\nCall-ID: {cid}\r\n\
             CSeq: {cseq} {method}\r\nContact: <sip:load@{local}>\r\nMax-Forwards: 70\r\n{extra}{ctype}\
             Content-Length: {len}\r\n\r\n{body}",
            local = self.local,
            tag = self.tag,
            branch = self.branch,
            gw = self.gw,
            cid = self.call_id,
            len = body.len(),
        )
    }

    /// Sends a request (retransmitting every 500 ms) until its final response, at most 10 s.
    fn transaction(&mut self, method: &str, extra: &str, body: &str) -> Result<(u16, String), String> {
        self.cseq += 1;
        let cseq = self.cseq;
        let request = self.request(method, cseq, extra, body);
        let deadline = Instant::now() + SIP_LIMIT;
        let mut next_send = Instant::now();
        let mut buf = vec![0u8; 65_535];
        while Instant::now() < deadline {
            if Instant::now() >= next_send {
                self.sock.send_to(request.as_bytes(), self.gw).map_err(|e| e.to_string())?;
                next_send = Instant::now() + Duration::from_millis(500);
            }
            let Ok((n, from)) = self.sock.recv_from(&mut buf) else { continue };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !text.starts_with("SIP/2.0 ") {
                self.answer_request(&text, from);
                continue;
            }
            let status: u16 = text.get(8..11).and_then(|s| s.parse().ok()).unwrap_or(0);
            let same = header(&text, &["CSeq"]).is_some_and(|c| c.trim() == format!("{cseq} {method}"));
            if same && status >= 200 {
                return Ok((status, text));
            }
        }
        Err(format!("no final answer to {method} within {SIP_LIMIT:?}"))
    }

    /// INVITE in conference mode; ACKs the 200 and returns the answer's SDP.
    fn invite(&mut self, token: &str, sdp: &str) -> Result<String, String> {
        let extra = format!("User-to-User: {token};encoding=jwt\r\nX-Interconnect-Mode: conference\r\n");
        let (status, response) = self.transaction("INVITE", &extra, sdp)?;
        if status != 200 {
            return Err(format!("INVITE answered {status}: {}", response.lines().next().unwrap_or("")));
        }
        if let Some(tag) = header(&response, &["To", "t"]).and_then(|to| param(&to, "tag")) {
            self.remote_tag = tag;
        }
        if let Some(contact) = header(&response, &["Contact", "m"])
            && let (Some(a), Some(b)) = (contact.find('<'), contact.find('>'))
        {
            self.target = contact[a + 1..b].to_string();
        }
        let ack = self.request("ACK", self.cseq, "", "");
        self.sock.send_to(ack.as_bytes(), self.gw).map_err(|e| e.to_string())?;
        Ok(response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string())
    }

    fn bye(&mut self) -> u16 {
        self.transaction("BYE", "", "").map_or(0, |(s, _)| s)
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

fn header(message: &str, names: &[&str]) -> Option<String> {
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

fn offer(codec: Codec, rtp_port: u16, key: &[u8]) -> String {
    let head = "v=0\r\no=- 4242 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n";
    match codec {
        Codec::Pcmu => format!(
            "{head}m=audio {rtp_port} RTP/AVP {PT_PCMU}\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
        ),
        Codec::AmrWbSrtp => format!(
            "{head}m=audio {rtp_port} RTP/SAVP {PT_AMRWB}\r\na=rtpmap:{PT_AMRWB} AMR-WB/16000\r\na=ptime:20\r\n\
             a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\na=sendrecv\r\n",
            base64::engine::general_purpose::STANDARD.encode(key)
        ),
    }
}

/// Where the answer wants RTP, and its SDES key when it has one.
fn read_answer(sdp: &str) -> Option<(SocketAddr, Option<Vec<u8>>)> {
    let mut ip = "127.0.0.1".to_string();
    let mut port = None;
    let mut key = None;
    for line in sdp.lines() {
        if let Some(c) = line.strip_prefix("c=IN IP4 ") {
            ip = c.trim().to_string();
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            port = m.split(' ').next().and_then(|p| p.parse::<u16>().ok());
        } else if let Some(a) = line.strip_prefix("a=crypto:") {
            let b64 = a.split("inline:").nth(1)?.split(['|', ' ', '\r']).next()?;
            key = base64::engine::general_purpose::STANDARD.decode(b64).ok();
        }
    }
    Some((format!("{ip}:{}", port?).parse().ok()?, key))
}

// ---------------------------------------------------------------------------------------------
// Legs and the media loop

struct Leg {
    uac: Uac,
    rtp: UdpSocket,
    to: SocketAddr,
    /// Index within its session (0 sends the bursts).
    member: usize,
    session: usize,
    /// What it sends, cycled.
    cycle: Vec<Vec<u8>>,
    /// SDES SRTP (AMR-WB): protects what it sends, unprotects what it receives.
    srtp: Option<SrtpSession>,
    seq: u16,
    ts: u32,
    ssrc: u32,
    /// Offset of its 20 ms clock within the period.
    offset: Duration,
    next_frame: u64,
    sent: u64,
    received: u64,
    /// Received in the steady window.
    sent_window: u64,
    received_window: u64,
    /// The burst already seen for this burst index.
    seen_burst: u64,
}

struct Burst {
    /// When leg 0 of the session sent burst k (index k / BURST_EVERY).
    sent_at: Vec<Option<Instant>>,
}

fn main() {
    let a = args();
    let ticks = clock_ticks();
    eprintln!(
        "media_load: {} {} legs in sessions of {SESSION_SIZE}, {} s warm-up + {} s steady",
        a.legs,
        a.codec.name(),
        a.warmup,
        a.seconds
    );

    // The matched ceiling first, while nothing else of ours runs.
    let (ceiling_codec, ceiling_udp) = matched_ceiling(a.codec, a.ceiling_frames);
    eprintln!(
        "matched ceiling: {ceiling_codec:.0} µs/leg-s codecs only, {ceiling_udp:.0} with 4 UDP syscalls per frame"
    );

    let rss_base = a.pid.map(proc_rss_kb);
    let api = Api {
        http: reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
        base: format!("http://{}/v1/accounts/default", a.http),
        user: a.user.clone(),
        password: a.password.clone(),
    };

    // Sessions of 4, everyone subscribed to the whole session.
    let sessions = a.legs.div_ceil(SESSION_SIZE);
    let mut sids = Vec::with_capacity(sessions);
    let mut tokens = Vec::with_capacity(a.legs);
    let (mut browser_tokens, mut browser_sessions) = (Vec::new(), Vec::new());
    for i in 0..a.legs {
        if i % SESSION_SIZE == 0 {
            let s = api.post("/sessions", serde_json::json!({"tag": "media-load"}));
            sids.push(s["id"].as_str().expect("session id").to_string());
        }
        let sid = sids.last().unwrap();
        let p = api.post("/participants", serde_json::json!({"publishPermissions": ["AUDIO"]}));
        let pid = p["participant"]["id"].as_str().expect("participant id").to_string();
        api.put(&format!("/sessions/{sid}/participants/{pid}"), serde_json::json!({"sessionId": sid}));
        tokens.push(p["token"].as_str().expect("token").to_string());
        // The session's listening browsers, once its last phone is in.
        if i % SESSION_SIZE == SESSION_SIZE - 1 || i == a.legs - 1 {
            for _ in 0..a.browsers {
                let b = api.post("/participants", serde_json::json!({"publishPermissions": ["AUDIO"]}));
                let bid = b["participant"]["id"].as_str().expect("participant id").to_string();
                api.put(&format!("/sessions/{sid}/participants/{bid}"), serde_json::json!({"sessionId": sid}));
                browser_tokens.push(b["token"].as_str().expect("token").to_string());
                browser_sessions.push(sids.len() - 1);
            }
        }
    }

    // One call per participant.
    let setup = Instant::now();
    let mut legs = Vec::with_capacity(a.legs);
    for (i, token) in tokens.iter().enumerate() {
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        rtp.set_nonblocking(true).unwrap();
        let mut uac = Uac::new(a.sip, i);
        let mut key = vec![0u8; SrtpSuite::AesCm128HmacSha1_80.master_len()];
        interwork::ids::fill_random(&mut key);
        let answer = match uac.invite(token, &offer(a.codec, rtp.local_addr().unwrap().port(), &key)) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("call {i}: {e}");
                hang_up(&mut legs);
                std::process::exit(1);
            }
        };
        let (to, their_key) = read_answer(&answer).expect("the answer's RTP address");
        assert_eq!(their_key.is_some(), a.codec == Codec::AmrWbSrtp, "SRTP in the answer: {answer}");
        let srtp = their_key.map(|remote_key| {
            SrtpSession::new(&SrtpKeys { suite: SrtpSuite::AesCm128HmacSha1_80, tag: 1, remote_key, local_key: key })
                .unwrap()
        });
        legs.push(Leg {
            uac,
            rtp,
            to,
            member: i % SESSION_SIZE,
            session: i / SESSION_SIZE,
            cycle: payload_cycle(a.codec, i, i % SESSION_SIZE == 0),
            srtp,
            seq: (i as u16).wrapping_mul(1000),
            ts: 160_000,
            ssrc: 0x10ad_0000 + i as u32,
            offset: FRAME * i as u32 / a.legs as u32,
            next_frame: 0,
            sent: 0,
            received: 0,
            sent_window: 0,
            received_window: 0,
            seen_burst: u64::MAX,
        });
    }
    eprintln!("{} calls up in {:.1} s", legs.len(), setup.elapsed().as_secs_f64());

    // The media loop: one thread, one timer; each leg's 20 ms clock offset by i/N of a period.
    let start = Instant::now() + Duration::from_millis(20);
    let warm_end = start + Duration::from_secs(a.warmup);
    let end = warm_end + Duration::from_secs(a.seconds);
    let mut bursts: Vec<Burst> = (0..sessions).map(|_| Burst { sent_at: Vec::new() }).collect();
    let (detections_tx, detections) = std::sync::mpsc::channel();
    let (browser_bursts_tx, browser_bursts) = std::sync::mpsc::channel();
    let browsers = browser::spawn(
        a.http.clone(),
        browser_tokens,
        BURST_THRESHOLD as u16,
        (start, end),
        detections_tx,
        browser_bursts_tx,
    );
    // Every frame a phone received over the threshold: (leg, when), for browser → phone.
    let mut phone_detections: Vec<(usize, Instant)> = Vec::new();
    let mut latencies_us: Vec<u64> = Vec::new();
    let mut packet = [0u8; 1500];
    let mut rx = [0u8; 2048];
    let mut plain = [0u8; 2048];
    let mut decoded = [0i16; 480];
    let depacketizer = Depacketizer::new(PayloadConfig::bandwidth_efficient());
    let mut amr_frames = PacketFrames::new();
    let mut amr_decoders: Vec<Option<AmrWbDecoder>> =
        (0..a.legs).map(|_| (a.codec == Codec::AmrWbSrtp).then(|| AmrWbDecoder::new().unwrap())).collect();
    let (samples, pt) = (a.codec.samples() as u32, a.codec.pt());
    let mut fds: Vec<libc::pollfd> =
        legs.iter().map(|l| libc::pollfd { fd: l.rtp.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    let (mut cpu_before, mut rss_before_window) = (0u64, 0u64);
    let mut in_window = false;
    let mut counters_before = [0.0; 3];
    let mut own_cpu_before = 0;
    let mut max_late = Duration::ZERO;
    let mut late_sends = 0u64;
    let total_frames = (end - start).as_millis() as u64 / 20 + 1;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if !in_window && now >= warm_end {
            in_window = true;
            counters_before = api.media_counters(&a.http);
            own_cpu_before = proc_cpu_ticks(std::process::id());
            if let Some(pid) = a.pid {
                cpu_before = proc_cpu_ticks(pid);
                rss_before_window = proc_rss_kb(pid);
            }
        }
        // Send every frame that is due.
        let mut next_due = end;
        for leg in &mut legs {
            while leg.next_frame < total_frames {
                let due = start + leg.offset + FRAME * leg.next_frame as u32;
                if due > now {
                    next_due = next_due.min(due);
                    break;
                }
                let late = now - due;
                if in_window {
                    max_late = max_late.max(late);
                    if late > Duration::from_millis(10) {
                        late_sends += 1;
                    }
                }
                let f = leg.next_frame;
                let burst = leg.member == 0 && f % BURST_EVERY == BURST_EVERY / 2;
                let payload = &leg.cycle[(f % BURST_EVERY) as usize];
                packet[12..12 + payload.len()].copy_from_slice(payload);
                packet[0] = 0x80;
                packet[1] = pt | if f == 0 { 0x80 } else { 0 };
                packet[2..4].copy_from_slice(&leg.seq.to_be_bytes());
                packet[4..8].copy_from_slice(&leg.ts.to_be_bytes());
                packet[8..12].copy_from_slice(&leg.ssrc.to_be_bytes());
                let mut len = 12 + payload.len();
                if let Some(s) = leg.srtp.as_mut() {
                    len = s.protect_rtp(&mut packet, len).unwrap();
                }
                let _ = leg.rtp.send_to(&packet[..len], leg.to);
                if burst {
                    let b = &mut bursts[leg.session].sent_at;
                    let k = (f / BURST_EVERY) as usize;
                    b.resize(k + 1, None);
                    b[k] = Some(Instant::now());
                }
                leg.seq = leg.seq.wrapping_add(1);
                leg.ts = leg.ts.wrapping_add(samples);
                leg.next_frame += 1;
                leg.sent += 1;
                if in_window {
                    leg.sent_window += 1;
                }
            }
        }
        // Wait for packets until the next frame is due, rounded up to poll's 1 ms (a send is
        // at most 1 ms late; no spinning that would take a core from the daemon).
        let wait = next_due.saturating_duration_since(Instant::now());
        let timeout = i32::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(20).min(20);
        // SAFETY: fds is a valid array of pollfd of the length given.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if ready <= 0 {
            continue;
        }
        for (index, ((leg, fd), amr_decoder)) in
            legs.iter_mut().zip(fds.iter_mut()).zip(amr_decoders.iter_mut()).enumerate()
        {
            if fd.revents == 0 {
                continue;
            }
            fd.revents = 0;
            // Drain, bounded.
            for _ in 0..64 {
                let Ok((n, _)) = leg.rtp.recv_from(&mut rx) else { break };
                if n < 12 || rx[0] >> 6 != 2 || (200..=204).contains(&rx[1]) {
                    continue;
                }
                leg.received += 1;
                if in_window {
                    leg.received_window += 1;
                }
                if rx[1] & 0x7f != pt {
                    continue;
                }
                let arrived = Instant::now();
                // The burst detector: the peak of the frame (the first leg only sends).
                let peak = match (leg.srtp.as_mut(), amr_decoder.as_mut()) {
                    (Some(s), Some(dec)) => {
                        let Ok(len) = s.unprotect_rtp(&rx[..n], &mut plain) else { continue };
                        if len <= 12 || depacketizer.depacketize(&plain[12..len], &mut amr_frames).is_err() {
                            continue;
                        }
                        let mut peak = 0;
                        for fr in amr_frames.iter() {
                            let out: &mut [i16; FRAME_SAMPLES] = (&mut decoded[..FRAME_SAMPLES]).try_into().unwrap();
                            if dec.decode(fr, out).is_ok() {
                                peak = peak.max(out.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0));
                            }
                        }
                        peak
                    }
                    _ => {
                        let k = g711::decode(Law::Mu, &rx[12..n.min(12 + 480)], &mut decoded).unwrap_or(0);
                        decoded[..k].iter().map(|s| s.unsigned_abs()).max().unwrap_or(0)
                    }
                };
                if peak < BURST_THRESHOLD as u16 {
                    continue;
                }
                phone_detections.push((index, arrived));
                // Its own bursts leg 0 never hears (nobody hears themselves).
                if leg.member == 0 {
                    continue;
                }
                // The latest burst of this session sent before now, counted once.
                let sent = &bursts[leg.session].sent_at;
                if let Some((idx, at)) = sent.iter().enumerate().rev().find_map(|(i, t)| t.map(|t| (i as u64, t)))
                    && leg.seen_burst != idx
                    && arrived.duration_since(at) < MATCH_WINDOW
                {
                    leg.seen_burst = idx;
                    if in_window {
                        latencies_us.push(arrived.duration_since(at).as_micros() as u64);
                    }
                }
            }
        }
    }
    let window = end - warm_end;
    let browsers = browsers.join().unwrap_or_default();
    // Phone → browser: the first frame over the threshold on each browser's m-line after each
    // burst of its session, once per burst.
    let mut to_browser_us: Vec<u64> = Vec::new();
    let mut seen: std::collections::HashSet<(usize, String, usize)> = std::collections::HashSet::new();
    for d in detections.try_iter() {
        let sent = &bursts[browser_sessions[d.browser]].sent_at;
        let Some((k, at)) = sent.iter().enumerate().rev().find_map(|(k, t)| t.filter(|t| *t <= d.at).map(|t| (k, t)))
        else {
            continue;
        };
        if at >= warm_end && d.at.duration_since(at) < MATCH_WINDOW && seen.insert((d.browser, d.mid, k)) {
            to_browser_us.push(d.at.duration_since(at).as_micros() as u64);
        }
    }
    to_browser_us.sort_unstable();
    // Browser → phone: the first frame over the threshold each phone got after each burst of a
    // browser of its session, once per burst.
    let mut sent_by_session: Vec<Vec<Instant>> = vec![Vec::new(); sessions];
    for b in browser_bursts.try_iter() {
        sent_by_session[browser_sessions[b.browser]].push(b.at);
    }
    let mut to_phone_us: Vec<u64> = Vec::new();
    let mut counted: std::collections::HashSet<(usize, Instant)> = std::collections::HashSet::new();
    for (leg, at) in phone_detections {
        let Some(&sent) = sent_by_session[legs[leg].session].iter().filter(|t| **t <= at).max() else { continue };
        if sent >= warm_end && at.duration_since(sent) < MATCH_WINDOW && counted.insert((leg, sent)) {
            to_phone_us.push(at.duration_since(sent).as_micros() as u64);
        }
    }
    to_phone_us.sort_unstable();
    let (cpu_after, rss_after) = match a.pid {
        Some(pid) => (proc_cpu_ticks(pid), proc_rss_kb(pid)),
        None => (0, 0),
    };
    let own_cpu = proc_cpu_ticks(std::process::id()) - own_cpu_before;
    let counters_after = api.media_counters(&a.http);
    let load = load_average();
    hang_up(&mut legs);
    for sid in &sids {
        api.delete(&format!("/sessions/{sid}"));
    }

    let n = a.legs as f64;
    let sent: u64 = legs.iter().map(|l| l.sent_window).sum();
    let received: u64 = legs.iter().map(|l| l.received_window).sum();
    let expected = (window.as_secs_f64() * 50.0 * n) as u64;
    latencies_us.sort_unstable();
    let percentile = |samples: &[u64], p: f64| -> String {
        if samples.is_empty() {
            "—".into()
        } else {
            let i = ((samples.len() - 1) as f64 * p).round() as usize;
            format!("{:.1}", samples[i] as f64 / 1000.0)
        }
    };
    let pct = |p: f64| percentile(&latencies_us, p);
    let to_browser = |p: f64| percentile(&to_browser_us, p);
    let to_phone = |p: f64| percentile(&to_phone_us, p);
    println!(
        "browsers: {} of {} connected, {} Opus frames received, {} phone → browser and {} browser → phone samples",
        browsers.connected,
        browser_sessions.len(),
        browsers.frames,
        to_browser_us.len(),
        to_phone_us.len()
    );
    println!(
        "matched ceiling (bare codec calls, both directions): {ceiling_codec:.0} µs/leg-s ({:.0} legs/core); with 4 UDP syscalls per frame {ceiling_udp:.0} µs/leg-s ({:.0} legs/core)",
        1e6 / ceiling_codec,
        1e6 / ceiling_udp
    );
    println!(
        "generator: {:.1} % of a core; sends late by > 10 ms: {late_sends}, worst {:.1} ms; latency samples: {}",
        own_cpu as f64 / ticks * 100.0 / window.as_secs_f64(),
        max_late.as_secs_f64() * 1e3,
        latencies_us.len()
    );
    let delta: Vec<f64> = counters_after.iter().zip(counters_before).map(|(x, y)| x - y).collect();
    println!(
        "daemon counters in the window: heard_late {:.0}, frames_concealed {:.0}, rtp_lost {:.0}",
        delta[0], delta[1], delta[2]
    );
    if let Some(_pid) = a.pid {
        let cpu_us = (cpu_after - cpu_before) as f64 / ticks * 1e6;
        let per_leg_s = cpu_us / (n * window.as_secs_f64());
        let rss_per_leg = (rss_after as f64 - rss_base.unwrap_or(0) as f64) / n;
        println!(
            "| legs | codec | daemon µs CPU/leg-s | legs/core | vs ceiling (codecs) | vs ceiling (+UDP) | RSS KB/leg | RSS base → end MB | sent | received | expected each way | heard late / concealed | p→p latency p50 / p99 ms | p→browser p50 / p99 ms | browser→p p50 / p99 ms | gen late sends | load avg |"
        );
        println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        println!(
            "| {} | {} | {per_leg_s:.0} | {:.0} | {:.2} × | {:.2} × | {rss_per_leg:.0} | {:.1} → {:.1} | {sent} | {received} | {expected} | {:.0} / {:.0} | {} / {} | {} / {} | {} / {} | {late_sends} | {load} |",
            a.legs,
            a.codec.name(),
            1e6 / per_leg_s,
            per_leg_s / ceiling_codec,
            per_leg_s / ceiling_udp,
            rss_base.unwrap_or(0) as f64 / 1024.0,
            rss_after as f64 / 1024.0,
            delta[0],
            delta[1],
            pct(0.5),
            pct(0.99),
            to_browser(0.5),
            to_browser(0.99),
            to_phone(0.5),
            to_phone(0.99),
        );
        let _ = rss_before_window;
    } else {
        println!(
            "(no --pid: daemon CPU and RSS not measured) sent {sent}, received {received}, latency p50 {} p99 {} ms",
            pct(0.5),
            pct(0.99)
        );
    }
}

fn hang_up(legs: &mut [Leg]) {
    let mut failed = 0;
    for leg in legs.iter_mut() {
        if leg.uac.bye() != 200 {
            failed += 1;
        }
    }
    if failed > 0 {
        eprintln!("{failed} BYEs not answered 200");
    }
}
