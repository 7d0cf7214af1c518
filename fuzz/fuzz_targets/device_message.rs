//! A device WebSocket text message through the signaling decoder
//! (`ClientMessage`) and the error reply. Asserts the decode → write → decode round trip.
//! The body is `interwork::fuzzing::device_message`, which `cargo test` also replays over the
//! committed corpus (tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| interwork::fuzzing::device_message(data));
