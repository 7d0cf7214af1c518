//! What SIP legs hear, decoded once per publisher: each publisher's Opus is decoded once for
//! all the SIP legs that hear it, not once per leg.
//!
//! A media worker holds one [`HeardDecoders`] for all its legs and hands it every heard Opus
//! frame once per leg that hears it ([`HeardDecoders::decode_in`], in the leg's band); the first call decodes it to 16 kHz PCM and the others get the same shared
//! buffer. Loss is concealed here too, once per publisher: a gap in the publisher's RTP time of
//! up to [`MAX_CONCEALED_FRAMES`] frames is filled with Opus PLC, the last missing frame from
//! the next packet's in-band FEC when it carries one.
//!
//! ## Each frame decoded once, in order
//!
//! A frame is known by its publisher and its RTP time, never by the identity of its buffer: a
//! duplicated or retransmitted packet arrives in a new buffer, and subscribers' deliveries can
//! interleave with the publisher's next frame. An Opus decoder fed a packet twice applies the
//! packet's coded gain and energy deltas twice (SILK and CELT predict them from the previous
//! frame), and the stream's level climbs to full scale and stays there: a 1000 Hz narrowband
//! tone decoded twice per packet comes out at −1.6 dBFS RMS, clipped. So the decoder only ever
//! moves forward in RTP time: a frame at the time of one of the last [`RECENT`] decoded frames
//! gets that frame's audio, an older one is dropped (counted), and a time far behind (more than
//! [`RESTART`]) is the publisher starting over.
//!
//! Sans-IO: fed `(now, endpoint, rtp time, frame)`; the caller owns the clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use codecs::opus::{OpusDecoder, OpusError, SampleRate};
use str0m::media::MediaTime;

use crate::ids::EndpointId;
use crate::media::resample::{Band, WIDE_FRAME};

/// RTP time of one 20 ms frame at 48 kHz.
const FRAME_TICKS: u64 = 960;
/// Most missing frames filled in before a frame: more than that is a new talk spurt or a
/// restart, not loss, and is not concealed.
pub const MAX_CONCEALED_FRAMES: u64 = 3;
/// Most samples one Opus packet decodes to at 16 kHz (120 ms, RFC 6716 §3.2.1).
const MAX_DECODED: usize = 1920;
/// A publisher not heard for this long loses its decoder.
pub const IDLE: Duration = Duration::from_secs(2);
/// Decoded frames kept per publisher for subscribers whose delivery comes after the next frame.
pub const RECENT: usize = 4;
/// A frame this far (48 kHz ticks, 2 s) behind the last decoded one restarts the stream.
const RESTART: u64 = 100 * FRAME_TICKS;

/// One decoder per heard publisher and the last frame it decoded.
pub struct HeardDecoders {
    /// Per publisher and band heard in: G.711 legs hear at 8 kHz, AMR-WB legs at 16 kHz.
    decoders: HashMap<(EndpointId, Band), Publisher>,
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
    /// Frames older than every recent one (late duplicates, reordering): dropped, not decoded.
    pub frames_stale: u64,
}

struct Publisher {
    decoder: OpusDecoder,
    /// The RTP time of the last decoded frame.
    last_time: Option<u64>,
    /// The last [`RECENT`] decoded frames: RTP time and audio, shared by every subscriber.
    recent: [Option<(u64, Arc<[i16]>)>; RECENT],
    /// Where the next decoded frame goes in `recent`.
    next: usize,
    /// Buffers to decode into again.
    buffers: Buffers,
    last_used: Instant,
}

