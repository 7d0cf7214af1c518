//! Generates the synthetic captures of `pcaps/` (issue 7), deterministically: fixed
//! timestamps, addresses, SSRCs and SRTP keys; the tones come from the `codecs` crate's
//! encoders, so the same build writes the same bytes.
//!
//! ```sh
//! cargo run --example pcapgen -- pcaps/
//! ```
//!
//! Each capture is the client side of one or two calls as a voice platform would record them
//! toward a gateway at 198.51.100.1:5060, with the server's answers: call A (participant
//! `alice`) sends 1 kHz, call B (`bob`) 440 Hz. The tokens in User-to-User are expired,
//! unsigned stand-ins: the replay re-mints them (the expectations say when not to). The
//! expectations (`*.toml`) are written by hand beside each file.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use codecs::amrwb::{AmrWbEncoder, FRAME_SAMPLES, MAX_FRAME_BYTES, Mode};
use codecs::g711::{self, Law};
use codecs::rfc4733::{Event, TelephoneEventSender};
use codecs::rfc4867::{Cmr, Packetizer, PayloadConfig};
use etherparse::PacketBuilder;
use interwork::media::params::{SrtpKeys, SrtpSuite};
use interwork::media::srtp::SrtpSession;
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};

/// The capture's epoch: 2023-11-14T22:13:20Z.
const EPOCH: u64 = 1_700_000_000;
const SERVER: [u8; 4] = [198, 51, 100, 1];
const CLIENT_A: [u8; 4] = [192, 0, 2, 10];
const CLIENT_B: [u8; 4] = [192, 0, 2, 11];
/// Seconds of audio per call.
const AUDIO_SECONDS: f64 = 3.0;

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "pcaps".into()));
    std::fs::create_dir_all(&dir).expect("create the output directory");
    let both = |g: &mut Gen, codec: Codec, a_mode: Offer| {
        let a = Leg::new('a', CLIENT_A, codec);
        let b = Leg::new('b', CLIENT_B, codec);
        a.call(g, 0.0, a_mode, 1000.0, &[]);
        b.call(g, 0.2, Offer::Early, 440.0, &[]);
    };
    let mut g = Gen::default();
    both(&mut g, Codec::Pcmu, Offer::Early);
    g.write(&dir.join("pcmu_two_calls.pcap"), Link::Ethernet);

    let mut g = Gen::default();
    both(&mut g, Codec::Pcma, Offer::Early);
    g.write(&dir.join("pcma_two_calls.pcap"), Link::LinuxSll);

    let mut g = Gen::default();
    both(&mut g, Codec::AmrWbBeSrtp, Offer::Early);
    g.write(&dir.join("amrwb_be_srtp.pcapng"), Link::EthernetNg);

    let mut g = Gen::default();
    both(&mut g, Codec::AmrWbOa, Offer::Early);
    g.write(&dir.join("amrwb_octet_aligned.pcap"), Link::RawIp);

    let mut g = Gen::default();
    let a = Leg::new('a', CLIENT_A, Codec::Pcmu);
    let b = Leg::new('b', CLIENT_B, Codec::Pcmu);
    a.call(&mut g, 0.0, Offer::Early, 1000.0, &[(1.5, '1'), (1.9, '5'), (2.3, '9')]);
    b.call(&mut g, 0.2, Offer::Early, 440.0, &[]);
    g.write(&dir.join("dtmf.pcap"), Link::Ethernet);

    let mut g = Gen::default();
    both(&mut g, Codec::Pcmu, Offer::HoldResume);
    g.write(&dir.join("hold_resume.pcap"), Link::Ethernet);

    let mut g = Gen::default();
    both(&mut g, Codec::Pcmu, Offer::Late);
    g.write(&dir.join("late_offer.pcap"), Link::Ethernet);

    let mut g = Gen::default();
    Leg::new('a', CLIENT_A, Codec::Pcmu).cancelled(&mut g);
    g.write(&dir.join("cancel_before_answer.pcap"), Link::Ethernet);

    let mut g = Gen::default();
    Leg::new('a', CLIENT_A, Codec::Pcmu).refused(&mut g, 403, "Forbidden", "");
    g.write(&dir.join("bad_token.pcap"), Link::Ethernet);

    let mut g = Gen::default();
    Leg::new('a', CLIENT_A, Codec::Pcmu).refused(&mut g, 404, "Not Found", "");
    g.write(&dir.join("unknown_participant.pcap"), Link::Ethernet);

    let mut g = Gen::default();
    Leg::new('a', CLIENT_A, Codec::G729).refused(&mut g, 488, "Not Acceptable Here", "");
    g.write(&dir.join("codec_mismatch.pcap"), Link::Ethernet);

    let mut g = Gen::default();
    Leg::new('a', CLIENT_A, Codec::Pcmu).refused(&mut g, 400, "Bad Request", "Max-Forwards: seventy\r\n");
    g.write(&dir.join("malformed_invite.pcap"), Link::Ethernet);

    let mut g = Gen::default();
    let a = Leg::new('a', CLIENT_A, Codec::Pcmu);
    a.call(&mut g, 0.0, Offer::SessionRefresh, 1000.0, &[]);
    g.write(&dir.join("session_refresh.pcap"), Link::Ethernet);

    let mut g = Gen::default();
    let mut a = Leg::new('a', CLIENT_A, Codec::Pcmu);
    let mut b = Leg::new('b', CLIENT_B, Codec::Pcmu);
    a.tcp = true;
    b.tcp = true;
    a.call(&mut g, 0.0, Offer::Early, 1000.0, &[]);
    b.call(&mut g, 0.2, Offer::Early, 440.0, &[]);
    g.write(&dir.join("tcp_out_of_order.pcap"), Link::Null);
    // The reference of the SNR check: what call B sends, as call A should hear it.
    write_wav(&dir.join("tone_440hz_8k.wav"), 8000, &codecs::pcm::analysis::tone(8000, 440.0, -6.0, 8000));
    println!("wrote the captures to {}", dir.display());
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Codec {
    Pcmu,
    Pcma,
    AmrWbBeSrtp,
    AmrWbOa,
    /// Only G.729: nothing in common with the gateway.
    G729,
}

