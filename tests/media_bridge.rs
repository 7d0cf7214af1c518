//! The media bridge end to end, judged by the audio itself: a SIP call (the test's own UDP
//! user agent and RTP peer, `support/sip_ua.rs`) and headless Chromium (`support/chrome.rs`)
//! in one session, inside a network namespace with only `lo`.
//!
//! - PCMU: the SIP side's 1 kHz tone is heard in the page at 1 kHz (±15 Hz, the page's FFT
//!   bin width); the page's fake microphone at 440 Hz reaches the SIP side as PCMU that decodes
//!   to 440 Hz ±2 Hz at a sane level.
//! - The same with AMR-WB (bandwidth-efficient) over SRTP-SDES (AES_CM_128_HMAC_SHA1_80).
//! - DTMF: RFC 4733 digits from SIP reach the page's `onDtmf`; `sendDtmf` in the page arrives
//!   as RFC 4733 on the SIP side.
//! - Hold (re-INVITE `sendonly`) keeps the call and stops the audio toward the browser;
//!   resume brings it back.
//! - Without a browser: the `sipLegEnded` callback carries the leg's media counters and an
//!   RFC 4733 digit makes a `dtmf` callback.
//!
//! Needs root (for `unshare -n`), chromium, chromium-driver, sox and iproute2.

#[path = "support/chrome.rs"]
mod chrome;
mod common;
#[path = "support/sip_ua.rs"]
mod sip_ua;

use std::time::Duration;

use common::{Client, Daemon};
use serde_json::json;
use sip_ua::{MediaPeer, PeerCodec, SipUa};

/// What the SIP side sends.
const SIP_TONE: f64 = 1000.0;
/// The page's fake microphone.
const MIC_TONE: u32 = 440;
/// Bound of every wait for audio.
const AUDIO_LIMIT: Duration = Duration::from_secs(30);

/// A daemon, a session with a browser participant (publishing its 440 Hz microphone) and a
/// SIP participant; the page connected and published.
struct Scene {
    d: Daemon,
    sip_pid: String,
    sip_token: String,
    page: chrome::Browser,
    _driver: chrome::Driver,
}

impl Scene {
    fn new() -> Self {
        Self::with(&[])
    }

    /// A scene on a daemon with extra `INTERWORK_*` settings.
    fn with(env: &[(&str, &str)]) -> Self {
        let d = Daemon::start_with(env);
        let c = Client::new();
        let s: serde_json::Value = c.post(&d.api("/sessions"), json!({})).json().unwrap();
        let sid = s["id"].as_str().unwrap().to_string();
        let (_, web_token) = common::joined_participant(&d, &c, &sid);
        let (sip_pid, sip_token) = common::joined_participant(&d, &c, &sid);
        let mut driver = chrome::Driver::start();
        let wav = chrome::tone_wav(d.state_dir.parent().unwrap(), MIC_TONE);
        let page = driver.browser(&wav);
        page.load_sdk(&d.url(""));
        assert_eq!(page.connect(&web_token), None, "connect");
        page.publish().expect("publish");
        Self { d, sip_pid, sip_token, page, _driver: driver }
    }

    /// Calls in with `codec`, sending the SIP tone; returns the call and its media.
    fn call(&self, codec: PeerCodec) -> (SipUa, MediaPeer) {
        call(&self.d, &self.sip_token, codec, SIP_TONE)
    }

    /// Waits until the page hears the SIP tone; checks the stream is the SIP participant's.
    fn page_hears_sip(&self) -> String {
        let endpoint = self.page.wait_for_tone(SIP_TONE, AUDIO_LIMIT);
        assert_eq!(self.page.eval(&format!("return t.streams[{endpoint:?}].participantId")), json!(self.sip_pid));
        endpoint
    }
}

/// Calls the daemon in with `token` and `codec`, sending a `tone_hz` sine.
fn call(d: &Daemon, token: &str, codec: PeerCodec, tone_hz: f64) -> (SipUa, MediaPeer) {
    let mut ua = SipUa::new(d.sip_addr());
    let mut media = MediaPeer::bind(codec);
    let answer = ua.invite(token, &media.offer("sendrecv", 1));
    media.start(&answer, tone_hz);
    (ua, media)
}

/// Both directions of one call with `codec`.
fn tones_cross_both_ways(codec: PeerCodec) {
    let scene = Scene::new();
    let (mut ua, media) = scene.call(codec);
    scene.page_hears_sip();
    let (hz, level) = media.wait_for_tone(f64::from(MIC_TONE), 2.0, AUDIO_LIMIT);
    eprintln!("{codec:?}: the SIP side hears {hz:.2} Hz at {level:.1} dBFS");
    // The microphone is a sine at half scale (-9 dBFS RMS); Opus, the mix and G.711 or AMR-WB
    // keep it within a sane range.
    assert!((-25.0..=-3.0).contains(&level), "{hz:.1} Hz at {level:.1} dBFS");
    assert_eq!(ua.bye(), 200);
}

