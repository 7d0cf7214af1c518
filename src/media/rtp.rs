//! RTP packets (RFC 3550 §5.1) read and written over borrowed buffers, and the units they carry.
//!
//! [`RtpPacket::parse`] is a view: it checks the fixed header, the CSRC list, the header
//! extension and the padding against the buffer and hands back slices into it, so reading a
//! packet allocates nothing. [`RtpHeader::write`] writes a 12-byte header (no CSRC, no
//! extension: we are an end system, not a mixer) in front of a payload the caller has placed.
//!
//! Numbers carry their units: [`Ssrc`], the 16-bit wire [`u16`] sequence number extended to a
//! [`SeqNo`] by [`SeqExtender`] (RFC 3550 Appendix A.1's cycle count), and the 32-bit wire
//! timestamp extended to a [`MediaTime`] that knows its [`ClockRate`], so an 8 kHz and a 16 kHz
//! timestamp cannot be mixed up.

use std::time::Duration;

use thiserror::Error;

/// A synchronization source identifier (RFC 3550 §5.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

/// An extended RTP sequence number: the 16-bit wire value plus 65,536 per wrap-around.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqNo(pub u64);

impl SeqNo {
    /// The 16 bits on the wire.
    pub fn wire(self) -> u16 {
        // Truncation is the point: the wire carries the low 16 bits.
        self.0 as u16
    }

    /// How many times the 16-bit counter wrapped (RFC 3550's `cycles` / 65,536).
    pub fn cycles(self) -> u64 {
        self.0 >> 16
    }
}

/// An RTP clock rate in Hz (RFC 3550 §5.1, "timestamp").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClockRate(u32);

impl ClockRate {
    /// 8 kHz: G.711 and its telephone-events.
    pub const HZ_8000: Self = Self(8_000);
    /// 16 kHz: AMR-WB and its telephone-events.
    pub const HZ_16000: Self = Self(16_000);

    /// A clock rate; `None` for zero.
    pub fn new(hz: u32) -> Option<Self> {
        (hz > 0).then_some(Self(hz))
    }

    /// The rate in Hz.
    pub fn hz(self) -> u32 {
        self.0
    }

    /// Ticks in `duration`, rounded down.
    pub fn ticks(self, duration: Duration) -> u64 {
        (duration.as_nanos() * u128::from(self.0) / 1_000_000_000) as u64
    }

    /// The duration of `ticks` ticks.
    pub fn duration(self, ticks: u64) -> Duration {
        Duration::from_nanos((u128::from(ticks) * 1_000_000_000 / u128::from(self.0)) as u64)
    }
}

/// A point on an RTP clock: an extended (64-bit) timestamp and the clock it counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MediaTime {
    ticks: u64,
    rate: ClockRate,
}

impl MediaTime {
    /// `ticks` of `rate`.
    pub fn new(ticks: u64, rate: ClockRate) -> Self {
        Self { ticks, rate }
    }

    /// The extended timestamp.
    pub fn ticks(self) -> u64 {
        self.ticks
    }

    /// The clock.
    pub fn rate(self) -> ClockRate {
        self.rate
    }

    /// The 32 bits on the wire.
    pub fn wire(self) -> u32 {
        // Truncation is the point: the wire carries the low 32 bits.
        self.ticks as u32
    }

    /// This time plus `ticks`.
    pub fn add_ticks(self, ticks: u64) -> Self {
        Self::new(self.ticks.wrapping_add(ticks), self.rate)
    }

    /// Signed distance `self - earlier` in ticks.
    ///
    /// # Panics
    /// When the two clocks differ: mixing clocks is a bug in our code, never input.
    pub fn ticks_since(self, earlier: Self) -> i64 {
        assert_eq!(self.rate, earlier.rate, "RTP times of different clocks");
        self.ticks.wrapping_sub(earlier.ticks) as i64
    }
}

