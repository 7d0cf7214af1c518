//! The RFC 4733 receiver fed arbitrary (time, timestamp, payload) sequences: every event
//! that begins ends at most once, and nothing panics.
#![no_main]

use std::time::{Duration, Instant};

use codecs::rfc4733::{ReceivedEvent, TelephoneEventReceiver};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut receiver = TelephoneEventReceiver::new();
    let (mut began, mut ended) = (0usize, 0usize);
    // Records of 11 bytes: 2 bytes of elapsed ms, 4 of timestamp, 1 of payload length, 4 of payload.
    for record in data.chunks(11) {
        let elapsed = record
            .get(..2)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        let now = start + Duration::from_millis(u64::from(elapsed));
        let timestamp = record
            .get(2..6)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let len = record.get(6).map_or(0, |&l| usize::from(l % 6));
        let payload = record.get(7..).unwrap_or(&[]);
        let _ = receiver.handle_packet(now, timestamp, &payload[..len.min(payload.len())]);
        if let Some(deadline) = receiver.poll_timeout() {
            if elapsed % 3 == 0 {
                receiver.handle_timeout(deadline);
            }
        }
        while let Some(event) = receiver.poll_event() {
            match event {
                ReceivedEvent::Began { .. } => began += 1,
                ReceivedEvent::Ended { .. } => ended += 1,
            }
        }
        assert!(
            ended <= began && began <= ended + 1,
            "began {began}, ended {ended}"
        );
    }
});
