//! SDP offer/answer (RFC 3264) for the SIP leg, with SRTP keyed by SDES (RFC 4568).
//!
//! Sans-IO: every function takes the SDP bytes and our local media description and returns the
//! SDP to send and what was agreed ([`Negotiated`]); randomness for SRTP keys comes from
//! the caller, in [`LocalMedia::keying`]. CONTRACT §6 lists what we support: AMR-WB (RFC 4867, both
//! layouts, `mode-set`), PCMU and PCMA (RFC 3551), telephone-event at 8 and 16 kHz (RFC 4733),
//! CN (RFC 3389), ptime 10–60, RTP/AVP(F) and RTP/SAVP(F) under [`SrtpPolicy`].
//!
//! Three entry points, one per offer/answer shape of a SIP dialog:
//! - [`answer`]: the INVITE (or re-INVITE, UPDATE) carried an offer; we answer in the 200.
//! - [`offer`]: a late offer, INVITE without SDP; our offer goes in the 200 ...
//! - [`accept_answer`]: ... and the peer's answer comes in the ACK.
//!
//! Parsing is [`sdp_types`] for the line structure (it keeps SIP SDP attributes as generic
//! name/value pairs); this module reads the attributes we need into types: `rtpmap`, `fmtp`
//! ([`AmrWbParams`]), `crypto` ([`SrtpSuite`]), and the per m-line view in `media`. Inputs are
//! bounded before they cost anything ([`MAX_SDP_LEN`], [`MAX_MEDIA`], [`MAX_ATTRIBUTES`]) and no
//! input makes these functions panic. Errors are typed and say which SIP answer they deserve
//! ([`SdpError::status`], [`SdpError::warning`]).
//!
//! ## Re-offers and the session version
//!
//! RFC 3264 §8 wants the `o=` version bumped when, and only when, the answer changes. Call
//! [`answer`] with `session_version` one above the last one sent, then compare with
//! [`same_session_content`]: when the new answer says the same thing, send the previous SDP
//! (with its old version) instead. Passing `previous` makes a re-offer with unchanged content
//! produce unchanged content: the same codec is kept while it is still offered and our SRTP key
//! is reused while the peer keeps the same crypto tag and suite.

use std::net::IpAddr;

mod crypto;
mod fmtp;
mod media;
mod negotiate;
mod rtpmap;
mod write;

pub use crate::media::params::{AmrWbParams, Codec, Direction, Negotiated, Profile, SrtpKeys, SrtpPolicy, SrtpSuite};
pub use negotiate::{PendingOffer, accept_answer, answer, offer};
// The pcap replay (`interwork replay`) reads and rewrites captured SDP with the same readers.
pub(crate) use crypto::{fresh_key, parse_crypto, write_crypto};
pub(crate) use media::{Format, is_enabled_audio, parse_bounded, read_audio};

/// Our side of the media: where we receive RTP, and the `o=` line identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalMedia {
    /// The address we announce: `media.public_ip` when set, else the local RTP address.
    pub addr: IpAddr,
    /// Our RTP port. Without rtcp-mux we receive RTCP on `rtp_port + 1` (RFC 3605 default), so
    /// the caller should allocate even ports and keep the next one.
    pub rtp_port: u16,
    /// `o=` session id, fixed for the dialog (RFC 4566 §5.2).
    pub session_id: u64,
    /// `o=` session version; see the module docs for when to bump it.
    pub session_version: u64,
    /// Fresh random bytes for the SRTP master keys this negotiation may create, drawn by the
    /// caller (negotiation itself draws no randomness): suite `i` of [`SrtpSuite::ALL`] takes
    /// its key from `KEYING_SLOT * i`.
    pub keying: [u8; KEYING_LEN],
}

/// Bytes of keying material one slot holds: the longest master key and salt of a suite.
pub const KEYING_SLOT: usize = 46;

/// Keying material for one negotiation: a slot per suite.
pub const KEYING_LEN: usize = KEYING_SLOT * SrtpSuite::ALL.len();

/// What the operator allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `media.srtp`.
    pub srtp: SrtpPolicy,
}

