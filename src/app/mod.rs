//! Reads the config, wires the parts, and owns start, drain and shutdown.
//!
//! Start order: config (already checked whole) → state directory → store → signing key →
//! credentials → listeners → `READY=1`. Anything failing before `READY=1` is an error with its
//! cause and the daemon never runs half-configured. SIGTERM or SIGINT starts the drain: `/readyz`
//! turns 503, live calls get `shutdown.drain_timeout` to end, then the process exits 0.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::net::TcpListener;

pub mod memory;
pub mod state;
pub mod token_check;

use crate::config::{self, Config, InterconnectMode, LogFormat};
use crate::control::callbacks::Callbacks;
use crate::control::extract::Accounts;
use crate::control::{self, AppState};
use crate::drain::{Drain, DrainOutcome};
use crate::ids::{ParticipantId, SessionId};
use crate::metrics;
use crate::rooms::{RoomsConfig, RoomsHandle};
use crate::store::RedbStore;
use crate::tokens::{Minter, NodeKey, Verifier};

/// How long BYEs sent at the end of a drain may take to be answered before the process exits.
const BYE_GRACE: Duration = Duration::from_secs(2);

/// How long the HTTP server may take to finish in-flight requests once draining is over.
const HTTP_GRACE: Duration = Duration::from_secs(5);

/// Everything started, before serving: what tests and `run` share.
pub struct Daemon {
    /// The config, with credentials completed.
    pub config: Config,
    /// The HTTP service's state.
    pub state: AppState,
    /// Token verification, for SIP and devices.
    pub verifier: Arc<Verifier>,
    /// Event delivery.
    pub callbacks: Callbacks,
    /// The WebRTC side (device sockets, shared UDP port, forwarding).
    pub webrtc: crate::webrtc::WebrtcService,
    /// The config file it was read from (`None`: the embedded default), read again on SIGHUP.
    pub config_path: Option<PathBuf>,
}

impl Daemon {
    /// Prepares state and every part, without binding sockets.
    pub async fn prepare(mut config: Config) -> anyhow::Result<Self> {
        let dir = config.state.dir.clone();
        state::prepare_dir(&dir)?;
        let store_path = dir.join(state::STORE_FILE);
        let store = RedbStore::open(&store_path).with_context(|| {
            format!(
                "refusing to start: the state in {} cannot be read; fix or move the file away to start empty",
                store_path.display()
            )
        })?;
        let (node_key, generated) = load_key(&config)?;
        if generated {
            tracing::info!(kid = node_key.kid(), "generated the node's token signing key");
        }
        let fresh = state::complete_credentials(&dir, &mut config.accounts)?;
        for g in &fresh {
            // Printed once, to the terminal, never to the logs.
            println!(
                "interwork: generated credentials for account \"{}\": username={} password={} (kept in {})",
                g.account,
                g.username,
                g.password,
                dir.join(state::CREDENTIALS_FILE).display()
            );
        }
        let node_key = Arc::new(node_key);
        let verifier = Arc::new(Verifier::new(&node_key, &config.tokens)?);
        let minter = Minter::new(node_key.clone(), &config.tokens.issuer, config.tokens.ttl);
        let rooms = RoomsHandle::open(rooms_config(&config), Box::new(store))
            .await
            .with_context(|| format!("refusing to start: cannot load the state in {}", store_path.display()))?;
        let metrics = Arc::new(metrics::Metrics::default());
        let callbacks = Callbacks::new(config.callbacks.clone(), metrics.clone());
        let drain = Drain::default();
        let webrtc = crate::webrtc::WebrtcService::new(&config, verifier.clone(), rooms.clone(), drain.clone());
        let state = AppState {
            rooms,
            accounts: Arc::new(Accounts::new(config.accounts.clone())),
            minter,
            node_key,
            metrics,
            drain,
            body_limit: config.http.body_limit,
            devices: webrtc.hub(),
            demo: Arc::new(control::browser::DemoState::new(&config.demo, config.sip.listen.0)),
            auth_failures: Arc::new(control::limit::WindowLimiter::new(
                config.http.auth_max_failures,
                config.http.auth_failure_window,
            )),
            callback_targets: control::callbacks::TargetPolicy::new(config.callbacks.allow_private),
        };
        Ok(Self { config, state, verifier, callbacks, webrtc, config_path: None })
    }

    /// Serves until SIGTERM/SIGINT, then drains and returns.
    pub async fn run(self) -> anyhow::Result<()> {
        // Handlers first: a signal that arrives while the listeners start must drain, not kill.
        let signals = ShutdownSignals::install();
        let listen = self.config.http.listen.0;
        let listener =
            TcpListener::bind(listen).await.with_context(|| format!("cannot listen for HTTP on {listen}"))?;
        self.serve(listener, async {
            let signal = signals.recv().await;
            tracing::info!(signal, "draining");
        })
        .await
    }