/// Where a frame stands against its publisher's decoded ones.
enum Position {
    /// After the last decoded frame, `missing` frames after it.
    Next { missing: u64 },
    /// At or before the last decoded frame.
    Past,
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
            frames_stale: 0,
        }
    }

    /// The 16 kHz audio of `endpoint`'s Opus frame `data` at `rtp_time`: [`Self::decode_in`]
    /// the wide band.
    pub fn decode(
        &mut self,
        now: Instant,
        endpoint: &EndpointId,
        rtp_time: MediaTime,
        data: &[u8],
    ) -> Option<Arc<[i16]>> {
        self.decode_in(now, endpoint, Band::Wide, rtp_time, data)
    }

    /// The audio in `band` of `endpoint`'s Opus frame `data` at `rtp_time` (48 kHz), preceded
    /// by the concealment of the frames missing since its previous one. `None` when it does not
    /// decode, libopus cannot open a decoder, or the frame is older than the recent ones. Each
    /// band in use has its own decoder: libopus decodes straight to the rate asked.
    pub fn decode_in(
        &mut self,
        now: Instant,
        endpoint: &EndpointId,
        band: Band,
        rtp_time: MediaTime,
        data: &[u8],
    ) -> Option<Arc<[i16]>> {
        self.sweep(now);
        // The key's id is a reference count, not a copy of the string.
        let key = (endpoint.clone(), band);
        let publisher = match self.decoders.get_mut(&key) {
            Some(p) => p,
            None => {
                let rate = match band {
                    Band::Narrow => SampleRate::Hz8000,
                    Band::Wide => SampleRate::Hz16000,
                };
                let decoder = match OpusDecoder::new(rate) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open an Opus decoder");
                        return None;
                    }
                };
                let p = Publisher {
                    decoder,
                    last_time: None,
                    recent: Default::default(),
                    next: 0,
                    buffers: Buffers::new(),
                    last_used: now,
                };
                self.decoders.entry(key).or_insert(p)
            }
        };
        publisher.last_used = now;
        let time = rtp_time.rebase(str0m::media::Frequency::FORTY_EIGHT_KHZ).numer();
        let missing = match publisher.position(time) {
            Position::Next { missing } => missing,
            Position::Past => {
                let heard = publisher.recent.iter().flatten().find(|(t, _)| *t == time).map(|(_, pcm)| pcm.clone());
                match heard {
                    Some(_) => self.frames_shared += 1,
                    None => self.frames_stale += 1,
                }
                return heard;
            }
        };
        match fill(&mut publisher.decoder, band.frame(), missing, data, &mut self.scratch) {
            Ok((n, concealed)) => {
                self.frames_decoded += 1;
                self.frames_concealed += concealed;
                publisher.last_time = Some(time);
                let old = publisher.recent[publisher.next].take().map(|(_, pcm)| pcm);
                let pcm = publisher.buffers.fill(old, &self.scratch[..n]);
                publisher.recent[publisher.next] = Some((time, pcm.clone()));
                publisher.next = (publisher.next + 1) % RECENT;
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

impl Publisher {
    /// Where a frame at `time` stands: next (with the frames missing before it, up to
    /// [`MAX_CONCEALED_FRAMES`]; a longer gap is a pause), or past. A time far behind is a
    /// restart, and a restart is next.
    fn position(&mut self, time: u64) -> Position {
        let Some(last) = self.last_time else { return Position::Next { missing: 0 } };
        let ahead = time.wrapping_sub(last);
        let behind = last.wrapping_sub(time);
        if ahead != 0 && ahead < u64::MAX / 2 {
            let gap = ahead / FRAME_TICKS;
            let missing = if (2..=MAX_CONCEALED_FRAMES + 1).contains(&gap) { gap - 1 } else { 0 };
            Position::Next { missing }
        } else if behind > RESTART {
            self.recent = Default::default();
            Position::Next { missing: 0 }
        } else {
            Position::Past
        }
    }
}

/// The shared buffers a publisher's decoded frames go out in, reused once no subscriber holds
/// them: no allocation per frame. A frame after a loss is longer (the concealed frames come
/// first), so buffers of each length in use are kept, a few at most.
struct Buffers {
    spare: Vec<Arc<[i16]>>,
}

impl Buffers {
    fn new() -> Self {
        Self { spare: Vec::with_capacity(RECENT) }
    }

    /// `pcm` in a shared buffer: `old` (the ring slot being overwritten) when nobody else holds
    /// it and its length fits, else a spare one that fits, else a new one; `old` is kept as a
    /// spare when nobody else holds it.
    fn fill(&mut self, old: Option<Arc<[i16]>>, pcm: &[i16]) -> Arc<[i16]> {
        let mut old = old.filter(|b| Arc::strong_count(b) == 1 && Arc::weak_count(b) == 0);
        if old.as_ref().is_some_and(|b| b.len() != pcm.len()) {
            if self.spare.len() < RECENT {
                self.spare.extend(old.take());
            } else {
                old = None;
            }
        }
        let reused = old.or_else(|| {
            let at = self.spare.iter().position(|b| b.len() == pcm.len() && Arc::strong_count(b) == 1)?;
            Some(self.spare.swap_remove(at))
        });
        match reused {
            Some(mut buffer) => {
                // Unique: checked above, and nothing else can have cloned it since.
                if let Some(samples) = Arc::get_mut(&mut buffer) {
                    samples.copy_from_slice(pcm);
                    return buffer;
                }
                Arc::from(pcm)
            }
            None => Arc::from(pcm),
        }
    }
}

/// Conceals `missing` frames into `out`, the last from `data`'s FEC, then decodes `data` after
/// them; returns the samples written and the frames concealed.
fn fill(
    decoder: &mut OpusDecoder,
    frame_len: usize,
    missing: u64,
    data: &[u8],
    out: &mut [i16],
) -> Result<(usize, u64), OpusError> {
    let mut n = 0;
    for i in 0..missing {
        let frame = &mut out[n..n + frame_len];
        let recovered = if i + 1 == missing { decoder.decode_fec(data, frame) } else { decoder.conceal(frame) };
        n += match recovered {
            Ok(k) => k.min(frame_len),
            Err(_) => decoder.conceal(frame)?.min(frame_len),
        };
    }
    let k = decoder.decode(data, &mut out[n..])?;
    Ok((n + k, missing))
}

#[cfg(test)]
pub(crate) mod tests {
    use codecs::opus::{MAX_PACKET_BYTES, OpusEncoder, OpusEncoderConfig};
    use codecs::pcm::analysis::{dominant_frequency, rms_dbfs, tone};
    use str0m::media::Frequency;

    use super::*;

    /// `count` 20 ms Opus frames of a `hz` tone at `peak_dbfs`, encoded from `rate` (8 kHz: a
    /// G.711 leg's narrowband Opus; 16 kHz: wideband), as publishers hand them to the forwarder.
    pub(crate) fn opus_frames(rate: SampleRate, hz: f64, peak_dbfs: f64, count: usize) -> Vec<Arc<[u8]>> {
        let mut encoder = OpusEncoder::new(rate, OpusEncoderConfig::default()).unwrap();
        let pcm = tone(rate.hz(), hz, peak_dbfs, rate.frame_20ms() * count);
        pcm.chunks_exact(rate.frame_20ms())
            .map(|c| {
                let mut out = [0u8; MAX_PACKET_BYTES];
                let n = encoder.encode(c, &mut out).unwrap();
                Arc::from(&out[..n])
            })
            .collect()
    }

    fn frames(count: usize) -> Vec<Arc<[u8]>> {
        opus_frames(SampleRate::Hz16000, 440.0, -6.0, count)
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

    /// A 1000 Hz tone through a G.711 leg's narrowband Opus encoder, at −6 dBFS.
    fn narrowband_frames(count: usize) -> Vec<Arc<[u8]>> {
        opus_frames(SampleRate::Hz8000, 1000.0, -6.0, count)
    }

    fn clipped(pcm: &[i16]) -> usize {
        pcm.iter().filter(|s| s.unsigned_abs() >= 32_000).count()
    }

    #[test]
    fn a_packet_delivered_again_in_a_new_buffer_is_not_decoded_again() {
        // A duplicated or retransmitted packet: same publisher, same RTP time, another buffer.
        let f = narrowband_frames(100);
        let (mut clean, mut dup) = (HeardDecoders::new(), HeardDecoders::new());
        let now = Instant::now();
        let e = EndpointId("leg".into());
        let (mut reference, mut heard) = (Vec::new(), Vec::new());
        for (i, frame) in f.iter().enumerate() {
            reference.extend_from_slice(&clean.decode(now, &e, at(i as u64), frame).unwrap());
            heard.extend_from_slice(&dup.decode(now, &e, at(i as u64), frame).unwrap());
            let copy: Arc<[u8]> = Arc::from(&frame[..]);
            assert_eq!(dup.decode(now, &e, at(i as u64), &copy).unwrap().len(), WIDE_FRAME);
        }
        assert_eq!((dup.frames_decoded, dup.frames_shared), (100, 100));
        assert_eq!(heard, reference, "the duplicate changed nothing");
        assert_eq!(clipped(&heard), 0);
    }

    #[test]
    fn interleaved_deliveries_decode_each_frame_once_and_in_order() {
        // Two subscribers whose deliveries interleave with the publisher's next frames:
        // (a, 0) (a, 1) (b, 0) (a, 2) (b, 1) (b, 2) … Both hear exactly the clean decode.
        let f = narrowband_frames(100);
        let mut clean = HeardDecoders::new();
        let now = Instant::now();
        let e = EndpointId("leg".into());
        let reference: Vec<Arc<[i16]>> =
            f.iter().enumerate().map(|(i, frame)| clean.decode(now, &e, at(i as u64), frame).unwrap()).collect();
        let mut d = HeardDecoders::new();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..f.len() + 1 {
            if i < f.len() {
                a.extend_from_slice(&d.decode(now, &e, at(i as u64), &f[i]).unwrap());
            }
            if i >= 1 {
                b.extend_from_slice(&d.decode(now, &e, at(i as u64 - 1), &f[i - 1]).unwrap());
            }
        }
        let reference: Vec<i16> = reference.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(d.frames_decoded, 100);
        assert_eq!(a, reference);
        assert_eq!(b, reference);
        assert!(rms_dbfs(&a[8_000..]) < -8.0, "{}", rms_dbfs(&a[8_000..]));
    }

    #[test]
    fn a_frame_older_than_the_recent_ones_is_dropped_and_a_restart_decodes() {
        let f = frames(20);
        let mut d = HeardDecoders::new();
        let now = Instant::now();
        let e = EndpointId("web".into());
        for i in 0..10 {
            d.decode(now, &e, at(100 + i), &f[i as usize]).unwrap();
        }
        assert!(d.decode(now, &e, at(100 + 9 - RECENT as u64), &f[0]).is_none(), "older than the recent ones");
        assert_eq!(d.frames_stale, 1);
        assert_eq!(d.decode(now, &e, at(100 + 10 - RECENT as u64), &f[0]).unwrap().len(), WIDE_FRAME);
        // The publisher's time starts over far behind: a new stream, decoded.
        assert_eq!(d.decode(now, &e, at(0), &f[10]).unwrap().len(), WIDE_FRAME);
        assert_eq!(d.decode(now, &e, at(1), &f[11]).unwrap().len(), WIDE_FRAME);
        assert_eq!(d.frames_decoded, 12);
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
