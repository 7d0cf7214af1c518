//! Shared harness for the integration tests: the real `interwork` binary on free loopback
//! ports with its own state directory, killed by its own pid when the test ends.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::BufRead as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const USER: &str = "tester";
pub const PASSWORD: &str = "secret-password";

/// How long a daemon may take to answer `/healthz` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A port that was free a moment ago on 127.0.0.1, for UDP and TCP both (SIP binds both).
/// Another process may still take it before whoever it is for binds it: those who bind one
/// retry on fresh ports when that happens ([`Daemon::spawn`], the sipp runs).
pub fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// What a daemon writes on one of its streams, read as it comes: a pipe nobody reads would block
/// the daemon once its buffer (64 KB) is full of logs.
#[derive(Default)]
pub struct Logs {
    /// The text so far, and whether the stream is still open (1) or ended (0).
    state: Mutex<(String, usize)>,
    grew: Condvar,
}

impl Logs {
    /// Reads `stream` to its end in a thread of its own.
    fn drain(self: &Arc<Self>, stream: impl std::io::Read + Send + 'static) {
        self.state.lock().unwrap().1 += 1;
        let logs = self.clone();
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                logs.state.lock().unwrap().0.push_str(&line);
                logs.grew.notify_all();
                line.clear();
            }
            logs.state.lock().unwrap().1 -= 1;
            logs.grew.notify_all();
        });
    }

    /// The text so far.
    pub fn text(&self) -> String {
        self.state.lock().unwrap().0.clone()
    }

    /// The text once the stream ended (the process exited), waiting at most `limit`.
    pub fn text_at_end(&self, limit: Duration) -> String {
        let guard = self.state.lock().unwrap();
        let (guard, _) = self.grew.wait_timeout_while(guard, limit, |(_, open)| *open > 0).unwrap();
        guard.0.clone()
    }

    /// The next whole line after `cursor` that contains `what`, waiting for it at most `limit`;
    /// `cursor` moves past it.
    pub fn next_line_with(&self, cursor: &mut usize, what: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        let mut guard = self.state.lock().unwrap();
        loop {
            let text = &guard.0;
            let mut at = *cursor;
            while let Some(end) = text[at..].find('\n') {
                let line = &text[at..at + end];
                at += end + 1;
                if line.contains(what) {
                    *cursor = at;
                    return Some(line.to_string());
                }
            }
            *cursor = at;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || guard.1 == 0 {
                return None;
            }
            guard = self.grew.wait_timeout(guard, left).unwrap().0;
        }
    }
}

/// A running daemon.
pub struct Daemon {
    pub child: Option<Child>,
    /// `run --config FILE` when set.
    pub config_file: Option<PathBuf>,
    /// `RUST_LOG` of the process (`None`: unset, so the config's `log.level` applies).
    pub rust_log: Option<String>,
    pub http: SocketAddr,
    pub state_dir: PathBuf,
    pub env: Vec<(String, String)>,
    /// What the running process (the last one spawned) writes on stderr: its logs.
    pub logs: Arc<Logs>,
    /// ... and on stdout: the start banner.
    pub stdout: Arc<Logs>,
    _tmp: Option<tempfile::TempDir>,
}

impl Daemon {
    /// Starts a daemon on fresh ports and a fresh state directory.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a daemon with extra `INTERWORK_*` variables.
    pub fn start_with(extra: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let state_dir = tmp.path().join("state");
        let mut d = Self::configure(&state_dir, extra);
        d._tmp = Some(tmp);
        d.spawn();
        d
    }

    /// A daemon on `state_dir`, not started.
    pub fn configure(state_dir: &Path, extra: &[(&str, &str)]) -> Self {
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut env: Vec<(String, String)> = vec![
            ("INTERWORK_HTTP_LISTEN".into(), http.to_string()),
            ("INTERWORK_SIP_LISTEN".into(), format!("127.0.0.1:{}", free_port())),
            ("INTERWORK_MEDIA_WEBRTC_LISTEN".into(), format!("127.0.0.1:{}", free_port())),
            ("INTERWORK_STATE_DIR".into(), state_dir.display().to_string()),
            ("INTERWORK_ACCOUNTS_DEFAULT_USERNAME".into(), USER.into()),
            ("INTERWORK_ACCOUNTS_DEFAULT_PASSWORD".into(), PASSWORD.into()),
        ];
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        Self {
            child: None,
            config_file: None,
            rust_log: Some("warn".into()),
            http,
            state_dir: state_dir.to_path_buf(),
            env,
            logs: Arc::default(),
            stdout: Arc::default(),
            _tmp: None,
        }
    }

    /// Starts (or restarts) the process and waits until it answers. A port taken by someone
    /// else between choosing and binding it is retried on fresh ports.
    pub fn spawn(&mut self) {
        for attempt in 0..3 {
            let mut command = Command::new(env!("CARGO_BIN_EXE_interwork"));
            command.arg("run");
            if let Some(file) = &self.config_file {
                command.arg("--config").arg(file);
            }
            command.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
            if let Some(level) = &self.rust_log {
                command.env("RUST_LOG", level);
            }
            let mut child = command
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (self.logs, self.stdout) = (Arc::default(), Arc::default());
            self.logs.drain(child.stderr.take().unwrap());
            self.stdout.drain(child.stdout.take().unwrap());
            self.child = Some(child);
            match self.wait_healthy() {
                Ok(()) => return,
                Err(err) if attempt < 2 && err.contains("cannot listen") => {
                    self.child = None;
                    self.reassign_ports();
                }
                Err(err) => panic!("{err}"),
            }
        }
    }

