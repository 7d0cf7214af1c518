//! The media bridge's per-leg state: what joins one SIP call's audio to the WebRTC forwarder
//! around its [`SipLeg`] (CONTRACT §6). A [`crate::media::worker`] carries many of them and
//! runs their ticks; this module is the tick itself, sans-IO.
//!
//! A leg's [`Bridge`] owns one Opus encoder (see below for its rate), the mix the SIP peer
//! hears and every buffer, allocated once. What the leg hears comes as Opus from the forwarder
//! and is decoded by its worker once per publisher for all the worker's legs that hear it
//! ([`crate::media::heard`]).
//!
//! ```text
//! RTP/RTCP datagrams ─▶ SipLeg::handle_datagram                      (the worker, at the tick)
//! every 20 ms:  SipLeg::poll_audio ─▶ Opus encode (once) ─▶ Forwarder::frame  (this participant's stream)
//!               heard publishers' PCM (decoded once, shared) ─▶ sum (saturating) ─▶ SipLeg::send_audio
//! after every input: SipLeg::poll_transmit ─▶ the socket its channel names  (the worker)
//! ```
//!
//! ## What browsers hear
//!
//! When [`SipLeg::poll_audio`] gives `Audio`, `Concealed` or `ComfortNoise`, the frame is
//! Opus-encoded once and sent to the forwarder as this participant's external publisher stream,
//! RTP time advancing 960 (20 ms at 48 kHz) per tick whether or not a frame is sent. On `Held`
//! or `Silence` nothing is sent: the stream goes quiet, which browsers see as muted.
//!
//! G.711 carries nothing above 4 kHz, so a G.711 leg works at 8 kHz throughout: its audio is
//! decoded to 8 kHz and Opus-encoded from there (narrowband Opus, about half the cost of a
//! 16 kHz encode for the same sound), and it hears at 8 kHz (the heard publishers decoded to
//! 8 kHz, mixed at 8 kHz, G.711-encoded): no resampling on the way. AMR-WB legs do the same at
//! 16 kHz. Browsers decode either at 48 kHz.
//!
//! ## What the SIP peer hears
//!
//! Heard streams arrive from the forwarder on a bounded queue (read at the leg's tick) in the
//! leg's band, decoded once per publisher and band and with network loss already concealed there. The leg's
//! [`Mixdown`] queues each publisher's audio and sums 20 ms of each per tick (in 32 bits,
//! saturated once), which the leg sends, or silence when nobody is heard.
//!
//! ## Latency added (for the call record)
//!
//! An estimate, not a measurement: SIP→WebRTC is the jitter buffer's target delay plus one
//! frame (the tick that polls it; encoding is immediate); WebRTC→SIP is one frame (the tick
//! that mixes) plus the negotiated packetization time (ptime: the leg holds frames until a
//! packet is full).
//!
//! ## Allocation
//!
//! Nothing per frame. The Opus frame handed to the forwarder is shared by every subscriber (an
//! `Arc<[u8]>`, encoded once) and its buffer is written again once they have all dropped it
//! ([`SharedFrames`]). A buffer keeps its length, and VBR frames differ in length nearly every
//! time, so each frame is padded (RFC 6716 §3.2.5) to the next multiple of 16 bytes: a few
//! lengths, each with its buffers. (Constant bit rate would give one length, but libopus's
//! SILK then encodes each frame again until it fits: the daemon's CPU rose by a quarter. The
//! rounded lengths also give away less of what is said through SRTP, RFC 6562.) The endpoint id that names the frame is an `Arc<str>`, so naming it costs a
//! reference count. What rtc-srtp allocates is its own. A heard publisher's queue is made on
//! its first frame.

use std::time::{Duration, Instant};

use codecs::opus::{self, MAX_PACKET_BYTES, OpusEncoder, OpusEncoderConfig, OpusError, SampleRate, rtp_duration};
use str0m::media::{Frequency, MediaTime};

use super::params::Negotiated;
use super::router::{ExternalMedia, ExternalSubscriberId, Forwarder};
use crate::ids::EndpointId;
use crate::ids::{ParticipantId, SessionId};
use crate::media::counters::{Counts, MediaCounters};
use crate::media::heard::HeardDecoders;
use crate::media::leg::{AudioStatus, Latching, LegStats, SipLeg};
use crate::media::mixdown::Mixdown;
use crate::media::ports::RtpPair;
use crate::media::resample::{Band, Decimator, NARROW_FRAME, Upsampler, WIDE_FRAME};
use crate::media::shared::SharedFrames;

