//! The state directory: created on first start (mode 0700), checked for writing before anything
//! else starts, and home of the store, the node's signing key and generated credentials.
//!
//! A directory that cannot be created or written is an error at start with the path and the
//! reason, never a daemon that runs and loses what it is told.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::AccountConfig;
use crate::private_file::write_private_file;

/// File names inside the state directory.
pub const STORE_FILE: &str = "interwork.redb";
/// The node's generated ES256 key.
pub const KEY_FILE: &str = "signing-key.pem";
/// Generated account credentials.
pub const CREDENTIALS_FILE: &str = "credentials.json";

/// Length of a generated password: 24 characters of `[a-z0-9]`, about 124 bits.
const PASSWORD_LEN: usize = 24;

/// Why the state directory is unusable.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// It could not be created.
    #[error("cannot create the state directory {path}: {source}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// It exists but is not a directory.
    #[error("the state directory {0} is not a directory")]
    NotADirectory(PathBuf),
    /// Writing into it failed.
    #[error("the state directory {path} is not writable: {source}")]
    NotWritable {
        /// The directory.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The credentials file is unreadable.
    #[error("{path} is unreadable: {reason}")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// Mode of the state directory: owner only.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in it: owner read and write only.
pub const FILE_MODE: u32 = 0o600;

/// Creates the state directory when missing (mode [`DIR_MODE`]), tightens it and the files the
/// daemon keeps in it when they are open to group or others (logging each, with its old mode),
/// and proves the directory writable.
pub fn prepare_dir(dir: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.exists() && !dir.is_dir() {
        return Err(StateError::NotADirectory(dir.to_path_buf()));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|source| StateError::Create { path: dir.to_path_buf(), source })?;
    tighten(dir, DIR_MODE);
    for name in [STORE_FILE, KEY_FILE, CREDENTIALS_FILE] {
        let path = dir.join(name);
        if path.is_file() {
            tighten(&path, FILE_MODE);
        }
    }
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|source| StateError::NotWritable { path: dir.to_path_buf(), source })
}

/// Sets `path` to `mode` when group or others have any access to it; returns the old mode when
/// it changed. Failing to change it (a directory owned by someone else) is a warning: the daemon
/// still works, the operator is told.
fn tighten(path: &Path, mode: u32) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let old = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    if old & 0o077 == 0 {
        return None;
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        Ok(()) => {
            tracing::warn!(path = %path.display(), old = format!("{old:04o}"), new = format!("{mode:04o}"),
                "state was open to other users; its mode is tightened");
            Some(old)
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), mode = format!("{old:04o}"), error = %e,
                "state is open to other users and its mode cannot be changed");
            None
        }
    }
}

#[derive(Serialize, Deserialize, Default)]
struct CredentialsFile {
    accounts: BTreeMap<String, StoredCredentials>,
}

#[derive(Serialize, Deserialize, Clone)]
struct StoredCredentials {
    username: String,
    password: String,
}

/// Credentials newly generated at this start, to be shown once.
#[derive(Debug, PartialEq, Eq)]
pub struct Generated {
    /// Account id.
    pub account: String,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// Fills in the user names and passwords that the config leaves empty: from the credentials
/// file when an earlier start generated them, else freshly generated and saved (mode 0600).
/// Returns what was generated now.
pub fn complete_credentials(
    dir: &Path,
    accounts: &mut BTreeMap<String, AccountConfig>,
) -> Result<Vec<Generated>, StateError> {
    let path = dir.join(CREDENTIALS_FILE);
    let bad = |reason: String| StateError::Credentials { path: path.clone(), reason };
    let mut file: CredentialsFile = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => CredentialsFile::default(),
        Err(e) => return Err(bad(e.to_string())),
    };
    let mut generated = Vec::new();
    for (id, account) in accounts.iter_mut() {
        if !account.username.is_empty() && !account.password.is_empty() {
            continue;
        }
        let stored = file.accounts.entry(id.clone()).or_insert_with(|| {
            let creds = StoredCredentials {
                username: if account.username.is_empty() { id.clone() } else { account.username.clone() },
                password: crate::ids::random_id(PASSWORD_LEN),
            };
            generated.push(Generated {
                account: id.clone(),
                username: creds.username.clone(),
                password: creds.password.clone(),
            });
            creds
        });
        if account.username.is_empty() {
            account.username = stored.username.clone();
        }
        if account.password.is_empty() {
            account.password = stored.password.clone();
        }
    }
    if !generated.is_empty() {
        // Serializing a map of strings cannot fail.
        let text = serde_json::to_vec_pretty(&file).expect("credentials serialize");
        write_private_file(&path, &text).map_err(|e| bad(e.to_string()))?;
    }
    Ok(generated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_generated_once_then_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut accounts = BTreeMap::from([("default".to_string(), AccountConfig::default())]);
        let first = complete_credentials(dir.path(), &mut accounts).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].username, "default");
        assert_eq!(first[0].password.len(), PASSWORD_LEN);
        let mode = std::fs::metadata(dir.path().join(CREDENTIALS_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let mut again = BTreeMap::from([("default".to_string(), AccountConfig::default())]);
        assert!(complete_credentials(dir.path(), &mut again).unwrap().is_empty(), "nothing new to show");
        assert_eq!(again["default"].password, first[0].password);
    }

    #[test]
    fn configured_credentials_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut accounts =
            BTreeMap::from([("acme".to_string(), AccountConfig { username: "u".into(), password: "p".into() })]);
        assert!(complete_credentials(dir.path(), &mut accounts).unwrap().is_empty());
        assert_eq!(accounts["acme"].password, "p");
        assert!(!dir.path().join(CREDENTIALS_FILE).exists());
    }

    #[test]
    fn an_unusable_state_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(prepare_dir(&file), Err(StateError::NotADirectory(_))));
        assert!(matches!(prepare_dir(&file.join("below")), Err(StateError::Create { .. })));
        let fresh = dir.path().join("a/b");
        prepare_dir(&fresh).unwrap();
        assert!(fresh.is_dir());
    }

    #[test]
    fn the_directory_and_its_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("fresh");
        prepare_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);

        // An existing directory and files made open by someone else are tightened at start.
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        for name in [STORE_FILE, CREDENTIALS_FILE] {
            std::fs::write(open.join(name), b"x").unwrap();
            std::fs::set_permissions(open.join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        prepare_dir(&open).unwrap();
        assert_eq!(mode(&open), 0o700);
        assert_eq!(mode(&open.join(STORE_FILE)), 0o600);
        assert_eq!(mode(&open.join(CREDENTIALS_FILE)), 0o600);
        assert_eq!(tighten(&open, DIR_MODE), None, "nothing left to tighten");
    }

    #[test]
    fn a_corrupt_credentials_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CREDENTIALS_FILE), b"{not json").unwrap();
        let mut accounts = BTreeMap::from([("default".to_string(), AccountConfig::default())]);
        assert!(matches!(complete_credentials(dir.path(), &mut accounts), Err(StateError::Credentials { .. })));
    }
}
