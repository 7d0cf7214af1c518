//! Logs through tracing (CONTRACT §7): text or JSON by config, API lines carry the request id.

mod common;

use std::time::Duration;

use common::{Client, Daemon};

fn logs_of(format: &str) -> String {
    let mut d = Daemon::start_with(&[("INTERWORK_LOG_FORMAT", format), ("RUST_LOG", "info")]);
    let c = Client::new();
    let r = c
        .http
        .get(d.api("/sessions/nope"))
        .basic_auth(common::USER, Some(common::PASSWORD))
        .header("x-request-id", "req-4242")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    d.signal("TERM");
    d.wait_exit(Duration::from_secs(30));
    d.logs.text_at_end(Duration::from_secs(10))
}

#[test]
fn json_logs_are_one_object_per_line_with_the_request_id() {
    let logs = logs_of("json");
    let lines: Vec<serde_json::Value> =
        logs.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let request = lines
        .iter()
        .find(|l| l.to_string().contains("req-4242"))
        .unwrap_or_else(|| panic!("no line with the request id:\n{logs}"));
    assert_eq!(request["span"]["id"], "req-4242", "{request}");
    assert!(request.to_string().contains("404"), "the response line has its status: {request}");
    assert!(lines.iter().any(|l| l["message"] == "draining" || l.to_string().contains("draining")), "{logs}");
}

#[test]
fn text_logs_carry_the_request_id() {
    let logs = logs_of("text");
    let line = logs.lines().find(|l| l.contains("req-4242")).unwrap_or_else(|| panic!("{logs}"));
    assert!(line.contains("request") && line.contains("404"), "{line}");
    assert!(serde_json::from_str::<serde_json::Value>(line).is_err(), "text, not JSON");
}
