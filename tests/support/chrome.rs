//! Headless Chromium driven through chromedriver's WebDriver HTTP API, inside a network
//! namespace that has only `lo` (TESTING.md: Chromium may otherwise send from another
//! interface). Every process is killed by its own pid when its guard drops, pass or fail.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The key of a WebDriver element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Set in the re-executed test process that runs inside the namespace.
const IN_NETNS: &str = "INTERWORK_TEST_IN_NETNS";

/// One browser test at a time: each starts two Chromiums, and the machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// How long one browser test may take in its namespace.
const TEST_LIMIT: Duration = Duration::from_secs(240);

/// Fails with a clear message when the browser is not installed.
pub fn require_chromium() {
    for (path, what) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: the browser tests need Debian's {what} \
             (apt-get install -y chromium chromium-driver; listed in deps/test-packages.txt)"
        );
    }
}

/// Runs `body` inside a fresh network namespace with only `lo` up, by re-executing this test
/// alone under `unshare -n`. Returns false in the parent (the child did the work and passed);
/// returns true in the child, where the caller runs the test body.
pub fn in_netns(test_name: &str) -> bool {
    if std::env::var_os(IN_NETNS).is_some() {
        return true;
    }
    require_chromium();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("unshare")
        .args(["-n", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(&exe)
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(IN_NETNS, "1")
        .stdin(Stdio::null())
        .spawn()
        .expect("unshare (util-linux) runs");
    let deadline = Instant::now() + TEST_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{test_name} did not finish within {TEST_LIMIT:?} in its network namespace");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "{test_name} failed inside its network namespace ({status}); its output is above. \
         (unshare -n needs root or CAP_SYS_ADMIN, and `ip` from iproute2)"
    );
    false
}

/// A sox-made mono WAV: a sine at `hz` for 60 s (Chromium loops the file).
pub fn tone_wav(dir: &Path, hz: u32) -> PathBuf {
    let path = dir.join(format!("tone-{hz}.wav"));
    let ok = Command::new("sox")
        .args(["-n", "-r", "48000", "-c", "1", "-b", "16"])
        .arg(&path)
        .args(["synth", "60", "sine", &hz.to_string(), "vol", "0.5"])
        .status()
        .expect("sox runs (deps/test-packages.txt)")
        .success();
    assert!(ok, "sox made {}", path.display());
    path
}

/// chromedriver and the browsers it started.
pub struct Driver {
    child: Option<Child>,
    port: u16,
    http: reqwest::blocking::Client,
    sessions: Vec<String>,
    tmp: tempfile::TempDir,
}

impl Driver {
    /// Starts chromedriver on a port found free; when another process takes that port before
    /// chromedriver binds it, chromedriver exits and is started again on another (up to 4
    /// times). Ready when it answers `/status` and is still running (so the answer is its own).
    pub fn start() -> Self {
        require_chromium();
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        for _ in 0..4 {
            let port = super::common::free_port();
            let child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts");
            let mut d = Self {
                child: Some(child),
                port,
                http: http.clone(),
                sessions: Vec::new(),
                tmp: tempfile::tempdir().unwrap(),
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let exited = d.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some());
                if exited {
                    break;
                }
                if d.http.get(d.url("/status")).send().is_ok_and(|r| r.status().is_success()) {
                    return d;
                }
                assert!(Instant::now() < deadline, "chromedriver did not answer on port {port}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("chromedriver exited at start four times (its ports taken each time)");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A new headless Chromium whose fake microphone plays `wav`.
    pub fn browser(&mut self, wav: &Path) -> Browser {
        let profile = self.tmp.path().join(format!("profile-{}", self.sessions.len()));
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", profile.display()),
            "--use-fake-ui-for-media-stream".into(),
            "--use-fake-device-for-media-stream".into(),
            format!("--use-file-for-fake-audio-capture={}", wav.display()),
            "--allow-loopback-in-peer-connection".into(),
            "--disable-features=WebRtcHideLocalIpsWithMdns".into(),
            "--autoplay-policy=no-user-gesture-required".into(),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
        }}});
        let r: Value = self.http.post(self.url("/session")).json(&caps).send().unwrap().json().unwrap();
        let id =
            r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("chromedriver made no session: {r}")).to_string();
        self.sessions.push(id.clone());
        Browser { http: self.http.clone(), base: self.url(&format!("/session/{id}")) }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        for id in std::mem::take(&mut self.sessions) {
            // Quits that session's Chromium.
            let _ = self.http.delete(self.url(&format!("/session/{id}"))).timeout(Duration::from_secs(10)).send();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One browser (a WebDriver session).
pub struct Browser {
    http: reqwest::blocking::Client,
    base: String,
}

impl Browser {
    pub fn goto(&self, url: &str) {
        let r = self.http.post(format!("{}/url", self.base)).json(&json!({"url": url})).send().unwrap();
        assert!(r.status().is_success(), "navigate to {url}: {}", r.text().unwrap_or_default());
    }

    /// The WebDriver id of the first element matching `css`.
    pub fn element(&self, css: &str) -> String {
        let r: Value = self
            .http
            .post(format!("{}/element", self.base))
            .json(&json!({"using": "css selector", "value": css}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        r["value"][ELEMENT_KEY].as_str().unwrap_or_else(|| panic!("no element {css}: {r}")).to_string()
    }

    /// Clicks the element matching `css` as a user would (WebDriver element click).
    pub fn click(&self, css: &str) {
        let id = self.element(css);
        let r = self.http.post(format!("{}/element/{id}/click", self.base)).json(&json!({})).send().unwrap();
        assert!(r.status().is_success(), "click {css}: {}", r.text().unwrap_or_default());
    }

    /// The rectangle of the element matching `css`, in CSS pixels: (x, y, width, height).
    pub fn rect(&self, css: &str) -> (f64, f64, f64, f64) {
        let id = self.element(css);
        let r: Value = self.http.get(format!("{}/element/{id}/rect", self.base)).send().unwrap().json().unwrap();
        let v = &r["value"];
        let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("rect of {css}: {r}"));
        (f("x"), f("y"), f("width"), f("height"))
    }

    /// Sets the browser window's size in CSS pixels.
    pub fn set_window_size(&self, width: u32, height: u32) {
        let r = self
            .http
            .post(format!("{}/window/rect", self.base))
            .json(&json!({"width": width, "height": height}))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "window size: {}", r.text().unwrap_or_default());
    }

    /// A screenshot of the viewport: PNG bytes.
    pub fn screenshot_png(&self) -> Vec<u8> {
        use base64::Engine as _;
        let r: Value = self.http.get(format!("{}/screenshot", self.base)).send().unwrap().json().unwrap();
        let b64 = r["value"].as_str().unwrap_or_else(|| panic!("no screenshot: {r}"));
        base64::engine::general_purpose::STANDARD.decode(b64).expect("the screenshot is base64")
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub fn eval(&self, script: &str) -> Value {
        let r: Value = self
            .http
            .post(format!("{}/execute/sync", self.base))
            .json(&json!({"script": script, "args": []}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if r["value"].get("error").is_some() {
            panic!("script failed: {}\n{script}", r["value"]);
        }
        r["value"].clone()
    }

    /// Polls `script` until it returns something truthy, at most `limit`; returns that value.
    pub fn wait_for(&self, what: &str, limit: Duration, script: &str) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.eval(script);
            let truthy = !matches!(v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let state = self.eval(
                    "return JSON.stringify({t: window.t || null, demo: window.demo || null, \
                     errors: window.rtc ? window.rtc._errors : null, \
                     sdp: window.rtc && window.rtc._pc && window.rtc._pc.remoteDescription ? window.rtc._pc.remoteDescription.sdp : null})",
                );
                panic!("timed out after {limit:?} waiting for {what}; page state: {state}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Loads the SDK with a `<script>` tag into a page of `origin` and sets up `window.t`:
    /// streams received, with a WebAudio analyser each.
    pub fn load_sdk(&self, origin: &str) {
        self.goto(&format!("{origin}/healthz"));
        self.eval(
            r#"
            window.t = {available: [], unavailable: [], streams: {}, dtmf: [], muted: {}};
            const s = document.createElement('script');
            s.onerror = () => t.sdkError = 'the SDK did not load';
            s.src = '/sdk/interwork.js';
            document.head.appendChild(s);
            return true;"#,
        );
        self.wait_for("the SDK to load", Duration::from_secs(10), "return typeof InterworkRtc === 'function'");
        self.eval(
            r#"
            const rtc = new InterworkRtc();
            window.rtc = rtc;
            window.audioCtx = new AudioContext();
            rtc.onStreamAvailable(s => {
                t.available.push(s.endpointId);
                // Chromium feeds remote WebRTC audio to WebAudio only while a media element plays it.
                const el = new Audio();
                el.muted = true;
                el.srcObject = s.mediaStream;
                el.play().catch(() => {});
                const an = audioCtx.createAnalyser();
                an.fftSize = 8192;
                an.smoothingTimeConstant = 0;
                audioCtx.createMediaStreamSource(s.mediaStream).connect(an);
                t.streams[s.endpointId] = {participantId: s.participantId, mediaTypes: s.mediaTypes, an, el};
            });
            rtc.onStreamUnavailable(e => { t.unavailable.push(e); delete t.streams[e]; });
            rtc.onDtmf(d => t.dtmf.push(d));
            rtc.onStreamMuted((e, m) => { t.muted[e] = m; });
            window.dominant = function (endpointId) {
                const st = t.streams[endpointId];
                if (!st) return null;
                const d = new Float32Array(st.an.frequencyBinCount);
                st.an.getFloatFrequencyData(d);
                let best = 1;
                for (let i = 1; i < d.length; i++) if (d[i] > d[best]) best = i;
                return {hz: best * audioCtx.sampleRate / st.an.fftSize, db: d[best]};
            };
            return true;"#,
        );
    }

    /// `rtc.connect` with `token`; waits for it to settle and returns the close code on failure.
    pub fn connect(&self, token: &str) -> Option<i64> {
        self.eval(&format!(
            "audioCtx.resume(); rtc.connect({{deviceToken: {token:?}}}).then(() => t.connected = true, e => t.connectError = e.code); return true;"
        ));
        let v = self.wait_for(
            "connect to settle",
            Duration::from_secs(15),
            "return t.connected ? 'ok' : (t.connectError !== undefined ? 'err' : null)",
        );
        if v == "ok" { None } else { self.eval("return t.connectError").as_i64() }
    }

    /// `rtc.publish({audio: true})`; returns the endpoint id or the error code.
    pub fn publish(&self) -> Result<String, String> {
        self.eval(
            "rtc.publish({audio: true, video: false}).then(s => t.published = s.endpointId, e => t.publishError = String(e.code)); return true;",
        );
        let v = self.wait_for(
            "publish to settle",
            Duration::from_secs(15),
            "return t.published ? 'ok' : (t.publishError ? 'err' : null)",
        );
        if v == "ok" {
            Ok(self.eval("return t.published").as_str().unwrap().to_string())
        } else {
            Err(self.eval("return t.publishError").as_str().unwrap().to_string())
        }
    }

    /// Waits until the page hears a stream whose dominant frequency is within 15 Hz of `hz`;
    /// returns the endpoint id.
    pub fn wait_for_tone(&self, hz: f64, limit: Duration) -> String {
        let script = format!(
            "for (const e of Object.keys(t.streams)) {{ const d = dominant(e); \
             if (d && d.db > -70 && Math.abs(d.hz - {hz}) < 15) return e; }} return null;"
        );
        let v = self.wait_for(&format!("a {hz} Hz tone"), limit, &script);
        v.as_str().unwrap().to_string()
    }
}
