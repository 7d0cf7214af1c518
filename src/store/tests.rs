//! Store tests: what is committed is what is loaded, across a reopen, and a damaged file is an
//! error rather than an empty start.

use super::*;
use crate::ids::AccountId;
use crate::private_file::write_private_file;
use crate::rooms::model::{MediaType, Membership, Participant, ParticipantSubscription, Session, Subscriptions};

fn session(id: &str) -> Session {
    Session {
        id: SessionId::from(id),
        account: AccountId::from("default"),
        tag: Some("t".into()),
        created_at_ms: 1,
        expires_at_ms: 2,
        conference: false,
        demo: false,
    }
}

fn participant(id: &str) -> Participant {
    Participant {
        id: ParticipantId::from(id),
        account: AccountId::from("default"),
        tag: None,
        callback_url: Some("http://127.0.0.1:1/cb".into()),
        publish_permissions: vec![MediaType::Audio],
        device_api_version: None,
        created_at_ms: 1,
        demo: false,
        expires_at_ms: None,
    }
}

fn membership(s: &str, p: &str) -> Membership {
    Membership {
        session: SessionId::from(s),
        participant: ParticipantId::from(p),
        subscriptions: Subscriptions {
            session_id: None,
            participants: vec![ParticipantSubscription {
                participant_id: ParticipantId::from("other"),
                stream_aliases: vec!["a".into()],
            }],
        },
    }
}

fn sorted(mut s: Snapshot) -> Snapshot {
    s.sessions.sort_by(|a, b| a.id.cmp(&b.id));
    s.participants.sort_by(|a, b| a.id.cmp(&b.id));
    s.memberships.sort_by(|a, b| (&a.session, &a.participant).cmp(&(&b.session, &b.participant)));
    s
}

async fn exercise(store: &dyn Store) -> Snapshot {
    store
        .commit(&[
            Change::PutSession(session("s1")),
            Change::PutSession(session("s2")),
            Change::PutParticipant(participant("p1")),
            Change::PutParticipant(participant("p2")),
            Change::PutMembership(membership("s1", "p1")),
            Change::PutMembership(membership("s1", "p2")),
        ])
        .await
        .unwrap();
    store
        .commit(&[
            Change::DeleteSession(SessionId::from("s2")),
            Change::DeleteMembership(SessionId::from("s1"), ParticipantId::from("p2")),
            Change::DeleteParticipant(ParticipantId::from("p2")),
        ])
        .await
        .unwrap();
    Snapshot {
        sessions: vec![session("s1")],
        participants: vec![participant("p1")],
        memberships: vec![membership("s1", "p1")],
    }
}

#[tokio::test]
async fn redb_keeps_what_was_committed_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let expected = {
        let store = RedbStore::open(&path).unwrap();
        exercise(&store).await
    };
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(sorted(store.load().await.unwrap()), expected);
}

#[tokio::test]
async fn memory_store_behaves_like_redb() {
    let store = MemoryStore::default();
    let expected = exercise(&store).await;
    assert_eq!(sorted(store.load().await.unwrap()), expected);
}

#[test]
fn a_corrupt_database_is_an_error_not_an_empty_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = RedbStore::open(&path).err().expect("garbage must not open");
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
}

#[test]
fn a_database_held_by_another_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let _first = RedbStore::open(&path).unwrap();
    assert!(RedbStore::open(&path).is_err());
}

#[tokio::test]
async fn an_unreadable_record_is_reported_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let store = RedbStore::open(&path).unwrap();
    let txn = store.db.begin_write().unwrap();
    txn.open_table(SESSIONS).unwrap().insert("bad", b"not json".as_slice()).unwrap();
    txn.commit().unwrap();
    match store.load().await {
        Err(StoreError::Corrupt { table: "session", key, .. }) => assert_eq!(key, "bad"),
        other => panic!("expected a corrupt-record error, got {other:?}"),
    }
}

#[test]
fn private_files_are_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    write_private_file(&path, b"x").unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read(&path).unwrap(), b"x");
}
