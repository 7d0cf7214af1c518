//! The domain: sessions, participants and subscriptions, and who hears whom (CONTRACT §2, with
//! the semantics of the Bandwidth WebRTC API in the seeds).
//!
//! [`Rooms`] is plain data and rules, fed `now` as an argument: every operation first *plans*
//! (checks and returns the [`Change`]s and [`RoomEvent`]s it would make, touching nothing), then
//! the shell ([`RoomsHandle`]) commits the changes to the store, applies them here with
//! [`Rooms::apply`], and publishes the events on the channel that SIP, media and callbacks
//! listen to. Loading at start goes through the same `apply`, so memory and store cannot
//! disagree about what a change means.
//!
//! Subscriptions: a participant whose subscriptions name the session (`sessionId`) hears
//! everyone in the session and is heard by everyone, now and later ("both ways"); otherwise it
//! hears the participants it lists. Removing a participant from a session removes its own
//! subscriptions there and every other member's subscription to it.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;

use imbl::{HashMap, OrdMap, OrdSet};
use std::time::Duration;

use crate::ids::{AccountId, ParticipantId, SessionId};
pub use persist::{Change, Snapshot};

mod handle;
pub mod model;
pub mod persist;
#[cfg(test)]
mod tests;

pub use handle::{RoomsHandle, RoomsHandleError};
use model::{Membership, Participant, Session, Subscriptions};

/// Why an operation was refused. Each maps to one API error code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoomsError {
    /// The session does not exist in this account.
    #[error("session {0} not found")]
    SessionNotFound(SessionId),
    /// The participant does not exist in this account.
    #[error("participant {0} not found")]
    ParticipantNotFound(ParticipantId),
    /// The participant is not in the session.
    #[error("participant {1} is not in session {0}")]
    NotInSession(SessionId, ParticipantId),
    /// The request names something impossible.
    #[error("{0}")]
    InvalidArgument(String),
    /// A limit would be exceeded.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The demo has as many participants as it may; the earliest of them expires in
    /// `retry_after`.
    #[error("the demo has {max} participants, the most allowed; try again later")]
    DemoFull {
        /// `demo.max_participants`.
        max: u32,
        /// Until the first of them expires.
        retry_after: Duration,
    },
}

/// Lifetimes and limits.
#[derive(Clone, Debug)]
pub struct RoomsConfig {
    /// A session is removed this long after creation.
    pub lifetime: Duration,
    /// Lifetime of a session holding a conference.
    pub conference_lifetime: Duration,
    /// Most sessions per account.
    pub max_sessions: u32,
    /// Most participants per account.
    pub max_participants: u32,
    /// Most participants in one session.
    pub max_participants_per_session: u32,
    /// Most demo participants alive at once (apart from every account's own quota).
    pub demo_max_participants: u32,
    /// A demo participant is removed this long after it was made.
    pub demo_lifetime: Duration,
}

/// Why a participant left a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveReason {
    /// Removed from the session through the API (or by its SIP leg ending, in transfer mode).
    Removed,
    /// The session was deleted.
    SessionDeleted,
    /// The session expired.
    SessionExpired,
    /// The participant was deleted.
    ParticipantDeleted,
}

/// A change in the rooms, published to SIP, media and callbacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomEvent {
    /// A session was created.
    SessionCreated {
        /// Owner.
        account: AccountId,
        /// The session.
        session: SessionId,
    },
    /// A session is gone (its participants' `ParticipantLeft` come first).
    SessionEnded {
        /// Owner.
        account: AccountId,
        /// The session.
        session: SessionId,
        /// Deleted or expired.
        reason: LeaveReason,
    },
    /// A participant was created.
    ParticipantCreated {
        /// Owner.
        account: AccountId,
        /// The participant.
        participant: ParticipantId,
    },
    /// A participant joined a session.
    ParticipantJoined {
        /// Owner.
        account: AccountId,
        /// The session.
        session: SessionId,
        /// The participant.
        participant: ParticipantId,
        /// Where the participant's events go.
        callback_url: Option<String>,
    },
    /// A participant left a session.
    ParticipantLeft {
        /// Owner.
        account: AccountId,
        /// The session.
        session: SessionId,
        /// The participant.
        participant: ParticipantId,
        /// Where the participant's events go (captured before it may be deleted).
        callback_url: Option<String>,
        /// Why.
        reason: LeaveReason,
    },
    /// A participant is gone (after its `ParticipantLeft` events).
    ParticipantDeleted {
        /// Owner.
        account: AccountId,
        /// The participant.
        participant: ParticipantId,
    },
    /// Who hears whom in a session may have changed.
    SubscriptionsChanged {
        /// Owner.
        account: AccountId,
        /// The session.
        session: SessionId,
    },
}

