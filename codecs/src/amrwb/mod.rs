//! AMR-WB (3GPP TS 26.171) frames, modes and the codec.
//!
//! The codec is a safe wrapper over Debian's opencore-amrwb (decoder) and vo-amrwbenc (encoder):
//! [`AmrWbEncoder`] turns 320 samples at 16 kHz (20 ms) into one frame, [`AmrWbDecoder`] turns
//! one frame (or a loss) back into 320 samples. A frame here is its speech bits in the order
//! of RFC 4867 §3.6 (class-sorted, MSB first, zero-padded to an octet) plus its [`FrameType`]
//! and [`FrameQuality`]; `rfc4867` moves such frames in and out of RTP payloads.
//!
//! All `unsafe` in the crate is in `ffi.rs` (declarations) and `codec.rs` (the wrapper).

#[allow(unsafe_code)]
mod codec;
#[allow(unsafe_code)]
mod ffi;

use thiserror::Error;

pub use codec::{AmrWbDecoder, AmrWbEncoder, EncodedFrame};

/// Samples per 20 ms frame at 16 kHz.
pub const FRAME_SAMPLES: usize = 320;
/// Largest speech payload of one frame in bytes (mode 8: 477 bits).
pub const MAX_FRAME_BYTES: usize = 60;
/// Decoder delay of opencore-amrwb after vo-amrwbenc, in samples (stack.md §5, 5.9 ms).
pub const CODEC_DELAY_SAMPLES: usize = 95;

/// One of the nine AMR-WB speech codec modes (TS 26.201 Table 1a).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// 6.60 kbit/s.
    M0 = 0,
    /// 8.85 kbit/s.
    M1 = 1,
    /// 12.65 kbit/s.
    M2 = 2,
    /// 14.25 kbit/s.
    M3 = 3,
    /// 15.85 kbit/s.
    M4 = 4,
    /// 18.25 kbit/s.
    M5 = 5,
    /// 19.85 kbit/s.
    M6 = 6,
    /// 23.05 kbit/s.
    M7 = 7,
    /// 23.85 kbit/s.
    M8 = 8,
}

impl Mode {
    /// All modes, lowest rate first.
    pub const ALL: [Self; 9] =
        [Self::M0, Self::M1, Self::M2, Self::M3, Self::M4, Self::M5, Self::M6, Self::M7, Self::M8];

    /// The mode with this index (the FT and CMR value, 0..=8).
    pub const fn from_index(index: u8) -> Option<Self> {
        match index {
            0..=8 => Some(Self::ALL[index as usize]),
            _ => None,
        }
    }

    /// The index (FT and CMR value) of this mode.
    pub const fn index(self) -> u8 {
        self as u8
    }

    /// Speech bits per frame (TS 26.201 Table 2).
    pub const fn bits(self) -> usize {
        SPEECH_BITS[self as usize]
    }

    /// Bit rate in bits per second.
    pub const fn bitrate(self) -> u32 {
        BITRATES[self as usize]
    }
}

/// The frame type of one AMR-WB frame (RFC 4867 §4.3.2, TS 26.201 Table 1a). FT values 10–13
/// are reserved and never get this far: parsing them is an error carrying the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// Speech coded with a mode (FT 0–8).
    Speech(Mode),
    /// Comfort noise parameters, 40 bits (FT 9).
    Sid,
    /// Speech lost: the sender knows a frame is missing (FT 14, no bits).
    SpeechLost,
    /// No data: nothing sent for this frame, e.g. during DTX (FT 15, no bits).
    NoData,
}

impl FrameType {
    /// Parses a 4-bit FT value.
    pub const fn from_ft(ft: u8) -> Result<Self, ReservedFrameType> {
        match ft {
            0..=8 => Ok(Self::Speech(Mode::ALL[ft as usize])),
            FT_SID => Ok(Self::Sid),
            FT_SPEECH_LOST => Ok(Self::SpeechLost),
            FT_NO_DATA => Ok(Self::NoData),
            other => Err(ReservedFrameType(other)),
        }
    }

    /// The 4-bit FT value.
    pub const fn ft(self) -> u8 {
        match self {
            Self::Speech(mode) => mode as u8,
            Self::Sid => FT_SID,
            Self::SpeechLost => FT_SPEECH_LOST,
            Self::NoData => FT_NO_DATA,
        }
    }

