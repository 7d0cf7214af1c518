//! Rules of the rooms, driven with explicit (virtual) time.

use std::time::Duration;

use super::model::{MediaType, ParticipantSubscription, Subscriptions};
use super::persist::MemoryStore;
use super::*;

const HOUR_MS: u64 = 3_600_000;

fn config() -> RoomsConfig {
    RoomsConfig {
        lifetime: Duration::from_secs(9 * 3600),
        conference_lifetime: Duration::from_secs(24 * 3600),
        max_sessions: 3,
        max_participants: 10,
        max_participants_per_session: 4,
        demo_max_participants: 4,
        demo_lifetime: Duration::from_secs(900),
    }
}

fn acct() -> AccountId {
    AccountId::from("default")
}

/// Plans and applies, as the handle does without a store.
fn run<T>(rooms: &mut Rooms, r: Result<(Plan, T), RoomsError>) -> (Vec<RoomEvent>, T) {
    let (plan, out) = r.unwrap();
    for c in plan.changes {
        rooms.apply(c);
    }
    (plan.events, out)
}

fn exec(rooms: &mut Rooms, r: Result<Plan, RoomsError>) -> Vec<RoomEvent> {
    run(rooms, r.map(|p| (p, ()))).0
}

fn new_participant() -> NewParticipant {
    NewParticipant {
        tag: None,
        callback_url: None,
        publish_permissions: vec![MediaType::Audio],
        device_api_version: None,
    }
}

fn session(rooms: &mut Rooms, now_ms: u64) -> SessionId {
    let r = rooms.plan_create_session(&acct(), None, now_ms);
    run(rooms, r).1.id
}

fn participant(rooms: &mut Rooms) -> ParticipantId {
    let r = rooms.plan_create_participant(&acct(), new_participant(), 0);
    run(rooms, r).1.id
}

fn whole(s: &SessionId) -> Subscriptions {
    Subscriptions { session_id: Some(s.clone()), participants: vec![] }
}

fn listing(ps: &[&ParticipantId]) -> Subscriptions {
    Subscriptions {
        session_id: None,
        participants: ps
            .iter()
            .map(|p| ParticipantSubscription { participant_id: (*p).clone(), stream_aliases: vec![] })
            .collect(),
    }
}

fn join(rooms: &mut Rooms, s: &SessionId, p: &ParticipantId, subs: Subscriptions) -> Vec<RoomEvent> {
    let r = rooms.plan_add_to_session(&acct(), s, p, subs);
    exec(rooms, r)
}

#[test]
fn subscribing_to_the_session_hears_everyone_both_ways() {
    let mut rooms = Rooms::new(config());
    let s = session(&mut rooms, 0);
    let (a, b, c) = (participant(&mut rooms), participant(&mut rooms), participant(&mut rooms));
    join(&mut rooms, &s, &a, whole(&s));
    join(&mut rooms, &s, &b, Subscriptions::default());
    join(&mut rooms, &s, &c, Subscriptions::default());
    // a subscribed to the session: it hears b and c, and they hear a, but not each other.
    assert!(rooms.hears(&s, &a, &b) && rooms.hears(&s, &a, &c));
    assert!(rooms.hears(&s, &b, &a) && rooms.hears(&s, &c, &a));
    assert!(!rooms.hears(&s, &b, &c) && !rooms.hears(&s, &c, &b));
    assert!(!rooms.hears(&s, &a, &a), "nobody hears itself");
    let mut audience = rooms.audience(&s, &a);
    audience.sort();
    let mut expected = vec![b.clone(), c.clone()];
    expected.sort();
    assert_eq!(audience, expected);
    assert_eq!(rooms.heard_by(&s, &b), vec![a.clone()]);
}

