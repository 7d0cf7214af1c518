//! A seeded, sans-IO network emulator for tests (STYLE §3): one direction of a link with
//! latency, jitter, random and bursty (Gilbert-Elliott) loss, duplication and reordering.

use std::time::{Duration, Instant};

/// What the link does to packets.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinkConfig {
    /// Base one-way delay.
    pub(crate) latency: Duration,
    /// Extra delay: `jitter * |N(0, 1)|` per packet.
    pub(crate) jitter: Duration,
    /// Independent loss probability.
    pub(crate) loss: f64,
    /// Gilbert-Elliott: (good → bad, bad → good) transition probabilities; all lost in bad.
    pub(crate) burst: Option<(f64, f64)>,
    /// Probability a packet is sent twice.
    pub(crate) duplicate: f64,
    /// Probability a packet is held back by 30–60 ms (reordering).
    pub(crate) reorder: f64,
}

impl LinkConfig {
    /// A clean link with only `latency`.
    pub(crate) fn latency(latency: Duration) -> Self {
        Self { latency, jitter: Duration::ZERO, loss: 0.0, burst: None, duplicate: 0.0, reorder: 0.0 }
    }
}

/// One direction of the emulated link.
#[derive(Debug)]
pub(crate) struct Link {
    config: LinkConfig,
    rng: Rng,
    bad: bool,
    queue: Vec<(Instant, u64, Vec<u8>)>,
    order: u64,
    /// Packets that entered the link.
    pub(crate) sent: u64,
    /// Packets the link dropped.
    pub(crate) dropped: u64,
}

impl Link {
    pub(crate) fn new(config: LinkConfig, seed: u64) -> Self {
        Self {
            config,
            rng: Rng(seed.wrapping_add(0x9E37_79B9_7F4A_7C15)),
            bad: false,
            queue: Vec::new(),
            order: 0,
            sent: 0,
            dropped: 0,
        }
    }

    /// Puts a datagram on the link at `now`.
    pub(crate) fn send(&mut self, now: Instant, datagram: &[u8]) {
        self.sent += 1;
        if let Some((to_bad, to_good)) = self.config.burst {
            let flip = self.rng.uniform();
            self.bad = if self.bad { flip >= to_good } else { flip < to_bad };
        }
        if self.bad || self.rng.uniform() < self.config.loss {
            self.dropped += 1;
            return;
        }
        let copies = if self.rng.uniform() < self.config.duplicate { 2 } else { 1 };
        for _ in 0..copies {
            let mut delay = self.config.latency + self.config.jitter.mul_f64(self.rng.gaussian().abs());
            if self.rng.uniform() < self.config.reorder {
                delay += Duration::from_millis(30 + (self.rng.uniform() * 30.0) as u64);
            }
            self.order += 1;
            self.queue.push((now + delay, self.order, datagram.to_vec()));
        }
    }

    /// The earliest datagram due at or before `until`, with its arrival time.
    pub(crate) fn receive_until(&mut self, until: Instant) -> Option<(Instant, Vec<u8>)> {
        let (index, _) = self
            .queue
            .iter()
            .enumerate()
            .filter(|(_, (at, _, _))| *at <= until)
            .min_by_key(|(_, (at, order, _))| (*at, *order))?;
        let (at, _, datagram) = self.queue.swap_remove(index);
        Some((at, datagram))
    }
}

/// SplitMix64: small, seeded, good enough for emulation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub(crate) fn gaussian(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-12);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}
