//! The daemon's configuration: TOML, every key with a default, each key overridable by an
//! `INTERWORK_<SECTION>_<KEY>` environment variable (CONTRACT §1).
//!
//! The whole file is parsed into typed values before any socket is bound. Every problem is
//! collected with the key it concerns (unknown key, wrong type, impossible value, cross-key rule)
//! and reported together, so an operator fixes a file in one pass; `interwork check-config` and
//! `interwork run` share [`Config::load`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use crate::interconnect::InterconnectMode;
pub use crate::media::params::SrtpPolicy;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use crate::media::leg::Latching;

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "INTERWORK_";

/// `http.auth_max_failures`: ten wrong passwords a minute is more than a person mistypes and far
/// too few to guess a generated 124-bit password.
pub const DEFAULT_AUTH_MAX_FAILURES: u32 = 10;
/// `http.auth_failure_window`.
pub const DEFAULT_AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// `demo.max_participants`: ten page loads at once (a browser and a phone participant each),
/// enough to try the demo in a few tabs.
pub const DEFAULT_DEMO_MAX_PARTICIPANTS: u32 = 20;
/// `demo.lifetime`: long enough to try a call, short enough that abandoned pages free their
/// place soon.
pub const DEFAULT_DEMO_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// `demo.requests_per_minute`: a person reloads the page a few times a minute, not more.
pub const DEFAULT_DEMO_REQUESTS_PER_MINUTE: u32 = 10;

/// Where the environment comes from: the process, or a map in tests (tests never touch the
/// process environment).
pub trait Environment {
    /// Every variable whose name starts with [`ENV_PREFIX`].
    fn interwork_vars(&self) -> BTreeMap<String, String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn interwork_vars(&self) -> BTreeMap<String, String> {
        std::env::vars().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect()
    }
}

