//! The cost of recomputing who receives which stream (`Sfu::refresh_subscriptions`), which the
//! forwarder does after every change in the rooms (a call joins, a subscription changes): N
//! participants, each a SIP leg that publishes a stream and hears the others of its session,
//! in sessions of 2 or all in one session. What a refresh costs should follow the size of the
//! sessions, not the number of participants on the node.
//!
//! Run with `cargo bench --bench subscriptions` (release profile). Prints a table: µs per full
//! refresh (median of repeated refreshes, one thread), µs per participant, and µs per refresh
//! of the one session a call event touches (what the forwarder does after a call joins or
//! leaves).

use std::time::{Duration, Instant};

use interwork::ids::{ParticipantId, SessionId};
use interwork::webrtc::sfu::{Scope, Sfu, SfuConfig};

/// Median µs of a refresh of `scope` with `participants` legs in sessions of `size`.
fn refresh_us(participants: usize, size: usize, one_session: bool) -> f64 {
    let config = SfuConfig::new("127.0.0.1:19000".parse().unwrap(), vec!["127.0.0.1:19000".parse().unwrap()]);
    let mut sfu = Sfu::new(config);
    let start = Instant::now();
    let members: Vec<(SessionId, ParticipantId)> = (0..participants)
        .map(|i| (SessionId::from(format!("s{}", i / size).as_str()), ParticipantId::from(format!("p{i}").as_str())))
        .collect();
    for (session, participant) in &members {
        sfu.add_external_publisher(participant.clone(), session.clone());
        sfu.add_external_subscriber(participant.clone(), session.clone());
    }
    // Everyone hears everyone of its session (the API's `sessionId` subscription).
    let hears = |_: &SessionId, l: &ParticipantId, p: &ParticipantId| l != p;
    sfu.refresh_subscriptions(start, Scope::All, hears);
    let first = [members[0].0.clone()];
    let scope = if one_session { Scope::Sessions(&first) } else { Scope::All };
    let mut samples = Vec::new();
    let budget = Instant::now() + Duration::from_secs(3);
    // Bounded: at most 200 refreshes or 3 s, at least 5.
    while samples.len() < 200 && (samples.len() < 5 || Instant::now() < budget) {
        let t = Instant::now();
        sfu.refresh_subscriptions(start, scope, hears);
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    while sfu.poll_event().is_some() {}
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    println!("| participants | sessions of | µs per full refresh | µs per participant | µs per one-session refresh |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for (participants, size) in [(500, 2), (2_000, 2), (5_000, 2), (2_000, 20), (500, 500), (1_000, 1_000)] {
        let us = refresh_us(participants, size, false);
        let one = refresh_us(participants, size, true);
        println!("| {participants} | {size} | {us:.0} | {:.2} | {one:.1} |", us / participants as f64);
    }
}
