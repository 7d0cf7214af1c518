//! Persistence of the rooms: sessions, participants and memberships (a participant in a session,
//! with its subscriptions) survive a restart.
//!
//! The rooms define what they need of a store ([`Store`], in `rooms::persist`): load
//! everything at start, then commit each operation's changes atomically before they take
//! effect in memory. This module implements it: [`RedbStore`] is the embedded default (one
//! redb file in the state directory); [`MemoryStore`] serves tests. A shared store
//! (PostgreSQL, Redis) for several nodes would be another implementation.

use std::path::Path;
use std::sync::Arc;

use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};

use crate::ids::{ParticipantId, SessionId};

#[cfg(test)]
mod tests;

pub use crate::rooms::persist::{Change, MemoryStore, Snapshot, Store, StoreError};

const SESSIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sessions");
const PARTICIPANTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("participants");
const MEMBERSHIPS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("memberships");

/// The embedded store: one redb file.
pub struct RedbStore {
    db: Arc<redb::Database>,
}

/// One write of a commit, encoded before it goes to the blocking pool: the table (an index
/// into [`TABLES`]), the key, and the record or none for a removal.
struct Write(usize, String, Option<Vec<u8>>);

/// The tables, in the order [`Write`] names them.
const TABLES: [TableDefinition<'_, &str, &[u8]>; 3] = [SESSIONS, PARTICIPANTS, MEMBERSHIPS];

impl Write {
    fn of(change: &Change) -> Self {
        match change {
            Change::PutSession(s) => Self(0, s.id.to_string(), Some(encode(s))),
            Change::DeleteSession(id) => Self(0, id.to_string(), None),
            Change::PutParticipant(p) => Self(1, p.id.to_string(), Some(encode(p))),
            Change::DeleteParticipant(id) => Self(1, id.to_string(), None),
            Change::PutMembership(m) => Self(2, membership_key(&m.session, &m.participant), Some(encode(m))),
            Change::DeleteMembership(s, p) => Self(2, membership_key(s, p), None),
        }
    }
}

impl RedbStore {
    /// Opens (or creates) the database at `path`. A corrupt file or one held by another process
    /// is an error, never an empty start.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open { path: path.to_path_buf(), reason };
        // The file is created owner-only (0600) before redb sees it: redb would create it with
        // the process umask (usually 0644), readable by every local user. An existing file is
        // opened as it is (no truncation); an empty one becomes a new database.
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(|e| open_err(e.to_string()))?;
        }
        let db = redb::Database::create(path).map_err(|e| open_err(e.to_string()))?;
        // Create the tables so that reads of a fresh file find them.
        let txn = db.begin_write().map_err(|e| open_err(e.to_string()))?;
        for def in TABLES {
            txn.open_table(def).map_err(|e| open_err(e.to_string()))?;
        }
        txn.commit().map_err(|e| open_err(e.to_string()))?;
        Ok(Self { db: Arc::new(db) })
    }

    fn load_now(db: &redb::Database) -> Result<Snapshot, StoreError> {
        let txn = db.begin_read().map_err(io)?;
        Ok(Snapshot {
            sessions: read_all(&txn, SESSIONS, "session")?,
            participants: read_all(&txn, PARTICIPANTS, "participant")?,
            memberships: read_all(&txn, MEMBERSHIPS, "membership")?,
        })
    }

    fn commit_now(db: &redb::Database, writes: Vec<Write>) -> Result<(), StoreError> {
        let txn = db.begin_write().map_err(io)?;
        {
            let mut tables = Vec::with_capacity(TABLES.len());
            for def in TABLES {
                tables.push(txn.open_table(def).map_err(io)?);
            }
            for Write(table, key, record) in writes {
                match record {
                    Some(value) => tables[table].insert(key.as_str(), value.as_slice()).map(drop),
                    None => tables[table].remove(key.as_str()).map(drop),
                }
                .map_err(io)?;
            }
        }
        txn.commit().map_err(io)
    }
}

#[async_trait::async_trait]
impl Store for RedbStore {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        let db = self.db.clone();
        blocking(move || Self::load_now(&db)).await
    }

    async fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        // Encoding is CPU work done here; the write and its fsync go to the blocking pool.
        let writes: Vec<Write> = changes.iter().map(Write::of).collect();
        let db = self.db.clone();
        blocking(move || Self::commit_now(&db, writes)).await
    }
}

/// Runs `f` on tokio's blocking pool: redb's reads and writes wait for the disk.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(StoreError::Io("the runtime is shutting down".into())),
    }
}

fn membership_key(session: &SessionId, participant: &ParticipantId) -> String {
    format!("{session}/{participant}")
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Our records are plain structs of strings and numbers: serialization cannot fail.
    serde_json::to_vec(value).expect("records serialize to JSON")
}

fn read_all<T: serde::de::DeserializeOwned>(
    txn: &redb::ReadTransaction,
    def: TableDefinition<'_, &str, &[u8]>,
    table: &'static str,
) -> Result<Vec<T>, StoreError> {
    let t = txn.open_table(def).map_err(io)?;
    let mut out = Vec::new();
    for row in t.iter().map_err(io)? {
        let (key, value) = row.map_err(io)?;
        let record = serde_json::from_slice(value.value()).map_err(|e| StoreError::Corrupt {
            table,
            key: key.value().to_string(),
            reason: e.to_string(),
        })?;
        out.push(record);
    }
    Ok(out)
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}