#[test]
fn explicit_lists_are_one_way() {
    let mut rooms = Rooms::new(config());
    let s = session(&mut rooms, 0);
    let (a, b, c) = (participant(&mut rooms), participant(&mut rooms), participant(&mut rooms));
    join(&mut rooms, &s, &b, Subscriptions::default());
    join(&mut rooms, &s, &c, Subscriptions::default());
    join(&mut rooms, &s, &a, listing(&[&b]));
    assert!(rooms.hears(&s, &a, &b));
    assert!(!rooms.hears(&s, &b, &a));
    assert!(!rooms.hears(&s, &a, &c));
    // A listed participant that is not in the session yet is heard once it joins.
    let d = participant(&mut rooms);
    let r = rooms.plan_set_subscriptions(&acct(), &s, &a, listing(&[&b, &d]));
    exec(&mut rooms, r);
    assert!(!rooms.hears(&s, &a, &d));
    join(&mut rooms, &s, &d, Subscriptions::default());
    assert!(rooms.hears(&s, &a, &d));
}

#[test]
fn removal_cleans_subscriptions_both_ways() {
    let mut rooms = Rooms::new(config());
    let s = session(&mut rooms, 0);
    let (a, b) = (participant(&mut rooms), participant(&mut rooms));
    join(&mut rooms, &s, &a, listing(&[&b]));
    join(&mut rooms, &s, &b, listing(&[&a]));
    let r = rooms.plan_remove_from_session(&acct(), &s, &b);
    let events = exec(&mut rooms, r);
    assert!(events.iter().any(|e| matches!(e, RoomEvent::ParticipantLeft { participant, reason: LeaveReason::Removed, .. } if *participant == b)));
    assert!(rooms.subscriptions(&acct(), &s, &a).unwrap().participants.is_empty(), "a's subscription to b is gone");
    assert_eq!(rooms.subscriptions(&acct(), &s, &b), Err(RoomsError::NotInSession(s.clone(), b.clone())));
    // Joining again starts with no stale subscription either way.
    join(&mut rooms, &s, &b, Subscriptions::default());
    assert!(!rooms.hears(&s, &a, &b) && !rooms.hears(&s, &b, &a));
}

#[test]
fn deleting_a_participant_leaves_every_session_and_cleans_subscriptions() {
    let mut rooms = Rooms::new(config());
    let (s1, s2) = (session(&mut rooms, 0), session(&mut rooms, 0));
    let (a, b) = (participant(&mut rooms), participant(&mut rooms));
    join(&mut rooms, &s1, &a, Subscriptions::default());
    join(&mut rooms, &s2, &a, Subscriptions::default());
    join(&mut rooms, &s1, &b, listing(&[&a]));
    join(&mut rooms, &s2, &b, Subscriptions::default());
    let r = rooms.plan_delete_participant(&acct(), &a);
    let events = exec(&mut rooms, r);
    let left: Vec<_> = events.iter().filter(|e| matches!(e, RoomEvent::ParticipantLeft { .. })).collect();
    assert_eq!(left.len(), 2);
    assert!(matches!(events.last(), Some(RoomEvent::ParticipantDeleted { .. })));
    assert!(rooms.participant(&acct(), &a).is_err());
    assert!(rooms.sessions_of(&a).is_empty());
    assert!(rooms.subscriptions(&acct(), &s1, &b).unwrap().participants.is_empty());
    assert_eq!(rooms.members(&acct(), &s1).unwrap().len(), 1);
}

#[test]
fn sessions_expire_after_nine_hours_of_virtual_time() {
    let mut rooms = Rooms::new(config());
    let t0 = 1_000 * HOUR_MS;
    let s = session(&mut rooms, t0);
    let later = session(&mut rooms, t0 + HOUR_MS);
    let a = participant(&mut rooms);
    join(&mut rooms, &s, &a, whole(&s));
    assert_eq!(rooms.next_expiry_ms(), Some(t0 + 9 * HOUR_MS));
    assert_eq!(rooms.plan_expiry(t0 + 9 * HOUR_MS - 1), Plan::default(), "nothing due a millisecond before");
    let r = rooms.plan_expiry(t0 + 9 * HOUR_MS);
    let events = exec(&mut rooms, Ok(r));
    assert_eq!(
        events,
        vec![
            RoomEvent::ParticipantLeft {
                account: acct(),
                session: s.clone(),
                participant: a.clone(),
                callback_url: None,
                reason: LeaveReason::SessionExpired
            },
            RoomEvent::SessionEnded { account: acct(), session: s.clone(), reason: LeaveReason::SessionExpired },
        ]
    );
    assert!(rooms.session(&acct(), &s).is_err());
    assert!(rooms.session(&acct(), &later).is_ok());
    assert!(rooms.participant(&acct(), &a).is_ok(), "the participant outlives the session");
    assert!(rooms.sessions_of(&a).is_empty());
}

