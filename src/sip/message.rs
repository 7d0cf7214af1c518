//! Our view of a SIP message (RFC 3261 §7): start line, headers in order, body.
//!
//! Every message is parsed once, here, by the transport; the transactions and the call logic
//! read and write these. The parser here is strict about what the call logic relies
//! on (the start line, the headers that identify a transaction, Content-Length) and bounded
//! (sizes and counts), because it also guards the socket: what it refuses gets a 400 built by
//! [`answer_unparsed`] (status and warning from `sip::refusal`) instead of silence.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// Largest message accepted (a UDP datagram cannot be larger anyway).
pub const MAX_MESSAGE_LEN: usize = 65_535;
/// Most header fields in one message.
const MAX_HEADERS: usize = 256;
/// Longest header field (name, value and folding).
const MAX_HEADER_LEN: usize = 8 * 1024;
/// Longest Request-URI.
const MAX_URI_LEN: usize = 2048;
/// Largest CSeq number (RFC 3261 §8.1.1.5: less than 2^31).
const MAX_CSEQ: u32 = 0x7fff_ffff;

/// A SIP method (RFC 3261 §7.1 and the extensions we meet).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// RFC 3261.
    Invite,
    /// RFC 3261.
    Ack,
    /// RFC 3261.
    Bye,
    /// RFC 3261.
    Cancel,
    /// RFC 3261.
    Options,
    /// RFC 3311.
    Update,
    /// RFC 6086.
    Info,
    /// RFC 3262.
    Prack,
    /// Any other token.
    Other(String),
}

impl Method {
    /// The method a token names (unknown ones kept as they are written).
    pub fn parse(s: &str) -> Self {
        match s {
            "INVITE" => Self::Invite,
            "ACK" => Self::Ack,
            "BYE" => Self::Bye,
            "CANCEL" => Self::Cancel,
            "OPTIONS" => Self::Options,
            "UPDATE" => Self::Update,
            "INFO" => Self::Info,
            "PRACK" => Self::Prack,
            other => Self::Other(other.to_string()),
        }
    }

    /// The method's token.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Options => "OPTIONS",
            Self::Update => "UPDATE",
            Self::Info => "INFO",
            Self::Prack => "PRACK",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Header fields in their order; names are stored in their long form (compact forms expanded).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    /// Names in [`KNOWN_NAMES`] are borrowed (no allocation per field), others owned.
    fields: Vec<(Cow<'static, str>, String)>,
}

impl Headers {
    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Appends a field.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.fields.push((intern(name), value.into()));
    }

    /// Replaces every field `name` by one with `value`.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.remove(name);
        self.push(name, value);
    }

    /// Removes every field `name`.
    pub fn remove(&mut self, name: &str) {
        self.fields.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// Every field, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(n, v)| (n.as_ref(), v.as_str()))
    }
}

/// A request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Request-URI, as written.
    pub uri: String,
    /// Header fields.
    pub headers: Headers,
    /// Body.
    pub body: Vec<u8>,
}

/// A response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Header fields.
    pub headers: Headers,
    /// Body.
    pub body: Vec<u8>,
}

/// Either kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