/// Extends 16-bit sequence numbers across wrap-around (RFC 3550 Appendix A.1).
///
/// Each value is placed in the cycle that puts it nearest the highest number seen so far, so
/// reordered packets around a wrap land on the right side of it.
#[derive(Clone, Copy, Debug, Default)]
pub struct SeqExtender {
    highest: Option<u64>,
}

impl SeqExtender {
    /// An extender that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The extended number of `seq`; advances the highest number when `seq` is newer.
    pub fn extend(&mut self, seq: u16) -> SeqNo {
        let Some(highest) = self.highest else {
            // Start in cycle 1 so a packet just before the first wraps back to cycle 0.
            let first = (1 << 16) | u64::from(seq);
            self.highest = Some(first);
            return SeqNo(first);
        };
        let delta = seq.wrapping_sub(highest as u16) as i16;
        let extended = highest.wrapping_add_signed(i64::from(delta));
        if extended > highest {
            self.highest = Some(extended);
        }
        SeqNo(extended)
    }

    /// The highest extended number seen.
    pub fn highest(&self) -> Option<SeqNo> {
        self.highest.map(SeqNo)
    }
}

/// Extends 32-bit RTP timestamps across wrap-around, nearest to a reference point.
#[derive(Clone, Copy, Debug)]
pub struct TimestampExtender {
    rate: ClockRate,
    reference: Option<u64>,
}

impl TimestampExtender {
    /// An extender for a `rate` clock that has seen nothing.
    pub fn new(rate: ClockRate) -> Self {
        Self { rate, reference: None }
    }

    /// The extended time of `timestamp`, the one nearest the last extended value; the
    /// reference moves to it.
    pub fn extend(&mut self, timestamp: u32) -> MediaTime {
        let extended = match self.reference {
            // Start well above zero so earlier timestamps stay positive.
            None => (1 << 32) | u64::from(timestamp),
            Some(reference) => {
                let delta = timestamp.wrapping_sub(reference as u32) as i32;
                reference.wrapping_add_signed(i64::from(delta))
            }
        };
        self.reference = Some(extended);
        MediaTime::new(extended, self.rate)
    }
}

/// A parsed RTP packet borrowing the buffer it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// The M bit.
    pub marker: bool,
    /// The payload type (7 bits).
    pub payload_type: u8,
    /// The 16-bit sequence number.
    pub sequence: u16,
    /// The 32-bit timestamp.
    pub timestamp: u32,
    /// The sender's SSRC.
    pub ssrc: Ssrc,
    /// Number of CSRC entries (0–15).
    pub csrc_count: u8,
    /// The payload, after CSRCs and the header extension, without padding.
    pub payload: &'a [u8],
    /// Bytes of header before the payload.
    pub header_len: usize,
}

/// Why bytes are not an RTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum RtpError {
    /// Shorter than the 12-byte fixed header.
    #[error("{len} bytes, shorter than the 12-byte RTP header")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// The version field is not 2.
    #[error("RTP version {version}, expected 2")]
    Version {
        /// The version read.
        version: u8,
    },
    /// The CSRC list or header extension runs past the end.
    #[error("RTP header of {header_len} bytes in a packet of {len}")]
    HeaderOverrun {
        /// Bytes the header claims.
        header_len: usize,
        /// Bytes in the packet.
        len: usize,
    },
    /// The padding count is zero or more than the payload.
    #[error("RTP padding of {padding} bytes with {available} after the header")]
    BadPadding {
        /// The padding count (last byte).
        padding: u8,
        /// Bytes after the header.
        available: usize,
    },
    /// The output buffer cannot hold the header.
    #[error("buffer of {capacity} bytes, the RTP header needs {needed}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        capacity: usize,
    },
}

