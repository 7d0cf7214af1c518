//! Arbitrary text as a participant token through `tokens::Verifier::verify_participant`
//! with a fixed node key (no I/O). Asserts that an accepted token's claims mint and verify
//! again to the same participant, session, mode and issuer.
//! The body is `interwork::fuzzing::token_verify`, which `cargo test` also replays over the
//! committed corpus (tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| interwork::fuzzing::token_verify(data));
