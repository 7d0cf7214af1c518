//! Every reason we refuse a SIP request, and how each is written on the wire, in one place:
//! [`Refusal`] names the reason; [`Refusal::status`], [`Refusal::warn_code`] and
//! [`Refusal::retry_after`] map it to the wire (CONTRACT §5), and [`Refusal::write`] puts the
//! `Warning` (RFC 3261 §20.43), `Reason` (RFC 3326), `Retry-After` and the header fields some
//! statuses require (`Unsupported` for 420, `Min-SE` for 422) on a response, escaped one way.
//!
//! The call logic, the transaction layer and the transport all refuse through this type; the
//! modules that find a reason (tokens, SDP negotiation, the parser, the framing layer) return
//! their own errors and know nothing of SIP statuses.

use std::fmt;

use super::framing::FrameError;
use super::message::{self, ParseError, Response};
use super::sdp::SdpError;
use super::uui::UuiError;
use crate::tokens::TokenError;

/// The To tag prefix of every response we send without a transaction (the transports' shed
/// 503s, the transaction layer's refusals when it is full or a new INVITE waited too long):
/// their ACKs are recognised and dropped at the door, as a stateless server does (RFC 3261
/// §17.2.1 leaves them to nobody), instead of queueing one more message per refused call for
/// the endpoint.
pub const STATELESS_TAG: &str = "shed-";

/// Why a request is refused.
#[derive(Debug)]
pub enum Refusal {
    // ----- load and policy -----
    /// The node is draining (CONTRACT §7).
    Draining,
    /// The source address is not in `sip.trusted_peers`.
    UntrustedSource,
    /// The source sends INVITEs faster than `sip.invite_rate` allows.
    SourceRate,
    /// `sip.max_calls` calls are up.
    MaxCalls,
    /// The session's conference has `sip.max_conference_legs` legs.
    ConferenceFull,
    /// The RTP port range is exhausted.
    NoRtpPort,
    /// The node cannot take the request in time (load shedding, full transaction table).
    Overloaded,
    // ----- the request itself -----
    /// A message that does not parse.
    Malformed(ParseError),
    /// A stream message that cannot be framed (over the size limit, bad Content-Length).
    Unframed(FrameError),
    /// Max-Forwards reached zero.
    TooManyHops,
    /// The request carries our own Via: it looped.
    Loop,
    /// Another copy of a request we have (RFC 3261 §8.2.2.2).
    Merged,
    /// `Require` names extensions we do not support.
    UnsupportedExtension(Vec<String>),
    /// The INVITE's From has no tag.
    NoFromTag,
    /// `X-Interconnect-Mode` is not a mode.
    BadMode,
    /// `Session-Expires` does not parse.
    MalformedSessionExpires,
    /// The session interval asked for is under our `Min-SE`.
    IntervalTooSmall {
        /// Our minimum, seconds.
        min_se: u32,
    },
    /// A body that is not SDP where SDP is expected.
    UnsupportedBody,
    /// An INFO body that is not a DTMF relay.
    UnsupportedInfo,
    /// A DTMF relay INFO without a signal.
    NoDtmfSignal,
    // ----- who -----
    /// The User-to-User header carries no usable participant token.
    UserToUser(UuiError),
    /// The participant token is not accepted.
    Token(TokenError),
    /// The participant already has a live SIP leg.
    ParticipantBusy,
    // ----- media -----
    /// The offer cannot be answered.
    Sdp(SdpError),
    // ----- dialogs and transactions -----
    /// No dialog matches the request.
    NoSuchDialog,
    /// No transaction matches the CANCEL.
    NoSuchTransaction,
    /// A CSeq lower than the dialog's last.
    CSeqOutOfOrder,
    /// An offer/answer exchange is still open (RFC 3261 §14.2, RFC 6337 §3.1).
    RequestPending,
    /// A method the dialog or the node does not take.
    MethodNotAllowed {
        /// The methods it takes (the `Allow` value).
        allow: &'static str,
    },
    /// A CANCEL ended the INVITE.
    Cancelled,
    /// The call's owner could not answer the far end's offer.
    OfferRefused,
    /// The call ended on our side (the participant left, shutdown, …) before it was answered.
    EndedWhileRinging(String),
}

