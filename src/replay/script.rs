//! What to replay: the calls of a capture, seen from the client (the side that sent the first
//! request of each Call-ID), as a time-ordered list of requests with their causal waits, and the
//! client's RTP stream.
//!
//! Sans-IO: built from a [`Capture`], no sockets, no clock. Times are offsets from the first
//! SIP message of the capture.
//!
//! Causality: a request the client sent after it had seen a response in the capture waits for
//! the same kind of response in the replay ([`Wait`]): an ACK waits for the INVITE's final
//! answer, a CANCEL for the 1xx that the client saw before it cancelled, a BYE for the 200.
//! Retransmissions in the capture (a request with a branch and CSeq already seen) are dropped:
//! the player retransmits by itself.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;

use super::capture::{Capture, Packet, Transport};
use crate::sip::message::{self, Message, Method, Request, Response};
use crate::sip::sdp::SrtpSuite;

/// The calls of one capture.
#[derive(Debug)]
pub struct Script {
    /// In the order their first request was captured.
    pub calls: Vec<Call>,
}

/// One Call-ID of the capture, from the client's side.
#[derive(Clone, Debug)]
pub struct Call {
    /// 1-based, in capture order: how expectations and reports name the call.
    pub index: usize,
    /// The captured Call-ID.
    pub call_id: String,
    /// The transport the client used.
    pub transport: Transport,
    /// The client's SIP address in the capture.
    pub client: SocketAddr,
    /// The server's SIP address in the capture.
    pub server: SocketAddr,
    /// The client's requests, in order.
    pub steps: Vec<Step>,
    /// The client's RTP packets (RTCP is not replayed: the player makes none and needs none).
    pub media: Vec<MediaPacket>,
    /// The SDES key (suite, key and salt) the client offered, to decrypt its captured SRTP.
    pub captured_key: Option<(SrtpSuite, Vec<u8>)>,
    /// The participants (`sub` claims) named by the tokens in the client's INVITEs.
    pub participants: Vec<String>,
    /// The tokens themselves, as captured.
    pub tokens: Vec<String>,
}

impl Call {
    /// An outcome per client request, none answered yet; `note` says why, when known.
    pub fn unanswered(&self, note: Option<&str>) -> Vec<super::expect::RequestOutcome> {
        self.steps
            .iter()
            .map(|s| super::expect::RequestOutcome {
                method: s.request.method().to_string(),
                cseq: s.request.cseq(),
                response: None,
                note: note.map(str::to_string),
            })
            .collect()
    }
}

/// One request of the client.
#[derive(Clone, Debug)]
pub struct Step {
    /// When it was sent, from the start of the capture.
    pub at: Duration,
    /// The request.
    pub request: ClientRequest,
    /// Responses to earlier steps that the client had seen before sending it.
    pub waits: Vec<Wait>,
    /// The final status the server gave it in the capture, if captured.
    pub captured_status: Option<u16>,
}

/// A captured request: parsed when our parser takes it, else kept as bytes (a malformed
/// request is replayed as it was, with only its addresses and Call-ID changed).
#[derive(Clone, Debug)]
pub enum ClientRequest {
    /// Parsed.
    Parsed(Request),
    /// Refused by our parser; the method and CSeq as far as they can be read.
    Raw {
        /// The bytes.
        bytes: Vec<u8>,
        /// The start line's method.
        method: String,
        /// The CSeq number, when readable.
        cseq: Option<u32>,
    },
}

impl ClientRequest {
    /// The method's name.
    pub fn method(&self) -> &str {
        match self {
            Self::Parsed(r) => r.method.as_str(),
            Self::Raw { method, .. } => method,
        }
    }

    /// The CSeq number, when readable.
    pub fn cseq(&self) -> Option<u32> {
        match self {
            Self::Parsed(r) => Some(r.cseq()),
            Self::Raw { cseq, .. } => *cseq,
        }
    }
}