#[test]
fn a_conference_session_lives_24_hours() {
    let mut rooms = Rooms::new(config());
    let s = session(&mut rooms, 0);
    let plan = rooms.plan_mark_conference(&s).unwrap();
    exec(&mut rooms, Ok(plan));
    assert!(rooms.plan_mark_conference(&s).is_none(), "marking twice does nothing");
    assert_eq!(rooms.plan_expiry(23 * HOUR_MS).events, vec![]);
    assert_eq!(rooms.plan_expiry(24 * HOUR_MS).events.len(), 1);
}

#[test]
fn accounts_do_not_see_each_other() {
    let mut rooms = Rooms::new(config());
    let s = session(&mut rooms, 0);
    let p = participant(&mut rooms);
    let other = AccountId::from("other");
    assert_eq!(rooms.session(&other, &s), Err(RoomsError::SessionNotFound(s.clone())));
    assert_eq!(rooms.participant(&other, &p), Err(RoomsError::ParticipantNotFound(p.clone())));
    assert!(rooms.plan_delete_session(&other, &s).is_err());
    assert!(rooms.plan_add_to_session(&other, &s, &p, Subscriptions::default()).is_err());
    let r = rooms.plan_create_participant(&other, new_participant(), 0);
    let (_, q) = run(&mut rooms, r);
    // Another account's participant cannot be joined to or subscribed from this account.
    assert!(rooms.plan_add_to_session(&acct(), &s, &q.id, Subscriptions::default()).is_err());
    assert!(matches!(
        rooms.plan_add_to_session(&acct(), &s, &p, listing(&[&q.id])),
        Err(RoomsError::InvalidArgument(_))
    ));
}

#[test]
fn impossible_subscriptions_are_refused() {
    let mut rooms = Rooms::new(config());
    let (s, s2) = (session(&mut rooms, 0), session(&mut rooms, 0));
    let (a, b) = (participant(&mut rooms), participant(&mut rooms));
    let ghost = ParticipantId::from("ghost");
    for subs in [whole(&s2), listing(&[&a]), listing(&[&b, &b]), listing(&[&ghost])] {
        assert!(
            matches!(rooms.plan_add_to_session(&acct(), &s, &a, subs.clone()), Err(RoomsError::InvalidArgument(_))),
            "{subs:?}"
        );
    }
}

#[test]
fn limits_are_enforced() {
    let mut rooms = Rooms::new(config());
    let s = session(&mut rooms, 0);
    session(&mut rooms, 0);
    session(&mut rooms, 0);
    assert!(matches!(rooms.plan_create_session(&acct(), None, 0), Err(RoomsError::ResourceExhausted(_))));
    let ps: Vec<_> = (0..5).map(|_| participant(&mut rooms)).collect();
    for p in &ps[..4] {
        join(&mut rooms, &s, p, Subscriptions::default());
    }
    assert!(matches!(
        rooms.plan_add_to_session(&acct(), &s, &ps[4], Subscriptions::default()),
        Err(RoomsError::ResourceExhausted(_))
    ));
    // Updating a member already in a full session is fine.
    assert!(rooms.plan_add_to_session(&acct(), &s, &ps[0], whole(&s)).is_ok());
}

#[test]
fn joining_twice_updates_without_a_second_joined_event() {
    let mut rooms = Rooms::new(config());
    let s = session(&mut rooms, 0);
    let a = participant(&mut rooms);
    let first = join(&mut rooms, &s, &a, Subscriptions::default());
    let second = join(&mut rooms, &s, &a, whole(&s));
    let joined = |ev: &[RoomEvent]| ev.iter().filter(|e| matches!(e, RoomEvent::ParticipantJoined { .. })).count();
    assert_eq!((joined(&first), joined(&second)), (1, 0));
    assert_eq!(rooms.subscriptions(&acct(), &s, &a).unwrap(), &whole(&s));
}

