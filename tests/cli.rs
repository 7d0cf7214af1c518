//! The command line: `--version`, `--help`, `check-config`, `token` (`replay` has
//! its own suite, tests/replay_suite.rs).

mod common;

use std::process::{Command, Output};

use serde_json::Value;

fn interwork(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_interwork")).args(args).env_clear().envs(env.iter().copied()).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn version_and_help() {
    let v = interwork(&["--version"], &[]);
    assert!(v.status.success());
    assert_eq!(stdout(&v).trim(), format!("interwork {}", env!("CARGO_PKG_VERSION")));
    let h = interwork(&["--help"], &[]);
    assert!(h.status.success());
    for sub in ["run", "check-config", "token", "replay"] {
        assert!(stdout(&h).contains(sub), "{}", stdout(&h));
    }
    assert!(!interwork(&["frobnicate"], &[]).status.success());
}

#[test]
fn check_config_accepts_the_example_and_names_bad_keys() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/interwork.toml");
    let ok = interwork(&["check-config", example], &[]);
    assert!(ok.status.success(), "{}{}", stdout(&ok), String::from_utf8_lossy(&ok.stderr));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[http]\nlisten = \"127.0.0.1:0\"\nspeed = 3\n[media]\nrtp_port_min = 30000\nrtp_port_max = 20000\n\
         [sip]\ntls_listen = \"0.0.0.0:5061\"\ntls_cert = \"/no/such/cert.pem\"\ntls_key = \"/no/such/key.pem\"\n\
         max_calls = \"many\"\n",
    )
    .unwrap();
    let out = interwork(&["check-config", bad.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(64));
    let text = stdout(&out);
    for key in ["http.listen", "http.speed", "media.rtp_port_min", "sip.tls_cert", "sip.tls_key", "sip.max_calls"] {
        assert!(text.contains(key), "{key} missing from:\n{text}");
    }
    let missing = interwork(&["check-config", "/no/such/file.toml"], &[]);
    assert_eq!(missing.status.code(), Some(64));
}

/// check-config says what the daemon would warn about at start, without failing; its messages
/// speak of whole numbers, not Rust types; `INTERWORK_*` booleans take 1/0 as shells write them.
#[test]
fn check_config_warns_like_start_and_speaks_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let exposed = dir.path().join("exposed.toml");
    std::fs::write(&exposed, "[http]\nlisten = \"0.0.0.0:8080\"\n[sip]\nlisten = \"0.0.0.0:5060\"\n").unwrap();
    let out = interwork(&["check-config", exposed.to_str().unwrap()], &[]);
    let text = stdout(&out);
    assert!(out.status.success(), "warnings do not fail: {text}");
    assert!(text.contains("warning: demo.enabled:"), "{text}");
    assert!(text.contains("warning: media.public_ip:") && text.contains("127.0.0.1"), "{text}");
    assert!(text.trim_end().ends_with(": ok"), "{text}");

    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, "").unwrap();
    let quiet = interwork(&["check-config", plain.to_str().unwrap()], &[]);
    assert!(!stdout(&quiet).contains("warning"), "the embedded default is loopback: {}", stdout(&quiet));

    let negative = interwork(&["check-config", plain.to_str().unwrap()], &[("INTERWORK_SIP_MAX_CALLS", "-3")]);
    assert_eq!(negative.status.code(), Some(64));
    let text = stdout(&negative);
    assert!(text.contains("INTERWORK_SIP_MAX_CALLS") && text.contains("a whole number"), "{text}");
    assert!(!text.contains("u32"), "{text}");

    for (value, ok) in [("1", true), ("0", true), ("yes", true), ("off", true), ("maybe", false)] {
        let out = interwork(&["check-config", plain.to_str().unwrap()], &[("INTERWORK_DEMO_ENABLED", value)]);
        assert_eq!(out.status.success(), ok, "INTERWORK_DEMO_ENABLED={value}: {}", stdout(&out));
    }
    let on = interwork(
        &["check-config", exposed.to_str().unwrap()],
        &[("INTERWORK_DEMO_ENABLED", "0"), ("INTERWORK_MEDIA_PUBLIC_IP", "203.0.113.9")],
    );
    assert!(!stdout(&on).contains("warning"), "1/0 is read as a boolean: {}", stdout(&on));
}

