//! `participantJoined` / `participantLeft` reach a participant's `callbackUrl`, off the request
//! path, retried with backoff when the receiver fails first.

mod common;

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use common::{Client, Daemon};
use serde_json::{Value, json};

/// A local receiver that fails its first `fail_first` requests with 503, then records events.
struct Receiver {
    url: String,
    events: mpsc::Receiver<Value>,
    attempts: Arc<Mutex<u32>>,
    _runtime: tokio::runtime::Runtime,
}

fn receiver(fail_first: u32) -> Receiver {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (tx, rx) = mpsc::channel();
    let attempts = Arc::new(Mutex::new(0u32));
    type Shared = (mpsc::Sender<Value>, Arc<Mutex<u32>>, u32);
    async fn handle(State((tx, attempts, fail_first)): State<Shared>, Json(body): Json<Value>) -> StatusCode {
        let n = {
            let mut a = attempts.lock().unwrap();
            *a += 1;
            *a
        };
        if n <= fail_first {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        tx.send(body).unwrap();
        StatusCode::NO_CONTENT
    }
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/events", axum::routing::post(handle)).with_state((
        tx,
        attempts.clone(),
        fail_first,
    ));
    runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { url, events: rx, attempts, _runtime: runtime }
}

impl Receiver {
    fn next(&mut self) -> Value {
        self.events.recv_timeout(Duration::from_secs(20)).expect("no callback arrived")
    }
}

fn daemon() -> Daemon {
    // The receivers are on loopback: allowed only by callbacks.allow_private.
    Daemon::start_with(&[
        ("INTERWORK_CALLBACKS_ALLOW_PRIVATE", "true"),
        ("INTERWORK_CALLBACKS_INITIAL_BACKOFF", "50ms"),
        ("INTERWORK_CALLBACKS_MAX_BACKOFF", "200ms"),
        ("INTERWORK_CALLBACKS_MAX_ATTEMPTS", "5"),
    ])
}