/// Why a message was refused. Each is answered 400 (or 505 for another SIP version) when the
/// message is a request with enough headers to address a response.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// Over [`MAX_MESSAGE_LEN`], too many headers, or a header too long.
    #[error("message too large: {0}")]
    TooLarge(&'static str),
    /// Not UTF-8 in the start line or headers.
    #[error("the start line or headers are not UTF-8")]
    NotText,
    /// The start line is not `METHOD URI SIP/2.0` nor `SIP/2.0 code reason`.
    #[error("malformed start line")]
    StartLine,
    /// A SIP version other than 2.0.
    #[error("unsupported SIP version {0}")]
    Version(String),
    /// A header line without a colon or with an invalid name.
    #[error("malformed header line")]
    HeaderLine,
    /// A required header is missing.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// A header's value is malformed.
    #[error("malformed {0} header")]
    BadHeader(&'static str),
    /// The CSeq method differs from the request's.
    #[error("CSeq method does not match the request method")]
    CseqMethod,
    /// Content-Length does not match the body.
    #[error("Content-Length does not match the body")]
    ContentLength,
}

/// Parses one message. `datagram`: the bytes are a whole UDP datagram, so a missing
/// Content-Length means the body runs to the end (RFC 3261 §18.3); on a stream the framing
/// layer has already cut the message and the same rule applies to what it gives us.
pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(ParseError::TooLarge("message"));
    }
    // RFC 3261 §7.5: ignore empty lines before the start line.
    let start = bytes.iter().position(|b| *b != b'\r' && *b != b'\n').unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    let (head, body) = split_head(bytes);
    let head = std::str::from_utf8(head).map_err(|_| ParseError::NotText)?;
    let mut lines = head.split("\r\n").flat_map(|l| l.split('\n'));
    let start_line = lines.next().ok_or(ParseError::StartLine)?.trim_end_matches('\r');
    let headers = parse_headers(lines)?;
    let body = body_of(&headers, body)?;
    if let Some(rest) = start_line.strip_prefix("SIP/") {
        let (version, rest) = rest.split_once(' ').ok_or(ParseError::StartLine)?;
        if version != "2.0" {
            return Err(ParseError::Version(version.to_string()));
        }
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let status: u16 = code.parse().map_err(|_| ParseError::StartLine)?;
        if !(100..=699).contains(&status) {
            return Err(ParseError::StartLine);
        }
        check_common(&headers)?;
        return Ok(Message::Response(Response { status, reason: reason.to_string(), headers, body }));
    }
    let mut parts = start_line.split(' ');
    let (Some(method), Some(uri), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::StartLine);
    };
    if !is_token(method) || uri.is_empty() || uri.len() > MAX_URI_LEN || !uri.contains(':') {
        return Err(ParseError::StartLine);
    }
    match version.strip_prefix("SIP/") {
        Some("2.0") => {}
        Some(v) => return Err(ParseError::Version(v.to_string())),
        None => return Err(ParseError::StartLine),
    }
    let method = Method::parse(method);
    check_common(&headers)?;
    let cseq = headers.get("CSeq").ok_or(ParseError::Missing("CSeq"))?;
    let (_, cseq_method) = parse_cseq(cseq)?;
    if cseq_method != method.as_str() {
        return Err(ParseError::CseqMethod);
    }
    if let Some(mf) = headers.get("Max-Forwards") {
        mf.trim().parse::<u8>().map_err(|_| ParseError::BadHeader("Max-Forwards"))?;
    }
    Ok(Message::Request(Request { method, uri: uri.to_string(), headers, body }))
}

/// `CSeq: <number> <method>`.
pub fn parse_cseq(value: &str) -> Result<(u32, &str), ParseError> {
    let mut it = value.split_whitespace();
    let (Some(n), Some(m), None) = (it.next(), it.next(), it.next()) else {
        return Err(ParseError::BadHeader("CSeq"));
    };
    let n: u32 = n.parse().map_err(|_| ParseError::BadHeader("CSeq"))?;
    if n > MAX_CSEQ || !is_token(m) {
        return Err(ParseError::BadHeader("CSeq"));
    }
    Ok((n, m))
}

/// The value of parameter `name` in a header value like `<sip:a@b>;tag=x;foo` (parameters
/// after the URI's closing `>`, or after the first `;` when there are no brackets).
pub fn header_param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let params = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value.split_once(';').map_or("", |(_, p)| p),
    };
    params.split(';').map(str::trim).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The URI inside a name-addr (`"Bob" <sip:bob@x>;tag=1` → `sip:bob@x`) or an addr-spec.
pub fn header_uri(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or("").trim(),
    }
}

impl Request {
    /// The top Via's `branch`.
    pub fn branch(&self) -> Option<&str> {
        self.headers.get("Via").and_then(|v| header_param(v, "branch"))
    }

    /// Call-ID.
    pub fn call_id(&self) -> &str {
        // `parse` refuses requests without one; built requests always carry one.
        self.headers.get("Call-ID").unwrap_or("")
    }

    /// CSeq number.
    pub fn cseq(&self) -> u32 {
        self.headers.get("CSeq").and_then(|c| parse_cseq(c).ok()).map_or(0, |(n, _)| n)
    }

    /// The From tag.
    pub fn from_tag(&self) -> Option<&str> {
        self.headers.get("From").and_then(|v| header_param(v, "tag")).filter(|t| !t.is_empty())
    }

    /// The To tag: present on in-dialog requests.
    pub fn to_tag(&self) -> Option<&str> {
        self.headers.get("To").and_then(|v| header_param(v, "tag")).filter(|t| !t.is_empty())
    }

    /// Serializes with a correct Content-Length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} SIP/2.0\r\n", self.method, self.uri);
        write_rest(&mut out, &self.headers, &self.body)
    }
}