impl Codec {
    fn rate(self) -> u32 {
        match self {
            Self::AmrWbBeSrtp | Self::AmrWbOa => 16_000,
            _ => 8_000,
        }
    }

    fn pt(self) -> u8 {
        match self {
            Self::Pcmu => 0,
            Self::Pcma => 8,
            Self::G729 => 18,
            _ => 96,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Offer {
    /// SDP in the INVITE.
    Early,
    /// INVITE without SDP; the answer in the ACK.
    Late,
    /// Early, then re-INVITE sendonly at 1.2 s and sendrecv at 2.0 s.
    HoldResume,
    /// Early with a session timer; an UPDATE refresh at 1.5 s.
    SessionRefresh,
}

/// One client of the gateway.
struct Leg {
    name: char,
    ip: [u8; 4],
    codec: Codec,
    tcp: bool,
    ssrc: u32,
    key: [u8; 30],
}

impl Leg {
    fn new(name: char, ip: [u8; 4], codec: Codec) -> Self {
        let n = name as u8;
        // Fixed per leg: the SSRC and the SDES key (master key and salt).
        Self {
            name,
            ip,
            codec,
            tcp: false,
            ssrc: 0x5eed_0000 | u32::from(n),
            key: std::array::from_fn(|i| n.wrapping_mul(7).wrapping_add(i as u8)),
        }
    }

    fn sip_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(
            self.ip.into(),
            if self.tcp { 40_060 + u16::from(self.name as u8 - b'a') } else { 5060 },
        ))
    }
    fn rtp_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.ip.into(), 40_000))
    }
    fn server(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(SERVER.into(), 5060))
    }
    fn server_rtp(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(SERVER.into(), 20_000 + 2 * u16::from(self.name as u8 - b'a')))
    }
    fn participant(&self) -> &'static str {
        if self.name == 'a' { "alice" } else { "bob" }
    }
    fn call_id(&self) -> String {
        format!("call-{}-0001@192.0.2.1", self.name)
    }

    /// An expired token with an invalid signature: it names the participant and nothing more.
    fn token(&self) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let claims = format!(
            r#"{{"sub":"{}","sid":"s-captured","aud":"interwork","iss":"interwork","iat":{EPOCH},"exp":{},"jti":"j{}"}}"#,
            self.participant(),
            EPOCH + 3600,
            self.name
        );
        format!("{}.{}.{}", b64(r#"{"alg":"ES256","typ":"JWT"}"#), b64(&claims), b64("not-a-signature"))
    }

    fn request(&self, method: &str, cseq: u32, branch: &str, to_tag: Option<&str>, extra: &str, body: &str) -> String {
        let transport = if self.tcp { "TCP" } else { "UDP" };
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        let ctype = if body.is_empty() { "" } else { "Content-Type: application/sdp\r\n" };
        let ruri = format!("sip:gw@{}", self.server());
        format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/{transport} {};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n\
             From: <sip:+15550100{}@voice.example>;tag=from-{}\r\nTo: <sip:gw@{}>{to_tag}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:platform@{}>\r\n{extra}{ctype}Content-Length: {}\r\n\r\n{body}",
            self.sip_addr(),
            self.name as u8 - b'a',
            self.name,
            self.server(),
            self.call_id(),
            self.sip_addr(),
            body.len()
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn response(
        &self,
        method: &str,
        cseq: u32,
        branch: &str,
        status: u16,
        reason: &str,
        to_tag: Option<&str>,
        extra: &str,
        body: &str,
    ) -> String {
        let transport = if self.tcp { "TCP" } else { "UDP" };
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        let ctype = if body.is_empty() { "" } else { "Content-Type: application/sdp\r\n" };
        format!(
            "SIP/2.0 {status} {reason}\r\nVia: SIP/2.0/{transport} {};branch=z9hG4bK{branch};received={}\r\n\
             From: <sip:+15550100{}@voice.example>;tag=from-{}\r\nTo: <sip:gw@{}>{to_tag}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:gw@{}>\r\n{extra}{ctype}Content-Length: {}\r\n\r\n{body}",
            self.sip_addr(),
            Ipv4Addr::from(self.ip),
            self.name as u8 - b'a',
            self.name,
            self.server(),
            self.call_id(),
            self.server(),
            body.len()
        )
    }

    fn sdp(&self, addr: SocketAddr, version: u32, direction: &str, key: Option<&[u8; 30]>) -> String {
        let ip = addr.ip();
        let head = format!("v=0\r\no=- 4242 {version} IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n");
        let port = addr.port();
        let media = match self.codec {
            Codec::Pcmu => format!(
                "m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
            ),
            Codec::Pcma => format!(
                "m=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
            ),
            Codec::G729 => format!("m=audio {port} RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\n"),
            Codec::AmrWbOa => format!(
                "m=audio {port} RTP/AVP 96 101\r\na=rtpmap:96 AMR-WB/16000\r\na=fmtp:96 octet-align=1\r\na=rtpmap:101 telephone-event/16000\r\na=fmtp:101 0-15\r\n"
            ),
            Codec::AmrWbBeSrtp => format!(
                "m=audio {port} RTP/SAVP 96 101\r\na=rtpmap:96 AMR-WB/16000\r\na=rtpmap:101 telephone-event/16000\r\na=fmtp:101 0-15\r\n\
                 a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
                base64::engine::general_purpose::STANDARD.encode(key.unwrap_or(&self.key))
            ),
        };
        format!("{head}{media}a=ptime:20\r\na={direction}\r\n")
    }

    fn client_sdp(&self, version: u32, direction: &str) -> String {
        self.sdp(self.rtp_addr(), version, direction, Some(&self.key))
    }

    /// The server's SDP: its own key (fixed) when SRTP.
    fn server_sdp(&self, version: u32, direction: &str) -> String {
        let server_key: [u8; 30] = std::array::from_fn(|i| 0xa0 ^ i as u8);
        self.sdp(self.server_rtp(), version, direction, Some(&server_key))
    }

    fn uui(&self) -> String {
        format!("User-to-User: {};encoding=jwt\r\nSupported: timer\r\n", self.token())
    }

    fn send(&self, g: &mut Gen, t: f64, text: String) {
        g.sip(t, self.sip_addr(), self.server(), text, self.tcp);
    }
    fn recv(&self, g: &mut Gen, t: f64, text: String) {
        g.sip(t, self.server(), self.sip_addr(), text, self.tcp);
    }

    /// A whole call: INVITE, answer, ACK, audio (with digits at their times), BYE.
    fn call(&self, g: &mut Gen, t: f64, offer: Offer, hz: f64, digits: &[(f64, char)]) {
        let tag = Some("gw-tag");
        let (invite_body, answer_body, ack_body) = match offer {
            Offer::Late => (String::new(), self.server_sdp(1, "sendrecv"), self.client_sdp(1, "sendrecv")),
            _ => (self.client_sdp(1, "sendrecv"), self.server_sdp(1, "sendrecv"), String::new()),
        };
        let timer = if offer == Offer::SessionRefresh { "Session-Expires: 1800;refresher=uac\r\n" } else { "" };
        let extra = format!("{}{timer}", self.uui());
        self.send(g, t, self.request("INVITE", 1, "inv1", None, &extra, &invite_body));
        self.recv(g, t + 0.005, self.response("INVITE", 1, "inv1", 100, "Trying", None, "", ""));
        let answer_extra = if offer == Offer::SessionRefresh {
            "Require: timer\r\nSession-Expires: 1800;refresher=uac\r\n"
        } else {
            ""
        };
        self.recv(g, t + 0.040, self.response("INVITE", 1, "inv1", 200, "OK", tag, answer_extra, &answer_body));
        self.send(g, t + 0.045, self.request("ACK", 1, "ack1", tag, "", &ack_body));
        let media_start = t + 0.06;
        g.rtp(self, media_start, AUDIO_SECONDS, hz, digits);
        let mut cseq = 2;
        match offer {
            Offer::HoldResume => {
                for (at, dir, v) in [(1.2, "sendonly", 2), (2.0, "sendrecv", 3)] {
                    let branch = format!("re{cseq}");
                    self.send(g, t + at, self.request("INVITE", cseq, &branch, tag, "", &self.client_sdp(v, dir)));
                    let answer = if dir == "sendonly" { "recvonly" } else { "sendrecv" };
                    self.recv(
                        g,
                        t + at + 0.03,
                        self.response("INVITE", cseq, &branch, 200, "OK", tag, "", &self.server_sdp(v, answer)),
                    );
                    self.send(g, t + at + 0.035, self.request("ACK", cseq, &format!("ra{cseq}"), tag, "", ""));
                    cseq += 1;
                }
            }
            Offer::SessionRefresh => {
                let refresh = "Session-Expires: 1800;refresher=uac\r\nSupported: timer\r\n";
                self.send(g, t + 1.5, self.request("UPDATE", cseq, "upd", tag, refresh, ""));
                self.recv(
                    g,
                    t + 1.52,
                    self.response(
                        "UPDATE",
                        cseq,
                        "upd",
                        200,
                        "OK",
                        tag,
                        "Require: timer\r\nSession-Expires: 1800;refresher=uac\r\n",
                        "",
                    ),
                );
                cseq += 1;
            }
            _ => {}
        }
        let end = media_start + AUDIO_SECONDS + 0.02;
        self.send(g, end, self.request("BYE", cseq, "bye", tag, "", ""));
        self.recv(g, end + 0.01, self.response("BYE", cseq, "bye", 200, "OK", tag, "", ""));
    }

    /// INVITE refused: the answer, the ACK. `extra` headers go on the INVITE.
    fn refused(&self, g: &mut Gen, status: u16, reason: &str, extra: &str) {
        let headers = format!("{}{extra}", self.uui());
        let mut invite = self.request("INVITE", 1, "inv1", None, &headers, &self.client_sdp(1, "sendrecv"));
        if !extra.is_empty() {
            // The malformed case: a second Max-Forwards that is not a number comes first.
            invite = invite.replacen("Max-Forwards: 70\r\n", "", 1);
        }
        self.send(g, 0.0, invite);
        self.recv(g, 0.005, self.response("INVITE", 1, "inv1", 100, "Trying", None, "", ""));
        self.recv(g, 0.030, self.response("INVITE", 1, "inv1", status, reason, Some("gw-tag"), "", ""));
        self.send(g, 0.035, self.request("ACK", 1, "inv1", Some("gw-tag"), "", ""));
    }

    /// INVITE, 180, CANCEL, 487, ACK.
    fn cancelled(&self, g: &mut Gen) {
        self.send(g, 0.0, self.request("INVITE", 1, "inv1", None, &self.uui(), &self.client_sdp(1, "sendrecv")));
        self.recv(g, 0.005, self.response("INVITE", 1, "inv1", 100, "Trying", None, "", ""));
        self.recv(g, 0.010, self.response("INVITE", 1, "inv1", 180, "Ringing", Some("gw-tag"), "", ""));
        self.send(g, 0.500, self.request("CANCEL", 1, "inv1", None, "", ""));
        self.recv(g, 0.505, self.response("CANCEL", 1, "inv1", 200, "OK", Some("gw-tag"), "", ""));
        self.recv(g, 0.510, self.response("INVITE", 1, "inv1", 487, "Request Terminated", Some("gw-tag"), "", ""));
        self.send(g, 0.515, self.request("ACK", 1, "inv1", Some("gw-tag"), "", ""));
    }
}

/// Link layers the captures are written with (one of each kind the reader supports).
#[derive(Clone, Copy)]
enum Link {
    Ethernet,
    EthernetNg,
    LinuxSll,
    RawIp,
    Null,
}

/// One capture being built.
#[derive(Default)]
struct Gen {
    /// (time in seconds from the epoch, IP packet).
    packets: Vec<(f64, Vec<u8>)>,
    /// TCP sequence number per flow.
    tcp_seq: std::collections::HashMap<(SocketAddr, SocketAddr), u32>,
}

impl Gen {
    fn sip(&mut self, t: f64, src: SocketAddr, dst: SocketAddr, text: String, over_tcp: bool) {
        if !over_tcp {
            self.packets.push((t, udp(src, dst, text.as_bytes())));
            return;
        }
        // TCP: each message in three segments, captured last-first (out of order), with the
        // first segment captured twice (a retransmission).
        let seq = self.tcp_seq.entry((src, dst)).or_insert(1000 + u32::from(src.port()));
        let bytes = text.as_bytes();
        let cut = [0, bytes.len() / 3, 2 * bytes.len() / 3, bytes.len()];
        let segments: Vec<(u32, &[u8])> = (0..3).map(|i| (*seq + cut[i] as u32, &bytes[cut[i]..cut[i + 1]])).collect();
        *seq += bytes.len() as u32;
        for (i, (s, data)) in segments.iter().rev().enumerate() {
            self.packets.push((t + i as f64 * 0.0001, tcp(src, dst, *s, data)));
        }
        self.packets.push((t + 0.0004, tcp(src, dst, segments[0].0, segments[0].1)));
    }

    /// 20 ms packets of a `hz` tone for `seconds`, RFC 4733 digits at their times.
    fn rtp(&mut self, leg: &Leg, t: f64, seconds: f64, hz: f64, digits: &[(f64, char)]) {
        let rate = leg.codec.rate();
        let samples = (rate / 50) as usize;
        let mut srtp = (leg.codec == Codec::AmrWbBeSrtp).then(|| {
            SrtpSession::new(&SrtpKeys {
                suite: SrtpSuite::AesCm128HmacSha1_80,
                tag: 1,
                remote_key: leg.key.to_vec(),
                local_key: leg.key.to_vec(),
            })
            .expect("a valid key")
        });
        let mut encoder = AmrWbEncoder::new(false).expect("the AMR-WB encoder");
        let layout = if leg.codec == Codec::AmrWbOa {
            PayloadConfig::octet_aligned()
        } else {
            PayloadConfig::bandwidth_efficient()
        };
        let packetizer = Packetizer::new(layout);
        let mut te = TelephoneEventSender::new(rate, 20);
        let mut pending: Vec<(f64, char)> = digits.to_vec();
        let tone = codecs::pcm::analysis::tone(rate, hz, -6.0, (seconds * f64::from(rate)) as usize + samples);
        let (mut seq, mut ts) = (1000u16, 16_000u32);
        let mut frame = [0u8; MAX_FRAME_BYTES];
        let mut pcm = [0i16; FRAME_SAMPLES];
        let count = (seconds * 50.0) as usize;
        for i in 0..count {
            let at = t + i as f64 * 0.020;
            if te.is_idle()
                && let Some(pos) = pending.iter().position(|(d, _)| t + d <= at)
            {
                let (_, digit) = pending.remove(pos);
                te.start(ts, Event::from_dtmf(digit).expect("a DTMF digit"), 10, 160).expect("an event");
            }
            let mut packet = vec![0u8; 1500];
            let (pt, marker, payload_ts, len) = if let Some(ev) = te.poll_packet() {
                packet[12..16].copy_from_slice(&ev.payload.to_bytes());
                (101, ev.marker, ev.timestamp, 4)
            } else {
                let chunk = &tone[i * samples..(i + 1) * samples];
                let n = match leg.codec {
                    Codec::Pcmu | Codec::G729 => g711::encode(Law::Mu, chunk, &mut packet[12..]).expect("PCMU"),
                    Codec::Pcma => g711::encode(Law::A, chunk, &mut packet[12..]).expect("PCMA"),
                    Codec::AmrWbBeSrtp | Codec::AmrWbOa => {
                        pcm.copy_from_slice(chunk);
                        let encoded = encoder.encode(&pcm, Mode::M8, &mut frame).expect("AMR-WB encode");
                        packetizer
                            .packetize(Cmr::NoRequest, &[encoded.frame(&frame)], &mut packet[12..])
                            .expect("packetize")
                    }
                };
                (leg.codec.pt(), i == 0, ts, n)
            };
            packet[0] = 0x80;
            packet[1] = pt | if marker { 0x80 } else { 0 };
            packet[2..4].copy_from_slice(&seq.to_be_bytes());
            packet[4..8].copy_from_slice(&payload_ts.to_be_bytes());
            packet[8..12].copy_from_slice(&leg.ssrc.to_be_bytes());
            let mut n = 12 + len;
            if let Some(s) = srtp.as_mut() {
                n = s.protect_rtp(&mut packet, n).expect("protect");
            }
            self.packets.push((at, udp(leg.rtp_addr(), leg.server_rtp(), &packet[..n])));
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(samples as u32);
        }
    }

    fn write(mut self, path: &Path, link: Link) {
        self.packets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let time = |t: f64| Duration::from_secs(EPOCH) + Duration::from_micros((t * 1e6).round() as u64);
        let file = std::fs::File::create(path).expect("create the capture");
        match link {
            Link::EthernetNg => {
                let mut w = PcapNgWriter::new(file).expect("pcapng header");
                w.write_pcapng_block(InterfaceDescriptionBlock {
                    linktype: DataLink::ETHERNET,
                    snaplen: 65_535,
                    options: vec![InterfaceDescriptionOption::IfTsResol(9)],
                })
                .expect("interface block");
                for (t, ip) in &self.packets {
                    let frame = framed(link, ip);
                    w.write_pcapng_block(EnhancedPacketBlock {
                        interface_id: 0,
                        timestamp: time(*t),
                        original_len: frame.len() as u32,
                        data: frame.into(),
                        options: vec![],
                    })
                    .expect("packet block");
                }
            }
            _ => {
                let datalink = match link {
                    Link::LinuxSll => DataLink::LINUX_SLL,
                    Link::RawIp => DataLink::RAW,
                    Link::Null => DataLink::NULL,
                    _ => DataLink::ETHERNET,
                };
                let header = PcapHeader { datalink, snaplen: 65_535, ..PcapHeader::default() };
                let mut w = PcapWriter::with_header(file, header).expect("pcap header");
                for (t, ip) in &self.packets {
                    let frame = framed(link, ip);
                    w.write_packet(&PcapPacket::new(time(*t), frame.len() as u32, &frame)).expect("packet");
                }
            }
        }
        println!("{}: {} packets", path.display(), self.packets.len());
    }
}

/// A mono 16-bit PCM WAV.
fn write_wav(path: &Path, rate: u32, samples: &[i16]) {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, out).expect("write the WAV");
    println!("{}: {} samples", path.display(), samples.len());
}

