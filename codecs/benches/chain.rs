//! CPU per 20 ms frame of each codec step and of the bridge's two transcoding chains, next
//! to the same chains written as bare library calls (audiopus and the raw AMR-WB C API), in
//! one run. Prints a Markdown table; exits non-zero when a chain costs more than
//! `MAX_RATIO` times its bare twin. `cargo bench -p codecs` (set CODECS_BENCH_QUICK=1 for a
//! short run).
//!
//! The bare chains call the C libraries directly, so this file declares their functions
//! itself and needs `unsafe`; the library keeps its own `unsafe` in `amrwb/`.
#![allow(unsafe_code, missing_docs)]

use std::ffi::{c_int, c_short, c_uchar, c_void};
use std::hint::black_box;
use std::time::Instant;

use audiopus::coder::{Decoder as RawOpusDecoder, Encoder as RawOpusEncoder};
use audiopus::{Application as RawApplication, Bitrate, Channels, MutSignals, SampleRate as RawRate};
use codecs::amrwb::{AmrWbDecoder, AmrWbEncoder, FRAME_SAMPLES, MAX_FRAME_BYTES, Mode};
use codecs::g711::{self, Law};
use codecs::opus::{MAX_PACKET_BYTES, OpusDecoder, OpusEncoder, OpusEncoderConfig, SampleRate};
use codecs::rfc4867::{Cmr, Depacketizer, PacketFrames, Packetizer, PayloadConfig};

unsafe extern "C" {
    fn D_IF_init() -> *mut c_void;
    fn D_IF_decode(state: *mut c_void, bits: *const c_uchar, synth: *mut c_short, bfi: c_int);
    fn D_IF_exit(state: *mut c_void);
    fn E_IF_init() -> *mut c_void;
    fn E_IF_encode(state: *mut c_void, mode: c_int, speech: *const c_short, out: *mut c_uchar, dtx: c_int) -> c_int;
    fn E_IF_exit(state: *mut c_void);
    fn clock_gettime(clock: c_int, now: *mut Timespec) -> c_int;
}

/// Chains may cost at most this much more than the bare library calls.
const MAX_RATIO: f64 = 1.05;
const FRAMES: usize = 250;
/// Frames per timed block when comparing a chain with its bare twin.
const BLOCK: usize = 25;

struct Inputs {
    pcm8: Vec<[i16; 160]>,
    pcm16: Vec<[i16; FRAME_SAMPLES]>,
    pcmu: Vec<[u8; 160]>,
    amr_be: Vec<Vec<u8>>,
    amr_storage: Vec<[u8; 64]>,
    browser: Vec<Vec<u8>>,
}