impl Response {
    /// A response to `req` (RFC 3261 §8.2.6.2): Via, From, To, Call-ID and CSeq copied; the To
    /// tag added when the request had none and `to_tag` is given.
    pub fn to(req: &Request, status: u16, reason: &str, to_tag: Option<&str>) -> Self {
        let mut headers = Headers::default();
        for via in req.headers.get_all("Via") {
            headers.push("Via", via);
        }
        if let Some(from) = req.headers.get("From") {
            headers.push("From", from);
        }
        if let Some(to) = req.headers.get("To") {
            match (req.to_tag(), to_tag) {
                (None, Some(tag)) if status != 100 => headers.push("To", format!("{to};tag={tag}")),
                _ => headers.push("To", to),
            }
        }
        headers.push("Call-ID", req.call_id());
        if let Some(cseq) = req.headers.get("CSeq") {
            headers.push("CSeq", cseq);
        }
        Self { status, reason: reason.to_string(), headers, body: Vec::new() }
    }

    /// Serializes with a correct Content-Length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("SIP/2.0 {} {}\r\n", self.status, self.reason);
        write_rest(&mut out, &self.headers, &self.body)
    }
}

/// The standard reason phrase of a status we send.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        420 => "Bad Extension",
        422 => "Session Interval Too Small",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        _ => "Unknown",
    }
}

/// A stateless `status` answer with a `Warning` value for a request that did not parse or
/// cannot be read whole (a stream message over the size limit is answered from its head
/// alone), when the bytes look enough like a request to be answered: the headers a response
/// needs are picked out leniently. `None` for responses and for garbage that is not a request
/// at all. `sip::refusal` decides the status and the warning.
pub fn answer_unparsed(bytes: &[u8], status: u16, warning: &str) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_MESSAGE_LEN)]);
    let text = text.trim_start_matches(['\r', '\n']);
    let start = text.lines().next()?;
    // A request's start line begins with a method token; responses are never answered.
    let first = start.split(' ').next()?;
    if first.starts_with("SIP/") || first.is_empty() || !is_token(first) {
        return None;
    }
    let mut via = Vec::new();
    let mut copied = Vec::new();
    for line in text.lines().skip(1).take(MAX_HEADERS) {
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else { continue };
        let name = long_name(name.trim());
        let value = value.trim();
        if value.len() > MAX_HEADER_LEN {
            continue;
        }
        match name.to_ascii_lowercase().as_str() {
            "via" => via.extend(split_via(value)),
            "from" | "to" | "call-id" | "cseq"
                if !copied.iter().any(|(n, _): &(Cow<'static, str>, String)| n.eq_ignore_ascii_case(&name)) =>
            {
                copied.push((name, value.to_string()));
            }
            _ => {}
        }
    }
    if via.is_empty() {
        return None;
    }
    let mut out = format!("SIP/2.0 {status} {}\r\n", reason_phrase(status));
    for v in via {
        let _ = write!(out, "Via: {v}\r\n");
    }
    for (n, v) in copied {
        let _ = write!(out, "{n}: {v}\r\n");
    }
    let _ = write!(out, "Warning: {warning}\r\nContent-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

/// Splits a Via value holding several comma-joined hops (RFC 3261 §7.3.1), outside quotes.
pub fn split_via(value: &str) -> Vec<String> {
    split_list(value)
}

/// Splits a header value on commas that are not inside quotes or angle brackets.
pub fn split_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut escaped) = (false, false, false);
    let mut current = String::new();
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                let part = current.trim();
                if !part.is_empty() {
                    out.push(part.to_string());
                }
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    let part = current.trim();
    if !part.is_empty() {
        out.push(part.to_string());
    }
    out
}

fn split_head(bytes: &[u8]) -> (&[u8], &[u8]) {
    if let Some(i) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        return (&bytes[..i], &bytes[i + 4..]);
    }
    if let Some(i) = bytes.windows(2).position(|w| w == b"\n\n") {
        return (&bytes[..i], &bytes[i + 2..]);
    }
    (bytes, &[])
}