#[test]
fn pcmu_tones_cross_between_sip_and_the_browser() {
    if !chrome::in_netns("pcmu_tones_cross_between_sip_and_the_browser") {
        return;
    }
    tones_cross_both_ways(PeerCodec::Pcmu);
}

#[test]
fn amrwb_over_srtp_tones_cross_between_sip_and_the_browser() {
    if !chrome::in_netns("amrwb_over_srtp_tones_cross_between_sip_and_the_browser") {
        return;
    }
    tones_cross_both_ways(PeerCodec::AmrWbSrtp);
}

#[test]
fn dtmf_crosses_both_ways() {
    if !chrome::in_netns("dtmf_crosses_both_ways") {
        return;
    }
    let scene = Scene::new();
    let (mut ua, media) = scene.call(PeerCodec::Pcmu);
    scene.page_hears_sip();
    media.wait_for_tone(f64::from(MIC_TONE), 2.0, AUDIO_LIMIT);

    // SIP → page: RFC 4733 digits show up in onDtmf, named by the SIP participant.
    media.send_digits("7*");
    scene.page.wait_for("two DTMF tones from SIP", Duration::from_secs(10), "return t.dtmf.length >= 2");
    assert_eq!(
        scene.page.eval("return t.dtmf"),
        json!([{"participantId": scene.sip_pid, "tone": "7"}, {"participantId": scene.sip_pid, "tone": "*"}])
    );

    // Page → SIP: sendDtmf arrives as RFC 4733 events.
    scene.page.eval("rtc.sendDtmf('4#'); return true;");
    media.wait_for_digits("4#", Duration::from_secs(10));
    // Only those: the call's own digits are not echoed back to it.
    assert_eq!(media.digits(), vec!['4', '#']);
    assert_eq!(ua.bye(), 200);
}

#[test]
fn hold_silences_the_stream_and_resume_restores_it() {
    if !chrome::in_netns("hold_silences_the_stream_and_resume_restores_it") {
        return;
    }
    let scene = Scene::new();
    let (mut ua, media) = scene.call(PeerCodec::Pcmu);
    let endpoint = scene.page_hears_sip();

    // Hold: the answer says recvonly, the call stays, the page hears the tone no more.
    let answer = ua.reinvite(&media.offer("sendonly", 2));
    assert!(answer.contains("a=recvonly"), "{answer}");
    scene.page.wait_for(
        "the held stream to go quiet",
        Duration::from_secs(10),
        &format!(
            "const d = dominant({endpoint:?}); return d !== null && !(d.db > -70 && Math.abs(d.hz - {SIP_TONE}) < 15);"
        ),
    );
    // Still one stream (held, not gone).
    assert_eq!(scene.page.eval(&format!("return {endpoint:?} in t.streams")), json!(true));
    // The SDK shows it muted (Chromium itself does not mute a track whose packets stop).
    scene.page.wait_for(
        "the SDK to show the held stream muted",
        Duration::from_secs(10),
        &format!("return t.muted[{endpoint:?}] === true"),
    );
    assert_eq!(scene.page.eval(&format!("return rtc._streams.get({endpoint:?}).muted")), json!(true));

    // Resume: the tone comes back on the same stream.
    let answer = ua.reinvite(&media.offer("sendrecv", 3));
    assert!(!answer.contains("a=recvonly") && !answer.contains("a=inactive"), "{answer}");
    assert_eq!(scene.page.wait_for_tone(SIP_TONE, AUDIO_LIMIT), endpoint);
    assert_eq!(scene.page.eval(&format!("return t.muted[{endpoint:?}]")), json!(false), "unmuted on resume");
    assert_eq!(ua.bye(), 200);
}

/// A local HTTP receiver of callbacks: every event body, in order.
fn callback_receiver() -> (String, std::sync::mpsc::Receiver<serde_json::Value>, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx, runtime)
}

