//! The browser side: device signaling over a WebSocket at `/v1/device`, peer connections
//! (str0m, one shared UDP port), Opus forwarding by subscriptions, the browser SDK and the demo
//! page.
//!
//! - [`protocol`]: the wire messages and close codes of `/v1/device`
//!   (`docs/device-protocol.md` explains them).
//! - [`sfu`]: the sans-IO forwarder core holding every peer connection.
//! - [`timeline`]: one stream's RTP time, continuous across changes of its source.
//! - `driver`: the task that owns the UDP socket, the forwarder and the channels.
//! - [`signaling`]: one device socket's task (the HTTP upgrade is `crate::control::browser`).
//! - [`assets`]: the SDK, its TypeScript declarations and the demo page.
//!
//! Why str0m rather than the `webrtc` crate: `docs/decisions/str0m.md`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::mpsc;

pub mod assets;
pub(crate) mod driver;
pub mod protocol;
pub mod sfu;
pub mod signaling;
pub mod sim;
pub mod timeline;

use crate::config::Config;
use crate::drain::Drain;
use crate::media::router::{Forwarder, LegRequest};
use crate::rooms::RoomsHandle;
use crate::tokens::Verifier;
use driver::{COMMAND_CHANNEL_CAPACITY, Command, Driver};

/// What the device socket handlers share: the way to the driver and what admission needs.
#[derive(Clone)]
pub struct DeviceHub {
    commands: mpsc::Sender<Command>,
    verifier: Arc<Verifier>,
    rooms: RoomsHandle,
    drain: Drain,
}

/// The WebRTC side before and while it runs.
pub struct WebrtcService {
    hub: DeviceHub,
    commands: Option<mpsc::Receiver<Command>>,
    /// SIP legs' requests ([`Forwarder`]), a queue apart from the devices'.
    legs: Option<mpsc::Receiver<LegRequest>>,
    legs_tx: mpsc::Sender<LegRequest>,
    listen: SocketAddr,
    public_ip: Option<std::net::IpAddr>,
}

impl WebrtcService {
    /// Prepares the service from the config; nothing is bound yet.
    pub fn new(config: &Config, verifier: Arc<Verifier>, rooms: RoomsHandle, drain: Drain) -> Self {
        let (tx, rx) = mpsc::channel(COMMAND_CHANNEL_CAPACITY);
        let hub = DeviceHub { commands: tx, verifier, rooms, drain };
        let (legs_tx, legs) = mpsc::channel(COMMAND_CHANNEL_CAPACITY);
        Self {
            hub,
            commands: Some(rx),
            legs: Some(legs),
            legs_tx,
            listen: config.media.webrtc_listen.0,
            public_ip: config.media.public_ip,
        }
    }

    /// The handlers' side.
    pub fn hub(&self) -> DeviceHub {
        self.hub.clone()
    }

    /// The media bridge's side: SIP legs publish, subscribe and exchange DTMF through it.
    pub fn forwarder(&self) -> Forwarder {
        Forwarder::new(self.legs_tx.clone())
    }

    /// Binds the shared UDP socket and starts the driver, which runs until `shutdown`
    /// resolves. Fails when the socket cannot be bound or the service was started already.
    pub async fn start(
        &mut self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let commands = self.commands.take().context("the WebRTC service is already started")?;
        let legs = self.legs.take().context("the WebRTC service is already started")?;
        let socket = tokio::net::UdpSocket::bind(self.listen)
            .await
            .with_context(|| format!("cannot listen for WebRTC media on UDP {}", self.listen))?;
        let local = socket.local_addr()?;
        tracing::info!(listen = %local, "WebRTC media listening");
        let config = driver::sfu_config(local, self.public_ip);
        let rooms = self.hub.rooms.clone();
        // The forwarder is made in the task: it generates a DTLS certificate, which should not
        // delay the daemon's start (and its signal handlers).
        Ok(tokio::spawn(async move { Driver::new(config, rooms).run(socket, commands, legs, shutdown).await }))
    }
}
