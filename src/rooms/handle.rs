//! The shell around [`Rooms`]: one owner of the state, shared by the API handlers, SIP and media.
//!
//! A change is planned under a short lock on the rooms, committed to the store with no lock on
//! the rooms held (readers — the forwarder, SIP, the API's GETs — never wait for a disk), then
//! applied under a second short lock, and its events are published after. Changes run one at a
//! time (the writer lock), so nothing changes between a plan and its application, and a change
//! the store refused changes nothing. Changes run on tokio's blocking pool, never on the async
//! workers: the store syncs to disk. The rooms lock is a plain mutex never held across an
//! `.await` nor across a commit.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

use super::model::{Participant, Session, Subscriptions};
use super::persist::{Store, StoreError};
use super::{DemoJoin, NewParticipant, Plan, RoomEvent, Rooms, RoomsConfig, RoomsError};
use crate::ids::{AccountId, ParticipantId, SessionId};

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
    /// Held by the one change in progress, across its commit: only writers take it.
    writer: Mutex<()>,
    store: Box<dyn Store>,
    events: broadcast::Sender<RoomEvent>,
}

impl RoomsHandle {
    /// Loads the rooms from `store`.
    pub fn open(config: RoomsConfig, store: Box<dyn Store>) -> Result<Self, StoreError> {
        let snapshot = store.load()?;
        let rooms = Rooms::from_snapshot(config, snapshot);
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        Ok(Self { inner: Arc::new(Inner { rooms: Mutex::new(rooms), writer: Mutex::new(()), store, events }) })
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
    pub async fn create_session(&self, account: &AccountId, tag: Option<String>) -> Result<Session, RoomsHandleError> {
        let account = account.clone();
        self.run(move |r| r.plan_create_session(&account, tag, now_ms())).await
    }

    /// Deletes a session; its participants leave.
    pub async fn delete_session(&self, account: &AccountId, id: &SessionId) -> Result<(), RoomsHandleError> {
        let (account, id) = (account.clone(), id.clone());
        self.run(move |r| r.plan_delete_session(&account, &id).map(|p| (p, ()))).await
    }

    /// Creates a participant.
    pub async fn create_participant(
        &self,
        account: &AccountId,
        new: NewParticipant,
    ) -> Result<Participant, RoomsHandleError> {
        let account = account.clone();
        self.run(move |r| r.plan_create_participant(&account, new, now_ms())).await
    }

    /// Makes demo participants in the demo session of `account`, all or none
    /// ([`Rooms::plan_join_demo`]).
    pub async fn join_demo(&self, account: &AccountId, new: Vec<NewParticipant>) -> Result<DemoJoin, RoomsHandleError> {
        let account = account.clone();
        self.run(move |r| r.plan_join_demo(&account, new, now_ms())).await
    }

    /// Deletes a participant; it leaves its sessions.
    pub async fn delete_participant(&self, account: &AccountId, id: &ParticipantId) -> Result<(), RoomsHandleError> {
        let (account, id) = (account.clone(), id.clone());
        self.run(move |r| r.plan_delete_participant(&account, &id).map(|p| (p, ()))).await
    }

    /// Adds a participant to a session with its subscriptions.
    pub async fn add_to_session(
        &self,
        account: &AccountId,
        session: &SessionId,
        participant: &ParticipantId,
        subscriptions: Subscriptions,
    ) -> Result<(), RoomsHandleError> {
        let (account, session, participant) = (account.clone(), session.clone(), participant.clone());
        self.run(move |r| r.plan_add_to_session(&account, &session, &participant, subscriptions).map(|p| (p, ()))).await
    }

    /// Replaces a member's subscriptions.
    pub async fn set_subscriptions(
        &self,
        account: &AccountId,
        session: &SessionId,
        participant: &ParticipantId,
        subscriptions: Subscriptions,
    ) -> Result<(), RoomsHandleError> {
        let (account, session, participant) = (account.clone(), session.clone(), participant.clone());
        self.run(move |r| r.plan_set_subscriptions(&account, &session, &participant, subscriptions).map(|p| (p, ())))
            .await
    }

    /// Removes a participant from a session.
    pub async fn remove_from_session(
        &self,
        account: &AccountId,
        session: &SessionId,
        participant: &ParticipantId,
    ) -> Result<(), RoomsHandleError> {
        let (account, session, participant) = (account.clone(), session.clone(), participant.clone());
        self.run(move |r| r.plan_remove_from_session(&account, &session, &participant).map(|p| (p, ()))).await
    }

    /// Gives a session the conference lifetime (called when a conference leg joins it).
    pub async fn mark_conference(&self, session: &SessionId) -> Result<(), RoomsHandleError> {
        let session = session.clone();
        self.run(move |r| Ok((r.plan_mark_conference(&session).unwrap_or_default(), ()))).await
    }

    /// Removes the sessions and participants expired at `now_ms`; returns how many of each.
    pub async fn expire(&self, now_ms: u64) -> Result<(usize, usize), RoomsHandleError> {
        self.run(move |r| {
            let plan = r.plan_expiry(now_ms);
            let count = |f: fn(&RoomEvent) -> bool| plan.events.iter().filter(|e| f(e)).count();
            let sessions = count(|e| matches!(e, RoomEvent::SessionEnded { .. }));
            let participants = count(|e| matches!(e, RoomEvent::ParticipantDeleted { .. }));
            Ok((plan, (sessions, participants)))
        })
        .await
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
            match self.expire(now_ms()).await {
                Ok((0, 0)) => {}
                Ok((sessions, participants)) => {
                    tracing::info!(sessions, participants, "expired sessions and participants removed")
                }
                Err(e) => tracing::warn!(error = %e, "expiring sessions failed; retrying later"),
            }
        }
    }

    /// Runs one change on the blocking pool (the commit syncs to disk).
    async fn run<T: Send + 'static>(
        &self,
        plan: impl FnOnce(&Rooms) -> Result<(Plan, T), RoomsError> + Send + 'static,
    ) -> Result<T, RoomsHandleError> {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.run_now(plan)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(RoomsHandleError::Store(StoreError::Io("the runtime is shutting down".into()))),
        }
    }

    /// One change: plan, commit, apply, publish; see the module's comment.
    fn run_now<T>(&self, plan: impl FnOnce(&Rooms) -> Result<(Plan, T), RoomsError>) -> Result<T, RoomsHandleError> {
        // Poisoned only by a panic in another change, which changed nothing it had not applied.
        let _writer = self.inner.writer.lock().unwrap_or_else(|e| e.into_inner());
        let (plan, out) = plan(&self.lock())?;
        if !plan.changes.is_empty() {
            self.inner.store.commit(&plan.changes)?;
        }
        {
            let mut rooms = self.lock();
            for change in plan.changes {
                rooms.apply(change);
            }
        }
        for event in plan.events {
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