/// Without a browser: the leg's counters reach the `sipLegEnded` callback (one call record),
/// and RFC 4733 digits from the call reach the `dtmf` callback.
#[test]
fn the_call_record_carries_the_legs_media_counters() {
    let (url, events, _runtime) = callback_receiver();
    // The callback receiver is on loopback: allowed only by callbacks.allow_private.
    let d = Daemon::start_with(&[("INTERWORK_CALLBACKS_ALLOW_PRIVATE", "true")]);
    let c = Client::new();
    let s: serde_json::Value = c.post(&d.api("/sessions"), json!({})).json().unwrap();
    let sid = s["id"].as_str().unwrap().to_string();
    let p: serde_json::Value =
        c.post(&d.api("/participants"), json!({"publishPermissions": ["AUDIO"], "callbackUrl": url})).json().unwrap();
    let (pid, token) = (p["participant"]["id"].as_str().unwrap().to_string(), p["token"].as_str().unwrap().to_string());
    assert_eq!(
        c.put(&d.api(&format!("/sessions/{sid}/participants/{pid}")), json!({"sessionId": sid})).status().as_u16(),
        204
    );

    let mut ua = SipUa::new(d.sip_addr());
    let mut media = MediaPeer::bind(PeerCodec::Pcmu);
    let answer = ua.invite(&token, &media.offer("sendrecv", 1));
    media.start(&answer, SIP_TONE);
    media.send_digits("9");
    let next = |what: &str| -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let e = events.recv_timeout(left).unwrap_or_else(|_| panic!("no {what} callback"));
            if e["event"] == what {
                return e;
            }
        }
    };
    let dtmf = next("dtmf");
    assert_eq!((dtmf["participantId"].as_str(), dtmf["tone"].as_str()), (Some(pid.as_str()), Some("9")));
    // The leg hears nobody: its RTP to us is silence, but it flows.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while media.recent(Duration::from_secs(1)).len() < 8_000 {
        assert!(std::time::Instant::now() < deadline, "the leg sent no audio");
        std::thread::sleep(Duration::from_millis(50));
    }
    let metric = |text: &str, name: &str| -> f64 {
        let line =
            text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name} in\n{text}"));
        line[name.len()..].trim().parse().unwrap()
    };
    let live = c.http.get(d.url("/metrics")).send().unwrap().text().unwrap();
    assert_eq!(metric(&live, "interwork_media_active_legs"), 1.0);
    assert!(metric(&live, "interwork_media_transcode_seconds_total") > 0.0, "the leg's ticks are counted live");
    assert_eq!(ua.bye(), 200);

    let ended = next("sipLegEnded");
    assert_eq!(ended["callId"], ua.call_id());
    let m = &ended["media"];
    assert_eq!(m["codec"], "PCMU", "{ended}");
    assert!(m["packetsReceived"].as_u64().unwrap() >= 40, "{ended}");
    assert!(m["packetsSent"].as_u64().unwrap() >= 40, "{ended}");
    assert_eq!(m["packetsLost"], 0, "{ended}");
    assert!(m["jitterMs"].as_f64().unwrap() < 50.0, "{ended}");
    assert_eq!(m["authFailures"], 0, "{ended}");
    assert!(m["latencyToWebrtcMs"].as_u64().unwrap() >= 20, "{ended}");
    assert_eq!(m["latencyToSipMs"], 40, "20 ms frame + 20 ms ptime: {ended}");

    // The same counters reach Prometheus.
    let text = c.http.get(d.url("/metrics")).send().unwrap().text().unwrap();
    let count = |kind: &str| -> u64 {
        let prefix = format!("interwork_media_leg_total{{kind=\"{kind}\"}} ");
        let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix} in\n{text}"));
        line[prefix.len()..].trim().parse().unwrap()
    };
    assert_eq!(count("rtp_received"), m["packetsReceived"].as_u64().unwrap());
    assert_eq!(count("rtp_sent"), m["packetsSent"].as_u64().unwrap());
    assert_eq!(count("srtp_auth_failed"), 0);
    assert_eq!(metric(&text, "interwork_media_active_legs"), 0.0);
    assert!(text.contains("interwork_media_leg_jitter_seconds_count 1"), "{text}");
}

/// Bridge mode (CONTRACT §5): the leg ends and the browser keeps the SIP participant's stream;
/// the participant's next call continues that stream, with no renegotiation in the browser.
#[test]
fn a_bridge_participants_next_call_continues_its_stream_without_renegotiation() {
    if !chrome::in_netns("a_bridge_participants_next_call_continues_its_stream_without_renegotiation") {
        return;
    }
    let scene = Scene::with(&[("INTERWORK_SIP_DEFAULT_MODE", "bridge")]);
    // Count the offers the page receives from now on: a re-attach must not need one.
    scene.page.eval(
        "t.offers = 0; rtc._pc.addEventListener('signalingstatechange', () => { \
         if (rtc._pc.signalingState === 'have-remote-offer') t.offers++; }); return true;",
    );
    let (mut first, _media) = scene.call(PeerCodec::Pcmu);
    let endpoint = scene.page_hears_sip();
    let offers = scene.page.eval("return t.offers");
    assert_eq!(first.bye(), 200);
    // The stream stays (quiet) while the participant has no call.
    scene.page.wait_for(
        "the stream of the ended leg to go quiet",
        Duration::from_secs(10),
        &format!(
            "const d = dominant({endpoint:?}); return d !== null && !(d.db > -70 && Math.abs(d.hz - {SIP_TONE}) < 15);"
        ),
    );
    assert_eq!(scene.page.eval(&format!("return {endpoint:?} in t.streams")), json!(true));
    scene.page.wait_for(
        "the parked stream to show muted",
        Duration::from_secs(10),
        &format!("return t.muted[{endpoint:?}] === true"),
    );

    // The next call, another tone: heard on the same stream; nothing renegotiated.
    let (mut second, media) = call(&scene.d, &scene.sip_token, PeerCodec::Pcmu, 600.0);
    assert_eq!(scene.page.wait_for_tone(600.0, AUDIO_LIMIT), endpoint);
    assert_eq!(scene.page.eval("return t.offers"), offers, "a re-attach needs no new offer");
    assert_eq!(scene.page.eval("return [t.available.length, t.unavailable.length]"), json!([1, 0]));
    assert_eq!(scene.page.eval(&format!("return t.muted[{endpoint:?}]")), json!(false), "unmuted by the next call");
    media.wait_for_tone(f64::from(MIC_TONE), 2.0, AUDIO_LIMIT);
    assert_eq!(second.bye(), 200);
}

