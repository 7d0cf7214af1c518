//! The systemd unit passes `systemd-analyze verify`, and its example config passes
//! `check-config` (that half is in cli.rs), and `make install` stages what the unit needs.

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
        panic!("systemd-analyze is not installed: install the `systemd` package (make test-deps does)");
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

/// `make install` puts the binary, the unit and the example config where the unit expects them;
/// staged here with DESTDIR (no user, no systemctl), twice, to see an edited config kept.
#[test]
fn make_install_stages_the_binary_unit_and_config_and_keeps_an_edited_config() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let dest = tempfile::tempdir().unwrap();
    let install = |prefix: &str| {
        let out = Command::new("make")
            .args(["-s", "-C", repo, "install-files"])
            .arg(format!("DESTDIR={}", dest.path().display()))
            .arg(format!("BIN={}", env!("CARGO_BIN_EXE_interwork")))
            .arg(format!("PREFIX={prefix}"))
            .output()
            .expect("make runs");
        assert!(out.status.success(), "make install-files: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o7777
    };
    let first = install("/usr");
    assert!(!first.contains("keeping"), "{first}");

    let bin = dest.path().join("usr/bin/interwork");
    assert_eq!(mode(&bin), 0o755);
    assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(env!("CARGO_BIN_EXE_interwork")).unwrap());
    let unit_path = dest.path().join("etc/systemd/system/interwork.service");
    assert_eq!(mode(&unit_path), 0o644);
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert!(
        unit.lines().any(|l| l.starts_with("ExecStart=/usr/bin/interwork run --config")),
        "ExecStart follows PREFIX: {unit}"
    );
    let config = dest.path().join("etc/interwork/interwork.toml");
    let example = std::fs::read_to_string(format!("{repo}/systemd/interwork.toml")).unwrap();
    assert_eq!(std::fs::read_to_string(&config).unwrap(), example);
    assert_eq!(mode(&config), 0o644, "the dynamic user reads the config");

    std::fs::write(&config, "# the operator's own\n").unwrap();
    let second = install("/usr");
    assert!(second.contains("keeping"), "{second}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# the operator's own\n");
    assert_eq!(std::fs::read_to_string(dest.path().join("etc/interwork/interwork.toml.example")).unwrap(), example);
}
