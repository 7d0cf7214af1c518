//! The device WebSocket at `/v1/device` (protocol in `docs/device-protocol.md`).
//!
//! One task per socket: it authenticates the first message (`hello` with the participant
//! token), attaches a peer in the driver, then relays messages both ways until either side
//! ends. Any `Origin` is accepted: pages using the SDK are served by the customer's own
//! application, and the token is the credential (CONTRACT §4). Every wait is bounded: the
//! `hello` by [`HELLO_TIMEOUT`], silence by [`IDLE_TIMEOUT`] (the server pings every
//! [`PING_INTERVAL`] and browsers answer pings by themselves), and the message rate by a token
//! bucket ([`RATE_BURST`], [`RATE_PER_SECOND`]).

use std::time::{Duration, SystemTime};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::DeviceHub;
use super::driver::{Command, DEVICE_CHANNEL_CAPACITY, ToDevice};
use super::protocol::{self, ClientMessage, CloseReason, ErrorCode, ServerMessage};
use super::sfu::{PeerId, PeerInfo};

/// How long a new socket may take to send `hello`.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the server sends a WebSocket ping (and tells the SDK to send its own).
pub const PING_INTERVAL: Duration = Duration::from_secs(15);

/// A socket silent this long (no message, no pong) is closed with 4012: three missed pings.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// Messages a device may send in a burst. Signaling is a handful of messages per stream change;
/// a DTMF key press is one. 50 is far above what the SDK sends.
pub const RATE_BURST: f64 = 50.0;

/// Messages a device may send per second, sustained.
pub const RATE_PER_SECOND: f64 = 20.0;

/// Carries one device socket, upgraded by the HTTP side (`crate::control::browser`), until
/// either end closes it.
pub async fn serve(mut socket: WebSocket, hub: DeviceHub) {
    if hub.drain.is_draining() {
        close(&mut socket, CloseReason::Draining).await;
        return;
    }
    let info = match hello(&mut socket, &hub).await {
        Ok(info) => info,
        Err(reason) => {
            close(&mut socket, reason).await;
            return;
        }
    };
    let participant = info.participant.clone();
    let (to_device, mut from_driver) = mpsc::channel(DEVICE_CHANNEL_CAPACITY);
    let (reply, attached) = oneshot::channel();
    let welcome = ServerMessage::Welcome {
        participant_id: info.participant.to_string(),
        session_id: info.session.to_string(),
        publish_permissions: info.permissions.clone(),
        ping_interval_ms: PING_INTERVAL.as_millis() as u64,
        protocol: protocol::PROTOCOL_VERSION,
    };
    if hub.commands.send(Command::Attach { info, to_device, reply }).await.is_err() {
        close(&mut socket, CloseReason::GoingAway).await;
        return;
    }
    let Ok(Ok(peer)) = attached.await else {
        close(&mut socket, CloseReason::MediaFailed).await;
        return;
    };
    tracing::info!(participant = %participant, peer = peer.0, "device connected");
    let reason = relay(&mut socket, &hub, peer, welcome, &mut from_driver).await;
    if let Some(reason) = reason {
        close(&mut socket, reason).await;
    }
    // Tell the driver even when it closed us: detaching twice is harmless.
    let _ = hub.commands.send(Command::Detach { peer }).await;
    tracing::info!(participant = %participant, peer = peer.0, ?reason, "device disconnected");
}

/// Waits for `hello` and admits its token.
async fn hello(socket: &mut WebSocket, hub: &DeviceHub) -> Result<PeerInfo, CloseReason> {
    let first = match tokio::time::timeout(HELLO_TIMEOUT, socket.recv()).await {
        Ok(Some(Ok(Message::Text(text)))) => text,
        Ok(Some(Ok(_))) | Err(_) => return Err(CloseReason::HelloExpected),
        // A first message over MAX_MESSAGE_BYTES is refused as any later one is: 1009.
        Ok(Some(Err(e))) if is_too_big(&e) => return Err(CloseReason::TooBig),
        Ok(None | Some(Err(_))) => return Err(CloseReason::Normal),
    };
    let Ok(ClientMessage::Hello { token, .. }) = serde_json::from_str::<ClientMessage>(first.as_str()) else {
        return Err(CloseReason::HelloExpected);
    };
    let admission = hub.verifier.verify_participant(&token, SystemTime::now(), &hub.rooms).map_err(|e| {
        tracing::debug!(error = %e, "device token refused");
        if e.is_not_found() { CloseReason::NotFound } else { CloseReason::Unauthenticated }
    })?;
    let participant = admission.token.participant;
    let permissions = hub
        .rooms
        .read(|r| r.participant_by_id(&participant).map(|p| p.publish_permissions.clone()))
        .ok_or(CloseReason::NotFound)?;
    Ok(PeerInfo { participant, session: admission.session, permissions })
}

