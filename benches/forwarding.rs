//! Forwarding cost: CPU time of the forwarder per forwarded stream-second, with N publishers
//! and M subscribers in one session, every subscriber hearing every publisher (N×M forwarded
//! streams of 50 Opus frames a second). The browsers are str0m peers simulated in virtual
//! time (`interwork::webrtc::sim`), so nothing but the forwarder's own calls is timed: ICE,
//! DTLS, SRTP unprotect of each publisher's packets and protect for each subscriber, RTCP, and
//! the fan-out. One thread, so wall time inside the calls is its CPU time.
//!
//! Run with `cargo bench --bench forwarding` (release profile). Prints a table.

use std::time::Duration;

use interwork::rooms::model::MediaType;
use interwork::webrtc::sim::Sim;

/// Opus at 32 kbit/s in 20 ms frames is about 80 bytes.
const FRAME_BYTES: usize = 80;
const WARMUP: Duration = Duration::from_secs(2);
const MEASURE: Duration = Duration::from_secs(10);

fn run(publishers: usize, subscribers: usize) -> (f64, u64, f64) {
    let mut sim = Sim::new(FRAME_BYTES);
    let mut pubs = Vec::new();
    for _ in 0..publishers {
        let i = sim.add_browser(vec![MediaType::Audio]);
        sim.deaf_listeners.push(sim.browsers[i].participant.clone());
        pubs.push(i);
    }
    for _ in 0..subscribers {
        sim.add_browser(vec![MediaType::Audio]);
    }
    for i in pubs {
        sim.publish(i);
    }
    sim.run_for(WARMUP);
    let forwarded_before = sim.sfu.counters().frames_forwarded;
    sim.sfu_time = Duration::ZERO;
    sim.run_for(MEASURE);
    let frames = sim.sfu.counters().frames_forwarded - forwarded_before;
    let stream_seconds = frames as f64 / 50.0;
    let expected = (publishers * subscribers) as f64 * MEASURE.as_secs_f64();
    let us = sim.sfu_time.as_secs_f64() * 1e6 / stream_seconds.max(1.0);
    (us, frames, stream_seconds / expected)
}

fn main() {
    println!(
        "| publishers N | subscribers M | forwarded streams N×M | CPU µs per stream-second | % of a core per stream | delivered |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for (n, m) in [(1, 1), (1, 10), (2, 10), (5, 20), (10, 10), (10, 40)] {
        let (us, _frames, delivered) = run(n, m);
        println!("| {n} | {m} | {} | {us:.1} | {:.3} % | {:.0} % |", n * m, us / 1e4, delivered * 100.0);
    }
}
