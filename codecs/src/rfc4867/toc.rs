//! One table-of-contents entry (RFC 4867 §4.3.2): F (another entry follows), FT (frame type)
//! and Q (frame quality). Six bits in the bandwidth-efficient layout; in the octet-aligned
//! layout the same six bits followed by two zero padding bits.

use crate::amrwb::{FrameQuality, FrameType, ReservedFrameType};

/// A ToC entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TocEntry {
    /// F: another entry follows this one.
    pub follows: bool,
    /// FT.
    pub frame_type: FrameType,
    /// Q.
    pub quality: FrameQuality,
}

impl TocEntry {
    /// Parses the six bits `F|FT(4)|Q` held in the low bits of `bits`.
    pub const fn from_bits(bits: u8) -> Result<Self, ReservedFrameType> {
        let frame_type = match FrameType::from_ft((bits >> 1) & 0x0F) {
            Ok(frame_type) => frame_type,
            Err(reserved) => return Err(reserved),
        };
        Ok(Self { follows: bits & 0x20 != 0, frame_type, quality: FrameQuality::from_bit(bits & 0x01 != 0) })
    }

    /// The six bits `F|FT(4)|Q`.
    pub const fn bits(self) -> u8 {
        ((self.follows as u8) << 5) | (self.frame_type.ft() << 1) | self.quality.bit() as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amrwb::Mode;

    #[test]
    fn known_entries() {
        // F=1, FT=2, Q=1 -> 1 0010 1; F=0, FT=15, Q=0 -> 0 1111 0.
        let entry = TocEntry { follows: true, frame_type: FrameType::Speech(Mode::M2), quality: FrameQuality::Good };
        assert_eq!(entry.bits(), 0b10_0101);
        assert_eq!(TocEntry::from_bits(0b10_0101), Ok(entry));
        let no_data = TocEntry { follows: false, frame_type: FrameType::NoData, quality: FrameQuality::Damaged };
        assert_eq!(no_data.bits(), 0b01_1110);
        assert_eq!(TocEntry::from_bits(10 << 1), Err(ReservedFrameType(10)));
        assert_eq!(TocEntry::from_bits(0b11_1011), Err(ReservedFrameType(13)));
    }
}
