//! Arbitrary packet sequences through the RFC 4733 receiver. The body is `codecs::fuzzing::telephone_event_receive`, which
//! `cargo test` also replays over the committed corpus (codecs/tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| codecs::fuzzing::telephone_event_receive(data));
