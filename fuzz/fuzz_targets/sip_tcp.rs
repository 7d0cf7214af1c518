//! A SIP byte stream, split at arbitrary points, through the TCP framer the daemon runs
//! (`sip::framing::StreamFramer`), our parser on each framed message, and the replay's framer.
//! Asserts that framing does not depend on the split and the parser's round trip.
//! The body is `interwork::fuzzing::sip_tcp`, which `cargo test` also replays over the
//! committed corpus (tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| interwork::fuzzing::sip_tcp(data));
