//! What SIP legs hear, decoded once per publisher (CONTRACT §6: each publisher's Opus is
//! decoded once for all the SIP legs that hear it, not once per leg).
//!
//! The forwarder hands every heard Opus frame to [`HeardDecoders::decode`] once per
//! subscriber; the first call decodes it to 16 kHz PCM and the others get the same shared
//! buffer (the frame is recognised by its shared `Arc`, which the forwarder hands out unchanged
//! to every subscriber). Loss is concealed here too, once per publisher: a gap in the
//! publisher's RTP time of up to [`MAX_CONCEALED_FRAMES`] frames is filled with Opus PLC, the
//! last missing frame from the next packet's in-band FEC when it carries one.
//!
//! Sans-IO: fed `(now, endpoint, rtp time, frame)`; the caller owns the clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use codecs::opus::{OpusDecoder, OpusError, SampleRate};
use str0m::media::MediaTime;

use crate::media::resample::WIDE_FRAME;
use crate::webrtc::sfu::EndpointId;

/// RTP time of one 20 ms frame at 48 kHz.
const FRAME_TICKS: u64 = 960;
/// Most missing frames filled in before a frame: more than that is a new talk spurt or a
/// restart, not loss, and is not concealed.
pub const MAX_CONCEALED_FRAMES: u64 = 3;
/// Most samples one Opus packet decodes to at 16 kHz (120 ms, RFC 6716 §3.2.1).
const MAX_DECODED: usize = 1920;
/// A publisher not heard for this long loses its decoder.
pub const IDLE: Duration = Duration::from_secs(2);

/// One decoder per heard publisher and the last frame it decoded.
pub struct HeardDecoders {
    decoders: HashMap<EndpointId, Publisher>,
    /// Scratch for concealment and decoding, reused.
    scratch: Vec<i16>,
    last_sweep: Option<Instant>,
    /// Frames decoded (once each, however many legs hear them).
    pub frames_decoded: u64,
    /// Frames handed out again from the shared buffer.
    pub frames_shared: u64,
    /// Missing frames filled in by PLC or FEC.
    pub frames_concealed: u64,
    /// Frames libopus refused.
    pub decode_errors: u64,
}

/// An Opus frame and its decoded audio, both shared.
type Decoded = (Arc<[u8]>, Arc<[i16]>);

struct Publisher {
    decoder: OpusDecoder,
    /// The RTP time of the last decoded frame.
    last_time: Option<u64>,
    /// The last frame and its audio, shared by every subscriber.
    last: Option<Decoded>,
    last_used: Instant,
}

impl std::fmt::Debug for HeardDecoders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeardDecoders").field("publishers", &self.decoders.len()).finish_non_exhaustive()
    }
}

impl Default for HeardDecoders {
    fn default() -> Self {
        Self::new()
    }
}

impl HeardDecoders {
    /// No publishers yet.
    pub fn new() -> Self {
        Self {
            decoders: HashMap::new(),
            scratch: vec![0; MAX_DECODED + MAX_CONCEALED_FRAMES as usize * WIDE_FRAME],
            last_sweep: None,
            frames_decoded: 0,
            frames_shared: 0,
            frames_concealed: 0,
            decode_errors: 0,
        }
    }

    /// The 16 kHz audio of `endpoint`'s Opus frame `data` at `rtp_time` (48 kHz), preceded by
    /// the concealment of the frames missing since its previous one. `None` when it does not
    /// decode or libopus cannot open a decoder.
    pub fn decode(
        &mut self,
        now: Instant,
        endpoint: &EndpointId,
        rtp_time: MediaTime,
        data: &Arc<[u8]>,
    ) -> Option<Arc<[i16]>> {
        self.sweep(now);
        let publisher = match self.decoders.get_mut(endpoint) {
            Some(p) => p,
            None => {
                let decoder = match OpusDecoder::new(SampleRate::Hz16000) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open an Opus decoder");
                        return None;
                    }
                };
                let p = Publisher { decoder, last_time: None, last: None, last_used: now };
                self.decoders.entry(endpoint.clone()).or_insert(p)
            }
        };
        publisher.last_used = now;
        if let Some((frame, pcm)) = &publisher.last
            && Arc::ptr_eq(frame, data)
        {
            self.frames_shared += 1;
            return Some(pcm.clone());
        }
        let time = rtp_time.rebase(str0m::media::Frequency::FORTY_EIGHT_KHZ).numer();
        let missing = publisher
            .last_time
            .map(|last| time.wrapping_sub(last) / FRAME_TICKS)
            .filter(|gap| (2..=MAX_CONCEALED_FRAMES + 1).contains(gap))
            .map_or(0, |gap| gap - 1);
        match fill(&mut publisher.decoder, missing, data, &mut self.scratch) {
            Ok((n, concealed)) => {
                self.frames_decoded += 1;
                self.frames_concealed += concealed;
                publisher.last_time = Some(time);
                let pcm: Arc<[i16]> = Arc::from(&self.scratch[..n]);
                publisher.last = Some((data.clone(), pcm.clone()));
                Some(pcm)
            }
            Err(_) => {
                self.decode_errors += 1;
                None
            }
        }
    }

    /// Publishers with a decoder.
    pub fn len(&self) -> usize {
        self.decoders.len()
    }

    /// No publisher has a decoder.
    pub fn is_empty(&self) -> bool {
        self.decoders.is_empty()
    }

    /// Drops the decoders of publishers idle for [`IDLE`], at most once a second.
    fn sweep(&mut self, now: Instant) {
        if self.last_sweep.is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(1)) {
            return;
        }
        self.last_sweep = Some(now);
        self.decoders.retain(|_, p| now.saturating_duration_since(p.last_used) < IDLE);
    }
}

