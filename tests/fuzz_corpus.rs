//! Replays the committed fuzz corpus (fuzz/corpus/<target>/) through the same entry points the
//! fuzz targets call (`interwork::fuzzing`), so every `cargo test` re-checks what fuzzing once
//! found interesting, without libFuzzer or a nightly flag.
#[path = "../codecs/tests/support/corpus.rs"]
mod corpus;

use std::path::PathBuf;

#[test]
fn every_fuzz_target_passes_its_committed_corpus() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, entry) in interwork::fuzzing::TARGETS {
        corpus::replay(&root, target, entry);
    }
}
