//! The browser side: device signaling over a WebSocket at `/v1/device`, peer connections
//! (str0m, one shared UDP port), Opus forwarding by subscriptions, the browser SDK and the demo
//! page.
//!
//! - [`protocol`]: the wire messages and close codes of `/v1/device`.
//! - [`sfu`]: the sans-IO forwarder core holding every peer connection.
//! - [`timeline`]: one stream's RTP time, continuous across changes of its source.
//! - `driver`: the task that owns the UDP socket, the forwarder and the channels.
//! - `signaling`: the WebSocket handler.
//! - `assets`: the SDK, its TypeScript declarations and the demo page.

pub mod protocol;
pub mod sfu;
pub mod sim;
pub mod timeline;
