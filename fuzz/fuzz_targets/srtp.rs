//! SRTP/SRTCP datagrams, raw or protected by the peer with fixed keys (and maybe with a bit
//! flipped), through `media::srtp::SrtpSession` unprotect and an SRTP SIP leg. Asserts that
//! untouched packets decrypt to their plain text and altered ones are refused.
//! The body is `interwork::fuzzing::srtp`, which `cargo test` also replays over the
//! committed corpus (tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| interwork::fuzzing::srtp(data));