impl Environment for HashMap<String, String> {
    fn interwork_vars(&self) -> BTreeMap<String, String> {
        self.iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// The whole configuration, typed and checked.
#[derive(Clone, Debug)]
pub struct Config {
    /// `[http]`: the control API.
    pub http: HttpConfig,
    /// `[sip]`: the SIP side.
    pub sip: SipConfig,
    /// `[media]`: RTP and WebRTC media.
    pub media: MediaConfig,
    /// `[state]`: where persistent state lives.
    pub state: StateConfig,
    /// `[accounts.<id>]`: the API's accounts, by account id.
    pub accounts: BTreeMap<String, AccountConfig>,
    /// `[demo]`: the demo page.
    pub demo: DemoConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[tokens]`: participant tokens.
    pub tokens: TokensConfig,
    /// `[sessions]`: session lifetimes and limits.
    pub sessions: SessionsConfig,
    /// `[callbacks]`: delivery of events to participants' `callbackUrl`.
    pub callbacks: CallbacksConfig,
    /// `[shutdown]`: draining on SIGTERM.
    pub shutdown: ShutdownConfig,
}

/// `[http]`.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Address of the HTTP listener.
    pub listen: ListenAddr,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Longest a request may take before it is answered 408.
    pub request_timeout: Duration,
    /// A separate listener for `GET /metrics`; when set, the HTTP listener no longer serves it.
    /// `None` (the default): `/metrics` is on the HTTP listener (CONTRACT §2).
    pub metrics_listen: Option<ListenAddr>,
    /// `GET /metrics` asks for any account's HTTP Basic credentials.
    pub metrics_auth: bool,
    /// Failed HTTP Basic sign-ins from one source address within `auth_failure_window` after
    /// which its requests are answered 429 until the window ends.
    pub auth_max_failures: u32,
    /// The window in which failed sign-ins are counted.
    pub auth_failure_window: Duration,
}

/// `[sip]`.
#[derive(Clone, Debug)]
pub struct SipConfig {
    /// UDP and TCP listener.
    pub listen: ListenAddr,
    /// TLS listener, when set (needs `tls_cert` and `tls_key`).
    pub tls_listen: Option<ListenAddr>,
    /// PEM certificate chain for the TLS listener.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for the TLS listener.
    pub tls_key: Option<PathBuf>,
    /// Mode for calls that name none.
    pub default_mode: InterconnectMode,
    /// Sources allowed to send INVITEs; empty means anyone.
    pub trusted_peers: Vec<IpNet>,
    /// Most concurrent calls.
    pub max_calls: u32,
    /// Most SIP legs in one conference session.
    pub max_conference_legs: u32,
    /// Most new INVITEs per second from one source address.
    pub invite_rate: u32,
    /// Most server transactions awaiting the gateway's final answer or the ACK of a refused
    /// INVITE; past it requests get a stateless 503.
    pub max_pending: u32,
    /// Time to ring (180) before answering; zero answers at once.
    pub answer_delay: Duration,
    /// Session interval asked of callers that support RFC 4028 timers, seconds.
    pub session_expires: u32,
    /// Smallest session interval accepted (Min-SE), seconds.
    pub min_se: u32,
}

/// `[media]`.
#[derive(Clone, Debug)]
pub struct MediaConfig {
    /// The one UDP socket every browser peer shares.
    pub webrtc_listen: ListenAddr,
    /// Lowest SIP-leg RTP port.
    pub rtp_port_min: u16,
    /// Highest SIP-leg RTP port.
    pub rtp_port_max: u16,
    /// Address announced in SDP and ICE behind a 1:1 NAT.
    pub public_ip: Option<IpAddr>,
    /// SRTP policy on the SIP side.
    pub srtp: SrtpPolicy,
    /// A leg whose RTP stopped for this long (and is not on hold) is ended with BYE.
    pub rtp_timeout: Duration,
    /// Which new sources may take over a leg's RTP after its peer went quiet.
    pub latching: Latching,
    /// Media worker threads carrying the SIP legs; 0 is one per core.
    pub workers: usize,
}

/// `[state]`.
#[derive(Clone, Debug)]
pub struct StateConfig {
    /// Directory of the store, the signing key and generated credentials.
    pub dir: PathBuf,
}

/// `[accounts.<id>]`.
#[derive(Clone, Debug, Default)]
pub struct AccountConfig {
    /// HTTP Basic user name; generated on first start when empty.
    pub username: String,
    /// HTTP Basic password; generated on first start when empty.
    pub password: String,
}

/// `[demo]`.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// Serve `/demo/`.
    pub enabled: bool,
    /// Most demo participants alive at once (two per page load). They are counted apart from
    /// the `default` account's own `sessions.max_participants`.
    pub max_participants: u32,
    /// A demo participant (and its token) is removed this long after it was made.
    pub lifetime: Duration,
    /// `/demo/connectionInfo` requests allowed per minute from one source address.
    pub requests_per_minute: u32,
}

/// `[log]`.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// `tracing` filter directives, e.g. `info` or `interwork=debug,info`.
    pub level: String,
}

pub use crate::tokens::TokensConfig;

/// `[sessions]`.
#[derive(Clone, Debug)]
pub struct SessionsConfig {
    /// A session is removed this long after creation.
    pub lifetime: Duration,
    /// Lifetime of a session that holds a conference.
    pub conference_lifetime: Duration,
    /// Most sessions per account.
    pub max_sessions: u32,
    /// Most participants per account.
    pub max_participants: u32,
    /// Most participants in one session.
    pub max_participants_per_session: u32,
}

/// `[callbacks]`.
#[derive(Clone, Debug)]
pub struct CallbacksConfig {
    /// Delivery attempts per event before it is dropped.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles each time up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Time limit of one attempt.
    pub timeout: Duration,
    /// Allow `callbackUrl`s that name or resolve to loopback, private, link-local and other
    /// internal addresses. Off by default: a callback could otherwise reach services inside the
    /// gateway's network (SSRF). Turn on only for tests or a receiver on the gateway's host.
    pub allow_private: bool,
}

/// `[shutdown]`.
#[derive(Clone, Debug)]
pub struct ShutdownConfig {
    /// How long live calls may continue after SIGTERM before they are ended.
    pub drain_timeout: Duration,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A socket address to listen on; port 0 is refused because peers must know the port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ListenAddr(pub SocketAddr);

impl TryFrom<String> for ListenAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let addr: SocketAddr = s.parse().map_err(|_| "not an address like 127.0.0.1:8080 or [::1]:8080".to_string())?;
        if addr.port() == 0 {
            return Err("port 0; a listener needs a fixed port".into());
        }
        Ok(Self(addr))
    }
}

impl From<ListenAddr> for String {
    fn from(a: ListenAddr) -> Self {
        a.0.to_string()
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A duration written as humans do: `30s`, `9h`, `1h 30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
struct HumanDuration(Duration);

impl TryFrom<String> for HumanDuration {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| format!("`{s}` is not a duration like 30s or 9h ({e})"))
    }
}

impl From<HumanDuration> for String {
    fn from(d: HumanDuration) -> Self {
        humantime::format_duration(d.0).to_string()
    }
}

/// Why a configuration was refused: every problem found, each naming its key.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// The problems, in the order they were found.
    pub problems: Vec<ConfigProblem>,
}