impl<'a> RtpPacket<'a> {
    /// Reads `buf` as an RTP packet (RFC 3550 §5.1, §5.3.1 for the extension).
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        // 1. Fixed header.
        let len = buf.len();
        let &[b0, b1, s0, s1, t0, t1, t2, t3, i0, i1, i2, i3, ..] = buf else {
            return Err(RtpError::TooShort { len });
        };
        let version = b0 >> 6;
        if version != 2 {
            return Err(RtpError::Version { version });
        }
        let padding = b0 & 0x20 != 0;
        let extension = b0 & 0x10 != 0;
        let csrc_count = b0 & 0x0F;
        // 2. CSRC list, then the extension header and its words.
        let mut header_len = RTP_HEADER_LEN + 4 * usize::from(csrc_count);
        if extension {
            let words = buf
                .get(header_len + 2..header_len + 4)
                .map(|w| usize::from(u16::from_be_bytes([w[0], w[1]])))
                .ok_or(RtpError::HeaderOverrun { header_len: header_len + 4, len })?;
            header_len += 4 + 4 * words;
        }
        if header_len > len {
            return Err(RtpError::HeaderOverrun { header_len, len });
        }
        // 3. Padding: the last byte counts itself and the padding before it.
        let mut end = len;
        if padding {
            let count = buf[len - 1];
            let available = len - header_len;
            if count == 0 || usize::from(count) > available {
                return Err(RtpError::BadPadding { padding: count, available });
            }
            end -= usize::from(count);
        }
        Ok(Self {
            marker: b1 & 0x80 != 0,
            payload_type: b1 & 0x7F,
            sequence: u16::from_be_bytes([s0, s1]),
            timestamp: u32::from_be_bytes([t0, t1, t2, t3]),
            ssrc: Ssrc(u32::from_be_bytes([i0, i1, i2, i3])),
            csrc_count,
            payload: &buf[header_len..end],
            header_len,
        })
    }
}

/// The fields of an RTP header we send: version 2, no padding, no extension, no CSRC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpHeader {
    /// The M bit.
    pub marker: bool,
    /// The payload type (7 bits).
    pub payload_type: u8,
    /// The 16-bit sequence number.
    pub sequence: u16,
    /// The 32-bit timestamp.
    pub timestamp: u32,
    /// Our SSRC.
    pub ssrc: Ssrc,
}

impl RtpHeader {
    /// Writes the 12-byte header at the start of `out` and returns its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, RtpError> {
        let capacity = out.len();
        let out = out.get_mut(..RTP_HEADER_LEN).ok_or(RtpError::BufferTooSmall { needed: RTP_HEADER_LEN, capacity })?;
        out[0] = 0x80;
        out[1] = (u8::from(self.marker) << 7) | (self.payload_type & 0x7F);
        out[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.0.to_be_bytes());
        Ok(RTP_HEADER_LEN)
    }
}

