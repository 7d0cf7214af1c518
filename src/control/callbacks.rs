//! Events POSTed to participants' `callbackUrl` (CONTRACT §2): `participantJoined` and
//! `participantLeft` from the rooms, and later the SIP side's `sipLegConnected`, `sipLegEnded`
//! and `dtmf` through [`Callbacks::send`].
//!
//! Delivery is off the request and media paths: `send` only queues (and drops with a counter
//! when too much is pending). Each delivery retries with doubling backoff, a bounded number of
//! times, on connection errors, timeouts, 408, 429 and 5xx; other statuses are final. A
//! semaphore bounds concurrent requests.
//!
//! Destinations (SSRF): unless `callbacks.allow_private` is on, a callback never reaches an
//! internal address (loopback, RFC 1918, CGNAT, link-local such as cloud metadata at
//! 169.254.169.254, ULA, multicast, unspecified, and the IPv4-mapped, NAT64 and 6to4 forms of
//! those; [`is_internal`]). `POST /participants` refuses such a `callbackUrl` by its literal
//! address or name ([`TargetPolicy::check_url`]), and every delivery checks again what the name
//! resolves to *in the resolver the connection uses*, so the address checked is the address
//! connected to and a name that changes its answer (DNS rebinding) gains nothing. Refused
//! deliveries are not retried; they are logged and counted (`outcome="blocked"`). No proxy from the
//! environment is used (it would resolve names out of our sight) and redirects are not followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use serde_json::Value;
use tokio::sync::{Semaphore, broadcast};

use super::callback_events::{CallbackEvent, ParticipantJoinedEvent, ParticipantLeftEvent, timestamp};
use crate::config::CallbacksConfig;
use crate::metrics::{CallbackLabels, Metrics};
use crate::rooms::RoomEvent;

/// Most deliveries pending at once (queued or being retried); beyond it new events are dropped.
const MAX_PENDING: usize = 10_000;

/// Most HTTP requests in flight at once.
const MAX_IN_FLIGHT: usize = 64;

/// Longest `callbackUrl` accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Which destinations callbacks may have (`callbacks.allow_private`).
#[derive(Clone, Copy, Debug)]
pub struct TargetPolicy {
    allow_private: bool,
}

/// Why a `callbackUrl` is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallbackUrlError {
    /// Longer than [`MAX_URL_LEN`].
    #[error("callbackUrl is longer than {max} characters")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// Not an absolute URL.
    #[error("callbackUrl must be an absolute http or https URL")]
    NotAUrl,
    /// A scheme other than http and https.
    #[error("callbackUrl must use http or https, not {0}")]
    Scheme(String),
    /// No host to send to.
    #[error("callbackUrl has no host")]
    NoHost,
    /// A literal internal address.
    #[error(
        "callbackUrl names the internal address {0}: loopback, private, link-local, multicast and \
         similar destinations are refused (see callbacks.allow_private)"
    )]
    InternalAddress(IpAddr),
    /// A name that always means this host (`localhost` and below).
    #[error("callbackUrl names this host ({0}): refused (see callbacks.allow_private)")]
    InternalName(String),
}

impl TargetPolicy {
    /// A policy; `allow_private` lets callbacks reach internal addresses.
    pub fn new(allow_private: bool) -> Self {
        Self { allow_private }
    }

    /// Checks a `callbackUrl` given to the API: an absolute http(s) URL with a host, not too
    /// long, and, unless internal destinations are allowed, not an internal address by its
    /// literal or a `localhost` name. Names are checked again, resolved, at each delivery.
    pub fn check_url(&self, text: &str) -> Result<reqwest::Url, CallbackUrlError> {
        if text.len() > MAX_URL_LEN {
            return Err(CallbackUrlError::TooLong { max: MAX_URL_LEN });
        }
        let url = reqwest::Url::parse(text).map_err(|_| CallbackUrlError::NotAUrl)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(CallbackUrlError::Scheme(url.scheme().to_string()));
        }
        let host = url.host().ok_or(CallbackUrlError::NoHost)?;
        if self.allow_private {
            return Ok(url);
        }
        match host {
            url::Host::Ipv4(ip) if is_internal(ip.into()) => Err(CallbackUrlError::InternalAddress(ip.into())),
            url::Host::Ipv6(ip) if is_internal(ip.into()) => Err(CallbackUrlError::InternalAddress(ip.into())),
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name == "localhost" || name.ends_with(".localhost") {
                    return Err(CallbackUrlError::InternalName(name));
                }
                Ok(url)
            }
            _ => Ok(url),
        }
    }

    /// Whether a delivery may connect to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow_private || !is_internal(ip)
    }
}