/// Conceals `missing` frames into `out`, the last from `data`'s FEC, then decodes `data` after
/// them; returns the samples written and the frames concealed.
fn fill(decoder: &mut OpusDecoder, missing: u64, data: &[u8], out: &mut [i16]) -> Result<(usize, u64), OpusError> {
    let mut n = 0;
    for i in 0..missing {
        let frame = &mut out[n..n + WIDE_FRAME];
        let recovered = if i + 1 == missing { decoder.decode_fec(data, frame) } else { decoder.conceal(frame) };
        n += match recovered {
            Ok(k) => k.min(WIDE_FRAME),
            Err(_) => decoder.conceal(frame)?.min(WIDE_FRAME),
        };
    }
    let k = decoder.decode(data, &mut out[n..])?;
    Ok((n + k, missing))
}

#[cfg(test)]
mod tests {
    use codecs::opus::{MAX_PACKET_BYTES, OpusEncoder, OpusEncoderConfig};
    use codecs::pcm::analysis::{dominant_frequency, tone};
    use str0m::media::Frequency;

    use super::*;

    fn frames(count: usize) -> Vec<Arc<[u8]>> {
        let mut encoder = OpusEncoder::new(SampleRate::Hz16000, OpusEncoderConfig::default()).unwrap();
        let pcm = tone(16_000, 440.0, -6.0, WIDE_FRAME * count);
        pcm.chunks_exact(WIDE_FRAME)
            .map(|c| {
                let mut out = [0u8; MAX_PACKET_BYTES];
                let n = encoder.encode(c, &mut out).unwrap();
                Arc::from(&out[..n])
            })
            .collect()
    }

    fn at(frame: u64) -> MediaTime {
        MediaTime::new(10_000 + frame * FRAME_TICKS, Frequency::FORTY_EIGHT_KHZ)
    }

    #[test]
    fn a_frame_heard_by_many_legs_is_decoded_once() {
        let mut d = HeardDecoders::new();
        let now = Instant::now();
        let e = EndpointId("web".into());
        let mut audio = Vec::new();
        for (i, f) in frames(50).iter().enumerate() {
            let first = d.decode(now, &e, at(i as u64), f).unwrap();
            for _ in 0..4 {
                assert!(Arc::ptr_eq(&first, &d.decode(now, &e, at(i as u64), f).unwrap()));
            }
            assert_eq!(first.len(), WIDE_FRAME);
            audio.extend_from_slice(&first);
        }
        assert_eq!((d.frames_decoded, d.frames_shared, d.frames_concealed), (50, 200, 0));
        assert!((dominant_frequency(&audio[8_000..], 16_000) - 440.0).abs() < 2.0);
    }

    #[test]
    fn missing_frames_are_concealed_once_and_a_long_gap_is_not() {
        let mut d = HeardDecoders::new();
        let now = Instant::now();
        let e = EndpointId("web".into());
        let f = frames(40);
        for i in 0..10 {
            d.decode(now, &e, at(i), &f[i as usize]).unwrap();
        }
        // Frames 10 and 11 lost: two frames filled in before frame 12, once for every leg.
        let pcm = d.decode(now, &e, at(12), &f[12]).unwrap();
        assert_eq!(pcm.len(), 3 * WIDE_FRAME);
        assert_eq!(d.decode(now, &e, at(12), &f[12]).unwrap().len(), 3 * WIDE_FRAME);
        assert_eq!(d.frames_concealed, 2);
        // A gap of a second is a pause, not loss.
        let pcm = d.decode(now, &e, at(62), &f[13]).unwrap();
        assert_eq!(pcm.len(), WIDE_FRAME);
        assert_eq!(d.frames_concealed, 2);
    }

    #[test]
    fn idle_publishers_lose_their_decoder() {
        let mut d = HeardDecoders::new();
        let now = Instant::now();
        let f = frames(1);
        d.decode(now, &EndpointId("a".into()), at(0), &f[0]).unwrap();
        d.decode(now + Duration::from_millis(1500), &EndpointId("b".into()), at(0), &f[0]).unwrap();
        assert_eq!(d.len(), 2);
        d.decode(now + IDLE + Duration::from_secs(1), &EndpointId("b".into()), at(1), &f[0]).unwrap();
        assert_eq!(d.len(), 1, "a went idle");
    }
}
