//! The README's commands, run as written: the walk through the API, then the sipp call of
//! "Calling it over SIP" with `examples/call.xml`. The shell blocks are read from the README
//! itself, so the test breaks when they do. Only what a test must change is changed: the
//! daemon's ports (the README's are the embedded default's) and the path of the binary.
//!
//! The daemon starts as a newcomer's does: credentials generated into `./interwork-state/` of
//! the directory the commands run in. The call must end with sipp's BYE (not the gateway's
//! "no ACK" after 32 s) with sipp's audio received by the gateway.
//!
//! Needs root (sipp's `play_pcap_audio`), sipp, curl and python3.

mod common;

use std::process::Command;

use common::{Client, Daemon};

/// The shell blocks (```sh) of the README section headed `heading`.
fn shell_blocks(readme: &str, heading: &str) -> String {
    let start = readme.find(&format!("\n## {heading}\n")).unwrap_or_else(|| panic!("no section {heading}"));
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut script = String::new();
    let mut inside = false;
    for line in section.lines() {
        match (inside, line.trim()) {
            (false, "```sh") => inside = true,
            (true, "```") => inside = false,
            (true, _) => script.push_str(&format!("{line}\n")),
            _ => {}
        }
    }
    assert!(!script.is_empty(), "no shell block under {heading}");
    script
}

#[test]
fn the_readme_walk_through_and_sipp_call_run_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("interwork-state");
    // No configured credentials: generated on the first start, as for `make run`.
    let d = Daemon::start_with(&[
        ("INTERWORK_STATE_DIR", state.to_str().unwrap()),
        ("INTERWORK_ACCOUNTS_DEFAULT_USERNAME", ""),
        ("INTERWORK_ACCOUNTS_DEFAULT_PASSWORD", ""),
    ]);
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let script = format!(
        "set -euo pipefail\n{}\n{}",
        shell_blocks(&readme, "A walk through the API"),
        shell_blocks(&readme, "Calling it over SIP")
    )
    .replace("http://127.0.0.1:8080", &d.url(""))
    .replace("127.0.0.1:5060", &d.sip_addr().to_string())
    .replace("./target/release/interwork", env!("CARGO_BIN_EXE_interwork"))
    .replace("examples/call.xml", concat!(env!("CARGO_MANIFEST_DIR"), "/examples/call.xml"));
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("bash");
    let said = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the README's commands failed:\n{said}\n--- script\n{script}");
    // The walk-through's PUT answered 204 (printed after the participant's JSON), and the
    // UUI line carries a JWT.
    assert!(said.lines().any(|l| l.trim_end().ends_with("}204")), "{said}");
    assert!(said.contains("User-to-User: ey") && said.contains(";encoding=jwt"), "{said}");
    // The listing answered with a page.
    assert!(said.contains(r#""sessions":[{"#) && said.contains(r#""nextCursor":null"#), "{said}");
    // sipp's summary: one successful call, none failed.
    let count = |label: &str| -> Option<u64> {
        let line = said.lines().find(|l| l.trim_start().starts_with(label))?;
        line.split('|').nth(2)?.trim().parse().ok()
    };
    assert_eq!((count("Successful call"), count("Failed call")), (Some(1), Some(0)), "{said}");
    // The call ended by sipp's BYE, with sipp's 7 s of audio in it (the pcap's 236 packets).
    let metrics = Client::new().http.get(d.url("/metrics")).send().unwrap().text().unwrap();
    let value = |name: &str| -> f64 {
        metrics.lines().find_map(|l| l.strip_prefix(name)).map_or(0.0, |v| v.trim().parse().unwrap())
    };
    assert_eq!(value("interwork_sip_active_dialogs "), 0.0, "{metrics}");
    assert!(value("interwork_media_leg_total{kind=\"rtp_received\"} ") >= 230.0, "{metrics}");
}
