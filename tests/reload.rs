//! SIGHUP reloads what can change without dropping calls (CONTRACT §7): the log level, the
//! token keys and `sip.trusted_peers`, read again from the config file; a config with problems
//! changes nothing; the daemon and its calls stay up throughout.

mod common;
#[path = "support/sip_ua.rs"]
mod sip_ua;

use std::path::Path;
use std::time::Duration;

use common::{Client, Daemon};
use sip_ua::{MediaPeer, PeerCodec, SipUa};

fn write_config(path: &Path, level: &str, trusted_peers: &str) {
    std::fs::write(path, format!("[log]\nlevel = \"{level}\"\n\n[sip]\ntrusted_peers = [{trusted_peers}]\n")).unwrap();
}

/// Waits for a stderr line containing `what`, at most 10 s.
/// The next line of the daemon's logs with `what` (within 10 s).
fn wait_for_line(d: &Daemon, cursor: &mut usize, what: &str) -> String {
    d.logs
        .next_line_with(cursor, what, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the daemon logged no line with {what:?}"))
}

#[test]
fn sighup_reloads_the_log_level_and_trusted_peers_and_keeps_calls() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("interwork.toml");
    write_config(&file, "warn", "\"192.0.2.0/24\"");
    let mut d = Daemon::configure(&tmp.path().join("state"), &[]);
    d.config_file = Some(file.clone());
    d.rust_log = None;
    d.spawn();
    let mut cursor = 0;
    let c = Client::new();
    let (_, _, token) = common::session_with_participant(&d, &c);
    // Transfer mode: a BYE takes its participant out of the session, so the last call is another.
    let (_, _, other) = common::session_with_participant(&d, &c);
    let sip = d.sip_addr();
    let media = MediaPeer::bind(PeerCodec::Pcmu);

    // 127.0.0.1 is not a trusted peer yet.
    let (status, _) = SipUa::new(sip).try_invite(&token, &media.offer("sendrecv", 1));
    assert_eq!(status, 403);

    // Trust loopback, log at info: the reload's own info line shows that the level changed.
    write_config(&file, "info", "\"127.0.0.0/8\"");
    d.signal("HUP");
    let line = wait_for_line(&d, &mut cursor, "configuration reloaded");
    assert!(line.contains("trusted_peers=1"), "{line}");
    let mut call = SipUa::new(sip);
    let (status, response) = call.try_invite(&token, &media.offer("sendrecv", 1));
    assert_eq!(status, 200, "{response}");

    // A config with problems changes nothing; the daemon and the call stay.
    std::fs::write(&file, "[sip]\ntrusted_peers = [\"not-a-network\"]\n").unwrap();
    d.signal("HUP");
    let line = wait_for_line(&d, &mut cursor, "nothing reloaded");
    assert!(line.contains("sip.trusted_peers"), "the problem names its key: {line}");
    assert_eq!(c.http.get(d.url("/healthz")).send().unwrap().status().as_u16(), 200);
    assert_eq!(call.bye(), 200, "the call survived both reloads");
    let mut last = SipUa::new(sip);
    let (status, _) = last.try_invite(&other, &media.offer("sendrecv", 1));
    assert_eq!(status, 200, "loopback is still trusted");
    assert_eq!(last.bye(), 200);

    d.signal("TERM");
    assert!(d.wait_exit(Duration::from_secs(15)).success());
}