/// An IPv4 packet in the capture's link layer.
fn framed(link: Link, ip: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ip.len() + 16);
    match link {
        Link::Ethernet | Link::EthernetNg => {
            out.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
        }
        Link::LinuxSll => {
            // Packet type 4 (outgoing), ARPHRD_ETHER, a 6-byte address padded to 8, IPv4.
            out.extend_from_slice(&[0, 4, 0, 1, 0, 6, 0x02, 0, 0, 0, 0, 0x01, 0, 0, 0x08, 0x00]);
        }
        // BSD loopback: AF_INET in host (little-endian) order.
        Link::Null => out.extend_from_slice(&2u32.to_le_bytes()),
        Link::RawIp => {}
    }
    out.extend_from_slice(ip);
    out
}

fn v4(a: SocketAddr) -> ([u8; 4], u16) {
    match a {
        SocketAddr::V4(v) => (v.ip().octets(), v.port()),
        SocketAddr::V6(_) => unreachable!("the generator uses IPv4 only"),
    }
}

fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let ((s, sp), (d, dp)) = (v4(src), v4(dst));
    let builder = PacketBuilder::ipv4(s, d, 64).udp(sp, dp);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).expect("a UDP packet");
    out
}

fn tcp(src: SocketAddr, dst: SocketAddr, seq: u32, payload: &[u8]) -> Vec<u8> {
    let ((s, sp), (d, dp)) = (v4(src), v4(dst));
    let builder = PacketBuilder::ipv4(s, d, 64).tcp(sp, dp, seq, 65_535).psh().ack(1);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).expect("a TCP packet");
    out
}
