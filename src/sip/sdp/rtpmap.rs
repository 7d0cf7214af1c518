//! `a=rtpmap` (RFC 4566 §6) and the static payload types of RFC 3551 §6 that need no rtpmap.

/// One `a=rtpmap:<pt> <encoding>/<clock>[/<channels>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RtpMap {
    /// Payload type, 0–127.
    pub(crate) pt: u8,
    /// Encoding name as sent; compare with `eq_ignore_ascii_case` (RFC 4855 §3).
    pub(crate) encoding: String,
    /// Clock rate in Hz.
    pub(crate) clock: u32,
    /// Channel count; `None` when absent, which means one (RFC 4566 §6).
    pub(crate) channels: Option<u8>,
}

/// Parses the value of an `a=rtpmap` attribute. `None` when it is malformed: the payload type
/// it would describe is then unusable, not the whole SDP.
pub(crate) fn parse_rtpmap(value: &str) -> Option<RtpMap> {
    let (pt, rest) = value.trim().split_once(|c: char| c.is_ascii_whitespace())?;
    let pt = parse_pt(pt)?;
    let mut parts = rest.trim().split('/');
    let encoding = parts.next()?.trim();
    if encoding.is_empty() {
        return None;
    }
    let clock = parts.next()?.trim().parse().ok().filter(|&c| c > 0)?;
    let channels = match parts.next() {
        Some(c) => Some(c.trim().parse().ok().filter(|&c| c > 0)?),
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(RtpMap { pt, encoding: encoding.to_owned(), clock, channels })
}

/// Parses an RTP payload type number: 0–127 (RFC 3550 §5.1, seven bits).
pub(crate) fn parse_pt(s: &str) -> Option<u8> {
    s.parse::<u8>().ok().filter(|&pt| pt <= MAX_PT)
}

/// The meaning of a static payload type used without an rtpmap (RFC 3551 §6, Table 4); only
/// those we may use.
pub(crate) fn static_rtpmap(pt: u8) -> Option<RtpMap> {
    let (encoding, clock) = match pt {
        PT_PCMU => ("PCMU", 8_000),
        PT_PCMA => ("PCMA", 8_000),
        PT_CN => ("CN", 8_000),
        _ => return None,
    };
    Some(RtpMap { pt, encoding: encoding.to_owned(), clock, channels: None })
}

/// Highest RTP payload type: the field has seven bits (RFC 3550 §5.1).
pub(crate) const MAX_PT: u8 = 127;

/// PCMU, static (RFC 3551 §6).
pub(crate) const PT_PCMU: u8 = 0;

/// PCMA, static (RFC 3551 §6).
pub(crate) const PT_PCMA: u8 = 8;

/// Comfort noise at 8 kHz, static (RFC 3389 §5).
pub(crate) const PT_CN: u8 = 13;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc_examples() {
        assert_eq!(
            parse_rtpmap("96 AMR-WB/16000/1"),
            Some(RtpMap { pt: 96, encoding: "AMR-WB".into(), clock: 16_000, channels: Some(1) })
        );
        assert_eq!(
            parse_rtpmap("101 telephone-event/8000"),
            Some(RtpMap { pt: 101, encoding: "telephone-event".into(), clock: 8_000, channels: None })
        );
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "",
            "96",
            "96 ",
            "128 PCMU/8000",
            "-1 PCMU/8000",
            "96 /8000",
            "96 X/0",
            "96 X/8000/0",
            "96 X/8000/1/2",
            "96 X",
            "96 X/abc",
            "300 X/8000",
        ] {
            assert_eq!(parse_rtpmap(bad), None, "{bad}");
        }
    }

    #[test]
    fn statics() {
        assert_eq!(static_rtpmap(0).unwrap().encoding, "PCMU");
        assert_eq!(static_rtpmap(8).unwrap().encoding, "PCMA");
        assert_eq!(static_rtpmap(13).unwrap().encoding, "CN");
        assert_eq!(static_rtpmap(3), None);
    }
}