/// Relays until the socket or the driver ends; returns the close to send, if any.
async fn relay(
    socket: &mut WebSocket,
    hub: &DeviceHub,
    peer: PeerId,
    welcome: ServerMessage,
    from_driver: &mut mpsc::Receiver<ToDevice>,
) -> Option<CloseReason> {
    if send(socket, &welcome).await.is_err() {
        return None;
    }
    let mut bucket = TokenBucket::new(Instant::now());
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    loop {
        tokio::select! {
            m = socket.recv() => {
                let m = match m {
                    Some(Ok(m)) => m,
                    // A message over MAX_MESSAGE_BYTES ends the stream with a capacity error.
                    Some(Err(e)) if is_too_big(&e) => return Some(CloseReason::TooBig),
                    Some(Err(_)) | None => return None,
                };
                let now = Instant::now();
                last_heard = now;
                match m {
                    Message::Text(text) => {
                        if !bucket.take(now) {
                            return Some(CloseReason::RateLimited);
                        }
                        match serde_json::from_str::<ClientMessage>(text.as_str()) {
                            Ok(ClientMessage::Bye {}) => return Some(CloseReason::Normal),
                            Ok(msg) => {
                                if let Some(reply) = dispatch(hub, peer, msg).await
                                    && send(socket, &reply).await.is_err() {
                                        return None;
                                    }
                            }
                            Err(e) => {
                                let reply = ServerMessage::error(ErrorCode::ProtocolError, format!("not a valid message: {e}"), None);
                                if send(socket, &reply).await.is_err() {
                                    return None;
                                }
                            }
                        }
                    }
                    Message::Binary(_) => {
                        if !bucket.take(now) {
                            return Some(CloseReason::RateLimited);
                        }
                        let reply = ServerMessage::error(ErrorCode::ProtocolError, "binary messages are not part of the protocol", None);
                        if send(socket, &reply).await.is_err() {
                            return None;
                        }
                    }
                    Message::Close(_) => return None,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            out = from_driver.recv() => match out {
                Some(ToDevice::Message(m)) => {
                    if send(socket, &m).await.is_err() {
                        return None;
                    }
                }
                Some(ToDevice::Close(reason)) => return Some(reason),
                None => return Some(CloseReason::GoingAway),
            },
            _ = ping.tick() => {
                if last_heard.elapsed() >= IDLE_TIMEOUT {
                    return Some(CloseReason::Idle);
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return None;
                }
            }
        }
    }
}

/// Hands a message to the driver; returns a reply to send at once, if any.
async fn dispatch(hub: &DeviceHub, peer: PeerId, msg: ClientMessage) -> Option<ServerMessage> {
    let command = match msg {
        ClientMessage::Hello { .. } => {
            return Some(ServerMessage::error(ErrorCode::OutOfOrder, "already authenticated", None));
        }
        ClientMessage::Ping { id } => return Some(ServerMessage::Pong { id }),
        ClientMessage::Bye {} => return None,
        ClientMessage::Publish { request_id, audio, video } => Command::Publish { peer, request_id, audio, video },
        ClientMessage::Unpublish { request_id } => Command::Unpublish { peer, request_id },
        ClientMessage::Answer { sdp } => Command::Answer { peer, sdp },
        ClientMessage::Candidate { candidate, .. } => Command::Candidate { peer, candidate },
        ClientMessage::Dtmf { tones } => Command::Dtmf { peer, tones },
    };
    if hub.commands.send(command).await.is_err() {
        return Some(ServerMessage::error(ErrorCode::Internal, "the media service is stopping", None));
    }
    None
}

async fn send(socket: &mut WebSocket, m: &ServerMessage) -> Result<(), axum::Error> {
    // Serializing our own message types cannot fail: no maps with non-string keys, no floats.
    let text = serde_json::to_string(m).unwrap_or_default();
    socket.send(Message::Text(text.into())).await
}

async fn close(socket: &mut WebSocket, reason: CloseReason) {
    let frame = CloseFrame { code: reason.code(), reason: reason.text().into() };
    let _ = socket.send(Message::Close(Some(frame))).await;
    // Give the peer a bounded moment to answer the close before dropping the connection.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

fn is_too_big(e: &axum::Error) -> bool {
    // axum wraps tungstenite's error; its capacity error says "Space limit exceeded".
    let text = e.to_string();
    text.contains("Space limit") || text.contains("too long") || text.contains("Message too big")
}

/// Bounds the message rate of one socket.
struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(now: Instant) -> Self {
        Self { tokens: RATE_BURST, at: now }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * RATE_PER_SECOND).min(RATE_BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0);
        assert!((0..50).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(60)));
        assert!(!b.take(t0 + Duration::from_millis(60)));
    }
}
