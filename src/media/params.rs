//! What a SIP leg's media runs with: the codec and its parameters, the RTP layout, the peer's
//! addresses, the directions and the SRTP keys. The SDP offer/answer (`crate::sip::sdp`)
//! produces these; the media cores take them and know nothing of SDP.

use std::net::SocketAddr;

/// What an offer/answer exchange agreed for the one audio stream of the leg.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The codec, with its parameters as both sides agreed them.
    pub codec: Codec,
    /// Its RTP payload type: the offerer's number, used in both directions.
    pub payload_type: u8,
    /// RTP clock rate of the codec in Hz (16,000 for AMR-WB, 8,000 for G.711).
    pub clock_rate: u32,
    /// Packetization we send with, in milliseconds (10–60, a multiple of the frame length).
    pub ptime_ms: u32,
    /// RFC 4733 events at the codec's clock: payload type and clock rate.
    pub telephone_event: Option<(u8, u32)>,
    /// Comfort noise (RFC 3389) payload type at the codec's clock.
    pub comfort_noise: Option<u8>,
    /// Where the peer receives RTP. `0.0.0.0` means the peer holds the call (RFC 3264 §8.4).
    pub remote_rtp: SocketAddr,
    /// Where the peer receives RTCP; `None` with rtcp-mux (then it is `remote_rtp`).
    pub remote_rtcp: Option<SocketAddr>,
    /// RTP and RTCP share one port (RFC 5761).
    pub rtcp_mux: bool,
    /// The transport profile of the stream.
    pub profile: Profile,
    /// The direction the peer declared (a `c=0.0.0.0` hold reads as `sendonly`).
    pub remote_direction: Direction,
    /// The direction we declared.
    pub local_direction: Direction,
    /// SDES keys when the profile is secure.
    pub srtp: Option<SrtpKeys>,
}

impl Negotiated {
    /// A plain RTP/AVP `sendrecv` agreement on `codec` toward `remote_rtp`: its static payload
    /// type (96 for AMR-WB), 20 ms packets, RFC 4733 (PT 101) at the codec's clock, RTCP on the
    /// next port. The starting point of tests, benches and tools that need an agreement
    /// without an SDP exchange; change fields with struct update syntax.
    pub fn sendrecv(codec: Codec, remote_rtp: SocketAddr) -> Self {
        let payload_type = match codec {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::AmrWb(_) => 96,
        };
        let clock_rate = codec.clock_rate();
        Self {
            codec,
            payload_type,
            clock_rate,
            ptime_ms: 20,
            telephone_event: Some((101, clock_rate)),
            comfort_noise: None,
            remote_rtp,
            remote_rtcp: None,
            rtcp_mux: false,
            profile: Profile::Avp,
            remote_direction: Direction::SendRecv,
            local_direction: Direction::SendRecv,
            srtp: None,
        }
    }

    /// The same over SRTP-SDES (RTP/SAVP) with `keys`, when given.
    pub fn with_srtp(self, keys: Option<SrtpKeys>) -> Self {
        match keys {
            Some(keys) => Self { profile: Profile::Savp, srtp: Some(keys), ..self },
            None => self,
        }
    }
}

/// SRTP master keys agreed by SDES (RFC 4568).
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    /// The suite, the same both ways.
    pub suite: SrtpSuite,
    /// The `a=crypto` tag both sides used.
    pub tag: u32,
    /// The peer's master key then master salt: decrypts what it sends.
    pub remote_key: Vec<u8>,
    /// Our master key then master salt: encrypts what we send.
    pub local_key: Vec<u8>,
}

impl std::fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never reach a log (STYLE §8).
        f.debug_struct("SrtpKeys").field("suite", &self.suite).field("tag", &self.tag).finish_non_exhaustive()
    }
}

/// The codecs the gateway speaks on the SIP side (CONTRACT §6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Codec {
    /// AMR-WB (RFC 4867) at 16 kHz.
    AmrWb(AmrWbParams),
    /// G.711 µ-law (RFC 3551 §4.5.14).
    Pcmu,
    /// G.711 A-law (RFC 3551 §4.5.14).
    Pcma,
}

impl Codec {
    /// RTP clock rate in Hz.
    pub fn clock_rate(&self) -> u32 {
        match self {
            Self::AmrWb(_) => 16_000,
            Self::Pcmu | Self::Pcma => 8_000,
        }
    }

    /// Encoding name for `a=rtpmap`.
    pub fn encoding_name(&self) -> &'static str {
        match self {
            Self::AmrWb(_) => "AMR-WB",
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
        }
    }

    /// Duration of one frame in ms: ptime must be a multiple of it. AMR-WB frames are 20 ms
    /// (RFC 4867 §4.1); G.711 has no frames, 10 ms is the usual granularity.
    pub fn frame_ms(&self) -> u32 {
        match self {
            Self::AmrWb(_) => 20,
            Self::Pcmu | Self::Pcma => 10,
        }
    }

    /// True when `other` is the same codec in the same RTP layout, whatever the other
    /// parameters: switching between those would need the peer's decoder to change.
    pub fn same_kind(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::AmrWb(a), Self::AmrWb(b)) => a.octet_align == b.octet_align,
            (Self::Pcmu, Self::Pcmu) | (Self::Pcma, Self::Pcma) => true,
            _ => false,
        }
    }
}

/// Stream direction (RFC 3264 §5.1, RFC 4566 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv`, the default.
    SendRecv,
    /// `a=sendonly`: the declaring side only sends (it holds the other).
    SendOnly,
    /// `a=recvonly`: the declaring side only receives.
    RecvOnly,
    /// `a=inactive`: nothing flows.
    Inactive,
}

