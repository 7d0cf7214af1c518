//! The WebRTC side against real headless Chromium (Debian's), in a network namespace with only
//! `lo`: the SDK loaded with a `<script>` tag, two participants hearing each other's tones,
//! publish permissions, live subscription changes, and the demo page.
//!
//! Needs root (for `unshare -n`), chromium, chromium-driver, sox and iproute2.

#[path = "support/chrome.rs"]
mod chrome;
mod common;

use std::time::Duration;

use common::{Client, Daemon};
use serde_json::json;

const TONE_A: u32 = 440;
const TONE_B: u32 = 1000;

fn participant(d: &Daemon, c: &Client, permissions: &[&str]) -> (String, String) {
    let p: serde_json::Value =
        c.post(&d.api("/participants"), json!({"publishPermissions": permissions})).json().unwrap();
    (p["participant"]["id"].as_str().unwrap().to_string(), p["token"].as_str().unwrap().to_string())
}

fn session(d: &Daemon, c: &Client) -> String {
    let s: serde_json::Value = c.post(&d.api("/sessions"), json!({})).json().unwrap();
    s["id"].as_str().unwrap().to_string()
}

fn join(d: &Daemon, c: &Client, sid: &str, pid: &str, body: serde_json::Value) {
    let r = c.put(&d.api(&format!("/sessions/{sid}/participants/{pid}")), body);
    assert_eq!(r.status().as_u16(), 204, "{}", r.text().unwrap_or_default());
}

#[test]
fn two_participants_hear_each_others_tones() {
    if !chrome::in_netns("two_participants_hear_each_others_tones") {
        return;
    }
    let d = Daemon::start();
    let c = Client::new();
    let sid = session(&d, &c);
    let (pa, ta) = participant(&d, &c, &["AUDIO"]);
    let (pb, tb) = participant(&d, &c, &["AUDIO"]);
    join(&d, &c, &sid, &pa, json!({"sessionId": sid}));
    join(&d, &c, &sid, &pb, json!({"sessionId": sid}));

    let mut driver = chrome::Driver::start();
    let wav_a = chrome::tone_wav(d.state_dir.parent().unwrap(), TONE_A);
    let wav_b = chrome::tone_wav(d.state_dir.parent().unwrap(), TONE_B);
    let a = driver.browser(&wav_a);
    let b = driver.browser(&wav_b);
    let origin = d.url("");
    for (page, token) in [(&a, &ta), (&b, &tb)] {
        page.load_sdk(&origin);
        assert_eq!(page.connect(token), None, "connect");
        page.publish().expect("publish with AUDIO permission");
    }
    let limit = Duration::from_secs(30);
    let heard_by_a = a.wait_for_tone(f64::from(TONE_B), limit);
    let heard_by_b = b.wait_for_tone(f64::from(TONE_A), limit);
    // The streams name their publishers.
    assert_eq!(a.eval(&format!("return t.streams[{heard_by_a:?}].participantId")), json!(pb));
    assert_eq!(b.eval(&format!("return t.streams[{heard_by_b:?}].participantId")), json!(pa));
    assert_eq!(a.eval(&format!("return t.streams[{heard_by_a:?}].mediaTypes")), json!(["AUDIO"]));
    // Each hears only the other, not itself.
    assert_eq!(a.eval("return Object.keys(t.streams).length"), json!(1));

    // DTMF from b reaches a.
    b.eval("rtc.sendDtmf('5#'); return true;");
    a.wait_for("two DTMF tones", Duration::from_secs(10), "return t.dtmf.length >= 2");
    assert_eq!(
        a.eval("return t.dtmf"),
        json!([{"participantId": pb, "tone": "5"}, {"participantId": pb, "tone": "#"}])
    );

    // b leaves: a's stream of b goes away.
    b.eval("rtc.disconnect(); return true;");
    a.wait_for(
        "b's stream to become unavailable",
        Duration::from_secs(10),
        &format!("return t.unavailable.includes({heard_by_a:?})"),
    );
}

#[test]
fn publishing_audio_without_the_permission_is_refused() {
    if !chrome::in_netns("publishing_audio_without_the_permission_is_refused") {
        return;
    }
    let d = Daemon::start();
    let c = Client::new();
    let sid = session(&d, &c);
    let (pid, token) = participant(&d, &c, &[]);
    join(&d, &c, &sid, &pid, json!({"sessionId": sid}));
    let mut driver = chrome::Driver::start();
    let wav = chrome::tone_wav(d.state_dir.parent().unwrap(), TONE_A);
    let page = driver.browser(&wav);
    page.load_sdk(&d.url(""));
    assert_eq!(page.connect(&token), None);
    assert_eq!(page.publish(), Err("PERMISSION_DENIED".to_string()));
    // Still connected and usable afterwards.
    assert_eq!(page.eval("return t.connected"), json!(true));
}