/// Which response to an earlier step must have arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    /// Index of the earlier step in [`Call::steps`].
    pub step: usize,
    /// Any response, or a final one.
    pub kind: WaitFor,
}

/// The kind of response a [`Wait`] waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitFor {
    /// A provisional or final response.
    AnyResponse,
    /// A final response.
    Final,
}

/// One captured RTP packet of the client.
#[derive(Clone, Debug)]
pub struct MediaPacket {
    /// When it was sent, from the start of the capture.
    pub at: Duration,
    /// The datagram (SRTP when the call used SRTP).
    pub data: Vec<u8>,
}

/// Why a capture has nothing to replay.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// No datagram or TCP message looked like SIP.
    #[error("no SIP messages in the capture ({packets} UDP datagrams and TCP messages, {skipped} other frames)")]
    NoSip {
        /// Packets seen.
        packets: usize,
        /// Frames skipped.
        skipped: usize,
    },
    /// SIP, but no request started a call.
    #[error("SIP messages but no request from a client in the capture")]
    NoCalls,
}

/// Finds the calls of `capture`.
pub fn build(capture: &Capture) -> Result<Script, ScriptError> {
    let sip: Vec<(&Packet, Sip)> =
        capture.packets.iter().filter(|p| looks_like_sip(&p.payload)).map(|p| (p, Sip::read(&p.payload))).collect();
    if sip.is_empty() {
        return Err(ScriptError::NoSip { packets: capture.packets.len(), skipped: capture.skipped });
    }
    let t0 = sip[0].0.ts;
    // 1. Group by Call-ID, in the order of each Call-ID's first request.
    let mut order: Vec<String> = Vec::new();
    for (_, m) in &sip {
        if m.is_request() && !order.contains(&m.call_id) {
            order.push(m.call_id.clone());
        }
    }
    let mut calls = Vec::new();
    for call_id in order {
        let messages: Vec<&(&Packet, Sip)> = sip.iter().filter(|(_, m)| m.call_id == call_id).collect();
        // The first request's sender is the client (`order` holds only Call-IDs with one).
        let Some((first, _)) = messages.iter().find(|(_, m)| m.is_request()) else { continue };
        let (client, server, transport) = (first.src, first.dst, first.transport);
        let index = calls.len() + 1;
        calls.push(build_call(index, call_id, client, server, transport, &messages, capture, t0));
    }
    if calls.is_empty() {
        return Err(ScriptError::NoCalls);
    }
    Ok(Script { calls })
}