/// One problem with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key, as `section.key`, or the environment variable's name.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl Config {
    /// The embedded default, with the process environment applied.
    pub fn embedded(env: &dyn Environment) -> Result<Self, ConfigError> {
        Self::from_toml_str("", env)
    }

    /// Reads and checks a config file, with the environment applied.
    pub fn load(path: &Path, env: &dyn Environment) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![ConfigProblem {
                key: path.display().to_string(),
                reason: format!("cannot read the config file: {e}"),
            }],
        })?;
        Self::from_toml_str(&text, env)
    }

    /// Parses TOML text, applies the environment, and checks every key.
    pub fn from_toml_str(text: &str, env: &dyn Environment) -> Result<Self, ConfigError> {
        let root: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
            problems: vec![ConfigProblem {
                key: "(file)".into(),
                reason: format!("not valid TOML: {}", e.to_string().trim()),
            }],
        })?;
        let mut reader = Reader::new(root, env.interwork_vars());
        let config = reader.read_config();
        let mut problems = reader.finish();
        problems.extend(config.cross_key_problems());
        if problems.is_empty() { Ok(config) } else { Err(ConfigError { problems }) }
    }

    /// What is allowed but likely wrong: the daemon logs each at start and `check-config`
    /// prints each (without failing), keyed like problems.
    pub fn warnings(&self) -> Vec<ConfigProblem> {
        let mut warnings = Vec::new();
        let listen = self.http.listen.0;
        if self.demo.enabled && !listen.ip().is_loopback() {
            warnings.push(ConfigProblem {
                key: "demo.enabled".into(),
                reason: format!(
                    "the demo is on and HTTP listens on {listen}, which is not loopback: anyone who reaches it \
                     can get demo participants and tokens without credentials; turn the demo off outside a trial"
                ),
            });
        }
        if self.media.public_ip.is_none() {
            let wildcard = |addr: SocketAddr| addr.ip().is_unspecified();
            if wildcard(self.media.webrtc_listen.0) {
                warnings.push(ConfigProblem {
                    key: "media.public_ip".into(),
                    reason: format!(
                        "media.webrtc_listen is {} (every interface) and media.public_ip is empty: browsers are \
                         offered loopback only, so no browser on another machine gets audio; set media.public_ip",
                        self.media.webrtc_listen
                    ),
                });
            }
            if wildcard(self.sip.listen.0) {
                warnings.push(ConfigProblem {
                    key: "media.public_ip".into(),
                    reason: format!(
                        "sip.listen is {} (every interface) and media.public_ip is empty: SDP answers announce \
                         127.0.0.1, so no phone on another machine gets audio; set media.public_ip",
                        self.sip.listen
                    ),
                });
            }
        }
        warnings
    }

    /// Rules that involve several keys or the file system.
    fn cross_key_problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, reason: String| {
            problems.push(ConfigProblem { key: key.into(), reason });
        };
        if self.media.rtp_port_min > self.media.rtp_port_max {
            problem(
                "media.rtp_port_min",
                format!(
                    "{} is above media.rtp_port_max ({}): the RTP range is empty",
                    self.media.rtp_port_min, self.media.rtp_port_max
                ),
            );
        }
        if self.sip.tls_listen.is_some() {
            for (key, value) in [("sip.tls_cert", &self.sip.tls_cert), ("sip.tls_key", &self.sip.tls_key)] {
                if value.is_none() {
                    problem(key, "sip.tls_listen is set, so this file is needed".into());
                }
            }
        }
        let files = [
            ("sip.tls_cert", &self.sip.tls_cert),
            ("sip.tls_key", &self.sip.tls_key),
            ("tokens.signing_key", &self.tokens.signing_key),
            ("tokens.external_public_key", &self.tokens.external_public_key),
            ("tokens.external_jwks", &self.tokens.external_jwks),
        ];
        for (key, path) in files {
            if let Some(path) = path
                && !path.is_file()
            {
                problem(key, format!("file `{}` does not exist", path.display()));
            }
        }
        let external_keys = self.tokens.external_public_key.is_some() || self.tokens.external_jwks.is_some();
        if external_keys && self.tokens.external_issuer.is_empty() {
            problem("tokens.external_issuer", "an external key is configured, so name its issuer".into());
        }
        if self.tokens.external_public_key.is_some() && self.tokens.external_jwks.is_some() {
            problem(
                "tokens.external_jwks",
                "give either tokens.external_public_key or tokens.external_jwks, not both".into(),
            );
        }
        if !self.tokens.external_issuer.is_empty() && !external_keys {
            problem("tokens.external_issuer", "needs tokens.external_public_key or tokens.external_jwks".into());
        }
        if self.tokens.external_issuer == self.tokens.issuer && !self.tokens.external_issuer.is_empty() {
            problem("tokens.external_issuer", "must differ from tokens.issuer".into());
        }
        if let Some(metrics) = self.http.metrics_listen
            && metrics == self.http.listen
        {
            problem(
                "http.metrics_listen",
                "must differ from http.listen (leave it empty to serve /metrics there)".into(),
            );
        }
        if self.accounts.is_empty() {
            problem("accounts", "at least one account is needed".into());
        }
        problems
    }
}

