//! `a=fmtp` (RFC 4566 §6) for the formats we use: AMR-WB parameters (RFC 4867 §8.1) and the
//! telephone-event list (RFC 4733 §2.4.1).

use std::fmt::Write as _;

use super::rtpmap::parse_pt;
use crate::media::params::AmrWbParams;

/// Splits an `a=fmtp` value into its payload type and parameter text.
pub(crate) fn split_fmtp(value: &str) -> Option<(u8, &str)> {
    let value = value.trim();
    let (pt, params) = value.split_once(|c: char| c.is_ascii_whitespace()).unwrap_or((value, ""));
    Some((parse_pt(pt)?, params.trim()))
}

/// Reads AMR-WB parameters. `None` when the payload type is not usable by us: a parameter we
/// do not support is set, or a known parameter has a value outside its RFC 4867 range.
/// Unknown parameters are ignored (RFC 4566 §6: fmtp is format-specific, extensions happen).
pub(crate) fn parse_amr_wb(params: &str, channels: Option<u8>) -> Option<AmrWbParams> {
    if channels.is_some_and(|c| c != 1) {
        return None;
    }
    let mut p = AmrWbParams::new(false);
    for (name, value) in params_iter(params) {
        let flag = || match value {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        };
        match name.to_ascii_lowercase().as_str() {
            "octet-align" => p.octet_align = flag()?,
            "mode-set" => p.mode_set = Some(parse_mode_set(value)?),
            "mode-change-period" => p.mode_change_period = Some(one_or_two(value)?),
            "mode-change-capability" => p.mode_change_capability = Some(one_or_two(value)?),
            "mode-change-neighbor" => p.mode_change_neighbor = flag()?,
            "max-red" => p.max_red = Some(value.parse().ok()?),
            // RFC 4867 §4.3.2 CRC and §4.3.1 robust sorting and interleaving: not implemented.
            "crc" | "robust-sorting" if flag()? => return None,
            "interleaving" => return None,
            _ => {}
        }
    }
    Some(p)
}

/// The fmtp parameter text of our side of an AMR-WB stream, or `None` when every parameter has
/// its default. The layout and the restrictions of the offer are echoed (RFC 4867 §8.3.1:
/// octet-align, mode-change-period and mode-change-neighbor must agree; mode-set may be echoed).
pub(crate) fn write_amr_wb(p: &AmrWbParams) -> Option<String> {
    let mut out = Vec::new();
    if p.octet_align {
        out.push("octet-align=1".to_owned());
    }
    if let Some(set) = &p.mode_set {
        let list: Vec<String> = set.iter().map(u8::to_string).collect();
        out.push(format!("mode-set={}", list.join(",")));
    }
    if let Some(period) = p.mode_change_period {
        out.push(format!("mode-change-period={period}"));
    }
    if p.mode_change_neighbor {
        out.push("mode-change-neighbor=1".to_owned());
    }
    (!out.is_empty()).then(|| out.join(";"))
}

/// Reads the event list of a telephone-event fmtp (RFC 4733 §2.4.1) as a bit mask of the DTMF
/// events 0–15, the only ones we send or understand (RFC 4733 §3.2). Events above 15 are
/// ignored. `None` when malformed.
pub(crate) fn parse_events(params: &str) -> Option<u16> {
    if params.trim().is_empty() {
        // RFC 4733 §2.4.1: "If no events are specified, the receiver assumes 0-15".
        return Some(DTMF_EVENTS);
    }
    let mut mask = 0u16;
    for item in params.split(',') {
        let item = item.trim();
        let (lo, hi) = match item.split_once('-') {
            Some((lo, hi)) => (lo.trim().parse::<u8>().ok()?, hi.trim().parse::<u8>().ok()?),
            None => {
                let e = item.parse::<u8>().ok()?;
                (e, e)
            }
        };
        if lo > hi {
            return None;
        }
        for e in lo..=hi.min(15) {
            mask |= 1 << e;
        }
    }
    Some(mask)
}

