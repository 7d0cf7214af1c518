//! Pure rewriting of the client's captured messages for the replay: addresses, Call-ID, tags,
//! branches, SDP `c=`/`m=` and SDES keys, tokens; and the messages the player makes itself (ACK,
//! answers to the gateway's requests).
//!
//! One [`CallRewriter`] per call keeps the mappings (captured tag or branch → fresh one) so that
//! a CANCEL keeps its INVITE's branch and every request of the dialog keeps one From tag.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::capture::Transport;
use super::script::{jwt_claim, jwt_of};
use crate::ids::random_id;
use crate::sip::message::{self, Headers, Method, Request, Response, header_param};
use crate::sip::sdp::{SrtpSuite, fresh_key, parse_crypto, write_crypto};

/// The rewriting state of one call.
#[derive(Debug)]
pub struct CallRewriter {
    /// The Call-ID the replay uses.
    pub call_id: String,
    /// Our SIP address (Via, Contact).
    pub local_sip: SocketAddr,
    /// Our transport.
    pub transport: Transport,
    /// The gateway's SIP address.
    pub target: SocketAddr,
    /// Where we receive RTP.
    pub local_rtp: SocketAddr,
    /// The gateway's To tag, once it answered.
    pub remote_tag: Option<String>,
    /// The gateway's Contact URI, once it answered.
    pub remote_target: Option<String>,
    /// Fresh SDES keys we offered, by suite (one per suite for the whole call).
    pub offered_keys: Vec<(u32, SrtpSuite, Vec<u8>)>,
    /// Tokens by participant (`sub`) to put in place of the captured ones.
    pub tokens: HashMap<String, String>,
    /// The last SDP we sent, for answering the gateway's re-offers.
    pub last_sdp: Option<String>,
    tags: HashMap<String, String>,
    branches: HashMap<String, String>,
}

impl CallRewriter {
    /// A rewriter with fresh identifiers.
    pub fn new(local_sip: SocketAddr, transport: Transport, target: SocketAddr, local_rtp: SocketAddr) -> Self {
        Self {
            call_id: format!("{}@replay", random_id(16)),
            local_sip,
            transport,
            target,
            local_rtp,
            remote_tag: None,
            remote_target: None,
            offered_keys: Vec::new(),
            tokens: HashMap::new(),
            last_sdp: None,
            tags: HashMap::new(),
            branches: HashMap::new(),
        }
    }

    /// The captured request as the replay sends it.
    pub fn request(&mut self, captured: &Request) -> Request {
        let mut out = captured.clone();
        let in_dialog = captured.to_tag().is_some();
        out.uri = match (&self.remote_target, in_dialog) {
            (Some(contact), true) => contact.clone(),
            _ => self.initial_uri(&captured.uri),
        };
        let branch = self.branch(captured.branch().unwrap_or(""));
        out.headers = Headers::default();
        for (name, value) in captured.headers.iter() {
            let value = match name.to_ascii_lowercase().as_str() {
                "via" => {
                    // Only ours: the first Via is added below, the captured ones go.
                    continue;
                }
                "route" | "record-route" => continue,
                "call-id" => self.call_id.clone(),
                "from" => self.retag(value),
                "to" => self.to_value(value),
                "contact" => self.contact(),
                "user-to-user" => rewrite_uui(value, &self.tokens),
                _ => value.to_string(),
            };
            out.headers.push(name, value);
        }
        let via = format!("SIP/2.0/{} {};branch={branch};rport", self.transport.via_name(), self.local_sip);
        let mut headers = Headers::default();
        headers.push("Via", via);
        for (n, v) in out.headers.iter() {
            headers.push(n, v);
        }
        out.headers = headers;
        if is_sdp(&captured.headers, &captured.body) {
            let sdp = self.sdp(&String::from_utf8_lossy(&captured.body));
            out.body = sdp.clone().into_bytes();
            self.last_sdp = Some(sdp);
        }
        out
    }