#[allow(clippy::too_many_arguments)]
fn build_call(
    index: usize,
    call_id: String,
    client: SocketAddr,
    server: SocketAddr,
    transport: Transport,
    messages: &[&(&Packet, Sip)],
    capture: &Capture,
    t0: Duration,
) -> Call {
    let mut steps: Vec<Step> = Vec::new();
    let mut seen: HashSet<(String, Option<u32>, Option<String>)> = HashSet::new();
    let mut participants = Vec::new();
    let mut tokens: Vec<String> = Vec::new();
    let mut client_media: Vec<SocketAddr> = Vec::new();
    let mut server_media: Vec<SocketAddr> = Vec::new();
    let mut captured_key = None;
    // Responses of the server: (time, cseq, method, status).
    let mut responses: Vec<(Duration, Option<u32>, String, u16)> = Vec::new();
    for (packet, sip) in messages {
        let from_client = packet.src == client;
        if let Some(body) = sip.body() {
            let addr = media_addr(body);
            if from_client {
                client_media.extend(addr);
                if captured_key.is_none() {
                    captured_key = sdes_key(body);
                }
            } else {
                server_media.extend(addr);
            }
        }
        match (&sip.message, from_client) {
            (Some(Message::Response(r)), false) => {
                let (cseq, method) = cseq_of(&r.headers);
                responses.push((packet.ts.saturating_sub(t0), cseq, method, r.status));
            }
            (Some(Message::Request(r)), true) => {
                let key = (r.method.as_str().to_string(), Some(r.cseq()), r.branch().map(str::to_string));
                if !seen.insert(key) {
                    continue;
                }
                if r.method == Method::Invite {
                    for token in jwts(r) {
                        if !tokens.contains(&token) {
                            tokens.push(token);
                        }
                    }
                    for sub in token_subjects(r) {
                        if !participants.contains(&sub) {
                            participants.push(sub);
                        }
                    }
                }
                steps.push(Step {
                    at: packet.ts.saturating_sub(t0),
                    request: ClientRequest::Parsed(r.clone()),
                    waits: Vec::new(),
                    captured_status: None,
                });
            }
            (None, true) if sip.is_request() => {
                let text = String::from_utf8_lossy(&packet.payload);
                let cseq = raw_header(&text, &["CSeq"]).and_then(|v| v.split_whitespace().next()?.parse().ok());
                let method = text.split(' ').next().unwrap_or_default().to_string();
                if !seen.insert((method.clone(), cseq, raw_header(&text, &["Via", "v"]))) {
                    continue;
                }
                steps.push(Step {
                    at: packet.ts.saturating_sub(t0),
                    request: ClientRequest::Raw { bytes: packet.payload.clone(), method, cseq },
                    waits: Vec::new(),
                    captured_status: None,
                });
            }
            // The client's responses to the server's requests: the player makes its own.
            _ => {}
        }
    }
    // 2. Waits and captured outcomes.
    for i in 0..steps.len() {
        let at = steps[i].at;
        let mut waits = Vec::new();
        for (j, earlier) in steps[..i].iter().enumerate() {
            if earlier.request.method() == "ACK" {
                continue;
            }
            let answered: Vec<u16> = responses
                .iter()
                .filter(|(t, cseq, method, _)| {
                    *t <= at && *cseq == earlier.request.cseq() && method == earlier.request.method()
                })
                .map(|r| r.3)
                .collect();
            if answered.iter().any(|s| *s >= 200) {
                waits.push(Wait { step: j, kind: WaitFor::Final });
            } else if !answered.is_empty() {
                waits.push(Wait { step: j, kind: WaitFor::AnyResponse });
            }
        }
        steps[i].waits = waits;
        steps[i].captured_status = responses
            .iter()
            .find(|(_, cseq, method, status)| {
                *status >= 200 && *cseq == steps[i].request.cseq() && method == steps[i].request.method()
            })
            .map(|r| r.3);
    }
    // 3. The client's RTP: from a media address it announced, or to one the server announced.
    let media = capture
        .packets
        .iter()
        .filter(|p| p.transport == Transport::Udp && p.src != client && is_rtp(&p.payload))
        .filter(|p| client_media.contains(&p.src) || (server_media.contains(&p.dst) && p.src.ip() == client.ip()))
        .map(|p| MediaPacket { at: p.ts.saturating_sub(t0), data: p.payload.clone() })
        .collect();
    Call { index, call_id, transport, client, server, steps, media, captured_key, participants, tokens }
}

/// One SIP message of the capture, parsed if our parser takes it.
struct Sip {
    message: Option<Message>,
    raw: Vec<u8>,
    call_id: String,
}

impl Sip {
    fn read(bytes: &[u8]) -> Self {
        let message = message::parse(bytes).ok();
        let call_id = match &message {
            Some(Message::Request(r)) => r.call_id().to_string(),
            Some(Message::Response(r)) => r.headers.get("Call-ID").unwrap_or_default().to_string(),
            None => raw_header(&String::from_utf8_lossy(bytes), &["Call-ID", "i"]).unwrap_or_default(),
        };
        Self { message, raw: bytes.to_vec(), call_id }
    }

    fn is_request(&self) -> bool {
        match &self.message {
            Some(m) => matches!(m, Message::Request(_)),
            None => !self.raw.starts_with(b"SIP/2.0 "),
        }
    }

    fn body(&self) -> Option<&[u8]> {
        let Some(Message::Request(Request { body, .. }) | Message::Response(Response { body, .. })) = &self.message
        else {
            return None;
        };
        (!body.is_empty()).then_some(body.as_slice())
    }
}

