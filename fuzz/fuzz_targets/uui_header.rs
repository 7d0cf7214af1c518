//! `User-to-User` header values (one per line) through `sip::uui::participant_token`.
//! Asserts that one joined header reads like several and the write → read round trip.
//! The body is `interwork::fuzzing::uui_header`, which `cargo test` also replays over the
//! committed corpus (tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| interwork::fuzzing::uui_header(data));
