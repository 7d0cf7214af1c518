//! SIGTERM drains (CONTRACT §7): `/readyz` turns 503 while live calls finish, and the process
//! exits 0 within the drain timeout.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::Daemon;
use interwork::app::Daemon as InProcess;
use interwork::config::Config;

#[test]
fn sigterm_exits_zero_promptly_when_idle() {
    let mut d = Daemon::start_with(&[("INTERWORK_SHUTDOWN_DRAIN_TIMEOUT", "20s")]);
    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}");
}

#[test]
fn sigint_drains_like_sigterm() {
    let mut d = Daemon::start();
    d.signal("INT");
    assert!(d.wait_exit(Duration::from_secs(15)).success());
}

/// The daemon in this process on SIP and WebRTC ports found free; when another process took one
/// before the daemon bound it, again on others (up to 4 times).
async fn prepare_on_free_ports(mut env: HashMap<String, String>) -> InProcess {
    for attempt in 1..=4 {
        for key in ["INTERWORK_SIP_LISTEN", "INTERWORK_MEDIA_WEBRTC_LISTEN"] {
            env.insert(key.into(), format!("127.0.0.1:{}", common::free_port()));
        }
        match InProcess::prepare(Config::from_toml_str("", &env).unwrap()).await {
            Ok(daemon) => return daemon,
            Err(e) if attempt < 4 && format!("{e:#}").contains("in use") => continue,
            Err(e) => panic!("the daemon did not start: {e:#}"),
        }
    }
    unreachable!("the loop returns or fails")
}

#[tokio::test]
async fn readyz_is_503_while_live_calls_drain_and_the_drain_ends_at_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let env: HashMap<String, String> = [
        ("INTERWORK_STATE_DIR", tmp.path().to_str().unwrap()),
        ("INTERWORK_SHUTDOWN_DRAIN_TIMEOUT", "2s"),
        ("INTERWORK_ACCOUNTS_DEFAULT_PASSWORD", "pw"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let daemon = prepare_on_free_ports(env).await;
    let drain = daemon.state.drain.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/readyz", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let call = drain.call();
    let started = tokio::time::Instant::now();
    let server = tokio::spawn(daemon.serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    assert_eq!(client.get(&url).send().await.unwrap().status().as_u16(), 200);
    stop.send(()).unwrap();
    drain.started().await;
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["status"], "draining");
    // The live call never ends: the daemon stops when the drain timeout passes.
    server.await.unwrap().unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2), "waited for the live call: {took:?}");
    drop(call);
}

#[tokio::test]
async fn a_drain_ends_early_when_the_last_call_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let env: HashMap<String, String> =
        [("INTERWORK_STATE_DIR", tmp.path().to_str().unwrap()), ("INTERWORK_SHUTDOWN_DRAIN_TIMEOUT", "1h")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let daemon = prepare_on_free_ports(env).await;
    let drain = daemon.state.drain.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let call = drain.call();
    let server = tokio::spawn(daemon.serve(listener, async {}));
    drain.started().await;
    assert!(!server.is_finished());
    drop(call);
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("stopped after the last call").unwrap().unwrap();
}
