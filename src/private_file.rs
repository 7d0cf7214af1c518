//! Files for secrets (the signing key, generated credentials): written whole, owner-only. A
//! leaf module, so that the state directory, the tokens and the store share it without
//! importing each other.

use std::io::Write as _;
use std::path::Path;

/// Writes `bytes` to a new file at `path` readable only by its owner (mode 0600), for secrets:
/// the signing key and generated credentials.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
