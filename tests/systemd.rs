//! The systemd unit (CONTRACT §7) passes `systemd-analyze verify`, and its example config passes
//! `check-config` (that half is in cli.rs).

use std::process::Command;

#[test]
fn the_unit_verifies_and_has_the_contracts_settings() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/interwork.service")).unwrap();
    for setting in [
        "Type=notify",
        "WatchdogSec=",
        "User=interwork",
        "StateDirectory=interwork",
        "ConfigurationDirectory=interwork",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(setting)), "{setting} missing");
    }
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        panic!("systemd-analyze is not installed: install the `systemd` package (make deps does)");
    };
    assert!(probe.status.success());
    // verify checks that ExecStart's binary exists: point it at the one just built.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("interwork.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/interwork", env!("CARGO_BIN_EXE_interwork"))).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about the machine's other units are not ours; only our file may not be named.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("interwork.service")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify: {stderr}");
}
