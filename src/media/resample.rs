//! The two audio bands of the bridge ([`Band`]) and 8 ↔ 16 kHz between them. A G.711 leg
//! decodes, mixes, encodes and hears at 8 kHz and an AMR-WB leg at 16 kHz; the converters are
//! for what joins the two (a leg whose codec changed band in a re-INVITE, the 16 kHz view of a
//! G.711 leg that tests and benchmarks use).
//!
//! Both use one 47-tap Blackman-windowed half-band low-pass (cut-off 4 kHz at 16 kHz, flat
//! within 0.1 dB to about 3 kHz). [`Upsampler`] keeps every input sample and makes the one
//! between from the 24 neighbours (the filter's polyphase half): delay 0.7 ms. [`Decimator`]
//! filters (the anti-alias filter) and keeps every other sample: delay 1.4 ms. Both keep
//! their history across frames in fixed arrays: no allocation per frame. The filter is
//! designed once per process ([`HALF_BAND`], [`UPSAMPLER_TAPS`]): a leg that starts pays no
//! trigonometry (at 2,000 calls/s the per-leg design was 2 % of the daemon's CPU).

use std::sync::LazyLock;

/// The half-band low-pass both directions use, designed on first use.
static HALF_BAND: LazyLock<[f32; TAPS]> = LazyLock::new(half_band);

/// The upsampler's phase of [`HALF_BAND`]: its taps at even indices, scaled to unity gain at
/// DC (zero-stuffed input: the new samples see the taps at even indices, the kept ones only
/// the centre tap).
static UPSAMPLER_TAPS: LazyLock<[f32; TAPS / 2 + 1]> = LazyLock::new(|| {
    let mut taps = [0f32; TAPS / 2 + 1];
    for (k, tap) in taps.iter_mut().enumerate() {
        *tap = HALF_BAND[2 * k];
    }
    let sum: f32 = taps.iter().sum();
    taps.iter_mut().for_each(|t| *t /= sum);
    taps
});

/// Samples in 20 ms at 8 kHz.
pub const NARROW_FRAME: usize = 160;
/// Samples in 20 ms at 16 kHz.
pub const WIDE_FRAME: usize = 320;

/// The rate a leg's audio is decoded, mixed and encoded at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Band {
    /// 8 kHz: G.711 carries nothing above 4 kHz.
    Narrow,
    /// 16 kHz: AMR-WB.
    Wide,
}

impl Band {
    /// Samples in 20 ms.
    pub const fn frame(self) -> usize {
        match self {
            Self::Narrow => NARROW_FRAME,
            Self::Wide => WIDE_FRAME,
        }
    }

    /// Samples per second.
    pub const fn hz(self) -> u32 {
        match self {
            Self::Narrow => 8_000,
            Self::Wide => 16_000,
        }
    }
}

/// 8 → 16 kHz.
#[derive(Clone, Debug)]
pub struct Upsampler {
    /// [`UPSAMPLER_TAPS`].
    taps: &'static [f32; TAPS / 2 + 1],
    history: [i16; TAPS / 2],
}

impl Default for Upsampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Upsampler {
    /// An upsampler with silent history.
    pub fn new() -> Self {
        Self { taps: &UPSAMPLER_TAPS, history: [0; TAPS / 2] }
    }

    /// Doubles 20 ms at 8 kHz into 20 ms at 16 kHz.
    pub fn process(&mut self, input: &[i16; NARROW_FRAME], output: &mut [i16; WIDE_FRAME]) {
        const H: usize = TAPS / 2;
        let mut ext = [0i16; NARROW_FRAME + H];
        ext[..H].copy_from_slice(&self.history);
        ext[H..].copy_from_slice(input);
        for (n, pair) in output.chunks_exact_mut(2).enumerate() {
            // ext[n + H] is x[n]; the interpolated sample uses x[n] back to x[n - H].
            let acc: f32 = self.taps.iter().enumerate().map(|(k, &t)| f32::from(ext[n + H - k]) * t).sum();
            pair[0] = acc.round().clamp(-32_768.0, 32_767.0) as i16;
            // The kept sample, delayed to line up with the centre of the filter.
            pair[1] = ext[n + H - H / 2];
        }
        self.history.copy_from_slice(&ext[NARROW_FRAME..]);
    }

    /// Forgets the history (a new stream).
    pub fn reset(&mut self) {
        self.history = [0; TAPS / 2];
    }
}

/// 16 → 8 kHz.
#[derive(Clone, Debug)]
pub struct Decimator {
    /// [`HALF_BAND`].
    taps: &'static [f32; TAPS],
    history: [i16; TAPS - 1],
}

impl Default for Decimator {
    fn default() -> Self {
        Self::new()
    }
}

impl Decimator {
    /// A decimator with silent history.
    pub fn new() -> Self {
        Self { taps: &HALF_BAND, history: [0; TAPS - 1] }
    }

