//! When a leg ticks: just after its peer's packets arrive, not at a phase chosen at start.
//!
//! A phone sends a packet every 20 ms at a phase of its own. A leg that ticks at some other
//! phase leaves each packet waiting up to 20 ms before the jitter buffer even sees it, and that
//! wait is added to every frame the browsers and the other legs hear. The [`Pacer`] watches how
//! long the packets read at each tick waited (the kernel's arrival time against the tick's due
//! time) and, once a window of ticks agrees, moves the leg's tick to a [`MARGIN`] after the
//! packets' usual arrival, with room for the spread it saw.
//!
//! Moving a tick makes one period shorter or longer (by less than half of one); the frames stay
//! one per 20 ms of wall time otherwise, and a steady stream is moved once. New tick times are
//! rounded up to a grid of [`GRID`] from the worker's start so that a worker's legs still share
//! a few passes per period instead of waking it once per leg.
//!
//! Sans-IO: fed the due time of each tick and the arrival time of the last datagram it read.

use std::f64::consts::TAU;
use std::time::{Duration, Instant};

use super::bridge::TICK;

/// Ticks observed before the tick may move: 200 ms.
pub const WINDOW: u32 = 10;
/// How long after the packets' usual arrival (beyond the spread seen) the tick comes.
pub const MARGIN: Duration = Duration::from_millis(1);
/// The grid new tick times are rounded up to: at most 10 passes per period per worker.
pub const GRID: Duration = Duration::from_millis(2);

/// Follows one leg's packet arrivals; see the module docs.
#[derive(Debug)]
pub struct Pacer {
    /// The worker's start: the origin of the grid.
    epoch: Instant,
    /// The window's waits (seconds, folded into one period).
    waits: [f64; WINDOW as usize],
    seen: usize,
    ticks: u32,
    /// Times the tick moved.
    pub moves: u64,
}

impl Pacer {
    /// A leg of the worker started at `epoch`.
    pub fn new(epoch: Instant) -> Self {
        Self { epoch, waits: [0.0; WINDOW as usize], seen: 0, ticks: 0, moves: 0 }
    }

    /// A tick due at `due` ran; `arrival` is when the last datagram it read arrived (`None`: it
    /// read none). Returns where the next tick, due at `next`, should move, if it should.
    pub fn observe(&mut self, due: Instant, arrival: Option<Instant>, next: Instant) -> Option<Instant> {
        if let Some(arrival) = arrival {
            // How long it waited, folded into one period (a packet that came just after the
            // tick due waited almost a period for the next one).
            self.waits[self.seen] = fold(secs_between(arrival, due));
            self.seen += 1;
        }
        self.ticks += 1;
        if self.ticks < WINDOW {
            return None;
        }
        let moved = self.decide(next);
        self.seen = 0;
        self.ticks = 0;
        moved
    }

    /// The window is full: the move its waits ask for, if any.
    fn decide(&mut self, next: Instant) -> Option<Instant> {
        // Silence or DTX for most of the window: nothing to follow.
        if self.seen < WINDOW as usize / 2 {
            return None;
        }
        // The waits' mean on the circle of one period (waits of 19.9 and 0.1 ms average to 0).
        let waits = &self.waits[..self.seen];
        let (cos, sin) =
            waits.iter().map(|w| TAU * w / period()).fold((0.0, 0.0), |(c, s), a| (c + a.cos(), s + a.sin()));
        let mean = fold(sin.atan2(cos) / TAU * period());
        // The packets that waited least (came closest before the tick) set the margin.
        let spread = waits.iter().map(|w| centred(mean - w)).fold(0.0, f64::max);
        let wanted = spread + MARGIN.as_secs_f64();
        // Positive: the tick comes too long after the packets, and moves earlier.
        let error = centred(mean - wanted);
        if error.abs() < GRID.as_secs_f64() / 2.0 {
            return None;
        }
        let moved =
            if error > 0.0 { next - Duration::from_secs_f64(error) } else { next + Duration::from_secs_f64(-error) };
        // Rounded up, the tick may land where it is already.
        let moved = self.on_grid(moved);
        if moved == next {
            return None;
        }
        self.moves += 1;
        Some(moved)
    }

    /// `at` rounded up to the grid.
    fn on_grid(&self, at: Instant) -> Instant {
        let since = at.saturating_duration_since(self.epoch).as_nanos();
        let grid = GRID.as_nanos();
        let rounded = since.div_ceil(grid) * grid;
        self.epoch + Duration::from_nanos(u64::try_from(rounded).unwrap_or(u64::MAX))
    }
}

fn period() -> f64 {
    TICK.as_secs_f64()
}

/// `to - from` in seconds, negative when `to` is earlier.
fn secs_between(from: Instant, to: Instant) -> f64 {
    match to.checked_duration_since(from) {
        Some(d) => d.as_secs_f64(),
        None => -from.duration_since(to).as_secs_f64(),
    }
}

