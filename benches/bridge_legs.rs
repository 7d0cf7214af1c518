//! The media bridge under load: N concurrent SIP legs in one process, each fed the RTP (or
//! SRTP) a phone sends and each hearing one browser publisher, with what each leg does every
//! 20 ms (issue 6 item 8):
//!
//! - phone → browsers: SRTP unprotect, RTP, jitter buffer, G.711 or AMR-WB decode (and, for
//!   G.711, the 8 → 16 kHz upsampler of the leg and the decimator back to 8 kHz for a narrowband
//!   encode), Opus encode complexity 5, the frame shared (`Arc`) with its subscriber;
//! - browser → phone: the browser's Opus decoded once ([`HeardDecoders`], as the forwarder does),
//!   queued, mixed at 16 kHz, G.711 or AMR-WB encode (and the decimator), RTP, SRTP protect.
//!
//! Beside it, in the same run and interleaved block by block so both see the same machine, the
//! **bare codec chain** of the same conversion: the codec library calls alone, at the rates a
//! minimal transcoder would use (G.711 ⇄ Opus at 8 kHz: G.711 decode, Opus encode; Opus decode,
//! G.711 encode — limits.md's chain; AMR-WB ⇄ Opus at 16 kHz with BE packing), no SRTP, RTP,
//! jitter buffer, resampling or mix. The ratio is what the bridge costs over that ceiling.
//!
//! Then a real-time run: 150 PCMU legs on this one thread, paced by the wall clock at 20 ms with
//! the legs' ticks spread over the period as calls' timers are in the daemon, counting frames
//! finished more than a tick after they were due (late frames) and the latency the gateway adds
//! to each frame: phone → browser is the jitter buffer's delay plus the time from the packet's
//! arrival (when its tick was due) to its Opus frame; browser → phone is the time from the
//! browser frame's arrival (when the tick was due) to the RTP packet carrying it (20 ms packets:
//! one frame per packet, nothing held).
//!
//! `cargo bench --bench bridge_legs` (release). `BRIDGE_BENCH_QUICK=1` for a short run.
//! CPU time is the thread's own (`CLOCK_THREAD_CPUTIME_ID`), hence the one `unsafe` call.
#![allow(unsafe_code, missing_docs)]

use std::ffi::c_int;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use codecs::amrwb::{AmrWbDecoder, AmrWbEncoder, FRAME_SAMPLES, MAX_FRAME_BYTES, Mode};
use codecs::g711::{self, Law};
use codecs::opus::{MAX_PACKET_BYTES, OpusDecoder, OpusEncoder, OpusEncoderConfig, SampleRate};
use codecs::pcm::analysis::tone;
use codecs::rfc4867::{Cmr, Depacketizer, PacketFrames, Packetizer, PayloadConfig};
use interwork::media::heard::HeardDecoders;
use interwork::media::leg::{AudioStatus, LegConfig, MTU, SipLeg};
use interwork::media::params::{AmrWbParams, Codec, Negotiated, SrtpKeys, SrtpSuite};
use interwork::media::resample::Decimator;
use interwork::media::rtp::Ssrc;
use interwork::webrtc::sfu::EndpointId;
use str0m::media::{Frequency, MediaTime};

const GATEWAY: &str = "192.0.2.1:20000";
const PHONE: &str = "198.51.100.2:40000";
/// Frames of generated input, replayed in a loop (10 s).
const INPUT_FRAMES: usize = 500;
/// Frames per timed block; blocks of the bridge and the bare chain alternate.
const BLOCK: usize = 25;
const TICK: Duration = Duration::from_millis(20);

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

unsafe extern "C" {
    fn clock_gettime(clock: c_int, now: *mut Timespec) -> c_int;
}

/// CPU time of this thread.
fn thread_cpu() -> Duration {
    const CLOCK_THREAD_CPUTIME_ID: c_int = 3;
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `t` is a valid, writable timespec; the clock id is Linux's thread CPU clock.
    let r = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(r, 0, "clock_gettime");
    Duration::new(t.sec as u64, t.nsec as u32)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Pcmu,
    AmrWbSrtp,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::AmrWbSrtp => "AMR-WB (BE, mode 8) over SRTP",
        }
    }
}