/// Conference (CONTRACT §5): three SIP legs and two browsers in one session. Each SIP leg hears
/// the four others in its own mix and not itself; each browser gets a stream of each other
/// participant, its own excepted. The tones are chosen so that no sum, difference or
/// third-order product of two or three of them lands within 40 Hz of another.
#[test]
fn in_a_conference_everyone_hears_every_other_and_nobody_itself() {
    if !chrome::in_netns("in_a_conference_everyone_hears_every_other_and_nobody_itself") {
        return;
    }
    const SIP_TONES: [f64; 3] = [611.0, 828.0, 1102.0];
    const PAGE_TONES: [u32; 2] = [440, 2145];
    let d = Daemon::start_with(&[("INTERWORK_SIP_DEFAULT_MODE", "conference")]);
    let c = Client::new();
    let s: serde_json::Value = c.post(&d.api("/sessions"), json!({})).json().unwrap();
    let sid = s["id"].as_str().unwrap().to_string();
    let mut driver = chrome::Driver::start();
    let mut pages = Vec::new();
    for hz in PAGE_TONES {
        let (pid, token) = common::joined_participant(&d, &c, &sid);
        let page = driver.browser(&chrome::tone_wav(d.state_dir.parent().unwrap(), hz));
        page.load_sdk(&d.url(""));
        assert_eq!(page.connect(&token), None, "connect");
        page.publish().expect("publish");
        pages.push((pid, page));
    }
    let mut calls = Vec::new();
    for hz in SIP_TONES {
        let (pid, token) = common::joined_participant(&d, &c, &sid);
        calls.push((pid, call(&d, &token, PeerCodec::Pcmu, hz)));
    }

    // Each page: a stream of each SIP leg at its tone and of the other page; none of its own.
    for (i, (pid, page)) in pages.iter().enumerate() {
        for hz in SIP_TONES.iter().copied().chain([f64::from(PAGE_TONES[1 - i])]) {
            page.wait_for_tone(hz, AUDIO_LIMIT);
        }
        let publishers = page.eval("return Object.values(t.streams).map(s => s.participantId)");
        let publishers: Vec<&str> = publishers.as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        assert_eq!(publishers.len(), 4, "{publishers:?}");
        assert!(!publishers.contains(&pid.as_str()), "page {i} receives its own stream: {publishers:?}");
    }

    // Each SIP leg: every other tone in its mix, its own absent.
    let everyone: Vec<f64> = SIP_TONES.iter().copied().chain(PAGE_TONES.map(f64::from)).collect();
    for (i, (_, (_, media))) in calls.iter().enumerate() {
        let own = SIP_TONES[i];
        let others: Vec<f64> = everyone.iter().copied().filter(|hz| *hz != own).collect();
        let deadline = std::time::Instant::now() + AUDIO_LIMIT;
        let levels = loop {
            let pcm = media.recent(Duration::from_secs(1));
            let level = |hz: f64| codecs::pcm::analysis::tone_level_dbfs(&pcm, 8_000, hz);
            let levels: Vec<(f64, f64)> = everyone.iter().map(|hz| (*hz, level(*hz))).collect();
            let quietest_other = others.iter().map(|hz| level(*hz)).fold(f64::INFINITY, f64::min);
            if pcm.len() == 8_000 && quietest_other > -40.0 && level(own) < quietest_other - 25.0 {
                break levels;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "SIP leg {i} ({own} Hz) does not hear every other without itself: {levels:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        eprintln!("SIP leg {i} ({own} Hz) hears {levels:?}");
    }
    for (_, (mut ua, _)) in calls {
        assert_eq!(ua.bye(), 200);
    }
}
