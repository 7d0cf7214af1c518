//! Measurements for judging audio in tests: level, dominant frequency, SNR, alignment, and a
//! tone generator. Not for the hot path: these allocate and favour clarity over speed.

use std::f64::consts::PI;

/// A sine of `frequency` Hz whose peak is `peak_dbfs` dB below full scale, `len` samples long.
pub fn tone(sample_rate: u32, frequency: f64, peak_dbfs: f64, len: usize) -> Vec<i16> {
    let amplitude = f64::from(i16::MAX) * 10f64.powf(peak_dbfs / 20.0);
    (0..len)
        .map(|n| (amplitude * (2.0 * PI * frequency * n as f64 / f64::from(sample_rate)).sin()).round() as i16)
        .collect()
}

/// RMS level in dB relative to a full-scale square wave (a full-scale sine reads -3.01).
/// Silence reads -inf.
pub fn rms_dbfs(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return f64::NEG_INFINITY;
    }
    let energy: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64;
    10.0 * (energy / f64::from(i16::MAX).powi(2)).log10()
}

/// The frequency in Hz of the strongest spectral peak, to a fraction of a hertz for a tone of
/// a second or more: Hann window, zero-padded FFT, parabolic interpolation on the log
/// magnitude around the peak bin.
pub fn dominant_frequency(samples: &[i16], sample_rate: u32) -> f64 {
    let len = samples.len().min(1 << 17);
    if len < 4 {
        return 0.0;
    }
    let size = (2 * len).next_power_of_two();
    let mut re = vec![0.0; size];
    let mut im = vec![0.0; size];
    for (n, (&s, r)) in samples[..len].iter().zip(re.iter_mut()).enumerate() {
        let window = 0.5 - 0.5 * (2.0 * PI * n as f64 / (len - 1) as f64).cos();
        *r = f64::from(s) * window;
    }
    fft(&mut re, &mut im);
    let magnitude: Vec<f64> = re[..size / 2].iter().zip(&im[..size / 2]).map(|(r, i)| (r * r + i * i).sqrt()).collect();
    // Skip DC and the bin next to it: a DC offset is not a tone.
    let peak = (2..size / 2 - 1).max_by(|&a, &b| magnitude[a].total_cmp(&magnitude[b])).unwrap_or(2);
    let (a, b, c) =
        ((magnitude[peak - 1] + 1e-12).ln(), (magnitude[peak] + 1e-12).ln(), (magnitude[peak + 1] + 1e-12).ln());
    let denominator = a - 2.0 * b + c;
    let offset = if denominator.abs() > 1e-12 { 0.5 * (a - c) / denominator } else { 0.0 };
    (peak as f64 + offset) * f64::from(sample_rate) / size as f64
}

