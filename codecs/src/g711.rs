//! G.711 μ-law and A-law (ITU-T G.711), table based.
//!
//! Input: 16-bit linear PCM at 8 kHz; output: one code per sample (RTP payload types 0 and 8,
//! RFC 3551 §4.5.14). Encoding rounds the sample to the law's precision (14 bits for μ-law, 13
//! for A-law) before quantizing, which is what sox does, so our output is byte-identical to
//! `sox -D -e u-law` / `-e a-law` for every input (see `tests/g711_sox.rs`). Decoding gives
//! the centre of each quantization interval, so decode→encode is the identity on codes, except
//! μ-law's negative zero (0x7F), which decodes to 0 and comes back as positive zero (0xFF).

use thiserror::Error;

/// Which companding law.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Law {
    /// μ-law (PCMU, RTP payload type 0).
    Mu,
    /// A-law (PCMA, RTP payload type 8).
    A,
}

/// A caller-supplied buffer that is too small for the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("G.711 output buffer holds {capacity} items, the input needs {needed}")]
pub struct G711Error {
    /// Items the input needs.
    pub needed: usize,
    /// Items the output buffer holds.
    pub capacity: usize,
}

/// Encodes `pcm` into `out` (one byte per sample) and returns the number of bytes written.
pub fn encode(law: Law, pcm: &[i16], out: &mut [u8]) -> Result<usize, G711Error> {
    let out = check_capacity(pcm.len(), out)?;
    match law {
        Law::Mu => out.iter_mut().zip(pcm).for_each(|(o, &s)| *o = linear_to_ulaw(s)),
        Law::A => out.iter_mut().zip(pcm).for_each(|(o, &s)| *o = linear_to_alaw(s)),
    }
    Ok(pcm.len())
}

/// Decodes `payload` into `out` (one sample per byte) and returns the number of samples written.
pub fn decode(law: Law, payload: &[u8], out: &mut [i16]) -> Result<usize, G711Error> {
    let out = check_capacity(payload.len(), out)?;
    let table = match law {
        Law::Mu => &ULAW_DECODE,
        Law::A => &ALAW_DECODE,
    };
    out.iter_mut().zip(payload).for_each(|(o, &c)| *o = table[usize::from(c)]);
    Ok(payload.len())
}

/// One sample to μ-law.
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    // Round to 14 bits; the top input value would round past the 14-bit range, so clamp.
    let index = ((i32::from(sample) + 2) >> 2).min(0x1FFF);
    ULAW_ENCODE[(index & 0x3FFF) as usize]
}

/// One sample to A-law.
#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    let index = ((i32::from(sample) + 4) >> 3).min(0x0FFF);
    ALAW_ENCODE[(index & 0x1FFF) as usize]
}

/// One μ-law code to a sample.
#[inline]
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_DECODE[usize::from(code)]
}

/// One A-law code to a sample.
#[inline]
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_DECODE[usize::from(code)]
}

fn check_capacity<T>(needed: usize, out: &mut [T]) -> Result<&mut [T], G711Error> {
    let capacity = out.len();
    out.get_mut(..needed).ok_or(G711Error { needed, capacity })
}

/// Quantizes a 14-bit sample (G.711 §A.1 segment table for μ-law).
const fn ulaw_from_14bit(sample: i32) -> u8 {
    let (mut magnitude, mask) = if sample < 0 { (-sample, 0x7F) } else { (sample, 0xFF) };
    if magnitude > ULAW_CLIP {
        magnitude = ULAW_CLIP;
    }
    magnitude += ULAW_BIAS;
    let mut segment = 0;
    while segment < 8 && magnitude > ULAW_SEGMENT_END[segment] {
        segment += 1;
    }
    if segment >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let code = ((segment as i32) << 4) | ((magnitude >> (segment + 1)) & 0x0F);
    (code ^ mask) as u8
}

/// Quantizes a 13-bit sample (G.711 segment table for A-law).
const fn alaw_from_13bit(sample: i32) -> u8 {
    // A-law is symmetric around -1/2: negative values are folded with one's complement.
    let (magnitude, mask) = if sample >= 0 { (sample, 0xD5) } else { (-sample - 1, 0x55) };
    let mut segment = 0;
    while segment < 8 && magnitude > ALAW_SEGMENT_END[segment] {
        segment += 1;
    }
    if segment >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let shift = if segment < 2 { 1 } else { segment };
    let code = ((segment as i32) << 4) | ((magnitude >> shift) & 0x0F);
    (code ^ mask) as u8
}