/// Why an SDP could not be answered or accepted.
///
/// Sorted by cause: [`SdpError::status`] is 400 for a malformed or over-limit SDP and 488 for a
/// well-formed one we cannot agree to (CONTRACT §5). `media` fields are zero-based m-line
/// indices.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    /// Longer than [`MAX_SDP_LEN`].
    #[error("SDP of {len} bytes is over the limit of {max}", max = MAX_SDP_LEN)]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// Not SDP (RFC 4566 syntax).
    #[error("SDP does not parse: {0}")]
    Unparseable(#[source] sdp_types::ParserError),
    /// More than [`MAX_MEDIA`] m-lines.
    #[error("SDP has {count} m-lines, over the limit of {max}", max = MAX_MEDIA)]
    TooManyMedia {
        /// How many.
        count: usize,
    },
    /// More than [`MAX_ATTRIBUTES`] attributes at session level or in one m-line.
    #[error("SDP has {count} attributes in one section, over the limit of {max}", max = MAX_ATTRIBUTES)]
    TooManyAttributes {
        /// How many.
        count: usize,
    },
    /// An RTP m-line whose format list is not payload type numbers 0–127, or has over
    /// [`MAX_FORMATS`] of them.
    #[error("m-line {media} has an invalid format list")]
    InvalidFormats {
        /// Which m-line.
        media: usize,
    },
    /// An audio m-line with no `c=` at either level (RFC 4566 §5.7 requires one).
    #[error("m-line {media} has no connection address")]
    NoConnection {
        /// Which m-line.
        media: usize,
    },
    /// A connection address we cannot send to: not `IN IP4`/`IN IP6` with a literal unicast
    /// address (a host name needs DNS, multicast is out of scope).
    #[error("m-line {media} has an unsupported connection address")]
    UnsupportedAddress {
        /// Which m-line.
        media: usize,
    },
    /// A transport other than RTP/AVP, RTP/AVPF, RTP/SAVP, RTP/SAVPF, or several ports.
    #[error("m-line {media} uses an unsupported transport")]
    UnsupportedTransport {
        /// Which m-line.
        media: usize,
    },
    /// No enabled audio m-line.
    #[error("no audio stream offered")]
    NoAudio,
    /// No payload type of a usable audio m-line is a codec we speak with parameters we support.
    #[error("no codec in common (AMR-WB, PCMU, PCMA)")]
    NoCommonCodec,
    /// Plain RTP offered, and `media.srtp = "mandatory"`.
    #[error("SRTP is required")]
    SrtpRequired,
    /// SRTP offered, and `media.srtp = "off"`.
    #[error("SRTP is not accepted")]
    SrtpRefused,
    /// SRTP offered but no `a=crypto` line has a suite and key parameters we support.
    #[error("no acceptable a=crypto line")]
    NoAcceptableCrypto,
    /// The answer to our offer uses another transport profile than the one we offered.
    #[error("the answer changes the transport profile")]
    AnswerProfileMismatch,
    /// The answer picks a codec we did not offer, or with other parameters.
    #[error("the answer picks payload type {pt}, which was not offered so")]
    AnswerCodecNotOffered {
        /// Its payload type.
        pt: u8,
    },
    /// The answer's `a=crypto` does not match a tag and suite we offered.
    #[error("the answer's a=crypto tag {tag} does not match our offer")]
    AnswerCryptoNotOffered {
        /// The tag it used.
        tag: u32,
    },
}

impl SdpError {
    /// True when the SDP is broken or hostile rather than merely incompatible.
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            Self::TooLarge { .. }
                | Self::Unparseable(_)
                | Self::TooManyMedia { .. }
                | Self::TooManyAttributes { .. }
                | Self::InvalidFormats { .. }
                | Self::NoConnection { .. }
        )
    }
}

/// True when two SDPs differ at most in their `o=` line: a re-answer that is the same content
/// keeps its session version (RFC 3264 §8; see the module docs).
pub fn same_session_content(a: &str, b: &str) -> bool {
    fn content(s: &str) -> impl Iterator<Item = &str> {
        s.lines().filter(|l| !l.starts_with("o=")).map(str::trim_end)
    }
    content(a).eq(content(b))
}

/// Largest SDP body accepted. Real offers are 300 bytes to a few KiB; 64 KiB bounds the parse.
pub const MAX_SDP_LEN: usize = 64 * 1024;

/// Most m-lines accepted; each is answered, so this bounds the answer too.
pub const MAX_MEDIA: usize = 64;

/// Most attributes accepted at session level or in one m-line.
pub const MAX_ATTRIBUTES: usize = 256;

/// Most formats in one RTP m-line: there are only 128 payload types (RFC 3550 §5.1).
pub const MAX_FORMATS: usize = 128;
