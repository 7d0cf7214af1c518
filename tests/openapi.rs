//! `/openapi.json` is generated from the code and matches what the server does: every
//! documented operation is served (no 405, no unknown route), every route the server has is
//! documented with its error responses, the callbacks are its webhooks, responses carry the
//! documented fields, and `/docs` renders it.

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

/// The document and the router are built from one list (`control::service`), so a route cannot
/// be served undocumented; this pins that list to the contract's paths and names, the account
/// API's and every route outside it.
#[test]
fn the_document_lists_every_route_the_daemon_serves() {
    let d = Daemon::start();
    let doc: Value = reqwest::blocking::get(d.url("/openapi.json")).unwrap().json().unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let base = "/v1/accounts/{accountId}";
    let mut expected: BTreeSet<(String, String)> = [
        ("POST", "/sessions"),
        ("GET", "/sessions"),
        ("GET", "/sessions/{sessionId}"),
        ("DELETE", "/sessions/{sessionId}"),
        ("GET", "/sessions/{sessionId}/participants"),
        ("PUT", "/sessions/{sessionId}/participants/{participantId}"),
        ("DELETE", "/sessions/{sessionId}/participants/{participantId}"),
        ("GET", "/sessions/{sessionId}/participants/{participantId}/subscriptions"),
        ("PUT", "/sessions/{sessionId}/participants/{participantId}/subscriptions"),
        ("POST", "/participants"),
        ("GET", "/participants"),
        ("GET", "/participants/{participantId}"),
        ("DELETE", "/participants/{participantId}"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), format!("{base}{p}")))
    .collect();
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/.well-known/jwks.json",
        "/openapi.json",
        "/docs",
        "/sdk/interwork.js",
        "/sdk/interwork.d.ts",
        "/v1/device",
        "/demo",
        "/demo/",
        "/demo/connectionInfo",
    ] {
        expected.insert(("GET".to_string(), path.to_string()));
    }
    assert_eq!(operations(&doc), expected);
    assert_eq!(doc["components"]["securitySchemes"]["basic"]["scheme"], "basic");
    // The device socket is a documented upgrade.
    assert!(doc["paths"]["/v1/device"]["get"]["responses"]["101"].is_object());

    // Without the demo, its routes are neither served nor documented.
    let off = Daemon::start_with(&[("INTERWORK_DEMO_ENABLED", "false")]);
    let doc: Value = reqwest::blocking::get(off.url("/openapi.json")).unwrap().json().unwrap();
    assert!(operations(&doc).iter().all(|(_, p)| !p.starts_with("/demo")));
    assert_eq!(reqwest::blocking::get(off.url("/demo/")).unwrap().status().as_u16(), 404);
}

/// What makes "served" imply "documented": the daemon's code registers routes only with
/// `OpenApiRouter::routes(routes!(..))`, whose handlers carry their `#[utoipa::path]`; none with
/// axum's `route`, `route_service`, `nest` or a second `Router` (nor `OpenApiRouter::route`,
/// which would skip the document). Test modules, at the bottom of their files, are not looked at.
#[test]
fn routes_are_registered_only_through_the_documented_list() {
    fn walk(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    assert!(files.len() > 20, "the sources are found");
    let mut registering = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap().replace("OpenApiRouter::new()", "");
        for needle in [".route(", ".route_service(", ".nest(", ".nest_service(", "Router::new()"] {
            if code.contains(needle) {
                registering.push(format!("{} uses {needle}", file.display()));
            }
        }
    }
    assert!(registering.is_empty(), "routes registered outside the documented list: {registering:#?}");
}

