//! The SIP legs' media counters in `/metrics` (`interwork_media_leg_total{kind}`), kept live.
//!
//! Each leg task owns a [`LegCounters`] and publishes the growth of its counters every half
//! second and when it ends, so an SRTP attack or a leg losing packets shows while the call
//! lasts, not after. The counters are resolved once, when the metrics are made: a leg adds to
//! atomics and never takes the registry's lock.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;

/// The `kind` label of each counter, in the order of [`Counts`].
pub const KINDS: [&str; 12] = [
    "rtp_received",
    "rtp_sent",
    "rtp_lost",
    "srtp_auth_failed",
    "srtp_replayed",
    "foreign_source",
    "relatch_refused",
    "frames_concealed",
    "opus_published",
    "opus_dropped",
    "heard_late",
    "heard_overflow",
];

/// A leg's counters, in the order of [`KINDS`].
pub type Counts = [u64; KINDS.len()];

/// The shared counters every leg adds to.
#[derive(Clone, Debug, Default)]
pub struct MediaCounters {
    by_kind: [Counter; KINDS.len()],
    /// Time legs spent in their ticks (the transcoder's CPU).
    pub busy_seconds: Counter<f64, AtomicU64>,
}

impl MediaCounters {
    /// The counters `counter` gives for each kind of [`KINDS`], and the busy time.
    pub fn new(counter: impl Fn(&'static str) -> Counter, busy_seconds: Counter<f64, AtomicU64>) -> Self {
        Self { by_kind: KINDS.map(counter), busy_seconds }
    }
}

/// One leg's share: what it has published so far.
#[derive(Debug)]
pub struct LegCounters {
    shared: MediaCounters,
    published: Counts,
}

impl LegCounters {
    /// A leg that has published nothing yet.
    pub fn new(shared: MediaCounters) -> Self {
        Self { shared, published: [0; KINDS.len()] }
    }

    /// Adds the growth since the last call of the leg's `current` totals. A total that went
    /// down (RFC 3550's cumulative loss does, with duplicates) adds nothing until it passes its
    /// old value.
    pub fn publish(&mut self, current: &Counts) {
        for ((counter, published), now) in self.shared.by_kind.iter().zip(&mut self.published).zip(current) {
            if *now > *published {
                counter.inc_by(*now - *published);
                *published = *now;
            }
        }
    }

    /// The busy-time counter.
    pub fn busy_seconds(&self) -> &Counter<f64, AtomicU64> {
        &self.shared.busy_seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_published_once_and_a_total_going_down_adds_nothing() {
        let shared = MediaCounters::default();
        let mut a = LegCounters::new(shared.clone());
        let mut b = LegCounters::new(shared.clone());
        let mut counts = [0; KINDS.len()];
        counts[0] = 10;
        counts[2] = 3;
        a.publish(&counts);
        a.publish(&counts);
        b.publish(&counts);
        counts[0] = 15;
        counts[2] = 1;
        a.publish(&counts);
        counts[2] = 4;
        a.publish(&counts);
        assert_eq!(shared.by_kind[0].get(), 25);
        assert_eq!(shared.by_kind[2].get(), 7);
    }
}