/// True for addresses inside a network rather than on the Internet: unspecified and "this
/// network" (0/8, ::), loopback (127/8, ::1), private (RFC 1918; ULA fc00::/7), shared
/// address space (100.64/10, RFC 6598), link-local (169.254/16 with cloud metadata services,
/// fe80::/10), IETF protocol assignments (192.0.0/24), benchmarking (198.18/15), multicast,
/// reserved and broadcast (224/4, 240/4; ff00::/8), deprecated site-local (fec0::/10), discard
/// (100::/64), local-use NAT64 (64:ff9b:1::/48), and IPv4-mapped, IPv4-compatible, NAT64
/// (64:ff9b::/96, RFC 6052) and 6to4 (2002::/16) addresses whose IPv4 address is one of those.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0
        || a == 10
        || a == 127
        || (a == 100 && b & 0xc0 == 64)
        || (a == 169 && b == 254)
        || (a == 172 && b & 0xf0 == 16)
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 168)
        || (a == 198 && b & 0xfe == 18)
        || a >= 224
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_v4(v4);
    }
    let bits = ip.to_bits();
    let s = ip.segments();
    let low_v4 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    if bits >> 32 == 0 {
        // ::/96: unspecified, loopback and the deprecated IPv4-compatible form.
        return true;
    }
    if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        return is_internal_v4(low_v4);
    }
    if s[0] == 0x2002 {
        let [a, b] = s[1].to_be_bytes();
        let [c, d] = s[2].to_be_bytes();
        return is_internal_v4(Ipv4Addr::new(a, b, c, d));
    }
    (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
        || s[0] & 0xfe00 == 0xfc00
        || s[0] & 0xffc0 == 0xfe80
        || s[0] & 0xffc0 == 0xfec0
        || s[0] & 0xff00 == 0xff00
        || bits >> 64 == 0x0100_0000_0000_0000
}

/// A delivery refused because its destination is internal.
#[derive(Debug, thiserror::Error)]
#[error("callback destination {host} is the internal address {addr}")]
pub struct BlockedDestination {
    /// The URL's host.
    pub host: String,
    /// The internal address it is or resolves to.
    pub addr: IpAddr,
}

/// The resolver of the callback client when internal destinations are refused: it resolves as
/// the system does and refuses a name with any internal address among its answers. The
/// connection uses exactly the addresses returned here, so what is checked is what is used.
struct CheckedResolver;

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| is_internal(a.ip())) {
                let blocked = BlockedDestination { host, addr: bad.ip() };
                return Err(Box::new(blocked) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The [`BlockedDestination`] behind a request error, if that is what it is.
fn blocked_in(e: &reqwest::Error) -> Option<&BlockedDestination> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(b) = err.downcast_ref::<BlockedDestination>() {
            return Some(b);
        }
        source = err.source();
    }
    None
}

/// Delivers events to callback URLs.
#[derive(Clone)]
pub struct Callbacks {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    targets: TargetPolicy,
    config: CallbacksConfig,
    metrics: Arc<Metrics>,
    pending: AtomicUsize,
    in_flight: Semaphore,
}

