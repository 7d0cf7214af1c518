//! Audio quality through every codec and through the bridge's chains: a tone keeps its
//! frequency (±2 Hz) and level (±3 dB); speech keeps an SNR floor stated per test.
mod common;

use codecs::amrwb::{AmrWbDecoder, AmrWbEncoder, CODEC_DELAY_SAMPLES, FRAME_SAMPLES, MAX_FRAME_BYTES, Mode};
use codecs::g711::{self, Law};
use codecs::opus::{MAX_PACKET_BYTES, OpusDecoder, OpusEncoder, OpusEncoderConfig, SampleRate};
use codecs::pcm::analysis::{best_delay, dominant_frequency, rms_dbfs, segmental_snr_db, snr_db, tone};

fn assert_tone_kept(what: &str, input: &[i16], output: &[i16], rate: u32, frequency: f64) {
    // Skip the first quarter second: codec start-up and delay.
    let settled = &output[rate as usize / 4..];
    let found = dominant_frequency(settled, rate);
    assert!((found - frequency).abs() <= 2.0, "{what}: {found:.2} Hz, sent {frequency} Hz");
    let level = rms_dbfs(settled) - rms_dbfs(input);
    assert!(level.abs() <= 3.0, "{what}: level changed by {level:.2} dB");
}

fn g711_round_trip(law: Law, input: &[i16]) -> Vec<i16> {
    let mut payload = vec![0u8; input.len()];
    g711::encode(law, input, &mut payload).unwrap();
    let mut output = vec![0i16; input.len()];
    g711::decode(law, &payload, &mut output).unwrap();
    output
}

fn amrwb_round_trip(mode: Mode, input: &[i16]) -> Vec<i16> {
    let mut encoder = AmrWbEncoder::new(false).unwrap();
    let mut decoder = AmrWbDecoder::new().unwrap();
    let mut bits = [0u8; MAX_FRAME_BYTES];
    let mut pcm = [0i16; FRAME_SAMPLES];
    let mut output = Vec::with_capacity(input.len());
    for frame in input.chunks_exact(FRAME_SAMPLES) {
        let encoded = encoder.encode(frame.try_into().unwrap(), mode, &mut bits).unwrap();
        decoder.decode(encoded.frame(&bits), &mut pcm).unwrap();
        output.extend_from_slice(&pcm);
    }
    output
}

fn opus_round_trip(rate: SampleRate, config: OpusEncoderConfig, input: &[i16]) -> Vec<i16> {
    let mut encoder = OpusEncoder::new(rate, config).unwrap();
    let mut decoder = OpusDecoder::new(rate).unwrap();
    let mut packet = [0u8; MAX_PACKET_BYTES];
    let mut pcm = vec![0i16; rate.frame_20ms()];
    let mut output = Vec::with_capacity(input.len());
    for frame in input.chunks_exact(rate.frame_20ms()) {
        let len = encoder.encode(frame, &mut packet).unwrap();
        let n = decoder.decode(&packet[..len], &mut pcm).unwrap();
        output.extend_from_slice(&pcm[..n]);
    }
    output
}

#[test]
fn tone_through_g711_keeps_frequency_and_level() {
    for law in [Law::Mu, Law::A] {
        for (frequency, peak) in [(1_004.0, -3.0), (300.0, -20.0), (3_400.0, -12.0)] {
            let input = tone(8_000, frequency, peak, 8_000);
            assert_tone_kept(
                &format!("G.711 {law:?} {frequency} Hz"),
                &input,
                &g711_round_trip(law, &input),
                8_000,
                frequency,
            );
        }
    }
}

#[test]
fn tone_through_every_amrwb_mode_keeps_frequency_and_level() {
    let input = tone(16_000, 1_000.0, -12.0, 16_000);
    for mode in Mode::ALL {
        assert_tone_kept(&format!("AMR-WB {mode:?}"), &input, &amrwb_round_trip(mode, &input), 16_000, 1_000.0);
    }
}

#[test]
fn tone_through_opus_at_every_rate_keeps_frequency_and_level() {
    for (rate, frequency) in
        [(SampleRate::Hz8000, 1_004.0), (SampleRate::Hz16000, 1_000.0), (SampleRate::Hz48000, 1_000.0)]
    {
        let input = tone(rate.hz(), frequency, -12.0, rate.hz() as usize);
        for complexity in [0, 5, 10] {
            let config = OpusEncoderConfig { complexity, ..OpusEncoderConfig::default() };
            let output = opus_round_trip(rate, config, &input);
            assert_tone_kept(&format!("Opus {rate:?} c{complexity}"), &input, &output, rate.hz(), frequency);
        }
    }
}

