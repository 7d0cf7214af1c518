//! `/openapi.json` is generated from the code and matches what the server does: every
//! documented operation is served (no 405, no unknown route), every account route the server
//! has is documented, and responses carry the documented fields.

mod common;

use std::collections::BTreeSet;

use common::{Client, Daemon};
use reqwest::Method;
use serde_json::{Value, json};

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

#[test]
fn the_document_lists_exactly_the_contracts_operations() {
    let d = Daemon::start();
    let doc: Value = reqwest::blocking::get(d.url("/openapi.json")).unwrap().json().unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let base = "/v1/accounts/{accountId}";
    let expected: BTreeSet<(String, String)> = [
        ("POST", "/sessions"),
        ("GET", "/sessions/{sessionId}"),
        ("DELETE", "/sessions/{sessionId}"),
        ("GET", "/sessions/{sessionId}/participants"),
        ("PUT", "/sessions/{sessionId}/participants/{participantId}"),
        ("DELETE", "/sessions/{sessionId}/participants/{participantId}"),
        ("GET", "/sessions/{sessionId}/participants/{participantId}/subscriptions"),
        ("PUT", "/sessions/{sessionId}/participants/{participantId}/subscriptions"),
        ("POST", "/participants"),
        ("GET", "/participants/{participantId}"),
        ("DELETE", "/participants/{participantId}"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), format!("{base}{p}")))
    .collect();
    assert_eq!(operations(&doc), expected);
    assert_eq!(doc["components"]["securitySchemes"]["basic"]["scheme"], "basic");
}

#[test]
fn every_documented_operation_is_served() {
    let d = Daemon::start();
    let c = Client::new();
    let doc: Value = reqwest::blocking::get(d.url("/openapi.json")).unwrap().json().unwrap();
    let (sid, pid, _) = common::session_with_participant(&d, &c);
    for (method, path) in operations(&doc) {
        let url = d.url(
            &path.replace("{accountId}", "default").replace("{sessionId}", &sid).replace("{participantId}", "ghost"),
        );
        let r = c.raw(Method::from_bytes(method.as_bytes()).unwrap(), &url, "{}");
        let status = r.status().as_u16();
        let body: Value = r.json().unwrap_or(Value::Null);
        assert_ne!(status, 405, "{method} {path}");
        assert_ne!(body["message"], "no such route", "{method} {path} is documented but not routed");
        // Every error the server gives is in the documented error shape.
        if status >= 400 {
            assert!(body["code"].is_string() && body["status"] == status, "{method} {path}: {body}");
        }
    }
    let _ = pid;
}

#[test]
fn responses_carry_the_documented_fields() {
    let d = Daemon::start();
    let c = Client::new();
    let doc: Value = reqwest::blocking::get(d.url("/openapi.json")).unwrap().json().unwrap();
    let schema = |name: &str| -> BTreeSet<String> {
        let s = &doc["components"]["schemas"][name];
        let props: BTreeSet<String> = s["properties"].as_object().unwrap().keys().cloned().collect();
        let required: BTreeSet<String> =
            s["required"].as_array().into_iter().flatten().map(|v| v.as_str().unwrap().to_string()).collect();
        assert!(required.is_subset(&props));
        props
    };
    let keys = |v: &Value| -> BTreeSet<String> { v.as_object().unwrap().keys().cloned().collect() };
    let session: Value = c.post(&d.api("/sessions"), json!({"tag": "x"})).json().unwrap();
    assert_eq!(keys(&session), schema("SessionBody"));
    let created: Value = c
        .post(
            &d.api("/participants"),
            json!({"publishPermissions": ["AUDIO"], "callbackUrl": "http://127.0.0.1:9/",
            "deviceApiVersion": "V3", "tag": "t"}),
        )
        .json()
        .unwrap();
    assert_eq!(keys(&created), schema("CreatedParticipant"));
    assert_eq!(keys(&created["participant"]), schema("ParticipantBody"));
    let err: Value = c.get(&d.api("/sessions/none")).json().unwrap();
    assert_eq!(keys(&err), schema("ErrorBody"));
}
