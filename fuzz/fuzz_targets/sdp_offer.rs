//! An SDP offer answered under a fixed local policy (`sip::sdp::answer`), and the same
//! bytes as the answer to our late offers (`accept_answer`). Asserts that our answer reads
//! back as what was agreed and that an unchanged re-offer gets the same answer.
//! The body is `interwork::fuzzing::sdp_offer`, which `cargo test` also replays over the
//! committed corpus (tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| interwork::fuzzing::sdp_offer(data));
