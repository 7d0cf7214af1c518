//! The control API of CONTRACT §2 against the real daemon over HTTP: every endpoint, the
//! seeds' subscription semantics, and the error shape for every kind of bad input.

mod common;

use common::{Client, Daemon, error_code, session_with_participant};
use reqwest::Method;
use serde_json::{Value, json};

#[test]
fn sessions_are_created_read_and_deleted() {
    let d = Daemon::start();
    let c = Client::new();
    let r = c.post(&d.api("/sessions"), json!({"tag": "support-call"}));
    assert_eq!(r.status().as_u16(), 200);
    let s: Value = r.json().unwrap();
    let id = s["id"].as_str().unwrap();
    assert_eq!(s["tag"], "support-call");
    let got: Value = c.get(&d.api(&format!("/sessions/{id}"))).json().unwrap();
    assert_eq!(got, s);
    // An empty body is an empty request: a session without a tag.
    let r = c.http.post(d.api("/sessions")).basic_auth(common::USER, Some(common::PASSWORD)).send().unwrap();
    let untagged: Value = r.json().unwrap();
    assert!(untagged["tag"].is_null());
    assert_eq!(c.delete(&d.api(&format!("/sessions/{id}"))).status().as_u16(), 204);
    assert_eq!(error_code(c.get(&d.api(&format!("/sessions/{id}"))), 404), "NOT_FOUND");
    assert_eq!(error_code(c.delete(&d.api(&format!("/sessions/{id}"))), 404), "NOT_FOUND");
}

#[test]
fn participants_join_sessions_and_subscribe() {
    // The callback receiver is on loopback: allowed only by callbacks.allow_private.
    let d = Daemon::start_with(&[("INTERWORK_CALLBACKS_ALLOW_PRIVATE", "true")]);
    let c = Client::new();
    let (sid, alice, token) = session_with_participant(&d, &c);
    assert!(token.split('.').count() == 3, "a JWT");
    let created: Value = c
        .post(
            &d.api("/participants"),
            json!({"publishPermissions": ["AUDIO", "VIDEO"], "tag": "bob", "deviceApiVersion": "V3",
                   "callbackUrl": "http://127.0.0.1:9/events"}),
        )
        .json()
        .unwrap();
    let p = &created["participant"];
    let bob = p["id"].as_str().unwrap();
    assert_eq!(p["publishPermissions"], json!(["AUDIO", "VIDEO"]));
    assert_eq!(p["sessions"], json!([]));
    assert_eq!(p["tag"], "bob");

    // Bob joins listing Alice explicitly.
    let body = json!({"participants": [{"participantId": alice, "streamAliases": ["main"]}]});
    assert_eq!(c.put(&d.api(&format!("/sessions/{sid}/participants/{bob}")), body).status().as_u16(), 204);
    let got: Value = c.get(&d.api(&format!("/participants/{bob}"))).json().unwrap();
    assert_eq!(got["sessions"], json!([sid]));
    let subs: Value = c.get(&d.api(&format!("/sessions/{sid}/participants/{bob}/subscriptions"))).json().unwrap();
    assert_eq!(subs, json!({"participants": [{"participantId": alice, "streamAliases": ["main"]}]}));
    let alice_subs: Value =
        c.get(&d.api(&format!("/sessions/{sid}/participants/{alice}/subscriptions"))).json().unwrap();
    assert_eq!(alice_subs["sessionId"], sid);

    let list: Value = c.get(&d.api(&format!("/sessions/{sid}/participants"))).json().unwrap();
    let mut ids: Vec<&str> = list.as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    ids.sort();
    let mut expected = vec![alice.as_str(), bob];
    expected.sort();
    assert_eq!(ids, expected);

    // Replacing subscriptions.
    let r = c.put(&d.api(&format!("/sessions/{sid}/participants/{bob}/subscriptions")), json!({"sessionId": sid}));
    assert_eq!(r.status().as_u16(), 204);
    let subs: Value = c.get(&d.api(&format!("/sessions/{sid}/participants/{bob}/subscriptions"))).json().unwrap();
    assert_eq!(subs, json!({"sessionId": sid, "participants": []}));

    // Removing Alice cleans Bob's explicit subscription to her.
    let r = c.put(
        &d.api(&format!("/sessions/{sid}/participants/{bob}/subscriptions")),
        json!({"participants": [{"participantId": alice}]}),
    );
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(c.delete(&d.api(&format!("/sessions/{sid}/participants/{alice}"))).status().as_u16(), 204);
    let subs: Value = c.get(&d.api(&format!("/sessions/{sid}/participants/{bob}/subscriptions"))).json().unwrap();
    assert_eq!(subs["participants"], json!([]));
    let r = c.get(&d.api(&format!("/sessions/{sid}/participants/{alice}/subscriptions")));
    assert_eq!(error_code(r, 404), "NOT_FOUND");

    // Deleting Bob removes him from the session.
    assert_eq!(c.delete(&d.api(&format!("/participants/{bob}"))).status().as_u16(), 204);
    assert_eq!(error_code(c.get(&d.api(&format!("/participants/{bob}"))), 404), "NOT_FOUND");
    let list: Value = c.get(&d.api(&format!("/sessions/{sid}/participants"))).json().unwrap();
    assert_eq!(list, json!([]));
}

