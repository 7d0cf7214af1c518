//! The RTP payload format for AMR-WB (RFC 4867), both layouts: bandwidth-efficient (§4.3) and
//! octet-aligned (§4.4), with CMR, table of contents, several frames per packet, SID,
//! NO_DATA, `mode-set` restrictions and the Q bit. Interleaving, CRC and robust sorting
//! (§4.4.2–4.4.3) are parsed from the fmtp and refused with [`UnsupportedOption`].
//!
//! [`Packetizer::packetize`] writes one payload from frames into a caller's buffer;
//! [`Depacketizer::depacketize`] reads one payload into a caller's [`PacketFrames`], which
//! is allocated once per leg. Neither allocates. The RTP timestamp of frame `i` of a packet
//! is the packet's timestamp plus `320 * i` (16 kHz clock, 20 ms frames, RFC 4867 §4.1),
//! counting NO_DATA and SPEECH_LOST entries.

mod bandwidth_efficient;
mod cmr;
mod fmtp;
mod octet_aligned;
mod toc;

use thiserror::Error;

use crate::amrwb::{FrameQuality, FrameRef, FrameType, MAX_FRAME_BYTES, Mode};

pub use cmr::Cmr;
pub use fmtp::{Fmtp, FmtpError, FmtpParam};
pub use toc::TocEntry;

/// Frames a [`PacketFrames`] holds: 320 ms of audio, beyond any `maxptime` seen in practice.
pub const MAX_FRAMES_PER_PACKET: usize = 16;

/// Which of the two layouts a payload uses (`octet-align` in the fmtp).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// RFC 4867 §4.3, the default when `octet-align` is absent or 0.
    #[default]
    BandwidthEfficient,
    /// RFC 4867 §4.4, `octet-align=1`.
    OctetAligned,
}

/// The set of modes a session may use (`mode-set` in the fmtp); SID is always allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModeSet(u16);

impl ModeSet {
    /// Every mode (no `mode-set` parameter).
    pub const ALL: Self = Self(0x01FF);

    /// The set of the given modes.
    pub fn new(modes: &[Mode]) -> Self {
        Self(modes.iter().fold(0, |set, mode| set | 1 << mode.index()))
    }

    /// Whether `mode` may be used.
    pub const fn contains(self, mode: Mode) -> bool {
        self.0 & (1 << mode.index()) != 0
    }

    /// The highest mode in the set, the usual choice for sending.
    pub fn highest(self) -> Option<Mode> {
        Mode::ALL.into_iter().rev().find(|mode| self.contains(*mode))
    }

    /// The mode to send after the peer's CMR: the requested mode if allowed, else the highest
    /// allowed mode below it, else the lowest allowed one (RFC 4867 §4.3.1: the request is an
    /// upper bound). `None` only for an empty set.
    pub fn mode_for_request(self, requested: Mode) -> Option<Mode> {
        Mode::ALL
            .into_iter()
            .rev()
            .find(|mode| *mode <= requested && self.contains(*mode))
            .or_else(|| Mode::ALL.into_iter().find(|mode| self.contains(*mode)))
    }

    /// Whether the set has no mode.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl Default for ModeSet {
    fn default() -> Self {
        Self::ALL
    }
}

/// What the SDP negotiated for one direction of an AMR-WB payload type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadConfig {
    /// Which layout.
    pub layout: Layout,
    /// Modes allowed in speech frames and in CMRs we send.
    pub mode_set: ModeSet,
    /// Most frames one packet may carry (1..=[`MAX_FRAMES_PER_PACKET`]); from `maxptime / 20`.
    pub max_frames: usize,
}

impl PayloadConfig {
    /// Octet-aligned, every mode, up to [`MAX_FRAMES_PER_PACKET`] frames.
    pub const fn octet_aligned() -> Self {
        Self { layout: Layout::OctetAligned, mode_set: ModeSet::ALL, max_frames: MAX_FRAMES_PER_PACKET }
    }