    /// Filters and halves 20 ms at 16 kHz into 20 ms at 8 kHz.
    pub fn process(&mut self, input: &[i16; WIDE_FRAME], output: &mut [i16; NARROW_FRAME]) {
        let mut ext = [0i16; WIDE_FRAME + TAPS - 1];
        ext[..TAPS - 1].copy_from_slice(&self.history);
        ext[TAPS - 1..].copy_from_slice(input);
        for (n, out) in output.iter_mut().enumerate() {
            let window = &ext[2 * n + 1..2 * n + 1 + TAPS];
            let acc: f32 = window.iter().zip(self.taps).map(|(&x, &h)| f32::from(x) * h).sum();
            *out = acc.round().clamp(-32_768.0, 32_767.0) as i16;
        }
        self.history.copy_from_slice(&ext[WIDE_FRAME..]);
    }

    /// Forgets the history.
    pub fn reset(&mut self) {
        self.history = [0; TAPS - 1];
    }
}

/// A Blackman-windowed half-band low-pass at 16 kHz (cut-off 4 kHz), unity gain at DC.
fn half_band() -> [f32; TAPS] {
    let mut taps = [0f32; TAPS];
    let center = (TAPS / 2) as f64;
    for (k, tap) in taps.iter_mut().enumerate() {
        let m = k as f64 - center;
        let ideal = if m == 0.0 { 0.5 } else { (std::f64::consts::FRAC_PI_2 * m).sin() / (std::f64::consts::PI * m) };
        let phase = 2.0 * std::f64::consts::PI * k as f64 / (TAPS - 1) as f64;
        let window = 0.42 - 0.5 * phase.cos() + 0.08 * (2.0 * phase).cos();
        *tap = (ideal * window) as f32;
    }
    let sum: f32 = taps.iter().sum();
    taps.iter_mut().for_each(|t| *t /= sum);
    taps
}

/// Filter length: odd, with the centre at an odd index (23) so the half-band's zero taps
/// fall on odd offsets from it.
const TAPS: usize = 47;

#[cfg(test)]
mod tests {
    use super::*;
    use codecs::pcm::analysis::{dominant_frequency, rms_dbfs, tone};

    fn through_upsampler(freq: f64) -> Vec<i16> {
        let input = tone(8_000, freq, -10.0, 8_000);
        let mut up = Upsampler::new();
        let mut out = Vec::new();
        for chunk in input.chunks_exact(NARROW_FRAME) {
            let mut wide = [0; WIDE_FRAME];
            up.process(chunk.try_into().unwrap(), &mut wide);
            out.extend_from_slice(&wide);
        }
        out.split_off(1_600)
    }

    fn through_decimator(freq: f64) -> Vec<i16> {
        let input = tone(16_000, freq, -10.0, 16_000);
        let mut down = Decimator::new();
        let mut out = Vec::new();
        for chunk in input.chunks_exact(WIDE_FRAME) {
            let mut narrow = [0; NARROW_FRAME];
            down.process(chunk.try_into().unwrap(), &mut narrow);
            out.extend_from_slice(&narrow);
        }
        out.split_off(800)
    }

    #[test]
    fn tones_keep_frequency_and_level_both_ways() {
        for freq in [300.0, 1_000.0, 2_500.0] {
            let up = through_upsampler(freq);
            assert!((dominant_frequency(&up, 16_000) - freq).abs() < 2.0, "{freq}");
            assert!((rms_dbfs(&up) - (-13.0)).abs() < 1.0, "{freq}: {}", rms_dbfs(&up));
            let down = through_decimator(freq);
            assert!((dominant_frequency(&down, 8_000) - freq).abs() < 2.0, "{freq}");
            assert!((rms_dbfs(&down) - (-13.0)).abs() < 1.0, "{freq}: {}", rms_dbfs(&down));
        }
    }

    #[test]
    fn the_decimator_stops_what_would_alias() {
        // 6 kHz would fold to 2 kHz at 8 kHz.
        let down = through_decimator(6_000.0);
        assert!(rms_dbfs(&down) < -13.0 - 40.0, "{}", rms_dbfs(&down));
    }

    #[test]
    fn full_scale_input_saturates_without_panicking() {
        let mut up = Upsampler::new();
        let mut wide = [0; WIDE_FRAME];
        let square: [i16; NARROW_FRAME] = std::array::from_fn(|i| if i % 2 == 0 { i16::MAX } else { i16::MIN });
        up.process(&square, &mut wide);
        let mut down = Decimator::new();
        let mut narrow = [0; NARROW_FRAME];
        let square: [i16; WIDE_FRAME] = std::array::from_fn(|i| if i % 3 == 0 { i16::MAX } else { i16::MIN });
        down.process(&square, &mut narrow);
    }
}
