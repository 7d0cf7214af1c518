//! Prometheus metrics of the whole daemon, served as text at `/metrics`.
//!
//! One registry; each part records into the families it owns through this struct. Counts that
//! the rooms already know (sessions, participants) are read when scraped, not kept twice.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Method.
    pub method: String,
    /// The route template (e.g. `/v1/accounts/{accountId}/sessions`), never the raw path, so
    /// ids do not explode the label space.
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Labels of a callback delivery outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallbackLabels {
    /// `delivered`, `failed` (attempts exhausted) or `dropped` (queue full).
    pub outcome: &'static str,
}

/// Every metric interwork exports.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Sessions now.
    pub sessions: Gauge,
    /// Participants now.
    pub participants: Gauge,
    /// Callback deliveries by outcome.
    pub callbacks: Family<CallbackLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("interwork");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route and status", http_requests.clone());
        let sessions = Gauge::default();
        registry.register("sessions", "Sessions", sessions.clone());
        let participants = Gauge::default();
        registry.register("participants", "Participants", participants.clone());
        let callbacks = Family::<CallbackLabels, Counter>::default();
        registry.register("callbacks", "Callback deliveries by outcome", callbacks.clone());
        Self { registry, http_requests, sessions, participants, callbacks }
    }
}

impl Metrics {
    /// The registry as Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encoding into a String");
        out
    }
}