impl Callbacks {
    /// A deliverer with its own HTTP client.
    pub fn new(config: CallbacksConfig, metrics: Arc<Metrics>) -> Self {
        let targets = TargetPolicy::new(config.allow_private);
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("interwork/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if !config.allow_private {
            builder = builder.dns_resolver(Arc::new(CheckedResolver));
        }
        let client = builder
            .build()
            // Building a client without custom TLS roots or proxies only fails when the TLS
            // backend cannot initialise, which is a broken installation.
            .expect("HTTP client for callbacks");
        Self {
            inner: Arc::new(Inner {
                client,
                targets,
                config,
                metrics,
                pending: AtomicUsize::new(0),
                in_flight: Semaphore::new(MAX_IN_FLIGHT),
            }),
        }
    }

    /// Queues `event` for `url`. Never blocks; drops (and counts) when too much is pending.
    pub fn send(&self, url: &str, event: &CallbackEvent) {
        self.send_json(url, event.to_json());
    }

    fn send_json(&self, url: &str, event: Value) {
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
                        self.send(&url, &body);
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
        // Addresses written in the URL never reach the resolver: check them here. Names are
        // checked by the resolver, at every connection.
        let literal = match reqwest::Url::parse(url).ok().and_then(|u| u.host().map(|h| h.to_owned())) {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal
            && !self.inner.targets.allows(ip)
        {
            tracing::warn!(event = %event["event"], destination = %ip, "callback refused: internal destination");
            return "blocked";
        }
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
                    if let Some(blocked) = blocked_in(&e) {
                        tracing::warn!(event = %event["event"], host = %blocked.host, destination = %blocked.addr,
                            "callback refused: the name resolves to an internal destination");
                        return "blocked";
                    }
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

/// The callback a room event makes, if any: its URL and event.
pub fn room_callback(event: &RoomEvent, now: SystemTime) -> Option<(String, CallbackEvent)> {
    let timestamp = timestamp(now);
    match event {
        RoomEvent::ParticipantJoined { account, session, participant, callback_url: Some(url) } => Some((
            url.clone(),
            CallbackEvent::ParticipantJoined(ParticipantJoinedEvent {
                timestamp,
                account_id: account.as_str().into(),
                session_id: session.as_str().into(),
                participant_id: participant.as_str().into(),
            }),
        )),
        RoomEvent::ParticipantLeft { account, session, participant, callback_url: Some(url), reason } => Some((
            url.clone(),
            CallbackEvent::ParticipantLeft(ParticipantLeftEvent {
                timestamp,
                account_id: account.as_str().into(),
                session_id: session.as_str().into(),
                participant_id: participant.as_str().into(),
                reason: (*reason).into(),
            }),
        )),
        _ => None,
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

    use serde_json::json;

    use super::*;
    use crate::ids::{AccountId, ParticipantId, SessionId};
    use crate::rooms::LeaveReason;

    #[test]
    fn internal_addresses_are_recognised() {
        for internal in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "192.0.0.170",
            "198.18.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "100::1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal} is internal");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "172.15.255.255",
            "100.128.0.1",
            "100.63.255.255",
            "169.253.1.1",
            "192.0.1.1",
            "198.20.0.1",
            "203.0.113.10",
            "223.255.255.255",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!is_internal(public.parse().unwrap()), "{public} is public");
        }
    }

    #[test]
    fn callback_urls_are_checked_at_the_api() {
        let strict = TargetPolicy::new(false);
        assert!(strict.check_url("https://hooks.example.com/interwork?x=1").is_ok());
        assert!(strict.check_url("http://203.0.113.10:8080/cb").is_ok());
        let internal = |ip: &str| Err(CallbackUrlError::InternalAddress(ip.parse().unwrap()));
        assert_eq!(strict.check_url("http://127.0.0.1:9/cb"), internal("127.0.0.1"));
        assert_eq!(strict.check_url("http://169.254.169.254/latest/meta-data/"), internal("169.254.169.254"));
        assert_eq!(strict.check_url("http://[::1]/cb"), internal("::1"));
        assert_eq!(strict.check_url("http://[::ffff:7f00:1]/cb"), internal("::ffff:127.0.0.1"));
        assert_eq!(strict.check_url("http://[fd00::5]/cb"), internal("fd00::5"));
        // The WHATWG parser reads the numeric forms browsers accept; they are caught too.
        assert_eq!(strict.check_url("http://2130706433/cb"), internal("127.0.0.1"));
        assert_eq!(strict.check_url("http://0x7f.1/cb"), internal("127.0.0.1"));
        assert_eq!(strict.check_url("http://0/cb"), internal("0.0.0.0"));
        assert_eq!(strict.check_url("http://LocalHost./cb"), Err(CallbackUrlError::InternalName("localhost".into())));
        assert_eq!(
            strict.check_url("http://api.localhost/cb"),
            Err(CallbackUrlError::InternalName("api.localhost".into()))
        );
        assert_eq!(strict.check_url("ftp://example.com/x"), Err(CallbackUrlError::Scheme("ftp".into())));
        assert_eq!(strict.check_url("file:///etc/passwd"), Err(CallbackUrlError::Scheme("file".into())));
        assert_eq!(strict.check_url("gopher://example.com/"), Err(CallbackUrlError::Scheme("gopher".into())));
        assert_eq!(strict.check_url("not a url"), Err(CallbackUrlError::NotAUrl));
        assert_eq!(strict.check_url("/relative"), Err(CallbackUrlError::NotAUrl));
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(strict.check_url(&long), Err(CallbackUrlError::TooLong { max: MAX_URL_LEN }));

        let open = TargetPolicy::new(true);
        assert!(open.check_url("http://127.0.0.1:9/cb").is_ok());
        assert!(open.check_url("http://localhost/cb").is_ok());
        assert_eq!(open.check_url("ftp://127.0.0.1/"), Err(CallbackUrlError::Scheme("ftp".into())));
    }

    fn config(allow_private: bool) -> CallbacksConfig {
        CallbacksConfig {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
            timeout: Duration::from_secs(5),
            allow_private,
        }
    }

    /// A local receiver answering 204; returns its port and how many requests it got.
    async fn receiver() -> (u16, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let counted = hits.clone();
        let app = axum::Router::new().route(
            "/cb",
            axum::routing::post(move || {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (port, hits)
    }

    #[tokio::test]
    async fn deliveries_to_internal_destinations_are_refused_at_send_time() {
        let (port, hits) = receiver().await;
        let metrics = Arc::new(Metrics::default());
        let strict = Callbacks::new(config(false), metrics.clone());
        let event = json!({"event": "participantJoined"});
        // A name that resolves to loopback: refused by the resolver the connection uses, not
        // retried.
        assert_eq!(strict.deliver(&format!("http://localhost:{port}/cb"), &event).await, "blocked");
        // Literal addresses never reach a resolver: refused before connecting.
        assert_eq!(strict.deliver(&format!("http://127.0.0.1:{port}/cb"), &event).await, "blocked");
        assert_eq!(strict.deliver(&format!("http://[::ffff:127.0.0.1]:{port}/cb"), &event).await, "blocked");
        assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing reached the receiver");

        // Queued sends count the refusal.
        strict.send_json(&format!("http://localhost:{port}/cb"), event.clone());
        tokio::time::timeout(Duration::from_secs(10), async {
            while strict.pending() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the queued delivery ends");
        let text = metrics.encode();
        assert!(text.lines().any(|l| l == "interwork_callbacks_total{outcome=\"blocked\"} 1"), "{text}");

        // The same destinations are reached when internal ones are allowed.
        let open = Callbacks::new(config(true), metrics);
        assert_eq!(open.deliver(&format!("http://localhost:{port}/cb"), &event).await, "delivered");
        assert_eq!(open.deliver(&format!("http://127.0.0.1:{port}/cb"), &event).await, "delivered");
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

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
        let body = body.to_json();
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
        assert_eq!(room_callback(&left, now).unwrap().1.to_json()["reason"], "sessionExpired");
        let silent = RoomEvent::ParticipantJoined {
            account: AccountId::from("default"),
            session: SessionId::from("s"),
            participant: ParticipantId::from("p"),
            callback_url: None,
        };
        assert!(room_callback(&silent, now).is_none());
    }
}