    /// Bandwidth-efficient, every mode, up to [`MAX_FRAMES_PER_PACKET`] frames.
    pub const fn bandwidth_efficient() -> Self {
        Self { layout: Layout::BandwidthEfficient, mode_set: ModeSet::ALL, max_frames: MAX_FRAMES_PER_PACKET }
    }

    /// From the negotiated fmtp; refuses the options we do not implement.
    pub fn from_fmtp(fmtp: &Fmtp, max_frames: usize) -> Result<Self, UnsupportedOption> {
        if fmtp.crc {
            return Err(UnsupportedOption::Crc);
        }
        if fmtp.robust_sorting {
            return Err(UnsupportedOption::RobustSorting);
        }
        if let Some(interleaving) = fmtp.interleaving {
            return Err(UnsupportedOption::Interleaving(interleaving));
        }
        Ok(Self {
            layout: if fmtp.octet_align { Layout::OctetAligned } else { Layout::BandwidthEfficient },
            mode_set: fmtp.mode_set.unwrap_or(ModeSet::ALL),
            max_frames: max_frames.clamp(1, MAX_FRAMES_PER_PACKET),
        })
    }
}

/// An fmtp option of RFC 4867 this implementation refuses; the SDP layer answers without
/// the payload type (or with 488) instead of receiving packets it would misread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum UnsupportedOption {
    /// `crc=1` (RFC 4867 §4.4.2.1): per-frame CRCs in the octet-aligned payload.
    #[error("AMR-WB option crc=1 (RFC 4867 §4.4.2.1) is not supported")]
    Crc,
    /// `robust-sorting=1` (RFC 4867 §4.4.4).
    #[error("AMR-WB option robust-sorting=1 (RFC 4867 §4.4.4) is not supported")]
    RobustSorting,
    /// `interleaving=N` (RFC 4867 §4.4.5).
    #[error("AMR-WB option interleaving={0} (RFC 4867 §4.4.5) is not supported")]
    Interleaving(u16),
}

/// Frames read from one payload, in a buffer allocated once per leg and reused.
#[derive(Clone, Debug)]
pub struct PacketFrames {
    len: usize,
    slots: [Slot; MAX_FRAMES_PER_PACKET],
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    toc: TocEntry,
    data: [u8; MAX_FRAME_BYTES],
}

impl PacketFrames {
    /// An empty buffer.
    pub const fn new() -> Self {
        const EMPTY: Slot = Slot {
            toc: TocEntry { follows: false, frame_type: FrameType::NoData, quality: FrameQuality::Good },
            data: [0; MAX_FRAME_BYTES],
        };
        Self { len: 0, slots: [EMPTY; MAX_FRAMES_PER_PACKET] }
    }

    /// Number of frames, counting NO_DATA and SPEECH_LOST entries.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no frames.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Frame `index`.
    pub fn get(&self, index: usize) -> Option<FrameRef<'_>> {
        self.slots[..self.len].get(index).map(Slot::frame)
    }

    /// The frames in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = FrameRef<'_>> + '_ {
        self.slots[..self.len].iter().map(Slot::frame)
    }

    /// The frames as a ToC would list them (F set on all but the last).
    pub fn toc(&self) -> impl ExactSizeIterator<Item = TocEntry> + '_ {
        self.slots[..self.len].iter().map(|slot| slot.toc)
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends an entry with zeroed data. Callers check the capacity first.
    fn push(&mut self, toc: TocEntry) {
        let slot = &mut self.slots[self.len];
        self.len += 1;
        slot.toc = toc;
        slot.data = [0; MAX_FRAME_BYTES];
    }

    /// The data of entry `index`, as long as its frame type says.
    fn data_mut(&mut self, index: usize) -> &mut [u8] {
        let slot = &mut self.slots[index];
        &mut slot.data[..slot.toc.frame_type.bytes()]
    }
}

