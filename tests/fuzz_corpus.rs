//! Replays the committed fuzz corpus (fuzz/corpus/<target>/) through the same entry points the
//! fuzz targets call (`interwork::fuzzing`), so every `cargo test` re-checks what fuzzing once
//! found interesting, without libFuzzer or a nightly flag.
use std::path::PathBuf;

#[test]
fn every_fuzz_target_passes_its_committed_corpus() {
    for (target, entry) in interwork::fuzzing::TARGETS {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut count = 0;
        for file in entries {
            let path = file.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| entry(&data));
            assert!(result.is_ok(), "{target} panicked on {}", path.display());
            count += 1;
        }
        assert!(count > 0, "empty corpus for {target}");
    }
}