const fn ulaw_decode(code: u8) -> i16 {
    let code = !code as i32;
    let magnitude = (((code & 0x0F) << 3) + ULAW_BIAS * 4) << ((code & 0x70) >> 4);
    let value = if code & 0x80 != 0 { ULAW_BIAS * 4 - magnitude } else { magnitude - ULAW_BIAS * 4 };
    value as i16
}

const fn alaw_decode(code: u8) -> i16 {
    let code = (code ^ 0x55) as i32;
    let segment = (code & 0x70) >> 4;
    let mut magnitude = (code & 0x0F) << 4;
    magnitude += if segment == 0 { 8 } else { 0x108 };
    if segment > 1 {
        magnitude <<= segment - 1;
    }
    (if code & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

const fn build_ulaw_encode() -> [u8; 0x4000] {
    let mut table = [0; 0x4000];
    let mut i = 0;
    while i < 0x4000 {
        // Index is the 14-bit two's complement sample.
        let sample = if i >= 0x2000 { i as i32 - 0x4000 } else { i as i32 };
        table[i] = ulaw_from_14bit(sample);
        i += 1;
    }
    table
}

const fn build_alaw_encode() -> [u8; 0x2000] {
    let mut table = [0; 0x2000];
    let mut i = 0;
    while i < 0x2000 {
        let sample = if i >= 0x1000 { i as i32 - 0x2000 } else { i as i32 };
        table[i] = alaw_from_13bit(sample);
        i += 1;
    }
    table
}

const fn build_decode(law: Law) -> [i16; 256] {
    let mut table = [0; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = match law {
            Law::Mu => ulaw_decode(i as u8),
            Law::A => alaw_decode(i as u8),
        };
        i += 1;
    }
    table
}

/// 14-bit μ-law bias, 0x84 >> 2 (G.711 Table 2: the encoder adds 33 before segmenting).
const ULAW_BIAS: i32 = 0x21;
/// Largest 14-bit magnitude μ-law represents, 8158 + 1 rounding step.
const ULAW_CLIP: i32 = 8159;
/// Upper end of each μ-law segment after biasing (14-bit domain).
const ULAW_SEGMENT_END: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
/// Upper end of each A-law segment (13-bit domain).
const ALAW_SEGMENT_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

static ULAW_ENCODE: [u8; 0x4000] = build_ulaw_encode();
static ALAW_ENCODE: [u8; 0x2000] = build_alaw_encode();
static ULAW_DECODE: [i16; 256] = build_decode(Law::Mu);
static ALAW_DECODE: [i16; 256] = build_decode(Law::A);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ulaw_code_round_trips() {
        for code in 0..=255u8 {
            let back = linear_to_ulaw(ulaw_to_linear(code));
            // 0x7F is μ-law's negative zero: it decodes to 0, which encodes as positive zero.
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(back, expected, "code {code:#04x}");
        }
    }

    #[test]
    fn every_alaw_code_round_trips() {
        for code in 0..=255u8 {
            assert_eq!(linear_to_alaw(alaw_to_linear(code)), code, "code {code:#04x}");
        }
    }

    #[test]
    fn known_answers_from_g711_tables() {
        // G.711 Table 2a/2b: μ-law 0xFF is +0, 0x80 the positive maximum 8031 (14-bit) = 32124;
        // A-law 0xD5 is +8 (16-bit), 0xAA the positive maximum 4032 (13-bit) = 32256.
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x80), 32_124);
        assert_eq!(ulaw_to_linear(0x00), -32_124);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32_256);
        assert_eq!(alaw_to_linear(0x2A), -32_256);
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn encoding_is_monotonic_in_the_decoded_domain() {
        // A quantizer never maps a larger sample to a smaller level.
        for law in [Law::Mu, Law::A] {
            let round_trip = |s: i16| match law {
                Law::Mu => ulaw_to_linear(linear_to_ulaw(s)),
                Law::A => alaw_to_linear(linear_to_alaw(s)),
            };
            let mut previous = i16::MIN;
            for s in i16::MIN..=i16::MAX {
                let level = round_trip(s);
                assert!(level >= previous, "{law:?} at {s}");
                previous = level;
            }
        }
    }

    #[test]
    fn slice_api_checks_capacity() {
        let pcm = [0i16; 160];
        let mut short = [0u8; 80];
        assert_eq!(encode(Law::Mu, &pcm, &mut short), Err(G711Error { needed: 160, capacity: 80 }));
        let mut out = [0u8; 160];
        assert_eq!(encode(Law::A, &pcm, &mut out), Ok(160));
        assert!(out.iter().all(|&c| c == 0xD5));
        let mut back = [1i16; 200];
        assert_eq!(decode(Law::A, &out, &mut back), Ok(160));
        assert!(back[..160].iter().all(|&s| s == 8));
        assert_eq!(back[160], 1);
    }
}