impl Direction {
    /// The direction an answerer declares for this offered one (RFC 3264 §6.1): `sendonly`
    /// is answered `recvonly`, `recvonly` `sendonly`, the others unchanged.
    pub fn answer(self) -> Self {
        match self {
            Self::SendOnly => Self::RecvOnly,
            Self::RecvOnly => Self::SendOnly,
            other => other,
        }
    }

    /// The attribute name.
    pub fn attribute(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    /// True when the declaring side sends media.
    pub fn sends(self) -> bool {
        matches!(self, Self::SendRecv | Self::SendOnly)
    }

    /// True when the declaring side receives media.
    pub fn receives(self) -> bool {
        matches!(self, Self::SendRecv | Self::RecvOnly)
    }
}

/// RTP transport profile of an m-line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// `RTP/AVP` (RFC 3551).
    Avp,
    /// `RTP/AVPF` (RFC 4585); we send no feedback but answer the profile as offered.
    Avpf,
    /// `RTP/SAVP` (RFC 3711).
    Savp,
    /// `RTP/SAVPF` (RFC 5124).
    Savpf,
}

impl Profile {
    /// The `m=` proto token.
    pub fn proto(self) -> &'static str {
        match self {
            Self::Avp => "RTP/AVP",
            Self::Avpf => "RTP/AVPF",
            Self::Savp => "RTP/SAVP",
            Self::Savpf => "RTP/SAVPF",
        }
    }

    /// True for the SRTP profiles.
    pub fn is_secure(self) -> bool {
        matches!(self, Self::Savp | Self::Savpf)
    }

    /// The profile named by an `m=` proto token; `None` for any other transport (DTLS-SRTP's
    /// `UDP/TLS/RTP/SAVP`, `udp`, `TCP/RTP/AVP`, ...).
    pub fn from_proto(proto: &str) -> Option<Self> {
        [Self::Avp, Self::Avpf, Self::Savp, Self::Savpf].into_iter().find(|p| p.proto().eq_ignore_ascii_case(proto))
    }
}

/// An SRTP crypto suite we can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SrtpSuite {
    /// `AES_CM_128_HMAC_SHA1_80` (RFC 4568 §6.2.1): AES-128 counter mode, 80-bit tag.
    AesCm128HmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32` (RFC 4568 §6.2.2): AES-128 counter mode, 32-bit tag.
    AesCm128HmacSha1_32,
    /// `AEAD_AES_128_GCM` (RFC 7714 §14.2): AES-128 GCM, 16-byte tag.
    AeadAes128Gcm,
}

impl SrtpSuite {
    /// Every suite, in our order of preference when we offer.
    pub const ALL: [Self; 3] = [Self::AesCm128HmacSha1_80, Self::AesCm128HmacSha1_32, Self::AeadAes128Gcm];

    /// The suite's name in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            Self::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Self::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Self::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    /// The suite named `name` (RFC 4568 §9.1: names are case-sensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        16
    }

    /// Master salt length in bytes: 112 bits for AES-CM (RFC 3711 §8.2), 96 for GCM (RFC 7714
    /// §8.2).
    pub fn salt_len(self) -> usize {
        match self {
            Self::AesCm128HmacSha1_80 | Self::AesCm128HmacSha1_32 => 14,
            Self::AeadAes128Gcm => 12,
        }
    }

    /// Length of the `inline:` key material: master key then master salt.
    pub fn master_len(self) -> usize {
        self.key_len() + self.salt_len()
    }
}

/// AMR-WB payload format parameters (RFC 4867 §8.1) of a negotiated stream.
///
/// Only what we can honour reaches this type: `crc`, `robust-sorting` and `interleaving` make
/// the payload type unusable (the RFC 4867 packetizer in `codecs` does neither), and so does a
/// channel count other than one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmrWbParams {
    /// `octet-align=1`: the octet-aligned layout; `false` (the default) is bandwidth-efficient.
    pub octet_align: bool,
    /// `mode-set`: the modes (0–8) the receiver accepts, sorted; `None` means all of them.
    pub mode_set: Option<Vec<u8>>,
    /// `mode-change-period` (1 or 2): the sender changes mode only every N frames.
    pub mode_change_period: Option<u8>,
    /// `mode-change-capability` (1 or 2) of the offerer; 2 means it can honour a period of 2.
    pub mode_change_capability: Option<u8>,
    /// `mode-change-neighbor=1`: the sender changes only to a neighbouring mode in the set.
    pub mode_change_neighbor: bool,
    /// `max-red`: most milliseconds between a frame and its redundant copy; we send none.
    pub max_red: Option<u16>,
    /// Audio channels; always 1 for now, kept so the type can grow.
    pub channels: u8,
}

impl AmrWbParams {
    /// The defaults of RFC 4867 §8.1 with the given layout: all modes, no restrictions.
    pub fn new(octet_align: bool) -> Self {
        Self {
            octet_align,
            mode_set: None,
            mode_change_period: None,
            mode_change_capability: None,
            mode_change_neighbor: false,
            max_red: None,
            channels: 1,
        }
    }
}

/// SRTP policy on the SIP side (`media.srtp`): what the SDP negotiation accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SrtpPolicy {
    /// Answer SRTP offers with SRTP and plain offers with RTP.
    Optional,
    /// Refuse plain RTP offers (488).
    Mandatory,
    /// Refuse SRTP-only offers (488).
    Off,
}
