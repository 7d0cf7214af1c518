//! pcap/pcapng bytes through the replay's capture reader (`replay::capture::read`: link
//! layers, IP, UDP, TCP reassembly, SIP framing). Asserts time order and whole TCP messages.
//! The body is `interwork::fuzzing::capture`, which `cargo test` also replays over the
//! committed corpus (tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| interwork::fuzzing::capture(data));
