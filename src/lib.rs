//! interwork joins the telephone network to WebRTC: a voice platform sends SIP INVITEs that
//! carry a participant token, and interwork bridges each call into a participant of a WebRTC
//! session.
//!
//! The crate follows the path of a call (see docs/architecture.md):
//! [`control`] is the HTTP API, [`rooms`] owns sessions, participants and subscriptions,
//! [`store`] keeps them across restarts, [`tokens`] mints and verifies participant JWTs,
//! [`sip`], [`media`] and [`webrtc`] are the two sides of the bridge, and [`app`] wires them
//! together and owns start, drain and shutdown.
#![deny(unsafe_code)]

pub mod app;
pub mod config;
pub mod control;
pub mod drain;
#[doc(hidden)]
pub mod fuzzing;
pub mod ids;
pub mod interconnect;
pub mod media;
pub mod metrics;
pub mod private_file;
pub mod replay;
pub mod rooms;
pub mod sip;
pub mod store;
pub mod tokens;
pub mod webrtc;