/// Every documented path answers a method it does not document with 405 METHOD_NOT_ALLOWED and
/// an `Allow` header naming the documented methods, never INVALID_ARGUMENT.
#[test]
fn a_method_a_path_does_not_have_is_405_with_allow() {
    let d = Daemon::start();
    let c = Client::new();
    let doc: Value = reqwest::blocking::get(d.url("/openapi.json")).unwrap().json().unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let documented: Vec<String> = item.as_object().unwrap().keys().map(|m| m.to_uppercase()).collect();
        let url =
            d.url(&path.replace("{accountId}", "default").replace("{sessionId}", "s").replace("{participantId}", "p"));
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if documented.iter().any(|m| m == method) {
                continue;
            }
            let r = c.raw(Method::from_bytes(method.as_bytes()).unwrap(), &url, "{}");
            let allow = r.headers().get("allow").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
            for m in &documented {
                assert!(allow.split(',').any(|a| a.trim() == m), "{method} {path}: Allow {allow:?} lacks {m}");
            }
            assert_eq!(common::error_code(r, 405), "METHOD_NOT_ALLOWED", "{method} {path}");
        }
    }
}

#[test]
fn every_operation_lists_its_error_responses_with_the_error_body() {
    let d = Daemon::start();
    let doc: Value = reqwest::blocking::get(d.url("/openapi.json")).unwrap().json().unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let errors: Vec<&String> = responses.keys().filter(|s| s.starts_with('4')).collect();
            assert!(!errors.is_empty(), "{method} {path} lists no 4xx response");
            for status in errors {
                assert_eq!(
                    responses[status]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
            if path.starts_with("/v1/accounts/") {
                for status in ["401", "403", "405", "429"] {
                    assert!(responses.contains_key(status), "{method} {path} lacks {status}");
                }
            }
        }
    }
    let body = |m: &str, p: &str| doc["paths"][format!("/v1/accounts/{{accountId}}{p}")][m]["responses"].clone();
    assert!(body("post", "/sessions")["413"].is_object(), "a body can be too large");
    assert!(body("get", "/sessions/{sessionId}")["404"].is_object());
    assert!(body("get", "/sessions")["400"].is_object(), "bad paging is 400");
}

#[test]
fn the_callbacks_are_documented_as_webhooks() {
    let d = Daemon::start();
    let doc: Value = reqwest::blocking::get(d.url("/openapi.json")).unwrap().json().unwrap();
    let hooks = doc["webhooks"].as_object().expect("webhooks");
    let names: BTreeSet<&str> = hooks.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["participantJoined", "participantLeft", "sipLegConnected", "sipLegEnded", "dtmf"])
    );
    for (name, hook) in hooks {
        let schema = &hook["post"]["requestBody"]["content"]["application/json"]["schema"];
        let parts = schema["allOf"].as_array().expect("the kind's fields and its event name");
        let reference = parts.iter().find_map(|p| p["$ref"].as_str()).expect("a $ref");
        let kind = reference.strip_prefix("#/components/schemas/").unwrap();
        let props = doc["components"]["schemas"][kind]["properties"].as_object().expect(kind);
        assert!(props.contains_key("timestamp") && props.contains_key("participantId"), "{name}: {kind}");
        assert!(parts.iter().any(|p| p["properties"]["event"]["enum"][0] == name.as_str()), "{name}");
    }
    let ended = &doc["components"]["schemas"]["SipLegEndedEvent"]["properties"];
    for field in ["callId", "mode", "durationMs", "reason", "media"] {
        assert!(ended[field].is_object(), "sipLegEnded documents {field}");
    }
}

/// `GET /v1/device` with the WebSocket handshake answers 101, as documented; without it, an
/// error in the documented shape.
#[test]
fn the_device_socket_upgrades_as_documented() {
    use std::io::{Read, Write};
    let d = Daemon::start();
    let addr = d.url("").trim_start_matches("http://").trim_end_matches('/').to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "GET /v1/device HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    let c = Client::new();
    let r = c.get(&d.url("/v1/device"));
    let status = r.status().as_u16();
    assert!(status == 400 || status == 426, "{status}");
    assert!(common::error_code(r, status).len() > 1);
}

#[test]
fn the_docs_page_is_served_from_the_binary() {
    let d = Daemon::start();
    let r = reqwest::blocking::get(d.url("/docs")).unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    let html = r.text().unwrap();
    assert!(html.contains("/openapi.json"), "the page reads the document");
    // Nothing from elsewhere: no absolute URL is loaded.
    for needle in ["src=\"http", "href=\"http", "src=\"//", "href=\"//", "@import"] {
        assert!(!html.contains(needle), "the page loads {needle}...");
    }
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