    /// Number of payload bits a frame of this type carries.
    pub const fn bits(self) -> usize {
        match self {
            Self::Speech(mode) => mode.bits(),
            Self::Sid => SID_BITS,
            Self::SpeechLost | Self::NoData => 0,
        }
    }

    /// Number of bytes those bits take when padded to an octet.
    pub const fn bytes(self) -> usize {
        self.bits().div_ceil(8)
    }
}

/// An FT value that RFC 4867 reserves for AMR-WB (10–13), or more than 4 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error)]
#[error("reserved AMR-WB frame type {0}")]
pub struct ReservedFrameType(pub u8);

/// The Q bit (RFC 4867 §4.3.2): whether the frame arrived undamaged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FrameQuality {
    /// Q = 1: the frame is fine.
    #[default]
    Good,
    /// Q = 0: the frame is damaged; the decoder conceals it instead of playing it.
    Damaged,
}

impl FrameQuality {
    /// From the Q bit.
    pub const fn from_bit(q: bool) -> Self {
        if q { Self::Good } else { Self::Damaged }
    }

    /// The Q bit.
    pub const fn bit(self) -> bool {
        matches!(self, Self::Good)
    }
}

/// A borrowed frame: what the decoder eats and the packetizer packs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// Its frame type.
    pub frame_type: FrameType,
    /// Its Q bit.
    pub quality: FrameQuality,
    /// Exactly `frame_type.bytes()` bytes of speech bits, MSB first; bits past
    /// `frame_type.bits()` are padding.
    pub data: &'a [u8],
}

/// Errors of the AMR-WB codec wrapper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum AmrWbError {
    /// The C library could not allocate its state.
    #[error("the AMR-WB library could not allocate its state")]
    OutOfMemory,
    /// A frame's data is not as long as its frame type says.
    #[error("AMR-WB frame of type {frame_type:?} needs {expected} bytes, got {actual}")]
    WrongFrameSize {
        /// The frame type.
        frame_type: FrameType,
        /// Bytes that frame type needs.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The encoder produced something that is not a storage-format frame (a library bug).
    #[error("vo-amrwbenc returned {len} bytes with header {header:#04x}")]
    UnexpectedEncoderOutput {
        /// Its return value.
        len: i32,
        /// Its header byte.
        header: u8,
    },
}

/// TS 26.201 Table 2, speech bits per mode.
const SPEECH_BITS: [usize; 9] = [132, 177, 253, 285, 317, 365, 397, 461, 477];
/// TS 26.201 Table 1a, bits per second per mode.
const BITRATES: [u32; 9] = [6_600, 8_850, 12_650, 14_250, 15_850, 18_250, 19_850, 23_050, 23_850];
/// SID frames carry 35 comfort noise bits, 1 STI bit and 4 mode indication bits (TS 26.201 §4.2).
const SID_BITS: usize = 40;
const FT_SID: u8 = 9;
const FT_SPEECH_LOST: u8 = 14;
const FT_NO_DATA: u8 = 15;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes_match_rfc4867_table() {
        // RFC 4867 §3.6 / storage sizes from stack.md §5 (storage bytes = 1 + these).
        let bytes: Vec<usize> = Mode::ALL.iter().map(|m| FrameType::Speech(*m).bytes()).collect();
        assert_eq!(bytes, [17, 23, 32, 36, 40, 46, 50, 58, 60]);
        assert_eq!(FrameType::Sid.bytes(), 5);
        assert_eq!(FrameType::NoData.bytes(), 0);
        assert_eq!(FrameType::SpeechLost.bytes(), 0);
        for mode in Mode::ALL {
            // bits per 20 ms frame times 50 frames per second.
            assert_eq!(mode.bits() as u32 * 50, mode.bitrate());
        }
    }

    #[test]
    fn ft_values_round_trip_and_reserved_ones_are_refused() {
        for ft in 0..16u8 {
            match FrameType::from_ft(ft) {
                Ok(frame_type) => assert_eq!(frame_type.ft(), ft),
                Err(ReservedFrameType(value)) => {
                    assert!((10..=13).contains(&ft));
                    assert_eq!(value, ft);
                }
            }
        }
        assert_eq!(FrameType::from_ft(16), Err(ReservedFrameType(16)));
    }
}