#[test]
fn deleting_a_session_removes_its_participants_from_it() {
    let d = Daemon::start();
    let c = Client::new();
    let (sid, pid, _) = session_with_participant(&d, &c);
    assert_eq!(c.delete(&d.api(&format!("/sessions/{sid}"))).status().as_u16(), 204);
    let p: Value = c.get(&d.api(&format!("/participants/{pid}"))).json().unwrap();
    assert_eq!(p["sessions"], json!([]), "the participant outlives the session");
}

#[test]
fn malformed_json_unknown_fields_and_wrong_types_are_400() {
    let d = Daemon::start();
    let c = Client::new();
    let (sid, pid, _) = session_with_participant(&d, &c);
    let cases: [(Method, String, &'static str); 8] = [
        (Method::POST, d.api("/sessions"), "{\"tag\": "),
        (Method::POST, d.api("/sessions"), "{\"tag\": \"a\", \"colour\": \"red\"}"),
        (Method::POST, d.api("/sessions"), "{\"tag\": 5}"),
        (Method::POST, d.api("/sessions"), "[1,2]"),
        (Method::POST, d.api("/participants"), "{}"),
        (Method::POST, d.api("/participants"), "{\"publishPermissions\": [\"SMELL\"]}"),
        (Method::PUT, d.api(&format!("/sessions/{sid}/participants/{pid}")), "{\"sessionId\": 1}"),
        (
            Method::PUT,
            d.api(&format!("/sessions/{sid}/participants/{pid}/subscriptions")),
            "{\"participants\": [{\"id\": \"x\"}]}",
        ),
    ];
    for (method, url, body) in cases {
        let r = c.raw(method.clone(), &url, body);
        assert_eq!(error_code(r, 400), "INVALID_ARGUMENT", "{method} {url} {body}");
    }
}

#[test]
fn impossible_values_are_400() {
    let d = Daemon::start();
    let c = Client::new();
    let (sid, pid, _) = session_with_participant(&d, &c);
    let long_tag = "x".repeat(300);
    for body in [
        json!({"publishPermissions": ["AUDIO"], "callbackUrl": "ftp://example.com/x"}),
        json!({"publishPermissions": ["AUDIO"], "callbackUrl": "not a url"}),
        json!({"publishPermissions": [], "tag": long_tag}),
        json!({"publishPermissions": [], "tag": "line\nbreak"}),
        json!({"publishPermissions": [], "tag": "bell\u{7}"}),
    ] {
        assert_eq!(error_code(c.post(&d.api("/participants"), body.clone()), 400), "INVALID_ARGUMENT", "{body}");
    }
    // Control characters (C0, DEL, C1) are refused in session tags too; other text is kept.
    for tag in ["a\rb", "esc\u{1b}[31m", "del\u{7f}", "csi\u{9b}"] {
        let r = c.post(&d.api("/sessions"), json!({ "tag": tag }));
        assert_eq!(error_code(r, 400), "INVALID_ARGUMENT", "{tag:?}");
    }
    let s: Value = c.post(&d.api("/sessions"), json!({"tag": "Zoë – 東京 ✓"})).json().unwrap();
    assert_eq!(s["tag"], "Zoë – 東京 ✓");
    let url = d.api(&format!("/sessions/{sid}/participants/{pid}"));
    for body in [
        json!({"sessionId": "another-session"}),
        json!({"participants": [{"participantId": pid}]}),
        json!({"participants": [{"participantId": "nobody"}]}),
        json!({"participants": [{"participantId": "bad id!"}]}),
    ] {
        assert_eq!(error_code(c.put(&url, body.clone()), 400), "INVALID_ARGUMENT", "{body}");
    }
}

#[test]
fn ids_that_do_not_exist_are_404() {
    let d = Daemon::start();
    let c = Client::new();
    let (sid, pid, _) = session_with_participant(&d, &c);
    let lonely: Value = c.post(&d.api("/participants"), json!({"publishPermissions": []})).json().unwrap();
    let lonely = lonely["participant"]["id"].as_str().unwrap().to_string();
    let urls = [
        (Method::GET, d.api("/sessions/nope")),
        (Method::DELETE, d.api("/sessions/nope")),
        (Method::GET, d.api("/sessions/nope/participants")),
        (Method::PUT, d.api(&format!("/sessions/nope/participants/{pid}"))),
        (Method::PUT, d.api(&format!("/sessions/{sid}/participants/nope"))),
        (Method::DELETE, d.api(&format!("/sessions/{sid}/participants/{lonely}"))),
        (Method::GET, d.api(&format!("/sessions/{sid}/participants/{lonely}/subscriptions"))),
        (Method::PUT, d.api(&format!("/sessions/{sid}/participants/{lonely}/subscriptions"))),
        (Method::GET, d.api("/participants/nope")),
        (Method::DELETE, d.api("/participants/nope")),
        (Method::GET, d.url("/v1/nothing/here")),
    ];
    for (method, url) in urls {
        let r = c.raw(method.clone(), &url, "{}");
        assert_eq!(error_code(r, 404), "NOT_FOUND", "{method} {url}");
    }
}

#[test]
fn credentials_are_checked_per_account() {
    let d = Daemon::start_with(&[
        ("INTERWORK_ACCOUNTS_OTHER_USERNAME", "other"),
        ("INTERWORK_ACCOUNTS_OTHER_PASSWORD", "other-password"),
    ]);
    let c = Client::new();
    let (sid, pid, _) = session_with_participant(&d, &c);
    let http = &c.http;
    // No credentials, wrong password, not Basic: 401 with a challenge.
    let r = http.get(d.api(&format!("/sessions/{sid}"))).send().unwrap();
    assert!(r.headers().get("www-authenticate").is_some_and(|v| v.to_str().unwrap().starts_with("Basic")));
    assert_eq!(error_code(r, 401), "UNAUTHENTICATED");
    let r = http.get(d.api(&format!("/sessions/{sid}"))).basic_auth(common::USER, Some("wrong")).send().unwrap();
    assert_eq!(error_code(r, 401), "UNAUTHENTICATED");
    let r = http.get(d.api(&format!("/sessions/{sid}"))).bearer_auth("x").send().unwrap();
    assert_eq!(error_code(r, 401), "UNAUTHENTICATED");
    // The other account's credentials on this account's path: 403.
    let r = http.get(d.api(&format!("/sessions/{sid}"))).basic_auth("other", Some("other-password")).send().unwrap();
    assert_eq!(error_code(r, 403), "PERMISSION_DENIED");
    // The other account on its own path cannot see this account's ids: 404.
    let other = |path: &str| d.url(&format!("/v1/accounts/other{path}"));
    for url in [other(&format!("/sessions/{sid}")), other(&format!("/participants/{pid}"))] {
        let r = http.get(&url).basic_auth("other", Some("other-password")).send().unwrap();
        assert_eq!(error_code(r, 404), "NOT_FOUND", "{url}");
    }
    let r = http
        .put(other(&format!("/sessions/{sid}/participants/{pid}")))
        .basic_auth("other", Some("other-password"))
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(error_code(r, 404), "NOT_FOUND");
    // An account that does not exist: the credentials are not for it.
    let r = c.get(&d.url("/v1/accounts/ghost/sessions/x"));
    assert_eq!(error_code(r, 403), "PERMISSION_DENIED");
}

#[test]
fn oversized_bodies_are_refused() {
    let d = Daemon::start_with(&[("INTERWORK_HTTP_BODY_LIMIT", "2048")]);
    let c = Client::new();
    let big = json!({"tag": "x".repeat(4096)});
    assert_eq!(error_code(c.post(&d.api("/sessions"), big), 413), "RESOURCE_EXHAUSTED");
}

#[test]
fn wrong_methods_get_405_with_allow_in_the_json_shape() {
    let d = Daemon::start();
    let c = Client::new();
    let r = c.raw(Method::PATCH, &d.api("/sessions"), "{}");
    assert!(r.headers().get("allow").is_some());
    assert_eq!(error_code(r, 405), "METHOD_NOT_ALLOWED");
    // Routes outside the account API too: axum's own 405 goes through the same mapping.
    let r = c.raw(Method::DELETE, &d.url("/healthz"), "");
    assert!(r.headers().get("allow").is_some_and(|v| v.to_str().unwrap().contains("GET")));
    assert_eq!(error_code(r, 405), "METHOD_NOT_ALLOWED");
    // More routes, account API and others, each with the methods it has in `Allow`.
    let (sid, pid, _) = session_with_participant(&d, &c);
    for (method, url, allowed) in [
        (Method::PUT, d.api("/sessions"), "GET"),
        (Method::POST, d.api(&format!("/sessions/{sid}")), "DELETE"),
        (Method::PATCH, d.api(&format!("/participants/{pid}")), "GET"),
        (Method::POST, d.api(&format!("/sessions/{sid}/participants/{pid}/subscriptions")), "PUT"),
        (Method::DELETE, d.api("/participants"), "POST"),
        (Method::POST, d.url("/v1/device"), "GET"),
        (Method::POST, d.url("/openapi.json"), "GET"),
        (Method::PUT, d.url("/docs"), "GET"),
        (Method::POST, d.url("/metrics"), "GET"),
    ] {
        let r = c.raw(method.clone(), &url, "{}");
        let allow = r.headers().get("allow").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        assert!(allow.contains(allowed), "{method} {url}: Allow {allow:?} lacks {allowed}");
        assert_eq!(error_code(r, 405), "METHOD_NOT_ALLOWED", "{method} {url}");
    }
}

#[test]
fn sessions_and_participants_are_listed_a_page_at_a_time() {
    let d = Daemon::start_with(&[
        ("INTERWORK_ACCOUNTS_OTHER_USERNAME", "other"),
        ("INTERWORK_ACCOUNTS_OTHER_PASSWORD", "other-password"),
    ]);
    let c = Client::new();
    let mut made: Vec<Value> =
        (0..5).map(|i| c.post(&d.api("/sessions"), json!({"tag": format!("s{i}")})).json().unwrap()).collect();
    made.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    // Another account's session is never listed here.
    let theirs =
        c.http.post(d.url("/v1/accounts/other/sessions")).basic_auth("other", Some("other-password")).send().unwrap();
    let theirs: Value = theirs.json().unwrap();

    // Pages of 2, following nextCursor, with a session made between pages.
    let mut listed: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let url = match &cursor {
            Some(c) => d.api(&format!("/sessions?limit=2&cursor={c}")),
            None => d.api("/sessions?limit=2"),
        };
        let r = c.get(&url);
        assert_eq!(r.status().as_u16(), 200);
        let page: Value = r.json().unwrap();
        let items = page["sessions"].as_array().unwrap();
        assert!(items.len() <= 2);
        listed.extend(items.iter().cloned());
        c.post(&d.api("/sessions"), json!({}));
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => {
                assert!(page["nextCursor"].is_null(), "{page}");
                break;
            }
        }
    }
    let ids: Vec<&str> = listed.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order, none twice: {ids:?}");
    for s in &made {
        assert!(listed.contains(s), "{s} listed with the single GET's shape");
    }
    assert!(!ids.contains(&theirs["id"].as_str().unwrap()), "another account's session listed");
    // Each item has the single GET's shape.
    let one: Value = c.get(&d.api(&format!("/sessions/{}", ids[0]))).json().unwrap();
    assert_eq!(one, listed[0]);
    // Default page: everything here fits in 100.
    let all: Value = c.get(&d.api("/sessions")).json().unwrap();
    assert!(all["sessions"].as_array().unwrap().len() > made.len(), "and those made while paging");
    assert!(all["nextCursor"].is_null());

    // Participants the same way, with the single GET's shape.
    let (_, pid, _) = session_with_participant(&d, &c);
    c.post(&d.api("/participants"), json!({"publishPermissions": []}));
    let first: Value = c.get(&d.api("/participants?limit=1")).json().unwrap();
    assert_eq!(first["participants"].as_array().unwrap().len(), 1);
    let next = first["nextCursor"].as_str().expect("a second page").to_string();
    let second: Value = c.get(&d.api(&format!("/participants?limit=1000&cursor={next}"))).json().unwrap();
    assert!(second["nextCursor"].is_null());
    let mut everyone: Vec<Value> = first["participants"].as_array().unwrap().clone();
    everyone.extend(second["participants"].as_array().unwrap().iter().cloned());
    assert_eq!(everyone.len(), 2);
    let single: Value = c.get(&d.api(&format!("/participants/{pid}"))).json().unwrap();
    assert!(everyone.contains(&single), "{single} in {everyone:?}");

    // Bad paging: 400 INVALID_ARGUMENT.
    for query in ["limit=0", "limit=1001", "limit=-1", "limit=ten", "cursor=%21%21", "colour=red"] {
        assert_eq!(error_code(c.get(&d.api(&format!("/sessions?{query}"))), 400), "INVALID_ARGUMENT", "{query}");
    }
    // A participants cursor is not a sessions cursor.
    assert_eq!(error_code(c.get(&d.api(&format!("/sessions?cursor={next}"))), 400), "INVALID_ARGUMENT");
    // Credentials still rule: none is 401, another account's is 403.
    assert_eq!(error_code(c.http.get(d.api("/sessions")).send().unwrap(), 401), "UNAUTHENTICATED");
    let r = c.http.get(d.url("/v1/accounts/other/participants")).basic_auth(common::USER, Some(common::PASSWORD));
    assert_eq!(error_code(r.send().unwrap(), 403), "PERMISSION_DENIED");
}

