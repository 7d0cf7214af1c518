//! The bandwidth-efficient layout (RFC 4867 §4.3): every field back to back, padded once at
//! the end.
//!
//! ```text
//! CMR(4) | ToC: F(1) FT(4) Q(1) per frame | frame bits, no padding between | zero padding
//! ```

use super::{Cmr, DepacketizeError, PacketFrames, parse_toc, toc_for};
use crate::amrwb::FrameRef;

/// Bytes of the payload holding `frames`.
pub(super) fn payload_len(frames: &[FrameRef<'_>]) -> usize {
    let bits = CMR_BITS + frames.len() * TOC_BITS + frames.iter().map(|f| f.frame_type.bits()).sum::<usize>();
    bits.div_ceil(8)
}

/// Writes the payload; `out` is exactly `payload_len(frames)` long and frames are validated.
pub(super) fn write(cmr: Cmr, frames: &[FrameRef<'_>], out: &mut [u8]) {
    out.fill(0);
    let mut writer = BitWriter { out, position: 0 };
    writer.put(cmr.bits(), CMR_BITS);
    for (index, frame) in frames.iter().enumerate() {
        writer.put(toc_for(frame, index, frames.len()).bits(), TOC_BITS);
    }
    for frame in frames {
        let bits = frame.frame_type.bits();
        writer.put_bytes(&frame.data[..bits / 8]);
        if !bits.is_multiple_of(8) {
            writer.put(frame.data[bits / 8] >> (8 - bits % 8), bits % 8);
        }
    }
}

/// Reads a payload into `out` and returns its CMR.
pub(super) fn read(payload: &[u8], max_frames: usize, out: &mut PacketFrames) -> Result<Cmr, DepacketizeError> {
    let mut reader = BitReader { payload, position: 0 };
    // 1. CMR.
    let cmr = Cmr::from_bits(reader.get(CMR_BITS)?);
    // 2. ToC entries until one has F = 0.
    loop {
        let bits = reader.get(TOC_BITS)?;
        if out.len() == max_frames {
            return Err(DepacketizeError::TooManyFrames { max: max_frames });
        }
        let entry = parse_toc(bits, out.len())?;
        out.push(entry);
        if !entry.follows {
            break;
        }
    }
    // 3. Frame bits in ToC order; each frame's last octet is padded with zeros in `out`.
    let needed_bits = reader.position + out.iter().map(|f| f.frame_type.bits()).sum::<usize>();
    let available_bits = payload.len() * 8;
    if needed_bits > available_bits {
        return Err(DepacketizeError::Truncated { needed_bits, available_bits });
    }
    for index in 0..out.len() {
        let bits = out.get(index).map_or(0, |f| f.frame_type.bits());
        let data = out.data_mut(index);
        reader.get_bytes(&mut data[..bits / 8]);
        if !bits.is_multiple_of(8) {
            data[bits / 8] = reader.get(bits % 8)? << (8 - bits % 8);
        }
    }
    // 4. At most seven padding bits may remain.
    match (payload.len() * 8 - reader.position) / 8 {
        0 => Ok(cmr),
        extra => Err(DepacketizeError::TrailingBytes { extra }),
    }
}

struct BitWriter<'a> {
    out: &'a mut [u8],
    position: usize,
}

impl BitWriter<'_> {
    /// Appends the low `count` (≤ 8) bits of `value`, most significant first.
    fn put(&mut self, value: u8, count: usize) {
        let mut remaining = count;
        while remaining > 0 {
            let free = 8 - self.position % 8;
            let take = free.min(remaining);
            let chunk = (value >> (remaining - take)) & (0xFF >> (8 - take));
            self.out[self.position / 8] |= chunk << (free - take);
            self.position += take;
            remaining -= take;
        }
    }

    /// Appends whole bytes; the output was zeroed, so each byte ORs into at most two.
    fn put_bytes(&mut self, bytes: &[u8]) {
        let shift = self.position % 8;
        let start = self.position / 8;
        if shift == 0 {
            self.out[start..start + bytes.len()].copy_from_slice(bytes);
        } else {
            for (i, &byte) in bytes.iter().enumerate() {
                self.out[start + i] |= byte >> shift;
                // The low bits spill into the next octet, which exists: a frame's last bits
                // and the padding follow.
                self.out[start + i + 1] |= byte << (8 - shift);
            }
        }
        self.position += 8 * bytes.len();
    }
}

struct BitReader<'a> {
    payload: &'a [u8],
    position: usize,
}

impl BitReader<'_> {
    /// Takes the next `count` (≤ 8) bits as the low bits of a byte.
    fn get(&mut self, count: usize) -> Result<u8, DepacketizeError> {
        let available_bits = self.payload.len() * 8;
        if self.position + count > available_bits {
            return Err(DepacketizeError::Truncated { needed_bits: self.position + count, available_bits });
        }
        let mut value = 0u8;
        let mut remaining = count;
        while remaining > 0 {
            let left = 8 - self.position % 8;
            let take = left.min(remaining);
            let byte = self.payload[self.position / 8];
            let chunk = (byte >> (left - take)) & (0xFF >> (8 - take));
            value = ((u16::from(value) << take) as u8) | chunk;
            self.position += take;
            remaining -= take;
        }
        Ok(value)
    }

    /// Takes whole bytes; the caller checked that the payload holds them.
    fn get_bytes(&mut self, out: &mut [u8]) {
        let shift = self.position % 8;
        let start = self.position / 8;
        if shift == 0 {
            out.copy_from_slice(&self.payload[start..start + out.len()]);
        } else {
            // Bits position..position+8 of each byte span two octets, both inside the payload.
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = (self.payload[start + i] << shift) | (self.payload[start + i + 1] >> (8 - shift));
            }
        }
        self.position += 8 * out.len();
    }
}

const CMR_BITS: usize = 4;
const TOC_BITS: usize = 6;