fn main() {
    let quick = std::env::var_os("CODECS_BENCH_QUICK").is_some();
    let repeats = if quick { 5 } else { 21 };
    let inputs = make_inputs();
    let mut rows: Vec<(String, f64, Option<f64>)> = Vec::new();
    let mut step = |name: &str, reference: Option<f64>, f: &mut dyn FnMut(usize)| {
        let us = median((0..repeats).map(|_| time_frames(f)).collect());
        rows.push((name.to_string(), us, reference));
    };

    // Steps, each alone.
    let mut out8 = [0i16; 160];
    step("g711u_dec_160", Some(0.05), &mut |i| {
        g711::decode(Law::Mu, black_box(&inputs.pcmu[i]), &mut out8).unwrap();
    });
    let mut ulaw = [0u8; 160];
    step("g711u_enc_160", Some(0.07), &mut |i| {
        g711::encode(Law::Mu, black_box(&inputs.pcm8[i]), &mut ulaw).unwrap();
    });
    for (name, config) in [
        ("rfc4867_be_pack+depack_m8", PayloadConfig::bandwidth_efficient()),
        ("rfc4867_oa_pack+depack_m8", PayloadConfig::octet_aligned()),
    ] {
        let depacketizer = Depacketizer::new(config);
        let packetizer = Packetizer::new(config);
        let be = Depacketizer::new(PayloadConfig::bandwidth_efficient());
        let (mut source, mut frames) = (PacketFrames::new(), PacketFrames::new());
        be.depacketize(&inputs.amr_be[0], &mut source).unwrap();
        let mut payload = [0u8; 128];
        step(name, Some(0.08), &mut |_| {
            let frame = source.get(0).unwrap();
            let len = packetizer.packetize(Cmr::NoRequest, &[black_box(frame)], &mut payload).unwrap();
            depacketizer.depacketize(black_box(&payload[..len]), &mut frames).unwrap();
        });
    }
    {
        let be = Depacketizer::new(PayloadConfig::bandwidth_efficient());
        let mut frames = PacketFrames::new();
        let mut decoder = AmrWbDecoder::new().unwrap();
        let mut pcm = [0i16; FRAME_SAMPLES];
        step("amrwb_dec_m8 (incl. BE depack)", Some(38.47), &mut |i| {
            be.depacketize(&inputs.amr_be[i], &mut frames).unwrap();
            decoder.decode(frames.get(0).unwrap(), &mut pcm).unwrap();
        });
        let mut encoder = AmrWbEncoder::new(false).unwrap();
        let mut bits = [0u8; MAX_FRAME_BYTES];
        step("amrwb_enc_m8", Some(173.39), &mut |i| {
            encoder.encode(&inputs.pcm16[i], Mode::M8, &mut bits).unwrap();
        });
    }
    for (rate, refs) in [(SampleRate::Hz8000, [26.1, 59.57, 107.7]), (SampleRate::Hz16000, [45.4, 111.56, 227.5])] {
        for (complexity, reference) in [0u8, 5, 10].into_iter().zip(refs) {
            let config = OpusEncoderConfig { complexity, ..OpusEncoderConfig::default() };
            let mut encoder = OpusEncoder::new(rate, config).unwrap();
            let mut packet = [0u8; MAX_PACKET_BYTES];
            let name = format!("opus_enc_{}k_c{complexity}_24k", rate.hz() / 1000);
            step(&name, Some(reference), &mut |i| {
                let pcm: &[i16] = if rate == SampleRate::Hz8000 { &inputs.pcm8[i] } else { &inputs.pcm16[i] };
                encoder.encode(pcm, &mut packet).unwrap();
            });
        }
    }
    // The same with in-band FEC for 5 % loss, what it costs to protect the browser's audio.
    for (rate, reference) in [(SampleRate::Hz8000, 59.57), (SampleRate::Hz16000, 111.56)] {
        let config = OpusEncoderConfig { inband_fec: true, packet_loss_percent: 5, ..OpusEncoderConfig::default() };
        let mut encoder = OpusEncoder::new(rate, config).unwrap();
        let mut packet = [0u8; MAX_PACKET_BYTES];
        step(&format!("opus_enc_{}k_c5_24k_fec5pct", rate.hz() / 1000), Some(reference), &mut |i| {
            let pcm: &[i16] = if rate == SampleRate::Hz8000 { &inputs.pcm8[i] } else { &inputs.pcm16[i] };
            encoder.encode(pcm, &mut packet).unwrap();
        });
    }
    for (rate, reference) in [(SampleRate::Hz8000, 24.25), (SampleRate::Hz16000, 22.43)] {
        let mut decoder = OpusDecoder::new(rate).unwrap();
        let mut pcm = [0i16; 960];
        let name = format!("opus_dec_browser_fb32_to{}k", rate.hz() / 1000);
        step(&name, Some(reference), &mut |i| {
            decoder.decode(&inputs.browser[i], &mut pcm[..rate.frame_20ms()]).unwrap();
        });
    }

    // Chains, both directions per frame, against their bare twins, interleaved so both see
    // the same machine.
    let mut chains: Vec<(String, f64, f64, f64, f64)> = Vec::new();
    for (complexity, reference) in [0u8, 5, 10].into_iter().zip([50.5, 84.0, 132.1]) {
        let mut chain = PcmuChain::new(complexity);
        let mut bare = BarePcmuChain::new(complexity);
        let (c, b, ratio) = pair(repeats, &mut |i| chain.frame(&inputs, i), &mut |i| bare.frame(&inputs, i));
        chains.push((format!("PCMU<->Opus c{complexity}"), c, b, ratio, reference));
    }
    for (complexity, reference) in [0u8, 5, 10].into_iter().zip([279.7, 345.9, 461.9]) {
        let mut chain = AmrChain::new(complexity);
        let mut bare = BareAmrChain::new(complexity);
        let (c, b, ratio) = pair(repeats, &mut |i| chain.frame(&inputs, i), &mut |i| bare.frame(&inputs, i));
        chains.push((format!("AMR-WB(m8, BE)<->Opus c{complexity}"), c, b, ratio, reference));
    }

    println!("\n### Steps (CPU us per 20 ms frame, median of {repeats} runs of {FRAMES} frames)\n");
    println!("| step | us/frame | limits.md | ratio |");
    println!("|---|---:|---:|---:|");
    for (name, us, reference) in &rows {
        let (r, ratio) = reference.map_or(("-".into(), "-".into()), |r| (format!("{r:.2}"), format!("{:.2}", us / r)));
        println!("| {name} | {us:.2} | {r} | {ratio} |");
    }
    println!("\n### Chains: both directions per 20 ms frame, ours vs bare library calls\n");
    println!(
        "| chain | ours us/frame | bare us/frame | ours/bare (median of paired blocks) | limits.md sum | legs/core (ours) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut worst: f64 = 0.0;
    for (name, ours, bare, ratio, reference) in &chains {
        worst = worst.max(*ratio);
        println!("| {name} | {ours:.1} | {bare:.1} | {ratio:.3} | {reference:.1} | {:.0} |", 1e6 / (50.0 * ours));
    }
    println!("\nworst ours/bare ratio: {worst:.3} (limit {MAX_RATIO})");
    if worst > MAX_RATIO {
        eprintln!("FAIL: a chain costs more than {MAX_RATIO} x its bare library calls");
        std::process::exit(1);
    }
}

/// Runs `f` over every input frame once and returns microseconds per frame.
fn time_frames(f: &mut dyn FnMut(usize)) -> f64 {
    let start = CpuClock::now();
    for i in 0..FRAMES {
        f(i);
    }
    start.elapsed_us() / FRAMES as f64
}

/// This thread's CPU time (clock_gettime(CLOCK_THREAD_CPUTIME_ID)), so time spent waiting for
/// the other core's load does not count: the table is CPU per frame. Falls back to wall time
/// where that clock fails.
enum CpuClock {
    Cpu(u64),
    Wall(Instant),
}

impl CpuClock {
    fn now() -> Self {
        match thread_cpu_ns() {
            Some(ns) => Self::Cpu(ns),
            None => Self::Wall(Instant::now()),
        }
    }

    fn elapsed_us(&self) -> f64 {
        match self {
            Self::Cpu(start) => thread_cpu_ns().map_or(0.0, |now| (now - start) as f64 / 1e3),
            Self::Wall(start) => start.elapsed().as_secs_f64() * 1e6,
        }
    }
}

fn thread_cpu_ns() -> Option<u64> {
    let mut now = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec (two 64-bit fields on 64-bit Linux) to `now`.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut now) };
    (rc == 0).then(|| now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64)
}

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

