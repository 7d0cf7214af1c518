//! Arbitrary packets through the Opus decoder, with FEC and PLC. The body is `codecs::fuzzing::opus_decode`, which
//! `cargo test` also replays over the committed corpus (codecs/tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| codecs::fuzzing::opus_decode(data));