/// What an operation would do: the changes to commit and the events to publish after.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Changes, in order.
    pub changes: Vec<Change>,
    /// Events, in order.
    pub events: Vec<RoomEvent>,
}

/// What creating a participant needs.
#[derive(Clone, Debug)]
pub struct NewParticipant {
    /// Label.
    pub tag: Option<String>,
    /// Event receiver.
    pub callback_url: Option<String>,
    /// What it may publish.
    pub publish_permissions: Vec<model::MediaType>,
    /// Client API version.
    pub device_api_version: Option<String>,
}

/// One page of a listing: the items, and whether more follow the last of them.
#[derive(Debug, PartialEq, Eq)]
pub struct Page<'a, T> {
    /// The items, in id order.
    pub items: Vec<&'a T>,
    /// True when items follow the last one (the next page starts after it).
    pub more: bool,
}

/// What the demo made: its session and the new participants, in the order asked for.
#[derive(Clone, Debug)]
pub struct DemoJoin {
    /// The demo session they joined.
    pub session: SessionId,
    /// The participants, each subscribed to the whole session.
    pub participants: Vec<Participant>,
}

/// Sessions, participants and memberships in memory.
///
/// The maps are persistent (imbl): a clone shares everything and a change copies only the
/// path it touches, so that the owner can hand readers an immutable snapshot after every
/// change at a cost that does not grow with the number of sessions or participants.
#[derive(Debug, Clone)]
pub struct Rooms {
    config: RoomsConfig,
    /// Ordered by id so that listings page stably ([`Rooms::sessions_page`]).
    /// Records behind `Arc` here and below: copying a map's node for a snapshot then copies
    /// pointers, not strings.
    sessions: OrdMap<SessionId, Arc<Session>>,
    /// Ordered by id, as `sessions`.
    participants: OrdMap<ParticipantId, Arc<Participant>>,
    /// Members of each session with their subscriptions; ordered so listings are stable.
    members: HashMap<SessionId, OrdMap<ParticipantId, Arc<Subscriptions>>>,
    /// The sessions each participant is in (derived from `members`).
    sessions_of: HashMap<ParticipantId, OrdSet<SessionId>>,
    /// Derived from the above by [`Rooms::apply`], so that no request scans the node.
    index: Index,
}

/// What `apply` keeps up to date so that creating, quota checks and expiry cost the same
/// however many sessions and participants the node holds.
#[derive(Debug, Default, Clone)]
struct Index {
    /// Sessions of each account that count against its quota (not the demo's).
    owned_sessions: HashMap<AccountId, usize>,
    /// Participants of each account that count against its quota (not the demo's).
    owned_participants: HashMap<AccountId, usize>,
    /// Every expiry: when, and what.
    expiries: OrdSet<(u64, Expiring)>,
}

/// What expires.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Expiring {
    Session(SessionId),
    Participant(ParticipantId),
}

impl Index {
    fn count(counts: &mut HashMap<AccountId, usize>, account: &AccountId, add: bool) {
        if add {
            *counts.entry(account.clone()).or_default() += 1;
        } else if let Some(n) = counts.get_mut(account) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(account);
            }
        }
    }

    fn session(&mut self, s: &Session, add: bool) {
        if !s.demo {
            Self::count(&mut self.owned_sessions, &s.account, add);
        }
        let key = (s.expires_at_ms, Expiring::Session(s.id.clone()));
        if add {
            self.expiries.insert(key);
        } else {
            self.expiries.remove(&key);
        }
    }

    fn participant(&mut self, p: &Participant, add: bool) {
        if !p.demo {
            Self::count(&mut self.owned_participants, &p.account, add);
        }
        if let Some(at) = p.expires_at_ms {
            let key = (at, Expiring::Participant(p.id.clone()));
            if add {
                self.expiries.insert(key);
            } else {
                self.expiries.remove(&key);
            }
        }
    }
}