/// Reads keys out of the parsed TOML, applying environment overrides and collecting problems.
struct Reader {
    root: toml::Table,
    env: BTreeMap<String, String>,
    used_env: BTreeSet<String>,
    problems: Vec<ConfigProblem>,
}

impl Reader {
    fn new(root: toml::Table, env: BTreeMap<String, String>) -> Self {
        Self { root, env, used_env: BTreeSet::new(), problems: Vec::new() }
    }

    fn read_config(&mut self) -> Config {
        let http = {
            let mut s = self.section("http");
            HttpConfig {
                listen: s.value("listen", ListenAddr(([127, 0, 0, 1], 8080).into())),
                body_limit: s.bounded("body_limit", 64 * 1024, 1024, 16 * 1024 * 1024),
                request_timeout: s.duration("request_timeout", Duration::from_secs(30)),
                metrics_listen: s.optional("metrics_listen"),
                metrics_auth: s.value("metrics_auth", false),
                auth_max_failures: s.bounded("auth_max_failures", DEFAULT_AUTH_MAX_FAILURES, 1, 1_000_000),
                auth_failure_window: s.duration("auth_failure_window", DEFAULT_AUTH_FAILURE_WINDOW),
            }
        };
        let sip = {
            let mut s = self.section("sip");
            SipConfig {
                listen: s.value("listen", ListenAddr(([127, 0, 0, 1], 5060).into())),
                tls_listen: s.optional("tls_listen"),
                tls_cert: s.path("tls_cert"),
                tls_key: s.path("tls_key"),
                default_mode: s.value("default_mode", InterconnectMode::Transfer),
                trusted_peers: s.trusted_peers("trusted_peers"),
                max_calls: s.bounded("max_calls", 10_000, 1, 1_000_000),
                max_conference_legs: s.bounded("max_conference_legs", 20, 1, 10_000),
                invite_rate: s.bounded("invite_rate", 100, 1, 1_000_000),
                max_pending: s.bounded("max_pending", 4_096, 1, 1_000_000),
                answer_delay: s.value("answer_delay", HumanDuration(Duration::ZERO)).0,
                session_expires: s.bounded("session_expires", 1800, 90, 86_400),
                min_se: s.bounded("min_se", 90, 90, 86_400),
            }
        };
        let media = {
            let mut s = self.section("media");
            MediaConfig {
                webrtc_listen: s.value("webrtc_listen", ListenAddr(([127, 0, 0, 1], 19000).into())),
                rtp_port_min: s.bounded("rtp_port_min", 20_000, 1, 65_535),
                rtp_port_max: s.bounded("rtp_port_max", 29_999, 1, 65_535),
                public_ip: s.optional("public_ip"),
                srtp: s.value("srtp", SrtpPolicy::Optional),
                rtp_timeout: s.duration("rtp_timeout", Duration::from_secs(30)),
                latching: s.value("latching", Latching::Ip),
                workers: s.bounded("workers", 0, 0, 256) as usize,
            }
        };
        let state = {
            let mut s = self.section("state");
            StateConfig { dir: s.value("dir", PathBuf::from("./interwork-state")) }
        };
        let accounts = self.accounts();
        let demo = {
            let mut s = self.section("demo");
            DemoConfig {
                enabled: s.value("enabled", true),
                max_participants: s.bounded("max_participants", DEFAULT_DEMO_MAX_PARTICIPANTS, 2, 100_000),
                lifetime: s.duration("lifetime", DEFAULT_DEMO_LIFETIME),
                requests_per_minute: s.bounded("requests_per_minute", DEFAULT_DEMO_REQUESTS_PER_MINUTE, 1, 1_000_000),
            }
        };
        let log = {
            let mut s = self.section("log");
            let format = s.value("format", LogFormat::Text);
            let level: String = s.value("level", "info".to_string());
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
                s.problem("level", format!("`{level}` is not a log filter: {e}"));
            }
            LogConfig { format, level }
        };
        let tokens = {
            let mut s = self.section("tokens");
            TokensConfig {
                ttl: s.duration("ttl", Duration::from_secs(3600)),
                issuer: s.short_string("issuer", "iw"),
                signing_key: s.path("signing_key"),
                external_issuer: s.short_string("external_issuer", ""),
                external_public_key: s.path("external_public_key"),
                external_jwks: s.path("external_jwks"),
                leeway: s.duration("leeway", Duration::from_secs(30)),
            }
        };
        let sessions = {
            let mut s = self.section("sessions");
            SessionsConfig {
                lifetime: s.duration("lifetime", Duration::from_secs(9 * 3600)),
                conference_lifetime: s.duration("conference_lifetime", Duration::from_secs(24 * 3600)),
                max_sessions: s.bounded("max_sessions", 10_000, 1, 10_000_000),
                max_participants: s.bounded("max_participants", 50_000, 1, 10_000_000),
                max_participants_per_session: s.bounded("max_participants_per_session", 1_000, 1, 100_000),
            }
        };
        let callbacks = {
            let mut s = self.section("callbacks");
            CallbacksConfig {
                max_attempts: s.bounded("max_attempts", 5, 1, 100),
                initial_backoff: s.duration("initial_backoff", Duration::from_millis(500)),
                max_backoff: s.duration("max_backoff", Duration::from_secs(30)),
                timeout: s.duration("timeout", Duration::from_secs(5)),
                allow_private: s.value("allow_private", false),
            }
        };
        let shutdown = {
            let mut s = self.section("shutdown");
            ShutdownConfig { drain_timeout: s.duration("drain_timeout", Duration::from_secs(30)) }
        };
        Config { http, sip, media, state, accounts, demo, log, tokens, sessions, callbacks, shutdown }
    }

    /// `[accounts.<id>]` tables from the file and `INTERWORK_ACCOUNTS_<ID>_<KEY>` variables;
    /// the embedded default has one account, `default`.
    fn accounts(&mut self) -> BTreeMap<String, AccountConfig> {
        let mut tables = match self.root.remove("accounts") {
            None => toml::Table::new(),
            Some(toml::Value::Table(t)) => t,
            Some(other) => {
                self.problem("accounts", format!("expected a table of accounts, found {}", other.type_str()));
                toml::Table::new()
            }
        };
        for name in self.env.keys() {
            let Some(rest) = name.strip_prefix("INTERWORK_ACCOUNTS_") else { continue };
            for key in ["_USERNAME", "_PASSWORD"] {
                if let Some(id) = rest.strip_suffix(key) {
                    tables.entry(id.to_ascii_lowercase()).or_insert_with(|| toml::Table::new().into());
                }
            }
        }
        if tables.is_empty() {
            tables.insert("default".into(), toml::Table::new().into());
        }
        let mut accounts = BTreeMap::new();
        for (id, table) in tables {
            let section = format!("accounts.{id}");
            if !crate::ids::is_valid_id(&id) {
                self.problem(&section, "an account id is letters, digits, '-', '_' or '.'".into());
                continue;
            }
            let toml::Value::Table(table) = table else {
                self.problem(&section, format!("expected a table, found {}", table.type_str()));
                continue;
            };
            self.root.insert(section.clone(), table.into());
            let mut s = self.section(&section);
            let account = AccountConfig {
                username: s.value("username", String::new()),
                password: s.value("password", String::new()),
            };
            if account.username.contains(':') {
                s.problem("username", "HTTP Basic user names cannot contain ':'".into());
            }
            accounts.insert(id, account);
        }
        accounts
    }

    fn section(&mut self, name: &str) -> Section<'_> {
        let table = match self.root.remove(name) {
            None => toml::Table::new(),
            Some(toml::Value::Table(t)) => t,
            Some(other) => {
                self.problem(name, format!("expected a table, found {}", other.type_str()));
                toml::Table::new()
            }
        };
        Section { reader: self, name: name.to_string(), table }
    }

    fn problem(&mut self, key: &str, reason: String) {
        self.problems.push(ConfigProblem { key: key.to_string(), reason });
    }

    /// Refuses what nobody read: unknown sections and unknown environment variables.
    fn finish(mut self) -> Vec<ConfigProblem> {
        for key in std::mem::take(&mut self.root).keys() {
            self.problem(key, "unknown section".into());
        }
        let unused: Vec<String> = self.env.keys().filter(|k| !self.used_env.contains(*k)).cloned().collect();
        for name in unused {
            self.problem(&name, "unknown setting: no config key has this name".into());
        }
        self.problems
    }
}

