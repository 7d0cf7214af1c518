//! The WebRTC side against real headless Chromium (Debian's), in a network namespace with only
//! `lo`: the SDK loaded with a `<script>` tag, two participants hearing each other's tones,
//! publish permissions, live subscription changes, and the demo page: its meters, mute and
//! leave, a held call counted apart, its sipp command run as shown, and a screenshot of it.
//!
//! Needs root (for `unshare -n`, and sipp's `play_pcap_audio`), chromium, chromium-driver, sox,
//! iproute2 and sipp.

#[path = "support/chrome.rs"]
mod chrome;
mod common;
#[path = "support/sip_ua.rs"]
mod sip_ua;

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

/// Waits until `page`'s demo is connected and hears exactly `n` streams; returns their endpoints.
fn demo_hearing(page: &chrome::Browser, n: usize) -> Vec<String> {
    page.wait_for(
        &format!("the demo to be connected hearing {n} stream(s)"),
        Duration::from_secs(30),
        &format!(
            "return document.body.dataset.state === 'connected' && window.demo.hearing === {n} \
             && document.getElementById('status').textContent.includes('hearing {n} stream(s)')"
        ),
    );
    let v = page.eval("return Object.keys(window.demo.streams)");
    v.as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()).collect()
}

/// The level the demo shows for silence is -100 dBFS; a tone at -6 dBFS arrives near -9.
const SILENT_DB: f64 = -70.0;
const HEARD_DB: f64 = -60.0;

#[test]
fn the_demo_pages_meters_follow_the_streams_mute_and_leave() {
    if !chrome::in_netns("the_demo_pages_meters_follow_the_streams_mute_and_leave") {
        return;
    }
    let d = Daemon::start();
    let mut driver = chrome::Driver::start();
    let dir = d.state_dir.parent().unwrap();
    let first = driver.browser(&chrome::tone_wav(dir, TONE_A));
    let second = driver.browser(&chrome::tone_wav(dir, TONE_B));
    for page in [&first, &second] {
        page.goto(&d.url("/demo/"));
    }
    let mut heard = Vec::new();
    for (page, other) in [(&first, &second), (&second, &first)] {
        let endpoints = demo_hearing(page, 1);
        let endpoint = endpoints[0].clone();
        assert_eq!(page.eval("return window.demo.error"), serde_json::Value::Null);
        // The stream heard is the other page's, and it has its meter.
        assert_eq!(
            page.eval(&format!("return window.demo.streams[{endpoint:?}].participantId")),
            other.eval("return window.demo.participantId")
        );
        assert_eq!(
            page.eval(&format!(
                "return document.querySelectorAll('#streamList [data-endpoint={endpoint:?}] meter').length"
            )),
            json!(1)
        );
        page.wait_for(
            "the microphone meter to show the fake microphone's tone",
            Duration::from_secs(20),
            &format!("return window.demo.micDb > {HEARD_DB}"),
        );
        page.wait_for(
            "the stream meter to show the other page's tone",
            Duration::from_secs(20),
            &format!("return window.demo.streams[{endpoint:?}].db > {HEARD_DB}"),
        );
        heard.push(endpoint);
    }
    let sip = first.eval("return document.getElementById('sipUri').textContent");
    assert!(sip.as_str().unwrap().starts_with("sip:demo@127.0.0.1:"), "{sip}");
    let uui = first.eval("return document.getElementById('uui').textContent");
    assert!(uui.as_str().unwrap().ends_with(";encoding=jwt"), "{uui}");

    // The first page mutes: the button says so, and the second page's meter of it falls silent.
    first.click("#mute");
    assert_eq!(first.eval("return document.getElementById('mute').getAttribute('aria-pressed')"), json!("true"));
    assert_eq!(first.eval("return window.demo.muted"), json!(true));
    let status = first.eval("return document.getElementById('status').textContent");
    assert!(status.as_str().unwrap().contains("muted"), "{status}");
    let of_first = &heard[1];
    second.wait_for(
        "the muted page's stream to fall silent",
        Duration::from_secs(20),
        &format!("return window.demo.streams[{of_first:?}].db < {SILENT_DB}"),
    );
    // Still heard (muted is not gone), and back when unmuted.
    assert_eq!(second.eval("return window.demo.hearing"), json!(1));
    first.click("#mute");
    second.wait_for(
        "the unmuted page's stream to be heard again",
        Duration::from_secs(20),
        &format!("return window.demo.streams[{of_first:?}].db > {HEARD_DB}"),
    );

    // The first page leaves: it says so, and the second hears nobody.
    first.click("#leave");
    first.wait_for(
        "the leaving page to say it left",
        Duration::from_secs(10),
        "return document.body.dataset.state === 'left' \
         && document.getElementById('status').textContent === 'left the session'",
    );
    assert_eq!(first.eval("return document.getElementById('mute').disabled"), json!(true));
    demo_hearing(&second, 0);
    assert_eq!(second.eval("return document.querySelectorAll('[data-endpoint]').length"), json!(0));
}

