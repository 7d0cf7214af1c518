//! The JSON bodies of the callbacks (CONTRACT §2) POSTed to participants' `callbackUrl`, as
//! types: [`callbacks`](super::callbacks) sends them, and the OpenAPI document's `webhooks` are
//! generated from them, so the two cannot disagree.

use std::time::SystemTime;

use serde::Serialize;
use utoipa::ToSchema;

use crate::interconnect::InterconnectMode;
use crate::rooms::LeaveReason;

/// A callback: the `event` field names its kind, the other fields depend on it.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum CallbackEvent {
    /// A participant joined a session.
    ParticipantJoined(ParticipantJoinedEvent),
    /// A participant left a session.
    ParticipantLeft(ParticipantLeftEvent),
    /// A participant's SIP leg was answered.
    SipLegConnected(SipLegConnectedEvent),
    /// A participant's SIP leg ended.
    SipLegEnded(SipLegEndedEvent),
    /// A DTMF digit came from a participant's SIP leg (RFC 4733 or SIP INFO).
    Dtmf(DtmfEvent),
}

impl CallbackEvent {
    /// The `event` field's value.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ParticipantJoined(_) => "participantJoined",
            Self::ParticipantLeft(_) => "participantLeft",
            Self::SipLegConnected(_) => "sipLegConnected",
            Self::SipLegEnded(_) => "sipLegEnded",
            Self::Dtmf(_) => "dtmf",
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> serde_json::Value {
        // A derived Serialize of strings, numbers and enums cannot fail.
        serde_json::to_value(self).expect("callback events serialize")
    }
}

/// `participantJoined`.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantJoinedEvent {
    /// When it happened, RFC 3339 with milliseconds, UTC.
    pub timestamp: String,
    /// The account.
    pub account_id: String,
    /// The session joined.
    pub session_id: String,
    /// The participant.
    pub participant_id: String,
}

/// `participantLeft`.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantLeftEvent {
    /// When it happened, RFC 3339 with milliseconds, UTC.
    pub timestamp: String,
    /// The account.
    pub account_id: String,
    /// The session left.
    pub session_id: String,
    /// The participant.
    pub participant_id: String,
    /// Why it left.
    pub reason: LeftBecause,
}

/// Why a participant left a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum LeftBecause {
    /// Removed from the session (through the API, or its SIP leg ended in transfer mode).
    Removed,
    /// The session was deleted.
    SessionDeleted,
    /// The session expired.
    SessionExpired,
    /// The participant was deleted.
    ParticipantDeleted,
}

impl From<LeaveReason> for LeftBecause {
    fn from(r: LeaveReason) -> Self {
        match r {
            LeaveReason::Removed => Self::Removed,
            LeaveReason::SessionDeleted => Self::SessionDeleted,
            LeaveReason::SessionExpired => Self::SessionExpired,
            LeaveReason::ParticipantDeleted => Self::ParticipantDeleted,
        }
    }
}

/// `sipLegConnected`.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SipLegConnectedEvent {
    /// When it happened, RFC 3339 with milliseconds, UTC.
    pub timestamp: String,
    /// The account.
    pub account_id: String,
    /// The leg's session.
    pub session_id: String,
    /// The participant the leg is.
    pub participant_id: String,
    /// The SIP Call-ID.
    pub call_id: String,
    /// The interconnect mode of the leg.
    pub mode: Mode,
}

/// The interconnect mode of a SIP leg (CONTRACT §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// One SIP dialog is the participant's media for its whole life.
    Transfer,
    /// The leg and the participant have independent lifetimes.
    Bridge,
    /// Many legs in one session, mixed by the gateway.
    Conference,
}

impl From<InterconnectMode> for Mode {
    fn from(m: InterconnectMode) -> Self {
        match m {
            InterconnectMode::Transfer => Self::Transfer,
            InterconnectMode::Bridge => Self::Bridge,
            InterconnectMode::Conference => Self::Conference,
        }
    }
}

/// `sipLegEnded`.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SipLegEndedEvent {
    /// When it happened, RFC 3339 with milliseconds, UTC.
    pub timestamp: String,
    /// The account.
    pub account_id: String,
    /// The leg's session.
    pub session_id: String,
    /// The participant the leg was.
    pub participant_id: String,
    /// The SIP Call-ID.
    pub call_id: String,
    /// The interconnect mode of the leg.
    pub mode: Mode,
    /// How long it was connected.
    pub duration_ms: u64,
    /// Who ended it and why (the SIP status or BYE and its reason).
    pub reason: String,
    /// The leg's media counters; null when its media never ran.
    pub media: Option<LegMedia>,
}

/// A SIP leg's media counters.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegMedia {
    /// The SIP side's codec.
    pub codec: String,
    /// RTP packets received.
    pub packets_received: u64,
    /// RTP packets sent.
    pub packets_sent: u64,
    /// RTP packets lost.
    pub packets_lost: i64,
    /// Interarrival jitter, milliseconds.
    pub jitter_ms: f64,
    /// Frames made up by packet-loss concealment.
    pub concealed_frames: u64,
    /// SRTP authentication failures.
    pub auth_failures: u64,
    /// Latency SIP to WebRTC, milliseconds.
    pub latency_to_webrtc_ms: u64,
    /// Latency WebRTC to SIP, milliseconds.
    pub latency_to_sip_ms: u64,
}

/// `dtmf`.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DtmfEvent {
    /// When it happened, RFC 3339 with milliseconds, UTC.
    pub timestamp: String,
    /// The participant whose leg sent it.
    pub participant_id: String,
    /// The digit: 0-9, *, #, A-D.
    pub tone: String,
    /// How long it lasted.
    pub duration_ms: u64,
}

/// `now` as callbacks write it: RFC 3339, milliseconds, UTC.
pub fn timestamp(now: SystemTime) -> String {
    humantime::format_rfc3339_millis(now).to_string()
}
