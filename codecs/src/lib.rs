//! Audio codecs and RTP payload formats for the interwork media bridge: G.711, AMR-WB with
//! the RFC 4867 payload formats, Opus, RFC 4733 telephone events and a PCM toolbox.
//!
//! No I/O, no async, no clock: every function turns bytes into PCM or PCM into bytes, writing
//! into buffers the caller owns, so a leg allocates its buffers once and reuses them per
//! 20 ms frame. Errors are typed per module and bad input is an error, never a panic.
//!
//! ```no_run
//! use codecs::amrwb::{AmrWbDecoder, FRAME_SAMPLES};
//! use codecs::opus::{OpusEncoder, OpusEncoderConfig, SampleRate, MAX_PACKET_BYTES};
//! use codecs::rfc4867::{Depacketizer, PacketFrames, PayloadConfig};
//!
//! // Per leg, once: SIP-side AMR-WB (octet-aligned) in, Opus at 16 kHz out.
//! let depacketizer = Depacketizer::new(PayloadConfig::octet_aligned());
//! let mut frames = PacketFrames::new();
//! let mut decoder = AmrWbDecoder::new()?;
//! let mut encoder = OpusEncoder::new(SampleRate::Hz16000, OpusEncoderConfig::default())?;
//! let (mut pcm, mut opus) = ([0i16; FRAME_SAMPLES], [0u8; MAX_PACKET_BYTES]);
//! # let rtp_payload: &[u8] = &[];
//! // Per packet:
//! depacketizer.depacketize(rtp_payload, &mut frames)?;
//! for frame in frames.iter() {
//!     decoder.decode(frame, &mut pcm)?;
//!     let len = encoder.encode(&pcm, &mut opus)?;
//!     // send &opus[..len] with a 48 kHz RTP clock
//! #   let _ = len;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]

pub mod amrwb;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod g711;
pub mod opus;
pub mod pcm;
pub mod rfc4733;
pub mod rfc4867;

pub use error::CodecError;
