//! The device WebSocket against bad input (no browser needed): bad and expired tokens close
//! with the documented codes, malformed and out-of-order messages get protocol errors and the
//! socket stays usable, floods and oversized messages are bounded, a second tab replaces the
//! first, and a participant removed through the API is disconnected.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{Client, Daemon};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn open(d: &Daemon, origin: Option<&str>) -> Ws {
    let mut req = format!("ws://{}/v1/device", d.http).into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await.unwrap().unwrap();
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// The next JSON message, skipping pings; panics on close or after WAIT.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next()).await.expect("a message in time");
        match m {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame; returns its code.
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a close in time") {
            Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
            Some(Ok(Message::Close(None))) | None => panic!("closed without a code"),
            Some(Err(e)) => panic!("socket error before the close frame: {e}"),
            Some(Ok(_)) => {}
        }
    }
}

async fn connected(d: &Daemon, token: &str) -> Ws {
    let mut ws = open(d, None).await;
    send(&mut ws, json!({"type": "hello", "token": token})).await;
    let welcome = next(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    ws
}

fn minter(d: &Daemon) -> interwork::tokens::Minter {
    let (key, _) = interwork::tokens::NodeKey::load_or_generate(&d.state_dir.join("signing-key.pem")).unwrap();
    interwork::tokens::Minter::new(Arc::new(key), "iw", Duration::from_secs(3600))
}

#[test]
fn bad_tokens_close_with_the_documented_codes() {
    let d = Daemon::start();
    let c = Client::new();
    let (_, pid, token) = common::session_with_participant(&d, &c);
    let m = minter(&d);
    let expired = m.mint(
        &pid.as_str().into(),
        None,
        None,
        Some(Duration::from_secs(60)),
        SystemTime::now() - Duration::from_secs(7200),
    );
    let unknown = m.mint(&"nobody".into(), None, None, None, SystemTime::now());
    let tampered = format!("{}x", &token[..token.len() - 1]);
    runtime().block_on(async {
        for (what, first, code) in [
            ("garbage token", json!({"type": "hello", "token": "not.a.jwt"}), 4001),
            ("tampered signature", json!({"type": "hello", "token": tampered}), 4001),
            ("expired token", json!({"type": "hello", "token": expired}), 4001),
            ("unknown participant", json!({"type": "hello", "token": unknown}), 4004),
            ("no hello first", json!({"type": "publish", "requestId": 1, "audio": true}), 4002),
            ("not JSON", json!("hello?"), 4002),
        ] {
            let mut ws = open(&d, None).await;
            send(&mut ws, first).await;
            assert_eq!(close_code(&mut ws).await, code, "{what}");
        }
        // A valid token works from any Origin: the token is the credential.
        let mut ws = open(&d, Some("https://customer.example")).await;
        send(&mut ws, json!({"type": "hello", "token": token})).await;
        let welcome = next(&mut ws).await;
        assert_eq!(welcome["participantId"], pid);
        assert_eq!(welcome["publishPermissions"], json!(["AUDIO"]));
    });
}

#[test]
fn malformed_and_out_of_order_messages_get_protocol_errors() {
    let d = Daemon::start();
    let c = Client::new();
    let (_, _, token) = common::session_with_participant(&d, &c);
    runtime().block_on(async {
        let mut ws = connected(&d, &token).await;
        for (bad, code) in [
            ("{", "PROTOCOL_ERROR"),
            ("[1,2]", "PROTOCOL_ERROR"),
            (r#"{"type":"launch"}"#, "PROTOCOL_ERROR"),
            (r#"{"type":"publish","requestId":"one"}"#, "PROTOCOL_ERROR"),
            (r#"{"type":"hello","token":"again"}"#, "OUT_OF_ORDER"),
            (r#"{"type":"answer","sdp":"v=0"}"#, "OUT_OF_ORDER"),
            (r#"{"type":"dtmf","tones":"1x"}"#, "INVALID_ARGUMENT"),
            (r#"{"type":"publish","requestId":4,"video":true}"#, "PERMISSION_DENIED"),
        ] {
            ws.send(Message::text(bad)).await.unwrap();
            let e = next(&mut ws).await;
            assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some(code)), "{bad}: {e}");
        }
        ws.send(Message::binary(vec![0u8; 10])).await.unwrap();
        assert_eq!(next(&mut ws).await["code"], "PROTOCOL_ERROR");
        // Still alive.
        send(&mut ws, json!({"type": "ping", "id": 9})).await;
        assert_eq!(next(&mut ws).await, json!({"type": "pong", "id": 9}));
        // A polite goodbye closes with 1000.
        send(&mut ws, json!({"type": "bye"})).await;
        assert_eq!(close_code(&mut ws).await, 1000);
    });
}

#[test]
fn floods_and_oversized_messages_are_bounded() {
    let d = Daemon::start();
    let c = Client::new();
    let (_, _, token) = common::session_with_participant(&d, &c);
    runtime().block_on(async {
        let mut ws = connected(&d, &token).await;
        for i in 0..500 {
            if ws.send(Message::text(json!({"type": "ping", "id": i}).to_string())).await.is_err() {
                break;
            }
        }
        assert_eq!(close_code(&mut ws).await, 4008);

        let mut ws = connected(&d, &token).await;
        let big = json!({"type": "answer", "sdp": "a".repeat(100 * 1024)}).to_string();
        let _ = ws.send(Message::text(big.clone())).await;
        assert_eq!(close_code(&mut ws).await, 1009);

        // Before `hello` too: an oversized first message is "message too big", not a normal close.
        let mut ws = open(&d, None).await;
        let _ = ws.send(Message::text(big)).await;
        assert_eq!(close_code(&mut ws).await, 1009, "oversized first message");
    });
    // The daemon is fine afterwards.
    assert_eq!(c.get(&d.url("/healthz")).status().as_u16(), 200);
}

#[test]
fn a_second_tab_replaces_the_first_and_removal_disconnects() {
    let d = Daemon::start();
    let c = Client::new();
    let (sid, pid, token) = common::session_with_participant(&d, &c);
    runtime().block_on(async {
        let mut first = connected(&d, &token).await;
        let mut second = connected(&d, &token).await;
        assert_eq!(close_code(&mut first).await, 4009);
        send(&mut second, json!({"type": "ping"})).await;
        assert_eq!(next(&mut second).await["type"], "pong");
        let url = d.api(&format!("/sessions/{sid}/participants/{pid}"));
        let status = tokio::task::spawn_blocking(move || Client::new().delete(&url).status().as_u16()).await.unwrap();
        assert_eq!(status, 204);
        assert_eq!(close_code(&mut second).await, 4010);
    });
}

#[test]
fn the_sdk_is_served_and_the_demo_only_when_enabled() {
    let c = Client::new();
    let on = Daemon::start();
    let js = c.get(&on.url("/sdk/interwork.js"));
    assert_eq!(js.status().as_u16(), 200);
    assert!(js.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(js.text().unwrap().contains("InterworkRtc"));
    let dts = c.get(&on.url("/sdk/interwork.d.ts")).text().unwrap();
    assert!(dts.contains("declare class InterworkRtc"));
    assert_eq!(c.get(&on.url("/demo/")).status().as_u16(), 200);
    let info: Value = c.get(&on.url("/demo/connectionInfo")).json().unwrap();
    assert!(info["sipUri"].as_str().unwrap().starts_with("sip:demo@127.0.0.1:"), "{info}");
    assert!(info["userToUser"].as_str().unwrap().ends_with(";encoding=jwt"), "{info}");
    // The browser and the phone participant are in the same demo session, hearing everyone.
    let sid = info["sessionId"].as_str().unwrap();
    let members: Value = c.get(&on.api(&format!("/sessions/{sid}/participants"))).json().unwrap();
    assert_eq!(members.as_array().unwrap().len(), 2, "{members}");

    let off = Daemon::start_with(&[("INTERWORK_DEMO_ENABLED", "false")]);
    assert_eq!(c.get(&off.url("/demo/")).status().as_u16(), 404);
    assert_eq!(c.get(&off.url("/demo/connectionInfo")).status().as_u16(), 404);
    assert_eq!(c.get(&off.url("/sdk/interwork.js")).status().as_u16(), 200);
}

/// `/demo/connectionInfo` with its source address chosen (Linux routes all of 127/8 to lo).
fn demo_request(d: &Daemon, source: &str) -> reqwest::blocking::Response {
    reqwest::blocking::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .timeout(WAIT)
        .build()
        .unwrap()
        .get(d.url("/demo/connectionInfo"))
        .send()
        .unwrap()
}

fn participants_alive(d: &Daemon, c: &Client) -> u64 {
    let text = c.get(&d.url("/metrics")).text().unwrap();
    let line = text.lines().find(|l| l.starts_with("interwork_participants ")).expect("participants gauge");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn the_demo_has_its_own_quota_and_never_takes_the_accounts_room() {
    let d = Daemon::start_with(&[
        ("INTERWORK_DEMO_MAX_PARTICIPANTS", "4"),
        ("INTERWORK_DEMO_REQUESTS_PER_MINUTE", "1000"),
        ("INTERWORK_SESSIONS_MAX_PARTICIPANTS", "2"),
    ]);
    let c = Client::new();
    for _ in 0..2 {
        assert_eq!(demo_request(&d, "127.0.0.1").status().as_u16(), 200);
    }
    // Full: refused with a time to come back, and a refused request makes nothing.
    for _ in 0..30 {
        let r = demo_request(&d, "127.0.0.1");
        assert!(r.headers().get("retry-after").is_some());
        assert_eq!(common::error_code(r, 429), "RESOURCE_EXHAUSTED");
    }
    assert_eq!(participants_alive(&d, &c), 4, "two pairs, no orphans from the refusals");
    // The account's own quota (2) is untouched by the demo's 4 participants.
    for _ in 0..2 {
        let r = c.post(&d.api("/participants"), json!({"publishPermissions": ["AUDIO"]}));
        assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    }
    let r = c.post(&d.api("/participants"), json!({"publishPermissions": ["AUDIO"]}));
    assert_eq!(common::error_code(r, 429), "RESOURCE_EXHAUSTED", "the account's own limit still holds");
}

#[test]
fn demo_requests_are_rate_limited_per_source_address() {
    let d = Daemon::start_with(&[("INTERWORK_DEMO_REQUESTS_PER_MINUTE", "3")]);
    for _ in 0..3 {
        assert_eq!(demo_request(&d, "127.0.0.1").status().as_u16(), 200);
    }
    let r = demo_request(&d, "127.0.0.1");
    let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(common::error_code(r, 429), "RESOURCE_EXHAUSTED");
    assert_eq!(demo_request(&d, "127.0.0.3").status().as_u16(), 200, "another address has its own allowance");
}

#[test]
fn demo_participants_and_their_tokens_expire() {
    let d = Daemon::start_with(&[("INTERWORK_DEMO_LIFETIME", "2s")]);
    let c = Client::new();
    let info: Value = demo_request(&d, "127.0.0.1").json().unwrap();
    let ids = [info["participantId"].as_str().unwrap(), info["phoneParticipantId"].as_str().unwrap()];
    for id in ids {
        assert_eq!(c.get(&d.api(&format!("/participants/{id}"))).status().as_u16(), 200);
    }
    // The token lives as long as its participant.
    use base64::Engine as _;
    let payload = info["token"].as_str().unwrap().split('.').nth(1).unwrap().to_string();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 2);
    // Polling a condition with a bound, not sleeping for a guessed duration.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ids.iter().any(|id| c.get(&d.api(&format!("/participants/{id}"))).status().as_u16() != 404) {
        assert!(std::time::Instant::now() < deadline, "demo participants never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(participants_alive(&d, &c), 0);
}