/// The start line of a request or response.
pub fn looks_like_sip(payload: &[u8]) -> bool {
    let line_end = payload.iter().position(|b| *b == b'\n').unwrap_or(payload.len());
    let line = String::from_utf8_lossy(&payload[..line_end.min(2048)]);
    let line = line.trim_end();
    if line.starts_with("SIP/2.0 ") {
        return true;
    }
    let mut parts = line.split(' ');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(m), Some(_), Some("SIP/2.0")) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase())
    )
}

/// Version 2 and not an RTCP packet type (RFC 5761 §4).
pub fn is_rtp(payload: &[u8]) -> bool {
    payload.len() >= 12 && payload[0] >> 6 == 2 && !(200..=206).contains(&payload[1])
}

/// CSeq number and method of a message's headers.
pub fn cseq_of(headers: &message::Headers) -> (Option<u32>, String) {
    match headers.get("CSeq").map(message::parse_cseq) {
        Some(Ok((n, m))) => (Some(n), m.to_string()),
        _ => (None, String::new()),
    }
}

/// The first value of a header of an unparsed message, by any of its names.
pub fn raw_header(text: &str, names: &[&str]) -> Option<String> {
    text.split("\r\n\r\n").next()?.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        names.iter().any(|x| x.eq_ignore_ascii_case(n.trim())).then(|| v.trim().to_string())
    })
}

/// Where the first enabled audio m-line of `sdp` receives RTP (none when on hold at 0.0.0.0).
pub fn media_addr(sdp: &[u8]) -> Option<SocketAddr> {
    let session = crate::sip::sdp::parse_bounded(sdp).ok()?;
    let index = session.medias.iter().position(crate::sip::sdp::is_enabled_audio)?;
    let line = crate::sip::sdp::read_audio(&session, index).ok()?;
    (!line.rtp.ip().is_unspecified()).then_some(line.rtp)
}

/// The first usable `a=crypto` key of `sdp`.
pub fn sdes_key(sdp: &[u8]) -> Option<(SrtpSuite, Vec<u8>)> {
    let session = crate::sip::sdp::parse_bounded(sdp).ok()?;
    let index = session.medias.iter().position(crate::sip::sdp::is_enabled_audio)?;
    let line = crate::sip::sdp::read_audio(&session, index).ok()?;
    line.cryptos.into_iter().flatten().next().map(|c| (c.suite, c.key))
}

/// The `sub` claims of the JWTs in the request's User-to-User headers (read, not verified:
/// they only name whom to stand in for).
pub fn token_subjects(request: &Request) -> Vec<String> {
    jwts(request).iter().filter_map(|t| jwt_claim(t, "sub")).collect()
}

/// The JWTs (`encoding=jwt` elements) of the request's User-to-User headers.
pub fn jwts(request: &Request) -> Vec<String> {
    let mut out = Vec::new();
    for value in request.headers.get_all("User-to-User") {
        for element in message::split_list(value) {
            if let Some(token) = jwt_of(&element) {
                out.push(token.to_string());
            }
        }
    }
    out
}

/// The token of a User-to-User element with `encoding=jwt`.
pub fn jwt_of(element: &str) -> Option<&str> {
    let (token, params) = element.split_once(';')?;
    params.split(';').any(|p| p.trim().eq_ignore_ascii_case("encoding=jwt")).then(|| token.trim().trim_matches('"'))
}

/// A string claim of a JWT's payload, unverified.
pub fn jwt_claim(token: &str, claim: &str) -> Option<String> {
    jwt_claims(token)?.get(claim)?.as_str().map(str::to_string)
}

