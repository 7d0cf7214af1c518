//! The shell around [`Rooms`]: one owner of the state, shared by the API handlers, SIP and media.
//!
//! Each operation plans under a short lock, commits the plan to the store, applies it, and
//! publishes its events after the lock is released. The lock is a plain mutex that is never held
//! across an `.await`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

use super::model::{Participant, Session, Subscriptions};
use super::{DemoJoin, NewParticipant, Plan, RoomEvent, Rooms, RoomsConfig, RoomsError};
use crate::ids::{AccountId, ParticipantId, SessionId};
use crate::store::{Store, StoreError};

/// How many events the change channel buffers for a slow listener before it lags.
const EVENT_CHANNEL_CAPACITY: usize = 4096;

/// Longest the expiry task sleeps before looking again, so that a wall-clock jump is noticed.
const EXPIRY_RECHECK: Duration = Duration::from_secs(60);

/// Why an operation failed: refused by the rules, or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum RoomsHandleError {
    /// Refused by the rules.
    #[error(transparent)]
    Rooms(#[from] RoomsError),
    /// The store failed; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Shared access to the rooms.
#[derive(Clone)]
pub struct RoomsHandle {
    inner: Arc<Inner>,
}

struct Inner {
    rooms: Mutex<Rooms>,
    store: Box<dyn Store>,
    events: broadcast::Sender<RoomEvent>,
}

impl RoomsHandle {
    /// Loads the rooms from `store`.
    pub fn open(config: RoomsConfig, store: Box<dyn Store>) -> Result<Self, StoreError> {
        let snapshot = store.load()?;
        let rooms = Rooms::from_snapshot(config, snapshot);
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        Ok(Self { inner: Arc::new(Inner { rooms: Mutex::new(rooms), store, events }) })
    }

    /// The change channel: every [`RoomEvent`] from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RoomEvent> {
        self.inner.events.subscribe()
    }

    /// Reads the rooms under the lock; `f` must not block.
    pub fn read<R>(&self, f: impl FnOnce(&Rooms) -> R) -> R {
        f(&self.lock())
    }

    /// Creates a session.
    pub fn create_session(&self, account: &AccountId, tag: Option<String>) -> Result<Session, RoomsHandleError> {
        self.run(|r| r.plan_create_session(account, tag, now_ms()))
    }

    /// Deletes a session; its participants leave.
    pub fn delete_session(&self, account: &AccountId, id: &SessionId) -> Result<(), RoomsHandleError> {
        self.run(|r| r.plan_delete_session(account, id).map(|p| (p, ())))
    }

    /// Creates a participant.
    pub fn create_participant(
        &self,
        account: &AccountId,
        new: NewParticipant,
    ) -> Result<Participant, RoomsHandleError> {
        self.run(|r| r.plan_create_participant(account, new, now_ms()))
    }

    /// Makes demo participants in the demo session of `account`, all or none
    /// ([`Rooms::plan_join_demo`]).
    pub fn join_demo(&self, account: &AccountId, new: Vec<NewParticipant>) -> Result<DemoJoin, RoomsHandleError> {
        self.run(|r| r.plan_join_demo(account, new, now_ms()))
    }

    /// Deletes a participant; it leaves its sessions.
    pub fn delete_participant(&self, account: &AccountId, id: &ParticipantId) -> Result<(), RoomsHandleError> {
        self.run(|r| r.plan_delete_participant(account, id).map(|p| (p, ())))
    }

    /// Adds a participant to a session with its subscriptions.
    pub fn add_to_session(
        &self,
        account: &AccountId,
        session: &SessionId,
        participant: &ParticipantId,
        subscriptions: Subscriptions,
    ) -> Result<(), RoomsHandleError> {
        self.run(|r| r.plan_add_to_session(account, session, participant, subscriptions).map(|p| (p, ())))
    }

    /// Replaces a member's subscriptions.
    pub fn set_subscriptions(
        &self,
        account: &AccountId,
        session: &SessionId,
        participant: &ParticipantId,
        subscriptions: Subscriptions,
    ) -> Result<(), RoomsHandleError> {
        self.run(|r| r.plan_set_subscriptions(account, session, participant, subscriptions).map(|p| (p, ())))
    }

    /// Removes a participant from a session.
    pub fn remove_from_session(
        &self,
        account: &AccountId,
        session: &SessionId,
        participant: &ParticipantId,
    ) -> Result<(), RoomsHandleError> {
        self.run(|r| r.plan_remove_from_session(account, session, participant).map(|p| (p, ())))
    }

    /// Gives a session the conference lifetime (called when a conference leg joins it).
    pub fn mark_conference(&self, session: &SessionId) -> Result<(), RoomsHandleError> {
        self.run(|r| Ok((r.plan_mark_conference(session).unwrap_or_default(), ())))
    }

    /// Removes the sessions and participants expired at `now_ms`; returns how many of each.
    pub fn expire(&self, now_ms: u64) -> Result<(usize, usize), RoomsHandleError> {
        self.run(|r| {
            let plan = r.plan_expiry(now_ms);
            let count = |f: fn(&RoomEvent) -> bool| plan.events.iter().filter(|e| f(e)).count();
            let sessions = count(|e| matches!(e, RoomEvent::SessionEnded { .. }));
            let participants = count(|e| matches!(e, RoomEvent::ParticipantDeleted { .. }));
            Ok((plan, (sessions, participants)))
        })
    }

    /// Removes sessions and participants as they expire, until `shutdown` resolves.
    pub async fn run_expiry(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        // Something made while this task sleeps may expire before it wakes (a demo participant
        // lives minutes): a new session or participant makes it look again.
        let mut created = self.subscribe();
        loop {
            let now = now_ms();
            let wait = self
                .read(Rooms::next_expiry_ms)
                .map_or(EXPIRY_RECHECK, |at| Duration::from_millis(at.saturating_sub(now)).min(EXPIRY_RECHECK));
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut shutdown => return,
                    () = &mut sleep => break,
                    event = created.recv() => match event {
                        Ok(RoomEvent::SessionCreated { .. } | RoomEvent::ParticipantCreated { .. })
                        | Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Ok(_) => {}
                        // The sender lives in `self`: closed cannot happen while this runs.
                        Err(broadcast::error::RecvError::Closed) => {
                            (&mut sleep).await;
                            break;
                        }
                    },
                }
            }
            match self.expire(now_ms()) {
                Ok((0, 0)) => {}
                Ok((sessions, participants)) => {
                    tracing::info!(sessions, participants, "expired sessions and participants removed")
                }
                Err(e) => tracing::warn!(error = %e, "expiring sessions failed; retrying later"),
            }
        }
    }

    fn run<T>(&self, plan: impl FnOnce(&Rooms) -> Result<(Plan, T), RoomsError>) -> Result<T, RoomsHandleError> {
        let events = {
            let mut rooms = self.lock();
            let (plan, out) = plan(&rooms)?;
            if !plan.changes.is_empty() {
                self.inner.store.commit(&plan.changes)?;
            }
            for change in plan.changes {
                rooms.apply(change);
            }
            (plan.events, out)
        };
        let (events, out) = events;
        for event in events {
            // Nobody listening is fine: events are notifications, the state is in the rooms.
            let _ = self.inner.events.send(event);
        }
        Ok(out)
    }

    fn lock(&self) -> MutexGuard<'_, Rooms> {
        // Plans do not mutate and `apply` does not panic on any input, so a poisoned lock still
        // guards consistent state.
        self.inner.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl crate::tokens::ParticipantDirectory for RoomsHandle {
    fn sessions_of(&self, participant: &ParticipantId) -> Option<Vec<SessionId>> {
        self.read(|r| crate::tokens::ParticipantDirectory::sessions_of(r, participant))
    }
}

/// Wall-clock time, Unix milliseconds: session times must survive a restart, so they are not
/// monotonic instants.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
