//! Prometheus metrics of the whole daemon, served as text at `/metrics`.
//!
//! One registry; each part records into the families it owns through this struct. Counts that
//! the rooms already know (sessions, participants) are read when scraped, not kept twice.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::media::counters::MediaCounters;

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

/// Labels of an initial INVITE's final answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InviteLabels {
    /// Final status.
    pub status: u16,
    /// Interconnect mode, or `unknown` when refused before it was known.
    pub mode: &'static str,
}

/// Labels of a media counter of SIP legs.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MediaLabels {
    /// What was counted: one of [`crate::media::counters::KINDS`] (`rtp_received`, `rtp_sent`,
    /// `rtp_lost`, `srtp_auth_failed`, `srtp_replayed`, `foreign_source`, `relatch_refused`,
    /// `frames_concealed` (jitter buffer), `opus_published`, `opus_dropped` (the forwarder's
    /// queue was full), `heard_late`, `heard_overflow` (a heard publisher's queue was full)).
    pub kind: &'static str,
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
    /// Initial INVITEs by final status and mode.
    pub sip_invites: Family<InviteLabels, Counter>,
    /// SIP dialogs now.
    pub sip_active_dialogs: Gauge,
    /// INVITE to 200 OK, seconds.
    pub sip_setup_seconds: Histogram,
    /// Time a SIP message waited between its receipt and the endpoint taking it, seconds.
    pub sip_queue_seconds: Histogram,
    /// What the SIP transports count: malformed messages, requests shed with 503,
    /// connections refused at the caps.
    pub sip_transport: TransportCounters,
    /// Media counters of SIP legs, by kind (added live by each leg, through `media`).
    pub media_leg: Family<MediaLabels, Counter>,
    /// The same counters resolved once per kind, with the busy time: what legs add to.
    pub media: MediaCounters,
    /// SIP legs whose media runs now.
    pub media_active_legs: Gauge,
    /// Time the legs spent transcoding, mixing and protecting (their 20 ms ticks), live.
    pub media_transcode_seconds: Counter<f64, AtomicU64>,
    /// Interarrival jitter of each ended leg's peer (RFC 3550), seconds.
    pub media_leg_jitter_seconds: Histogram,
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
        let sip_invites = Family::<InviteLabels, Counter>::default();
        registry.register("sip_invites", "Initial INVITEs by final status and mode", sip_invites.clone());
        let sip_active_dialogs = Gauge::default();
        registry.register("sip_active_dialogs", "SIP dialogs", sip_active_dialogs.clone());
        let sip_setup_seconds = Histogram::new([0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 5.0]);
        registry.register("sip_setup_seconds", "INVITE to 200 OK", sip_setup_seconds.clone());
        let sip_queue_seconds = Histogram::new([0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]);
        registry.register(
            "sip_queue_seconds",
            "Time a SIP message waited between its receipt and the SIP endpoint taking it",
            sip_queue_seconds.clone(),
        );
        let sip_transport = TransportCounters::default();
        registry.register("sip_malformed", "Malformed SIP messages", sip_transport.malformed.clone());
        registry.register(
            "sip_connections_refused",
            "SIP TCP/TLS connections refused because too many were open (in total or from one address)",
            sip_transport.connections_refused.clone(),
        );
        registry.register(
            "sip_shed",
            "SIP requests refused with 503 because too many were pending or the endpoint was overloaded",
            sip_transport.shed.clone(),
        );
        registry.register(
            "sip_shed_late",
            "New INVITEs refused with 503 by the SIP endpoint after waiting past 30 ms for it (part of sip_shed)",
            sip_transport.shed_late.clone(),
        );
        let media_leg = Family::<MediaLabels, Counter>::default();
        registry.register("media_leg", "Media counters of SIP legs by kind (live)", media_leg.clone());
        let media_active_legs = Gauge::default();
        registry.register("media_active_legs", "SIP legs whose media runs", media_active_legs.clone());
        let media_transcode_seconds = Counter::<f64, AtomicU64>::default();
        registry.register(
            "media_transcode_seconds",
            "Time SIP legs spent transcoding, mixing and protecting (the bridge's CPU)",
            media_transcode_seconds.clone(),
        );
        let media_leg_jitter_seconds = Histogram::new([0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]);
        registry.register(
            "media_leg_jitter_seconds",
            "Interarrival jitter of ended SIP legs",
            media_leg_jitter_seconds.clone(),
        );
        Self {
            registry,
            http_requests,
            sessions,
            participants,
            callbacks,
            sip_invites,
            sip_active_dialogs,
            sip_setup_seconds,
            sip_transport,
            sip_queue_seconds,
            media: MediaCounters::new(
                |kind| media_leg.get_or_create(&MediaLabels { kind }).clone(),
                media_transcode_seconds.clone(),
            ),
            media_leg,
            media_active_legs,
            media_transcode_seconds,
            media_leg_jitter_seconds,
        }
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

/// What the transports count, for /metrics: the application registers these counters, the
/// transports only add to them.
#[derive(Clone, Debug, Default)]
pub struct TransportCounters {
    /// Requests refused with 503: at the door (queue too long), by the transaction layer (full)
    /// or by the endpoint (a new INVITE that waited past the endpoint's lateness bound (`sip::transport::LATE`)).
    pub shed: Counter,
    /// Of those, the new INVITEs the endpoint refused after waiting past the endpoint's lateness bound (`sip::transport::LATE`) (the door's
    /// estimate let them in): the others were answered as soon as they were read.
    pub shed_late: Counter,
    /// Messages that could not be parsed, by what was done about them.
    pub malformed: Family<MalformedLabels, Counter>,
    /// Stream connections refused at the caps (in total or per source).
    pub connections_refused: Counter,
}

/// Labels of a SIP message the transport could not parse.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MalformedLabels {
    /// `answered` (400/505/513 sent) or `dropped` (nothing could be answered).
    pub outcome: &'static str,
}
