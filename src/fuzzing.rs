//! Fuzz entry points for every parser that reads peer input, shared by the cargo-fuzz targets
//! in `fuzz/` and by the `fuzz_corpus` test that replays the committed corpus on every
//! `cargo test`. Each takes arbitrary bytes and panics only on a bug (a broken invariant or a
//! crash in the code under test), never on bad input. Hidden from the docs: not part of the API.
//!
//! The media targets read their input as records (see [`record`]): one control byte, a 2-byte
//! big-endian length and that many bytes, so that one input is a sequence of datagrams.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use crate::config::TokensConfig;
use crate::ids::{self, ParticipantId, SessionId};
use crate::media::leg::{LegConfig, MTU, SipLeg};
use crate::media::resample::WIDE_FRAME;
use crate::media::rtcp::{Report, is_rtcp, parse_compound};
use crate::media::rtp::{RtpHeader, RtpPacket, Ssrc};
use crate::media::srtp::{SrtpError, SrtpSession};
use crate::sip::framing::{Frame, StreamFramer};
use crate::sip::message::{self, Message, ParseError};
use crate::sip::refusal::Refusal;
use crate::sip::sdp::SrtpPolicy;
use crate::sip::sdp::{
    self, AmrWbParams, Codec, Format, LocalMedia, Negotiated, PendingOffer, Policy, SrtpKeys, SrtpSuite,
};
use crate::sip::transaction::{Limits, Peer, Timers, Transactions, Transport, TxOutput};
use crate::sip::uui::{self, UuiEncoding, UuiToken};
use crate::tokens::{Minter, NodeKey, ParticipantDirectory, Verifier};
use crate::webrtc::protocol::{ClientMessage, ErrorCode, ServerMessage, is_dtmf_tone};

// ---------------------------------------------------------------------------------------------
// SIP messages
// ---------------------------------------------------------------------------------------------

/// One UDP datagram as the transport reads it: our parser, the 400/505 answer to what it
/// refuses, and the transaction layer on what it accepts (the message twice, as a
/// retransmission, the user's answer to each new request, and every timer).
///
/// Asserts: what our parser accepts writes back to a message that parses equal (Content-Length
/// aside); an answer is one whole SIP response head (no blank line before its end); everything
/// the transaction layer transmits parses again, and it holds nothing once its timers ran.
pub fn sip_udp(data: &[u8]) {
    let msg = match message::parse(data) {
        Ok(msg) => msg,
        Err(e) => {
            let refusal = Refusal::Malformed(e);
            if let Some(answer) = refusal.answer_unparsed(data) {
                assert_response_head(&answer, Some(refusal.status()));
            }
            return;
        }
    };
    assert_round_trip(&msg);
    let mut txs = Transactions::new(Timers::default(), Limits::default());
    let now = Instant::now();
    let peer =
        Peer { addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060), transport: Transport::Udp, conn: None };
    for _ in 0..2 {
        txs.handle_message(now, msg.clone(), peer);
        drain_transactions(&mut txs, now);
    }
    txs.handle_timeout(now + Duration::from_secs(3600));
    drain_transactions(&mut txs, now);
    assert_eq!(txs.len(), (0, 0), "transactions left after every timer ran");
}

/// Drains the layer's outputs: transmitted bytes must parse; new requests get a final answer.
fn drain_transactions(txs: &mut Transactions, now: Instant) {
    while let Some(output) = txs.poll_output() {
        match output {
            TxOutput::Transmit { bytes, .. } => {
                if let Err(e) = message::parse(&bytes) {
                    // Writing can lengthen a message past a size limit (compact names expanded).
                    assert!(matches!(e, ParseError::TooLarge(_)), "we sent what does not parse: {e}");
                }
            }
            TxOutput::Request { tx, request, .. } => {
                txs.respond(now, tx, &message::Response::to(&request, 486, "Busy Here", Some("f")));
            }
            _ => {}
        }
    }
}