/// The demo page as a person sees it: a PNG from the browser of the size of the viewport, not
/// one flat colour, with the status line drawn where the status element is.
#[test]
fn the_demo_page_renders_its_state_in_a_screenshot() {
    if !chrome::in_netns("the_demo_page_renders_its_state_in_a_screenshot") {
        return;
    }
    let d = Daemon::start();
    let mut driver = chrome::Driver::start();
    let page = driver.browser(&chrome::tone_wav(d.state_dir.parent().unwrap(), TONE_A));
    page.set_window_size(1000, 900);
    page.goto(&d.url("/demo/"));
    demo_hearing(&page, 0);
    page.wait_for(
        "the microphone meter to move",
        Duration::from_secs(20),
        &format!("return window.demo.micDb > {HEARD_DB}"),
    );
    // The copy button copies the whole User-to-User value (or, where the clipboard is refused,
    // selects it for Ctrl+C).
    let uui = page.eval("return document.getElementById('uui').textContent");
    page.click("#copyUui");
    let copied = page.wait_for(
        "the UUI value copied or selected",
        Duration::from_secs(10),
        "return window.demo.copied || String(window.getSelection())",
    );
    assert_eq!(copied, uui);
    let (w, h, ratio) = {
        let v = page.eval("return [window.innerWidth, window.innerHeight, window.devicePixelRatio]");
        (v[0].as_f64().unwrap(), v[1].as_f64().unwrap(), v[2].as_f64().unwrap())
    };
    let png = page.screenshot_png();
    let image = Rgb::decode(&png);
    assert_eq!(
        (f64::from(image.width), f64::from(image.height)),
        ((w * ratio).round(), (h * ratio).round()),
        "the screenshot is the viewport"
    );
    let whole = image.colours(0, 0, image.width, image.height);
    assert!(whole.len() > 20, "the page is more than a flat colour: {} colours", whole.len());

    // The status element: its background (the "connected" green) and its dark text.
    let (x, y, rw, rh) = page.rect("#status");
    assert!(rw > 50.0 && rh > 5.0, "the status element has a size: {rw}x{rh}");
    let px = |v: f64| (v * ratio).round() as u32;
    let status = image.colours(px(x), px(y), px(rw), px(rh));
    assert!(status.len() > 5, "the status line is drawn: {} colours in its box", status.len());
    let green = [0xd8, 0xf0, 0xdf];
    assert!(status.contains(&green), "the status box has the connected background");
    assert!(status.iter().any(|c| c.iter().all(|&v| v < 96)), "the status box has dark text on it");
}

/// A decoded screenshot, 8-bit RGB.
struct Rgb {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Rgb {
    fn decode(png_bytes: &[u8]) -> Self {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder.read_info().expect("a PNG");
        let mut buf = vec![0; reader.output_buffer_size().expect("a PNG of a sane size")];
        let info = reader.next_frame(&mut buf).expect("one PNG frame");
        let channels = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => panic!("a colour screenshot, not {other:?}"),
        };
        let pixels = buf[..info.buffer_size()].chunks_exact(channels).flat_map(|p| [p[0], p[1], p[2]]).collect();
        Self { width: info.width, height: info.height, pixels }
    }

    /// The distinct colours in a box, clipped to the image.
    fn colours(&self, x: u32, y: u32, w: u32, h: u32) -> std::collections::HashSet<[u8; 3]> {
        let mut set = std::collections::HashSet::new();
        for row in y..(y + h).min(self.height) {
            for col in x..(x + w).min(self.width) {
                let i = ((row * self.width + col) * 3) as usize;
                set.insert([self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]);
            }
        }
        set
    }
}