impl Default for PacketFrames {
    fn default() -> Self {
        Self::new()
    }
}

impl Slot {
    fn frame(&self) -> FrameRef<'_> {
        FrameRef {
            frame_type: self.toc.frame_type,
            quality: self.toc.quality,
            data: &self.data[..self.toc.frame_type.bytes()],
        }
    }
}

/// Writes AMR-WB frames into RTP payloads.
#[derive(Clone, Copy, Debug)]
pub struct Packetizer {
    config: PayloadConfig,
}

/// Why frames could not be packed; each is a bug or misconfiguration on our side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum PacketizeError {
    /// Nothing to pack.
    #[error("no frames to packetize")]
    NoFrames,
    /// More frames than the session allows in one packet.
    #[error("{count} frames, at most {max} per packet")]
    TooManyFrames {
        /// Frames given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A frame's data is not as long as its type says.
    #[error("frame {index} of type {frame_type:?} needs {expected} bytes, got {actual}")]
    WrongFrameSize {
        /// Which frame.
        index: usize,
        /// Its type.
        frame_type: FrameType,
        /// Bytes its type needs.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// A speech frame in a mode the peer did not accept.
    #[error("frame {index} uses mode {mode:?}, outside the mode-set")]
    ModeNotInModeSet {
        /// Which frame.
        index: usize,
        /// Its mode.
        mode: Mode,
    },
    /// A CMR that must not be sent: reserved, or a mode outside the mode-set.
    #[error("CMR {0:?} may not be sent in this session")]
    InvalidCmr(Cmr),
    /// The output buffer is too small for the payload.
    #[error("payload needs {needed} bytes, the buffer holds {capacity}")]
    BufferTooSmall {
        /// Bytes the payload needs.
        needed: usize,
        /// Bytes the buffer holds.
        capacity: usize,
    },
}

impl Packetizer {
    /// A packetizer for one negotiated payload type.
    pub const fn new(config: PayloadConfig) -> Self {
        Self { config }
    }

    /// The configuration.
    pub const fn config(&self) -> &PayloadConfig {
        &self.config
    }

    /// Writes one payload holding `frames` (in time order) with `cmr` into `out`, and returns
    /// its length. The Q bit of each frame goes into its ToC entry; padding bits are zero.
    pub fn packetize(&self, cmr: Cmr, frames: &[FrameRef<'_>], out: &mut [u8]) -> Result<usize, PacketizeError> {
        // 1. Validate everything before writing anything.
        if frames.is_empty() {
            return Err(PacketizeError::NoFrames);
        }
        if frames.len() > self.config.max_frames {
            return Err(PacketizeError::TooManyFrames { count: frames.len(), max: self.config.max_frames });
        }
        match cmr {
            Cmr::NoRequest => {}
            Cmr::Mode(mode) if self.config.mode_set.contains(mode) => {}
            Cmr::Mode(_) | Cmr::Reserved(_) => return Err(PacketizeError::InvalidCmr(cmr)),
        }
        for (index, frame) in frames.iter().enumerate() {
            let expected = frame.frame_type.bytes();
            if frame.data.len() != expected {
                return Err(PacketizeError::WrongFrameSize {
                    index,
                    frame_type: frame.frame_type,
                    expected,
                    actual: frame.data.len(),
                });
            }
            if let FrameType::Speech(mode) = frame.frame_type
                && !self.config.mode_set.contains(mode)
            {
                return Err(PacketizeError::ModeNotInModeSet { index, mode });
            }
        }
        // 2. Size, then write in the negotiated layout.
        let needed = match self.config.layout {
            Layout::OctetAligned => octet_aligned::payload_len(frames),
            Layout::BandwidthEfficient => bandwidth_efficient::payload_len(frames),
        };
        let capacity = out.len();
        let out = out.get_mut(..needed).ok_or(PacketizeError::BufferTooSmall { needed, capacity })?;
        match self.config.layout {
            Layout::OctetAligned => octet_aligned::write(cmr, frames, out),
            Layout::BandwidthEfficient => bandwidth_efficient::write(cmr, frames, out),
        }
        Ok(needed)
    }
}

/// Reads RTP payloads into AMR-WB frames.
#[derive(Clone, Copy, Debug)]
pub struct Depacketizer {
    config: PayloadConfig,
}

/// Why a received payload was refused. The whole packet is dropped; nothing is half read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum DepacketizeError {
    /// The payload ends before its ToC or frames do.
    #[error("payload of {available_bits} bits is cut short: the ToC and frames need {needed_bits}")]
    Truncated {
        /// Bits the ToC and frames read so far need.
        needed_bits: usize,
        /// Bits in the payload.
        available_bits: usize,
    },
    /// A ToC entry with a reserved FT (RFC 4867 §4.3.2: discard the packet).
    #[error("ToC entry {index} has reserved frame type {ft}")]
    ReservedFrameType {
        /// Which entry.
        index: usize,
        /// Its FT.
        ft: u8,
    },
    /// More ToC entries than the session allows.
    #[error("ToC lists more than {max} frames")]
    TooManyFrames {
        /// The limit.
        max: usize,
    },
    /// A speech frame in a mode outside the mode-set we offered.
    #[error("frame {index} uses mode {mode:?}, outside the mode-set")]
    ModeNotInModeSet {
        /// Which frame.
        index: usize,
        /// Its mode.
        mode: Mode,
    },
    /// Whole octets left after the last frame: not a payload of this layout (often the
    /// other layout, which the fmtp should have settled).
    #[error("{extra} bytes left after the last frame")]
    TrailingBytes {
        /// Octets beyond the payload.
        extra: usize,
    },
}

impl Depacketizer {
    /// A depacketizer for one negotiated payload type.
    pub const fn new(config: PayloadConfig) -> Self {
        Self { config }
    }

    /// The configuration.
    pub const fn config(&self) -> &PayloadConfig {
        &self.config
    }

    /// Reads `payload` into `out` (cleared first) and returns the CMR. On error `out` is
    /// left empty.
    pub fn depacketize(&self, payload: &[u8], out: &mut PacketFrames) -> Result<Cmr, DepacketizeError> {
        out.clear();
        let max = self.config.max_frames.min(MAX_FRAMES_PER_PACKET);
        let result = match self.config.layout {
            Layout::OctetAligned => octet_aligned::read(payload, max, out),
            Layout::BandwidthEfficient => bandwidth_efficient::read(payload, max, out),
        };
        let result = result.and_then(|cmr| {
            for (index, entry) in out.toc().enumerate() {
                if let FrameType::Speech(mode) = entry.frame_type
                    && !self.config.mode_set.contains(mode)
                {
                    return Err(DepacketizeError::ModeNotInModeSet { index, mode });
                }
            }
            Ok(cmr)
        });
        if result.is_err() {
            out.clear();
        }
        result
    }
}

/// Turns a ToC entry's six bits into an entry, or the packet's error.
fn parse_toc(bits: u8, index: usize) -> Result<TocEntry, DepacketizeError> {
    TocEntry::from_bits(bits).map_err(|reserved| DepacketizeError::ReservedFrameType { index, ft: reserved.0 })
}

/// Clears the padding bits after the last of `bits` in `data`, so equal frames compare equal.
fn clear_padding(data: &mut [u8], bits: usize) {
    if !bits.is_multiple_of(8)
        && let Some(last) = data.last_mut()
    {
        *last &= 0xFF << (8 - bits % 8);
    }
}

/// The ToC entry to write for frame `index` of `count`.
fn toc_for(frame: &FrameRef<'_>, index: usize, count: usize) -> TocEntry {
    TocEntry { follows: index + 1 < count, frame_type: frame.frame_type, quality: frame.quality }
}

/// Cross-layout tests; each layout's bit-exact RFC examples are in its own file.
#[cfg(test)]
mod tests;
