//! Arbitrary AMR-WB frame sequences through one decoder. The body is `codecs::fuzzing::amrwb_decode`, which
//! `cargo test` also replays over the committed corpus (codecs/tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| codecs::fuzzing::amrwb_decode(data));