    /// Serves on `listener` until `shutdown` resolves, then drains and returns.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let listen = listener.local_addr()?;
        tracing::info!(%listen, "HTTP control API listening");
        for warning in self.config.warnings() {
            tracing::warn!(key = %warning.key, "{}", warning.reason);
        }
        let metrics_listener = match self.config.http.metrics_listen {
            Some(addr) => {
                let l = TcpListener::bind(addr.0)
                    .await
                    .with_context(|| format!("cannot listen for metrics (http.metrics_listen) on {addr}"))?;
                tracing::info!(listen = %l.local_addr()?, "metrics listening");
                Some(l)
            }
            None => None,
        };
        let drain = self.state.drain.clone();
        let rooms = self.state.rooms.clone();
        tokio::spawn(rooms.clone().run_expiry({
            let drain = drain.clone();
            async move { drain.started().await }
        }));
        tokio::spawn(self.callbacks.clone().run(rooms.subscribe()));
        // WebRTC media runs until the drain is over, then closes every device with 1001.
        let (stop_media, media_stopped) = tokio::sync::oneshot::channel::<()>();
        let media = self
            .webrtc
            .start(async move {
                let _ = media_stopped.await;
            })
            .await?;

        let sip = crate::sip::driver::SipService::start(
            &self.config,
            rooms.clone(),
            self.verifier.clone(),
            drain.clone(),
            self.callbacks.clone(),
            self.state.metrics.clone(),
            // SIP legs publish to and hear from the forwarder (the media bridge).
            self.webrtc.forwarder(),
        )
        .await?;
        tokio::spawn({
            let load = sip.load();
            memory::run_trim(move || load.handled())
        });
        // SIGHUP from here on reloads; before, it is caught and ignored (see `run`).
        spawn_reload_listener(Reload {
            path: self.config_path.clone(),
            node_key: self.state.node_key.clone(),
            verifier: self.verifier.clone(),
            sip: sip.reloader(),
        });
        let app = control::router(self.state.clone(), &self.config.http);
        let stop_http = tokio_util::sync::CancellationToken::new();
        if let Some(metrics_listener) = metrics_listener {
            let service = control::metrics_router(self.state.clone(), &self.config.http)
                .into_make_service_with_connect_info::<std::net::SocketAddr>();
            let stopped = stop_http.clone().cancelled_owned();
            tokio::spawn(async move {
                if let Err(e) = axum::serve(metrics_listener, service).with_graceful_shutdown(stopped).await {
                    tracing::warn!(error = %e, "metrics listener ended with an error");
                }
            });
        }
        let http_stopped = stop_http.clone().cancelled_owned();
        let server = tokio::spawn(async move {
            // The peer address is what per-source limits (failed sign-ins, the demo) count by.
            axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
                .with_graceful_shutdown(http_stopped)
                .await
        });
        // Where to go next, on the terminal (the logs say the same in their own words).
        println!("{}", where_to_go(&self.config, listen, sip.local_addr()));
        notify_systemd(&[sd_notify::NotifyState::Ready]);
        spawn_watchdog();