/// The frame length of the bridge: 20 ms.
pub const TICK: Duration = Duration::from_millis(20);
/// RTP time of one 20 ms Opus frame at 48 kHz.
const OPUS_FRAME_TICKS: u64 = rtp_duration(WIDE_FRAME, SampleRate::Hz16000) as u64;

/// The SIP driver's number for the call a leg carries: opaque here, handed back in
/// [`LegNotice`]s (the same `u64` as the user agent's `CallNo`).
pub type CallNo = u64;

/// What a leg tells its SIP driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegNotice {
    /// No RTP arrived for the inactivity timeout while the peer should be sending (repeated
    /// every [`crate::media::worker::INACTIVITY_CHECK`] while it lasts).
    Inactive {
        /// The call.
        call: CallNo,
    },
    /// The peer sent a DTMF digit (RFC 4733); already passed to the forwarder.
    Dtmf {
        /// The call.
        call: CallNo,
        /// The digit.
        digit: char,
        /// How long it lasted.
        duration: Duration,
    },
    /// The leg failed (a bug: its tick panicked) and was dropped; the call cannot go on.
    Failed {
        /// The call.
        call: CallNo,
    },
}

/// Everything a leg starts from.
#[derive(Debug)]
pub struct LegSetup {
    /// The call.
    pub call: CallNo,
    /// Its participant.
    pub participant: ParticipantId,
    /// The session the leg is in.
    pub session: SessionId,
    /// What the SDP agreed.
    pub negotiated: Box<Negotiated>,
    /// The RTP and RTCP sockets (bound, from the port range); the pair is free again when the
    /// leg ends.
    pub ports: RtpPair,
    /// `media.rtp_timeout`.
    pub rtp_timeout: Duration,
    /// `media.latching`.
    pub latching: Latching,
    /// Bridge mode: the participant's stream outlives the leg, for its next leg (CONTRACT §5).
    pub keep_stream: bool,
    /// Where the leg adds its counters and the time its ticks take (live in `/metrics`).
    pub counters: MediaCounters,
}

/// The leg's part of the call record, given back when the leg ends.
#[derive(Clone, Copy, Debug)]
pub struct LegSummary {
    /// The codec at the end (`PCMU`, `PCMA`, `AMR-WB`).
    pub codec: &'static str,
    /// The SIP leg's counters.
    pub stats: LegStats,
    /// Latency added from the SIP peer to browsers (see the module docs).
    pub latency_to_webrtc: Duration,
    /// Latency added from browsers to the SIP peer (see the module docs).
    pub latency_to_sip: Duration,
    /// Opus frames sent to the forwarder.
    pub frames_published: u64,
    /// Opus frames the forwarder's full queue refused.
    pub frames_dropped: u64,
    /// Ticks in which a heard publisher's frame was late (it added nothing that tick).
    pub heard_late: u64,
    /// Decoded audio dropped because a publisher's queue was full, in frames.
    pub heard_overflow: u64,
}

/// The leg's state around the [`SipLeg`]: codecs, mix and counters. Public for the tests and
/// benches that drive a leg's tick without a worker.
pub struct Bridge {
    call: CallNo,
    participant: ParticipantId,
    session: SessionId,
    forwarder: Forwarder,
    /// This participant's stream in the forwarder, once joined: nothing is published before.
    pub endpoint: Option<EndpointId>,
    ptime_ms: u32,
    /// The band of the leg's codec, which its Opus is encoded from.
    band: Band,
    /// Opened with the first frame to publish: a leg nobody speaks on (or that ends at once)
    /// never pays for an Opus encoder.
    encoder: Option<OpusEncoder>,
    /// This participant's audio of the tick (in `band`), then its Opus frame.
    pcm: [i16; WIDE_FRAME],
    opus: Vec<u8>,
    /// The buffers the Opus frames go out in.
    frames: SharedFrames<u8>,
    rtp_time: u64,
    /// What the SIP peer hears, mixed in the band the leg subscribed in (its band at the start).
    heard: Mixdown,
    heard_band: Band,
    /// From the mix's band to the leg's, once a re-INVITE changed the leg's band.
    convert: Option<Box<Convert>>,
    frames_published: u64,
    frames_dropped: u64,
}