impl Rooms {
    /// Empty rooms.
    pub fn new(config: RoomsConfig) -> Self {
        Self {
            config,
            sessions: OrdMap::new(),
            participants: OrdMap::new(),
            members: HashMap::new(),
            sessions_of: HashMap::new(),
            index: Index::default(),
        }
    }

    /// Rooms holding what the store loaded. Memberships of sessions or participants that no
    /// longer exist (a crash between writes cannot make them, but a hand-edited file could)
    /// are skipped.
    pub fn from_snapshot(config: RoomsConfig, snapshot: Snapshot) -> Self {
        let mut rooms = Self::new(config);
        for s in snapshot.sessions {
            rooms.apply(Change::PutSession(s));
        }
        for p in snapshot.participants {
            rooms.apply(Change::PutParticipant(p));
        }
        for m in snapshot.memberships {
            if rooms.sessions.contains_key(&m.session) && rooms.participants.contains_key(&m.participant) {
                rooms.apply(Change::PutMembership(m));
            }
        }
        rooms
    }

    // ----- queries -----

    /// A session of `account`.
    pub fn session(&self, account: &AccountId, id: &SessionId) -> Result<&Session, RoomsError> {
        self.sessions
            .get(id)
            .map(|s| &**s)
            .filter(|s| &s.account == account)
            .ok_or_else(|| RoomsError::SessionNotFound(id.clone()))
    }

    /// A participant of `account`.
    pub fn participant(&self, account: &AccountId, id: &ParticipantId) -> Result<&Participant, RoomsError> {
        self.participants
            .get(id)
            .map(|p| &**p)
            .filter(|p| &p.account == account)
            .ok_or_else(|| RoomsError::ParticipantNotFound(id.clone()))
    }

    /// A participant by id alone, whatever its account (for admission by token).
    pub fn participant_by_id(&self, id: &ParticipantId) -> Option<&Participant> {
        self.participants.get(id).map(|p| &**p)
    }

    /// The sessions a participant is in.
    pub fn sessions_of(&self, id: &ParticipantId) -> Vec<SessionId> {
        self.sessions_of.get(id).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }

    /// The participants in a session of `account`.
    pub fn members(&self, account: &AccountId, session: &SessionId) -> Result<Vec<&Participant>, RoomsError> {
        self.session(account, session)?;
        Ok(self.member_ids(session).filter_map(|p| self.participant_by_id(p)).collect())
    }

    /// What `participant` subscribes to in `session`.
    pub fn subscriptions(
        &self,
        account: &AccountId,
        session: &SessionId,
        participant: &ParticipantId,
    ) -> Result<&Subscriptions, RoomsError> {
        self.session(account, session)?;
        self.participant(account, participant)?;
        self.members
            .get(session)
            .and_then(|m| m.get(participant))
            .map(|s| &**s)
            .ok_or_else(|| RoomsError::NotInSession(session.clone(), participant.clone()))
    }

    /// Who hears `publisher` in `session`: the media router's fan-out list.
    pub fn audience(&self, session: &SessionId, publisher: &ParticipantId) -> Vec<ParticipantId> {
        self.member_ids(session).filter(|l| self.hears(session, l, publisher)).cloned().collect()
    }

    /// Whom `listener` hears in `session`: what a SIP leg's mix is made of.
    pub fn heard_by(&self, session: &SessionId, listener: &ParticipantId) -> Vec<ParticipantId> {
        self.member_ids(session).filter(|p| self.hears(session, listener, p)).cloned().collect()
    }

