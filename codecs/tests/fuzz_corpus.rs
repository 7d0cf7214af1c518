//! Replays the committed fuzz corpus (codecs/fuzz/corpus/<target>/) through the same entry
//! points the fuzz targets call, so every `cargo test` re-checks what fuzzing once found
//! interesting, without libFuzzer or a nightly flag.
#[path = "support/corpus.rs"]
mod corpus;

use std::path::PathBuf;

fn replay(target: &str, entry: fn(&[u8])) {
    corpus::replay(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus"), target, entry);
}

#[test]
fn octet_aligned_depacketizer_corpus() {
    replay("depacketize_octet_aligned", codecs::fuzzing::depacketize_octet_aligned);
}

#[test]
fn bandwidth_efficient_depacketizer_corpus() {
    replay("depacketize_bandwidth_efficient", codecs::fuzzing::depacketize_bandwidth_efficient);
}

#[test]
fn amrwb_decoder_corpus() {
    replay("amrwb_decode", codecs::fuzzing::amrwb_decode);
}

#[test]
fn opus_decoder_corpus() {
    replay("opus_decode", codecs::fuzzing::opus_decode);
}

#[test]
fn telephone_event_receiver_corpus() {
    replay("telephone_event_receive", codecs::fuzzing::telephone_event_receive);
}

#[test]
fn g711_decoder_corpus() {
    replay("g711_decode", codecs::fuzzing::g711_decode);
}
