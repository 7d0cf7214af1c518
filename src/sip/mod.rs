//! The SIP side: transports, RFC 3261 transactions and dialogs (rsipstack behind this module),
//! User-to-User participant tokens (RFC 7433), SDP offer/answer with SRTP-SDES, and `ua`, the
//! sans-IO call logic that maps a call to a participant and its interconnect mode.
//!
//! Layers, bottom up: [`stack`] (the only module that names rsipstack's types, with the guard
//! that covers its parser gaps), [`message`] (our view of SIP messages), [`uui`] and [`sdp`]
//! (pure parsers and negotiation), [`ua`] (the call logic, sans-IO) and [`driver`] (the tokio
//! shell that feeds the user agent and carries out what it decides).

pub mod driver;
pub mod message;
pub mod sdp;
pub mod stack;
pub mod ua;
pub mod uui;
