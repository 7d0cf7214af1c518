//! One stream's RTP timeline as subscribers see it, across changes of its source.
//!
//! A publisher's frames carry its own RTP time, which starts at a random value and restarts at
//! another whenever the source changes: the browser reconnects and publishes again, a SIP leg of
//! a bridge-mode participant attaches anew, or the SSRC changes mid-stream. Subscribers keep one
//! outgoing stream per endpoint (str0m gives each its own SSRC and continuous sequence numbers),
//! so the RTP time written into it must stay continuous too, or the browser's jitter buffer
//! would see a jump of hours and stall. [`Timeline`] maps source time to output time by an
//! offset, and re-anchors the offset on a new source or on a jump, so that the output advances
//! by the wall-clock time elapsed.
//!
//! Sans-IO: time is an argument; no allocation.

use std::time::Instant;

use str0m::media::{Frequency, MediaTime};

/// A forward jump larger than this (in source time) is a new source, not loss: 10 s of audio.
const MAX_FORWARD_JUMP_SECS: u64 = 10;

/// Smallest step the output takes on a re-anchor: one 20 ms Opus frame at 48 kHz, so that two
/// frames never share an RTP time even when they arrive together.
const MIN_STEP_48K: u64 = 960;

/// Identifies one source incarnation; the forwarder bumps it when an endpoint's source changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceGeneration(pub u32);

/// Maps source RTP time to an endpoint-continuous output RTP time.
#[derive(Debug)]
pub struct Timeline {
    state: Option<Anchor>,
    rate: Frequency,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    generation: SourceGeneration,
    /// output = input + offset (wrapping in u64; both sides are str0m's extended times).
    offset: u64,
    last_in: u64,
    last_out: u64,
    last_wall: Instant,
}

impl Timeline {
    /// A timeline at `rate` (48 kHz for Opus).
    pub fn new(rate: Frequency) -> Self {
        Self { state: None, rate }
    }

    /// The output time of a frame with source time `input` from source `generation`, arriving
    /// at `now`.
    pub fn map(&mut self, now: Instant, generation: SourceGeneration, input: MediaTime) -> MediaTime {
        let input = input.rebase(self.rate).numer();
        let out = match self.state {
            None => input,
            Some(a) if a.generation == generation && !self.is_jump(a.last_in, input) => input.wrapping_add(a.offset),
            Some(a) => {
                // New source or a discontinuity: continue from the last output by the wall
                // time elapsed, at least one frame.
                let elapsed = now.saturating_duration_since(a.last_wall);
                let ticks = (elapsed.as_micros() as u64).saturating_mul(u64::from(self.rate.get())) / 1_000_000;
                a.last_out.wrapping_add(ticks.max(self.min_step()))
            }
        };
        let offset = out.wrapping_sub(input);
        self.state = Some(Anchor { generation, offset, last_in: input, last_out: out, last_wall: now });
        MediaTime::new(out, self.rate)
    }

    fn is_jump(&self, last_in: u64, input: u64) -> bool {
        // Backwards by more than a frame (a reordered packet is at most a few frames back) or
        // forward by more than MAX_FORWARD_JUMP_SECS.
        let max_forward = MAX_FORWARD_JUMP_SECS * u64::from(self.rate.get());
        if input >= last_in { input - last_in > max_forward } else { last_in - input > 50 * self.min_step() }
    }

    fn min_step(&self) -> u64 {
        MIN_STEP_48K * u64::from(self.rate.get()) / 48_000
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn t(v: u64) -> MediaTime {
        MediaTime::new(v, Frequency::FORTY_EIGHT_KHZ)
    }

    #[test]
    fn one_source_passes_through_with_its_offset() {
        let now = Instant::now();
        let mut tl = Timeline::new(Frequency::FORTY_EIGHT_KHZ);
        let g = SourceGeneration(0);
        assert_eq!(tl.map(now, g, t(1_000_000)).numer(), 1_000_000);
        assert_eq!(tl.map(now + Duration::from_millis(20), g, t(1_000_960)).numer(), 1_000_960);
        // Loss of 5 frames is kept as a gap, not closed.
        assert_eq!(tl.map(now + Duration::from_millis(120), g, t(1_005_760)).numer(), 1_005_760);
    }

    #[test]
    fn a_new_source_continues_by_wall_time() {
        let now = Instant::now();
        let mut tl = Timeline::new(Frequency::FORTY_EIGHT_KHZ);
        tl.map(now, SourceGeneration(0), t(500_000));
        // The publisher reconnects 2 s later with a random new base.
        let later = now + Duration::from_secs(2);
        let out = tl.map(later, SourceGeneration(1), t(9_000_000_000)).numer();
        assert_eq!(out, 500_000 + 96_000);
        // And then follows the new source frame by frame.
        let out2 = tl.map(later + Duration::from_millis(20), SourceGeneration(1), t(9_000_000_960)).numer();
        assert_eq!(out2, out + 960);
    }

    #[test]
    fn a_jump_within_one_source_is_smoothed_and_reorder_is_not() {
        let now = Instant::now();
        let mut tl = Timeline::new(Frequency::FORTY_EIGHT_KHZ);
        let g = SourceGeneration(3);
        tl.map(now, g, t(10_000_000));
        // A reordered frame one frame back keeps the mapping.
        assert_eq!(tl.map(now, g, t(9_999_040)).numer(), 9_999_040);
        tl.map(now, g, t(10_000_960));
        // A jump backwards by minutes (an SSRC change) continues by at least one frame.
        let out = tl.map(now + Duration::from_millis(1), g, t(5)).numer();
        assert_eq!(out, 10_000_960 + 960);
    }
}
