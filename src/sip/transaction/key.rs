//! Transaction matching (RFC 3261 §17.1.3 and §17.2.3).

use super::super::message::{self, Method, Request, Response};

/// The magic cookie of RFC 3261 branches: such a branch alone (with sent-by) names a transaction.
const COOKIE: &str = "z9hG4bK";

/// What names a transaction: the top Via's branch and sent-by, and the method (ACK matches the
/// INVITE it acknowledges; CANCEL has its own transaction).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    branch: String,
    sent_by: String,
    method: Method,
}

impl Key {
    /// The key of a request's server transaction. `None` when the request has no Via.
    ///
    /// A branch without the magic cookie (RFC 2543 peers) is widened with the Call-ID, From tag
    /// and CSeq number so that different requests do not collide (§17.2.3's older rule, in
    /// short).
    pub fn server(request: &Request) -> Option<Self> {
        let via = request.headers.get("Via")?;
        let sent_by = sent_by(via)?.to_ascii_lowercase();
        let branch = match message::header_param(via, "branch") {
            Some(b) if b.starts_with(COOKIE) => b.to_string(),
            other => format!(
                "{}|{}|{}|{}",
                other.unwrap_or(""),
                request.call_id(),
                request.from_tag().unwrap_or(""),
                request.cseq()
            ),
        };
        let method = match &request.method {
            Method::Ack => Method::Invite,
            m => m.clone(),
        };
        Some(Self { branch, sent_by, method })
    }

    /// The key of the INVITE transaction a CANCEL names (§9.2: same branch and sent-by).
    pub fn cancelled_invite(cancel: &Self) -> Self {
        Self { method: Method::Invite, ..cancel.clone() }
    }

    /// The key of the client transaction a response belongs to: its top Via's branch and the
    /// CSeq method. `None` when it has no branch.
    pub fn client_of_response(response: &Response) -> Option<Self> {
        let via = response.headers.get("Via")?;
        let branch = message::header_param(via, "branch")?.to_string();
        let (_, method) = message::parse_cseq(response.headers.get("CSeq")?).ok()?;
        Some(Self { branch, sent_by: String::new(), method: Method::parse(method) })
    }

    /// The key of a request we send (our own branch is unique on its own).
    pub fn client_of_request(request: &Request) -> Option<Self> {
        let branch = request.branch()?.to_string();
        Some(Self { branch, sent_by: String::new(), method: request.method.clone() })
    }
}

/// The sent-by of a Via value: `SIP/2.0/UDP host:port;params` → `host:port`.
fn sent_by(via: &str) -> Option<&str> {
    let mut it = via.trim().splitn(2, char::is_whitespace);
    let _protocol = it.next()?;
    let rest = it.next()?.trim_start();
    let end = rest.find(';').unwrap_or(rest.len());
    let host = rest[..end].trim();
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, via: &str) -> Request {
        let text = format!(
            "{method} sip:a@b SIP/2.0\r\nVia: {via}\r\nFrom: <sip:x@y>;tag=f\r\nTo: <sip:a@b>\r\n\
             Call-ID: c\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        );
        match message::parse(text.as_bytes()).unwrap() {
            message::Message::Request(r) => r,
            message::Message::Response(_) => unreachable!(),
        }
    }

    #[test]
    fn ack_matches_its_invite_and_cancel_has_its_own() {
        let via = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1";
        let invite = Key::server(&request("INVITE", via)).unwrap();
        assert_eq!(Key::server(&request("ACK", via)).unwrap(), invite);
        let cancel = Key::server(&request("CANCEL", via)).unwrap();
        assert_ne!(cancel, invite);
        assert_eq!(Key::cancelled_invite(&cancel), invite);
        let elsewhere = Key::server(&request("INVITE", "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1")).unwrap();
        assert_ne!(elsewhere, invite, "sent-by is part of the key");
    }

    #[test]
    fn old_branches_are_widened() {
        let a = Key::server(&request("OPTIONS", "SIP/2.0/UDP h;branch=1")).unwrap();
        let mut other = request("OPTIONS", "SIP/2.0/UDP h;branch=1");
        other.headers.set("Call-ID", "d");
        assert_ne!(Key::server(&other).unwrap(), a);
        assert_eq!(sent_by("SIP/2.0/TCP  h.example:5061 ;branch=x"), Some("h.example:5061"));
    }
}
