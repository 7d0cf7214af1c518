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
    let d = Daemon::start_with(&[("INTERWORK_CALLBACKS_ALLOW_PRIVATE", "true")]);
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

/// The document and the server agree that the bodies whose fields are all optional may be left
/// out: no `required` body in the document, and 200/204 from the server for no body at all, with
/// or without a Content-Type.
#[test]
fn optional_bodies_are_optional_in_the_document_and_the_server() {
    let d = Daemon::start();
    let c = Client::new();
    let doc: Value = reqwest::blocking::get(d.url("/openapi.json")).unwrap().json().unwrap();
    let base = "/v1/accounts/{accountId}";
    for (method, path) in [
        ("post", "/sessions"),
        ("put", "/sessions/{sessionId}/participants/{participantId}"),
        ("put", "/sessions/{sessionId}/participants/{participantId}/subscriptions"),
    ] {
        let body = &doc["paths"][format!("{base}{path}")][method]["requestBody"];
        assert!(body.is_object(), "{method} {path} documents its body");
        assert_ne!(body["required"], true, "{method} {path}: the body is optional: {body}");
    }
    // POST /participants needs publishPermissions: its body stays required.
    assert_eq!(doc["paths"][format!("{base}/participants")]["post"]["requestBody"]["required"], true);

    let http = &c.http;
    let auth = |b: reqwest::blocking::RequestBuilder| b.basic_auth(common::USER, Some(common::PASSWORD));
    let no_type = auth(http.post(d.api("/sessions"))).send().unwrap();
    assert_eq!(no_type.status().as_u16(), 200);
    assert!(no_type.json::<Value>().unwrap()["tag"].is_null());
    let json_type = auth(http.post(d.api("/sessions")).header("content-type", "application/json")).send().unwrap();
    assert_eq!(json_type.status().as_u16(), 200);
    let sid = json_type.json::<Value>().unwrap()["id"].as_str().unwrap().to_string();
    let p: Value = c.post(&d.api("/participants"), json!({"publishPermissions": []})).json().unwrap();
    let pid = p["participant"]["id"].as_str().unwrap();
    let r = auth(http.put(d.api(&format!("/sessions/{sid}/participants/{pid}")))).send().unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = auth(http.put(d.api(&format!("/sessions/{sid}/participants/{pid}/subscriptions")))).send().unwrap();
    assert_eq!(r.status().as_u16(), 204);
    // A body without a JSON Content-Type is still read (curl -d), and still checked.
    let r = auth(http.post(d.api("/sessions")).body(r#"{"tag":"x"}"#)).send().unwrap();
    assert_eq!(r.json::<Value>().unwrap()["tag"], "x");
    let r = auth(http.post(d.api("/sessions")).body(r#"{"colour":"red"}"#)).send().unwrap();
    assert_eq!(common::error_code(r, 400), "INVALID_ARGUMENT");
}
