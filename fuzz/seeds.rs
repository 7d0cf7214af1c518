//! Writes the seed corpus of every target into `corpus/<target>/seed-*` (run by `./run.sh seeds`
//! from `fuzz/`; deterministic except for the SRTP keys of our own answers, which no seed holds).
//!
//! Sources: hand-written SIP, SDP, UUI and device messages shaped like the tests' and
//! `docs/device-protocol.md`'s; the SIP messages, SDP bodies, UUI values, RTP and RTCP of the
//! captures in `pcaps/`; packets built with the crate's own writers; SRTP protected with the fixed
//! keys of `interwork::fuzzing::srtp_keys`; tokens minted with the fuzz key; and the captures
//! themselves cut to their first few records.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use interwork::fuzzing::{OUR_SSRC, record, srtp_keys, token_fixture, token_now};
use interwork::ids::{ParticipantId, SessionId};
use interwork::media::rtcp::{Report, ReportBlock, SenderInfo, is_rtcp};
use interwork::media::rtp::{RtpHeader, RtpPacket, Ssrc};
use interwork::media::srtp::SrtpSession;
use interwork::replay::capture::{self, Transport};
use interwork::sip::message::{self, Message};
use interwork::sip::sdp::SrtpSuite;

/// Largest seed written: libFuzzer's default input size bound.
const MAX_SEED: usize = 4096;

struct Corpus {
    root: PathBuf,
    count: usize,
}

impl Corpus {
    fn add(&mut self, target: &str, name: &str, bytes: &[u8]) {
        if bytes.len() > MAX_SEED {
            return;
        }
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        self.count += 1;
    }
}

fn main() {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut corpus = Corpus { root: here.join("corpus"), count: 0 };
    let captures = read_captures(&here.join("../pcaps"));
    sip(&mut corpus, &captures);
    sdp(&mut corpus, &captures);
    uui(&mut corpus, &captures);
    media(&mut corpus, &captures);
    device(&mut corpus);
    tokens(&mut corpus);
    capture_files(&mut corpus, &here.join("../pcaps"));
    println!("wrote {} seeds under {}", corpus.count, corpus.root.display());
}

/// Every capture of pcaps/ (and pcaps/recorded/), by file name.
fn read_captures(dir: &Path) -> Vec<(String, capture::Capture)> {
    let mut out = Vec::new();
    for path in capture_paths(dir) {
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        out.push((name, capture::read(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))));
    }
    out
}

fn capture_paths(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = [dir.to_path_buf(), dir.join("recorded")]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    paths.sort();
    paths
}

fn is_sip(payload: &[u8]) -> bool {
    payload.first().is_some_and(u8::is_ascii_uppercase)
}

/// SIP messages of the captures, one per distinct start line and transport.
fn sip_messages(captures: &[(String, capture::Capture)]) -> Vec<(String, Transport, Vec<u8>)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (name, c) in captures {
        for p in c.packets.iter().filter(|p| is_sip(&p.payload)) {
            let text = String::from_utf8_lossy(&p.payload);
            let first = text.lines().next().unwrap_or("").split(' ').next().unwrap_or("").to_string();
            let kind = if first.starts_with("SIP/") { text.lines().next().unwrap_or("").to_string() } else { first };
            if seen.insert((name.clone(), kind.clone(), p.transport.via_name())) {
                out.push((format!("{name}-{}", out.len()), p.transport, p.payload.clone()));
            }
        }
    }
    out
}

const SDP_AMR: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
    m=audio 40000 RTP/AVP 96 97 0 8 101 13\r\na=rtpmap:96 AMR-WB/16000\r\n\
    a=fmtp:96 mode-set=0,2,5,8; mode-change-period=2; mode-change-capability=2; mode-change-neighbor=1; max-red=220\r\n\
    a=rtpmap:97 AMR-WB/16000/1\r\na=fmtp:97 octet-align=1\r\na=rtpmap:101 telephone-event/16000\r\n\
    a=fmtp:101 0-15\r\na=rtpmap:13 CN/8000\r\na=ptime:20\r\na=maxptime:40\r\na=sendrecv\r\n";

const SDP_SAVP: &str = "v=0\r\no=- 2 2 IN IP4 192.0.2.10\r\ns=-\r\nt=0 0\r\n\
    m=video 0 RTP/AVP 31\r\n\
    m=audio 40002 RTP/SAVP 0 8 100\r\nc=IN IP4 192.0.2.10\r\na=rtpmap:100 telephone-event/8000\r\n\
    a=fmtp:100 0-11,16\r\na=rtcp:40005 IN IP4 192.0.2.11\r\n\
    a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd|2^20 WSH=64\r\n\
    a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd\r\n\
    a=crypto:3 AEAD_AES_128_GCM inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBka\r\n\
    a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd|1:4\r\n\
    a=sendonly\r\n";

