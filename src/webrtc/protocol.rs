//! The device signaling protocol (`/v1/device`, documented in `docs/device-protocol.md`): JSON
//! text messages tagged by `type`, the error codes carried by `error` messages and the close
//! codes that end a socket.
//!
//! Values read off the socket are parsed whole into [`ClientMessage`]; anything that does not
//! parse is a [`ErrorCode::ProtocolError`], never a panic. The server only offers and the
//! browser only answers, so there is no glare to resolve.

use serde::{Deserialize, Serialize};

use crate::rooms::model::MediaType;

/// Version of this protocol, sent in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest text message accepted from a device. An offer or answer for a few dozen audio
/// streams fits in a few kilobytes; 64 KiB leaves room and still bounds memory per socket.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Longest DTMF string in one `dtmf` message.
pub const MAX_DTMF_TONES: usize = 32;

/// A message from the device.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum ClientMessage {
    /// First message: the participant token.
    Hello {
        /// The participant token (CONTRACT §3).
        token: String,
        /// The SDK's version, for logs.
        #[serde(default, rename = "sdkVersion")]
        sdk_version: Option<String>,
    },
    /// Asks to publish media.
    Publish {
        /// Echoed in the reply.
        #[serde(rename = "requestId")]
        request_id: u32,
        /// Publish audio.
        #[serde(default)]
        audio: bool,
        /// Publish video.
        #[serde(default)]
        video: bool,
    },
    /// Stops publishing.
    Unpublish {
        /// Echoed in the reply.
        #[serde(rename = "requestId")]
        request_id: u32,
    },
    /// The SDP answer to the server's last offer.
    Answer {
        /// The SDP text.
        sdp: String,
    },
    /// A trickled ICE candidate of the browser (optional: the server is ICE-lite and learns the
    /// browser's address from its checks).
    Candidate {
        /// `candidate:...` attribute text; empty at the end of gathering.
        candidate: String,
        /// The m-line it belongs to.
        #[serde(default, rename = "sdpMid")]
        sdp_mid: Option<String>,
        /// The m-line index.
        #[serde(default, rename = "sdpMLineIndex")]
        sdp_m_line_index: Option<u32>,
    },
    /// DTMF tones to send to whoever hears this participant.
    Dtmf {
        /// `0-9`, `*`, `#`, `A-D`.
        tones: String,
    },
    /// Application keepalive; answered with `pong`.
    Ping {
        /// Echoed in the reply.
        #[serde(default)]
        id: Option<u64>,
    },
    /// The device is leaving; the server closes with 1000.
    Bye {},
}

/// A stream the device receives or sends.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StreamInfo {
    /// The stream's id, unique on this node.
    pub endpoint_id: String,
    /// Its publisher.
    pub participant_id: String,
    /// What it carries.
    pub media_types: Vec<MediaType>,
    /// The m-line (transceiver `mid`) carrying it on this device's peer connection.
    pub mid: String,
    /// Its publisher sends nothing for now (a SIP leg on hold, or a bridge participant between
    /// calls); `streamMuted` tells of changes.
    pub muted: bool,
}

/// A message to the device.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerMessage {
    /// Authentication succeeded.
    #[serde(rename_all = "camelCase")]
    Welcome {
        /// The participant.
        participant_id: String,
        /// The session it is admitted to.
        session_id: String,
        /// What it may publish.
        publish_permissions: Vec<MediaType>,
        /// How often the device should ping, in milliseconds.
        ping_interval_ms: u64,
        /// [`PROTOCOL_VERSION`].
        protocol: u32,
    },
    /// An SDP offer; the device answers with `answer`.
    #[serde(rename_all = "camelCase")]
    Offer {
        /// The SDP text.
        sdp: String,
        /// The m-line on which the device should send its microphone, when the offer adds one.
        #[serde(skip_serializing_if = "Option::is_none")]
        publish_mid: Option<String>,
    },
    /// A `publish` took effect.
    #[serde(rename_all = "camelCase")]
    Published {
        /// The request.
        request_id: u32,
        /// The published stream.
        stream: StreamInfo,
    },
    /// An `unpublish` took effect.
    #[serde(rename_all = "camelCase")]
    Unpublished {
        /// The request.
        request_id: u32,
    },
    /// A stream the participant subscribes to is flowing on `mid`.
    StreamAvailable(StreamInfo),
    /// A stream is no longer sent to this device.
    #[serde(rename_all = "camelCase")]
    StreamUnavailable {
        /// The stream.
        endpoint_id: String,
    },
    /// A stream this device receives was muted (its SIP leg holds the call, or a bridge
    /// participant is between calls) or unmuted.
    #[serde(rename_all = "camelCase")]
    StreamMuted {
        /// The stream.
        endpoint_id: String,
        /// Muted now.
        muted: bool,
    },
    /// A tone from a participant this one hears.
    #[serde(rename_all = "camelCase")]
    Dtmf {
        /// Who sent it.
        participant_id: String,
        /// One of `0-9*#A-D`.
        tone: char,
    },
    /// Reply to `ping`.
    Pong {
        /// The ping's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// A request failed; the socket stays open.
    #[serde(rename_all = "camelCase")]
    Error {
        /// Why, machine-readable.
        code: ErrorCode,
        /// Why, for people.
        message: String,
        /// The request that failed, when there was one.
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<u32>,
    },
}