fn negotiated(kind: Kind, remote: &str, flip: bool) -> Negotiated {
    let codec = match kind {
        Kind::Pcmu => Codec::Pcmu,
        Kind::AmrWbSrtp => Codec::AmrWb(AmrWbParams::new(false)),
    };
    let srtp = (kind == Kind::AmrWbSrtp).then(|| {
        let (a, b): (Vec<u8>, Vec<u8>) = ((0..30).collect(), (100..130).collect());
        let (local_key, remote_key) = if flip { (b, a) } else { (a, b) };
        SrtpKeys { suite: SrtpSuite::AesCm128HmacSha1_80, tag: 1, remote_key, local_key }
    });
    Negotiated { rtcp_mux: true, ..Negotiated::sendrecv(codec, remote.parse().unwrap()) }.with_srtp(srtp)
}

fn config(ssrc: u32) -> LegConfig {
    LegConfig {
        ssrc: Ssrc(ssrc),
        initial_sequence: 1,
        initial_timestamp: 1_000,
        cname: format!("leg-{ssrc}"),
        wall_clock: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        latching: Default::default(),
    }
}

/// What every leg is fed: the phone's datagrams (a 1 kHz tone), the same codec payloads
/// unwrapped for the bare chain, and a browser's Opus (440 Hz, 48 kHz full band).
struct Inputs {
    datagrams: Vec<Vec<u8>>,
    pcmu: Vec<[u8; 160]>,
    amr_be: Vec<Vec<u8>>,
    browser: Vec<Arc<[u8]>>,
}

fn inputs(kind: Kind) -> Inputs {
    let start = Instant::now();
    let mut phone = SipLeg::new(start, &negotiated(kind, GATEWAY, true), config(7)).unwrap();
    let wide = tone(16_000, 1_000.0, -9.0, FRAME_SAMPLES * INPUT_FRAMES);
    let narrow = tone(8_000, 1_000.0, -9.0, 160 * INPUT_FRAMES);
    let mut datagrams = Vec::new();
    let mut buf = vec![0u8; MTU];
    for (i, frame) in wide.chunks_exact(FRAME_SAMPLES).enumerate() {
        phone.send_audio(start + TICK * i as u32, frame.try_into().unwrap());
        while let Some(t) = phone.poll_transmit(&mut buf) {
            // RTP only: RTCP is a few packets a second and not what this measures.
            if buf[1] & 0x7f == if kind == Kind::Pcmu { 0 } else { 96 } {
                datagrams.push(buf[..t.len].to_vec());
            }
        }
    }
    let pcmu = narrow
        .chunks_exact(160)
        .map(|c| {
            let mut out = [0u8; 160];
            g711::encode(Law::Mu, c, &mut out).unwrap();
            out
        })
        .collect();
    let mut amr = AmrWbEncoder::new(false).unwrap();
    let packetizer = Packetizer::new(PayloadConfig::bandwidth_efficient());
    let amr_be = wide
        .chunks_exact(FRAME_SAMPLES)
        .map(|c| {
            let mut bits = [0u8; MAX_FRAME_BYTES];
            let encoded = amr.encode(c.try_into().unwrap(), Mode::M8, &mut bits).unwrap();
            let mut payload = [0u8; 128];
            let n = packetizer.packetize(Cmr::NoRequest, &[encoded.frame(&bits)], &mut payload).unwrap();
            payload[..n].to_vec()
        })
        .collect();
    let config = OpusEncoderConfig { bitrate: 32_000, ..OpusEncoderConfig::default() };
    let mut browser_encoder = OpusEncoder::new(SampleRate::Hz48000, config).unwrap();
    let browser = tone(48_000, 440.0, -9.0, 960 * INPUT_FRAMES)
        .chunks_exact(960)
        .map(|c| {
            let mut out = [0u8; MAX_PACKET_BYTES];
            let n = browser_encoder.encode(c, &mut out).unwrap();
            Arc::from(&out[..n])
        })
        .collect();
    Inputs { datagrams, pcmu, amr_be, browser }
}

