//! RFC 4867 octet-aligned depacketizing of arbitrary payloads. The body is `codecs::fuzzing::depacketize_octet_aligned`, which
//! `cargo test` also replays over the committed corpus (codecs/tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| codecs::fuzzing::depacketize_octet_aligned(data));
