//! Persistence of the rooms: sessions, participants and memberships (a participant in a session,
//! with its subscriptions) survive a restart.
//!
//! The rooms define what they need of a store ([`Store`], in `rooms::persist`): load
//! everything at start, then commit each operation's changes atomically before they take
//! effect in memory. This module implements it: [`RedbStore`] is the embedded default (one
//! redb file in the state directory); [`MemoryStore`] serves tests. A shared store
//! (PostgreSQL, Redis) for several nodes would be another implementation.

use std::path::Path;
use std::sync::Mutex;

use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};

use crate::ids::{ParticipantId, SessionId};

#[cfg(test)]
mod tests;

pub use crate::rooms::persist::{Change, Snapshot, Store, StoreError};

const SESSIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sessions");
const PARTICIPANTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("participants");
const MEMBERSHIPS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("memberships");

/// The embedded store: one redb file.
pub struct RedbStore {
    db: redb::Database,
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
        for def in [SESSIONS, PARTICIPANTS, MEMBERSHIPS] {
            txn.open_table(def).map_err(|e| open_err(e.to_string()))?;
        }
        txn.commit().map_err(|e| open_err(e.to_string()))?;
        Ok(Self { db })
    }
}

impl Store for RedbStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        Ok(Snapshot {
            sessions: read_all(&txn, SESSIONS, "session")?,
            participants: read_all(&txn, PARTICIPANTS, "participant")?,
            memberships: read_all(&txn, MEMBERSHIPS, "membership")?,
        })
    }

    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut sessions = txn.open_table(SESSIONS).map_err(io)?;
            let mut participants = txn.open_table(PARTICIPANTS).map_err(io)?;
            let mut memberships = txn.open_table(MEMBERSHIPS).map_err(io)?;
            for change in changes {
                match change {
                    Change::PutSession(s) => {
                        sessions.insert(s.id.as_str(), encode(s).as_slice()).map_err(io)?;
                    }
                    Change::DeleteSession(id) => {
                        sessions.remove(id.as_str()).map_err(io)?;
                    }
                    Change::PutParticipant(p) => {
                        participants.insert(p.id.as_str(), encode(p).as_slice()).map_err(io)?;
                    }
                    Change::DeleteParticipant(id) => {
                        participants.remove(id.as_str()).map_err(io)?;
                    }
                    Change::PutMembership(m) => {
                        let key = membership_key(&m.session, &m.participant);
                        memberships.insert(key.as_str(), encode(m).as_slice()).map_err(io)?;
                    }
                    Change::DeleteMembership(s, p) => {
                        memberships.remove(membership_key(s, p).as_str()).map_err(io)?;
                    }
                }
            }
        }
        txn.commit().map_err(io)
    }
}

/// A store in memory, for tests and for running without persistence.
#[derive(Default)]
pub struct MemoryStore {
    snapshot: Mutex<Snapshot>,
}

impl Store for MemoryStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(self.lock().clone())
    }

    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        let mut snap = self.lock();
        for change in changes {
            match change {
                Change::PutSession(s) => {
                    snap.sessions.retain(|x| x.id != s.id);
                    snap.sessions.push(s.clone());
                }
                Change::DeleteSession(id) => snap.sessions.retain(|x| &x.id != id),
                Change::PutParticipant(p) => {
                    snap.participants.retain(|x| x.id != p.id);
                    snap.participants.push(p.clone());
                }
                Change::DeleteParticipant(id) => snap.participants.retain(|x| &x.id != id),
                Change::PutMembership(m) => {
                    snap.memberships.retain(|x| !(x.session == m.session && x.participant == m.participant));
                    snap.memberships.push(m.clone());
                }
                Change::DeleteMembership(s, p) => {
                    snap.memberships.retain(|x| !(&x.session == s && &x.participant == p));
                }
            }
        }
        Ok(())
    }
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        // A panic while holding this lock cannot leave a half-applied snapshot worse than the
        // panic itself; keep serving.
        self.snapshot.lock().unwrap_or_else(|e| e.into_inner())
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