#[test]
fn removing_a_subscription_makes_the_stream_unavailable_in_the_page() {
    if !chrome::in_netns("removing_a_subscription_makes_the_stream_unavailable_in_the_page") {
        return;
    }
    let d = Daemon::start();
    let c = Client::new();
    let sid = session(&d, &c);
    let (pa, ta) = participant(&d, &c, &["AUDIO"]);
    let (pb, tb) = participant(&d, &c, &["AUDIO"]);
    // a subscribes to nobody; b subscribes to a explicitly.
    join(&d, &c, &sid, &pa, json!({}));
    join(&d, &c, &sid, &pb, json!({"participants": [{"participantId": pa}]}));
    let mut driver = chrome::Driver::start();
    let wav = chrome::tone_wav(d.state_dir.parent().unwrap(), TONE_A);
    let a = driver.browser(&wav);
    let b = driver.browser(&wav);
    a.load_sdk(&d.url(""));
    b.load_sdk(&d.url(""));
    assert_eq!(a.connect(&ta), None);
    assert_eq!(b.connect(&tb), None);
    let endpoint = a.publish().unwrap();
    assert_eq!(b.wait_for_tone(f64::from(TONE_A), Duration::from_secs(30)), endpoint);

    let subs = d.api(&format!("/sessions/{sid}/participants/{pb}/subscriptions"));
    assert_eq!(c.put(&subs, json!({"participants": []})).status().as_u16(), 204);
    b.wait_for(
        "the stream to become unavailable",
        Duration::from_secs(10),
        &format!("return t.unavailable.includes({endpoint:?})"),
    );
    assert_eq!(b.eval("return Object.keys(t.streams).length"), json!(0));

    // And back, live, without reconnecting.
    assert_eq!(c.put(&subs, json!({"participants": [{"participantId": pa}]})).status().as_u16(), 204);
    assert_eq!(b.wait_for_tone(f64::from(TONE_A), Duration::from_secs(30)), endpoint);
}

#[test]
fn the_demo_page_loads_connects_and_plays_a_stream() {
    if !chrome::in_netns("the_demo_page_loads_connects_and_plays_a_stream") {
        return;
    }
    let d = Daemon::start();
    let mut driver = chrome::Driver::start();
    let wav = chrome::tone_wav(d.state_dir.parent().unwrap(), TONE_B);
    let first = driver.browser(&wav);
    let second = driver.browser(&wav);
    for page in [&first, &second] {
        page.goto(&d.url("/demo/"));
    }
    for page in [&first, &second] {
        page.wait_for(
            "the demo to connect and hear the other page",
            Duration::from_secs(30),
            "return window.demo && window.demo.streams >= 1",
        );
        page.wait_for("sound from the stream", Duration::from_secs(20), "return window.demo.level > 0.01");
        assert_eq!(page.eval("return window.demo.error"), serde_json::Value::Null);
    }
    let sip = first.eval("return document.getElementById('sipUri').textContent");
    assert!(sip.as_str().unwrap().starts_with("sip:demo@127.0.0.1:"), "{sip}");
    let uui = first.eval("return document.getElementById('uui').textContent");
    assert!(uui.as_str().unwrap().ends_with(";encoding=jwt"), "{uui}");
}

/// `/docs` in a real browser: it reads `/openapi.json`, shows every operation grouped by tag and
/// every webhook, and its "try it" form sends a request with the given credentials and shows
/// the answer.
#[test]
fn the_docs_page_renders_every_operation_and_tries_one() {
    if !chrome::in_netns("the_docs_page_renders_every_operation_and_tries_one") {
        return;
    }
    let d = Daemon::start();
    let c = Client::new();
    let sid = session(&d, &c);
    let doc: serde_json::Value = c.get(&d.url("/openapi.json")).json().unwrap();
    let operations: usize =
        doc["paths"].as_object().unwrap().values().map(|item| item.as_object().unwrap().len()).sum();
    let mut tags: Vec<String> = Vec::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            let tag = op["tags"][0].as_str().unwrap().to_string();
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
    }

    let mut driver = chrome::Driver::start();
    let wav = chrome::tone_wav(d.state_dir.parent().unwrap(), TONE_A);
    let page = driver.browser(&wav);
    page.goto(&d.url("/docs"));
    page.wait_for(
        "the page to read /openapi.json",
        Duration::from_secs(20),
        "return window.docs && (window.docs.ready || window.docs.error)",
    );
    assert_eq!(page.eval("return window.docs.error"), serde_json::Value::Null);
    let shown = page.eval("return document.querySelectorAll('#operations details.op').length");
    assert_eq!(shown, json!(operations), "every operation is on the page");
    let sections = page.eval("return [...document.querySelectorAll('section.tag')].map(s => s.dataset.tag)");
    let mut shown_tags: Vec<String> = serde_json::from_value(sections).unwrap();
    shown_tags.sort();
    tags.sort();
    assert_eq!(shown_tags, tags, "grouped by tag");
    assert_eq!(page.eval("return window.docs.webhooks"), json!(5));
    let params = page.eval("return document.querySelectorAll('#list_sessions input[name=limit]').length");
    assert_eq!(params, json!(1), "the listing's limit parameter has a field");

    // Try it: read the session with the account's credentials.
    page.eval(&format!(
        "document.getElementById('user').value = '{}';
         document.getElementById('password').value = '{}';
         const op = document.getElementById('get_session');
         op.open = true;
         op.querySelector('input[name=sessionId]').value = '{sid}';
         op.querySelector('form').requestSubmit();
         return true;",
        common::USER,
        common::PASSWORD
    ));
    let answer = page.wait_for(
        "the answer of GET /sessions/{sessionId}",
        Duration::from_secs(10),
        "const r = document.querySelector('#get_session pre.result');
         return r && r.textContent !== '…' ? r.textContent : null",
    );
    let answer = answer.as_str().unwrap();
    assert!(answer.contains("\n200 "), "{answer}");
    assert!(answer.contains(&sid), "{answer}");
}