#[tokio::test]
async fn the_handle_commits_publishes_and_reloads() {
    let store = std::sync::Arc::new(MemoryStore::default());
    struct Shared(std::sync::Arc<MemoryStore>);
    #[async_trait::async_trait]
    impl super::persist::Store for Shared {
        async fn load(&self) -> Result<super::persist::Snapshot, super::persist::StoreError> {
            self.0.load().await
        }
        async fn commit(&self, c: &[super::persist::Change]) -> Result<(), super::persist::StoreError> {
            self.0.commit(c).await
        }
    }
    let handle = RoomsHandle::open(config(), Box::new(Shared(store.clone()))).await.unwrap();
    let mut events = handle.subscribe();
    let s = handle.create_session(&acct(), Some("tag".into())).await.unwrap();
    let p = handle.create_participant(&acct(), new_participant()).await.unwrap();
    handle.add_to_session(&acct(), &s.id, &p.id, whole(&s.id)).await.unwrap();
    assert!(matches!(events.try_recv().unwrap(), RoomEvent::SessionCreated { .. }));
    assert!(matches!(events.try_recv().unwrap(), RoomEvent::ParticipantCreated { .. }));
    assert!(matches!(events.try_recv().unwrap(), RoomEvent::ParticipantJoined { .. }));
    assert!(matches!(events.try_recv().unwrap(), RoomEvent::SubscriptionsChanged { .. }));
    // A refused operation changes nothing and publishes nothing.
    assert!(handle.delete_session(&acct(), &SessionId::from("nope")).await.is_err());
    assert!(events.try_recv().is_err());

    let reopened = RoomsHandle::open(config(), Box::new(Shared(store))).await.unwrap();
    reopened.read(|r| {
        assert_eq!(r.session(&acct(), &s.id).unwrap().tag.as_deref(), Some("tag"));
        assert_eq!(r.subscriptions(&acct(), &s.id, &p.id).unwrap(), &whole(&s.id));
        assert_eq!(r.sessions_of(&p.id), vec![s.id.clone()]);
    });
}

#[tokio::test]
async fn a_failing_store_leaves_memory_unchanged() {
    struct Broken;
    #[async_trait::async_trait]
    impl super::persist::Store for Broken {
        async fn load(&self) -> Result<super::persist::Snapshot, super::persist::StoreError> {
            Ok(Default::default())
        }
        async fn commit(&self, _: &[super::persist::Change]) -> Result<(), super::persist::StoreError> {
            Err(super::persist::StoreError::Io("disk full".into()))
        }
    }
    let handle = RoomsHandle::open(config(), Box::new(Broken)).await.unwrap();
    assert!(matches!(handle.create_session(&acct(), None).await, Err(RoomsHandleError::Store(_))));
    assert_eq!(handle.read(Rooms::counts), (0, 0));
}

fn demo_pair() -> Vec<NewParticipant> {
    vec![new_participant(), new_participant()]
}

#[test]
fn the_demo_makes_its_pairs_atomically_within_its_own_quota() {
    // config(): demo_max_participants 4, max_participants 10, max_sessions 3.
    let mut rooms = Rooms::new(config());
    let r = rooms.plan_join_demo(&acct(), demo_pair(), 0);
    let (_, first) = run(&mut rooms, r);
    assert_eq!(first.participants.len(), 2);
    let s = first.session.clone();
    assert_eq!(rooms.members(&acct(), &s).unwrap().len(), 2);
    assert!(rooms.hears(&s, &first.participants[0].id, &first.participants[1].id), "both ways, whole session");
    let r = rooms.plan_join_demo(&acct(), demo_pair(), 1000);
    let (_, second) = run(&mut rooms, r);
    assert_eq!(second.session, s, "one demo session, reused");

    // Full: refused whole, nothing made (no orphan), with the time until the first expiry.
    let before = rooms.counts();
    match rooms.plan_join_demo(&acct(), demo_pair(), 60_000) {
        Err(RoomsError::DemoFull { max: 4, retry_after }) => {
            assert_eq!(retry_after, Duration::from_millis(900_000 - 60_000));
        }
        other => panic!("expected DemoFull, got {other:?}"),
    }
    assert_eq!(rooms.counts(), before);

    // The account's own quotas do not see the demo: 10 participants and 3 sessions still fit.
    for _ in 0..10 {
        participant(&mut rooms);
    }
    for _ in 0..3 {
        session(&mut rooms, 0);
    }
    assert!(matches!(
        rooms.plan_create_participant(&acct(), new_participant(), 0),
        Err(RoomsError::ResourceExhausted(_))
    ));
}

