//! The shell around [`Rooms`]: one owner of the state, shared by the API handlers, SIP and media.
//!
//! One task owns the rooms and the store. A change is a message to it: the owner plans it on
//! its rooms, awaits the store's commit (which does its disk work on tokio's blocking pool, or
//! waits on a database), applies it, publishes a new immutable snapshot, then the change's
//! events. Changes run one at a time in the order they arrive, so nothing changes between a
//! plan and its application, and a change the store refused changes nothing.
//!
//! Readers — the forwarder, SIP, the API's GETs — read the latest snapshot: no lock, never a
//! wait for a commit, and a snapshot costs the owner no copy of the state (the maps are
//! persistent, [`Rooms`]). No lock is shared between the API, SIP and media paths.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::model::{Participant, Session, Subscriptions};
use super::persist::{Store, StoreError};
use super::{DemoJoin, NewParticipant, Plan, RoomEvent, Rooms, RoomsConfig, RoomsError};
use crate::ids::{AccountId, ParticipantId, SessionId};

/// How many events the change channel buffers for a slow listener before it lags.
const EVENT_CHANNEL_CAPACITY: usize = 4096;

/// How many changes may wait for the owner; more wait to be queued (the API's requests).
const CHANGE_QUEUE: usize = 1024;

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
    /// The owner of the rooms is gone (the runtime is shutting down, or a change panicked);
    /// nothing changed.
    #[error("the rooms are not taking changes: {0}")]
    Stopped(&'static str),
}

/// Shared access to the rooms: changes go to their owner, reads to the latest snapshot.
#[derive(Clone)]
pub struct RoomsHandle {
    snapshot: Arc<ArcSwap<Rooms>>,
    changes: mpsc::Sender<Box<dyn Operation>>,
    events: broadcast::Sender<RoomEvent>,
}

/// A change on its way to the owner: its plan, and where its outcome goes.
trait Operation: Send {
    /// Plans on the owner's rooms, keeping the value the caller gets back.
    fn plan(&mut self, rooms: &Rooms) -> Result<Plan, RoomsError>;
    /// Answers the caller.
    fn finish(self: Box<Self>, outcome: Result<(), RoomsHandleError>);
}

/// An [`Operation`] whose caller gets a `T`.
struct Typed<F, T> {
    plan: Option<F>,
    out: Option<T>,
    reply: oneshot::Sender<Result<T, RoomsHandleError>>,
}

impl<F, T> Operation for Typed<F, T>
where
    F: FnOnce(&Rooms) -> Result<(Plan, T), RoomsError> + Send,
    T: Send,
{
    fn plan(&mut self, rooms: &Rooms) -> Result<Plan, RoomsError> {
        let plan = self.plan.take().expect("an operation is planned once");
        let (plan, out) = plan(rooms)?;
        self.out = Some(out);
        Ok(plan)
    }

    fn finish(self: Box<Self>, outcome: Result<(), RoomsHandleError>) {
        let Self { out, reply, .. } = *self;
        let answer = outcome.and_then(|()| out.ok_or(RoomsHandleError::Stopped("the change was not planned")));
        // A caller that stopped waiting (a dropped request) still had its change made.
        let _ = reply.send(answer);
    }
}

impl RoomsHandle {
    /// Loads the rooms from `store` and starts their owner on the current runtime.
    pub async fn open(config: RoomsConfig, store: Box<dyn Store>) -> Result<Self, StoreError> {
        let snapshot = store.load().await?;
        let rooms = Rooms::from_snapshot(config, snapshot);
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        let (changes, queue) = mpsc::channel(CHANGE_QUEUE);
        let shared = Arc::new(ArcSwap::from_pointee(rooms.clone()));
        tokio::spawn(own(rooms, store, queue, shared.clone(), events.clone()));
        Ok(Self { snapshot: shared, changes, events })
    }

    /// The change channel: every [`RoomEvent`] from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RoomEvent> {
        self.events.subscribe()
    }

    /// Reads the latest snapshot of the rooms: every change whose operation has returned.
    pub fn read<R>(&self, f: impl FnOnce(&Rooms) -> R) -> R {
        f(&self.snapshot.load())
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

    /// Sends one change to the owner and waits for its outcome.
    async fn run<T: Send + 'static>(
        &self,
        plan: impl FnOnce(&Rooms) -> Result<(Plan, T), RoomsError> + Send + 'static,
    ) -> Result<T, RoomsHandleError> {
        let (reply, outcome) = oneshot::channel();
        let op = Box::new(Typed { plan: Some(plan), out: None, reply });
        self.changes.send(op).await.map_err(|_| RoomsHandleError::Stopped("the owner has stopped"))?;
        outcome.await.unwrap_or(Err(RoomsHandleError::Stopped("the owner stopped during the change")))
    }
}

/// The owner: one change at a time — plan, commit, apply, publish; see the module's comment.
async fn own(
    mut rooms: Rooms,
    store: Box<dyn Store>,
    mut queue: mpsc::Receiver<Box<dyn Operation>>,
    snapshot: Arc<ArcSwap<Rooms>>,
    events: broadcast::Sender<RoomEvent>,
) {
    while let Some(mut op) = queue.recv().await {
        // A plan reads and never mutates: one that panics fails its own change, not the owner.
        let plan = match std::panic::catch_unwind(AssertUnwindSafe(|| op.plan(&rooms))) {
            Ok(Ok(plan)) => plan,
            Ok(Err(e)) => {
                op.finish(Err(e.into()));
                continue;
            }
            Err(panic) => {
                tracing::error!(panic = panic_message(&panic), "a rooms change panicked while planning");
                op.finish(Err(RoomsHandleError::Stopped("the change failed")));
                continue;
            }
        };
        if !plan.changes.is_empty() {
            if let Err(e) = store.commit(&plan.changes).await {
                op.finish(Err(e.into()));
                continue;
            }
            for change in plan.changes {
                rooms.apply(change);
            }
            snapshot.store(Arc::new(rooms.clone()));
        }
        for event in plan.events {
            // Nobody listening is fine: events are notifications, the state is in the rooms.
            let _ = events.send(event);
        }
        op.finish(Ok(()));
    }
}

fn panic_message(panic: &Box<dyn Any + Send>) -> &str {
    panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("?")
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