#[test]
fn limits_answer_resource_exhausted() {
    let d = Daemon::start_with(&[("INTERWORK_SESSIONS_MAX_SESSIONS", "2")]);
    let c = Client::new();
    for _ in 0..2 {
        assert_eq!(c.post(&d.api("/sessions"), json!({})).status().as_u16(), 200);
    }
    assert_eq!(error_code(c.post(&d.api("/sessions"), json!({})), 429), "RESOURCE_EXHAUSTED");
}

#[test]
fn health_readiness_jwks_and_request_ids() {
    let d = Daemon::start();
    let c = Client::new();
    assert_eq!(c.http.get(d.url("/healthz")).send().unwrap().status().as_u16(), 200);
    let r = c.http.get(d.url("/readyz")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().get("x-request-id").is_some(), "every response carries its request id");
    let r = c.http.get(d.url("/healthz")).header("x-request-id", "trace-me").send().unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-me");
    let jwks: Value = c.http.get(d.url("/.well-known/jwks.json")).send().unwrap().json().unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["alg"].as_str()),
        (Some("EC"), Some("P-256"), Some("ES256"))
    );
    assert!(key.get("d").is_none(), "never the private part");
}

#[test]
fn participant_tokens_verify_against_the_published_jwks() {
    use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};
    let d = Daemon::start();
    let c = Client::new();
    let (_, pid, token) = session_with_participant(&d, &c);
    let jwks: JwkSet = c.http.get(d.url("/.well-known/jwks.json")).send().unwrap().json().unwrap();
    let key = DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
    let mut v = Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["interwork"]);
    let claims = jsonwebtoken::decode::<Value>(&token, &key, &v).unwrap().claims;
    assert_eq!(claims["sub"], pid);
    assert!(claims["jti"].is_string() && claims["iat"].is_u64() && claims["iss"].is_string());
    assert!(format!("{token};encoding=jwt").len() <= 300);
}