/// Parse → write → parse gives the same message, Content-Length aside (it is always written).
fn assert_round_trip(msg: &Message) {
    let bytes = match msg {
        Message::Request(r) => r.to_bytes(),
        Message::Response(r) => r.to_bytes(),
    };
    let again = match message::parse(&bytes) {
        Ok(again) => again,
        // Writing can lengthen a message past a size limit (compact names, unfolded lines).
        Err(ParseError::TooLarge(_)) => return,
        Err(e) => panic!("our own serialization does not parse: {e}\n{}", String::from_utf8_lossy(&bytes)),
    };
    let strip = |m: &Message| {
        let mut m = m.clone();
        match &mut m {
            Message::Request(r) => r.headers.remove("Content-Length"),
            Message::Response(r) => r.headers.remove("Content-Length"),
        }
        m
    };
    assert_eq!(strip(&again), strip(msg), "parse → write → parse differs");
}

/// `SIP/2.0 <status> ...` whose head ends at the end of the bytes, with `Content-Length: 0`.
fn assert_response_head(bytes: &[u8], status: Option<u16>) {
    let text = String::from_utf8_lossy(bytes);
    let code: u16 = text
        .strip_prefix("SIP/2.0 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {text:?}"));
    if let Some(status) = status {
        assert_eq!(code, status, "{text}");
    }
    assert!([400, 405, 505, 513].contains(&code), "unexpected answer {code}");
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    assert_eq!(end, Some(bytes.len()), "the answer's head ends early (a header value broke a line):\n{text}");
    assert!(text.ends_with("Content-Length: 0\r\n\r\n"), "{text}");
}

/// A TCP byte stream through the framer the daemon runs on SIP over TCP and TLS
/// ([`StreamFramer`]), delivered in chunks whose sizes come from the first two bytes; each
/// framed message then goes through our parser as the transport does. The replay's own framer
/// (`replay::capture::message_len`) cuts the same stream.
///
/// Asserts: the frames do not depend on where the stream was split (compared with the whole
/// stream delivered at once); our parser's round trip on each; an answer to a refused message
/// is a whole response head; the replay framer's cuts stay inside the stream.
pub fn sip_tcp(data: &[u8]) {
    let [s0, s1, stream @ ..] = data else { return };
    let whole = frame_stream(stream, &mut std::iter::once(stream.len()));
    let mut seed = u32::from(u16::from_be_bytes([*s0, *s1])) | 0x1_0000;
    let mut chunks = std::iter::from_fn(|| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        // Mostly small chunks, some large, so messages are cut anywhere.
        Some(if seed & 0x100 != 0 { 1 + (seed as usize >> 9) % 8 } else { 1 + (seed as usize >> 9) % 700 })
    });
    let split = frame_stream(stream, &mut chunks);
    assert_eq!(whole.0, split.0, "framing depends on how the stream was split");
    for bytes in &whole.0 {
        if let Ok(msg) = message::parse(bytes) {
            assert_round_trip(&msg);
        }
    }
    // The replay's framer over the same bytes (keepalive CRLFs skipped as it does).
    let mut rest = stream;
    loop {
        let skip = rest.iter().position(|b| *b != b'\r' && *b != b'\n').unwrap_or(rest.len());
        rest = &rest[skip..];
        let Some(len) = crate::replay::capture::message_len(rest) else { break };
        assert!((4..=rest.len()).contains(&len), "message_len {len} of {}", rest.len());
        rest = &rest[len..];
    }
}

/// Feeds `stream` to a [`StreamFramer`] in chunks of the given sizes; returns each framed
/// message up to the first error, and whether one happened.
fn frame_stream(stream: &[u8], chunks: &mut dyn Iterator<Item = usize>) -> (Vec<Vec<u8>>, bool) {
    let mut framer = StreamFramer::new(message::MAX_MESSAGE_LEN);
    let mut out = Vec::new();
    let mut fed = 0;
    while fed < stream.len() {
        let n = chunks.next().unwrap_or(stream.len()).clamp(1, stream.len() - fed);
        framer.push(&stream[fed..fed + n]);
        fed += n;
        loop {
            match framer.next_frame() {
                Ok(Some(Frame::Message(m))) => out.push(m),
                Ok(Some(Frame::Ping)) => out.push(b"ping".to_vec()),
                Ok(None) => break,
                Err(e) => {
                    let status = Refusal::Unframed(e.clone()).status();
                    if let Some(answer) = Refusal::answer_unframed(e) {
                        assert_response_head(&answer, Some(status));
                    }
                    return (out, true);
                }
            }
        }
    }
    (out, false)
}