/// `t` folded into `[0, period)`.
fn fold(t: f64) -> f64 {
    t.rem_euclid(period())
}

/// `t` folded into `[-period/2, period/2)`.
fn centred(t: f64) -> f64 {
    (t + period() / 2.0).rem_euclid(period()) - period() / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Runs ticks every 20 ms (moved as the pacer says) against packets arriving every 20 ms at
    /// `offset` after the start, with `jitter(n)` added; returns each tick's wait for the packet
    /// it read (the last one arrived before it) and the pacer.
    fn run(ticks: u32, offset: Duration, jitter: impl Fn(u32) -> Duration, grid_offset: Duration) -> (Vec<f64>, Pacer) {
        let epoch = Instant::now();
        let start = epoch + Duration::from_secs(1);
        let mut pacer = Pacer::new(epoch - grid_offset);
        let mut due = start + 13 * MS;
        let mut waits = Vec::new();
        // Packets arrive in order (jitter under a period); `read` of them were read.
        let arrives = |k: u32| start + offset + TICK * k + jitter(k);
        let mut read = 0u32;
        for _ in 0..ticks {
            // The last packet that arrived by `due`, if a new one did.
            let mut arrival = None;
            while arrives(read) <= due {
                arrival = Some(arrives(read));
                read += 1;
            }
            if let Some(a) = arrival {
                waits.push(due.duration_since(a).as_secs_f64() * 1000.0);
            }
            let mut next = due + TICK;
            if let Some(moved) = pacer.observe(due, arrival, next) {
                let shift = secs_between(next, moved).abs();
                assert!(shift < 0.012, "a move is under half a period (plus the grid): {shift}");
                next = moved;
            }
            due = next;
        }
        (waits, pacer)
    }

    #[test]
    fn a_steady_stream_is_followed_once_to_just_after_its_arrival() {
        for offset_ms in [0, 3, 7, 12, 19] {
            let (waits, pacer) = run(200, offset_ms * MS, |_| Duration::ZERO, Duration::ZERO);
            let late = &waits[waits.len() - 50..];
            assert!(late.iter().all(|&w| (1.0..=3.0).contains(&w)), "offset {offset_ms} ms: waits {late:?}");
            assert!(pacer.moves <= 1, "offset {offset_ms} ms: moved {} times", pacer.moves);
        }
    }

    #[test]
    fn the_tick_lands_on_the_workers_grid() {
        let epoch = Instant::now();
        let pacer = Pacer::new(epoch);
        for ns in [0, 1, 1_999_999, 2_000_000, 2_000_001, 5_500_000] {
            let at = pacer.on_grid(epoch + Duration::from_nanos(ns));
            let since = at.duration_since(epoch).as_nanos();
            assert_eq!(since % GRID.as_nanos(), 0);
            assert!(since >= u128::from(ns) && since < u128::from(ns) + GRID.as_nanos());
        }
    }

    #[test]
    fn jitter_widens_the_margin_instead_of_chasing_each_packet() {
        // 0–4 ms of jitter: the tick settles after most of the packets and stays there; a
        // packet that comes after it waits for the next one (the jitter buffer's business).
        let jitter = |n: u32| Duration::from_micros(u64::from(n).wrapping_mul(2_654_435_761) % 4_000);
        let (waits, pacer) = run(500, 9 * MS, jitter, Duration::ZERO);
        let late = &waits[waits.len() - 200..];
        let caught = late.iter().filter(|&&w| w < 8.0).count();
        assert!(caught >= 180, "{caught} of 200 packets read within 8 ms: {late:?}");
        assert!(pacer.moves <= 3, "moved {} times", pacer.moves);
    }

    #[test]
    fn silence_leaves_the_tick_where_it_is() {
        let mut pacer = Pacer::new(Instant::now());
        let due = Instant::now();
        for n in 0..3 * WINDOW {
            let arrival = (n % 4 == 0).then(|| due - 9 * MS);
            assert_eq!(pacer.observe(due + TICK * n, arrival, due + TICK * (n + 1)), None);
        }
    }

    #[test]
    fn a_clock_that_drifts_is_followed_in_small_steps() {
        // The phone's clock 0.1 % fast: its packets come 20 µs earlier each period.
        let drift = |n: u32| Duration::from_secs(1) - Duration::from_micros(20 * u64::from(n));
        let (waits, pacer) = run(3_000, 5 * MS, drift, Duration::ZERO);
        assert!(waits[waits.len() - 200..].iter().all(|&w| w < 5.0), "the tick followed the drift");
        assert!(pacer.moves >= 2 && pacer.moves < 100, "moved {} times", pacer.moves);
    }
}
