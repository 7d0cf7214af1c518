//! Reads the config, wires the parts, and owns start, drain and shutdown.
//!
//! Start order: config (already checked whole) → state directory → store → signing key →
//! credentials → listeners → `READY=1`. Anything failing before `READY=1` is an error with its
//! cause and the daemon never runs half-configured. SIGTERM or SIGINT starts the drain: `/readyz`
//! turns 503, live calls get `shutdown.drain_timeout` to end, then the process exits 0.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::net::TcpListener;

pub mod config;
pub mod drain;
pub mod metrics;
pub mod state;

use crate::control::callbacks::Callbacks;
use crate::control::extract::Accounts;
use crate::control::{self, AppState};
use crate::ids::{ParticipantId, SessionId};
use crate::rooms::{RoomsConfig, RoomsHandle};
use crate::store::RedbStore;
use crate::tokens::{Minter, NodeKey, Verifier};
use config::{Config, InterconnectMode, LogFormat};
use drain::{Drain, DrainOutcome};

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
}

impl Daemon {
    /// Prepares state and every part, without binding sockets.
    pub fn prepare(mut config: Config) -> anyhow::Result<Self> {
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
        };
        Ok(Self { config, state, verifier, callbacks, webrtc })
    }

    /// Serves until SIGTERM/SIGINT, then drains and returns.
    pub async fn run(self) -> anyhow::Result<()> {
        // Handlers first: a signal that arrives while the listeners start must drain, not kill.
        let signals = ShutdownSignals::install();
        let listen = self.config.http.listen.0;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen for HTTP on {listen}"))?;
        spawn_reload_listener();
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
        let app = control::router(self.state.clone(), self.config.http.request_timeout);
        let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = http_stopped.await;
                })
                .await
        });
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
        let _ = stop_http.send(());
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
    state::prepare_dir(&config.state.dir)?;
    let (key, _) = load_key(config)?;
    let minter = Minter::new(Arc::new(key), &config.tokens.issuer, config.tokens.ttl);
    let session = session.map(SessionId::from);
    Ok(minter.mint(&ParticipantId::from(participant), session.as_ref(), mode, ttl, SystemTime::now()))
}

/// Sets up logging from `[log]`; `RUST_LOG`, when set, wins over `log.level`.
pub fn init_logging(config: &config::LogConfig) {
    let mut directives = std::env::var("RUST_LOG").unwrap_or_else(|_| config.level.clone());
    // The SIP stack logs every message whole at info, tokens included (STYLE §8: never logged).
    if !directives.contains("rsipstack") {
        directives.push_str(",rsipstack=warn");
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rsipstack=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
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

fn rooms_config(config: &Config) -> RoomsConfig {
    RoomsConfig {
        lifetime: config.sessions.lifetime,
        conference_lifetime: config.sessions.conference_lifetime,
        max_sessions: config.sessions.max_sessions,
        max_participants: config.sessions.max_participants,
        max_participants_per_session: config.sessions.max_participants_per_session,
    }
}

/// SIGHUP must not end the daemon (systemd's `ExecReload` sends it). Reloading keys, trusted
/// peers and the log level (CONTRACT §7) comes with the SIP side; until then it is logged.
fn spawn_reload_listener() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP");
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::warn!("SIGHUP: live reload is not supported yet; restart to apply config changes");
        }
    });
}

/// SIGTERM and SIGINT, listened for from the moment they are installed.
struct ShutdownSignals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl ShutdownSignals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
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