impl ServerMessage {
    /// An `error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>, request_id: Option<u32>) -> Self {
        Self::Error { code, message: message.into(), request_id }
    }
}

/// The codes of `error` messages.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The message is not JSON, not an object, has an unknown `type` or bad fields.
    ProtocolError,
    /// The message is valid but not now (an answer with no offer pending, a second `hello`).
    OutOfOrder,
    /// The participant may not publish this media (its `publishPermissions`).
    PermissionDenied,
    /// Valid and permitted, but not supported by this gateway (video).
    Unsupported,
    /// A field's value is wrong (an SDP that does not parse, a bad DTMF tone).
    InvalidArgument,
    /// The gateway could not do it (internal limits, a peer that is gone).
    Internal,
}

/// Why the server closed a socket: the WebSocket close code it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The device said `bye` or the server is done with it (1000).
    Normal,
    /// The daemon is stopping (1001).
    GoingAway,
    /// A message was larger than [`MAX_MESSAGE_BYTES`] (1009).
    TooBig,
    /// The daemon is draining and takes no new devices (1013).
    Draining,
    /// The token is missing, malformed, badly signed, for another audience, or expired (4001).
    Unauthenticated,
    /// The first message was not a `hello`, or none came in time (4002).
    HelloExpected,
    /// The token's participant does not exist or is in no session (4004).
    NotFound,
    /// The device sent more messages than allowed (4008).
    RateLimited,
    /// Another socket of the same participant took over (4009).
    Replaced,
    /// The participant left the session, was deleted, or the session ended (4010).
    Removed,
    /// The peer connection failed or its media stopped (4011).
    MediaFailed,
    /// No message (nor pong) from the device for too long (4012).
    Idle,
    /// The device did not read its messages fast enough (4013).
    TooSlow,
}

impl CloseReason {
    /// The close code on the wire.
    pub fn code(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::GoingAway => 1001,
            Self::TooBig => 1009,
            Self::Draining => 1013,
            Self::Unauthenticated => 4001,
            Self::HelloExpected => 4002,
            Self::NotFound => 4004,
            Self::RateLimited => 4008,
            Self::Replaced => 4009,
            Self::Removed => 4010,
            Self::MediaFailed => 4011,
            Self::Idle => 4012,
            Self::TooSlow => 4013,
        }
    }

    /// The close reason text (at most 123 bytes by RFC 6455 §5.5).
    pub fn text(self) -> &'static str {
        match self {
            Self::Normal => "bye",
            Self::GoingAway => "server stopping",
            Self::TooBig => "message too big",
            Self::Draining => "server draining",
            Self::Unauthenticated => "unauthenticated",
            Self::HelloExpected => "hello expected",
            Self::NotFound => "participant not found or not in a session",
            Self::RateLimited => "rate limited",
            Self::Replaced => "replaced by another connection",
            Self::Removed => "removed from the session",
            Self::MediaFailed => "media connection failed",
            Self::Idle => "idle",
            Self::TooSlow => "too slow",
        }
    }
}

/// True when `tone` is a DTMF event this protocol carries.
pub fn is_dtmf_tone(tone: char) -> bool {
    matches!(tone, '0'..='9' | '*' | '#' | 'A'..='D')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse_and_unknown_ones_do_not() {
        let m: ClientMessage = serde_json::from_str(r#"{"type":"hello","token":"t"}"#).unwrap();
        assert_eq!(m, ClientMessage::Hello { token: "t".into(), sdk_version: None });
        let m: ClientMessage = serde_json::from_str(r#"{"type":"publish","requestId":3,"audio":true}"#).unwrap();
        assert_eq!(m, ClientMessage::Publish { request_id: 3, audio: true, video: false });
        for bad in [
            "",
            "null",
            "[]",
            r#"{"type":"nope"}"#,
            r#"{"type":"hello"}"#,
            r#"{"type":"hello","token":"t","extra":1}"#,
            r#"{"type":"publish","requestId":-1}"#,
            r#"{"type":"answer","sdp":5}"#,
        ] {
            assert!(serde_json::from_str::<ClientMessage>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let m = ServerMessage::StreamAvailable(StreamInfo {
            endpoint_id: "e".into(),
            participant_id: "p".into(),
            media_types: vec![MediaType::Audio],
            mid: "1".into(),
            muted: false,
        });
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"type":"streamAvailable","endpointId":"e","participantId":"p","mediaTypes":["AUDIO"],"mid":"1","muted":false})
        );
        let m = ServerMessage::StreamMuted { endpoint_id: "e".into(), muted: true };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"type":"streamMuted","endpointId":"e","muted":true})
        );
        let m = ServerMessage::error(ErrorCode::PermissionDenied, "no", Some(2));
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"type":"error","code":"PERMISSION_DENIED","message":"no","requestId":2})
        );
        let m = ServerMessage::Dtmf { participant_id: "p".into(), tone: '#' };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"type":"dtmf","participantId":"p","tone":"#"})
        );
    }

    #[test]
    fn close_codes_are_distinct_and_reasons_short() {
        use CloseReason::*;
        let all = [
            Normal,
            GoingAway,
            TooBig,
            Draining,
            Unauthenticated,
            HelloExpected,
            NotFound,
            RateLimited,
            Replaced,
            Removed,
            MediaFailed,
            Idle,
            TooSlow,
        ];
        let mut codes: Vec<u16> = all.iter().map(|c| c.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        assert!(all.iter().all(|c| c.text().len() <= 123));
    }
}