// ---------------------------------------------------------------------------------------------
// SDP
// ---------------------------------------------------------------------------------------------

/// Our side in the SDP target: a fixed address, port and `o=` line.
fn local_media() -> LocalMedia {
    LocalMedia {
        addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        rtp_port: 40_000,
        session_id: 7,
        session_version: 1,
        keying: std::array::from_fn(|i| i as u8),
    }
}

/// Our late offers (plain and SRTP), made once: the answers in an ACK are checked against them.
fn pending_offers() -> &'static [PendingOffer; 2] {
    static OFFERS: OnceLock<[PendingOffer; 2]> = OnceLock::new();
    OFFERS.get_or_init(|| {
        let local = local_media();
        [
            sdp::offer(&local, &Policy { srtp: SrtpPolicy::Optional }).1,
            sdp::offer(&local, &Policy { srtp: SrtpPolicy::Mandatory }).1,
        ]
    })
}

/// An SDP offer answered under `media.srtp = "optional"` ([`sdp::answer`]), and the same bytes
/// taken as the answer to our plain and SRTP late offers ([`sdp::accept_answer`]).
///
/// Asserts: our answer parses, has one m-line per offered one, and its active m-line reads back
/// as what was agreed (profile, address, direction, codec and its AMR-WB parameters, ptime,
/// events, comfort noise, rtcp-mux, our key); answering the same offer again with the agreement
/// as `previous` gives the same SDP and agreement (RFC 3264 §8); an accepted answer keeps our
/// offer's profile, codec numbers and crypto tags.
pub fn sdp_offer(data: &[u8]) {
    let local = local_media();
    let policy = Policy { srtp: SrtpPolicy::Optional };
    match sdp::answer(data, &local, &policy, None) {
        Ok((answer, negotiated)) => {
            check_answer(data, &answer, &negotiated, &local);
            let (again, renegotiated) = sdp::answer(data, &local, &policy, Some(&negotiated))
                .unwrap_or_else(|e| panic!("the same offer is refused the second time: {e}"));
            assert_eq!(again, answer, "an unchanged re-offer changes the answer");
            assert_eq!(renegotiated, negotiated);
        }
        Err(e) => {
            let refusal = Refusal::Sdp(e);
            let _ = (refusal.status(), refusal.warn_code(), refusal.to_string());
        }
    }
    for pending in pending_offers() {
        if let Ok(n) = sdp::accept_answer(pending, data) {
            assert_eq!(n.profile.is_secure(), pending.profile().is_secure());
            assert!([96, 97, 0, 8].contains(&n.payload_type), "not one of our payload types: {}", n.payload_type);
            assert_eq!(n.srtp.is_some(), pending.profile().is_secure());
            if let Some(k) = &n.srtp {
                assert!((1..=3).contains(&k.tag), "not one of our crypto tags: {}", k.tag);
                assert_eq!(k.remote_key.len(), k.suite.master_len());
            }
        }
    }
}

fn check_answer(offer: &[u8], answer: &str, n: &Negotiated, local: &LocalMedia) {
    let offered = sdp::parse_bounded(offer).expect("an answered offer parses");
    let session =
        sdp::parse_bounded(answer.as_bytes()).unwrap_or_else(|e| panic!("our answer does not parse: {e}\n{answer}"));
    assert_eq!(session.medias.len(), offered.medias.len(), "one answer m-line per offered m-line");
    let active: Vec<usize> = (0..session.medias.len()).filter(|&i| sdp::is_enabled_audio(&session.medias[i])).collect();
    let [index] = active[..] else { panic!("{} active m-lines in our answer:\n{answer}", active.len()) };
    let line = sdp::read_audio(&session, index).unwrap_or_else(|e| panic!("our answer's m-line: {e}\n{answer}"));
    assert_eq!(line.profile, n.profile);
    assert_eq!(line.rtp, SocketAddr::new(local.addr, local.rtp_port));
    assert_eq!(line.direction, n.local_direction);
    assert_eq!(line.rtcp_mux, n.rtcp_mux);
    assert_eq!(line.ptime, Some(n.ptime_ms));
    // The codec reads back as agreed; the answer does not echo what only an offerer says.
    let expected = match &n.codec {
        Codec::AmrWb(p) => Codec::AmrWb(AmrWbParams { mode_change_capability: None, max_red: None, ..p.clone() }),
        other => other.clone(),
    };
    assert_eq!(line.formats.first(), Some(&(n.payload_type, Format::Codec(expected))), "{answer}");
    if let Some((pt, clock)) = n.telephone_event {
        assert!(
            line.formats
                .iter()
                .any(|(p, f)| *p == pt && matches!(f, Format::TelephoneEvent { clock: c, .. } if *c == clock)),
            "telephone-event {pt} does not read back:\n{answer}"
        );
    }
    if let Some(pt) = n.comfort_noise {
        assert!(line.formats.contains(&(pt, Format::ComfortNoise { clock: n.clock_rate })), "{answer}");
    }
    let first_crypto = line.cryptos.first().cloned();
    match &n.srtp {
        Some(k) => {
            let attr = first_crypto.expect("our crypto line").expect("our crypto line reads back");
            assert_eq!((attr.tag, attr.suite, &attr.key), (k.tag, k.suite, &k.local_key));
        }
        None => assert!(first_crypto.is_none()),
    }
}