/// One leg as the bridge runs it (`media::bridge`), minus the channels between tasks.
struct BridgedLeg {
    leg: SipLeg,
    encoder: OpusEncoder,
    /// G.711: the decimator to the 8 kHz the Opus encoder takes.
    narrowband: Option<(Decimator, [i16; 160])>,
    endpoint: EndpointId,
    pcm: [i16; FRAME_SAMPLES],
    opus: Vec<u8>,
    mix: [i16; FRAME_SAMPLES],
    /// The subscriber's queue the shared frame goes to.
    subscriber: Vec<Arc<[u8]>>,
    tx: Vec<u8>,
    published: u64,
}

impl BridgedLeg {
    fn new(kind: Kind, i: u32, now: Instant) -> Self {
        Self {
            leg: SipLeg::new(now, &negotiated(kind, PHONE, false), config(1_000 + i)).unwrap(),
            encoder: OpusEncoder::new(
                if kind == Kind::Pcmu { SampleRate::Hz8000 } else { SampleRate::Hz16000 },
                OpusEncoderConfig::default(),
            )
            .unwrap(),
            narrowband: (kind == Kind::Pcmu).then(|| (Decimator::new(), [0; 160])),
            endpoint: EndpointId(format!("browser-{i}").into()),
            pcm: [0; FRAME_SAMPLES],
            opus: vec![0; MAX_PACKET_BYTES],
            mix: [0; FRAME_SAMPLES],
            subscriber: Vec::with_capacity(BLOCK),
            tx: vec![0; MTU],
            published: 0,
        }
    }

    /// One tick; returns when the Opus frame was out and when the RTP packet was.
    fn tick(&mut self, now: Instant, f: usize, inputs: &Inputs, heard: &mut HeardDecoders) -> (Instant, Instant) {
        let phone: SocketAddr = PHONE.parse().unwrap();
        let _ = self.leg.handle_datagram(now, phone, &inputs.datagrams[f % inputs.datagrams.len()]);
        let status = self.leg.poll_audio(now, &mut self.pcm);
        if matches!(status, AudioStatus::Audio | AudioStatus::Concealed | AudioStatus::ComfortNoise) {
            let input: &[i16] = match &mut self.narrowband {
                Some((decimator, narrow)) => {
                    decimator.process(&self.pcm, narrow);
                    narrow
                }
                None => &self.pcm,
            };
            let n = self.encoder.encode(input, &mut self.opus).unwrap();
            self.subscriber.push(Arc::from(&self.opus[..n]));
            self.published += 1;
            if self.subscriber.len() == BLOCK {
                self.subscriber.clear();
            }
        }
        let published = Instant::now();
        let time = MediaTime::new(f as u64 * 960, Frequency::FORTY_EIGHT_KHZ);
        self.mix.fill(0);
        if let Some(pcm) = heard.decode(now, &self.endpoint, time, &inputs.browser[f % inputs.browser.len()]) {
            for (m, s) in self.mix.iter_mut().zip(pcm.iter()) {
                *m = m.saturating_add(*s);
            }
        }
        self.leg.send_audio(now, &self.mix);
        if self.leg.poll_timeout().is_some_and(|t| t <= now) {
            self.leg.handle_timeout(now);
        }
        while let Some(t) = self.leg.poll_transmit(&mut self.tx) {
            black_box(&self.tx[..t.len]);
        }
        while self.leg.poll_event().is_some() {}
        (published, Instant::now())
    }
}

/// The same leg's codec calls alone.
struct BareChain {
    kind: Kind,
    narrow_encoder: OpusEncoder,
    narrow_decoder: OpusDecoder,
    depacketizer: Depacketizer,
    packetizer: Packetizer,
    frames: PacketFrames,
    amr_decoder: AmrWbDecoder,
    amr_encoder: AmrWbEncoder,
    encoder: OpusEncoder,
    decoder: OpusDecoder,
    narrow: [i16; 160],
    narrow_back: [i16; 160],
    wide: [i16; FRAME_SAMPLES],
    back: [i16; FRAME_SAMPLES],
    bits: [u8; MAX_FRAME_BYTES],
    opus: [u8; MAX_PACKET_BYTES],
    payload: [u8; 160],
}

