//! What one SIP leg hears: the decoded audio of every publisher it hears, queued per publisher
//! and summed into one 20 ms frame per tick.
//!
//! Heard audio arrives decoded (once per publisher and band for every leg,
//! [`crate::media::heard`]) in the leg's band (8 kHz for G.711, 16 kHz for AMR-WB) whenever the forwarder delivers it; the leg's tick takes 20 ms from each queue.
//! Each queue holds at most [`PUBLISHER_QUEUE_FRAMES`] (older audio is dropped beyond that,
//! counted). A queue that ran dry (a frame late, not lost) adds nothing that tick, counted, and
//! keeps the frame that arrives late, so the queue grows by one frame to absorb the phase
//! between the forwarder's frames and the tick. A queue that kept a whole frame after every
//! tick for [`STANDING_WINDOW`] ticks has a standing backlog (a late frame long ago, a phase
//! that moved since): one frame of it is dropped, or the publisher would be heard 20 ms late
//! for the rest of the call. A publisher silent for [`PUBLISHER_GONE`] is forgotten.
//!
//! The sum is taken in 32 bits and saturated once, at the end: saturating after each addition
//! makes the result depend on the order of the publishers (a + b clipped, then − c, is not
//! a + b − c), so the same three voices would sound different to different legs.
//!
//! Sans-IO: fed `(now, endpoint, pcm)` and ticked with `now`; no allocation per frame once a
//! publisher's queue exists. The publishers are a short list (a conference is at most a few
//! dozen voices), walked once per tick: no map to hash into or clean up per frame.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::ids::EndpointId;
use crate::media::resample::{Band, WIDE_FRAME};

/// The frame length of the mix: 20 ms.
const TICK: Duration = Duration::from_millis(20);
/// A heard publisher silent this long is forgotten.
pub const PUBLISHER_GONE: Duration = Duration::from_secs(1);
/// Most 20 ms frames of decoded audio queued per heard publisher.
pub const PUBLISHER_QUEUE_FRAMES: usize = 4;
/// Ticks (500 ms) over which a queue that never ran below a whole frame after the mix loses
/// one frame.
pub const STANDING_WINDOW: u32 = 25;

/// The heard publishers' queues and the mix of the tick.
#[derive(Debug)]
pub struct Mixdown {
    heard: Vec<Heard>,
    /// Samples in a frame of the band mixed in.
    frame: usize,
    acc: [i32; WIDE_FRAME],
    mix: [i16; WIDE_FRAME],
    /// Ticks in which a heard publisher's frame was late (it added nothing that tick).
    pub late: u64,
    /// Decoded audio dropped because a publisher's queue was full, in deliveries.
    pub overflow: u64,
    /// Frames dropped from standing backlogs.
    pub trimmed: u64,
}

/// One heard publisher.
#[derive(Debug)]
struct Heard {
    endpoint: EndpointId,
    queue: VecDeque<i16>,
    last_frame: Instant,
    /// The fewest samples left after a mix in this window, and the window's ticks.
    standing: usize,
    ticks: u32,
}

impl Default for Mixdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Mixdown {
    /// Nobody heard yet; mixing at 16 kHz.
    pub fn new() -> Self {
        Self::in_band(Band::Wide)
    }

    /// Nobody heard yet; mixing in `band`.
    pub fn in_band(band: Band) -> Self {
        Self {
            heard: Vec::new(),
            frame: band.frame(),
            acc: [0; WIDE_FRAME],
            mix: [0; WIDE_FRAME],
            late: 0,
            overflow: 0,
            trimmed: 0,
        }
    }