// ---------------------------------------------------------------------------------------------
// User-to-User
// ---------------------------------------------------------------------------------------------

/// The `User-to-User` header values of one request ([`uui::participant_token`]): the input is
/// text, one header value per line.
///
/// Asserts: the values joined into one comma-separated header say the same thing; what was read
/// writes back (quoted where needed) to values that read the same.
pub fn uui_header(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let values: Vec<&str> = text.split('\n').map(|v| v.trim_end_matches('\r')).collect();
    let result = uui::participant_token(&values);
    let Ok(token) = result else { return };
    let joined = values.join(",");
    assert_eq!(uui::participant_token(&[joined.as_str()]), Ok(token.clone()), "one header or several differ");
    let written = write_uui(&token);
    if written.iter().all(|e| e.len() <= uui::MAX_ELEMENT_LEN) {
        let written: Vec<&str> = written.iter().map(String::as_str).collect();
        assert_eq!(uui::participant_token(&written), Ok(token), "write → read differs: {written:?}");
    }
}

/// One header value per element: the token first, then the others in order.
fn write_uui(t: &UuiToken) -> Vec<String> {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = vec![format!("{};encoding=jwt", t.token)];
    for e in &t.others {
        let mut v = quote(&e.data);
        match &e.encoding {
            UuiEncoding::Hex => v.push_str(";encoding=hex"),
            UuiEncoding::Base64 => v.push_str(";encoding=base64"),
            UuiEncoding::Jwt => unreachable!("the token is not among the others"),
            UuiEncoding::Other(o) => v.push_str(&format!(";encoding={}", quote(o))),
        }
        if let Some(p) = &e.purpose {
            v.push_str(&format!(";purpose={}", quote(p)));
        }
        out.push(v);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// RTP, RTCP, SRTP
// ---------------------------------------------------------------------------------------------

/// One record of a media target's input: a control byte, then `bytes` with a 2-byte length.
pub fn record(control: u8, bytes: &[u8]) -> Vec<u8> {
    let len = u16::try_from(bytes.len()).expect("a record holds at most 65535 bytes");
    let mut out = vec![control];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

/// The records of `data` (see [`record`]); a short length takes what is left.
fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&control, rest) = data.split_first()?;
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
            _ => (0, &rest[rest.len()..]),
        };
        let (bytes, tail) = rest.split_at(len.min(rest.len()));
        data = tail;
        Some((control, bytes))
    })
}

/// The SSRC our legs and RTCP parsing use: a report block about it is "about us".
pub const OUR_SSRC: u32 = 0x1F2E_3D4C;

/// The leg's peer address (RTP and RTCP come from it).
fn peer() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)), 50_000)
}

/// The fixed SRTP keys of the media targets: `ours` is the gateway's view (it decrypts with the
/// peer's key), the other the peer's (it encrypts with it).
pub fn srtp_keys(suite: SrtpSuite, ours: bool) -> SrtpKeys {
    let peer_key: Vec<u8> = (0..suite.master_len() as u8).map(|b| b.wrapping_mul(7) ^ 0x5A).collect();
    let our_key: Vec<u8> = (0..suite.master_len() as u8).collect();
    let (local_key, remote_key) = if ours { (our_key, peer_key) } else { (peer_key, our_key) };
    SrtpKeys { suite, tag: 1, remote_key, local_key }
}