impl BareChain {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            narrow_encoder: OpusEncoder::new(SampleRate::Hz8000, OpusEncoderConfig::default()).unwrap(),
            narrow_decoder: OpusDecoder::new(SampleRate::Hz8000).unwrap(),
            depacketizer: Depacketizer::new(PayloadConfig::bandwidth_efficient()),
            packetizer: Packetizer::new(PayloadConfig::bandwidth_efficient()),
            frames: PacketFrames::new(),
            amr_decoder: AmrWbDecoder::new().unwrap(),
            amr_encoder: AmrWbEncoder::new(false).unwrap(),
            encoder: OpusEncoder::new(SampleRate::Hz16000, OpusEncoderConfig::default()).unwrap(),
            decoder: OpusDecoder::new(SampleRate::Hz16000).unwrap(),
            narrow: [0; 160],
            narrow_back: [0; 160],
            wide: [0; FRAME_SAMPLES],
            back: [0; FRAME_SAMPLES],
            bits: [0; MAX_FRAME_BYTES],
            opus: [0; MAX_PACKET_BYTES],
            payload: [0; 160],
        }
    }

    fn frame(&mut self, f: usize, inputs: &Inputs) {
        let browser = &inputs.browser[f % inputs.browser.len()];
        match self.kind {
            Kind::Pcmu => {
                g711::decode(Law::Mu, &inputs.pcmu[f % inputs.pcmu.len()], &mut self.narrow).unwrap();
                black_box(self.narrow_encoder.encode(&self.narrow, &mut self.opus).unwrap());
                self.narrow_decoder.decode(browser, &mut self.narrow_back).unwrap();
                g711::encode(Law::Mu, &self.narrow_back, &mut self.payload).unwrap();
            }
            Kind::AmrWbSrtp => {
                self.depacketizer.depacketize(&inputs.amr_be[f % inputs.amr_be.len()], &mut self.frames).unwrap();
                self.amr_decoder.decode(self.frames.get(0).unwrap(), &mut self.wide).unwrap();
                black_box(self.encoder.encode(&self.wide, &mut self.opus).unwrap());
                self.decoder.decode(browser, &mut self.back).unwrap();
                let encoded = self.amr_encoder.encode(&self.back, Mode::M8, &mut self.bits).unwrap();
                self.packetizer.packetize(Cmr::NoRequest, &[encoded.frame(&self.bits)], &mut self.payload).unwrap();
            }
        }
        black_box(&self.payload);
    }
}

/// CPU µs per leg-second of the bridge and of the bare chain for `n` legs over `frames` ticks
/// of virtual time, blocks interleaved.
fn throughput(kind: Kind, n: u32, frames: usize, inputs: &Inputs) -> (f64, f64) {
    let start = Instant::now();
    let mut legs: Vec<BridgedLeg> = (0..n).map(|i| BridgedLeg::new(kind, i, start)).collect();
    let mut bare: Vec<BareChain> = (0..n).map(|_| BareChain::new(kind)).collect();
    let mut heard = HeardDecoders::new();
    let (mut bridge_cpu, mut bare_cpu) = (Duration::ZERO, Duration::ZERO);
    let mut f = 0;
    while f < frames {
        let t0 = thread_cpu();
        for k in f..f + BLOCK {
            let now = start + TICK * k as u32;
            for leg in &mut legs {
                leg.tick(now, k, inputs, &mut heard);
            }
        }
        let t1 = thread_cpu();
        for k in f..f + BLOCK {
            for chain in &mut bare {
                chain.frame(k, inputs);
            }
        }
        let t2 = thread_cpu();
        // The first block warms up (jitter buffer filling, caches): not counted.
        if f > 0 {
            bridge_cpu += t1 - t0;
            bare_cpu += t2 - t1;
        }
        f += BLOCK;
    }
    let leg_seconds = f64::from(n) * (frames - BLOCK) as f64 * TICK.as_secs_f64();
    let published: u64 = legs.iter().map(|l| l.published).sum();
    assert!(published as f64 > 0.9 * f64::from(n) * frames as f64, "the legs published {published} frames");
    for leg in &legs {
        let stats = leg.leg.stats();
        assert!(stats.packets_received as usize >= frames * 9 / 10, "{stats:?}");
        assert_eq!(stats.auth_failures, 0);
    }
    (bridge_cpu.as_secs_f64() * 1e6 / leg_seconds, bare_cpu.as_secs_f64() * 1e6 / leg_seconds)
}