/// The fixed RTP header (RFC 3550 §5.1).
pub const RTP_HEADER_LEN: usize = 12;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_header_parses_here_and_in_rtc_rtp() {
        use rtc_shared::marshal::Unmarshal;
        let mut buf = [0u8; 64];
        let header = RtpHeader {
            marker: true,
            payload_type: 96,
            sequence: 0xFFFF,
            timestamp: 0xFFFF_FFF0,
            ssrc: Ssrc(0xDEAD_BEEF),
        };
        let n = header.write(&mut buf).unwrap();
        buf[n..n + 3].copy_from_slice(&[1, 2, 3]);
        let packet = RtpPacket::parse(&buf[..n + 3]).unwrap();
        assert_eq!(packet.payload, &[1, 2, 3]);
        assert!(packet.marker);
        assert_eq!(
            (packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc),
            (96, 0xFFFF, 0xFFFF_FFF0, Ssrc(0xDEAD_BEEF))
        );
        let mut reader = &buf[..n + 3];
        let theirs = rtc_rtp::packet::Packet::unmarshal(&mut reader).unwrap();
        assert_eq!(theirs.header.sequence_number, 0xFFFF);
        assert_eq!(theirs.header.timestamp, 0xFFFF_FFF0);
        assert_eq!(theirs.header.ssrc, 0xDEAD_BEEF);
        assert_eq!(&theirs.payload[..], &[1, 2, 3]);
    }

    #[test]
    fn csrc_extension_and_padding_are_skipped() {
        let mut packet = vec![0xB1, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        packet.extend_from_slice(&[9, 9, 9, 9]); // one CSRC
        packet.extend_from_slice(&[0xBE, 0xDE, 0, 1, 7, 7, 7, 7]); // extension, one word
        packet.extend_from_slice(&[0xAA, 0xBB, 0, 0, 3]); // payload, 3 padding bytes
        let parsed = RtpPacket::parse(&packet).unwrap();
        assert_eq!(parsed.payload, &[0xAA, 0xBB]);
        assert_eq!(parsed.header_len, 24);
        assert_eq!(parsed.csrc_count, 1);
    }

    #[test]
    fn hostile_headers_are_errors() {
        assert_eq!(RtpPacket::parse(&[0x80; 5]), Err(RtpError::TooShort { len: 5 }));
        let mut bad = [0u8; 12];
        bad[0] = 0x40;
        assert_eq!(RtpPacket::parse(&bad), Err(RtpError::Version { version: 1 }));
        // Fifteen CSRCs announced, none present.
        let mut csrc = [0u8; 20];
        csrc[0] = 0x8F;
        assert_eq!(RtpPacket::parse(&csrc), Err(RtpError::HeaderOverrun { header_len: 72, len: 20 }));
        // Extension header cut off, and an extension claiming 65535 words.
        let mut ext = [0u8; 14];
        ext[0] = 0x90;
        assert!(matches!(RtpPacket::parse(&ext), Err(RtpError::HeaderOverrun { .. })));
        let mut ext = [0u8; 16];
        ext[0] = 0x90;
        ext[14] = 0xFF;
        ext[15] = 0xFF;
        assert!(matches!(RtpPacket::parse(&ext), Err(RtpError::HeaderOverrun { .. })));
        // Padding of zero, and padding longer than the packet.
        let mut pad = [0u8; 13];
        pad[0] = 0xA0;
        assert!(matches!(RtpPacket::parse(&pad), Err(RtpError::BadPadding { .. })));
        pad[12] = 200;
        assert!(matches!(RtpPacket::parse(&pad), Err(RtpError::BadPadding { .. })));
        // Every short prefix of every byte pattern: no panic.
        for len in 0..40 {
            for fill in [0x00, 0x80, 0x9F, 0xBF, 0xFF] {
                let _ = RtpPacket::parse(&vec![fill; len]);
            }
        }
    }

    #[test]
    fn sequence_numbers_extend_across_the_16_bit_wrap() {
        let mut ext = SeqExtender::new();
        let a = ext.extend(65_534);
        let b = ext.extend(65_535);
        let c = ext.extend(0);
        let late = ext.extend(65_533);
        let d = ext.extend(1);
        assert_eq!(b.0 - a.0, 1);
        assert_eq!(c.0 - b.0, 1);
        assert_eq!(d.0 - c.0, 1);
        assert_eq!(a.0 - late.0, 1);
        assert_eq!(c.cycles(), a.cycles() + 1);
        assert_eq!((c.wire(), d.wire()), (0, 1));
        assert_eq!(ext.highest(), Some(d));
    }

    #[test]
    fn timestamps_extend_across_the_32_bit_wrap_and_keep_their_clock() {
        let mut ext = TimestampExtender::new(ClockRate::HZ_8000);
        let a = ext.extend(u32::MAX - 79);
        let b = ext.extend(80);
        assert_eq!(b.ticks_since(a), 160);
        assert_eq!(b.wire(), 80);
        assert_eq!(a.ticks_since(b), -160);
        assert_eq!(ClockRate::HZ_8000.duration(160), Duration::from_millis(20));
        assert_eq!(ClockRate::HZ_16000.ticks(Duration::from_millis(20)), 320);
    }

    #[test]
    #[should_panic(expected = "different clocks")]
    fn mixing_clocks_is_caught() {
        let a = MediaTime::new(0, ClockRate::HZ_8000);
        let b = MediaTime::new(0, ClockRate::HZ_16000);
        let _ = a.ticks_since(b);
    }
}