/// The codecs a media target's leg may use, picked by the input's first byte.
fn leg_codec(selector: u8) -> Codec {
    match selector & 3 {
        0 => Codec::Pcmu,
        1 => Codec::Pcma,
        2 => Codec::AmrWb(AmrWbParams::new(false)),
        _ => Codec::AmrWb(AmrWbParams::new(true)),
    }
}

/// A SIP leg in virtual time, fed the peer's datagrams as the media driver does.
struct LegHarness {
    leg: SipLeg,
    now: Instant,
    last_poll: Instant,
    pcm: [i16; WIDE_FRAME],
    buf: Vec<u8>,
}

impl LegHarness {
    fn new(codec: Codec, srtp: Option<SrtpKeys>) -> Self {
        let now = Instant::now();
        let negotiated = Negotiated { comfort_noise: Some(13), ..Negotiated::sendrecv(codec, peer()) }.with_srtp(srtp);
        let config = LegConfig {
            ssrc: Ssrc(OUR_SSRC),
            initial_sequence: 100,
            initial_timestamp: 1000,
            cname: "fuzz@interwork".into(),
            wall_clock: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            latching: Default::default(),
        };
        let leg = SipLeg::new(now, &negotiated, config).expect("a leg for a fixed agreement");
        Self { leg, now, last_poll: now, pcm: [0; WIDE_FRAME], buf: vec![0; MTU] }
    }

    /// `datagram` arrives `advance_ms` after the previous one; the leg's audio is pulled every
    /// 20 ms of virtual time, its timers run and what it sends is drained.
    fn feed(&mut self, advance_ms: u8, datagram: &[u8]) {
        self.now += Duration::from_millis(u64::from(advance_ms));
        let _ = self.leg.handle_datagram(self.now, peer(), datagram);
        if self.now.duration_since(self.last_poll) >= Duration::from_millis(20) {
            let _ = self.leg.poll_audio(self.now, &mut self.pcm);
            self.leg.send_audio(self.now, &self.pcm);
            self.last_poll = self.now;
        }
        if self.leg.poll_timeout().is_some_and(|t| t <= self.now) {
            self.leg.handle_timeout(self.now);
        }
        while self.leg.poll_transmit(&mut self.buf).is_some() {}
        while self.leg.poll_event().is_some() {}
        let _ = self.leg.stats();
    }
}

/// RTP packets ([`RtpPacket::parse`]) and then a plain-RTP SIP leg receiving them (statistics,
/// jitter buffer, depacketizing, decoding). Input: one byte choosing the leg's codec (PCMU, PCMA,
/// AMR-WB bandwidth-efficient or octet-aligned), then records of (milliseconds since the last
/// datagram, datagram).
///
/// Asserts: the payload lies inside the packet after the header; the packet's fields written
/// with [`RtpHeader`] before its payload parse back the same.
pub fn rtp(data: &[u8]) {
    let Some((&selector, data)) = data.split_first() else { return };
    let mut harness = LegHarness::new(leg_codec(selector), None);
    for (advance, datagram) in records(data) {
        check_rtp(datagram);
        harness.feed(advance, datagram);
    }
}

fn check_rtp(datagram: &[u8]) {
    let Ok(p) = RtpPacket::parse(datagram) else { return };
    assert!(p.header_len >= 12 && p.header_len + p.payload.len() <= datagram.len());
    assert_eq!(&datagram[p.header_len..p.header_len + p.payload.len()], p.payload);
    let header = RtpHeader {
        marker: p.marker,
        payload_type: p.payload_type,
        sequence: p.sequence,
        timestamp: p.timestamp,
        ssrc: p.ssrc,
    };
    let mut buf = vec![0u8; 12 + p.payload.len()];
    let n = header.write(&mut buf).expect("room for the header");
    buf[n..].copy_from_slice(p.payload);
    let again = RtpPacket::parse(&buf).expect("a written packet parses");
    assert_eq!(again, RtpPacket { csrc_count: 0, header_len: 12, ..p }, "write → parse differs");
}

