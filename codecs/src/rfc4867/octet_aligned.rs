//! The octet-aligned layout (RFC 4867 §4.4) without interleaving or CRC:
//!
//! ```text
//! CMR(4) R(4) | ToC: F(1) FT(4) Q(1) P(2), one octet per frame | frames, each padded to an octet
//! ```
//!
//! Each ToC octet is the storage-format header (§5.3) with F in its top bit, so a frame here
//! is byte-for-byte what the C codecs read and write.

use super::{Cmr, DepacketizeError, PacketFrames, clear_padding, parse_toc, toc_for};
use crate::amrwb::FrameRef;

/// Bytes of the payload holding `frames`.
pub(super) fn payload_len(frames: &[FrameRef<'_>]) -> usize {
    1 + frames.len() + frames.iter().map(|f| f.frame_type.bytes()).sum::<usize>()
}

/// Writes the payload; `out` is exactly `payload_len(frames)` long and frames are validated.
pub(super) fn write(cmr: Cmr, frames: &[FrameRef<'_>], out: &mut [u8]) {
    out[0] = cmr.bits() << 4;
    let (toc, mut data) = out[1..].split_at_mut(frames.len());
    for (index, (frame, octet)) in frames.iter().zip(toc).enumerate() {
        *octet = toc_for(frame, index, frames.len()).bits() << 2;
    }
    for frame in frames {
        let (this, rest) = data.split_at_mut(frame.data.len());
        this.copy_from_slice(frame.data);
        clear_padding(this, frame.frame_type.bits());
        data = rest;
    }
}

/// Reads a payload into `out` and returns its CMR.
pub(super) fn read(payload: &[u8], max_frames: usize, out: &mut PacketFrames) -> Result<Cmr, DepacketizeError> {
    let truncated = |needed_bytes: usize| DepacketizeError::Truncated {
        needed_bits: needed_bytes * 8,
        available_bits: payload.len() * 8,
    };
    // 1. CMR octet; its four R bits are ignored (§4.4.1).
    let first = *payload.first().ok_or(truncated(1))?;
    let cmr = Cmr::from_bits(first >> 4);
    // 2. ToC octets until one has F = 0; its two P bits are ignored.
    let mut position = 1;
    loop {
        let octet = *payload.get(position).ok_or(truncated(position + 1))?;
        if out.len() == max_frames {
            return Err(DepacketizeError::TooManyFrames { max: max_frames });
        }
        let entry = parse_toc(octet >> 2, out.len())?;
        out.push(entry);
        position += 1;
        if !entry.follows {
            break;
        }
    }
    // 3. One octet-padded frame per entry, in ToC order.
    for index in 0..out.len() {
        let bits = out.get(index).map_or(0, |f| f.frame_type.bits());
        let bytes = bits.div_ceil(8);
        let source = payload.get(position..position + bytes).ok_or(truncated(position + bytes))?;
        let data = out.data_mut(index);
        data.copy_from_slice(source);
        clear_padding(data, bits);
        position += bytes;
    }
    match payload.len() - position {
        0 => Ok(cmr),
        extra => Err(DepacketizeError::TrailingBytes { extra }),
    }
}