    /// `endpoint`'s decoded audio (in the mix's band) delivered at `now`.
    pub fn push(&mut self, now: Instant, endpoint: EndpointId, pcm: &[i16]) {
        let capacity = PUBLISHER_QUEUE_FRAMES * self.frame;
        let at = match self.heard.iter().position(|h| h.endpoint == endpoint) {
            Some(at) => at,
            None => {
                let queue = VecDeque::with_capacity(capacity);
                self.heard.push(Heard { endpoint, queue, last_frame: now, standing: usize::MAX, ticks: 0 });
                self.heard.len() - 1
            }
        };
        let heard = &mut self.heard[at];
        heard.last_frame = now;
        let n = pcm.len();
        let excess = (heard.queue.len() + n).saturating_sub(capacity);
        if excess > 0 {
            heard.queue.drain(..excess.min(heard.queue.len()));
            self.overflow += 1;
        }
        heard.queue.extend(&pcm[n.saturating_sub(capacity)..]);
    }

    /// The tick at `now`: 20 ms of every heard publisher that has them, summed; silence when
    /// nobody is heard. The frame is in the mix's band.
    pub fn mix(&mut self, now: Instant) -> &[i16] {
        let frame = self.frame;
        let acc = &mut self.acc[..frame];
        acc.fill(0);
        let mut i = 0;
        while i < self.heard.len() {
            let h = &mut self.heard[i];
            let silent_for = now.saturating_duration_since(h.last_frame);
            if h.queue.len() >= frame {
                for (a, s) in acc.iter_mut().zip(h.queue.drain(..frame)) {
                    *a += i32::from(s);
                }
            } else if silent_for >= PUBLISHER_GONE {
                self.heard.swap_remove(i);
                continue;
            } else if silent_for <= 3 * TICK {
                // Late or paused: the frame that comes late is kept (the queue absorbs the
                // phase); a pause is just silence.
                self.late += 1;
            }
            h.standing = h.standing.min(h.queue.len());
            h.ticks += 1;
            if h.ticks == STANDING_WINDOW {
                if h.standing >= frame {
                    h.queue.drain(..frame);
                    self.trimmed += 1;
                }
                (h.standing, h.ticks) = (usize::MAX, 0);
            }
            i += 1;
        }
        for (m, a) in self.mix.iter_mut().zip(acc.iter()) {
            *m = (*a).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
        }
        &self.mix[..frame]
    }

    /// Publishers heard.
    pub fn len(&self) -> usize {
        self.heard.len()
    }

