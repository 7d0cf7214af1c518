//! The codec mode request (RFC 4867 §4.3.1): 4 bits in front of every payload asking the
//! peer's encoder for a mode.

use crate::amrwb::Mode;

/// A codec mode request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Cmr {
    /// CMR = 15: no request.
    #[default]
    NoRequest,
    /// CMR = 0..=8: please encode with this mode.
    Mode(Mode),
    /// CMR = 9..=14, reserved for AMR-WB; received as data and ignored by the bridge,
    /// never sent.
    Reserved(u8),
}

impl Cmr {
    /// From the 4-bit field (higher bits are ignored).
    pub const fn from_bits(bits: u8) -> Self {
        let bits = bits & 0x0F;
        match Mode::from_index(bits) {
            Some(mode) => Self::Mode(mode),
            None if bits == NO_REQUEST => Self::NoRequest,
            None => Self::Reserved(bits),
        }
    }

    /// The 4-bit field.
    pub const fn bits(self) -> u8 {
        match self {
            Self::NoRequest => NO_REQUEST,
            Self::Mode(mode) => mode.index(),
            Self::Reserved(bits) => bits & 0x0F,
        }
    }

    /// The requested mode, if any.
    pub const fn mode(self) -> Option<Mode> {
        match self {
            Self::Mode(mode) => Some(mode),
            _ => None,
        }
    }
}

/// RFC 4867 §4.3.1: "CMR value 15 indicates that no mode request is present".
const NO_REQUEST: u8 = 15;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_sixteen_values_round_trip() {
        for bits in 0..16 {
            assert_eq!(Cmr::from_bits(bits).bits(), bits);
        }
        assert_eq!(Cmr::from_bits(15), Cmr::NoRequest);
        assert_eq!(Cmr::from_bits(8), Cmr::Mode(Mode::M8));
        assert_eq!(Cmr::from_bits(9), Cmr::Reserved(9));
        assert_eq!(Cmr::from_bits(14).mode(), None);
    }
}