#[test]
fn metrics_count_requests_by_route_and_status() {
    let d = Daemon::start();
    let c = Client::new();
    session_with_participant(&d, &c);
    c.get(&d.api("/sessions/nope"));
    let text = c.http.get(d.url("/metrics")).send().unwrap().text().unwrap();
    let has = |needle: &str| text.lines().any(|l| l.contains(needle));
    assert!(
        has(r#"route="/v1/accounts/{accountId}/sessions",status="200""#),
        "POST /sessions counted by its route template:\n{text}"
    );
    assert!(has(r#"route="/v1/accounts/{accountId}/sessions/{sessionId}",status="404""#), "{text}");
    assert!(text.lines().any(|l| l == "interwork_sessions 1"), "{text}");
    assert!(text.lines().any(|l| l == "interwork_participants 1"), "{text}");
}

/// A client whose requests come from another loopback address (Linux routes all of 127/8 to lo).
fn client_from(source: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

#[test]
fn failed_sign_ins_are_throttled_per_source_address() {
    let d =
        Daemon::start_with(&[("INTERWORK_HTTP_AUTH_MAX_FAILURES", "5"), ("INTERWORK_HTTP_AUTH_FAILURE_WINDOW", "10m")]);
    let c = Client::new();
    let url = d.api("/sessions");
    let attempt = |http: &reqwest::blocking::Client, password: &str| {
        http.post(&url).basic_auth(common::USER, Some(password)).json(&json!({})).send().unwrap()
    };
    // No credentials at all is not a failed sign-in (a client before its challenge).
    for _ in 0..10 {
        assert_eq!(c.http.post(&url).json(&json!({})).send().unwrap().status().as_u16(), 401);
    }
    // A guessing flood: five wrong passwords are answered 401, then everything is 429.
    let statuses: Vec<u16> = (0..50).map(|i| attempt(&c.http, &format!("guess-{i}")).status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 5, "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    // Even the right password gets no answer from this address until the window ends.
    let r = attempt(&c.http, common::PASSWORD);
    let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=600).contains(&retry_after), "{retry_after}");
    assert_eq!(error_code(r, 429), "RESOURCE_EXHAUSTED");
    // Another address is not affected: the right credentials work, wrong ones are counted apart.
    let other = client_from("127.0.0.2");
    assert_eq!(attempt(&other, common::PASSWORD).status().as_u16(), 200);
    assert_eq!(error_code(attempt(&other, "wrong"), 401), "UNAUTHENTICATED");
    // Unauthenticated routes are not throttled.
    assert_eq!(c.http.get(d.url("/healthz")).send().unwrap().status().as_u16(), 200);
}

#[test]
fn metrics_can_have_their_own_listener() {
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let d = Daemon::start_with(&[("INTERWORK_HTTP_METRICS_LISTEN", &metrics)]);
    // Where it listens in the end (a port taken meanwhile is retried on a fresh one).
    let metrics = d.env.iter().find(|(k, _)| k == "INTERWORK_HTTP_METRICS_LISTEN").unwrap().1.clone();
    let c = Client::new();
    let r = c.http.get(format!("http://{metrics}/metrics")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().unwrap().lines().any(|l| l.starts_with("interwork_sessions")));
    assert_eq!(
        error_code(c.http.get(d.url("/metrics")).send().unwrap(), 404),
        "NOT_FOUND",
        "moved off the API listener"
    );
    // The metrics listener serves nothing else.
    assert_eq!(c.http.get(format!("http://{metrics}/healthz")).send().unwrap().status().as_u16(), 404);
}

#[test]
fn metrics_can_ask_for_credentials() {
    let d = Daemon::start_with(&[
        ("INTERWORK_HTTP_METRICS_AUTH", "true"),
        ("INTERWORK_ACCOUNTS_OTHER_USERNAME", "other"),
        ("INTERWORK_ACCOUNTS_OTHER_PASSWORD", "other-password"),
    ]);
    let c = Client::new();
    let r = c.http.get(d.url("/metrics")).send().unwrap();
    assert!(r.headers().get("www-authenticate").is_some());
    assert_eq!(error_code(r, 401), "UNAUTHENTICATED");
    let r = c.http.get(d.url("/metrics")).basic_auth(common::USER, Some("wrong")).send().unwrap();
    assert_eq!(error_code(r, 401), "UNAUTHENTICATED");
    // Any account's credentials will do.
    for (user, password) in [(common::USER, common::PASSWORD), ("other", "other-password")] {
        let r = c.http.get(d.url("/metrics")).basic_auth(user, Some(password)).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{user}");
        assert!(r.text().unwrap().contains("interwork_sessions"));
    }
}