#[test]
fn demo_participants_expire_and_free_their_place() {
    let mut rooms = Rooms::new(RoomsConfig { max_participants_per_session: 10, ..config() });
    let r = rooms.plan_join_demo(&acct(), demo_pair(), 0);
    let (_, first) = run(&mut rooms, r);
    let r = rooms.plan_join_demo(&acct(), demo_pair(), 5_000);
    let (_, second) = run(&mut rooms, r);
    // A participant of the account's own that listed a demo participant explicitly.
    let own = participant(&mut rooms);
    join(&mut rooms, &first.session, &own, listing(&[&first.participants[0].id]));
    assert_eq!(rooms.next_expiry_ms(), Some(900_000));
    assert_eq!(rooms.plan_expiry(899_999), Plan::default());
    let due = rooms.plan_expiry(900_000);
    let events = exec(&mut rooms, Ok(due));
    let deleted: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RoomEvent::ParticipantDeleted { participant, .. } => Some(participant.clone()),
            _ => None,
        })
        .collect();
    let mut expected: Vec<_> = first.participants.iter().map(|p| p.id.clone()).collect();
    expected.sort();
    assert_eq!(deleted, expected, "the first pair, not the second");
    assert!(rooms.participant(&acct(), &second.participants[0].id).is_ok());
    assert!(rooms.subscriptions(&acct(), &first.session, &own).unwrap().participants.is_empty());
    assert_eq!(rooms.members(&acct(), &first.session).unwrap().len(), 3);
    // Their places are free again.
    assert!(rooms.plan_join_demo(&acct(), demo_pair(), 900_000).is_ok());
}

#[test]
fn expiring_participants_that_subscribe_to_each_other_leave_no_membership_behind() {
    let mut rooms = Rooms::new(config());
    let r = rooms.plan_join_demo(&acct(), demo_pair(), 0);
    let (_, pair) = run(&mut rooms, r);
    let (a, b) = (&pair.participants[0].id, &pair.participants[1].id);
    let r = rooms.plan_set_subscriptions(&acct(), &pair.session, b, listing(&[a]));
    exec(&mut rooms, r);
    let due = rooms.plan_expiry(900_000);
    exec(&mut rooms, Ok(due));
    assert_eq!(rooms.members(&acct(), &pair.session).unwrap().len(), 0);
    assert!(rooms.sessions_of(b).is_empty());
    assert_eq!(rooms.counts().1, 0);
}