    /// True when `listener` hears `publisher` in `session`.
    pub fn hears(&self, session: &SessionId, listener: &ParticipantId, publisher: &ParticipantId) -> bool {
        if listener == publisher {
            return false;
        }
        let Some(members) = self.members.get(session) else { return false };
        let (Some(l), Some(p)) = (members.get(listener), members.get(publisher)) else { return false };
        l.session_id.is_some()
            || p.session_id.is_some()
            || l.participants.iter().any(|s| &s.participant_id == publisher)
    }

    /// Up to `limit` sessions of `account` in id order, starting after the id `after` (none: from
    /// the first). The order is by id, so paging while sessions are added or removed never skips
    /// nor repeats one that exists throughout; one added behind the cursor is seen next time.
    pub fn sessions_page(&self, account: &AccountId, after: Option<&SessionId>, limit: usize) -> Page<'_, Session> {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        page(
            self.sessions
                .range::<_, SessionId>((from, Bound::Unbounded))
                .map(|(_, s)| &**s)
                .filter(|s| &s.account == account),
            limit,
        )
    }

    /// Up to `limit` participants of `account` in id order after the id `after`, as
    /// [`Rooms::sessions_page`].
    pub fn participants_page(
        &self,
        account: &AccountId,
        after: Option<&ParticipantId>,
        limit: usize,
    ) -> Page<'_, Participant> {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        page(
            self.participants
                .range::<_, ParticipantId>((from, Bound::Unbounded))
                .map(|(_, p)| &**p)
                .filter(|p| &p.account == account),
            limit,
        )
    }

    /// Number of sessions and participants, for metrics.
    pub fn counts(&self) -> (usize, usize) {
        (self.sessions.len(), self.participants.len())
    }

    /// The earliest session or participant expiry, Unix milliseconds: when
    /// [`Rooms::plan_expiry`] next has work.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.index.expiries.get_min().map(|(at, _)| *at)
    }

    // ----- plans -----

    /// Creates a session.
    pub fn plan_create_session(
        &self,
        account: &AccountId,
        tag: Option<String>,
        now_ms: u64,
    ) -> Result<(Plan, Session), RoomsError> {
        let owned = self.index.owned_sessions.get(account).copied().unwrap_or(0);
        within_quota(owned, self.config.max_sessions, "sessions")?;
        let id = fresh_id(SessionId::generate, |id| self.sessions.contains_key(id));
        let session = Session {
            id: id.clone(),
            account: account.clone(),
            tag,
            created_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(millis(self.config.lifetime)),
            conference: false,
            demo: false,
        };
        let plan = Plan {
            changes: vec![Change::PutSession(session.clone())],
            events: vec![RoomEvent::SessionCreated { account: account.clone(), session: id }],
        };
        Ok((plan, session))
    }

    /// Deletes a session: its participants leave first (CONTRACT §2 `DELETE /sessions/{id}`).
    pub fn plan_delete_session(&self, account: &AccountId, id: &SessionId) -> Result<Plan, RoomsError> {
        self.session(account, id)?;
        Ok(self.end_session(id, LeaveReason::SessionDeleted))
    }

    /// Removes every session, then every participant, whose lifetime is over at `now_ms`.
    pub fn plan_expiry(&self, now_ms: u64) -> Plan {
        // The index is in (time, id) order: sessions and participants each come out sorted.
        let expired = self.index.expiries.iter().take_while(|(at, _)| *at <= now_ms);
        let due: Vec<&Session> = expired
            .clone()
            .filter_map(|(_, e)| match e {
                Expiring::Session(id) => self.sessions.get(id).map(|s| &**s),
                Expiring::Participant(_) => None,
            })
            .collect();
        let mut plan = Plan::default();
        let mut ended = BTreeSet::new();
        for s in due {
            let p = self.end_session(&s.id, LeaveReason::SessionExpired);
            plan.changes.extend(p.changes);
            plan.events.extend(p.events);
            ended.insert(s.id.clone());
        }
        let gone: Vec<&Participant> = expired
            .filter_map(|(_, e)| match e {
                Expiring::Participant(id) => self.participant_by_id(id),
                Expiring::Session(_) => None,
            })
            .collect();
        for p in &gone {
            self.delete_participant(&mut plan, p, &ended);
        }
        // One expiring participant's leaving rewrites the memberships of those subscribed to
        // it; a rewrite of a membership that this plan removes anyway (its participant or its
        // session goes too) must not bring it back.
        let gone: BTreeSet<&ParticipantId> = gone.iter().map(|p| &p.id).collect();
        plan.changes.retain(|c| match c {
            Change::PutMembership(m) => !gone.contains(&m.participant) && !ended.contains(&m.session),
            _ => true,
        });
        plan
    }

    /// Marks a session as holding a conference: its lifetime becomes the conference lifetime.
    pub fn plan_mark_conference(&self, id: &SessionId) -> Option<Plan> {
        let s = self.sessions.get(id)?;
        if s.conference {
            return None;
        }
        let mut s = Session::clone(s);
        s.conference = true;
        s.expires_at_ms = s.created_at_ms.saturating_add(millis(self.config.conference_lifetime));
        Some(Plan { changes: vec![Change::PutSession(s)], events: vec![] })
    }

    /// Creates a participant.
    pub fn plan_create_participant(
        &self,
        account: &AccountId,
        new: NewParticipant,
        now_ms: u64,
    ) -> Result<(Plan, Participant), RoomsError> {
        let owned = self.index.owned_participants.get(account).copied().unwrap_or(0);
        within_quota(owned, self.config.max_participants, "participants")?;
        let id = fresh_id(ParticipantId::generate, |id| self.participants.contains_key(id));
        let mut publish_permissions = new.publish_permissions;
        publish_permissions.dedup();
        let participant = Participant {
            id: id.clone(),
            account: account.clone(),
            tag: new.tag,
            callback_url: new.callback_url,
            publish_permissions,
            device_api_version: new.device_api_version,
            created_at_ms: now_ms,
            demo: false,
            expires_at_ms: None,
        };
        let plan = Plan {
            changes: vec![Change::PutParticipant(participant.clone())],
            events: vec![RoomEvent::ParticipantCreated { account: account.clone(), participant: id }],
        };
        Ok((plan, participant))
    }

    /// The demo (`/demo/connectionInfo`) makes participants in its session of `account`, all or
    /// none: the demo session (made when there is none alive), and each participant subscribed
    /// to the whole session. They count against `demo_max_participants`, never the account's
    /// quotas, and expire `demo_lifetime` after they are made.
    pub fn plan_join_demo(
        &self,
        account: &AccountId,
        new: Vec<NewParticipant>,
        now_ms: u64,
    ) -> Result<(Plan, DemoJoin), RoomsError> {
        let demo: Vec<&Participant> = self.participants.values().map(|p| &**p).filter(|p| p.demo).collect();
        let max = self.config.demo_max_participants;
        if demo.len() + new.len() > max as usize {
            let first = demo.iter().filter_map(|p| p.expires_at_ms).min().unwrap_or(now_ms);
            let retry_after = Duration::from_millis(first.saturating_sub(now_ms));
            return Err(RoomsError::DemoFull { max, retry_after });
        }
        let mut plan = Plan::default();
        let live = self
            .sessions
            .values()
            .filter(|s| &s.account == account && s.demo && s.expires_at_ms > now_ms)
            .min_by_key(|s| (s.created_at_ms, s.id.clone()));
        let session = match live {
            Some(s) => s.id.clone(),
            None => {
                let id = fresh_id(SessionId::generate, |id| self.sessions.contains_key(id));
                plan.changes.push(Change::PutSession(Session {
                    id: id.clone(),
                    account: account.clone(),
                    tag: Some("demo".into()),
                    created_at_ms: now_ms,
                    expires_at_ms: now_ms.saturating_add(millis(self.config.lifetime)),
                    conference: false,
                    demo: true,
                }));
                plan.events.push(RoomEvent::SessionCreated { account: account.clone(), session: id.clone() });
                id
            }
        };
        let members = self.members.get(&session).map_or(0, OrdMap::len);
        if members + new.len() > self.config.max_participants_per_session as usize {
            return Err(RoomsError::ResourceExhausted(format!(
                "session {session} has {members} participants, the most allowed"
            )));
        }
        let mut made: Vec<Participant> = Vec::with_capacity(new.len());
        for n in new {
            let id = fresh_id(ParticipantId::generate, |id| {
                self.participants.contains_key(id) || made.iter().any(|p| &p.id == id)
            });
            let mut publish_permissions = n.publish_permissions;
            publish_permissions.dedup();
            let participant = Participant {
                id: id.clone(),
                account: account.clone(),
                tag: n.tag,
                callback_url: n.callback_url,
                publish_permissions,
                device_api_version: n.device_api_version,
                created_at_ms: now_ms,
                demo: true,
                expires_at_ms: Some(now_ms.saturating_add(millis(self.config.demo_lifetime))),
            };
            plan.changes.push(Change::PutParticipant(participant.clone()));
            plan.changes.push(Change::PutMembership(Membership {
                session: session.clone(),
                participant: id.clone(),
                subscriptions: Subscriptions { session_id: Some(session.clone()), participants: vec![] },
            }));
            plan.events.push(RoomEvent::ParticipantCreated { account: account.clone(), participant: id.clone() });
            plan.events.push(RoomEvent::ParticipantJoined {
                account: account.clone(),
                session: session.clone(),
                participant: id,
                callback_url: participant.callback_url.clone(),
            });
            made.push(participant);
        }
        plan.events.push(RoomEvent::SubscriptionsChanged { account: account.clone(), session: session.clone() });
        Ok((plan, DemoJoin { session, participants: made }))
    }

    /// Deletes a participant: it leaves every session first.
    pub fn plan_delete_participant(&self, account: &AccountId, id: &ParticipantId) -> Result<Plan, RoomsError> {
        let p = self.participant(account, id)?;
        let mut plan = Plan::default();
        self.delete_participant(&mut plan, p, &BTreeSet::new());
        Ok(plan)
    }

    /// Adds the deletion of `p` to `plan`: it leaves its sessions (but those in `ending`, which
    /// the plan already ends) and every subscription to it goes.
    fn delete_participant(&self, plan: &mut Plan, p: &Participant, ending: &BTreeSet<SessionId>) {
        let id = &p.id;
        let joined = self.sessions_of(id);
        for session in joined.iter().filter(|s| !ending.contains(*s)) {
            self.leave(plan, session, id, LeaveReason::ParticipantDeleted);
        }
        // Subscriptions to it in sessions it never joined go too.
        for (session, members) in &self.members {
            if joined.contains(session) || ending.contains(session) {
                continue;
            }
            for (other, subs) in members {
                if subs.participants.iter().any(|s| &s.participant_id == id) {
                    plan.changes.push(Change::PutMembership(without(session, other, subs, id)));
                }
            }
        }
        plan.changes.push(Change::DeleteParticipant(id.clone()));
        plan.events.push(RoomEvent::ParticipantDeleted { account: p.account.clone(), participant: id.clone() });
    }

    /// Adds a participant to a session (or updates it when already in) and sets its
    /// subscriptions there (CONTRACT §2 `PUT /sessions/{sid}/participants/{pid}`).
    pub fn plan_add_to_session(
        &self,
        account: &AccountId,
        session: &SessionId,
        participant: &ParticipantId,
        subscriptions: Subscriptions,
    ) -> Result<Plan, RoomsError> {
        self.session(account, session)?;
        let p = self.participant(account, participant)?;
        let already = self.members.get(session).is_some_and(|m| m.contains_key(participant));
        if !already {
            let count = self.members.get(session).map_or(0, OrdMap::len);
            if count >= self.config.max_participants_per_session as usize {
                return Err(RoomsError::ResourceExhausted(format!(
                    "session {session} has {count} participants, the most allowed"
                )));
            }
        }
        self.check_subscriptions(account, session, participant, &subscriptions)?;
        let mut plan = Plan::default();
        plan.changes.push(Change::PutMembership(Membership {
            session: session.clone(),
            participant: participant.clone(),
            subscriptions,
        }));
        if !already {
            plan.events.push(RoomEvent::ParticipantJoined {
                account: account.clone(),
                session: session.clone(),
                participant: participant.clone(),
                callback_url: p.callback_url.clone(),
            });
        }
        plan.events.push(RoomEvent::SubscriptionsChanged { account: account.clone(), session: session.clone() });
        Ok(plan)
    }

    /// Replaces a member's subscriptions.
    pub fn plan_set_subscriptions(
        &self,
        account: &AccountId,
        session: &SessionId,
        participant: &ParticipantId,
        subscriptions: Subscriptions,
    ) -> Result<Plan, RoomsError> {
        self.subscriptions(account, session, participant)?;
        self.check_subscriptions(account, session, participant, &subscriptions)?;
        Ok(Plan {
            changes: vec![Change::PutMembership(Membership {
                session: session.clone(),
                participant: participant.clone(),
                subscriptions,
            })],
            events: vec![RoomEvent::SubscriptionsChanged { account: account.clone(), session: session.clone() }],
        })
    }

    /// Removes a participant from a session, cleaning subscriptions both ways.
    pub fn plan_remove_from_session(
        &self,
        account: &AccountId,
        session: &SessionId,
        participant: &ParticipantId,
    ) -> Result<Plan, RoomsError> {
        self.subscriptions(account, session, participant)?;
        let mut plan = Plan::default();
        self.leave(&mut plan, session, participant, LeaveReason::Removed);
        plan.events.push(RoomEvent::SubscriptionsChanged { account: account.clone(), session: session.clone() });
        Ok(plan)
    }

    // ----- applying -----

    /// Applies one committed change to memory.
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::PutSession(s) => {
                self.members.entry(s.id.clone()).or_default();
                // The old entry's first: an update may keep the same expiry key.
                if let Some(old) = self.sessions.get(&s.id) {
                    self.index.session(old, false);
                }
                self.index.session(&s, true);
                self.sessions.insert(s.id.clone(), Arc::new(s));
            }
            Change::DeleteSession(id) => {
                if let Some(members) = self.members.remove(&id) {
                    for p in members.keys() {
                        self.unindex(p, &id);
                    }
                }
                if let Some(old) = self.sessions.remove(&id) {
                    self.index.session(&old, false);
                }
            }
            Change::PutParticipant(p) => {
                if let Some(old) = self.participants.get(&p.id) {
                    self.index.participant(old, false);
                }
                self.index.participant(&p, true);
                self.participants.insert(p.id.clone(), Arc::new(p));
            }
            Change::DeleteParticipant(id) => {
                for session in self.sessions_of(&id) {
                    if let Some(m) = self.members.get_mut(&session) {
                        m.remove(&id);
                    }
                }
                self.sessions_of.remove(&id);
                if let Some(old) = self.participants.remove(&id) {
                    self.index.participant(&old, false);
                }
            }
            Change::PutMembership(m) => {
                self.sessions_of.entry(m.participant.clone()).or_default().insert(m.session.clone());
                self.members.entry(m.session).or_default().insert(m.participant, Arc::new(m.subscriptions));
            }
            Change::DeleteMembership(session, participant) => {
                if let Some(m) = self.members.get_mut(&session) {
                    m.remove(&participant);
                }
                self.unindex(&participant, &session);
            }
        }
    }

    // ----- helpers -----

    fn member_ids(&self, session: &SessionId) -> impl Iterator<Item = &ParticipantId> {
        self.members.get(session).into_iter().flat_map(|m| m.keys())
    }

    fn unindex(&mut self, participant: &ParticipantId, session: &SessionId) {
        if let Some(set) = self.sessions_of.get_mut(participant) {
            set.remove(session);
            if set.is_empty() {
                self.sessions_of.remove(participant);
            }
        }
    }

    /// Every member leaves, then the session goes.
    fn end_session(&self, id: &SessionId, reason: LeaveReason) -> Plan {
        let mut plan = Plan::default();
        let members: Vec<ParticipantId> = self.member_ids(id).cloned().collect();
        for p in &members {
            plan.changes.push(Change::DeleteMembership(id.clone(), p.clone()));
            plan.events.push(self.left_event(id, p, reason));
        }
        plan.changes.push(Change::DeleteSession(id.clone()));
        if let Some(s) = self.sessions.get(id) {
            plan.events.push(RoomEvent::SessionEnded { account: s.account.clone(), session: id.clone(), reason });
        }
        plan
    }

    /// `participant` leaves `session`: its membership goes, and so does every other member's
    /// explicit subscription to it.
    fn leave(&self, plan: &mut Plan, session: &SessionId, participant: &ParticipantId, reason: LeaveReason) {
        plan.changes.push(Change::DeleteMembership(session.clone(), participant.clone()));
        if let Some(members) = self.members.get(session) {
            for (other, subs) in members {
                if other != participant && subs.participants.iter().any(|s| &s.participant_id == participant) {
                    plan.changes.push(Change::PutMembership(without(session, other, subs, participant)));
                }
            }
        }
        plan.events.push(self.left_event(session, participant, reason));
    }

    fn left_event(&self, session: &SessionId, participant: &ParticipantId, reason: LeaveReason) -> RoomEvent {
        let p = self.participants.get(participant);
        RoomEvent::ParticipantLeft {
            account: p.map(|p| p.account.clone()).unwrap_or_else(|| AccountId::from("")),
            session: session.clone(),
            participant: participant.clone(),
            callback_url: p.and_then(|p| p.callback_url.clone()),
            reason,
        }
    }

    fn check_subscriptions(
        &self,
        account: &AccountId,
        session: &SessionId,
        participant: &ParticipantId,
        subs: &Subscriptions,
    ) -> Result<(), RoomsError> {
        if let Some(sid) = &subs.session_id
            && sid != session
        {
            return Err(RoomsError::InvalidArgument(format!(
                "sessionId {sid} is not the session of this request ({session})"
            )));
        }
        let mut seen = BTreeSet::new();
        for s in &subs.participants {
            if &s.participant_id == participant {
                return Err(RoomsError::InvalidArgument("a participant cannot subscribe to itself".into()));
            }
            if !seen.insert(&s.participant_id) {
                return Err(RoomsError::InvalidArgument(format!("participant {} is listed twice", s.participant_id)));
            }
            if self.participant(account, &s.participant_id).is_err() {
                return Err(RoomsError::InvalidArgument(format!(
                    "cannot subscribe to participant {}: it does not exist",
                    s.participant_id
                )));
            }
        }
        Ok(())
    }
}