/// The mix in the other band (a leg whose codec changed band mid-call). Boxed whole where it
/// is kept, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Convert {
    Up(Upsampler, [i16; WIDE_FRAME]),
    Down(Decimator, [i16; NARROW_FRAME]),
}

impl Bridge {
    /// The bridge of `call`'s leg (`participant` in `session`), publishing through `forwarder`.
    pub fn new(
        call: CallNo,
        participant: ParticipantId,
        session: SessionId,
        forwarder: Forwarder,
        negotiated: &Negotiated,
    ) -> Self {
        let mut start = [0u8; 4];
        crate::ids::fill_random(&mut start);
        let band = band_of(negotiated);
        Self {
            call,
            participant,
            session,
            forwarder,
            endpoint: None,
            ptime_ms: negotiated.ptime_ms,
            band,
            encoder: None,
            pcm: [0; WIDE_FRAME],
            opus: vec![0; MAX_PACKET_BYTES],
            frames: SharedFrames::new(),
            // RFC 3550 §5.1: a random start.
            rtp_time: u64::from(u32::from_be_bytes(start)),
            heard: Mixdown::in_band(band),
            heard_band: band,
            convert: None,
            frames_published: 0,
            frames_dropped: 0,
        }
    }

    /// New media agreed (re-INVITE, UPDATE): a codec of the other band gets an encoder of its
    /// band; the stream's timeline goes on.
    pub(super) fn update(&mut self, negotiated: &Negotiated) {
        self.ptime_ms = negotiated.ptime_ms;
        let band = band_of(negotiated);
        if band == self.band {
            return;
        }
        // The next frame opens an encoder of the new band; the mix, subscribed in the first
        // band, is converted from now on (or no longer).
        self.band = band;
        self.encoder = None;
        self.convert = match (self.heard_band, band) {
            (Band::Narrow, Band::Wide) => Some(Box::new(Convert::Up(Upsampler::new(), [0; WIDE_FRAME]))),
            (Band::Wide, Band::Narrow) => Some(Box::new(Convert::Down(Decimator::new(), [0; NARROW_FRAME]))),
            _ => None,
        };
    }

    /// The band the leg hears in: its band at the start.
    #[cfg(test)]
    pub(super) fn heard_band(&self) -> Band {
        self.heard_band
    }

    /// A frame or a tone from the forwarder; a frame is decoded in the leg's heard band by the
    /// worker's `decoders` (once for all its legs that hear it).
    pub fn handle_media(&mut self, now: Instant, leg: &mut SipLeg, decoders: &mut HeardDecoders, media: ExternalMedia) {
        match media {
            ExternalMedia::Frame { endpoint, rtp_time, data } => {
                if let Some(pcm) = decoders.decode_in(now, &endpoint, self.heard_band, rtp_time, &data) {
                    self.heard.push(now, endpoint, &pcm);
                }
            }
            ExternalMedia::Dtmf { tone, .. } => {
                if let Err(e) = leg.send_dtmf(now, tone) {
                    tracing::debug!(call = self.call, tone = %tone, error = %e, "DTMF not sent to the SIP peer");
                }
            }
        }
    }

    /// One 20 ms tick at once: [`Bridge::publish`] then [`Bridge::mix`].
    pub fn tick(&mut self, now: Instant, leg: &mut SipLeg) {
        self.publish(now, leg);
        self.mix(now, leg);
    }