    /// A request our parser refused, with only its top Via and Call-ID changed: what made it
    /// malformed stays.
    pub fn raw(&mut self, bytes: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut out = String::new();
        let mut via_done = false;
        for (i, line) in head.split("\r\n").enumerate() {
            let name = line.split_once(':').map(|(n, _)| n.trim().to_ascii_lowercase());
            match name.as_deref() {
                _ if i == 0 => {
                    // Keep the method and version; the Request-URI goes to the target.
                    let mut parts = line.splitn(3, ' ');
                    let (method, uri, rest) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next());
                    match rest {
                        Some(rest) => out.push_str(&format!("{method} {} {rest}", self.initial_uri(uri))),
                        None => out.push_str(line),
                    }
                }
                Some("via" | "v") if !via_done => {
                    via_done = true;
                    let branch = self.branch(header_param(line, "branch").unwrap_or(""));
                    out.push_str(&format!(
                        "Via: SIP/2.0/{} {};branch={branch};rport",
                        self.transport.via_name(),
                        self.local_sip
                    ));
                }
                Some("via" | "v") => continue,
                Some("call-id" | "i") => out.push_str(&format!("Call-ID: {}", self.call_id)),
                Some("contact" | "m") => out.push_str(&format!("Contact: {}", self.contact())),
                _ => out.push_str(line),
            }
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.push_str(body);
        out.into_bytes()
    }

    /// The ACK for the final response `response` to `invite` (as sent): for a 2xx a new
    /// transaction to the gateway's Contact carrying the captured ACK's body (a late offer's
    /// answer); for others the INVITE's own branch and URI (RFC 3261 §17.1.1.3).
    pub fn ack(&mut self, invite: &Request, response: &Response, captured: Option<&Request>) -> Request {
        let success = (200..300).contains(&response.status);
        let mut headers = Headers::default();
        let via = if success {
            format!("SIP/2.0/{} {};branch=z9hG4bK{};rport", self.transport.via_name(), self.local_sip, random_id(12))
        } else {
            invite.headers.get("Via").unwrap_or_default().to_string()
        };
        headers.push("Via", via);
        headers.push("Max-Forwards", "70");
        for name in ["From", "Call-ID"] {
            headers.push(name, invite.headers.get(name).unwrap_or_default());
        }
        headers.push("To", response.headers.get("To").unwrap_or_default());
        headers.push("CSeq", format!("{} ACK", invite.cseq()));
        let mut body = Vec::new();
        if success {
            headers.push("Contact", self.contact());
            if let Some(ack) = captured
                && is_sdp(&ack.headers, &ack.body)
            {
                let sdp = self.sdp(&String::from_utf8_lossy(&ack.body));
                headers.push("Content-Type", "application/sdp");
                body = sdp.clone().into_bytes();
                self.last_sdp = Some(sdp);
            }
        }
        let uri = match (&self.remote_target, success) {
            (Some(contact), true) => contact.clone(),
            _ => invite.uri.clone(),
        };
        Request { method: Method::Ack, uri, headers, body }
    }

    /// Learns the dialog from a response to an INVITE: the gateway's tag and Contact.
    pub fn learn(&mut self, response: &Response) {
        if let Some(tag) = response.headers.get("To").and_then(|v| header_param(v, "tag")).filter(|t| !t.is_empty())
            && (200..300).contains(&response.status)
        {
            self.remote_tag = Some(tag.to_string());
        }
        if let Some(contact) = response.headers.get("Contact")
            && (200..300).contains(&response.status)
        {
            self.remote_target = Some(message::header_uri(contact).to_string());
        }
    }

    /// Our 200 to a request of the gateway (BYE, re-INVITE, UPDATE, OPTIONS, INFO). A re-offer
    /// is answered with our last SDP, its direction answering the gateway's (RFC 3264 §6.1).
    pub fn answer(&self, request: &Request) -> Response {
        let mut response = Response::to(request, 200, "OK", None);
        response.headers.push("Contact", self.contact());
        if matches!(request.method, Method::Invite | Method::Update)
            && is_sdp(&request.headers, &request.body)
            && let Some(ours) = &self.last_sdp
        {
            let theirs = String::from_utf8_lossy(&request.body);
            response.headers.push("Content-Type", "application/sdp");
            response.body = answer_direction(ours, &theirs).into_bytes();
        }
        response
    }