const SDP_HOLD6: &str = "v=0\r\no=- 3 3 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\na=recvonly\r\n\
    m=audio 50000 RTP/AVPF 8 0\r\na=rtcp-mux\r\na=ptime:30\r\n\
    m=audio 50002 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\na=inactive\r\n";

/// The answer to our late offer, plain and SRTP (tags and suites we offer).
const SDP_ANSWER: &str = "v=0\r\no=- 4 4 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
    m=audio 40000 RTP/AVP 96 101\r\na=rtpmap:96 AMR-WB/16000\r\na=rtpmap:101 telephone-event/16000\r\na=sendrecv\r\n";
const SDP_ANSWER_SAVP: &str = "v=0\r\no=- 5 5 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
    m=audio 40000 RTP/SAVP 0 100\r\na=rtpmap:100 telephone-event/8000\r\n\
    a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd\r\n";

fn request(method: &str, extra: &str, body: &str) -> String {
    format!(
        "{method} sip:gw@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{method}1;rport\r\n\
         From: \"Caller\" <sip:a@192.0.2.10>;tag=f1\r\nTo: <sip:gw@198.51.100.1>\r\nCall-ID: c1@192.0.2.10\r\n\
         CSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn sip(corpus: &mut Corpus, captures: &[(String, capture::Capture)]) {
    let token = minted_token(Some("s1"));
    let uui = format!("User-to-User: 3a2f;encoding=hex, {token};encoding=jwt\r\nContent-Type: application/sdp\r\n");
    let mut hand = vec![
        ("invite", request("INVITE", &uui, SDP_AMR)),
        ("invite-srtp", request("INVITE", &uui, SDP_SAVP)),
        ("options", request("OPTIONS", "Accept: application/sdp\r\n", "")),
        ("bye", request("BYE", "", "").replace("To: <sip:gw@198.51.100.1>", "To: <sip:gw@198.51.100.1>;tag=g1")),
        ("cancel", request("CANCEL", "", "")),
        ("info", request("INFO", "Content-Type: application/dtmf-relay\r\n", "Signal=5\r\nDuration=160\r\n")),
        ("update", request("UPDATE", "Session-Expires: 1800;refresher=uac\r\nSupported: timer\r\n", "")),
        ("subscribe", request("SUBSCRIBE", "Event: dialog\r\n", "")),
        ("sip3", request("OPTIONS", "", "").replacen("SIP/2.0\r\n", "SIP/3.0\r\n", 1)),
        (
            "compact",
            "INVITE sip:gw@198.51.100.1 SIP/2.0\r\nv: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKa, SIP/2.0/TCP 192.0.2.9;branch=z9hG4bKb\r\n\
             f: <sip:a@192.0.2.10>;tag=1\r\nt: <sip:gw@198.51.100.1>\r\ni: c2\r\nCSeq: 2 INVITE\r\nSubject: folded\r\n  line\r\n\
             c: application/sdp\r\n\r\nv=0\r\n"
                .to_string(),
        ),
        (
            "response",
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKx\r\nFrom: <sip:gw@198.51.100.1>;tag=g1\r\n\
             To: <sip:a@192.0.2.10>;tag=f1\r\nCall-ID: c3\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n"
                .to_string(),
        ),
    ];
    hand.push(("keepalive", "\r\n\r\n".to_string()));
    for (name, text) in &hand {
        corpus.add("sip_udp", name, text.as_bytes());
    }
    let messages = sip_messages(captures);
    for (name, transport, bytes) in &messages {
        if *transport == Transport::Udp {
            corpus.add("sip_udp", name, bytes);
        }
    }
    // Streams: a few messages back to back with keepalives between, and a cut one at the end.
    let mut stream = vec![0x12, 0x34];
    for (_, text) in hand.iter().take(3) {
        stream.extend_from_slice(text.as_bytes());
        stream.extend_from_slice(b"\r\n\r\n");
    }
    corpus.add("sip_tcp", "hand", &stream);
    let tcp: Vec<&Vec<u8>> = messages.iter().filter(|m| m.1 == Transport::Tcp).map(|m| &m.2).collect();
    for (i, pair) in tcp.chunks(2).enumerate() {
        let mut stream = vec![i as u8, 0x5A];
        for m in pair {
            stream.extend_from_slice(m);
        }
        stream.extend_from_slice(&pair[0][..pair[0].len() / 2]);
        corpus.add("sip_tcp", &format!("capture-{i}"), &stream);
    }
}

/// SDP bodies of the captures' SIP messages, distinct.
fn sdp(corpus: &mut Corpus, captures: &[(String, capture::Capture)]) {
    for (name, text) in [
        ("amr", SDP_AMR),
        ("savp", SDP_SAVP),
        ("hold6", SDP_HOLD6),
        ("answer", SDP_ANSWER),
        ("answer-savp", SDP_ANSWER_SAVP),
    ] {
        corpus.add("sdp_offer", name, text.as_bytes());
    }
    let mut seen = BTreeSet::new();
    for (name, _, bytes) in sip_messages(captures) {
        let Ok(msg) = message::parse(&bytes) else { continue };
        let body = match msg {
            Message::Request(r) => r.body,
            Message::Response(r) => r.body,
        };
        if body.starts_with(b"v=0") && seen.insert(body.clone()) {
            corpus.add("sdp_offer", &name, &body);
        }
    }
}

fn uui(corpus: &mut Corpus, captures: &[(String, capture::Capture)]) {
    let token = minted_token(None);
    let hand = [
        ("one", format!("{token};encoding=jwt")),
        ("list", format!("3a2f;encoding=hex, {token};encoding=jwt;purpose=isdn-uui")),
        ("lines", format!("\"call;1,2\";encoding=base64;content=x\n{token} ; encoding=JWT")),
        ("quoted", format!("\"{token}\";encoding=\"jwt\",abc;encoding=custom;purpose=\"a\\\"b\"")),
        ("two-tokens", format!("{token};encoding=jwt\n{token};encoding=jwt")),
    ];
    for (name, text) in &hand {
        corpus.add("uui_header", name, text.as_bytes());
    }
    let mut seen = BTreeSet::new();
    for (name, _, bytes) in sip_messages(captures) {
        let Ok(Message::Request(r)) = message::parse(&bytes) else { continue };
        let values: Vec<&str> = r.headers.get_all("User-to-User").collect();
        let joined = values.join("\n");
        if !values.is_empty() && seen.insert(joined.clone()) {
            corpus.add("uui_header", &name, joined.as_bytes());
        }
    }
}

/// The first RTP and RTCP datagrams of each capture's first media stream.
fn media(corpus: &mut Corpus, captures: &[(String, capture::Capture)]) {
    let selector = |name: &str| match name {
        n if n.contains("pcma") => 1,
        n if n.contains("amrwb_be") => 2,
        n if n.contains("amrwb_octet") => 3,
        _ => 0,
    };
    for (name, c) in captures {
        let udp: Vec<&capture::Packet> =
            c.packets.iter().filter(|p| p.transport == Transport::Udp && !is_sip(&p.payload)).collect();
        let Some(first) = udp.iter().find(|p| RtpPacket::parse(&p.payload).is_ok() && !is_rtcp(&p.payload)) else {
            continue;
        };
        let target = if name.contains("srtp") { "srtp" } else { "rtp" };
        // One direction of one stream: the packets from the first one's source.
        let mut rtp = vec![selector(name)];
        let mut last = first.ts;
        for p in udp.iter().filter(|p| p.src == first.src && !is_rtcp(&p.payload)).take(12) {
            let delay = (p.ts.saturating_sub(last).as_millis().min(255)) as u8;
            last = p.ts;
            // SRTP seeds: raw records, bit 0 clear (captured with other keys: refused).
            rtp.extend(record(if target == "srtp" { delay & !1 } else { delay }, &p.payload));
        }
        corpus.add(target, name, &rtp);
        let rtcp: Vec<u8> =
            udp.iter().filter(|p| is_rtcp(&p.payload)).take(4).flat_map(|p| record(20, &p.payload)).collect();
        if !rtcp.is_empty() && target == "rtp" {
            corpus.add("rtcp", name, &[&[selector(name)][..], &rtcp].concat());
        }
    }

    // Built RTP: extension, CSRCs, padding; and a run of PCMU with a telephone event.
    let mut odd = vec![0x90 | 0x20 | 0x02, 0x80, 0, 1, 0, 0, 0, 160, 0, 0, 0, 9];
    odd.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]); // two CSRCs (count below)
    odd[0] = 0x80 | 0x20 | 0x10 | 0x02;
    odd.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0]); // one-word extension
    odd.extend_from_slice(&[0xFF; 20]);
    odd.extend_from_slice(&[0, 0, 3]); // padding of 3
    let mut run = vec![0];
    for i in 0..10u16 {
        run.extend(record(20, &rtp_packet(0, 100 + i, 160 * u32::from(i), &[0xFF; 160])));
    }
    run.extend(record(20, &rtp_packet(101, 110, 1600, &[5, 0x0A, 0, 160])));
    run.extend(record(20, &rtp_packet(101, 111, 1600, &[5, 0x8A, 1, 64])));
    run.extend(record(0, &odd));
    corpus.add("rtp", "built", &run);

    // Built RTCP: SR with a block about us, RR, and a BYE after the SDES.
    let block = ReportBlock {
        ssrc: Ssrc(OUR_SSRC),
        fraction_lost: 12,
        cumulative_lost: -3,
        highest_seq: 70_000,
        jitter: 40,
        lsr: 0x1234_5678,
        dlsr: 65_536,
    };
    let sr = rtcp_report(
        Some(SenderInfo { ntp: 0xE000_0000_8000_0000, rtp_timestamp: 160, packets: 10, octets: 1600 }),
        Some(block),
    );
    let rr = rtcp_report(None, Some(block));
    let mut with_bye = rtcp_report(None, None);
    with_bye.extend_from_slice(&[0x81, 203, 0, 1, 0, 0, 0, 9]);
    let built: Vec<u8> =
        [vec![0], record(0, &sr), record(20, &rr), record(20, &with_bye), record(5, &[0x80, 0, 0, 1, 0, 0, 0, 0])]
            .concat();
    corpus.add("rtcp", "built", &built);

    // SRTP with the fixed keys, each suite: plain packets the peer protects, the same protected
    // (raw, as on the wire), a flipped one, and an SRTCP report.
    for (i, suite) in SrtpSuite::ALL.into_iter().enumerate() {
        let mut peer = SrtpSession::new(&srtp_keys(suite, false)).unwrap();
        let mut seed = vec![i as u8];
        for n in 0..4u16 {
            seed.extend(record(1 | (20 & !1), &rtp_packet(0, 500 + n, 160 * u32::from(n), &[0xD5; 160])));
        }
        let mut wire = rtp_packet(0, 600, 16_000, &[0x55; 160]);
        let len = wire.len();
        wire.resize(len + 64, 0);
        let n = peer.protect_rtp(&mut wire, len).unwrap();
        seed.extend(record(20 & !1, &wire[..n]));
        seed.extend(record(0b0010_1011, &rtp_packet(0, 601, 16_160, &[0x55; 160])));
        let mut report = rtcp_report(None, Some(block));
        let len = report.len();
        report.resize(len + 64, 0);
        let n = peer.protect_rtcp(&mut report, len).unwrap();
        seed.extend(record(0, &report[..n]));
        seed.extend(record(1, &rtcp_report(Some(SenderInfo::default()), None)));
        corpus.add("srtp", &format!("built-{}", suite.name()), &seed);
    }
}