    /// Nobody is heard.
    pub fn is_empty(&self) -> bool {
        self.heard.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use codecs::opus::SampleRate;
    use codecs::pcm::analysis::tone_level_dbfs;
    use str0m::media::{Frequency, MediaTime};

    use super::*;
    use crate::media::heard::HeardDecoders;
    use crate::media::heard::tests::opus_frames;

    fn endpoint(name: &str) -> EndpointId {
        EndpointId(name.into())
    }

    /// A publisher whose frames come a tick ahead of the mix (one late frame long ago) loses
    /// that frame's worth of backlog once; one whose frames come just in time, or now and then
    /// late, keeps every frame.
    #[test]
    fn a_standing_backlog_is_dropped_once_and_a_jittery_queue_is_not() {
        let start = Instant::now();
        let mut m = Mixdown::new();
        let (ahead, on_time) = (endpoint("ahead"), endpoint("on-time"));
        m.push(start, ahead.clone(), &[1; WIDE_FRAME]);
        for n in 0..4 * STANDING_WINDOW {
            let now = start + TICK * n;
            m.push(now, ahead.clone(), &[1; WIDE_FRAME]);
            // Every fifth frame of the other comes after the mix (late), the next before.
            if n % 5 != 3 {
                m.push(now, on_time.clone(), &[2; WIDE_FRAME]);
            }
            let mix = m.mix(now).to_vec();
            if n % 5 == 4 {
                m.push(now, on_time.clone(), &[2; WIDE_FRAME]);
            }
            let queued = |m: &Mixdown, e: &EndpointId| m.heard.iter().find(|h| h.endpoint == *e).unwrap().queue.len();
            if n >= STANDING_WINDOW {
                assert_eq!(queued(&m, &ahead), 0, "tick {n}: the backlog is gone");
                assert!(mix.iter().all(|s| *s == 1 || *s == 3), "tick {n}: {}", mix[0]);
            }
            assert!(queued(&m, &on_time) <= WIDE_FRAME);
        }
        assert_eq!(m.trimmed, 1, "one frame of the standing backlog");
        assert!(m.late > 0);
    }

    #[test]
    fn the_sum_is_saturated_once_whatever_the_order() {
        // +30000, +30000 and −30000: 30000 in any order (saturating after each addition gives
        // 2767 when the two positives come first).
        let values = [30_000i16, 30_000, -30_000];
        let orders = [[0, 1, 2], [2, 0, 1], [0, 2, 1], [1, 0, 2]];
        let now = Instant::now();
        for order in orders {
            let mut m = Mixdown::new();
            for i in order {
                m.push(now, endpoint(&format!("p{i}")), &[values[i]; WIDE_FRAME]);
            }
            assert!(m.mix(now).iter().all(|s| *s == 30_000), "order {order:?}");
        }
        let mut m = Mixdown::new();
        m.push(now, endpoint("a"), &[30_000; WIDE_FRAME]);
        m.push(now, endpoint("b"), &[30_000; WIDE_FRAME]);
        assert!(m.mix(now).iter().all(|s| *s == i16::MAX), "one saturation at the end");
    }

    #[test]
    fn a_late_frame_is_kept_and_a_gone_publisher_forgotten() {
        let now = Instant::now();
        let mut m = Mixdown::new();
        let e = endpoint("a");
        m.push(now, e.clone(), &[100; WIDE_FRAME]);
        assert!(m.mix(now).iter().all(|s| *s == 100));
        assert!(m.mix(now + TICK).iter().all(|s| *s == 0), "dry: silence");
        assert_eq!(m.late, 1);
        m.push(now + TICK, e.clone(), &[200; WIDE_FRAME]);
        m.push(now + 2 * TICK, e.clone(), &[300; WIDE_FRAME]);
        assert!(m.mix(now + 2 * TICK).iter().all(|s| *s == 200), "the late frame first");
        assert!(m.mix(now + 3 * TICK).iter().all(|s| *s == 300));
        m.mix(now + 2 * TICK + PUBLISHER_GONE);
        assert!(m.is_empty());
    }

    #[test]
    fn a_full_queue_drops_its_oldest_audio() {
        let now = Instant::now();
        let mut m = Mixdown::new();
        let e = endpoint("a");
        for v in 1..=6 {
            m.push(now, e.clone(), &[v; WIDE_FRAME]);
        }
        assert_eq!(m.overflow, 2);
        assert!(m.mix(now).iter().all(|s| *s == 3), "frames 1 and 2 dropped");
    }

    /// A small deterministic generator for the schedules (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        }
    }

    /// A publisher: its tone, and its Opus frames as the forwarder hands them out.
    struct Publisher {
        endpoint: EndpointId,
        hz: f64,
        frames: Vec<Arc<[u8]>>,
    }

    fn publisher(name: &str, hz: f64, narrowband: bool, count: usize) -> Publisher {
        let rate = if narrowband { SampleRate::Hz8000 } else { SampleRate::Hz16000 };
        Publisher { endpoint: EndpointId(name.into()), hz, frames: opus_frames(rate, hz, -12.0, count) }
    }

    /// One delivery of the forwarder: a frame of a publisher to a subscriber (a SIP leg).
    #[derive(Clone)]
    struct Delivery {
        subscriber: usize,
        publisher: usize,
        frame: usize,
        data: Arc<[u8]>,
    }

