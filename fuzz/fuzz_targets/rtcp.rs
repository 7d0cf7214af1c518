//! Compound RTCP datagrams (records of delay and bytes) through `media::rtcp::parse_compound`
//! and a plain-RTP SIP leg. Asserts the report write → parse round trip.
//! The body is `interwork::fuzzing::rtcp`, which `cargo test` also replays over the
//! committed corpus (tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| interwork::fuzzing::rtcp(data));