impl Refusal {
    /// The response status.
    pub fn status(&self) -> u16 {
        match self {
            Self::Draining | Self::SourceRate | Self::MaxCalls | Self::ConferenceFull | Self::NoRtpPort => 503,
            Self::Overloaded => 503,
            Self::UntrustedSource | Self::UserToUser(_) => 403,
            Self::Token(e) if e.is_not_found() => 404,
            Self::Token(_) => 403,
            Self::Malformed(ParseError::Version(_)) => 505,
            Self::Malformed(_) => 400,
            Self::Unframed(FrameError::TooLarge { .. }) => 513,
            Self::Unframed(FrameError::BadLength { .. }) => 400,
            Self::TooManyHops => 483,
            Self::Loop | Self::Merged => 482,
            Self::UnsupportedExtension(_) => 420,
            Self::NoFromTag | Self::BadMode | Self::MalformedSessionExpires | Self::NoDtmfSignal => 400,
            Self::IntervalTooSmall { .. } => 422,
            Self::UnsupportedBody | Self::UnsupportedInfo => 415,
            Self::ParticipantBusy => 486,
            Self::Sdp(e) if e.is_malformed() => 400,
            Self::Sdp(_) => 488,
            Self::NoSuchDialog | Self::NoSuchTransaction => 481,
            Self::CSeqOutOfOrder => 500,
            Self::RequestPending => 491,
            Self::MethodNotAllowed { .. } => 405,
            Self::Cancelled => 487,
            Self::OfferRefused => 488,
            Self::EndedWhileRinging(_) => 480,
        }
    }

    /// The Warning's code: RFC 3261 §20.43's 3xx for SDP we cannot use (301 incompatible
    /// address, 302 incompatible transport, 304 media type not available, 305 incompatible
    /// media format), 399 for the rest.
    pub fn warn_code(&self) -> u16 {
        match self {
            Self::Sdp(SdpError::UnsupportedAddress { .. }) => 301,
            Self::Sdp(SdpError::UnsupportedTransport { .. } | SdpError::AnswerProfileMismatch) => 302,
            Self::Sdp(SdpError::NoAudio) => 304,
            Self::Sdp(SdpError::NoCommonCodec | SdpError::AnswerCodecNotOffered { .. }) => 305,
            _ => 399,
        }
    }

    /// Seconds after which the refused request may be tried again (503s only).
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            Self::SourceRate | Self::RequestPending => Some(1),
            Self::MaxCalls | Self::NoRtpPort | Self::Overloaded => Some(5),
            Self::Draining | Self::ConferenceFull => Some(30),
            _ => None,
        }
    }

    /// Puts Warning, Reason, Retry-After and the header fields the status requires on `r`.
    pub fn write(&self, r: &mut Response) {
        let text = self.to_string();
        if let Some(secs) = self.retry_after() {
            r.headers.push("Retry-After", secs.to_string());
        }
        match self {
            Self::UnsupportedExtension(options) => r.headers.push("Unsupported", options.join(", ")),
            Self::IntervalTooSmall { min_se } => r.headers.push("Min-SE", min_se.to_string()),
            Self::MethodNotAllowed { allow } => r.headers.push("Allow", *allow),
            _ => {}
        }
        r.headers.push("Warning", warning(self.warn_code(), &text));
        r.headers.push("Reason", reason(self.status(), &text));
    }

    /// A stateless answer to `bytes`, a request that could not be parsed or framed (`None`
    /// when they are not a request that can be answered).
    pub fn answer_unparsed(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        message::answer_unparsed(bytes, self.status(), &warning(self.warn_code(), &self.to_string()))
    }

    /// A stateless answer to the head of a stream message that could not be framed.
    pub fn answer_unframed(error: FrameError) -> Option<Vec<u8>> {
        let head = error.head().to_vec();
        Self::Unframed(error).answer_unparsed(&head)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Draining => f.write_str("draining"),
            Self::UntrustedSource => f.write_str("source address not in sip.trusted_peers"),
            Self::SourceRate => f.write_str("too many INVITEs from this source"),
            Self::MaxCalls => f.write_str("max_calls reached"),
            Self::ConferenceFull => f.write_str("the conference is full"),
            Self::NoRtpPort => f.write_str("no RTP port free"),
            Self::Overloaded => f.write_str("overloaded"),
            Self::Malformed(e) => write!(f, "{e}"),
            Self::Unframed(e) => write!(f, "{e}"),
            Self::TooManyHops => f.write_str("Max-Forwards reached zero"),
            Self::Loop => f.write_str("loop detected: the request carries our own Via"),
            Self::Merged => f.write_str("merged request"),
            Self::UnsupportedExtension(_) => f.write_str("unsupported extension"),
            Self::NoFromTag => f.write_str("From has no tag"),
            Self::BadMode => f.write_str("X-Interconnect-Mode is transfer, bridge or conference"),
            Self::MalformedSessionExpires => f.write_str("malformed Session-Expires"),
            Self::IntervalTooSmall { .. } => f.write_str("session interval too small"),
            Self::UnsupportedBody => f.write_str("only application/sdp bodies are understood"),
            Self::UnsupportedInfo => f.write_str("INFO bodies understood: application/dtmf-relay, application/dtmf"),
            Self::NoDtmfSignal => f.write_str("no DTMF signal in the INFO body"),
            Self::UserToUser(e) => write!(f, "User-to-User: {e}"),
            Self::Token(e) => write!(f, "participant token: {e}"),
            Self::ParticipantBusy => f.write_str("the participant already has a live SIP leg"),
            Self::Sdp(e) => write!(f, "{e}"),
            Self::NoSuchDialog => f.write_str("no such dialog"),
            Self::NoSuchTransaction => f.write_str("no such transaction"),
            Self::CSeqOutOfOrder => f.write_str("CSeq out of order"),
            Self::RequestPending => f.write_str("request pending"),
            Self::MethodNotAllowed { .. } => f.write_str("method not allowed here"),
            Self::Cancelled => f.write_str("cancelled"),
            Self::OfferRefused => f.write_str("the offer cannot be answered"),
            Self::EndedWhileRinging(why) => f.write_str(why),
        }
    }
}