impl crate::tokens::ParticipantDirectory for Rooms {
    fn sessions_of(&self, participant: &ParticipantId) -> Option<Vec<SessionId>> {
        self.participants.contains_key(participant).then(|| Self::sessions_of(self, participant))
    }
}

/// `member`'s membership of `session` with its explicit subscription to `gone` removed.
fn without(session: &SessionId, member: &ParticipantId, subs: &Subscriptions, gone: &ParticipantId) -> Membership {
    let mut subscriptions = subs.clone();
    subscriptions.participants.retain(|s| &s.participant_id != gone);
    Membership { session: session.clone(), participant: member.clone(), subscriptions }
}

/// The first `limit` of `items`, and whether there were more.
fn page<'a, T: 'a>(mut items: impl Iterator<Item = &'a T>, limit: usize) -> Page<'a, T> {
    let taken: Vec<&T> = items.by_ref().take(limit).collect();
    Page { more: !taken.is_empty() && items.next().is_some(), items: taken }
}

/// Refuses one more of `what` when the account already owns `max`.
fn within_quota(owned: usize, max: u32, what: &str) -> Result<(), RoomsError> {
    if owned >= max as usize {
        return Err(RoomsError::ResourceExhausted(format!("the account has {owned} {what}, the most allowed")));
    }
    Ok(())
}

/// A generated id that is not taken (collisions are rare; the loop ends at the first free one).
fn fresh_id<T>(generate: fn() -> T, taken: impl Fn(&T) -> bool) -> T {
    loop {
        let id = generate();
        if !taken(&id) {
            return id;
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