fn parse_headers<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Headers, ParseError> {
    let mut headers = Headers::default();
    let mut current: Option<(Cow<'static, str>, String)> = None;
    let mut count = 0;
    let mut push = |headers: &mut Headers, (name, value): (Cow<'static, str>, String)| -> Result<(), ParseError> {
        count += 1;
        if count > MAX_HEADERS {
            return Err(ParseError::TooLarge("too many headers"));
        }
        if name.eq_ignore_ascii_case("Via") {
            let hops = split_via(&value);
            // Each hop is a header once split: they count against the limit.
            count += hops.len().saturating_sub(1);
            if count > MAX_HEADERS {
                return Err(ParseError::TooLarge("too many headers"));
            }
            for hop in hops {
                headers.push("Via", hop);
            }
        } else {
            headers.fields.push((name, value));
        }
        Ok(())
    };
    for line in lines {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            // RFC 3261 §7.3.1 folding: a continuation of the previous field.
            let (_, value) = current.as_mut().ok_or(ParseError::HeaderLine)?;
            let more = line.trim();
            if !value.is_empty() && !more.is_empty() {
                value.push(' ');
            }
            value.push_str(more);
            if value.len() > MAX_HEADER_LEN {
                return Err(ParseError::TooLarge("header too long"));
            }
            continue;
        }
        if let Some(done) = current.take() {
            push(&mut headers, done)?;
        }
        if line.len() > MAX_HEADER_LEN {
            return Err(ParseError::TooLarge("header too long"));
        }
        let (name, value) = line.split_once(':').ok_or(ParseError::HeaderLine)?;
        let name = name.trim_end();
        if !is_token(name) {
            return Err(ParseError::HeaderLine);
        }
        current = Some((long_name(name), value.trim().to_string()));
    }
    if let Some(done) = current.take() {
        push(&mut headers, done)?;
    }
    Ok(headers)
}

/// Content-Length against the body: several different values, a value that does not parse,
/// or one larger than what arrived are refused; a shorter one cuts the body (RFC 3261 §18.3).
fn body_of(headers: &Headers, body: &[u8]) -> Result<Vec<u8>, ParseError> {
    let mut lengths = headers.get_all("Content-Length").map(|v| v.trim().parse::<usize>());
    let Some(first) = lengths.next() else { return Ok(body.to_vec()) };
    let n = first.map_err(|_| ParseError::ContentLength)?;
    if lengths.any(|l| l != Ok(n)) || n > body.len() {
        return Err(ParseError::ContentLength);
    }
    Ok(body[..n].to_vec())
}

fn check_common(headers: &Headers) -> Result<(), ParseError> {
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        let value = headers.get(name).ok_or(ParseError::Missing(match name {
            "Via" => "Via",
            "From" => "From",
            "To" => "To",
            "Call-ID" => "Call-ID",
            _ => "CSeq",
        }))?;
        if value.trim().is_empty() {
            return Err(ParseError::Missing("non-empty Via, From, To, Call-ID and CSeq"));
        }
    }
    for via in headers.get_all("Via") {
        let mut it = via.split_whitespace();
        let proto = it.next().unwrap_or("");
        let sent_by = it.next().unwrap_or("");
        let parts: Vec<&str> = proto.split('/').collect();
        let ok = parts.len() == 3
            && parts[0].eq_ignore_ascii_case("SIP")
            && parts[1] == "2.0"
            && is_token(parts[2])
            && !sent_by.is_empty();
        if !ok {
            return Err(ParseError::BadHeader("Via"));
        }
    }
    for name in ["From", "To"] {
        let uri = header_uri(headers.get(name).unwrap_or(""));
        if !uri.contains(':') {
            return Err(ParseError::BadHeader(if name == "From" { "From" } else { "To" }));
        }
    }
    Ok(())
}

/// RFC 3261 §7.3.3 and later RFCs: compact forms to long names.
fn long_name(name: &str) -> Cow<'static, str> {
    let long = match name {
        "i" | "I" => "Call-ID",
        "m" | "M" => "Contact",
        "e" | "E" => "Content-Encoding",
        "l" | "L" => "Content-Length",
        "c" | "C" => "Content-Type",
        "f" | "F" => "From",
        "s" | "S" => "Subject",
        "k" | "K" => "Supported",
        "t" | "T" => "To",
        "v" | "V" => "Via",
        "x" | "X" => "Session-Expires",
        "o" | "O" => "Event",
        "r" | "R" => "Refer-To",
        "b" | "B" => "Referred-By",
        "u" | "U" => "Allow-Events",
        other => return intern(other),
    };
    Cow::Borrowed(long)
}