/// Compound RTCP ([`parse_compound`], our SSRC [`OUR_SSRC`]) and then a plain-RTP SIP leg
/// receiving it (sender reports, round trip). Input as for [`rtp`].
///
/// Asserts: what was read (sender SSRC, sender info, the block about us) written as our own
/// report reads back the same.
pub fn rtcp(data: &[u8]) {
    let Some((&selector, data)) = data.split_first() else { return };
    let mut harness = LegHarness::new(leg_codec(selector), None);
    for (advance, datagram) in records(data) {
        check_rtcp(datagram);
        harness.feed(advance, datagram);
    }
}

fn check_rtcp(datagram: &[u8]) {
    let _ = is_rtcp(datagram);
    let Ok(summary) = parse_compound(datagram, Ssrc(OUR_SSRC)) else { return };
    let Some(sender) = summary.sender_ssrc else {
        assert!(datagram.is_empty(), "a non-empty compound without a sender");
        return;
    };
    let report = Report { ssrc: sender, sender_info: summary.sender_info, block: summary.report, cname: b"fuzz" };
    let mut buf = [0u8; 256];
    let n = report.write(&mut buf).expect("room for one report");
    let again = parse_compound(&buf[..n], Ssrc(OUR_SSRC)).expect("our report parses");
    assert_eq!(again, crate::media::rtcp::RtcpSummary { bye: false, ..summary }, "write → parse differs");
}

/// SRTP and SRTCP unprotect ([`SrtpSession`]) with fixed keys ([`srtp_keys`]), then an SRTP SIP
/// leg (PCMU) receiving the same datagrams. Input: one byte choosing the suite, then records of
/// (operation, bytes). Operation bit 0 clear: the bytes are a datagram from the wire; set: they
/// are plain RTP or RTCP that the peer protects first, and bit 1 then flips a bit of the
/// protected packet at a position from the upper bits. The datagram goes to `unprotect_rtcp`
/// when it looks like RTCP (RFC 5761), else to `unprotect_rtp`.
///
/// Asserts: an untouched packet the peer protected and we accept decrypts to its plain text; a
/// packet with a flipped bit is never accepted; every refusal has a reason.
pub fn srtp(data: &[u8]) {
    let Some((&selector, data)) = data.split_first() else { return };
    let suite = SrtpSuite::ALL[usize::from(selector % 3)];
    let mut ours = SrtpSession::new(&srtp_keys(suite, true)).expect("a session for fixed keys");
    let mut theirs = SrtpSession::new(&srtp_keys(suite, false)).expect("a session for fixed keys");
    let mut harness = LegHarness::new(Codec::Pcmu, Some(srtp_keys(suite, true)));
    let mut wire = vec![0u8; 2 * MTU];
    let mut plain = vec![0u8; 2 * MTU];
    for (op, bytes) in records(data) {
        let (datagram, original) = if op & 1 == 0 {
            (bytes, None)
        } else {
            let len = bytes.len().min(MTU);
            wire[..len].copy_from_slice(&bytes[..len]);
            let protected =
                if is_rtcp(bytes) { theirs.protect_rtcp(&mut wire, len) } else { theirs.protect_rtp(&mut wire, len) };
            let Ok(n) = protected else { continue };
            let flipped = op & 2 != 0;
            if flipped {
                let at = usize::from(op >> 2) % n;
                wire[at] ^= 1 << (op >> 5);
            }
            (&wire[..n], (!flipped).then_some(&bytes[..len]))
        };
        let result = if is_rtcp(datagram) {
            ours.unprotect_rtcp(datagram, &mut plain)
        } else {
            ours.unprotect_rtp(datagram, &mut plain)
        };
        match (result, original) {
            (Ok(n), Some(original)) => assert_eq!(&plain[..n], original, "decrypts to another plain text"),
            (Ok(_), None) if op & 1 == 1 => panic!("a packet with a flipped bit was accepted"),
            (Ok(n), None) => {
                check_rtp(&plain[..n]);
                check_rtcp(&plain[..n]);
            }
            (Err(e), _) => {
                let _: SrtpError = e;
                let _ = e.to_string();
            }
        }
        harness.feed(op, datagram);
    }
}

