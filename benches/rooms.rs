//! What one change in the rooms costs as the node fills up: creating a session and a
//! participant and finding the next expiry (which the expiry task does after every creation),
//! with N participants and N/2 sessions already in the account. These should not grow with N.
//!
//! The second figure adds what the rooms' owner does after each change: publish an immutable
//! snapshot for readers (a clone of persistent maps, the previous one still held), whose
//! cost must not grow with N either.
//!
//! Run with `cargo bench --bench rooms` (release profile). Prints a table: µs per operation
//! (median over a bounded number of repetitions, one thread).

use std::time::{Duration, Instant};

use interwork::ids::AccountId;
use interwork::rooms::model::MediaType;
use interwork::rooms::{NewParticipant, Rooms, RoomsConfig};

fn config() -> RoomsConfig {
    RoomsConfig {
        lifetime: Duration::from_secs(9 * 3600),
        conference_lifetime: Duration::from_secs(24 * 3600),
        max_sessions: u32::MAX,
        max_participants: u32::MAX,
        max_participants_per_session: 100,
        demo_max_participants: 20,
        demo_lifetime: Duration::from_secs(900),
    }
}

fn new_participant() -> NewParticipant {
    NewParticipant {
        tag: None,
        callback_url: None,
        publish_permissions: vec![MediaType::Audio],
        device_api_version: None,
    }
}

/// Median µs of creating a session, creating a participant and reading the next expiry, with
/// `n` participants already there; with `snapshots`, each change is followed by a snapshot for
/// readers as the owner publishes it.
fn change_us(n: usize, snapshots: bool) -> f64 {
    let account = AccountId::from("default");
    let mut rooms = Rooms::new(config());
    let create = |rooms: &mut Rooms, now_ms: u64, session: bool| {
        let plan = if session {
            rooms.plan_create_session(&account, None, now_ms).unwrap().0
        } else {
            rooms.plan_create_participant(&account, new_participant(), now_ms).unwrap().0
        };
        for change in plan.changes {
            rooms.apply(change);
        }
    };
    // What readers hold: the last snapshot published.
    let mut published = rooms.clone();
    for i in 0..n {
        create(&mut rooms, i as u64, false);
        if i % 2 == 0 {
            create(&mut rooms, i as u64, true);
        }
    }
    let mut samples = Vec::new();
    // Bounded: 300 repetitions.
    for i in 0..300 {
        let t = Instant::now();
        create(&mut rooms, (n + i) as u64, true);
        if snapshots {
            published = rooms.clone();
        }
        create(&mut rooms, (n + i) as u64, false);
        if snapshots {
            published = rooms.clone();
        }
        std::hint::black_box(rooms.next_expiry_ms());
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    std::hint::black_box(&published);
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    println!(
        "| participants in the account | µs per session + participant + next expiry | with a snapshot after each change |"
    );
    println!("| ---: | ---: | ---: |");
    for n in [1_000, 10_000, 50_000] {
        println!("| {n} | {:.1} | {:.1} |", change_us(n, false), change_us(n, true));
    }
}
