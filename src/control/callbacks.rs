//! Events POSTed to participants' `callbackUrl` (CONTRACT §2): `participantJoined` and
//! `participantLeft` from the rooms, and later the SIP side's `sipLegConnected`, `sipLegEnded`
//! and `dtmf` through [`Callbacks::send`].
//!
//! Delivery is off the request and media paths: `send` only queues (and drops with a counter
//! when too much is pending). Each delivery retries with doubling backoff, a bounded number of
//! times, on connection errors, timeouts, 408, 429 and 5xx; other statuses are final. A
//! semaphore bounds concurrent requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use serde_json::{Value, json};
use tokio::sync::{Semaphore, broadcast};

use crate::app::config::CallbacksConfig;
use crate::app::metrics::{CallbackLabels, Metrics};
use crate::rooms::{LeaveReason, RoomEvent};

/// Most deliveries pending at once (queued or being retried); beyond it new events are dropped.
const MAX_PENDING: usize = 10_000;

/// Most HTTP requests in flight at once.
const MAX_IN_FLIGHT: usize = 64;

/// Delivers events to callback URLs.
#[derive(Clone)]
pub struct Callbacks {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    config: CallbacksConfig,
    metrics: Arc<Metrics>,
    pending: AtomicUsize,
    in_flight: Semaphore,
}

impl Callbacks {
    /// A deliverer with its own HTTP client.
    pub fn new(config: CallbacksConfig, metrics: Arc<Metrics>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("interwork/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            // Building a client without custom TLS roots or proxies only fails when the TLS
            // backend cannot initialise, which is a broken installation.
            .expect("HTTP client for callbacks");
        Self {
            inner: Arc::new(Inner {
                client,
                config,
                metrics,
                pending: AtomicUsize::new(0),
                in_flight: Semaphore::new(MAX_IN_FLIGHT),
            }),
        }
    }

    /// Queues `event` for `url`. Never blocks; drops (and counts) when too much is pending.
    pub fn send(&self, url: &str, event: Value) {
        let inner = &self.inner;
        if inner.pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING {
            inner.pending.fetch_sub(1, Ordering::AcqRel);
            inner.metrics.callbacks.get_or_create(&CallbackLabels { outcome: "dropped" }).inc();
            tracing::warn!("callback queue full; event dropped");
            return;
        }
        let this = self.clone();
        let url = url.to_string();
        tokio::spawn(async move {
            let outcome = this.deliver(&url, &event).await;
            this.inner.pending.fetch_sub(1, Ordering::AcqRel);
            this.inner.metrics.callbacks.get_or_create(&CallbackLabels { outcome }).inc();
        });
    }

    /// Turns room events into callbacks until the channel closes.
    pub async fn run(self, mut events: broadcast::Receiver<RoomEvent>) {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some((url, body)) = room_callback(&event, SystemTime::now()) {
                        self.send(&url, body);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "callback dispatcher lagged; events lost");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn deliver(&self, url: &str, event: &Value) -> &'static str {
        let config = &self.inner.config;
        let mut backoff = config.initial_backoff;
        for attempt in 1..=config.max_attempts {
            let result = {
                // The semaphore is never closed, so acquiring cannot fail.
                let _permit = self.inner.in_flight.acquire().await.expect("semaphore open");
                self.inner.client.post(url).json(event).send().await
            };
            let retry = match result {
                Ok(r) if r.status().is_success() => return "delivered",
                Ok(r) => {
                    let s = r.status().as_u16();
                    tracing::debug!(status = s, attempt, "callback refused");
                    s == 408 || s == 429 || s >= 500
                }
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "callback failed");
                    true
                }
            };
            if !retry || attempt == config.max_attempts {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(config.max_backoff);
        }
        tracing::warn!(event = %event["event"], "callback not delivered");
        "failed"
    }
}

/// The callback a room event makes, if any: its URL and JSON body.
pub fn room_callback(event: &RoomEvent, now: SystemTime) -> Option<(String, Value)> {
    let timestamp = humantime::format_rfc3339_millis(now).to_string();
    match event {
        RoomEvent::ParticipantJoined { account, session, participant, callback_url: Some(url) } => Some((
            url.clone(),
            json!({
                "event": "participantJoined",
                "timestamp": timestamp,
                "accountId": account.as_str(),
                "sessionId": session.as_str(),
                "participantId": participant.as_str(),
            }),
        )),
        RoomEvent::ParticipantLeft { account, session, participant, callback_url: Some(url), reason } => Some((
            url.clone(),
            json!({
                "event": "participantLeft",
                "timestamp": timestamp,
                "accountId": account.as_str(),
                "sessionId": session.as_str(),
                "participantId": participant.as_str(),
                "reason": leave_reason(*reason),
            }),
        )),
        _ => None,
    }
}

fn leave_reason(r: LeaveReason) -> &'static str {
    match r {
        LeaveReason::Removed => "removed",
        LeaveReason::SessionDeleted => "sessionDeleted",
        LeaveReason::SessionExpired => "sessionExpired",
        LeaveReason::ParticipantDeleted => "participantDeleted",
    }
}

/// Used by tests to wait for deliveries without sleeping.
impl Callbacks {
    /// Deliveries queued or being retried now.
    pub fn pending(&self) -> usize {
        self.inner.pending.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ids::{AccountId, ParticipantId, SessionId};

    #[test]
    fn joined_and_left_become_events_only_with_a_url() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let joined = RoomEvent::ParticipantJoined {
            account: AccountId::from("default"),
            session: SessionId::from("s"),
            participant: ParticipantId::from("p"),
            callback_url: Some("http://127.0.0.1:9/cb".into()),
        };
        let (url, body) = room_callback(&joined, now).unwrap();
        assert_eq!(url, "http://127.0.0.1:9/cb");
        assert_eq!(body["event"], "participantJoined");
        assert_eq!(body["sessionId"], "s");
        assert_eq!(body["timestamp"], "2026-11-18T11:06:40.000Z");
        let left = RoomEvent::ParticipantLeft {
            account: AccountId::from("default"),
            session: SessionId::from("s"),
            participant: ParticipantId::from("p"),
            callback_url: Some("http://x/".into()),
            reason: LeaveReason::SessionExpired,
        };
        assert_eq!(room_callback(&left, now).unwrap().1["reason"], "sessionExpired");
        let silent = RoomEvent::ParticipantJoined {
            account: AccountId::from("default"),
            session: SessionId::from("s"),
            participant: ParticipantId::from("p"),
            callback_url: None,
        };
        assert!(room_callback(&silent, now).is_none());
    }
}