/// The header names we meet on every call, spelled as we write them.
const KNOWN_NAMES: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Max-Forwards",
    "Content-Type",
    "Content-Length",
    "User-Agent",
    "Server",
    "Allow",
    "Supported",
    "Require",
    "User-to-User",
    "Record-Route",
    "Route",
    "Session-Expires",
    "Min-SE",
    "Reason",
    "Warning",
    "Retry-After",
    "X-Interconnect-Mode",
    "Subject",
];

/// A header name as stored: one of [`KNOWN_NAMES`] when it is spelled so (no allocation),
/// else its own copy.
fn intern(name: &str) -> Cow<'static, str> {
    match KNOWN_NAMES.iter().find(|k| **k == name) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(name.to_string()),
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

fn write_rest(out: &mut String, headers: &Headers, body: &[u8]) -> Vec<u8> {
    for (n, v) in headers.iter() {
        if !n.eq_ignore_ascii_case("Content-Length") {
            let _ = write!(out, "{n}: {v}\r\n");
        }
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    let mut bytes = std::mem::take(out).into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2\r\n\
        f: \"Alice\" <sip:alice@10.0.0.1>;tag=abc\r\n\
        t: <sip:bob@127.0.0.1>\r\n\
        i: call-1@10.0.0.1\r\n\
        CSeq: 1 INVITE\r\n\
        Max-Forwards: 70\r\n\
        Subject: folded\r\n  continuation\r\n\
        c: application/sdp\r\n\
        \r\n\
        v=0\r\n";

    fn request(text: &str) -> Request {
        match parse(text.as_bytes()).unwrap() {
            Message::Request(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn compact_forms_folding_and_joined_vias_are_read() {
        let r = request(INVITE);
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.call_id(), "call-1@10.0.0.1");
        assert_eq!(r.from_tag(), Some("abc"));
        assert_eq!(r.to_tag(), None);
        assert_eq!(r.cseq(), 1);
        assert_eq!(r.headers.get_all("Via").count(), 2, "comma-joined Via values are split");
        assert_eq!(r.branch(), Some("z9hG4bK1"));
        assert_eq!(r.headers.get("Subject"), Some("folded continuation"));
        assert_eq!(r.headers.get("content-type"), Some("application/sdp"));
        assert_eq!(r.body, b"v=0\r\n", "no Content-Length on a datagram: the body runs to the end");
    }

    #[test]
    fn folding_around_empty_values_and_blank_continuations_leaves_no_stray_space() {
        let folded = INVITE.replace(
            "c: application/sdp\r\n",
            "c: application/sdp\r\nX-Empty:\r\n  one\r\n \t\r\nX-Blank: two \r\n \r\n",
        );
        let r = request(&folded);
        assert_eq!(r.headers.get("X-Empty"), Some("one"));
        assert_eq!(r.headers.get("X-Blank"), Some("two"));
        // What we write reads back the same.
        let mut again = request(std::str::from_utf8(&r.to_bytes()).unwrap());
        again.headers.remove("Content-Length");
        assert_eq!(again.headers, r.headers);
    }

    #[test]
    fn content_length_cuts_or_refuses() {
        let with = INVITE.replace("c: application/sdp\r\n", "c: application/sdp\r\nl: 3\r\n");
        assert_eq!(request(&with).body, b"v=0");
        let too_long = INVITE.replace("c: application/sdp\r\n", "l: 500\r\n");
        assert_eq!(parse(too_long.as_bytes()), Err(ParseError::ContentLength));
        let two = INVITE.replace("c: application/sdp\r\n", "l: 1\r\nContent-Length: 2\r\n");
        assert_eq!(parse(two.as_bytes()), Err(ParseError::ContentLength));
        let bad = INVITE.replace("c: application/sdp\r\n", "l: -1\r\n");
        assert_eq!(parse(bad.as_bytes()), Err(ParseError::ContentLength));
    }

    #[test]
    fn serialization_round_trips() {
        let r = request(INVITE);
        let mut again = request(std::str::from_utf8(&r.to_bytes()).unwrap());
        assert_eq!(again.headers.get("Content-Length"), Some("5"), "always written");
        again.headers.remove("Content-Length");
        assert_eq!(again, r);
    }

    #[test]
    fn responses_copy_the_transaction_headers_and_add_the_tag() {
        let r = request(INVITE);
        let resp = Response::to(&r, 200, "OK", Some("xyz"));
        let text = String::from_utf8(resp.to_bytes()).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"));
        assert_eq!(text.matches("Via: ").count(), 2);
        assert!(text.contains("To: <sip:bob@127.0.0.1>;tag=xyz\r\n"));
        assert!(text.contains("CSeq: 1 INVITE\r\n") && text.ends_with("Content-Length: 0\r\n\r\n"));
        let trying = Response::to(&r, 100, "Trying", Some("xyz"));
        assert_eq!(trying.headers.get("To"), Some("<sip:bob@127.0.0.1>"), "no tag on 100");
    }

    #[test]
    fn malformed_requests_are_refused_with_a_reason() {
        let cases: Vec<(String, ParseError)> = vec![
            (INVITE.replace("INVITE sip:bob@127.0.0.1 SIP/2.0", "INVITE sip:bob@127.0.0.1"), ParseError::StartLine),
            (INVITE.replace("SIP/2.0\r\nVia", "SIP/3.0\r\nVia"), ParseError::Version("3.0".into())),
            (INVITE.replace("CSeq: 1 INVITE", "CSeq: 1 BYE"), ParseError::CseqMethod),
            (INVITE.replace("CSeq: 1 INVITE", "CSeq: x INVITE"), ParseError::BadHeader("CSeq")),
            (INVITE.replace("CSeq: 1 INVITE", "CSeq: 4294967295 INVITE"), ParseError::BadHeader("CSeq")),
            (INVITE.replace("i: call-1@10.0.0.1\r\n", ""), ParseError::Missing("Call-ID")),
            (INVITE.replace("Max-Forwards: 70", "Max-Forwards: lots"), ParseError::BadHeader("Max-Forwards")),
            (INVITE.replace("Max-Forwards: 70", "Broken Header"), ParseError::HeaderLine),
            (INVITE.replace("SIP/2.0/UDP 10.0.0.1:5060", "HTTP/1.1"), ParseError::BadHeader("Via")),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text.as_bytes()), Err(expected.clone()), "{text}");
            let answer = answer_unparsed(text.as_bytes(), 400, "399 interwork \"x\"");
            if let Some(answer) = answer {
                let answer = String::from_utf8(answer).unwrap();
                assert!(answer.starts_with("SIP/2.0 400 "), "{answer}");
                assert!(answer.contains("Warning: 399 interwork"));
            }
        }
    }

    #[test]
    fn a_request_without_via_cannot_be_answered_and_responses_never_are() {
        let no_via = INVITE
            .replace("Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2\r\n", "");
        let err = parse(no_via.as_bytes()).unwrap_err();
        assert_eq!(err, ParseError::Missing("Via"));
        assert!(answer_unparsed(no_via.as_bytes(), 400, "x").is_none());
        assert!(answer_unparsed(b"SIP/2.0 200 OK\r\n\r\n", 400, "x").is_none());
        assert!(answer_unparsed(b"\x00\x01\x02", 400, "x").is_none());
    }

    #[test]
    fn size_limits_hold() {
        let huge = INVITE.replace("Max-Forwards: 70", &format!("X-Big: {}", "a".repeat(MAX_HEADER_LEN + 1)));
        assert_eq!(parse(huge.as_bytes()), Err(ParseError::TooLarge("header too long")));
        let many = INVITE.replace("Max-Forwards: 70\r\n", &"X-A: 1\r\n".repeat(MAX_HEADERS + 1));
        assert_eq!(parse(many.as_bytes()), Err(ParseError::TooLarge("too many headers")));
        assert_eq!(parse(&vec![b'A'; MAX_MESSAGE_LEN + 1]), Err(ParseError::TooLarge("message")));
    }

    #[test]
    fn header_helpers() {
        assert_eq!(header_param("\"A;b\" <sip:a@b;lr>;tag=1;x", "tag"), Some("1"));
        assert_eq!(header_param("sip:a@b;tag=2", "tag"), Some("2"));
        assert_eq!(header_uri("\"Bob\" <sip:bob@x;lr>;tag=1"), "sip:bob@x;lr");
        assert_eq!(split_list("<sip:a,b@x>;q=1, \"x,y\" <sip:c@d>"), vec!["<sip:a,b@x>;q=1", "\"x,y\" <sip:c@d>"]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678u32;
        for len in 0..2000 {
            let bytes: Vec<u8> = (0..len % 300)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    let table = b"INVITE SIP/2.0\r\n:;,<>\" \tViaCSeq1";
                    table[seed as usize % table.len()]
                })
                .collect();
            if parse(&bytes).is_err() {
                let _ = answer_unparsed(&bytes, 400, "x");
            }
        }
    }
}