    /// The conference core (decode once per publisher, one mixdown per leg) under adversarial
    /// delivery: deliveries of neighbouring frames interleaved across subscribers, packets
    /// delivered again in new buffers, whole ticks of deliveries held back and then burst.
    /// Three publishers (two G.711 legs' narrowband Opus at 1000 and 600 Hz, a browser's
    /// wideband Opus at 440 Hz), three legs each hearing the two others: every leg hears both
    /// at their level, itself not at all, and nothing clips. The fault of issue 11 (a frame
    /// decoded again when its delivery to a second leg came after the publisher's next frame,
    /// or in a new buffer) put one leg's 1000 Hz at full scale.
    #[test]
    fn every_leg_hears_every_other_at_its_level_under_adversarial_delivery() {
        const FRAMES: usize = 150;
        let publishers = [
            publisher("leg-a", 1000.0, true, FRAMES),
            publisher("leg-b", 600.0, true, FRAMES),
            publisher("web", 440.0, false, FRAMES),
        ];
        // Leg i hears every publisher but the i-th.
        let hears = |leg: usize, p: usize| leg != p;
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut decoders = HeardDecoders::new();
            let mut legs: Vec<Mixdown> = (0..3).map(|_| Mixdown::new()).collect();
            let mut heard: Vec<Vec<i16>> = vec![Vec::new(); 3];
            let mut pending: Vec<Delivery> = Vec::new();
            let start = Instant::now();
            for tick in 0..FRAMES {
                let now = start + TICK * tick as u32;
                for (p, publisher) in publishers.iter().enumerate() {
                    for leg in (0..3).filter(|l| hears(*l, p)) {
                        let data = publisher.frames[tick].clone();
                        pending.push(Delivery { subscriber: leg, publisher: p, frame: tick, data });
                        if rng.below(20) == 0 {
                            let again: Arc<[u8]> = Arc::from(&publisher.frames[tick][..]);
                            pending.push(Delivery { subscriber: leg, publisher: p, frame: tick, data: again });
                        }
                    }
                }
                // Held back one tick in five, then delivered in an order that interleaves
                // neighbouring frames across legs.
                if tick + 1 == FRAMES || rng.below(5) != 0 {
                    for i in (1..pending.len()).rev() {
                        pending.swap(i, rng.below(i + 1));
                    }
                    // Each leg still gets one publisher's frames in order (the forwarder's
                    // channel to a leg is FIFO): restore that order per (leg, publisher).
                    pending.sort_by_key(|d| (d.subscriber, d.publisher, d.frame));
                    let mut interleaved: Vec<Delivery> = Vec::new();
                    let mut by_leg: Vec<Vec<Delivery>> = vec![Vec::new(); 3];
                    for d in pending.drain(..) {
                        by_leg[d.subscriber].push(d);
                    }
                    while by_leg.iter().any(|q| !q.is_empty()) {
                        let candidates: Vec<usize> = (0..3).filter(|l| !by_leg[*l].is_empty()).collect();
                        let leg = candidates[rng.below(candidates.len())];
                        interleaved.push(by_leg[leg].remove(0));
                    }
                    for d in interleaved {
                        let publisher = &publishers[d.publisher];
                        let time = MediaTime::new(48_000 + d.frame as u64 * 960, Frequency::FORTY_EIGHT_KHZ);
                        if let Some(pcm) = decoders.decode(now, &publisher.endpoint, time, &d.data) {
                            legs[d.subscriber].push(now, publisher.endpoint.clone(), &pcm);
                        }
                    }
                }
                for (leg, out) in legs.iter_mut().zip(&mut heard) {
                    out.extend_from_slice(leg.mix(now));
                }
            }
            for (leg, pcm) in heard.iter().enumerate() {
                let last = &pcm[pcm.len() - 16_000..];
                let clipped = last.iter().filter(|s| s.unsigned_abs() >= 32_000).count();
                assert_eq!(clipped, 0, "seed {seed}: leg {leg} clips");
                for (p, publisher) in publishers.iter().enumerate() {
                    let level = tone_level_dbfs(last, 16_000, publisher.hz);
                    if hears(leg, p) {
                        assert!(
                            level > -21.0 && level < -12.0,
                            "seed {seed}: leg {leg} hears {} Hz at {level:.1} dBFS",
                            publisher.hz
                        );
                    } else {
                        assert!(level < -50.0, "seed {seed}: leg {leg} hears itself at {level:.1} dBFS");
                    }
                }
            }
            assert_eq!(decoders.frames_decoded, (3 * FRAMES) as u64, "seed {seed}: each frame decoded once");
        }
    }
}
