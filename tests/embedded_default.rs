//! `interwork run` with no config file (CONTRACT §1): HTTP on 127.0.0.1:8080, state in
//! `./interwork-state/` (created), credentials and signing key generated on the first start
//! (mode 0600), printed once, reused later; once it serves it prints where to go next.
//!
//! This is the one test that uses the fixed default ports; it runs in its own working directory.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `interwork run` in `dir`; returns the process and its stdout lines until it says where
/// to go (it serves by then).
fn start(dir: &std::path::Path) -> (Killed, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_interwork"))
        .arg("run")
        .current_dir(dir)
        .env_clear()
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Killed(child);
    // Lines come from a reader thread so that every wait is bounded; the daemon says it is
    // ready, and where to go, once it serves: everything printed before is in by then.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("never said where to go: {lines:?}"));
        let last = line.trim_start().starts_with("SIP ");
        lines.push(line);
        if last {
            return (child, lines);
        }
    }
}

#[test]
fn first_start_generates_and_prints_credentials_later_starts_reuse_them() {
    let dir = tempfile::tempdir().unwrap();
    let (first, lines) = start(dir.path());
    let state = dir.path().join("interwork-state");
    assert!(state.is_dir(), "./interwork-state is created");
    for file in ["credentials.json", "signing-key.pem"] {
        let mode = std::fs::metadata(state.join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    let creds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("credentials.json")).unwrap()).unwrap();
    let user = creds["accounts"]["default"]["username"].as_str().unwrap().to_string();
    let password = creds["accounts"]["default"]["password"].as_str().unwrap().to_string();
    // Where to go next: the API, the demo, the SIP address.
    let said = lines.join("\n");
    assert!(said.contains("interwork: ready"), "{said}");
    assert!(said.contains("http://127.0.0.1:8080/v1/accounts/default"), "{said}");
    assert!(said.contains("http://127.0.0.1:8080/demo/"), "{said}");
    assert!(said.contains("sip:anyone@127.0.0.1:5060"), "{said}");
    let printed: Vec<&String> = lines.iter().filter(|l| l.contains("generated credentials")).collect();
    assert_eq!(printed.len(), 1, "{lines:?}");
    assert!(printed[0].contains(&format!("username={user}")) && printed[0].contains(&format!("password={password}")));

    let client = reqwest::blocking::Client::new();
    let r = client
        .post("http://127.0.0.1:8080/v1/accounts/default/sessions")
        .basic_auth(&user, Some(&password))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    drop(first);

    let (_second, lines) = start(dir.path());
    assert!(!lines.iter().any(|l| l.contains("password")), "printed only once: {lines:?}");
    let r = client
        .post("http://127.0.0.1:8080/v1/accounts/default/sessions")
        .basic_auth(&user, Some(&password))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "the same credentials work after a restart");
}
