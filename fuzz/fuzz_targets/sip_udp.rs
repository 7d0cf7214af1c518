//! One UDP datagram as the SIP transport reads it: our message parser, the 400/505 answer to
//! what it refuses, and the transaction layer (`sip::transaction`) on what it accepts. Asserts
//! the parser's round trip, how answers are shaped, and that no transaction outlives its timers.
//! The body is `interwork::fuzzing::sip_udp`, which `cargo test` also replays over the
//! committed corpus (tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| interwork::fuzzing::sip_udp(data));