/// Text made safe for a quoted string: no quote, backslash or control character survives.
pub fn quoted_text(why: &str) -> String {
    why.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// A `Warning` value from us: `<code> interwork "<why>"`.
pub fn warning(code: u16, why: &str) -> String {
    format!("{code} interwork \"{}\"", quoted_text(why))
}

/// A `Reason` value: `SIP;cause=<status>;text="<why>"` (also on a BYE, with cause 200).
pub fn reason(status: u16, why: &str) -> String {
    format!("SIP;cause={status};text=\"{}\"", quoted_text(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(refusal: &Refusal) -> Response {
        let mut r =
            Response { status: refusal.status(), reason: String::new(), headers: Default::default(), body: vec![] };
        refusal.write(&mut r);
        r
    }

    #[test]
    fn what_a_peer_sends_cannot_break_out_of_the_quotes() {
        assert_eq!(warning(399, "a \"b\" \\ c\r\nVia: x"), "399 interwork \"a 'b' / c  Via: x\"");
        assert_eq!(reason(503, "over\u{7}loaded"), "SIP;cause=503;text=\"over loaded\"");
        let r = written(&Refusal::UserToUser(UuiError::NoToken { elements: 0 }));
        assert!(!r.headers.get("Warning").unwrap().contains('\n'));
    }

    /// CONTRACT §5's failure table, as the wire shows it.
    #[test]
    fn each_reason_has_its_status_and_retry_after() {
        let cases: [(Refusal, u16, Option<u32>); 12] = [
            (Refusal::Draining, 503, Some(30)),
            (Refusal::MaxCalls, 503, Some(5)),
            (Refusal::SourceRate, 503, Some(1)),
            (Refusal::ConferenceFull, 503, Some(30)),
            (Refusal::Overloaded, 503, Some(5)),
            (Refusal::Token(TokenError::Expired), 403, None),
            (Refusal::Token(TokenError::UnknownParticipant("p".into())), 404, None),
            (Refusal::Token(TokenError::NotInSession("p".into())), 404, None),
            (Refusal::ParticipantBusy, 486, None),
            (Refusal::Sdp(SdpError::NoCommonCodec), 488, None),
            (Refusal::Sdp(SdpError::TooManyMedia { count: 65 }), 400, None),
            (Refusal::TooManyHops, 483, None),
        ];
        for (refusal, status, retry) in cases {
            let r = written(&refusal);
            assert_eq!(refusal.status(), status, "{refusal}");
            assert_eq!(r.headers.get("Retry-After").map(|v| v.parse().unwrap()), retry, "{refusal}");
            assert_eq!(r.headers.get("Reason"), Some(reason(status, &refusal.to_string()).as_str()));
        }
        assert_eq!(Refusal::Sdp(SdpError::NoCommonCodec).warn_code(), 305);
        assert_eq!(Refusal::Sdp(SdpError::NoAudio).warn_code(), 304);
        let r = written(&Refusal::UnsupportedExtension(vec!["100rel".into(), "foo".into()]));
        assert_eq!((r.status, r.headers.get("Unsupported")), (420, Some("100rel, foo")));
        let r = written(&Refusal::IntervalTooSmall { min_se: 90 });
        assert_eq!((r.status, r.headers.get("Min-SE")), (422, Some("90")));
    }
}