/// The RMS level, in the units of [`rms_dbfs`], of the component of `samples` at `frequency`
/// Hz alone: a Hann-windowed Goertzel filter, so a tone among others is measured without
/// them (tones a few tens of hertz apart over a second of audio stay apart). Silence reads -inf.
pub fn tone_level_dbfs(samples: &[i16], sample_rate: u32, frequency: f64) -> f64 {
    let len = samples.len();
    if len < 4 {
        return f64::NEG_INFINITY;
    }
    let w = 2.0 * PI * frequency / f64::from(sample_rate);
    let (cos, sin) = (w.cos(), w.sin());
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for (n, &x) in samples.iter().enumerate() {
        let window = 0.5 - 0.5 * (2.0 * PI * n as f64 / (len - 1) as f64).cos();
        let s0 = f64::from(x) * window + 2.0 * cos * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let (re, im) = (s1 - s2 * cos, s2 * sin);
    // A sine of amplitude A gives |X| = A·N/4 through a Hann window (coherent gain 1/2).
    let amplitude = 4.0 * (re * re + im * im).sqrt() / len as f64;
    if amplitude <= 0.0 {
        return f64::NEG_INFINITY;
    }
    20.0 * (amplitude / (f64::from(i16::MAX) * 2f64.sqrt())).log10()
}

/// Signal-to-noise ratio in dB of `test` against `reference`, sample by sample over the
/// shorter of the two. Align them first (see [`best_delay`]).
pub fn snr_db(reference: &[i16], test: &[i16]) -> f64 {
    let (signal, noise) = reference.iter().zip(test).fold((0.0, 0.0), |(s, n), (&r, &t)| {
        let (r, t) = (f64::from(r), f64::from(t));
        (s + r * r, n + (r - t) * (r - t))
    });
    10.0 * (signal / noise.max(1e-9)).log10()
}

/// Segmental SNR in dB (the mean of per-segment SNRs, each clamped to [-10, 35] dB), over
/// segments whose reference level is above -50 dBFS so silence does not count.
pub fn segmental_snr_db(reference: &[i16], test: &[i16], segment: usize) -> f64 {
    let len = reference.len().min(test.len());
    let snrs: Vec<f64> = reference[..len]
        .chunks_exact(segment)
        .zip(test[..len].chunks_exact(segment))
        .filter(|(r, _)| rms_dbfs(r) > -50.0)
        .map(|(r, t)| snr_db(r, t).clamp(-10.0, 35.0))
        .collect();
    if snrs.is_empty() { f64::NEG_INFINITY } else { snrs.iter().sum::<f64>() / snrs.len() as f64 }
}

/// The delay in samples (0..=`max_delay`) by which `test` lags `reference` most likely, by
/// the peak of their normalized cross-correlation.
pub fn best_delay(reference: &[i16], test: &[i16], max_delay: usize) -> usize {
    let score = |delay: usize| -> f64 {
        let t = test.get(delay..).unwrap_or(&[]);
        let (dot, energy) = reference.iter().zip(t).fold((0.0, 0.0), |(d, e), (&r, &t)| {
            let (r, t) = (f64::from(r), f64::from(t));
            (d + r * t, e + t * t)
        });
        if energy > 0.0 { dot / energy.sqrt() } else { f64::NEG_INFINITY }
    };
    (0..=max_delay).max_by(|&a, &b| score(a).total_cmp(&score(b))).unwrap_or(0)
}

/// In-place iterative radix-2 FFT; `re.len()` must be a power of two.
fn fft(re: &mut [f64], im: &mut [f64]) {
    let n = re.len();
    debug_assert!(n.is_power_of_two() && im.len() == n);
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let angle = -2.0 * PI / len as f64;
        for start in (0..n).step_by(len) {
            for k in 0..len / 2 {
                let (w_re, w_im) = ((angle * k as f64).cos(), (angle * k as f64).sin());
                let (a, b) = (start + k, start + k + len / 2);
                let t_re = re[b] * w_re - im[b] * w_im;
                let t_im = re[b] * w_im + im[b] * w_re;
                re[b] = re[a] - t_re;
                im[b] = im[a] - t_im;
                re[a] += t_re;
                im[a] += t_im;
            }
        }
        len <<= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_level_measures_each_tone_of_a_mix_and_not_the_absent_ones() {
        let a = tone(8_000, 620.0, -12.0, 8_000);
        let b = tone(8_000, 1_390.0, -20.0, 8_000);
        let mix: Vec<i16> = a.iter().zip(&b).map(|(x, y)| x.saturating_add(*y)).collect();
        // A sine whose peak is P dBFS reads P - 3.01 in rms_dbfs units.
        assert!((tone_level_dbfs(&mix, 8_000, 620.0) - (-15.01)).abs() < 0.1);
        assert!((tone_level_dbfs(&mix, 8_000, 1_390.0) - (-23.01)).abs() < 0.1);
        assert!(tone_level_dbfs(&mix, 8_000, 1_000.0) < -80.0);
        assert!(tone_level_dbfs(&mix, 8_000, 660.0) < -60.0, "40 Hz away");
        assert_eq!(tone_level_dbfs(&[0; 800], 8_000, 620.0), f64::NEG_INFINITY);
    }

    #[test]
    fn dominant_frequency_finds_tones_within_a_fraction_of_a_hertz() {
        for (rate, frequency) in [(8_000, 1004.0), (16_000, 440.0), (16_000, 3_333.3), (48_000, 997.0)] {
            let samples = tone(rate, frequency, -6.0, rate as usize);
            let found = dominant_frequency(&samples, rate);
            assert!((found - frequency).abs() < 0.25, "{frequency} Hz at {rate}: {found}");
        }
    }

    #[test]
    fn levels_of_known_signals() {
        let full = tone(8_000, 1_000.0, 0.0, 8_000);
        assert!((rms_dbfs(&full) + 3.01).abs() < 0.05, "{}", rms_dbfs(&full));
        let quiet = tone(8_000, 1_000.0, -20.0, 8_000);
        assert!((rms_dbfs(&quiet) + 23.01).abs() < 0.05);
        assert_eq!(rms_dbfs(&[0; 10]), f64::NEG_INFINITY);
    }

    #[test]
    fn snr_and_delay_of_a_shifted_noisy_copy() {
        let reference = tone(16_000, 700.0, -6.0, 4_000);
        // A copy delayed by 37 samples with noise 20 dB down.
        let noise_amplitude = f64::from(i16::MAX) * 10f64.powf(-6.0 / 20.0) * 0.1;
        let mut test = vec![0i16; 37];
        test.extend(reference.iter().enumerate().map(|(n, &s)| {
            let noise = noise_amplitude * if (n * 7_919) % 13 < 6 { 1.0 } else { -1.0 };
            (f64::from(s) + noise) as i16
        }));
        // A 700 Hz tone repeats every 160/7 samples, so look only near the true delay.
        assert_eq!(best_delay(&reference[..2_000], &test, 45), 37);
        let snr = snr_db(&reference, &test[37..]);
        assert!((snr - 17.0).abs() < 1.5, "{snr}");
        let segmental = segmental_snr_db(&reference, &test[37..], 160);
        assert!((segmental - snr).abs() < 2.0, "{segmental}");
    }
}