/// sipp, killed by its own pid when the test ends, pass or fail.
struct Sipp(std::process::Child);

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The sipp command the demo page shows, run as written (in a directory whose `examples` is the
/// repository's), calls the page: the page hears the call's audio, then the call goes.
#[test]
fn the_demo_pages_sipp_command_calls_the_page() {
    if !chrome::in_netns("the_demo_pages_sipp_command_calls_the_page") {
        return;
    }
    let d = Daemon::start();
    let mut driver = chrome::Driver::start();
    let page = driver.browser(&chrome::tone_wav(d.state_dir.parent().unwrap(), TONE_A));
    page.goto(&d.url("/demo/"));
    demo_hearing(&page, 0);
    let command = page.eval("return document.getElementById('sippCommand').textContent");
    let command = command.as_str().unwrap();
    assert!(command.contains(&format!("sipp {} -sf examples/call.xml", d.sip_addr())), "{command}");

    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"), dir.path().join("examples")).unwrap();
    let log = dir.path().join("sipp.log");
    let mut sipp = Sipp(
        std::process::Command::new("bash")
            .args(["-euc", command])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("bash runs"),
    );
    let endpoints = demo_hearing(&page, 1);
    let phone = &endpoints[0];
    assert_eq!(
        page.eval(&format!("return window.demo.streams[{phone:?}].participantId")),
        page.eval("return window.demo.phoneParticipantId")
    );
    page.wait_for(
        "the call's audio on the page's meter",
        Duration::from_secs(10),
        &format!("return window.demo.streams[{phone:?}].db > {HEARD_DB}"),
    );
    // sipp's BYE after its 8 s pause ends the call: sipp succeeds and the page hears nobody.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(s) = sipp.0.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "sipp did not end its call");
        std::thread::sleep(Duration::from_millis(100));
    };
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "sipp failed ({status}):\n{said}");
    demo_hearing(&page, 0);
}

/// A phone calls the page with the page's User-to-User value; holding the call takes it out of
/// the count of streams heard (shown held) and resuming brings it back; the BYE removes it.
#[test]
fn the_demo_pages_status_counts_a_held_call_apart() {
    if !chrome::in_netns("the_demo_pages_status_counts_a_held_call_apart") {
        return;
    }
    let d = Daemon::start();
    let mut driver = chrome::Driver::start();
    let page = driver.browser(&chrome::tone_wav(d.state_dir.parent().unwrap(), TONE_A));
    page.goto(&d.url("/demo/"));
    demo_hearing(&page, 0);
    let uui = page.eval("return document.getElementById('uui').textContent");
    let token = uui.as_str().unwrap().strip_suffix(";encoding=jwt").expect("a UUI value with ;encoding=jwt");
    let mut ua = sip_ua::SipUa::new(d.sip_addr());
    let mut media = sip_ua::MediaPeer::bind(sip_ua::PeerCodec::Pcmu);
    let answer = ua.invite(token, &media.offer("sendrecv", 1));
    media.start(&answer, f64::from(TONE_B));
    let phone = demo_hearing(&page, 1).remove(0);
    page.wait_for(
        "the call's tone on the page's meter",
        Duration::from_secs(20),
        &format!("return window.demo.streams[{phone:?}].db > {HEARD_DB}"),
    );

    ua.reinvite(&media.offer("sendonly", 2));
    page.wait_for(
        "the held call to be counted apart",
        Duration::from_secs(10),
        "return window.demo.hearing === 0 && document.getElementById('status').textContent \
         === 'connected, hearing 0 stream(s), 1 on hold'",
    );
    let row = page.eval(&format!("return document.querySelector('[data-endpoint={phone:?}]').textContent"));
    assert!(row.as_str().unwrap().contains("on hold"), "{row}");

    ua.reinvite(&media.offer("sendrecv", 3));
    assert_eq!(demo_hearing(&page, 1), vec![phone]);
    assert_eq!(ua.bye(), 200);
    demo_hearing(&page, 0);
    assert_eq!(page.eval("return document.querySelectorAll('[data-endpoint]').length"), json!(0));
}

/// When the gateway ends the page's connection (here: its participant is deleted through the
/// API), the page says so: `data-state="error"`, the close code in the status line, no streams.
#[test]
fn the_demo_page_shows_when_the_gateway_ends_its_connection() {
    if !chrome::in_netns("the_demo_page_shows_when_the_gateway_ends_its_connection") {
        return;
    }
    let d = Daemon::start();
    let mut driver = chrome::Driver::start();
    let page = driver.browser(&chrome::tone_wav(d.state_dir.parent().unwrap(), TONE_A));
    page.goto(&d.url("/demo/"));
    demo_hearing(&page, 0);
    let pid = page.eval("return window.demo.participantId");
    let r = Client::new().delete(&d.api(&format!("/participants/{}", pid.as_str().unwrap())));
    assert_eq!(r.status().as_u16(), 204);
    page.wait_for(
        "the page to show the connection ended",
        Duration::from_secs(10),
        "return document.body.dataset.state === 'error'",
    );
    let status = page.eval("return document.getElementById('status').textContent");
    assert!(status.as_str().unwrap().starts_with("failed: disconnected by the gateway (4010"), "{status}");
    assert_eq!(page.eval("return [document.getElementById('mute').disabled, window.demo.micDb]"), json!([true, -100]));
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