fn rtp_packet(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0; 12];
    RtpHeader { marker: seq % 10 == 0, payload_type: pt, sequence: seq, timestamp: ts, ssrc: Ssrc(0xCAFE) }
        .write(&mut out)
        .unwrap();
    out.extend_from_slice(payload);
    out
}

fn rtcp_report(sender_info: Option<SenderInfo>, block: Option<ReportBlock>) -> Vec<u8> {
    let mut out = [0u8; 256];
    let n = Report { ssrc: Ssrc(0xCAFE), sender_info, block, cname: b"peer@192.0.2.10" }.write(&mut out).unwrap();
    out[..n].to_vec()
}

/// The messages of docs/device-protocol.md.
fn device(corpus: &mut Corpus) {
    let token = minted_token(None);
    let messages = [
        ("hello", format!(r#"{{"type":"hello","token":"{token}","sdkVersion":"1.2.0"}}"#)),
        ("publish", r#"{"type":"publish","requestId":1,"audio":true,"video":false}"#.to_string()),
        ("unpublish", r#"{"type":"unpublish","requestId":2}"#.to_string()),
        ("answer", format!(r#"{{"type":"answer","sdp":{}}}"#, serde_json_string(SDP_AMR))),
        (
            "candidate",
            r#"{"type":"candidate","candidate":"candidate:1 1 udp 2122260223 192.0.2.5 50000 typ host","sdpMid":"0","sdpMLineIndex":0}"#
                .to_string(),
        ),
        ("dtmf", r##"{"type":"dtmf","tones":"12#*AD"}"##.to_string()),
        ("ping", r#"{"type":"ping","id":42}"#.to_string()),
        ("bye", r#"{"type":"bye"}"#.to_string()),
        ("unknown", r#"{"type":"nope","x":[1,2.5e3,null,"\u00e9"]}"#.to_string()),
    ];
    for (name, text) in &messages {
        corpus.add("device_message", name, text.as_bytes());
    }
}

fn serde_json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A token of the fuzz key for `alice`, valid at the fuzz time.
fn minted_token(session: Option<&str>) -> String {
    let session = session.map(SessionId::from);
    token_fixture().1.mint(&ParticipantId::from("alice"), session.as_ref(), None, None, token_now())
}

fn tokens(corpus: &mut Corpus) {
    use interwork::config::InterconnectMode;
    let minter = &token_fixture().1;
    let now = token_now();
    let bob = ParticipantId::from("bob");
    let s1 = SessionId::from("s1");
    corpus.add("token_verify", "plain", minted_token(None).as_bytes());
    corpus.add("token_verify", "session", minted_token(Some("s1")).as_bytes());
    let mode = minter.mint(&bob, Some(&s1), Some(InterconnectMode::Bridge), None, now);
    corpus.add("token_verify", "mode", mode.as_bytes());
    let expired = minter.mint(&bob, None, None, None, now - std::time::Duration::from_secs(86_400));
    corpus.add("token_verify", "expired", expired.as_bytes());
    // The same claims unsigned (`alg: none`) and under HMAC: refused by algorithm.
    let claims = mode.split('.').nth(1).unwrap();
    corpus.add("token_verify", "alg-none", format!("eyJhbGciOiJub25lIn0.{claims}.").as_bytes());
    corpus.add("token_verify", "hs256", format!("eyJhbGciOiJIUzI1NiJ9.{claims}.c2ln").as_bytes());
    // Claims the target signs itself (first byte 0, then header, 0, claims).
    let signed = [
        (
            "signed-full",
            r#"{"sub":"alice","sid":"s1","aud":"interwork","iss":"fuzz","iat":1800000000,"exp":1800003600,"nbf":1799999000,"jti":"abcdefgh","mode":"conference"}"#,
        ),
        ("signed-aud-list", r#"{"sub":"bob","aud":["x","interwork"],"iss":"fuzz","exp":1800000010}"#),
        ("signed-no-exp", r#"{"sub":"bob","aud":"interwork","iss":"fuzz"}"#),
        ("signed-bad-sub", r#"{"sub":"a b","aud":"interwork","iss":"fuzz","exp":18446744073709551615}"#),
    ];
    for (name, claims) in signed {
        corpus.add("token_verify", name, &[&[0u8][..], claims.as_bytes()].concat());
    }
    let kid = [&[0u8][..], br#"{"alg":"ES256","kid":"nope","typ":"JWT"}"#, &[0], signed[0].1.as_bytes()].concat();
    corpus.add("token_verify", "signed-kid", &kid);
}

/// Each capture cut after its first records, under [`MAX_SEED`] bytes.
fn capture_files(corpus: &mut Corpus, dir: &Path) {
    for path in capture_paths(dir) {
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let cut = if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) { cut_pcapng(&bytes) } else { cut_pcap(&bytes) };
        corpus.add("capture", &name, &cut);
    }
}

/// The pcap header and whole records while they fit.
fn cut_pcap(bytes: &[u8]) -> Vec<u8> {
    let big = bytes[0] == 0xa1;
    let u32_at = |at: usize| {
        let b = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        if big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
    };
    let mut end = 24;
    while end + 16 <= bytes.len() {
        let next = end + 16 + u32_at(end + 8) as usize;
        if next > MAX_SEED || next > bytes.len() {
            break;
        }
        end = next;
    }
    bytes[..end].to_vec()
}

/// Whole pcapng blocks while they fit (little-endian sections, as ours are).
fn cut_pcapng(bytes: &[u8]) -> Vec<u8> {
    let mut end = 0;
    while end + 12 <= bytes.len() {
        let len = u32::from_le_bytes([bytes[end + 4], bytes[end + 5], bytes[end + 6], bytes[end + 7]]) as usize;
        if end + len > MAX_SEED || end + len > bytes.len() || len < 12 {
            break;
        }
        end += len;
    }
    bytes[..end].to_vec()
}
