//! The records the rooms keep and the store persists: sessions, participants, and memberships
//! (a participant in a session, with what it subscribes to there).

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, ParticipantId, SessionId};

/// A session: participants in it can hear each other by their subscriptions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Its id.
    pub id: SessionId,
    /// The account that owns it.
    pub account: AccountId,
    /// The customer's label.
    pub tag: Option<String>,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: u64,
    /// When it is removed, Unix milliseconds.
    pub expires_at_ms: u64,
    /// True once it holds a conference (longer lifetime).
    pub conference: bool,
    /// The demo's session (`/demo/connectionInfo`): not counted against the account's sessions.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub demo: bool,
}

/// A participant: an endpoint that publishes media and subscribes to others'.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// Its id.
    pub id: ParticipantId,
    /// The account that owns it.
    pub account: AccountId,
    /// The customer's label.
    pub tag: Option<String>,
    /// Where its events are POSTed.
    pub callback_url: Option<String>,
    /// What it may publish.
    pub publish_permissions: Vec<MediaType>,
    /// The device API version its client asked for.
    pub device_api_version: Option<String>,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: u64,
    /// Made by the demo: counted against the demo's own quota, not the account's participants.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub demo: bool,
    /// When it is removed, Unix milliseconds (demo participants); `None`: only when deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

/// A kind of media a participant may publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum MediaType {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

/// What a participant subscribes to in one session (the body of the seeds'
/// `addParticipantToSession` and of the subscriptions endpoint).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscriptions {
    /// Set: the participant hears everyone in this session, and everyone hears it.
    pub session_id: Option<SessionId>,
    /// Participants it hears, listed one by one.
    pub participants: Vec<ParticipantSubscription>,
}

/// One explicit subscription.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantSubscription {
    /// The publisher heard.
    pub participant_id: ParticipantId,
    /// Names the subscriber gives the publisher's streams.
    pub stream_aliases: Vec<String>,
}

/// A participant in a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The session.
    pub session: SessionId,
    /// The participant.
    pub participant: ParticipantId,
    /// What it subscribes to there.
    pub subscriptions: Subscriptions,
}