    /// The SDES key we offered with `tag` (the one the gateway's answer picked).
    pub fn offered_key(&self, tag: u32) -> Option<(SrtpSuite, Vec<u8>)> {
        self.offered_keys.iter().find(|(t, _, _)| *t == tag).map(|(_, s, k)| (*s, k.clone()))
    }

    /// Captured SDP with our media address and fresh SDES keys.
    pub fn sdp(&mut self, captured: &str) -> String {
        let ip = self.local_rtp.ip();
        let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
        let mut out = String::new();
        for line in captured.lines() {
            let line = line.trim_end_matches('\r');
            if let Some(addr) = line.strip_prefix("c=IN ") {
                // A c=0.0.0.0 hold (RFC 2543 style) stays a hold.
                let held = addr.split_whitespace().nth(1).is_some_and(|a| a == "0.0.0.0" || a == "::");
                if held {
                    out.push_str(line);
                } else {
                    out.push_str(&format!("c=IN {family} {ip}"));
                }
            } else if let Some(rest) = line.strip_prefix("m=audio ") {
                let (port, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let port = if port == "0" { 0 } else { self.local_rtp.port() };
                out.push_str(&format!("m=audio {port} {tail}"));
            } else if line.starts_with("a=rtcp:") {
                out.push_str(&format!("a=rtcp:{} IN {family} {ip}", self.local_rtp.port() + 1));
            } else if let Some(value) = line.strip_prefix("a=crypto:") {
                match parse_crypto(value) {
                    Ok(attr) => {
                        let key = self.key_for(attr.tag, attr.suite);
                        out.push_str(&format!("a=crypto:{}", write_crypto(attr.tag, attr.suite, &key)));
                    }
                    // A line we cannot read is one the gateway cannot either: keep it.
                    Err(_) => out.push_str(line),
                }
            } else {
                out.push_str(line);
            }
            out.push_str("\r\n");
        }
        out
    }

    fn key_for(&mut self, tag: u32, suite: SrtpSuite) -> Vec<u8> {
        if let Some((_, _, key)) = self.offered_keys.iter().find(|(t, s, _)| *t == tag && *s == suite) {
            return key.clone();
        }
        let mut keying = [0; crate::sip::sdp::KEYING_LEN];
        crate::ids::fill_random(&mut keying);
        let key = fresh_key(suite, &keying);
        self.offered_keys.push((tag, suite, key.clone()));
        key
    }

    fn initial_uri(&self, captured: &str) -> String {
        let user = captured
            .split_once(':')
            .map(|(_, rest)| rest)
            .and_then(|rest| rest.split_once('@'))
            .map_or("gw", |(user, _)| user);
        let transport = if self.transport == Transport::Tcp { ";transport=tcp" } else { "" };
        format!("sip:{user}@{}{transport}", self.target)
    }

    fn contact(&self) -> String {
        let transport = if self.transport == Transport::Tcp { ";transport=tcp" } else { "" };
        format!("<sip:replay@{}{transport}>", self.local_sip)
    }

    fn branch(&mut self, captured: &str) -> String {
        if captured.is_empty() {
            return format!("z9hG4bK{}", random_id(12));
        }
        self.branches.entry(captured.to_string()).or_insert_with(|| format!("z9hG4bK{}", random_id(12))).clone()
    }

    fn retag(&mut self, value: &str) -> String {
        match header_param(value, "tag").filter(|t| !t.is_empty()) {
            Some(tag) => {
                let fresh = self.tags.entry(tag.to_string()).or_insert_with(|| random_id(10)).clone();
                replace_tag(value, tag, &fresh)
            }
            None => value.to_string(),
        }
    }

    fn to_value(&self, value: &str) -> String {
        match (header_param(value, "tag").filter(|t| !t.is_empty()), &self.remote_tag) {
            (Some(tag), Some(remote)) => replace_tag(value, tag, remote),
            _ => value.to_string(),
        }
    }
}

/// A User-to-User value with each `encoding=jwt` token of a participant in `tokens` replaced.
pub fn rewrite_uui(value: &str, tokens: &HashMap<String, String>) -> String {
    message::split_list(value)
        .iter()
        .map(|element| {
            let Some(token) = jwt_of(element) else { return element.clone() };
            match jwt_claim(token, "sub").and_then(|sub| tokens.get(&sub)) {
                Some(fresh) => element.replacen(token, fresh, 1),
                None => element.clone(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Our SDP with its direction answering the offer `theirs`.
pub fn answer_direction(ours: &str, theirs: &str) -> String {
    let offered = ["sendonly", "recvonly", "inactive", "sendrecv"]
        .into_iter()
        .find(|d| theirs.lines().any(|l| l.trim_end() == format!("a={d}")))
        .unwrap_or("sendrecv");
    let answer = match offered {
        "sendonly" => "recvonly",
        "recvonly" => "sendonly",
        other => other,
    };
    let mut out = String::new();
    let mut written = false;
    for line in ours.lines() {
        let line = line.trim_end_matches('\r');
        if ["a=sendonly", "a=recvonly", "a=inactive", "a=sendrecv"].contains(&line) {
            out.push_str(&format!("a={answer}\r\n"));
            written = true;
        } else {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    if !written {
        out.push_str(&format!("a={answer}\r\n"));
    }
    out
}

fn replace_tag(value: &str, old: &str, new: &str) -> String {
    value.replacen(&format!("tag={old}"), &format!("tag={new}"), 1)
}

fn is_sdp(headers: &Headers, body: &[u8]) -> bool {
    !body.is_empty()
        && headers.get("Content-Type").is_none_or(|t| t.trim().to_ascii_lowercase().starts_with("application/sdp"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;

    fn rewriter() -> CallRewriter {
        CallRewriter::new(
            "127.0.0.1:40000".parse().unwrap(),
            Transport::Udp,
            "127.0.0.1:5070".parse().unwrap(),
            "127.0.0.1:41000".parse().unwrap(),
        )
    }

    fn parse(text: &str) -> Request {
        match message::parse(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
        m=audio 30000 RTP/SAVP 96\r\na=rtpmap:96 AMR-WB/16000\r\n\
        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\na=sendrecv\r\n";

    fn invite() -> Request {
        parse(&format!(
            "INVITE sip:gw@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKcap\r\n\
             Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKproxy\r\nRoute: <sip:10.0.0.9;lr>\r\n\
             From: <sip:a@10.0.0.1>;tag=capfrom\r\nTo: <sip:gw@10.0.0.2>\r\nCall-ID: captured@x\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:a@10.0.0.1:5060>\r\nUser-to-User: 00;encoding=hex, eyJh.eyJzdWIiOiJhbGljZSJ9.c2ln;encoding=jwt\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
            SDP.len()
        ))
    }

    #[test]
    fn invite_gets_our_addresses_ids_keys_and_token() {
        let mut rw = rewriter();
        rw.tokens.insert("alice".into(), "NEW.TOKEN.X".into());
        let out = rw.request(&invite());
        let text = String::from_utf8(out.to_bytes()).unwrap();
        assert!(text.starts_with("INVITE sip:gw@127.0.0.1:5070 SIP/2.0\r\n"), "{text}");
        assert_eq!(out.headers.get_all("Via").count(), 1);
        assert!(out.headers.get("Via").unwrap().contains("127.0.0.1:40000"));
        assert!(out.headers.get("Route").is_none());
        assert_eq!(out.call_id(), rw.call_id);
        assert_ne!(out.from_tag(), Some("capfrom"));
        assert_eq!(out.headers.get("User-to-User"), Some("00;encoding=hex, NEW.TOKEN.X;encoding=jwt"));
        assert!(text.contains("c=IN IP4 127.0.0.1\r\n"));
        assert!(text.contains("m=audio 41000 RTP/SAVP 96\r\n"));
        assert!(!text.contains("inline:AAAAAAAA"), "the captured key is replaced");
        assert_eq!(rw.offered_keys.len(), 1);
        // The parser takes what we wrote.
        assert!(message::parse(&out.to_bytes()).is_ok());
    }

    #[test]
    fn cancel_keeps_the_invite_branch_and_in_dialog_requests_follow_the_dialog() {
        let mut rw = rewriter();
        let inv = rw.request(&invite());
        let cancel_text = "CANCEL sip:gw@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKcap\r\n\
             From: <sip:a@10.0.0.1>;tag=capfrom\r\nTo: <sip:gw@10.0.0.2>\r\nCall-ID: captured@x\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n";
        let cancel = rw.request(&parse(cancel_text));
        assert_eq!(cancel.branch(), inv.branch());
        assert_eq!(cancel.uri, inv.uri);
        assert_eq!(cancel.from_tag(), inv.from_tag());

        let mut ok = Response::to(&inv, 200, "OK", Some("gwtag"));
        ok.headers.push("Contact", "<sip:gw@127.0.0.1:5070>");
        rw.learn(&ok);
        let bye_text = "BYE sip:gw@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKbye\r\n\
             From: <sip:a@10.0.0.1>;tag=capfrom\r\nTo: <sip:gw@10.0.0.2>;tag=captured-gw\r\nCall-ID: captured@x\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
        let bye = rw.request(&parse(bye_text));
        assert_eq!(bye.uri, "sip:gw@127.0.0.1:5070");
        assert_eq!(bye.to_tag(), Some("gwtag"));
        assert_ne!(bye.branch(), inv.branch());

        let ack = rw.ack(&inv, &ok, None);
        assert_eq!(ack.to_tag(), Some("gwtag"));
        assert_ne!(ack.branch(), inv.branch());
        let refused = Response::to(&inv, 403, "Forbidden", Some("x"));
        assert_eq!(rw.ack(&inv, &refused, None).branch(), inv.branch());
    }

    #[test]
    fn hold_stays_a_hold_and_directions_are_answered() {
        let mut rw = rewriter();
        let held = rw.sdp("v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 30000 RTP/AVP 0\r\na=sendonly\r\n");
        assert!(held.contains("c=IN IP4 0.0.0.0"));
        assert!(answer_direction(&held, "a=sendonly\r\n").contains("a=recvonly"));
        assert!(answer_direction(&held, "a=inactive\r\n").contains("a=inactive"));
    }

    #[test]
    fn the_gateways_requests_get_a_200_and_re_offers_our_sdp() {
        let mut rw = rewriter();
        let _ = rw.request(&invite());
        let bye = parse(
            "BYE sip:replay@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKgw\r\n\
             From: <sip:gw@h>;tag=gwtag\r\nTo: <sip:a@h>;tag=ours\r\nCall-ID: x\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n",
        );
        let ok = rw.answer(&bye);
        assert_eq!(ok.status, 200);
        assert!(ok.body.is_empty());
        assert_eq!(ok.headers.get("CSeq"), Some("9 BYE"));
        let offer = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 20000 RTP/AVP 0\r\na=sendonly\r\n";
        let reinvite = parse(&format!(
            "INVITE sip:replay@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKre\r\n\
             From: <sip:gw@h>;tag=gwtag\r\nTo: <sip:a@h>;tag=ours\r\nCall-ID: x\r\nCSeq: 10 INVITE\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
            offer.len()
        ));
        let answer = String::from_utf8(rw.answer(&reinvite).body).unwrap();
        assert!(answer.contains("m=audio 41000 "), "{answer}");
        assert!(answer.contains("a=recvonly\r\n") && !answer.contains("a=sendrecv"), "{answer}");
    }

    #[test]
    fn raw_requests_keep_their_flaw() {
        let mut rw = rewriter();
        let raw = b"INVITE sip:gw@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKq\r\nCall-ID: old\r\n\
            Max-Forwards: lots\r\nCSeq: 1 INVITE\r\n\r\n";
        let text = String::from_utf8(rw.raw(raw)).unwrap();
        assert!(text.contains("Max-Forwards: lots"));
        assert!(text.contains(&format!("Call-ID: {}", rw.call_id)));
        assert!(text.starts_with("INVITE sip:gw@127.0.0.1:5070 SIP/2.0\r\n"));
    }
}