#[test]
fn listings_page_in_id_order_and_only_the_accounts_own() {
    let mut rooms = Rooms::new(RoomsConfig { max_sessions: 100, max_participants: 100, ..config() });
    let other = AccountId::from("other");
    let mut mine: Vec<SessionId> = (0..7).map(|_| session(&mut rooms, 0)).collect();
    for _ in 0..5 {
        let r = rooms.plan_create_session(&other, None, 0);
        run(&mut rooms, r);
    }
    mine.sort();

    // Pages of 3: 3, 3, 1, each after the last id of the one before, nothing missed or repeated.
    let mut seen = Vec::new();
    let mut after: Option<SessionId> = None;
    let mut pages = 0;
    loop {
        let page = rooms.sessions_page(&acct(), after.as_ref(), 3);
        pages += 1;
        assert!(page.items.iter().all(|s| s.account == acct()), "another account's session listed");
        seen.extend(page.items.iter().map(|s| s.id.clone()));
        if !page.more {
            break;
        }
        after = page.items.last().map(|s| s.id.clone());
        // Sessions made while paging do not disturb those that existed.
        session(&mut rooms, 0);
        assert!(pages < 10, "paging ends");
    }
    let before: BTreeSet<SessionId> = mine.iter().cloned().collect();
    let listed: BTreeSet<SessionId> = seen.iter().cloned().collect();
    assert_eq!(listed.len(), seen.len(), "no session listed twice: {seen:?}");
    assert!(before.is_subset(&listed), "every session that existed throughout is listed");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in id order");

    // A page exactly as long as what is left says there is no more.
    let all = rooms.sessions_page(&acct(), None, 1000).items.len();
    let exact = rooms.sessions_page(&acct(), None, all);
    assert_eq!(exact.items.len(), all);
    assert!(!exact.more);
    assert!(rooms.sessions_page(&acct(), None, all - 1).more);
    // After the last id: empty, no more.
    let last = exact.items.last().unwrap().id.clone();
    let end = rooms.sessions_page(&acct(), Some(&last), 10);
    assert!(end.items.is_empty() && !end.more);
    // The other account sees its five.
    assert_eq!(rooms.sessions_page(&other, None, 100).items.len(), 5);
}

#[test]
fn participant_listings_page_and_keep_to_the_account() {
    let mut rooms = Rooms::new(config());
    let other = AccountId::from("other");
    let mut mine: Vec<ParticipantId> = (0..4).map(|_| participant(&mut rooms)).collect();
    let r = rooms.plan_create_participant(&other, new_participant(), 0);
    let theirs = run(&mut rooms, r).1.id;
    mine.sort();
    let first = rooms.participants_page(&acct(), None, 2);
    assert_eq!(first.items.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), mine[..2]);
    assert!(first.more);
    let second = rooms.participants_page(&acct(), Some(&mine[1]), 2);
    assert_eq!(second.items.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), mine[2..]);
    assert!(!second.more);
    let theirs_page = rooms.participants_page(&other, None, 10);
    assert_eq!(theirs_page.items.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), vec![theirs]);
    // A deleted participant drops out of the listing.
    let r = rooms.plan_delete_participant(&acct(), &mine[0]);
    exec(&mut rooms, r);
    assert_eq!(rooms.participants_page(&acct(), None, 10).items.len(), 3);
}

/// The index `apply` keeps, recomputed from scratch: the two must agree after any change.
fn assert_index_consistent(rooms: &Rooms) {
    let mut sessions: HashMap<AccountId, usize> = HashMap::new();
    let mut participants: HashMap<AccountId, usize> = HashMap::new();
    let mut expiries = BTreeSet::new();
    for s in rooms.sessions.values() {
        if !s.demo {
            *sessions.entry(s.account.clone()).or_default() += 1;
        }
        expiries.insert((s.expires_at_ms, Expiring::Session(s.id.clone())));
    }
    for p in rooms.participants.values() {
        if !p.demo {
            *participants.entry(p.account.clone()).or_default() += 1;
        }
        if let Some(at) = p.expires_at_ms {
            expiries.insert((at, Expiring::Participant(p.id.clone())));
        }
    }
    assert_eq!(rooms.index.owned_sessions, sessions);
    assert_eq!(rooms.index.owned_participants, participants);
    assert_eq!(rooms.index.expiries, expiries.into());
}