/// One table being read; what is left in it when dropped is an unknown key.
struct Section<'r> {
    reader: &'r mut Reader,
    name: String,
    table: toml::Table,
}

impl Section<'_> {
    /// Reads `key`, from the environment first, then the file, else `default`.
    fn value<T: DeserializeOwned + Serialize>(&mut self, key: &str, default: T) -> T {
        let env_name = format!("{ENV_PREFIX}{}_{}", self.name.replace('.', "_"), key).to_ascii_uppercase();
        let raw = match self.reader.env.get(&env_name).cloned() {
            Some(text) => {
                self.reader.used_env.insert(env_name.clone());
                self.table.remove(key);
                Some((env_value(&text, &default), env_name))
            }
            None => self.table.remove(key).map(|v| (v, format!("{}.{key}", self.name))),
        };
        let Some((value, origin)) = raw else { return default };
        match T::deserialize(value.clone()) {
            Ok(v) => v,
            Err(e) => {
                let reason = format!("{} (found {})", in_plain_words(e.to_string().trim()), describe(&value));
                self.reader.problem(&origin, reason);
                default
            }
        }
    }

    fn duration(&mut self, key: &str, default: Duration) -> Duration {
        let d = self.value(key, HumanDuration(default)).0;
        if d.is_zero() {
            self.problem(key, "must be longer than zero".into());
            return default;
        }
        d
    }

    fn bounded<T>(&mut self, key: &str, default: T, min: T, max: T) -> T
    where
        T: DeserializeOwned + Serialize + PartialOrd + fmt::Display + Copy,
    {
        let v = self.value(key, default);
        if v < min || v > max {
            self.problem(key, format!("{v} is outside {min}..={max}"));
            return default;
        }
        v
    }

    /// A key whose empty string means "not set".
    fn optional<T: std::str::FromStr>(&mut self, key: &str) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        let text: String = self.value(key, String::new());
        if text.is_empty() {
            return None;
        }
        match text.parse::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(key, format!("`{text}`: {e}"));
                None
            }
        }
    }

    fn path(&mut self, key: &str) -> Option<PathBuf> {
        let text: String = self.value(key, String::new());
        (!text.is_empty()).then(|| PathBuf::from(text))
    }

    fn short_string(&mut self, key: &str, default: &str) -> String {
        let s: String = self.value(key, default.to_string());
        if s.len() > 32 {
            self.problem(key, "at most 32 characters: it travels in every token".into());
        }
        s
    }

    fn trusted_peers(&mut self, key: &str) -> Vec<IpNet> {
        let texts: Vec<String> = self.value(key, Vec::new());
        let mut nets = Vec::new();
        for text in texts {
            let parsed = text.parse::<IpNet>().or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => nets.push(net),
                Err(_) => self.problem(key, format!("`{text}` is not a CIDR like 10.0.0.0/8 or an address")),
            }
        }
        nets
    }

    fn problem(&mut self, key: &str, reason: String) {
        let key = format!("{}.{key}", self.name);
        self.reader.problem(&key, reason);
    }
}