        shutdown.await;
        drain.start();
        sip.drain().await;
        notify_systemd(&[sd_notify::NotifyState::Stopping]);
        let grace = match drain.wait_idle(self.config.shutdown.drain_timeout).await {
            DrainOutcome::Idle => {
                tracing::info!("no live calls; stopping");
                Duration::ZERO
            }
            DrainOutcome::TimedOut(n) => {
                tracing::warn!(calls = n, "drain timeout passed; ending live calls");
                BYE_GRACE
            }
        };
        sip.stop(grace).await;
        let _ = stop_media.send(());
        if tokio::time::timeout(HTTP_GRACE, media).await.is_err() {
            tracing::warn!("WebRTC media did not stop within the grace period");
        }
        stop_http.cancel();
        match tokio::time::timeout(HTTP_GRACE, server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
            Err(_) => tracing::warn!("HTTP requests still open after the grace period; closing"),
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// `interwork token`: mints a participant token with the node's key.
pub fn mint_token(
    config: &Config,
    participant: &str,
    session: Option<&str>,
    ttl: Option<Duration>,
    mode: Option<InterconnectMode>,
) -> anyhow::Result<String> {
    for id in std::iter::once(participant).chain(session) {
        anyhow::ensure!(crate::ids::is_valid_id(id), "`{id}` is not a valid id");
    }
    // Never a new key here: a token signed by a key the daemon does not have is refused by it
    // ("bad signature"), which is worse than no token.
    let key = match &config.tokens.signing_key {
        Some(_) => load_key(config)?.0,
        None => {
            let path = config.state.dir.join(state::KEY_FILE);
            let pem = match std::fs::read_to_string(&path) {
                Ok(pem) => pem,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
                    "no signing key at {}: the daemon makes it on its first start in its state directory \
                     ({}); run this where the daemon runs, or give the daemon's config with --config \
                     (or INTERWORK_STATE_DIR)",
                    path.display(),
                    config.state.dir.display()
                ),
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            };
            NodeKey::from_pem(&pem, &path)?
        }
    };
    let minter = Minter::new(Arc::new(key), &config.tokens.issuer, config.tokens.ttl);
    let session = session.map(SessionId::from);
    Ok(minter.mint(&ParticipantId::from(participant), session.as_ref(), mode, ttl, SystemTime::now()))
}

/// Sets up logging from `[log]`; `RUST_LOG`, when set, wins over `log.level`.
pub fn init_logging(config: &config::LogConfig) {
    let env = std::env::var("RUST_LOG").ok();
    let filter = log_filter(env.as_deref().unwrap_or(&config.level));
    // The two formats make two subscriber types; what reloading needs of either is one closure.
    let (reload, result): (LevelReload, _) = match config.format {
        LogFormat::Text => {
            // Colours only on a terminal: journald and log files get plain text.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let builder = tracing_subscriber::fmt()
                .with_ansi(ansi)
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            (Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())), builder.try_init())
        }
        LogFormat::Json => {
            let builder = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            (Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())), builder.try_init())
        }
    };
    // RUST_LOG, when set, wins over the config file, then as on every reload.
    if result.is_ok() && env.is_none() {
        let _ = LOG_LEVEL_RELOAD.set(reload);
    }
}

/// Replaces the log filter of the running subscriber.
type LevelReload = Box<dyn Fn(tracing_subscriber::EnvFilter) -> Result<(), String> + Send + Sync>;

/// Set by [`init_logging`] when the level comes from the config (not from `RUST_LOG`).
static LOG_LEVEL_RELOAD: std::sync::OnceLock<LevelReload> = std::sync::OnceLock::new();

/// The filter for `level`.
fn log_filter(level: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

fn load_key(config: &Config) -> anyhow::Result<(NodeKey, bool)> {
    match &config.tokens.signing_key {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("tokens.signing_key: cannot read {}", path.display()))?;
            Ok((NodeKey::from_pem(&pem, path)?, false))
        }
        None => Ok(NodeKey::load_or_generate(&config.state.dir.join(state::KEY_FILE))?),
    }
}

/// The lines a newcomer needs once the daemon is up: the API of each account, the demo page
/// when it is on, the address to send INVITEs to.
fn where_to_go(config: &Config, http: std::net::SocketAddr, sip: std::net::SocketAddr) -> String {
    let mut lines = vec!["interwork: ready".to_string()];
    for account in config.accounts.keys() {
        lines.push(format!("  API   http://{http}/v1/accounts/{account} (HTTP Basic; OpenAPI at /openapi.json)"));
    }
    if config.demo.enabled {
        lines.push(format!("  demo  http://{http}/demo/"));
    }
    let tls = config.sip.tls_listen.map(|t| format!(", TLS on {}", t.0)).unwrap_or_default();
    lines.push(format!("  SIP   sip:anyone@{sip} over UDP and TCP{tls}, with User-to-User: <token>;encoding=jwt"));
    lines.join("\n")
}

fn rooms_config(config: &Config) -> RoomsConfig {
    RoomsConfig {
        lifetime: config.sessions.lifetime,
        conference_lifetime: config.sessions.conference_lifetime,
        max_sessions: config.sessions.max_sessions,
        max_participants: config.sessions.max_participants,
        max_participants_per_session: config.sessions.max_participants_per_session,
        demo_max_participants: config.demo.max_participants,
        demo_lifetime: config.demo.lifetime,
    }
}

/// What a SIGHUP reloads, and from where.
struct Reload {
    /// The config file the daemon started from; `None`: the embedded default.
    path: Option<PathBuf>,
    node_key: Arc<NodeKey>,
    verifier: Arc<Verifier>,
    sip: crate::sip::driver::SipReloader,
}