    /// The first half of a tick: what the SIP peer says, encoded once, for everyone who hears
    /// this participant.
    pub fn publish(&mut self, now: Instant, leg: &mut SipLeg) {
        let pcm = &mut self.pcm[..self.band.frame()];
        let status = leg.poll_frame(now, pcm);
        let speaking = matches!(status, AudioStatus::Audio | AudioStatus::Concealed | AudioStatus::ComfortNoise);
        if speaking && let Some(endpoint) = &self.endpoint {
            let encoder = match &mut self.encoder {
                Some(encoder) => Ok(encoder),
                None => opus_encoder(self.band).map(|e| self.encoder.insert(e)),
            };
            match encoder.and_then(|encoder| encoder.encode(pcm, &mut self.opus)) {
                Ok(n) => {
                    // Padded to one of a few lengths, so that its buffer can be used again.
                    let n = opus::pad(&mut self.opus, n, opus::padded_length(n)).unwrap_or(n);
                    let time = MediaTime::new(self.rtp_time, Frequency::FORTY_EIGHT_KHZ);
                    if self.forwarder.frame(endpoint.clone(), time, self.frames.share(&self.opus[..n])) {
                        self.frames_published += 1;
                    } else {
                        self.frames_dropped += 1;
                    }
                }
                Err(e) => tracing::debug!(call = self.call, error = %e, "Opus encoding failed"),
            }
        }
        self.rtp_time = self.rtp_time.wrapping_add(OPUS_FRAME_TICKS);
    }

    /// The second half of a tick: what the SIP peer hears, 20 ms of every heard publisher
    /// summed. A worker runs it a little after [`Bridge::publish`], so that what the leg's
    /// session-mates published at the same moment has come back from the forwarder.
    pub fn mix(&mut self, now: Instant, leg: &mut SipLeg) {
        let mix = self.heard.mix(now);
        let out: &[i16] = match (self.convert.as_deref_mut(), mix.len()) {
            (Some(Convert::Up(up, wide)), NARROW_FRAME) => {
                up.process(mix.try_into().expect("a narrow frame"), wide);
                wide
            }
            (Some(Convert::Down(down, narrow)), WIDE_FRAME) => {
                down.process(mix.try_into().expect("a wide frame"), narrow);
                narrow
            }
            _ => mix,
        };
        leg.send_frame(now, out);
    }

    /// A DTMF digit the SIP peer sent, for everyone who hears this participant.
    pub(super) fn dtmf(&self, digit: char) {
        self.forwarder.dtmf(self.session.clone(), self.participant.clone(), digit);
    }

    /// Shows the leg's hold as muted in the SDK (CONTRACT §4).
    pub(super) fn show_hold(&self, leg: &SipLeg) {
        if let Some(endpoint) = &self.endpoint {
            self.forwarder.set_muted(endpoint.clone(), leg.is_on_hold());
        }
    }

    /// The leg's totals for `/metrics`, in the order of [`crate::media::counters::KINDS`].
    pub(super) fn counts(&self, leg: &SipLeg) -> Counts {
        let s = leg.stats();
        [
            s.packets_received,
            s.packets_sent,
            s.packets_lost.max(0) as u64,
            s.auth_failures,
            s.replays,
            s.foreign_source,
            s.relatch_refused,
            s.jitter_buffer.concealed,
            self.frames_published,
            self.frames_dropped,
            self.heard.late,
            self.heard.overflow,
        ]
    }

    pub(super) fn summary(&self, leg: &SipLeg) -> LegSummary {
        let stats = leg.stats();
        LegSummary {
            codec: leg.negotiated().codec.encoding_name(),
            stats,
            latency_to_webrtc: stats.target_delay + TICK,
            latency_to_sip: TICK + Duration::from_millis(u64::from(self.ptime_ms)),
            frames_published: self.frames_published,
            frames_dropped: self.frames_dropped,
            heard_late: self.heard.late,
            heard_overflow: self.heard.overflow,
        }
    }
}

/// The band of the codec agreed: G.711 carries nothing above 4 kHz.
fn band_of(negotiated: &Negotiated) -> Band {
    match negotiated.codec {
        super::params::Codec::Pcmu | super::params::Codec::Pcma => Band::Narrow,
        super::params::Codec::AmrWb(_) => Band::Wide,
    }
}

/// The Opus encoder for a leg's band: 8 kHz input for G.711, 16 kHz for AMR-WB.
fn opus_encoder(band: Band) -> Result<OpusEncoder, OpusError> {
    let rate = match band {
        Band::Narrow => SampleRate::Hz8000,
        Band::Wide => SampleRate::Hz16000,
    };
    OpusEncoder::new(rate, OpusEncoderConfig::default())
}

