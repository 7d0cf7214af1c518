//! The SIP side: transports, RFC 3261 transactions and dialogs, User-to-User participant tokens
//! (RFC 7433), SDP offer/answer with SRTP-SDES, and `ua`, the sans-IO call logic that maps a
//! call to a participant and its interconnect mode.
//!
//! Layers, bottom up: [`message`] (our parser and writer: every message is parsed once),
//! [`framing`] (cutting messages out of TCP/TLS streams), [`transport`] (the sockets, a tokio
//! shell), [`transaction`] (RFC 3261 §17 with RFC 6026, sans-IO), [`uui`] and [`sdp`] (pure
//! parsers and negotiation), [`ua`] (dialogs and the call logic of answered calls, sans-IO), [`uac`] (calls we place, sans-IO) and [`driver`] (the
//! tokio shell that owns the transactions and the user agent and carries out what they
//! decide).

pub mod driver;
pub mod framing;
pub mod message;
pub mod refusal;
pub mod sdp;
pub mod transaction;
pub mod transport;
pub mod ua;
pub mod uac;
pub mod uui;

#[cfg(test)]
mod core_tests;
#[cfg(test)]
mod driver_tests;
