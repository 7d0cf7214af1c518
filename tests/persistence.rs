//! Sessions, participants and subscriptions survive a SIGKILL of the real daemon; a damaged or
//! unusable state directory stops the start with a clear error instead of losing state.

mod common;

use std::process::Command;

use common::{Client, Daemon};
use serde_json::{Value, json};

#[test]
fn state_survives_sigkill_and_restart() {
    let mut d = Daemon::start_with(&[("INTERWORK_CALLBACKS_ALLOW_PRIVATE", "true")]);
    let c = Client::new();
    let (sid, alice, _) = common::session_with_participant(&d, &c);
    let bob: Value = c
        .post(
            &d.api("/participants"),
            json!({"publishPermissions": ["AUDIO"], "tag": "bob", "callbackUrl": "http://127.0.0.1:9/x"}),
        )
        .json()
        .unwrap();
    let bob = bob["participant"]["id"].as_str().unwrap().to_string();
    let subs = json!({"participants": [{"participantId": alice, "streamAliases": ["a1"]}]});
    assert_eq!(c.put(&d.api(&format!("/sessions/{sid}/participants/{bob}")), subs.clone()).status().as_u16(), 204);
    let before_session: Value = c.get(&d.api(&format!("/sessions/{sid}"))).json().unwrap();
    let before_bob: Value = c.get(&d.api(&format!("/participants/{bob}"))).json().unwrap();
    let jwks_before: Value = c.http.get(d.url("/.well-known/jwks.json")).send().unwrap().json().unwrap();

    d.kill();
    d.spawn();

    assert_eq!(c.get(&d.api(&format!("/sessions/{sid}"))).json::<Value>().unwrap(), before_session);
    assert_eq!(c.get(&d.api(&format!("/participants/{bob}"))).json::<Value>().unwrap(), before_bob);
    let got: Value = c.get(&d.api(&format!("/sessions/{sid}/participants/{bob}/subscriptions"))).json().unwrap();
    assert_eq!(got, subs);
    let alice_subs: Value =
        c.get(&d.api(&format!("/sessions/{sid}/participants/{alice}/subscriptions"))).json().unwrap();
    assert_eq!(alice_subs["sessionId"], sid);
    let members: Value = c.get(&d.api(&format!("/sessions/{sid}/participants"))).json().unwrap();
    assert_eq!(members.as_array().unwrap().len(), 2);
    let jwks_after: Value = c.http.get(d.url("/.well-known/jwks.json")).send().unwrap().json().unwrap();
    assert_eq!(jwks_before, jwks_after, "the signing key is reused");

    // Deletions persist too.
    assert_eq!(c.delete(&d.api(&format!("/sessions/{sid}"))).status().as_u16(), 204);
    d.kill();
    d.spawn();
    assert_eq!(c.get(&d.api(&format!("/sessions/{sid}"))).status().as_u16(), 404);
    assert_eq!(c.get(&d.api(&format!("/participants/{bob}"))).json::<Value>().unwrap()["sessions"], json!([]));
}

fn start_fails(state_dir: &std::path::Path) -> String {
    let d = Daemon::configure(state_dir, &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_interwork"))
        .arg("run")
        .env_clear()
        .envs(d.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(!out.status.success(), "the daemon must refuse to start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_corrupt_state_database_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    {
        let mut d = Daemon::configure(&state, &[]);
        d.spawn();
        let c = Client::new();
        common::session_with_participant(&d, &c);
        d.kill();
    }
    let db = state.join("interwork.redb");
    let mut bytes = std::fs::read(&db).unwrap();
    for b in bytes.iter_mut().take(4096) {
        *b ^= 0xa5;
    }
    std::fs::write(&db, &bytes).unwrap();
    let err = start_fails(&state);
    assert!(err.contains("interwork.redb") && err.contains("refusing to start"), "{err}");
}

#[test]
fn an_unusable_state_directory_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = start_fails(&file);
    assert!(err.contains("not a directory"), "{err}");
    let err = start_fails(&file.join("below"));
    assert!(err.contains("cannot create the state directory"), "{err}");
}

#[test]
fn the_state_directory_and_database_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let mut d = Daemon::configure(&state, &[]);
    d.spawn();
    let db = state.join("interwork.redb");
    assert_eq!(mode(&state), 0o700, "the state directory is created owner-only");
    assert_eq!(mode(&db), 0o600, "the database is created owner-only");
    assert_eq!(mode(&state.join("signing-key.pem")), 0o600);
    d.kill();

    // Opened up by someone else: tightened at the next start, and the operator is told.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.spawn();
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&db), 0o600);
    let err = d.kill_for_logs();
    assert!(err.contains("tightened") && err.contains("interwork.redb"), "{err}");
}