// ---------------------------------------------------------------------------------------------
// Device WebSocket JSON
// ---------------------------------------------------------------------------------------------

/// One text message from a device, decoded as the signaling loop does
/// (`serde_json::from_str::<ClientMessage>`), and the `error` reply to what does not decode.
///
/// Asserts: a decoded message written back as the protocol's JSON decodes equal; DTMF tones are
/// checked one by one without trouble.
pub fn device_message(data: &[u8]) {
    // A WebSocket text frame is UTF-8: anything else never reaches the decoder.
    let Ok(text) = std::str::from_utf8(data) else { return };
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(msg) => {
            if let ClientMessage::Dtmf { tones } = &msg {
                let _ = tones.chars().filter(|c| is_dtmf_tone(*c)).count();
            }
            let json = client_message_json(&msg).to_string();
            let again: ClientMessage =
                serde_json::from_str(&json).unwrap_or_else(|e| panic!("our rewrite {json} does not decode: {e}"));
            assert_eq!(again, msg, "decode → write → decode differs");
        }
        Err(e) => {
            let reply = ServerMessage::error(ErrorCode::ProtocolError, format!("not a valid message: {e}"), None);
            serde_json::to_string(&reply).expect("our messages serialize");
        }
    }
}

/// The protocol's JSON for a client message (docs/device-protocol.md).
fn client_message_json(m: &ClientMessage) -> serde_json::Value {
    use serde_json::json;
    match m {
        ClientMessage::Hello { token, sdk_version } => {
            json!({"type": "hello", "token": token, "sdkVersion": sdk_version})
        }
        ClientMessage::Publish { request_id, audio, video } => {
            json!({"type": "publish", "requestId": request_id, "audio": audio, "video": video})
        }
        ClientMessage::Unpublish { request_id } => json!({"type": "unpublish", "requestId": request_id}),
        ClientMessage::Answer { sdp } => json!({"type": "answer", "sdp": sdp}),
        ClientMessage::Candidate { candidate, sdp_mid, sdp_m_line_index } => {
            json!({"type": "candidate", "candidate": candidate, "sdpMid": sdp_mid, "sdpMLineIndex": sdp_m_line_index})
        }
        ClientMessage::Dtmf { tones } => json!({"type": "dtmf", "tones": tones}),
        ClientMessage::Ping { id } => json!({"type": "ping", "id": id}),
        ClientMessage::Bye {} => json!({"type": "bye"}),
    }
}

// ---------------------------------------------------------------------------------------------
// Participant tokens
// ---------------------------------------------------------------------------------------------

/// The node key of the token target: a P-256 key generated once for fuzzing (`openssl genpkey
/// -algorithm EC -pkeyopt ec_paramgen_curve:P-256`) and fixed, so that the committed corpus's
/// valid tokens keep verifying. Never used outside fuzzing.
pub const TOKEN_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg/11rsqcIyuKPATh9
IlhvlkF11WYyYroGkOx8t4+rXYWhRANCAATZQ6IeBti4F0LrirAvFMEx2bX8VaJB
WqXx+dQuYxhxWkvYoS250WXQJUkRSgH3Z3R8NC9gR+vQTXrMe8J3PZM+
-----END PRIVATE KEY-----
";

/// The issuer of the token target's node.
pub const TOKEN_ISSUER: &str = "fuzz";

/// The time tokens are verified at (and the corpus's were minted at).
pub fn token_now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// The token target's key, verifier and minter, built once without I/O.
pub fn token_fixture() -> &'static (Verifier, Minter) {
    static FIXTURE: OnceLock<(Verifier, Minter)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = NodeKey::from_pem(TOKEN_KEY_PEM, std::path::Path::new("fuzz")).expect("the fuzz key");
        let config = TokensConfig {
            ttl: Duration::from_secs(3600),
            issuer: TOKEN_ISSUER.into(),
            signing_key: None,
            external_issuer: "external".into(),
            external_public_key: None,
            external_jwks: None,
            leeway: Duration::from_secs(30),
        };
        let verifier = Verifier::new(&key, &config).expect("no external keys to load");
        (verifier, Minter::new(std::sync::Arc::new(key), TOKEN_ISSUER, config.ttl))
    })
}

