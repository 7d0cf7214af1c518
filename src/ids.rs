//! Identifiers of sessions, participants and token ids.
//!
//! Ids are short on purpose: a participant token travels in a SIP `User-to-User` header that
//! voice platforms cap at 350 characters, and the token carries both the participant and the
//! session id (CONTRACT §3). Twelve characters of `[a-z0-9]` give 62 bits, plenty for one
//! gateway's state, and the rooms refuse a colliding id anyway.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Characters ids are drawn from: lower-case letters and digits, safe in URLs, SIP and JSON.
const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Length of a generated session or participant id.
pub const ID_LEN: usize = 12;

/// Longest id accepted from outside (path segments, token claims).
pub const MAX_ID_LEN: usize = 64;

/// A random string of `len` characters from [`ALPHABET`].
pub fn random_id(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    fill_random(&mut bytes);
    // 256 is not a multiple of 36: reject the top values so every character is equally likely.
    let mut out = String::with_capacity(len);
    let mut i = 0;
    while out.len() < len {
        if i == bytes.len() {
            fill_random(&mut bytes);
            i = 0;
        }
        let b = bytes[i];
        i += 1;
        if b < 252 {
            out.push(ALPHABET[(b % 36) as usize] as char);
        }
    }
    out
}

/// Fills `buf` from the operating system's random source.
pub fn fill_random(buf: &mut [u8]) {
    // The OS random source failing is not something a daemon can recover from.
    getrandom::fill(buf).expect("the operating system's random source failed");
}

/// True when `s` could be an id: non-empty, not too long, and only characters that are safe in
/// URLs, SIP headers and log lines. Ids minted elsewhere (external token issuers) may use a
/// wider alphabet than ours.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(std::sync::Arc<str>);

        impl $name {
            /// A fresh random id.
            pub fn generate() -> Self {
                Self(random_id(ID_LEN).into())
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.into())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s.into())
            }
        }
    };
}

id_type!(
    /// Names a session: a set of participants that can hear each other.
    SessionId
);
id_type!(
    /// Names a participant: one endpoint (a browser, a SIP leg) that publishes and subscribes.
    ParticipantId
);
id_type!(
    /// Names an account: the tenant that owns sessions and participants.
    AccountId
);

/// Names a published stream; shown to the SDK as `endpointId`. Shared (`Arc<str>`) because
/// it travels with every frame: cloning it must not allocate. Here rather than in the
/// forwarder because the media side (the heard decode, the mix) names streams too.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(pub std::sync::Arc<str>);

impl EndpointId {
    /// A new random id.
    pub fn generate() -> Self {
        Self(random_id(ID_LEN).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_have_the_length_and_alphabet() {
        for _ in 0..200 {
            let id = random_id(ID_LEN);
            assert_eq!(id.len(), ID_LEN);
            assert!(id.bytes().all(|b| ALPHABET.contains(&b)), "{id}");
            assert!(is_valid_id(&id));
        }
        assert_ne!(random_id(ID_LEN), random_id(ID_LEN));
    }

    #[test]
    fn hostile_ids_are_not_valid() {
        for bad in ["", "a/b", "a b", "a\r\nb", "ü", &"x".repeat(MAX_ID_LEN + 1)] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }
}
