//! RTP datagrams (records of delay and bytes) through `media::rtp::RtpPacket::parse` and a
//! plain-RTP SIP leg. Asserts the header write → parse round trip.
//! The body is `interwork::fuzzing::rtp`, which `cargo test` also replays over the
//! committed corpus (tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| interwork::fuzzing::rtp(data));