#[test]
fn tone_through_the_bridge_chains_keeps_frequency_and_level() {
    // SIP PCMU -> Opus 8 kHz -> browser -> Opus -> PCMU, and AMR-WB -> Opus 16 kHz -> AMR-WB.
    let input = tone(8_000, 1_004.0, -12.0, 8_000);
    let pcmu = g711_round_trip(Law::Mu, &input);
    let opus = opus_round_trip(SampleRate::Hz8000, OpusEncoderConfig::default(), &pcmu);
    let back = g711_round_trip(Law::Mu, &opus);
    assert_tone_kept("PCMU->Opus->PCMU", &input, &back, 8_000, 1_004.0);

    let input = tone(16_000, 1_000.0, -12.0, 16_000);
    let amr = amrwb_round_trip(Mode::M8, &input);
    let opus = opus_round_trip(SampleRate::Hz16000, OpusEncoderConfig::default(), &amr);
    let back = amrwb_round_trip(Mode::M8, &opus);
    assert_tone_kept("AMR-WB->Opus->AMR-WB", &input, &back, 16_000, 1_000.0);
}

fn speech() -> Vec<i16> {
    let speech = common::read_s16le(&common::fixture("speech/speech_16k.raw"));
    // Whole frames only.
    speech[..speech.len() / FRAME_SAMPLES * FRAME_SAMPLES].to_vec()
}

/// SNR and segmental SNR (20 ms segments) after aligning `output` to `input`.
fn speech_scores(input: &[i16], output: &[i16], max_delay: usize) -> (usize, f64, f64) {
    let delay = best_delay(&input[..input.len() - max_delay], output, max_delay);
    let aligned = &output[delay..];
    let reference = &input[..aligned.len()];
    (delay, snr_db(reference, aligned), segmental_snr_db(reference, aligned, 320))
}

#[test]
fn speech_through_amrwb_mode_8_keeps_snr_floor() {
    let input = speech();
    let output = amrwb_round_trip(Mode::M8, &input);
    let (delay, snr, segmental) = speech_scores(&input, &output, 400);
    eprintln!("AMR-WB mode 8 on speech: delay {delay}, SNR {snr:.2} dB, segmental {segmental:.2} dB");
    assert_eq!(delay, CODEC_DELAY_SAMPLES);
    // Measured 11.5 dB and 8.3 dB (vo-amrwbenc 0.1.3 + opencore-amrwb 0.1.6); misaligned or
    // wrongly ordered bits score near 0 dB.
    assert!(snr >= AMRWB_M8_SNR_FLOOR_DB, "AMR-WB mode 8 speech SNR {snr:.2} dB < {AMRWB_M8_SNR_FLOOR_DB}");
    assert!(
        segmental >= AMRWB_M8_SEGSNR_FLOOR_DB,
        "AMR-WB mode 8 segmental SNR {segmental:.2} dB < {AMRWB_M8_SEGSNR_FLOOR_DB}"
    );
}

#[test]
fn speech_through_opus_24k_keeps_snr_floor() {
    let input = speech();
    let config = OpusEncoderConfig { bitrate: 24_000, ..OpusEncoderConfig::default() };
    let output = opus_round_trip(SampleRate::Hz16000, config, &input);
    let (delay, snr, segmental) = speech_scores(&input, &output, 1_000);
    eprintln!("Opus 24k on speech: delay {delay}, SNR {snr:.2} dB, segmental {segmental:.2} dB");
    // Measured 12.4 dB and 9.0 dB (libopus 1.3.1, complexity 5, SILK wideband).
    assert!(snr >= OPUS_24K_SNR_FLOOR_DB, "Opus 24 kbit/s speech SNR {snr:.2} dB < {OPUS_24K_SNR_FLOOR_DB}");
    assert!(
        segmental >= OPUS_24K_SEGSNR_FLOOR_DB,
        "Opus 24 kbit/s segmental SNR {segmental:.2} dB < {OPUS_24K_SEGSNR_FLOOR_DB}"
    );
}

/// Speech floors: about 2.5 dB under what was measured, so a codec update passes and a
/// broken path (wrong bit order, lost alignment, wrong rate) does not.
const AMRWB_M8_SNR_FLOOR_DB: f64 = 9.0;
const AMRWB_M8_SEGSNR_FLOOR_DB: f64 = 6.0;
const OPUS_24K_SNR_FLOOR_DB: f64 = 10.0;
const OPUS_24K_SEGSNR_FLOOR_DB: f64 = 6.5;
