//! The browser side: device signaling over a WebSocket at `/v1/device`, peer connections
//! (str0m, one shared UDP port), Opus forwarding by subscriptions, the browser SDK and the demo
//! page.
//!
//! Still to come (issue 5). Devices will authenticate with
//! [`crate::tokens::Verifier::verify_participant`].
