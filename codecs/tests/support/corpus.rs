//! Replays a committed fuzz corpus directory through a fuzz target's entry point: shared by
//! the corpus tests of the codecs crate and of interwork (included by path).

use std::path::Path;

/// Feeds every file of `root/<target>/` to `entry`; fails on a panic or an empty corpus.
pub(crate) fn replay(root: &Path, target: &str, entry: fn(&[u8])) {
    let dir = root.join(target);
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