/// `header.claims.signature` with the fuzz key (ES256) over header and claims taken as bytes.
fn sign_token(input: &[u8]) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    static KEY: OnceLock<jsonwebtoken::EncodingKey> = OnceLock::new();
    let key =
        KEY.get_or_init(|| jsonwebtoken::EncodingKey::from_ec_pem(TOKEN_KEY_PEM.as_bytes()).expect("the fuzz key"));
    let (header, claims) = match input.iter().position(|b| *b == 0) {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (&br#"{"alg":"ES256"}"#[..], input),
    };
    let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), key, jsonwebtoken::Algorithm::ES256).expect("ES256 signing");
    format!("{message}.{signature}")
}

/// Everyone exists and is in session `s1` (and in a session named like itself).
struct EveryoneDirectory;

impl ParticipantDirectory for EveryoneDirectory {
    fn sessions_of(&self, participant: &ParticipantId) -> Option<Vec<SessionId>> {
        Some(vec![SessionId::from("s1"), SessionId::from(participant.to_string())])
    }
}

/// A participant token through [`Verifier::verify_participant`] against the fixed node key at
/// [`token_now`]. Input: arbitrary text as the token; or, after a first byte 0, a header and
/// claims (split at the next 0 byte; `{"alg":"ES256"}` when there is none) that the target
/// signs with the node key first, so the checks after the signature see arbitrary claims.
///
/// Asserts: an accepted token names a valid participant and session id and has not expired;
/// minting a token with what it said and verifying that gives the same participant, session,
/// mode and issuer; every refusal maps to 403 or 404.
pub fn token_verify(data: &[u8]) {
    let signed;
    let text = match data.split_first() {
        Some((0, rest)) => {
            signed = sign_token(rest);
            signed.as_str()
        }
        _ => match std::str::from_utf8(data) {
            Ok(text) => text,
            Err(_) => return,
        },
    };
    let (verifier, minter) = token_fixture();
    match verifier.verify_participant(text, token_now(), &EveryoneDirectory) {
        Ok(admission) => {
            let t = &admission.token;
            assert!(ids::is_valid_id(t.participant.as_str()));
            assert!(t.session.as_ref().is_none_or(|s| ids::is_valid_id(s.as_str())));
            assert!(
                t.expires_at.saturating_add(30) >= crate::tokens::unix_seconds(token_now()),
                "accepted after expiry"
            );
            let minted = minter.mint(&t.participant, t.session.as_ref(), t.mode, None, token_now());
            let again = verifier.verify(&minted, token_now()).expect("a minted token verifies");
            assert_eq!(
                (&again.participant, &again.session, again.mode, &again.issuer),
                (&t.participant, &t.session, t.mode, &t.issuer),
                "verify → mint → verify differs"
            );
        }
        Err(e) => {
            let status = Refusal::Token(e.clone()).status();
            assert!([403, 404].contains(&status), "{e}: {status}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Captures
// ---------------------------------------------------------------------------------------------

/// A pcap or pcapng file's bytes through the replay's capture reader
/// ([`crate::replay::capture::read`]: link layers, IP, UDP, TCP reassembly and SIP framing).
///
/// Asserts: packets come out in time order; every TCP packet is exactly one framed message.
pub fn capture(data: &[u8]) {
    use crate::replay::capture::{self, Transport};
    match capture::read(data) {
        Ok(c) => {
            assert!(c.packets.windows(2).all(|w| w[0].ts <= w[1].ts), "packets out of time order");
            for p in c.packets.iter().filter(|p| p.transport == Transport::Tcp) {
                assert_eq!(capture::message_len(&p.payload), Some(p.payload.len()), "a TCP message is not one message");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// A target's name (its directory under `fuzz/corpus/`) and body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target by name, for the corpus replay test.
pub const TARGETS: [Target; 10] = [
    ("sip_udp", sip_udp),
    ("sip_tcp", sip_tcp),
    ("sdp_offer", sdp_offer),
    ("uui_header", uui_header),
    ("rtp", rtp),
    ("rtcp", rtcp),
    ("srtp", srtp),
    ("device_message", device_message),
    ("token_verify", token_verify),
    ("capture", capture),
];
