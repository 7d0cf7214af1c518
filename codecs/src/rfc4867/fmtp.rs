//! The AMR-WB media type parameters (RFC 4867 §8.2) as they appear in an SDP
//! `a=fmtp:<pt> ...` line, parsed into types. Unknown parameters are ignored (RFC 4855 §3);
//! a known one with a bad value is an error naming it.

use thiserror::Error;

use super::ModeSet;
use crate::amrwb::Mode;

/// The parameters of one AMR-WB payload type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fmtp {
    /// `octet-align=1`.
    pub octet_align: bool,
    /// `mode-set=0,2,5,7`; `None` when absent (every mode).
    pub mode_set: Option<ModeSet>,
    /// `mode-change-period=N` (1 or 2).
    pub mode_change_period: Option<u8>,
    /// `mode-change-capability=N` (1 or 2).
    pub mode_change_capability: Option<u8>,
    /// `mode-change-neighbor=1`.
    pub mode_change_neighbor: bool,
    /// `max-red=N` in milliseconds.
    pub max_red: Option<u16>,
    /// `crc=1` (refused by [`super::PayloadConfig::from_fmtp`]).
    pub crc: bool,
    /// `robust-sorting=1` (refused).
    pub robust_sorting: bool,
    /// `interleaving=N` (refused).
    pub interleaving: Option<u16>,
    /// `channels=N`; only 1 is supported by the bridge, the value is kept for the answer.
    pub channels: Option<u8>,
}

/// A parameter name, so an error can say which one was bad without carrying text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FmtpParam {
    /// `octet-align`.
    OctetAlign,
    /// `mode-set`.
    ModeSet,
    /// `mode-change-period`.
    ModeChangePeriod,
    /// `mode-change-capability`.
    ModeChangeCapability,
    /// `mode-change-neighbor`.
    ModeChangeNeighbor,
    /// `max-red`.
    MaxRed,
    /// `crc`.
    Crc,
    /// `robust-sorting`.
    RobustSorting,
    /// `interleaving`.
    Interleaving,
    /// `channels`.
    Channels,
}

/// A known parameter with a value RFC 4867 does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("invalid value for AMR-WB fmtp parameter {param:?}")]
pub struct FmtpError {
    /// Which parameter.
    pub param: FmtpParam,
}

impl Fmtp {
    /// Parses the text after the payload type, e.g. `"octet-align=1; mode-set=0,2,5,7"`.
    pub fn parse(text: &str) -> Result<Self, FmtpError> {
        let mut fmtp = Self::default();
        for item in text.split(';').map(str::trim).filter(|item| !item.is_empty()) {
            let (name, value) = item.split_once('=').map_or((item, ""), |(n, v)| (n.trim(), v.trim()));
            let Some(param) = PARAMS.iter().find(|(known, _)| known.eq_ignore_ascii_case(name)).map(|(_, p)| *p) else {
                continue;
            };
            let invalid = FmtpError { param };
            match param {
                FmtpParam::OctetAlign => fmtp.octet_align = flag(value).ok_or(invalid)?,
                FmtpParam::ModeChangeNeighbor => fmtp.mode_change_neighbor = flag(value).ok_or(invalid)?,
                FmtpParam::Crc => fmtp.crc = flag(value).ok_or(invalid)?,
                FmtpParam::RobustSorting => fmtp.robust_sorting = flag(value).ok_or(invalid)?,
                FmtpParam::ModeSet => fmtp.mode_set = Some(mode_set(value).ok_or(invalid)?),
                FmtpParam::ModeChangePeriod => {
                    fmtp.mode_change_period = Some(value.parse().ok().filter(|v| (1..=2).contains(v)).ok_or(invalid)?);
                }
                FmtpParam::ModeChangeCapability => {
                    fmtp.mode_change_capability =
                        Some(value.parse().ok().filter(|v| (1..=2).contains(v)).ok_or(invalid)?);
                }
                FmtpParam::MaxRed => fmtp.max_red = Some(value.parse().map_err(|_| invalid)?),
                FmtpParam::Interleaving => {
                    fmtp.interleaving = Some(value.parse().ok().filter(|v| *v > 0).ok_or(invalid)?);
                }
                FmtpParam::Channels => fmtp.channels = Some(value.parse().ok().filter(|v| *v > 0).ok_or(invalid)?),
            }
        }
        Ok(fmtp)
    }
}