/// Writes an event mask as RFC 4733 ranges, e.g. `0-15` or `0-9,11`.
pub(crate) fn write_events(mask: u16) -> String {
    let mut out = String::new();
    let mut e = 0u8;
    while e < 16 {
        if mask & (1 << e) == 0 {
            e += 1;
            continue;
        }
        let start = e;
        while e < 16 && mask & (1 << e) != 0 {
            e += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if e - 1 == start {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{}", e - 1);
        }
    }
    out
}

/// `name=value` pairs separated by `;` (RFC 4867 §8.2.1 maps the media type parameters so).
fn params_iter(params: &str) -> impl Iterator<Item = (&str, &str)> {
    params.split(';').filter_map(|p| {
        let p = p.trim();
        if p.is_empty() {
            return None;
        }
        Some(match p.split_once('=') {
            Some((n, v)) => (n.trim(), v.trim()),
            None => (p, ""),
        })
    })
}

/// A `mode-set` list: AMR-WB speech modes 0–8 (RFC 4867 §8.1), sorted and without duplicates.
/// Values outside 0–8 are dropped so our answer never claims a mode the codec does not have;
/// `None` when malformed or nothing valid remains.
fn parse_mode_set(value: &str) -> Option<Vec<u8>> {
    let mut modes = Vec::new();
    for m in value.split(',') {
        let m: u8 = m.trim().parse().ok()?;
        if m <= MAX_AMR_WB_MODE && !modes.contains(&m) {
            modes.push(m);
        }
    }
    modes.sort_unstable();
    (!modes.is_empty()).then_some(modes)
}

fn one_or_two(value: &str) -> Option<u8> {
    match value {
        "1" => Some(1),
        "2" => Some(2),
        _ => None,
    }
}

/// The DTMF events 0–9, `*`, `#`, A–D (RFC 4733 §3.2).
pub(crate) const DTMF_EVENTS: u16 = 0xffff;

/// Highest AMR-WB speech mode, 23.85 kbit/s (RFC 4867 §8.1, mode-set).
const MAX_AMR_WB_MODE: u8 = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amr_wb_defaults_are_bandwidth_efficient() {
        assert_eq!(parse_amr_wb("", None), Some(AmrWbParams::new(false)));
        assert_eq!(write_amr_wb(&AmrWbParams::new(false)), None);
    }

    #[test]
    fn amr_wb_rfc4867_example() {
        // RFC 4867 §8.2.2-style parameters.
        let p = parse_amr_wb("octet-align=1; mode-set=0,2,5,7; mode-change-period=2; mode-change-neighbor=1", Some(1))
            .unwrap();
        assert!(p.octet_align);
        assert_eq!(p.mode_set, Some(vec![0, 2, 5, 7]));
        assert_eq!(p.mode_change_period, Some(2));
        assert!(p.mode_change_neighbor);
        assert_eq!(
            write_amr_wb(&p).unwrap(),
            "octet-align=1;mode-set=0,2,5,7;mode-change-period=2;mode-change-neighbor=1"
        );
    }

    #[test]
    fn amr_wb_mode_set_is_cleaned() {
        let p = parse_amr_wb("mode-set=8,2,2,9", None).unwrap();
        assert_eq!(p.mode_set, Some(vec![2, 8]));
        assert_eq!(parse_amr_wb("mode-set=9", None), None);
        assert_eq!(parse_amr_wb("mode-set=a", None), None);
    }

    #[test]
    fn amr_wb_unsupported() {
        for bad in
            ["crc=1", "robust-sorting=1", "interleaving=4", "octet-align=2", "mode-change-period=3", "max-red=-1"]
        {
            assert_eq!(parse_amr_wb(bad, None), None, "{bad}");
        }
        assert_eq!(parse_amr_wb("", Some(2)), None);
        assert!(parse_amr_wb("crc=0; robust-sorting=0; foo=bar; max-red=220", None).is_some());
    }

    #[test]
    fn events() {
        assert_eq!(parse_events(""), Some(0xffff));
        assert_eq!(parse_events("0-15"), Some(0xffff));
        assert_eq!(parse_events("0-16"), Some(0xffff));
        assert_eq!(parse_events("0-11"), Some(0x0fff));
        assert_eq!(parse_events("32-40"), Some(0));
        assert_eq!(parse_events("1,3-4"), Some(0b11010));
        assert_eq!(parse_events("5-1"), None);
        assert_eq!(parse_events("x"), None);
        assert_eq!(write_events(0xffff), "0-15");
        assert_eq!(write_events(0b11010), "1,3-4");
        assert_eq!(write_events(0x8001), "0,15");
    }

    #[test]
    fn split() {
        assert_eq!(split_fmtp("96 octet-align=1"), Some((96, "octet-align=1")));
        assert_eq!(split_fmtp("101"), Some((101, "")));
        assert_eq!(split_fmtp("x a"), None);
    }
}