#[test]
fn run_refuses_a_bad_config_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let out = interwork(
        &["run"],
        &[("INTERWORK_HTTP_LISTEN", "127.0.0.1:0"), ("INTERWORK_STATE_DIR", dir.path().join("s").to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("INTERWORK_HTTP_LISTEN"));
    assert!(!dir.path().join("s").exists(), "nothing is created by a refused start");
}

#[test]
fn token_mints_with_the_node_key() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // No daemon there: the participant cannot be checked, which is said, not fatal.
    let nobody = format!("127.0.0.1:{}", common::free_port());
    let env = [("INTERWORK_STATE_DIR", state.to_str().unwrap()), ("INTERWORK_HTTP_LISTEN", nobody.as_str())];
    // No key yet (the daemon never ran here): refused, and nothing is created.
    let out = interwork(&["token", "--participant", "p123"], &env);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no signing key") && err.contains("--config"), "{err}");
    assert!(!state.exists(), "the state directory was created");
    // The key the daemon made on its first start (a P-256 PKCS#8 key, as it writes).
    std::fs::create_dir_all(&state).unwrap();
    let made = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"])
        .arg(state.join("signing-key.pem"))
        .status()
        .expect("openssl (deps/test-packages.txt)");
    assert!(made.success());
    let out = interwork(&["token", "--participant", "p123", "--session", "s456", "--ttl", "10m"], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = stdout(&out).trim().to_string();
    assert!(format!("{token};encoding=jwt").len() <= 300);
    let payload = token.split('.').nth(1).unwrap();
    use base64::Engine as _;
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(
        (claims["sub"].as_str(), claims["sid"].as_str(), claims["aud"].as_str()),
        (Some("p123"), Some("s456"), Some("interwork"))
    );
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 600);
    let again = interwork(&["token", "--participant", "p123"], &env);
    assert!(again.status.success());
    let warned = String::from_utf8_lossy(&again.stderr);
    assert!(warned.contains("could not check that p123 exists") && warned.contains("minted anyway"), "{warned}");
    let unchecked = interwork(&["token", "--participant", "p123", "--no-check"], &env);
    assert!(unchecked.status.success() && unchecked.stderr.is_empty());
    let bad = interwork(&["token", "--participant", "bad id"], &env);
    assert!(!bad.status.success());
    let bad_ttl = interwork(&["token", "--participant", "p", "--ttl", "soon"], &env);
    assert!(!bad_ttl.status.success());
}

/// With the daemon running, `token` asks it: a participant (or session) it does not have is
/// refused, since the gateway would refuse the token at the INVITE.
#[test]
fn token_refuses_a_participant_the_running_daemon_does_not_have() {
    let d = common::Daemon::start();
    let c = common::Client::new();
    let (sid, pid, _) = common::session_with_participant(&d, &c);
    let env: Vec<(&str, &str)> = d.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    let ok = interwork(&["token", "--participant", &pid, "--session", &sid], &env);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(ok.stderr.is_empty(), "{}", String::from_utf8_lossy(&ok.stderr));

    let ghost = interwork(&["token", "--participant", "nosuchparticipant"], &env);
    assert_eq!(ghost.status.code(), Some(1));
    let err = String::from_utf8_lossy(&ghost.stderr);
    assert!(err.contains("participant nosuchparticipant does not exist"), "{err}");
    assert!(stdout(&ghost).is_empty(), "no token printed");

    let no_session = interwork(&["token", "--participant", &pid, "--session", "nosuchsession"], &env);
    assert_eq!(no_session.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_session.stderr).contains("session nosuchsession does not exist"));
}