/// From <time.h> on Linux.
const CLOCK_THREAD_CPUTIME_ID: c_int = 3;

/// Times `ours` and `bare` on the same blocks of frames, alternating block by block, and
/// returns (median us/frame of ours, median us/frame of bare, median of the per-block ratios).
/// Pairing blocks cancels both the speech content and the load of a shared machine.
fn pair(repeats: usize, ours: &mut dyn FnMut(usize), bare: &mut dyn FnMut(usize)) -> (f64, f64, f64) {
    let block = |f: &mut dyn FnMut(usize), first: usize| -> f64 {
        let start = CpuClock::now();
        for i in first..first + BLOCK {
            f(i);
        }
        start.elapsed_us() / BLOCK as f64
    };
    let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..=repeats {
        for (k, first) in (0..FRAMES).step_by(BLOCK).enumerate() {
            // Alternate which goes first so neither always runs on a warmer cache.
            let (x, y) = if (r + k) % 2 == 0 {
                let x = block(ours, first);
                (x, block(bare, first))
            } else {
                let y = block(bare, first);
                (block(ours, first), y)
            };
            // The first pass over the frames is a warm-up.
            if r > 0 {
                a.push(x);
                b.push(y);
                ratios.push(x / y);
            }
        }
    }
    (median(a), median(b), median(ratios))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// SIP PCMU in -> Opus 8 kHz out; browser Opus in -> decode at 8 kHz -> PCMU out.
struct PcmuChain {
    encoder: OpusEncoder,
    decoder: OpusDecoder,
    pcm: [i16; 160],
    back: [i16; 160],
    opus: [u8; MAX_PACKET_BYTES],
    ulaw: [u8; 160],
}

impl PcmuChain {
    fn new(complexity: u8) -> Self {
        let config = OpusEncoderConfig { complexity, ..OpusEncoderConfig::default() };
        Self {
            encoder: OpusEncoder::new(SampleRate::Hz8000, config).unwrap(),
            decoder: OpusDecoder::new(SampleRate::Hz8000).unwrap(),
            pcm: [0; 160],
            back: [0; 160],
            opus: [0; MAX_PACKET_BYTES],
            ulaw: [0; 160],
        }
    }

    fn frame(&mut self, inputs: &Inputs, i: usize) {
        g711::decode(Law::Mu, &inputs.pcmu[i], &mut self.pcm).unwrap();
        black_box(self.encoder.encode(&self.pcm, &mut self.opus).unwrap());
        self.decoder.decode(&inputs.browser[i], &mut self.back).unwrap();
        g711::encode(Law::Mu, &self.back, &mut self.ulaw).unwrap();
        black_box(&self.ulaw);
    }
}

struct BarePcmuChain {
    encoder: RawOpusEncoder,
    decoder: RawOpusDecoder,
    pcm: [i16; 160],
    back: [i16; 160],
    opus: [u8; MAX_PACKET_BYTES],
    ulaw: [u8; 160],
}

impl BarePcmuChain {
    fn new(complexity: u8) -> Self {
        Self {
            encoder: raw_encoder(RawRate::Hz8000, complexity),
            decoder: RawOpusDecoder::new(RawRate::Hz8000, Channels::Mono).unwrap(),
            pcm: [0; 160],
            back: [0; 160],
            opus: [0; MAX_PACKET_BYTES],
            ulaw: [0; 160],
        }
    }

    fn frame(&mut self, inputs: &Inputs, i: usize) {
        // G.711 has no library: the bare chain uses the per-sample table lookups directly.
        for (o, &c) in self.pcm.iter_mut().zip(&inputs.pcmu[i]) {
            *o = g711::ulaw_to_linear(c);
        }
        black_box(self.encoder.encode(&self.pcm, &mut self.opus).unwrap());
        let packet = audiopus::packet::Packet::try_from(inputs.browser[i].as_slice()).unwrap();
        self.decoder.decode(Some(packet), MutSignals::try_from(&mut self.back[..]).unwrap(), false).unwrap();
        for (o, &s) in self.ulaw.iter_mut().zip(&self.back) {
            *o = g711::linear_to_ulaw(s);
        }
        black_box(&self.ulaw);
    }
}

/// SIP AMR-WB (bandwidth-efficient) in -> decode -> Opus 16 kHz out; browser Opus in ->
/// decode at 16 kHz -> AMR-WB mode 8 -> bandwidth-efficient payload out.
struct AmrChain {
    depacketizer: Depacketizer,
    packetizer: Packetizer,
    frames: PacketFrames,
    amr_decoder: AmrWbDecoder,
    amr_encoder: AmrWbEncoder,
    encoder: OpusEncoder,
    decoder: OpusDecoder,
    pcm: [i16; FRAME_SAMPLES],
    back: [i16; FRAME_SAMPLES],
    bits: [u8; MAX_FRAME_BYTES],
    opus: [u8; MAX_PACKET_BYTES],
    payload: [u8; 128],
}

impl AmrChain {
    fn new(complexity: u8) -> Self {
        let config = OpusEncoderConfig { complexity, ..OpusEncoderConfig::default() };
        Self {
            depacketizer: Depacketizer::new(PayloadConfig::bandwidth_efficient()),
            packetizer: Packetizer::new(PayloadConfig::bandwidth_efficient()),
            frames: PacketFrames::new(),
            amr_decoder: AmrWbDecoder::new().unwrap(),
            amr_encoder: AmrWbEncoder::new(false).unwrap(),
            encoder: OpusEncoder::new(SampleRate::Hz16000, config).unwrap(),
            decoder: OpusDecoder::new(SampleRate::Hz16000).unwrap(),
            pcm: [0; FRAME_SAMPLES],
            back: [0; FRAME_SAMPLES],
            bits: [0; MAX_FRAME_BYTES],
            opus: [0; MAX_PACKET_BYTES],
            payload: [0; 128],
        }
    }

    fn frame(&mut self, inputs: &Inputs, i: usize) {
        self.depacketizer.depacketize(&inputs.amr_be[i], &mut self.frames).unwrap();
        for frame in self.frames.iter() {
            self.amr_decoder.decode(frame, &mut self.pcm).unwrap();
            black_box(self.encoder.encode(&self.pcm, &mut self.opus).unwrap());
        }
        self.decoder.decode(&inputs.browser[i], &mut self.back).unwrap();
        let encoded = self.amr_encoder.encode(&self.back, Mode::M8, &mut self.bits).unwrap();
        let len = self.packetizer.packetize(Cmr::NoRequest, &[encoded.frame(&self.bits)], &mut self.payload).unwrap();
        black_box(&self.payload[..len]);
    }
}

struct BareAmrChain {
    amr_decoder: *mut c_void,
    amr_encoder: *mut c_void,
    encoder: RawOpusEncoder,
    decoder: RawOpusDecoder,
    pcm: [i16; FRAME_SAMPLES],
    back: [i16; FRAME_SAMPLES],
    storage: [u8; 64],
    opus: [u8; MAX_PACKET_BYTES],
}

impl BareAmrChain {
    fn new(complexity: u8) -> Self {
        // SAFETY: the init functions take no arguments; NULL is checked below.
        let (amr_decoder, amr_encoder) = unsafe { (D_IF_init(), E_IF_init()) };
        assert!(!amr_decoder.is_null() && !amr_encoder.is_null());
        Self {
            amr_decoder,
            amr_encoder,
            encoder: raw_encoder(RawRate::Hz16000, complexity),
            decoder: RawOpusDecoder::new(RawRate::Hz16000, Channels::Mono).unwrap(),
            pcm: [0; FRAME_SAMPLES],
            back: [0; FRAME_SAMPLES],
            storage: [0; 64],
            opus: [0; MAX_PACKET_BYTES],
        }
    }

    fn frame(&mut self, inputs: &Inputs, i: usize) {
        // The bare chain is handed storage-format frames: no payload format work at all.
        // SAFETY: live states; 64-byte input and 320-sample output buffers as the C API needs.
        unsafe { D_IF_decode(self.amr_decoder, inputs.amr_storage[i].as_ptr(), self.pcm.as_mut_ptr(), 0) };
        black_box(self.encoder.encode(&self.pcm, &mut self.opus).unwrap());
        let packet = audiopus::packet::Packet::try_from(inputs.browser[i].as_slice()).unwrap();
        self.decoder.decode(Some(packet), MutSignals::try_from(&mut self.back[..]).unwrap(), false).unwrap();
        // SAFETY: live state; 320 input samples; 64-byte output, more than the 61 written.
        let n = unsafe { E_IF_encode(self.amr_encoder, 8, self.back.as_ptr(), self.storage.as_mut_ptr(), 0) };
        black_box((n, &self.storage));
    }
}

impl Drop for BareAmrChain {
    fn drop(&mut self) {
        // SAFETY: both states came from their init functions and are freed once.
        unsafe {
            D_IF_exit(self.amr_decoder);
            E_IF_exit(self.amr_encoder);
        }
    }
}

fn raw_encoder(rate: RawRate, complexity: u8) -> RawOpusEncoder {
    let mut encoder = RawOpusEncoder::new(rate, Channels::Mono, RawApplication::Voip).unwrap();
    let defaults = OpusEncoderConfig::default();
    encoder.set_complexity(complexity).unwrap();
    encoder.set_bitrate(Bitrate::BitsPerSecond(defaults.bitrate as i32)).unwrap();
    encoder.set_inband_fec(defaults.inband_fec).unwrap();
    encoder.set_packet_loss_perc(defaults.packet_loss_percent).unwrap();
    encoder.set_dtx(defaults.dtx).unwrap();
    encoder
}

/// Speech at 16 kHz from the fixture, decimated to 8 kHz and stretched to 48 kHz as needed;
/// AMR-WB frames from our encoder; browser packets from libopus at 48 kHz, complexity 9,
/// 32 kbit/s with FEC (limits.md's browser stand-in).
fn make_inputs() -> Inputs {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/speech/speech_16k.raw");
    let bytes = std::fs::read(path).expect("speech fixture");
    let speech: Vec<i16> =
        bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).cycle().take(FRAMES * FRAME_SAMPLES).collect();
    let pcm16: Vec<[i16; FRAME_SAMPLES]> = speech.chunks_exact(FRAME_SAMPLES).map(|c| c.try_into().unwrap()).collect();
    let pcm8: Vec<[i16; 160]> = pcm16
        .iter()
        .map(|f| std::array::from_fn(|n| ((i32::from(f[2 * n]) + i32::from(f[2 * n + 1])) / 2) as i16))
        .collect();
    let pcmu = pcm8
        .iter()
        .map(|f| {
            let mut out = [0u8; 160];
            g711::encode(Law::Mu, f, &mut out).unwrap();
            out
        })
        .collect();
    let mut encoder = AmrWbEncoder::new(false).unwrap();
    let packetizer = Packetizer::new(PayloadConfig::bandwidth_efficient());
    let (mut amr_be, mut amr_storage) = (Vec::new(), Vec::new());
    for frame in &pcm16 {
        let mut bits = [0u8; MAX_FRAME_BYTES];
        let encoded = encoder.encode(frame, Mode::M8, &mut bits).unwrap();
        let mut payload = [0u8; 128];
        let len = packetizer.packetize(Cmr::NoRequest, &[encoded.frame(&bits)], &mut payload).unwrap();
        amr_be.push(payload[..len].to_vec());
        let mut storage = [0u8; 64];
        storage[0] = (encoded.frame_type.ft() << 3) | 0x04;
        storage[1..=encoded.len].copy_from_slice(&bits[..encoded.len]);
        amr_storage.push(storage);
    }
    let browser_config = OpusEncoderConfig {
        complexity: 9,
        bitrate: 32_000,
        inband_fec: true,
        packet_loss_percent: 10,
        application: codecs::opus::Application::Audio,
        ..OpusEncoderConfig::default()
    };
    let mut browser_encoder = OpusEncoder::new(SampleRate::Hz48000, browser_config).unwrap();
    let browser = pcm16
        .iter()
        .map(|f| {
            let wide: Vec<i16> = (0..960)
                .map(|n| {
                    let (i, frac) = (n / 3, (n % 3) as i32);
                    let next = f.get(i + 1).copied().unwrap_or(f[i]);
                    ((i32::from(f[i]) * (3 - frac) + i32::from(next) * frac) / 3) as i16
                })
                .collect();
            let mut packet = [0u8; MAX_PACKET_BYTES];
            let len = browser_encoder.encode(&wide, &mut packet).unwrap();
            packet[..len].to_vec()
        })
        .collect();
    Inputs { pcm8, pcm16, pcmu, amr_be, amr_storage, browser }
}
