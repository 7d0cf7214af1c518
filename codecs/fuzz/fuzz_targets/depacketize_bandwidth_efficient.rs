//! RFC 4867 bandwidth-efficient depacketizing of arbitrary payloads. The body is `codecs::fuzzing::depacketize_bandwidth_efficient`, which
//! `cargo test` also replays over the committed corpus (codecs/tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| codecs::fuzzing::depacketize_bandwidth_efficient(data));