/// A JWT's payload, unverified.
pub fn jwt_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(ms: u64, src: &str, dst: &str, payload: &str) -> Packet {
        Packet {
            // Captures carry wall-clock times: the script must work relative to the first.
            ts: Duration::from_secs(1_700_000_000) + Duration::from_millis(ms),
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            transport: Transport::Udp,
            payload: payload.as_bytes().to_vec(),
        }
    }

    fn req(method: &str, cseq: u32, branch: &str) -> String {
        format!(
            "{method} sip:gw@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch={branch}\r\nFrom: <sip:a@x>;tag=1\r\n\
             To: <sip:gw@y>\r\nCall-ID: c1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    }

    fn resp(status: u16, cseq: u32, method: &str) -> String {
        format!(
            "SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=b\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:gw@y>;tag=2\r\n\
             Call-ID: c1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    }

    #[test]
    fn steps_wait_for_what_the_client_saw_and_retransmissions_go() {
        let (c, s) = ("10.0.0.1:5060", "10.0.0.2:5060");
        let capture = Capture {
            packets: vec![
                udp(0, c, s, &req("INVITE", 1, "z9hG4bK1")),
                udp(500, c, s, &req("INVITE", 1, "z9hG4bK1")),
                udp(510, s, c, &resp(180, 1, "INVITE")),
                udp(600, c, s, &req("CANCEL", 1, "z9hG4bK1")),
                udp(610, s, c, &resp(200, 1, "CANCEL")),
                udp(620, s, c, &resp(487, 1, "INVITE")),
                udp(630, c, s, &req("ACK", 1, "z9hG4bK1")),
            ],
            ..Capture::default()
        };
        let script = build(&capture).unwrap();
        let call = &script.calls[0];
        let methods: Vec<&str> = call.steps.iter().map(|s| s.request.method()).collect();
        assert_eq!(methods, ["INVITE", "CANCEL", "ACK"]);
        assert_eq!(call.steps[1].waits, [Wait { step: 0, kind: WaitFor::AnyResponse }]);
        assert_eq!(
            call.steps[2].waits,
            [Wait { step: 0, kind: WaitFor::Final }, Wait { step: 1, kind: WaitFor::Final }]
        );
        assert_eq!(call.steps[0].captured_status, Some(487));
        assert_eq!(call.client, c.parse().unwrap());
    }

    #[test]
    fn the_generated_refusal_waits_for_its_final_answer() {
        let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/pcaps/bad_token.pcap")).unwrap();
        let script = build(&crate::replay::capture::read(&bytes).unwrap()).unwrap();
        let call = &script.calls[0];
        assert_eq!(call.steps.len(), 2);
        assert_eq!(call.steps[0].captured_status, Some(403));
        assert_eq!(call.steps[1].waits, [Wait { step: 0, kind: WaitFor::Final }]);
    }

    #[test]
    fn no_sip_is_an_error() {
        let capture = Capture { packets: vec![udp(0, "1.1.1.1:1", "2.2.2.2:2", "hello")], ..Capture::default() };
        assert!(matches!(build(&capture), Err(ScriptError::NoSip { .. })));
    }

    #[test]
    fn token_subjects_are_read_from_uui() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"alice","exp":1}"#);
        let token = format!("eyJhbGciOiJFUzI1NiJ9.{claims}.c2ln");
        let text = format!(
            "INVITE sip:gw@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:gw@h>\r\n\
             Call-ID: c\r\nCSeq: 1 INVITE\r\nUser-to-User: 00ff;encoding=hex, {token};encoding=jwt\r\nContent-Length: 0\r\n\r\n"
        );
        let Ok(Message::Request(r)) = message::parse(text.as_bytes()) else { panic!("parse") };
        assert_eq!(token_subjects(&r), ["alice"]);
    }

    #[test]
    fn rtp_and_sip_are_told_apart() {
        assert!(looks_like_sip(b"INVITE sip:a@b SIP/2.0\r\n"));
        assert!(looks_like_sip(b"SIP/2.0 200 OK\r\n"));
        assert!(!looks_like_sip(b"\x80\x00\x00\x01"));
        assert!(is_rtp(&[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_rtp(&[0x80, 200, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0]));
    }
}