impl Drop for Section<'_> {
    fn drop(&mut self) {
        for key in std::mem::take(&mut self.table).keys() {
            self.problem(key, "unknown key".into());
        }
    }
}

/// Turns an environment variable's text into the TOML value the key expects, judged by the
/// type of its default: strings stay as they are, lists are comma-separated, the rest is TOML.
fn env_value<T: Serialize>(text: &str, default: &T) -> toml::Value {
    match toml::Value::try_from(default) {
        Ok(toml::Value::String(_)) | Err(_) => toml::Value::String(text.to_string()),
        // Shells and unit files say 1/0, yes/no, on/off as often as true/false.
        Ok(toml::Value::Boolean(_)) => match text.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => toml::Value::Boolean(true),
            "0" | "false" | "no" | "off" => toml::Value::Boolean(false),
            _ => toml::Value::String(text.to_string()),
        },
        Ok(toml::Value::Array(_)) => {
            if text.trim_start().starts_with('[') {
                parse_toml_value(text)
            } else {
                toml::Value::Array(
                    text.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_string()))
                        .collect(),
                )
            }
        }
        Ok(_) => parse_toml_value(text),
    }
}

/// serde's words for a wrong type, in the words of someone writing a config file: "expected
/// u32" becomes "expected a whole number from 0 to 4294967295".
fn in_plain_words(message: &str) -> String {
    let mut message = message.to_string();
    for (rust, plain) in [
        ("u8", format!("a whole number from 0 to {}", u8::MAX)),
        ("u16", format!("a whole number from 0 to {}", u16::MAX)),
        ("u32", format!("a whole number from 0 to {}", u32::MAX)),
        ("u64", format!("a whole number from 0 to {}", u64::MAX)),
        ("usize", format!("a whole number from 0 to {}", usize::MAX)),
        ("i32", "a whole number".to_string()),
        ("i64", "a whole number".to_string()),
        ("f32", "a number".to_string()),
        ("f64", "a number".to_string()),
    ] {
        message = message.replace(&format!("expected {rust}"), &format!("expected {plain}"));
    }
    message.replace("integer `", "whole number `").replace("expected a boolean", "expected true or false")
}