impl Reload {
    /// Reads the config again (file and `INTERWORK_*`) and applies what can change without
    /// dropping calls (CONTRACT §7): the log level, the external issuer's token keys and the
    /// leeway, `sip.trusted_peers`. A config with problems changes nothing. Everything else
    /// (listen addresses, ports, state directory) needs a restart.
    async fn apply(&self) {
        let loaded = match &self.path {
            Some(p) => Config::load(p, &config::ProcessEnv),
            None => Config::embedded(&config::ProcessEnv),
        };
        let config = match loaded {
            Ok(c) => c,
            Err(e) => {
                let problems: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
                tracing::error!(problems = %problems.join("; "), "SIGHUP: the config has problems; nothing reloaded");
                return;
            }
        };
        if let Some(reload) = LOG_LEVEL_RELOAD.get()
            && let Err(e) = reload(log_filter(&config.log.level))
        {
            tracing::warn!(error = %e, "SIGHUP: the log level could not be changed");
        }
        let keys = match self.verifier.reload(&self.node_key, &config.tokens) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: token keys not reloaded; the previous keys stay");
                0
            }
        };
        let peers = config.sip.trusted_peers.len();
        self.sip.trusted_peers(config.sip.trusted_peers).await;
        tracing::info!(level = %config.log.level, token_keys = keys, trusted_peers = peers, "SIGHUP: configuration reloaded");
    }
}

/// SIGHUP (systemd's `ExecReload`) reloads; it never ends the daemon.
fn spawn_reload_listener(reload: Reload) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP");
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            reload.apply().await;
        }
    });
}

/// SIGTERM and SIGINT, listened for from the moment they are installed.
struct ShutdownSignals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl ShutdownSignals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        // Registering SIGHUP replaces its default action (ending the process) for good, so a
        // reload sent while the daemon starts is ignored instead of killing it; the reload
        // listener starts once the SIP side is up.
        if signal(SignalKind::hangup()).is_err() {
            tracing::warn!("cannot listen for SIGHUP");
        }
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(term), Ok(int)) => Self(Some((term, int))),
            _ => {
                tracing::error!("cannot install signal handlers");
                Self(None)
            }
        }
    }

    /// Resolves on SIGTERM or SIGINT, naming which came.
    async fn recv(self) -> &'static str {
        // Without signal handlers the daemon cannot drain; wait forever rather than exit at once.
        let Some((mut term, mut int)) = self.0 else { return std::future::pending().await };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}

fn notify_systemd(states: &[sd_notify::NotifyState<'_>]) {
    // Outside systemd NOTIFY_SOCKET is unset and this does nothing.
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Sends `WATCHDOG=1` at half the interval systemd asks for, when it asks.
fn spawn_watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else { return };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        loop {
            tick.tick().await;
            notify_systemd(&[sd_notify::NotifyState::Watchdog]);
        }
    });
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn the_demo_on_a_non_loopback_listener_is_warned_about() {
        let with = |text: &str| Config::from_toml_str(text, &HashMap::new()).unwrap().warnings();
        let demo = |text: &str| with(text).into_iter().filter(|w| w.key == "demo.enabled").collect::<Vec<_>>();
        let warning = &demo("[http]\nlisten = \"0.0.0.0:8080\"\n")[0];
        assert!(warning.reason.contains("0.0.0.0:8080"), "{warning}");
        assert_eq!(demo("[http]\nlisten = \"192.0.2.5:8080\"\n").len(), 1);
        assert!(demo("").is_empty(), "127.0.0.1 is the embedded default");
        assert!(demo("[http]\nlisten = \"[::1]:8080\"\n").is_empty());
        assert!(demo("[http]\nlisten = \"0.0.0.0:8080\"\n[demo]\nenabled = false\n").is_empty());
    }

    #[test]
    fn wildcard_media_without_a_public_address_is_warned_about() {
        let with = |text: &str| Config::from_toml_str(text, &HashMap::new()).unwrap().warnings();
        assert!(with("").is_empty(), "the embedded default is loopback throughout: {:?}", with(""));
        let both = with("[sip]\nlisten = \"0.0.0.0:5060\"\n[media]\nwebrtc_listen = \"0.0.0.0:19000\"\n");
        assert_eq!(both.len(), 2, "{both:?}");
        assert!(both.iter().all(|w| w.key == "media.public_ip"));
        assert!(both.iter().any(|w| w.reason.contains("browsers")) && both.iter().any(|w| w.reason.contains("phone")));
        let public = "[sip]\nlisten = \"0.0.0.0:5060\"\n[media]\nwebrtc_listen = \"0.0.0.0:19000\"\npublic_ip = \"203.0.113.9\"\n";
        assert!(with(public).is_empty());
    }

    #[test]
    fn the_example_systemd_config_has_the_demo_off() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/interwork.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let config = Config::from_toml_str(&text, &HashMap::new()).unwrap();
        assert!(!config.demo.enabled);
        assert!(!config.callbacks.allow_private);
    }
}