/// The leg's place in the forwarder, left when the leg ends (or its join is abandoned).
#[derive(Debug)]
pub(super) struct Registration {
    forwarder: Forwarder,
    /// The participant's stream, once published.
    pub(super) endpoint: Option<EndpointId>,
    /// What the leg hears, once subscribed.
    pub(super) subscriber: Option<ExternalSubscriberId>,
    /// Park the stream rather than remove it (bridge mode).
    keep_stream: bool,
}

impl Registration {
    /// Nothing published or subscribed yet.
    pub(super) fn new(forwarder: Forwarder, keep_stream: bool) -> Self {
        Self { forwarder, endpoint: None, subscriber: None, keep_stream }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(endpoint) = self.endpoint.take() {
            if self.keep_stream {
                self.forwarder.park(endpoint);
            } else {
                self.forwarder.unpublish(endpoint);
            }
        }
        if let Some(subscriber) = self.subscriber.take() {
            self.forwarder.unsubscribe(subscriber);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The bridge's tick in virtual time, without sockets: the gateway's leg faces a second
    //! `SipLeg` playing the phone, and the forwarder is its command channel.

    use std::net::SocketAddr;
    use std::sync::Arc;

    use std::time::SystemTime;

    use codecs::opus::OpusDecoder;
    use codecs::pcm::analysis::{dominant_frequency, rms_dbfs, tone};
    use tokio::sync::mpsc;

    use super::*;
    use crate::media::leg::{LegConfig, MTU};
    use crate::media::params::{Codec, Direction};
    use crate::media::rtp::Ssrc;

    const GATEWAY: &str = "192.0.2.1:20000";
    const PHONE: &str = "198.51.100.2:40000";

    fn negotiated(remote: &str, remote_direction: Direction) -> Negotiated {
        Negotiated { remote_direction, ..Negotiated::sendrecv(Codec::Pcmu, remote.parse().unwrap()) }
    }

    fn config(ssrc: u32) -> LegConfig {
        LegConfig {
            ssrc: Ssrc(ssrc),
            initial_sequence: 100,
            initial_timestamp: 1_000,
            cname: format!("leg-{ssrc}"),
            wall_clock: SystemTime::UNIX_EPOCH,
            latching: Default::default(),
        }
    }

    /// The gateway's leg with its bridge, the phone, the forwarder's queue, virtual time.
    struct Harness {
        gateway: SipLeg,
        bridge: Bridge,
        phone: SipLeg,
        forwarder: mpsc::Receiver<super::super::router::LegRequest>,
        start: Instant,
        tick: u32,
        /// A browser publisher's Opus encoder.
        browser: OpusEncoder,
        browser_time: u64,
        /// What the phone played, and the published frames (rtp time, decoded audio).
        phone_heard: Vec<i16>,
        published: Vec<(u64, Vec<i16>)>,
        published_lengths: Vec<usize>,
        published_decoder: OpusDecoder,
        /// The worker's decoding of heard publishers.
        decoders: HeardDecoders,
    }

    impl Harness {
        fn new() -> Self {
            let start = Instant::now();
            let (tx, forwarder) = mpsc::channel(1024);
            let mut bridge = Bridge::new(
                1,
                ParticipantId::from("sip"),
                SessionId::from("s"),
                Forwarder::new(tx),
                &negotiated(PHONE, Direction::SendRecv),
            );
            bridge.endpoint = Some(EndpointId("sip-stream".into()));
            Self {
                gateway: SipLeg::new(start, &negotiated(PHONE, Direction::SendRecv), config(1)).unwrap(),
                bridge,
                phone: SipLeg::new(start, &negotiated(GATEWAY, Direction::SendRecv), config(2)).unwrap(),
                forwarder,
                start,
                tick: 0,
                browser: OpusEncoder::new(SampleRate::Hz16000, OpusEncoderConfig::default()).unwrap(),
                browser_time: 0,
                phone_heard: Vec::new(),
                published: Vec::new(),
                published_lengths: Vec::new(),
                published_decoder: OpusDecoder::new(SampleRate::Hz16000).unwrap(),
                decoders: HeardDecoders::new(),
            }
        }

        fn now(&self) -> Instant {
            self.start + TICK * self.tick
        }

        /// One tick: the phone says `phone_says`; a browser (endpoint `web`) says
        /// `browser_says` when given.
        fn step(&mut self, phone_says: &[i16; WIDE_FRAME], browser_says: Option<&[i16; WIDE_FRAME]>) {
            let now = self.now();
            let mut buf = [0u8; MTU];
            self.phone.send_audio(now, phone_says);
            while let Some(t) = self.phone.poll_transmit(&mut buf) {
                let _ = self.gateway.handle_datagram(now, PHONE.parse::<SocketAddr>().unwrap(), &buf[..t.len]);
            }
            if let Some(pcm) = browser_says {
                let mut opus = [0u8; MAX_PACKET_BYTES];
                let n = self.browser.encode(pcm, &mut opus).unwrap();
                let (endpoint, rtp_time) =
                    (EndpointId("web".into()), MediaTime::new(self.browser_time, Frequency::FORTY_EIGHT_KHZ));
                let frame = ExternalMedia::Frame { endpoint, rtp_time, data: Arc::from(&opus[..n]) };
                self.bridge.handle_media(now, &mut self.gateway, &mut self.decoders, frame);
            }
            self.browser_time += OPUS_FRAME_TICKS;
            self.bridge.tick(now + Duration::from_millis(10), &mut self.gateway);
            while let Some(t) = self.gateway.poll_transmit(&mut buf) {
                let _ = self.phone.handle_datagram(now, GATEWAY.parse::<SocketAddr>().unwrap(), &buf[..t.len]);
            }
            let mut out = [0i16; WIDE_FRAME];
            self.phone.poll_audio(now + Duration::from_millis(15), &mut out);
            self.phone_heard.extend_from_slice(&out);
            while let Ok(command) = self.forwarder.try_recv() {
                if let super::super::router::LegRequest::Frame { endpoint, rtp_time, data } = command {
                    assert_eq!(&*endpoint.0, "sip-stream");
                    let mut pcm = [0i16; 1920];
                    let n = self.published_decoder.decode(&data, &mut pcm).unwrap();
                    self.published.push((rtp_time.numer(), pcm[..n].to_vec()));
                    self.published_lengths.push(data.len());
                }
            }
            self.tick += 1;
        }
    }

    fn frames(hz: f64, count: usize) -> Vec<[i16; WIDE_FRAME]> {
        let pcm = tone(16_000, hz, -6.0, WIDE_FRAME * count);
        pcm.chunks_exact(WIDE_FRAME).map(|c| c.try_into().unwrap()).collect()
    }

    #[test]
    fn the_phone_is_published_once_per_tick_and_hears_the_browser() {
        let mut h = Harness::new();
        let phone = frames(1000.0, 150);
        let browser = frames(440.0, 150);
        for i in 0..150 {
            h.step(&phone[i], Some(&browser[i]));
        }
        // Browsers get the phone's 1 kHz, one Opus frame per tick once the jitter buffer
        // plays, RTP time advancing 960 per frame.
        assert!(h.published.len() >= 140, "{} frames", h.published.len());
        for pair in h.published.windows(2) {
            assert_eq!(pair[1].0.wrapping_sub(pair[0].0), 960);
        }
        let last: Vec<i16> = h.published[h.published.len() - 50..].iter().flat_map(|(_, p)| p.clone()).collect();
        assert!((dominant_frequency(&last, 16_000) - 1000.0).abs() < 2.0);
        assert!(rms_dbfs(&last) > -15.0, "{}", rms_dbfs(&last));
        // The phone hears the browser's 440 Hz through Opus, the mix and PCMU.
        let heard = &h.phone_heard[h.phone_heard.len() - 16_000..];
        assert!((dominant_frequency(heard, 16_000) - 440.0).abs() < 2.0, "{}", dominant_frequency(heard, 16_000));
        assert!(rms_dbfs(heard) > -15.0, "{}", rms_dbfs(heard));
        assert_eq!((h.bridge.heard.late, h.decoders.frames_concealed), (0, 0));
        // Padded to a few lengths, each served by one buffer (nothing held them).
        let mut lengths = h.published_lengths.clone();
        lengths.sort_unstable();
        lengths.dedup();
        assert!(lengths.iter().all(|n| n % opus::PAD_TO == 0) && lengths.len() <= 4, "{lengths:?}");
        assert_eq!(h.bridge.frames.allocated, lengths.len() as u64);
    }

    #[test]
    fn a_lost_frame_is_concealed_and_a_publisher_that_stops_is_forgotten() {
        let mut h = Harness::new();
        let silence = [0i16; WIDE_FRAME];
        let browser = frames(440.0, 200);
        for (i, frame) in browser.iter().enumerate().take(50) {
            // Frame 30 never arrives.
            h.step(&silence, (i != 30).then_some(frame));
        }
        // Concealed once where it is decoded; the leg's tick found its queue dry once, and the
        // concealed frame arriving with frame 31 keeps the mix continuous from then on.
        assert_eq!(h.decoders.frames_concealed, 1);
        assert_eq!(h.bridge.heard.late, 1);
        assert_eq!(h.bridge.heard.len(), 1);
        let after = &h.phone_heard[h.phone_heard.len() - 8 * WIDE_FRAME..];
        assert!((dominant_frequency(after, 16_000) - 440.0).abs() < 3.0);
        // Silent for a second: it is forgotten, and the phone hears silence.
        for _ in 0..(crate::media::mixdown::PUBLISHER_GONE.as_millis() / TICK.as_millis() + 2) {
            h.step(&silence, None);
        }
        assert!(h.bridge.heard.is_empty());
        let tail = &h.phone_heard[h.phone_heard.len() - 3_200..];
        assert!(rms_dbfs(tail) < -60.0, "{}", rms_dbfs(tail));
    }

    #[test]
    fn a_leg_whose_codec_changes_band_keeps_hearing_and_being_heard() {
        let mut h = Harness::new();
        let phone = frames(1000.0, 300);
        let browser = frames(440.0, 300);
        for i in 0..100 {
            h.step(&phone[i], Some(&browser[i]));
        }
        assert_eq!(h.bridge.heard_band(), Band::Narrow);
        // A re-INVITE moves the call from PCMU to AMR-WB: the leg subscribed at 8 kHz, and its
        // mix is now converted up for the 16 kHz codec.
        let amr = |remote: &str| {
            Negotiated::sendrecv(Codec::AmrWb(crate::media::params::AmrWbParams::new(false)), remote.parse().unwrap())
        };
        let now = h.now();
        h.gateway.update(now, &amr(PHONE)).unwrap();
        h.bridge.update(&amr(PHONE));
        h.phone.update(now, &amr(GATEWAY)).unwrap();
        let published_before = h.published.len();
        for i in 100..300 {
            h.step(&phone[i], Some(&browser[i]));
        }
        assert_eq!(h.bridge.heard_band(), Band::Narrow, "the subscription stays");
        let heard = &h.phone_heard[h.phone_heard.len() - 16_000..];
        assert!((dominant_frequency(heard, 16_000) - 440.0).abs() < 2.0, "{}", dominant_frequency(heard, 16_000));
        assert!(rms_dbfs(heard) > -15.0, "{}", rms_dbfs(heard));
        // Browsers still get the phone, now from a 16 kHz encoder.
        assert!(h.published.len() > published_before + 150);
        let last: Vec<i16> = h.published[h.published.len() - 50..].iter().flat_map(|(_, p)| p.clone()).collect();
        assert!((dominant_frequency(&last, 16_000) - 1000.0).abs() < 2.0);
    }

    #[test]
    fn a_held_leg_publishes_nothing_and_resumes_on_the_same_timeline() {
        let mut h = Harness::new();
        let phone = frames(1000.0, 300);
        for frame in &phone[..50] {
            h.step(frame, None);
        }
        let before = h.published.len();
        assert!(before > 40);
        let last_time = h.published[before - 1].0;
        // The phone holds (sendonly): nothing is published while it keeps sending.
        h.gateway.update(h.now(), &negotiated(PHONE, Direction::SendOnly)).unwrap();
        for frame in &phone[50..150] {
            h.step(frame, None);
        }
        assert_eq!(h.published.len(), before, "a held leg publishes nothing");
        h.gateway.update(h.now(), &negotiated(PHONE, Direction::SendRecv)).unwrap();
        for frame in &phone[150..250] {
            h.step(frame, None);
        }
        assert!(h.published.len() > before + 80);
        // RTP time kept running through the hold: the gap is a whole number of frames.
        let gap = h.published[before].0 - last_time;
        assert_eq!(gap % 960, 0);
        assert!(gap >= 100 * 960, "{gap}");
    }
}