#[test]
fn joined_and_left_are_delivered() {
    let mut rx = receiver(0);
    let d = daemon();
    let c = Client::new();
    let s: Value = c.post(&d.api("/sessions"), json!({})).json().unwrap();
    let sid = s["id"].as_str().unwrap();
    let p: Value = c
        .post(&d.api("/participants"), json!({"publishPermissions": ["AUDIO"], "callbackUrl": rx.url}))
        .json()
        .unwrap();
    let pid = p["participant"]["id"].as_str().unwrap();
    assert_eq!(c.put(&d.api(&format!("/sessions/{sid}/participants/{pid}")), json!({})).status().as_u16(), 204);
    let joined = rx.next();
    assert_eq!(joined["event"], "participantJoined");
    assert_eq!((joined["sessionId"].as_str(), joined["participantId"].as_str()), (Some(sid), Some(pid)));
    assert_eq!(joined["accountId"], "default");
    assert!(joined["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(c.delete(&d.api(&format!("/sessions/{sid}/participants/{pid}"))).status().as_u16(), 204);
    let left = rx.next();
    assert_eq!(left["event"], "participantLeft");
    assert_eq!(left["reason"], "removed");
    // Deleting the session of a member reports why it left.
    let s2: Value = c.post(&d.api("/sessions"), json!({})).json().unwrap();
    let sid2 = s2["id"].as_str().unwrap();
    c.put(&d.api(&format!("/sessions/{sid2}/participants/{pid}")), json!({}));
    assert_eq!(rx.next()["event"], "participantJoined");
    c.delete(&d.api(&format!("/sessions/{sid2}")));
    assert_eq!(rx.next()["reason"], "sessionDeleted");
}

#[test]
fn a_receiver_that_fails_first_gets_the_event_on_a_retry() {
    let mut rx = receiver(2);
    let d = daemon();
    let c = Client::new();
    let s: Value = c.post(&d.api("/sessions"), json!({})).json().unwrap();
    let sid = s["id"].as_str().unwrap();
    let p: Value =
        c.post(&d.api("/participants"), json!({"publishPermissions": [], "callbackUrl": rx.url})).json().unwrap();
    let pid = p["participant"]["id"].as_str().unwrap();
    let started = std::time::Instant::now();
    assert_eq!(c.put(&d.api(&format!("/sessions/{sid}/participants/{pid}")), json!({})).status().as_u16(), 204);
    assert!(started.elapsed() < Duration::from_secs(5), "the API answered without waiting for the callback");
    let joined = rx.next();
    assert_eq!(joined["event"], "participantJoined");
    assert_eq!(*rx.attempts.lock().unwrap(), 3, "two failures, then delivered once");
}

#[test]
fn an_unreachable_receiver_does_not_block_the_api() {
    // Nothing listens on this port: every attempt fails fast, the API is unaffected.
    let port = common::free_port();
    let d = daemon();
    let c = Client::new();
    let s: Value = c.post(&d.api("/sessions"), json!({})).json().unwrap();
    let sid = s["id"].as_str().unwrap();
    let url = format!("http://127.0.0.1:{port}/events");
    let p: Value =
        c.post(&d.api("/participants"), json!({"publishPermissions": [], "callbackUrl": url})).json().unwrap();
    let pid = p["participant"]["id"].as_str().unwrap();
    assert_eq!(c.put(&d.api(&format!("/sessions/{sid}/participants/{pid}")), json!({})).status().as_u16(), 204);
    assert_eq!(c.get(&d.api(&format!("/sessions/{sid}"))).status().as_u16(), 200);
    // The failure is counted once the attempts are exhausted.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = c.http.get(d.url("/metrics")).send().unwrap().text().unwrap();
        if text.lines().any(|l| l.starts_with("interwork_callbacks_total{outcome=\"failed\"} 1")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "failure never counted:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SSRF: by default a `callbackUrl` may not aim inside (loopback, link-local metadata, private,
/// CGNAT, ULA, multicast, mapped forms, `localhost`), nor use another scheme than http(s).
#[test]
fn callbacks_aimed_inside_are_refused_unless_allowed() {
    let d = Daemon::start();
    let c = Client::new();
    for url in [
        "http://127.0.0.1:9/events",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/events",
        "http://192.168.1.1/events",
        "http://172.16.0.1/events",
        "http://100.64.0.1/events",
        "http://0.0.0.0:8080/events",
        "http://[::1]/events",
        "http://[::ffff:169.254.169.254]/events",
        "http://[fd00::1]/events",
        "http://[fe80::1]/events",
        "http://224.0.0.1/events",
        "http://2130706433/events",
        "http://localhost:8080/events",
        "ftp://example.com/events",
        "file:///etc/passwd",
    ] {
        let r = c.post(&d.api("/participants"), json!({"publishPermissions": [], "callbackUrl": url}));
        assert_eq!(r.status().as_u16(), 400, "{url}");
        let body: Value = r.json().unwrap();
        assert_eq!(body["code"], "INVALID_ARGUMENT", "{url}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("callbackUrl"), "{url}: {message}");
    }
    let r =
        c.post(&d.api("/participants"), json!({"publishPermissions": [], "callbackUrl": "http://169.254.169.254/"}));
    let message = r.json::<Value>().unwrap()["message"].as_str().unwrap().to_string();
    assert!(message.contains("internal") && message.contains("callbacks.allow_private"), "{message}");
    // Public destinations are fine.
    let r = c.post(
        &d.api("/participants"),
        json!({"publishPermissions": [], "callbackUrl": "https://hooks.example.com/interwork"}),
    );
    assert_eq!(r.status().as_u16(), 200);

    let allowed = daemon();
    let r = c.post(
        &allowed.api("/participants"),
        json!({"publishPermissions": [], "callbackUrl": "http://127.0.0.1:9/events"}),
    );
    assert_eq!(r.status().as_u16(), 200, "callbacks.allow_private lets tests reach loopback");
    let r = c.post(&allowed.api("/participants"), json!({"publishPermissions": [], "callbackUrl": "ftp://127.0.0.1/"}));
    assert_eq!(r.status().as_u16(), 400, "but never another scheme");
}
