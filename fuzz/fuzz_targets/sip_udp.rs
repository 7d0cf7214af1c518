//! One UDP datagram through the SIP guard (`sip::stack::screen`: our message parser, the
//! 400/505/513/405 answers, the stack's parser on what passes). Asserts the parser's
//! parse → write → parse round trip, what passes and how answers are shaped.
//! The body is `interwork::fuzzing::sip_udp`, which `cargo test` also replays over the
//! committed corpus (tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| interwork::fuzzing::sip_udp(data));
