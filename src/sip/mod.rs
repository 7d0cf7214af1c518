//! The SIP side: transports, RFC 3261 transactions and dialogs (rsipstack behind this module),
//! User-to-User participant tokens (RFC 7433), SDP offer/answer with SRTP-SDES, and `ua`, the
//! sans-IO call logic that maps a call to a participant and its interconnect mode.
//!
//! Still to come (issue 4); the foundation already provides what it will call:
//! [`crate::tokens::Verifier::verify_participant`] for admission and the rooms change channel
//! ([`crate::rooms::RoomsHandle::subscribe`]) for BYE on removal.

pub mod message;
pub mod sdp;
pub mod uui;
pub mod ua;