fn flag(value: &str) -> Option<bool> {
    match value {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

fn mode_set(value: &str) -> Option<ModeSet> {
    let mut modes = [Mode::M0; 9];
    let mut count = 0;
    for item in value.split(',') {
        let mode = item.trim().parse().ok().and_then(Mode::from_index)?;
        *modes.get_mut(count)? = mode;
        count += 1;
    }
    Some(ModeSet::new(&modes[..count]))
}

const PARAMS: [(&str, FmtpParam); 10] = [
    ("octet-align", FmtpParam::OctetAlign),
    ("mode-set", FmtpParam::ModeSet),
    ("mode-change-period", FmtpParam::ModeChangePeriod),
    ("mode-change-capability", FmtpParam::ModeChangeCapability),
    ("mode-change-neighbor", FmtpParam::ModeChangeNeighbor),
    ("max-red", FmtpParam::MaxRed),
    ("crc", FmtpParam::Crc),
    ("robust-sorting", FmtpParam::RobustSorting),
    ("interleaving", FmtpParam::Interleaving),
    ("channels", FmtpParam::Channels),
];

#[cfg(test)]
mod tests {
    use super::super::{Layout, PayloadConfig, UnsupportedOption};
    use super::*;

    #[test]
    fn parses_a_typical_offer() {
        let fmtp = Fmtp::parse("octet-align=1; mode-set=0,2, 5,8;mode-change-period=2 ; foo=bar").unwrap();
        assert!(fmtp.octet_align);
        assert_eq!(fmtp.mode_set, Some(ModeSet::new(&[Mode::M0, Mode::M2, Mode::M5, Mode::M8])));
        assert_eq!(fmtp.mode_change_period, Some(2));
        let config = PayloadConfig::from_fmtp(&fmtp, 3).unwrap();
        assert_eq!(config.layout, Layout::OctetAligned);
        assert!(!config.mode_set.contains(Mode::M1));
        assert_eq!(config.mode_set.highest(), Some(Mode::M8));
        assert_eq!(config.max_frames, 3);
    }

    #[test]
    fn empty_fmtp_is_bandwidth_efficient_with_every_mode() {
        let config = PayloadConfig::from_fmtp(&Fmtp::parse("").unwrap(), 1).unwrap();
        assert_eq!(config, PayloadConfig { max_frames: 1, ..PayloadConfig::bandwidth_efficient() });
    }

    #[test]
    fn crc_interleaving_and_robust_sorting_are_parsed_then_refused() {
        let crc = Fmtp::parse("octet-align=1;crc=1").unwrap();
        assert_eq!(PayloadConfig::from_fmtp(&crc, 1), Err(UnsupportedOption::Crc));
        let interleaving = Fmtp::parse("octet-align=1; interleaving=4").unwrap();
        assert_eq!(interleaving.interleaving, Some(4));
        let err = PayloadConfig::from_fmtp(&interleaving, 1).unwrap_err();
        assert_eq!(err, UnsupportedOption::Interleaving(4));
        assert!(err.to_string().contains("interleaving=4"), "{err}");
        let robust = Fmtp::parse("robust-sorting=1;octet-align=1").unwrap();
        assert_eq!(PayloadConfig::from_fmtp(&robust, 1), Err(UnsupportedOption::RobustSorting));
        // Explicit zeros are fine.
        assert!(PayloadConfig::from_fmtp(&Fmtp::parse("crc=0;robust-sorting=0").unwrap(), 1).is_ok());
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for (text, param) in [
            ("octet-align=yes", FmtpParam::OctetAlign),
            ("mode-set=0,9", FmtpParam::ModeSet),
            ("mode-set=", FmtpParam::ModeSet),
            ("mode-set=0,1,2,3,4,5,6,7,8,8", FmtpParam::ModeSet),
            ("mode-change-period=3", FmtpParam::ModeChangePeriod),
            ("interleaving=0", FmtpParam::Interleaving),
            ("MAX-RED=-1", FmtpParam::MaxRed),
        ] {
            assert_eq!(Fmtp::parse(text), Err(FmtpError { param }), "{text}");
        }
    }
}