#[test]
fn the_index_follows_creation_updates_deletion_expiry_and_reload() {
    let mut rooms = Rooms::new(RoomsConfig { max_participants_per_session: 10, ..config() });
    let other = AccountId::from("other");
    let a = session(&mut rooms, 0);
    let b = session(&mut rooms, HOUR_MS);
    let r = rooms.plan_create_session(&other, None, 2 * HOUR_MS);
    let c = run(&mut rooms, r).1.id;
    let p = participant(&mut rooms);
    let q = participant(&mut rooms);
    let r = rooms.plan_create_participant(&other, new_participant(), 0);
    run(&mut rooms, r);
    join(&mut rooms, &a, &p, whole(&a));
    join(&mut rooms, &a, &q, listing(&[&p]));
    assert_index_consistent(&rooms);
    // An update keeps one entry (same key), then moves it (the conference lifetime).
    let plan = rooms.plan_mark_conference(&a).unwrap();
    exec(&mut rooms, Ok(plan));
    assert_index_consistent(&rooms);
    let r = rooms.plan_join_demo(&acct(), demo_pair(), 0);
    run(&mut rooms, r);
    assert_index_consistent(&rooms);
    assert_eq!(rooms.next_expiry_ms(), Some(900_000), "the demo pair first");
    let r = rooms.plan_delete_participant(&acct(), &q);
    exec(&mut rooms, r);
    let r = rooms.plan_delete_session(&other, &c);
    exec(&mut rooms, r);
    assert_index_consistent(&rooms);
    // The account's quota counts what is left: 2 sessions of 3, so one more fits, not two.
    session(&mut rooms, 3 * HOUR_MS);
    assert!(rooms.plan_create_session(&acct(), None, 3 * HOUR_MS).is_err());
    let expired = rooms.plan_expiry(10 * HOUR_MS);
    exec(&mut rooms, Ok(expired));
    assert_index_consistent(&rooms);
    assert!(rooms.session(&acct(), &b).is_err(), "b expired at 10 h");
    assert!(rooms.session(&acct(), &a).is_ok(), "a is a conference: 24 h");
    // A reload builds the same index.
    let snapshot = super::persist::Snapshot {
        sessions: rooms.sessions.values().map(|s| Session::clone(s)).collect(),
        participants: rooms.participants.values().map(|p| Participant::clone(p)).collect(),
        memberships: vec![],
    };
    let reloaded = Rooms::from_snapshot(rooms.config.clone(), snapshot);
    assert_index_consistent(&reloaded);
    assert_eq!(reloaded.index.expiries, rooms.index.expiries);
}

/// Readers (the forwarder, SIP, the API's GETs) never wait for a commit: while a change sits in
/// a store that has not returned, the rooms read at once, without the change, which is there
/// once the store returns. The owner's worker is not blocked either: the store awaits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_do_not_wait_for_a_commit_in_progress() {
    use tokio::sync::{Mutex as AsyncMutex, mpsc};
    struct Slow {
        started: mpsc::Sender<()>,
        release: AsyncMutex<mpsc::Receiver<()>>,
    }
    #[async_trait::async_trait]
    impl super::persist::Store for Slow {
        async fn load(&self) -> Result<super::persist::Snapshot, super::persist::StoreError> {
            Ok(Default::default())
        }
        async fn commit(&self, _: &[super::persist::Change]) -> Result<(), super::persist::StoreError> {
            self.started.send(()).await.unwrap();
            self.release.lock().await.recv().await.unwrap();
            Ok(())
        }
    }
    let (started_tx, mut started) = mpsc::channel(1);
    let (release, release_rx) = mpsc::channel(1);
    let slow = Slow { started: started_tx, release: AsyncMutex::new(release_rx) };
    let handle = RoomsHandle::open(config(), Box::new(slow)).await.unwrap();
    let writer = handle.clone();
    let change = tokio::spawn(async move { writer.create_session(&acct(), None).await });
    let wait = Duration::from_secs(30);
    tokio::time::timeout(wait, started.recv()).await.expect("the commit started within 30 s");
    // The commit is in progress: a read returns now (on another thread, bounded).
    let reader = handle.clone();
    let (read_tx, read) = std::sync::mpsc::channel();
    std::thread::spawn(move || read_tx.send(reader.read(Rooms::counts)).unwrap());
    let during = read.recv_timeout(Duration::from_secs(10)).expect("the read did not wait for the commit");
    assert_eq!(during, (0, 0), "not applied before the store returns");
    release.send(()).await.unwrap();
    tokio::time::timeout(wait, change).await.expect("the change ended within 30 s").unwrap().unwrap();
    assert_eq!(handle.read(Rooms::counts), (1, 0));
}
