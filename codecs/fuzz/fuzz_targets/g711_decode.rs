//! G.711 decoding of arbitrary payloads. The body is `codecs::fuzzing::g711_decode`, which
//! `cargo test` also replays over the committed corpus (codecs/tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| codecs::fuzzing::g711_decode(data));