fn parse_toml_value(text: &str) -> toml::Value {
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("string {s:?}"),
        other => format!("{} {other}", other.type_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_toml_str(text, &env)
    }

    fn problem_keys(text: &str, env: &[(&str, &str)]) -> Vec<String> {
        parse(text, env).expect_err("should be refused").problems.into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn embedded_default_matches_the_contract() {
        let c = parse("", &[]).unwrap();
        assert_eq!(c.http.listen.0, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.sip.listen.0, "127.0.0.1:5060".parse().unwrap());
        assert_eq!(c.media.webrtc_listen.0, "127.0.0.1:19000".parse().unwrap());
        assert_eq!((c.media.rtp_port_min, c.media.rtp_port_max), (20_000, 29_999));
        assert_eq!(c.state.dir, PathBuf::from("./interwork-state"));
        assert_eq!(c.sip.default_mode, InterconnectMode::Transfer);
        assert_eq!(c.media.srtp, SrtpPolicy::Optional);
        assert_eq!(c.sip.max_calls, 10_000);
        assert!(c.demo.enabled);
        assert_eq!(c.demo.max_participants, DEFAULT_DEMO_MAX_PARTICIPANTS);
        assert!(!c.callbacks.allow_private, "callbacks to internal addresses are refused by default");
        assert_eq!(c.http.metrics_listen, None, "/metrics on the HTTP listener (CONTRACT §2)");
        assert!(!c.http.metrics_auth);
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.sessions.lifetime, Duration::from_secs(9 * 3600));
        assert_eq!(c.sessions.conference_lifetime, Duration::from_secs(24 * 3600));
        assert_eq!(c.tokens.ttl, Duration::from_secs(3600));
        assert_eq!(c.accounts.keys().collect::<Vec<_>>(), ["default"]);
        assert!(c.accounts["default"].username.is_empty());
    }

    #[test]
    fn a_full_file_is_read() {
        let c = parse(
            r#"
            [http]
            listen = "127.0.0.1:18080"
            [sip]
            listen = "[::1]:5070"
            default_mode = "conference"
            trusted_peers = ["10.0.0.0/8", "192.0.2.7"]
            max_calls = 50
            [media]
            rtp_port_min = 30000
            rtp_port_max = 30010
            public_ip = "203.0.113.9"
            srtp = "mandatory"
            [accounts.acme]
            username = "acme"
            password = "secret"
            [log]
            format = "json"
            [sessions]
            lifetime = "2h 30m"
            "#,
            &[],
        )
        .unwrap();
        assert_eq!(c.http.listen.0.port(), 18080);
        assert_eq!(c.sip.default_mode, InterconnectMode::Conference);
        assert_eq!(c.sip.trusted_peers.len(), 2);
        assert_eq!(c.sip.trusted_peers[1].to_string(), "192.0.2.7/32");
        assert_eq!(c.media.public_ip, Some("203.0.113.9".parse().unwrap()));
        assert_eq!(c.media.srtp, SrtpPolicy::Mandatory);
        assert_eq!(c.accounts["acme"].password, "secret");
        assert!(!c.accounts.contains_key("default"), "a configured account replaces the default");
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.sessions.lifetime, Duration::from_secs(9000));
    }

    #[test]
    fn unknown_keys_and_sections_are_refused_by_name() {
        let keys = problem_keys("[http]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n[htp]\nx = 1\n", &[]);
        assert_eq!(keys, ["http.listne", "htp"]);
        assert_eq!(problem_keys("[accounts.default]\nuser = \"x\"\n", &[]), ["accounts.default.user"]);
    }

    #[test]
    fn wrong_types_are_refused_by_name() {
        let err = parse("[http]\nlisten = 8080\n[demo]\nenabled = \"yes\"\n", &[]).unwrap_err();
        let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["http.listen", "demo.enabled"]);
        assert!(err.problems[0].reason.contains("integer 8080"), "{}", err.problems[0].reason);
        assert_eq!(problem_keys("http = 3\n", &[]), ["http"]);
        assert_eq!(problem_keys("[sip]\ndefault_mode = \"relay\"\n", &[]), ["sip.default_mode"]);
        assert_eq!(problem_keys("[media]\nsrtp = true\n", &[]), ["media.srtp"]);
        assert_eq!(problem_keys("[sip]\nmax_calls = -1\n", &[]), ["sip.max_calls"]);
        assert_eq!(problem_keys("[tokens]\nttl = \"soon\"\n", &[]), ["tokens.ttl"]);
    }

    #[test]
    fn impossible_values_are_refused_by_name() {
        assert_eq!(problem_keys("[http]\nlisten = \"127.0.0.1:0\"\n", &[]), ["http.listen"]);
        assert_eq!(problem_keys("[sip]\nlisten = \"nowhere\"\n", &[]), ["sip.listen"]);
        assert_eq!(problem_keys("[media]\nrtp_port_min = 30000\nrtp_port_max = 20000\n", &[]), ["media.rtp_port_min"]);
        assert_eq!(problem_keys("[media]\nrtp_port_min = 0\n", &[]), ["media.rtp_port_min"]);
        assert_eq!(problem_keys("[media]\nrtp_port_max = 70000\n", &[]), ["media.rtp_port_max"]);
        assert_eq!(problem_keys("[sip]\ntrusted_peers = [\"10.0.0.0/33\"]\n", &[]), ["sip.trusted_peers"]);
        assert_eq!(problem_keys("[sessions]\nlifetime = \"0s\"\n", &[]), ["sessions.lifetime"]);
        assert_eq!(problem_keys("[log]\nlevel = \"info,,=[\"\n", &[]), ["log.level"]);
    }

    #[test]
    fn the_robustness_keys_are_read_and_checked() {
        let c = parse(
            "[http]\nmetrics_listen = \"127.0.0.1:9100\"\nmetrics_auth = true\nauth_max_failures = 3\n\
             auth_failure_window = \"5m\"\n[demo]\nmax_participants = 4\nlifetime = \"2m\"\n\
             requests_per_minute = 2\n[callbacks]\nallow_private = true\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.http.metrics_listen.map(|a| a.0.port()), Some(9100));
        assert!(c.http.metrics_auth && c.callbacks.allow_private);
        assert_eq!((c.http.auth_max_failures, c.http.auth_failure_window), (3, Duration::from_secs(300)));
        assert_eq!((c.demo.max_participants, c.demo.lifetime), (4, Duration::from_secs(120)));
        assert_eq!(c.demo.requests_per_minute, 2);
        assert_eq!(problem_keys("[http]\nmetrics_listen = \"127.0.0.1:8080\"\n", &[]), ["http.metrics_listen"]);
        assert_eq!(problem_keys("[demo]\nmax_participants = 1\n", &[]), ["demo.max_participants"]);
        assert_eq!(
            problem_keys("", &[("INTERWORK_CALLBACKS_ALLOW_PRIVATE", "maybe")]),
            ["INTERWORK_CALLBACKS_ALLOW_PRIVATE"]
        );
    }

    #[test]
    fn missing_certificate_files_are_refused_by_name() {
        let keys = problem_keys("[sip]\ntls_listen = \"127.0.0.1:5061\"\ntls_cert = \"/nonexistent/cert.pem\"\n", &[]);
        assert_eq!(keys, ["sip.tls_key", "sip.tls_cert"]);
        let keys = problem_keys("[tokens]\nexternal_issuer = \"idp\"\nexternal_jwks = \"/no/jwks.json\"\n", &[]);
        assert_eq!(keys, ["tokens.external_jwks"]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let keys = problem_keys(
            "[http]\nlisten = \"x\"\n[sip]\nmax_calls = \"many\"\n[media]\nbogus = 1\n",
            &[("INTERWORK_NOPE", "1")],
        );
        assert_eq!(keys, ["http.listen", "sip.max_calls", "media.bogus", "INTERWORK_NOPE"]);
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = parse(
            "[http]\nlisten = \"127.0.0.1:1000\"\n",
            &[
                ("INTERWORK_HTTP_LISTEN", "127.0.0.1:18080"),
                ("INTERWORK_MEDIA_RTP_PORT_MIN", "40000"),
                ("INTERWORK_MEDIA_RTP_PORT_MAX", "40100"),
                ("INTERWORK_DEMO_ENABLED", "false"),
                ("INTERWORK_SIP_TRUSTED_PEERS", "10.0.0.0/8, 127.0.0.1"),
                ("INTERWORK_ACCOUNTS_DEFAULT_PASSWORD", "pw"),
                ("INTERWORK_SESSIONS_LIFETIME", "90m"),
                ("INTERWORK_STATE_DIR", "/var/lib/interwork"),
            ],
        )
        .unwrap();
        assert_eq!(c.http.listen.0.port(), 18080);
        assert_eq!((c.media.rtp_port_min, c.media.rtp_port_max), (40_000, 40_100));
        assert!(!c.demo.enabled);
        assert_eq!(c.sip.trusted_peers.len(), 2);
        assert_eq!(c.accounts["default"].password, "pw");
        assert_eq!(c.sessions.lifetime, Duration::from_secs(5400));
        assert_eq!(c.state.dir, PathBuf::from("/var/lib/interwork"));
    }

    #[test]
    fn environment_can_create_an_account() {
        let c =
            parse("", &[("INTERWORK_ACCOUNTS_ACME_USERNAME", "a"), ("INTERWORK_ACCOUNTS_ACME_PASSWORD", "b")]).unwrap();
        assert_eq!(c.accounts.keys().collect::<Vec<_>>(), ["acme"]);
        assert_eq!((c.accounts["acme"].username.as_str(), c.accounts["acme"].password.as_str()), ("a", "b"));
    }

    #[test]
    fn bad_environment_values_name_the_variable() {
        assert_eq!(problem_keys("", &[("INTERWORK_SIP_MAX_CALLS", "lots")]), ["INTERWORK_SIP_MAX_CALLS"]);
        assert_eq!(problem_keys("", &[("INTERWORK_HTTP_LISTEN", "127.0.0.1:0")]), ["INTERWORK_HTTP_LISTEN"]);
        assert_eq!(problem_keys("", &[("INTERWORK_HTTP_LISTN", "x")]), ["INTERWORK_HTTP_LISTN"]);
    }

    #[test]
    fn broken_toml_is_refused() {
        assert_eq!(problem_keys("[http\nlisten=", &[]), ["(file)"]);
    }
}
