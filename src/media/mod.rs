//! The media bridge: per SIP leg a pipeline of small pure stages on reused buffers (SRTP, RTP
//! (de)packetizing, jitter buffer with PLC, decode, N-1 mix, encode) and a router that fans one
//! encoded stream out to many subscribers.
//!
//! What exists so far is the sans-IO core of a SIP leg ([`leg::SipLeg`]), built from the
//! SDP's [`params::Negotiated`] and driven with `(now, input)`:
//!
//! - [`srtp`]: SDES SRTP/SRTCP for the three suites, replay protection, bounded state.
//! - [`rtp`]: RTP header view and writer over borrowed buffers, sequence and time newtypes.
//! - [`jitter`]: the adaptive jitter buffer (20–120 ms target), loss, DTX and re-sync.
//! - [`rtcp`]: SR/RR/SDES writing and parsing, RFC 3550 reception statistics, rtcp-mux demux.
//! - [`resample`]: the 8 ↔ 16 kHz interpolator and decimator for G.711 legs.
//! - [`leg`]: the per-call pipeline tying them to the codecs crate.
//!
//! - [`bridge`]: the per-leg state joining a [`leg::SipLeg`] to the WebRTC forwarder (Opus
//!   encode once, mix at 16 kHz, DTMF both ways).
//! - [`worker`]: the fixed pool of media threads that carry the legs, each ticking many in one
//!   pass per phase of 20 ms, reading their sockets in batches.
//! - [`counters`]: the legs' live media counters in `/metrics`.
//! - [`ports`]: the RTP port range, which pairs our legs hold (given back when a leg ends).
//! - [`mixdown`]: what one SIP leg hears, queued per publisher and summed once per tick.
//! - [`heard`]: each heard publisher's Opus decoded once for every leg that hears it. Who hears whom is
//!   the forwarder's business: it follows the rooms' subscriptions for SIP legs as for browsers.
//! - [`pacing`]: when a leg ticks: just after its peer's packets arrive.
//! - [`shared`]: frames shared with many readers, their buffers reused once nobody holds them.

pub mod bridge;
pub mod counters;
pub mod heard;
pub mod jitter;
pub mod leg;
pub mod mixdown;
pub mod pacing;
pub mod params;
pub mod ports;
pub mod resample;
pub mod router;
pub mod rtcp;
pub mod rtp;
pub mod shared;
pub mod srtp;
pub mod worker;

#[cfg(test)]
mod netem;