/// Real time: `n` legs paced by the wall clock for `ticks` ticks of 20 ms; (late frames, worst
/// lateness, latency percentiles per direction). As in the daemon, where each leg's interval
/// started when its call did, the legs' ticks are spread over the 20 ms (leg i at i·20/n ms).
fn real_time(kind: Kind, n: u32, ticks: usize, inputs: &Inputs) -> (usize, Duration, [Duration; 3], [Duration; 3]) {
    let start = Instant::now() + Duration::from_millis(50);
    let mut legs: Vec<BridgedLeg> = (0..n).map(|i| BridgedLeg::new(kind, i, start)).collect();
    let mut heard = HeardDecoders::new();
    let (mut late, mut worst) = (0, Duration::ZERO);
    let (mut to_webrtc, mut to_sip) = (Vec::new(), Vec::new());
    for k in 0..ticks {
        for (i, leg) in legs.iter_mut().enumerate() {
            let due = start + TICK * k as u32 + TICK * i as u32 / n;
            wait_until(due);
            // The packet and the browser frame of this tick arrived when it was due.
            let (published, sent) = leg.tick(due, k, inputs, &mut heard);
            let lateness = sent.saturating_duration_since(due);
            worst = worst.max(lateness);
            if lateness > TICK {
                late += 1;
            }
            if k >= 50 {
                let buffered = leg.leg.stats().target_delay;
                to_webrtc.push(buffered + published.saturating_duration_since(due));
                to_sip.push(sent.saturating_duration_since(due));
            }
        }
    }
    (late, worst, percentiles(&mut to_webrtc), percentiles(&mut to_sip))
}

/// Sleeps until shortly before `due`, then spins: a sleep overshoots by tens of microseconds,
/// which 150 legs a tick would add up to milliseconds.
fn wait_until(due: Instant) {
    if let Some(wait) = due.checked_duration_since(Instant::now())
        && wait > Duration::from_millis(2)
    {
        std::thread::sleep(wait - Duration::from_millis(1));
    }
    while Instant::now() < due {
        std::hint::spin_loop();
    }
}

fn percentiles(v: &mut [Duration]) -> [Duration; 3] {
    v.sort();
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    [at(0.5), at(0.99), at(1.0)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn main() {
    let quick = std::env::var_os("BRIDGE_BENCH_QUICK").is_some();
    let frames = if quick { 100 } else { 500 };
    println!("\n### Bridge legs: CPU µs per leg-second (one thread, Opus c5, each leg hearing one browser)\n");
    println!("| legs | codec | bridge µs/leg-s | bare chain µs/leg-s | bridge/bare | % of a core per leg |");
    println!("|---:|---|---:|---:|---:|---:|");
    for kind in [Kind::Pcmu, Kind::AmrWbSrtp] {
        let inputs = inputs(kind);
        for n in [1u32, 20, 150] {
            if quick && n == 150 {
                continue;
            }
            let (bridge, bare) = throughput(kind, n, frames, &inputs);
            println!(
                "| {n} | {} | {bridge:.0} | {bare:.0} | {:.3} | {:.2} % |",
                kind.name(),
                bridge / bare,
                bridge / 1e4
            );
        }
    }
    let n = 150;
    let ticks = if quick { 150 } else { 500 };
    let inputs = inputs(Kind::Pcmu);
    let (late, worst, up, down) = real_time(Kind::Pcmu, n, ticks, &inputs);
    println!("\n### Real time: {n} PCMU legs on one thread, {ticks} ticks of 20 ms\n");
    println!(
        "| late frames | worst lateness ms | phone→browser added p50 / p99 / max ms | browser→phone added p50 / p99 / max ms |"
    );
    println!("|---:|---:|---:|---:|");
    println!(
        "| {late} | {} | {} / {} / {} | {} / {} / {} |",
        ms(worst),
        ms(up[0]),
        ms(up[1]),
        ms(up[2]),
        ms(down[0]),
        ms(down[1]),
        ms(down[2])
    );
}