    /// Every `INTERWORK_*_LISTEN` on a fresh loopback port (read them back from `env`).
    fn reassign_ports(&mut self) {
        for (key, value) in &mut self.env {
            if key.ends_with("_LISTEN") && !value.is_empty() {
                *value = format!("127.0.0.1:{}", free_port());
            }
        }
        let http = self.env.iter().find(|(k, _)| k == "INTERWORK_HTTP_LISTEN").map(|(_, v)| v.parse().unwrap());
        self.http = http.unwrap_or(self.http);
    }

    /// Waits until `/healthz` answers 200, or the process exits (its stderr is the error).
    fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let err = self.logs.text_at_end(Duration::from_secs(5));
                return Err(format!("interwork exited early with {status}: {err}"));
            }
            if client.get(format!("http://{}/healthz", self.http)).send().is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("interwork did not answer on {} in time", self.http));
            }
            // Polling a condition with a bound, not sleeping for a guessed duration.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL, then everything the process wrote to stderr and stdout.
    pub fn kill_for_logs(&mut self) -> String {
        self.kill();
        let limit = Duration::from_secs(10);
        self.logs.text_at_end(limit) + &self.stdout.text_at_end(limit)
    }

    /// Sends a signal by pid.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill").args(["-s", sig, &pid]).status().unwrap().success());
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "interwork did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn api(&self, path: &str) -> String {
        self.url(&format!("/v1/accounts/default{path}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A blocking HTTP client with the daemon's credentials.
pub struct Client {
    pub http: reqwest::blocking::Client,
}

impl Client {
    pub fn new() -> Self {
        Self { http: reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap() }
    }

    pub fn get(&self, url: &str) -> reqwest::blocking::Response {
        self.http.get(url).basic_auth(USER, Some(PASSWORD)).send().unwrap()
    }

    pub fn delete(&self, url: &str) -> reqwest::blocking::Response {
        self.http.delete(url).basic_auth(USER, Some(PASSWORD)).send().unwrap()
    }

    pub fn post(&self, url: &str, body: serde_json::Value) -> reqwest::blocking::Response {
        self.http.post(url).basic_auth(USER, Some(PASSWORD)).json(&body).send().unwrap()
    }

    pub fn put(&self, url: &str, body: serde_json::Value) -> reqwest::blocking::Response {
        self.http.put(url).basic_auth(USER, Some(PASSWORD)).json(&body).send().unwrap()
    }

    pub fn raw(&self, method: reqwest::Method, url: &str, body: &'static str) -> reqwest::blocking::Response {
        self.http
            .request(method, url)
            .basic_auth(USER, Some(PASSWORD))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap()
    }
}

/// Checks an error response against the contract's shape and returns its code.
pub fn error_code(r: reqwest::blocking::Response, status: u16) -> String {
    assert_eq!(r.status().as_u16(), status, "status");
    let body: serde_json::Value = r.json().expect("error bodies are JSON");
    assert_eq!(body["status"], status, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    body["code"].as_str().expect("code").to_string()
}

/// Creates a session and a participant in it subscribed to the whole session; returns their ids.
pub fn session_with_participant(d: &Daemon, c: &Client) -> (String, String, String) {
    let s: serde_json::Value = c.post(&d.api("/sessions"), serde_json::json!({"tag": "t"})).json().unwrap();
    let sid = s["id"].as_str().unwrap().to_string();
    let p: serde_json::Value =
        c.post(&d.api("/participants"), serde_json::json!({"publishPermissions": ["AUDIO"]})).json().unwrap();
    let pid = p["participant"]["id"].as_str().unwrap().to_string();
    let token = p["token"].as_str().unwrap().to_string();
    let r = c.put(&d.api(&format!("/sessions/{sid}/participants/{pid}")), serde_json::json!({"sessionId": sid}));
    assert_eq!(r.status().as_u16(), 204);
    (sid, pid, token)
}

impl Daemon {
    /// Where its SIP listens (UDP and TCP).
    pub fn sip_addr(&self) -> SocketAddr {
        self.env.iter().find(|(k, _)| k == "INTERWORK_SIP_LISTEN").map(|(_, v)| v.parse().unwrap()).unwrap()
    }
}

/// A new participant that may publish audio, joined to `sid` hearing everyone in it (and
/// heard by everyone): (participant id, token).
pub fn joined_participant(d: &Daemon, c: &Client, sid: &str) -> (String, String) {
    let p: serde_json::Value =
        c.post(&d.api("/participants"), serde_json::json!({"publishPermissions": ["AUDIO"]})).json().unwrap();
    let (pid, token) = (p["participant"]["id"].as_str().unwrap().to_string(), p["token"].as_str().unwrap().to_string());
    let r = c.put(&d.api(&format!("/sessions/{sid}/participants/{pid}")), serde_json::json!({"sessionId": sid}));
    assert_eq!(r.status().as_u16(), 204, "{}", r.text().unwrap_or_default());
    (pid, token)
}
