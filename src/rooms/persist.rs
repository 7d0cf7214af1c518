//! What the rooms need of persistence, defined here so that the rooms depend on no store: the
//! [`Store`] trait, the [`Change`]s a plan commits and the [`Snapshot`] loaded at start.
//! `crate::store` implements it with redb; [`MemoryStore`], the reference implementation in
//! memory, serves tests.

use std::path::PathBuf;
use std::sync::Mutex;

use crate::ids::{ParticipantId, SessionId};
use crate::rooms::model::{Membership, Participant, Session};

/// Why the store failed. Every variant is fatal at start; during operation the request fails
/// with 500 and memory stays as it was.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened: corrupt, locked by another process, unreadable.
    #[error("cannot open the state database {path}: {reason}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        reason: String,
    },
    /// A read or write failed.
    #[error("state database: {0}")]
    Io(String),
    /// A stored record does not decode: the file was written by something else.
    #[error("state database holds an unreadable {table} record {key:?}: {reason}")]
    Corrupt {
        /// Table of the record.
        table: &'static str,
        /// Key of the record.
        key: String,
        /// What failed.
        reason: String,
    },
}

/// Everything the store holds, as loaded at start.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    /// Every session.
    pub sessions: Vec<Session>,
    /// Every participant.
    pub participants: Vec<Participant>,
    /// Every participant-in-session record.
    pub memberships: Vec<Membership>,
}

/// One change to the stored state.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Create or replace a session.
    PutSession(Session),
    /// Remove a session (its memberships are removed by their own changes).
    DeleteSession(SessionId),
    /// Create or replace a participant.
    PutParticipant(Participant),
    /// Remove a participant.
    DeleteParticipant(ParticipantId),
    /// Create or replace a participant's membership of a session.
    PutMembership(Membership),
    /// Remove a participant from a session.
    DeleteMembership(SessionId, ParticipantId),
}

/// Where the rooms keep their state. Async, because a commit waits for a disk or, with several
/// nodes, for a database across the network: the rooms' owner awaits it and the implementation
/// keeps blocking work off the async workers (the redb store syncs on tokio's blocking pool).
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Reads everything.
    async fn load(&self) -> Result<Snapshot, StoreError>;
    /// Applies `changes` atomically: all or none.
    async fn commit(&self, changes: &[Change]) -> Result<(), StoreError>;
}

/// A store in memory, for tests and for running without persistence.
#[derive(Default)]
pub struct MemoryStore {
    snapshot: Mutex<Snapshot>,
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(self.lock().clone())
    }

    async fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
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
