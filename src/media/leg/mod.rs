//! The media pipeline of one SIP call, sans-IO: [`SipLeg`].
//!
//! Built from the SDP's [`Negotiated`], it turns datagrams from the peer into 20 ms of 16 kHz
//! audio and 16 kHz audio into datagrams for the peer:
//!
//! ```text
//! handle_datagram ─▶ demux (RFC 5761) ─▶ latch check ─▶ SRTP/SRTCP unprotect ─▶ RTP/RTCP parse
//!        ─▶ G.711 bytes | RFC 4867 frames (+CMR) | RFC 4733 events | CN ─▶ jitter buffer
//! poll_audio (every 20 ms) ─▶ jitter buffer ─▶ decode / PLC / comfort noise ─▶ 8→16 kHz ─▶ 320 samples
//! send_audio (every 20 ms) ─▶ 16→8 kHz ─▶ encode ─▶ packetize (ptime) ─▶ RTP ─▶ SRTP ─▶ poll_transmit
//! handle_timeout ─▶ RTCP SR/RR + SDES ─▶ SRTCP ─▶ poll_transmit
//! ```
//!
//! ## Driving it
//!
//! Inputs: [`SipLeg::handle_datagram`] for every datagram received on the leg's RTP or RTCP
//! socket, [`SipLeg::send_audio`] and [`SipLeg::poll_audio`] once per 20 ms tick (the mix for
//! this leg in, the leg's audio out), [`SipLeg::send_dtmf`], [`SipLeg::update`] after a
//! re-INVITE or UPDATE, [`SipLeg::handle_timeout`] when [`SipLeg::poll_timeout`] is due.
//! After each input, drain [`SipLeg::poll_transmit`] (datagrams, each naming the socket to
//! send from) and [`SipLeg::poll_event`] (DTMF) until they return `None`, then re-arm the
//! timer with [`SipLeg::poll_timeout`]. `now` is always an argument; time going backwards is
//! ignored.
//!
//! ## Symmetric RTP (latching)
//!
//! Until a packet arrives we send to the SDP address. The first packet from any source that
//! *authenticates* (SRTP) or, without SRTP, parses as RTP of a negotiated payload type,
//! latches the RTP destination to its source; RTCP latches the same way on its own. After that,
//! packets from other sources are dropped without being decrypted ([`DatagramError::ForeignSource`])
//! until the latched source has been silent for [`RELATCH_AFTER`]; then the next valid packet
//! from a *plausible* new source re-latches (NAT rebinding, a media server switching), as
//! [`Latching`] says. Plain RTP proves nothing about its sender, so by default ([`Latching::Ip`])
//! only a source on the IP address the SDP signalled or the first latch found may take over (a
//! NAT's new port); SRTP that authenticates comes from the key holder and may come from
//! anywhere. Implausible sources are dropped and counted ([`LegStats::relatch_refused`]). A
//! re-INVITE with a new address ([`SipLeg::update`]) clears the latches.
//!
//! ## Hold
//!
//! The peer holds when its direction does not receive (`sendonly`, `inactive`, or a
//! `c=0.0.0.0` which the SDP layer reads as `sendonly`). While it holds, [`SipLeg::poll_audio`]
//! returns silence ([`AudioStatus::Held`]), nothing is sent, received packets are counted but
//! not played, and [`SipLeg::is_inactive`] is false. On resume the jitter buffer starts over.
//!
//! ## Allocation
//!
//! Buffers are allocated in [`SipLeg::new`] (and again in [`SipLeg::update`] when the codec
//! changes): nothing is allocated per packet or frame, except inside rtc-srtp, which returns
//! each packet in a fresh buffer (see [`crate::media::srtp`]).

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use codecs::amrwb::{
    AmrWbDecoder, AmrWbEncoder, AmrWbError, FRAME_SAMPLES, FrameQuality, FrameRef, FrameType, MAX_FRAME_BYTES, Mode,
};
use codecs::g711::{self, Law};
use codecs::rfc4733::{Event, ReceivedEvent, TelephoneEventReceiver, TelephoneEventSender};
use codecs::rfc4867::{
    Cmr, DepacketizeError, Depacketizer, Layout, MAX_FRAMES_PER_PACKET, ModeSet, PacketFrames, Packetizer,
    PayloadConfig,
};
use thiserror::Error;

use super::params::{Codec, Negotiated};
use crate::media::jitter::{Frame, FrameKind, JitterBuffer, JitterConfig, JitterStats, Playout, SLOT_BYTES};
use crate::media::resample::{Band, Decimator, NARROW_FRAME, Upsampler, WIDE_FRAME};
use crate::media::rtcp::{self, ReceiveStats, Report, RtcpError, SenderInfo, is_rtcp, ntp_time, parse_compound};
use crate::media::rtp::{ClockRate, RTP_HEADER_LEN, RtpError, RtpHeader, RtpPacket, Ssrc};
use crate::media::srtp::{SrtpError, SrtpSession};

mod codec;
mod latch;
mod queues;

use codec::{CodecState, PayloadKind};
use latch::{Admission, Latch};
use queues::{DigitQueue, EventQueue, TxQueue};

/// How long the latched source must be silent before another source may take over.
pub const RELATCH_AFTER: Duration = Duration::from_secs(1);

/// Which new sources may take over a latched leg after [`RELATCH_AFTER`] of silence
/// (`media.latching`); see the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Latching {
    /// Only the address the SDP signalled, port included: no NAT rebinding.
    Strict,
    /// A source on the signalled or the first latched IP address (any port), or SRTP that
    /// authenticates.
    #[default]
    Ip,
    /// Any source whose packet is valid (authenticates, or parses as a negotiated payload).
    Any,
}
/// Largest datagram the leg writes (and the size `poll_transmit` callers should offer).
pub const MTU: usize = 1500;
/// Nominal RTCP report interval (RFC 3550 §6.2: 5 s minimum); each is randomized by ±50 %.
pub const RTCP_INTERVAL: Duration = Duration::from_secs(5);
/// Duration of a DTMF digit we send.
pub const DTMF_DURATION: Duration = Duration::from_millis(100);
/// Digits that may wait behind the one being sent.
pub const DTMF_QUEUE: usize = 32;
/// Datagrams held for `poll_transmit`; older ones are dropped (and counted) beyond that.
pub const TX_QUEUE: usize = 16;
/// Quiet 20 ms frames between two DTMF digits we send.
pub const DTMF_GAP_FRAMES: u32 = 3;
/// Volume of the DTMF digits we send, in -dBm0 (RFC 4733 §2.5.2.2 range 0–63).
const DTMF_VOLUME: u8 = 10;
/// Most AMR-WB frames we put in one packet (ptime 60).
const MAX_FRAMES_OUT: usize = 3;

/// Which socket a datagram belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// The RTP socket (also RTCP with rtcp-mux).
    Rtp,
    /// The RTCP socket (RTP port + 1, without rtcp-mux).
    Rtcp,
}

/// A datagram to send, written into the caller's buffer by [`SipLeg::poll_transmit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// Bytes written.
    pub len: usize,
    /// The socket to send it from.
    pub channel: Channel,
}

/// What [`SipLeg::poll_audio`] produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioStatus {
    /// Decoded audio.
    Audio,
    /// Concealment of a lost or late frame (codec PLC).
    Concealed,
    /// Comfort noise during the peer's DTX (or silence when it sent no level).
    ComfortNoise,
    /// Silence: nothing received yet, the buffer is filling, or the stream stopped.
    Silence,
    /// Silence because the peer holds the call.
    Held,
}

/// Events for the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegEvent {
    /// The peer started a DTMF digit (RFC 4733).
    DtmfBegan {
        /// `0`–`9`, `*`, `#`, `A`–`D`.
        digit: char,
    },
    /// The peer's DTMF digit ended.
    DtmfEnded {
        /// The digit.
        digit: char,
        /// How long it lasted.
        duration: Duration,
    },
}

/// What [`SipLeg::handle_datagram`] did with an accepted datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// Audio (or comfort noise) for the jitter buffer.
    Audio,
    /// A telephone-event packet.
    TelephoneEvent,
    /// An RTCP compound packet.
    Rtcp,
    /// Valid, but not played: the peer holds the call or we do not receive.
    Ignored,
}

/// Why a datagram was dropped. Each is also counted in [`LegStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum DatagramError {
    /// From a source other than the latched one (see the module docs).
    #[error("datagram from {from}, latched to another source")]
    ForeignSource {
        /// Its source.
        from: SocketAddr,
    },
    /// SRTP or SRTCP refused it.
    #[error(transparent)]
    Srtp(#[from] SrtpError),
    /// Not an RTP packet.
    #[error(transparent)]
    Rtp(#[from] RtpError),
    /// Not an RTCP compound packet.
    #[error(transparent)]
    Rtcp(#[from] RtcpError),
    /// A payload type the SDP did not negotiate.
    #[error("RTP payload type {payload_type} was not negotiated")]
    UnknownPayloadType {
        /// The payload type.
        payload_type: u8,
    },
    /// An AMR-WB payload that does not read (RFC 4867).
    #[error(transparent)]
    AmrWbPayload(#[from] DepacketizeError),
    /// A telephone-event payload that does not read, or a sequence number out of line.
    #[error("payload type {payload_type} payload refused")]
    BadPayload {
        /// The payload type.
        payload_type: u8,
    },
}

/// Why a leg could not be built or changed, or an API call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum LegError {
    /// The AMR-WB library failed to open a codec.
    #[error(transparent)]
    AmrWb(#[from] AmrWbError),
    /// The SRTP keys are unusable.
    #[error(transparent)]
    Srtp(#[from] SrtpError),
    /// The negotiated profile is secure but no keys came with it.
    #[error("secure RTP profile without SRTP keys")]
    MissingKeys,
    /// `send_dtmf` without telephone-event in the SDP.
    #[error("telephone-event was not negotiated")]
    NoTelephoneEvent,
    /// `send_dtmf` with a character that is not a DTMF digit.
    #[error("{digit:?} is not a DTMF digit")]
    InvalidDigit {
        /// The character.
        digit: char,
    },
    /// `send_dtmf` with [`DTMF_QUEUE`] digits already waiting.
    #[error("{DTMF_QUEUE} DTMF digits already queued")]
    DtmfQueueFull,
}

/// Counters and gauges for the call record.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LegStats {
    /// RTP packets accepted.
    pub packets_received: u64,
    /// Bytes of accepted RTP datagrams (as received, SRTP included).
    pub bytes_received: u64,
    /// RTP packets sent.
    pub packets_sent: u64,
    /// Bytes of RTP datagrams sent.
    pub bytes_sent: u64,
    /// RTCP packets accepted.
    pub rtcp_received: u64,
    /// RTCP packets sent.
    pub rtcp_sent: u64,
    /// Cumulative packets lost from the peer (RFC 3550 A.3).
    pub packets_lost: i64,
    /// Fraction lost in our last report, in 1/256.
    pub fraction_lost: u8,
    /// Interarrival jitter of the peer's stream (RFC 3550 A.8).
    pub jitter: Duration,
    /// What the peer last reported about our stream: fraction lost in 1/256.
    pub remote_fraction_lost: Option<u8>,
    /// What the peer last reported: cumulative lost.
    pub remote_packets_lost: Option<i32>,
    /// Round-trip time from the peer's last report block (RFC 3550 §6.4.1).
    pub round_trip: Option<Duration>,
    /// Packets refused by SRTP/SRTCP authentication.
    pub auth_failures: u64,
    /// Replayed SRTP/SRTCP packets refused.
    pub replays: u64,
    /// Datagrams that are not RTP or RTCP, or whose payload does not read.
    pub malformed: u64,
    /// RTP packets with a payload type not negotiated.
    pub unknown_payload_type: u64,
    /// Datagrams from a source other than the latched one.
    pub foreign_source: u64,
    /// Datagrams from a new source, after the latched one went quiet, that [`Latching`] did not
    /// let take over (also counted in `foreign_source`).
    pub relatch_refused: u64,
    /// Times the RTP source latched to a new address after the first.
    pub relatches: u64,
    /// Times the peer's SSRC changed.
    pub ssrc_changes: u64,
    /// DTMF digits received (ended).
    pub dtmf_received: u64,
    /// DTMF digits sent.
    pub dtmf_sent: u64,
    /// Datagrams dropped because `poll_transmit` was not drained.
    pub tx_dropped: u64,
    /// The jitter buffer's counters (played, concealed, late, ...).
    pub jitter_buffer: JitterStats,
    /// The jitter buffer's target delay.
    pub target_delay: Duration,
}

/// Per-leg settings that do not come from the SDP. Randomness is passed in (sans-IO).
#[derive(Clone, Debug)]
pub struct LegConfig {
    /// Our SSRC (random, RFC 3550 §8).
    pub ssrc: Ssrc,
    /// First sequence number (random, RFC 3550 §5.1).
    pub initial_sequence: u16,
    /// First timestamp (random, RFC 3550 §5.1).
    pub initial_timestamp: u32,
    /// Our RTCP CNAME (RFC 7022: random per call is fine).
    pub cname: String,
    /// The wall-clock time at the `now` given to [`SipLeg::new`], for NTP times in SRs.
    pub wall_clock: SystemTime,
    /// Which sources may take over after the latched one went quiet (`media.latching`).
    pub latching: Latching,
}

impl LegConfig {
    /// Random SSRC, sequence, timestamp and CNAME from the system's random source.
    pub fn random(wall_clock: SystemTime) -> Self {
        let mut bytes = [0u8; 10];
        crate::ids::fill_random(&mut bytes);
        Self {
            ssrc: Ssrc(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
            initial_sequence: u16::from_be_bytes([bytes[4], bytes[5]]),
            initial_timestamp: u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]),
            cname: crate::ids::random_id(16),
            wall_clock,
            latching: Latching::default(),
        }
    }
}

/// The sans-IO media pipeline of one SIP call; see the module docs for the drive contract.
pub struct SipLeg {
    config: LegConfig,
    started: Instant,
    negotiated: Negotiated,
    codec: CodecState,
    clock: ClockRate,
    srtp: Option<SrtpSession>,
    jitter: JitterBuffer,
    rtp_latch: Latch,
    rtcp_latch: Latch,
    rx_stats: Option<ReceiveStats>,
    last_received: Instant,
    te_receiver: TelephoneEventReceiver,
    te_sender: Option<TelephoneEventSender>,
    dtmf_queue: DigitQueue,
    dtmf_gap: u32,
    events: EventQueue,
    // Sending.
    tx_sequence: u16,
    tx_timestamp: u32,
    tx_marker: bool,
    sent_since_report: bool,
    last_sent: Option<(Instant, u32)>,
    next_rtcp: Instant,
    rng: u64,
    tx: TxQueue,
    scratch: Vec<u8>,
    rx_buf: Vec<u8>,
    /// The 16 kHz view of a narrowband leg ([`Self::poll_audio`], [`Self::send_audio`]).
    wide: WideView,
    stats: LegStats,
}

/// What turns a G.711 leg's 8 kHz audio into 16 kHz and back, for callers that want 16 kHz.
struct WideView {
    up: Upsampler,
    down: Decimator,
}

impl std::fmt::Debug for SipLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipLeg")
            .field("ssrc", &self.config.ssrc)
            .field("codec", &self.negotiated.codec)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl SipLeg {
    /// A leg for what the SDP agreed; opens the codecs and SRTP contexts.
    pub fn new(now: Instant, negotiated: &Negotiated, config: LegConfig) -> Result<Self, LegError> {
        let codec = CodecState::new(negotiated)?;
        let clock = codec_clock(negotiated);
        let srtp = srtp_session(negotiated)?;
        let rng = u64::from(config.ssrc.0) | 1;
        let mut leg = Self {
            started: now,
            codec,
            clock,
            srtp,
            jitter: JitterBuffer::new(jitter_config(negotiated, clock)),
            rtp_latch: Latch::default(),
            rtcp_latch: Latch::default(),
            rx_stats: None,
            last_received: now,
            te_receiver: TelephoneEventReceiver::new(),
            te_sender: te_sender(negotiated),
            dtmf_queue: DigitQueue::default(),
            dtmf_gap: 0,
            events: EventQueue::default(),
            tx_sequence: config.initial_sequence,
            tx_timestamp: config.initial_timestamp,
            tx_marker: true,
            sent_since_report: false,
            last_sent: None,
            next_rtcp: now,
            rng,
            tx: TxQueue::new(),
            scratch: vec![0; MTU],
            rx_buf: vec![0; MTU],
            wide: WideView { up: Upsampler::new(), down: Decimator::new() },
            stats: LegStats::default(),
            negotiated: negotiated.clone(),
            config,
        };
        // RFC 3550 §6.2: the first report after half an interval.
        leg.next_rtcp = now + leg.rtcp_interval() / 2;
        Ok(leg)
    }

    /// Applies a new offer/answer (re-INVITE, UPDATE): address, codec, keys, direction.
    pub fn update(&mut self, now: Instant, negotiated: &Negotiated) -> Result<(), LegError> {
        let old = &self.negotiated;
        // 1. Codec: a new kind or payload type starts the codec and playout over.
        if !old.codec.same_kind(&negotiated.codec) || old.payload_type != negotiated.payload_type {
            self.codec = CodecState::new(negotiated)?;
            self.clock = codec_clock(negotiated);
            self.jitter = JitterBuffer::new(jitter_config(negotiated, self.clock));
            self.rx_stats = None;
            self.tx_marker = true;
        } else if let (CodecState::AmrWb(amr), Codec::AmrWb(params)) = (&mut self.codec, &negotiated.codec) {
            amr.configure(params.mode_set.as_deref(), negotiated.ptime_ms, params.octet_align);
        } else if let CodecState::G711(g711) = &mut self.codec {
            g711.ptime_samples = ptime_samples(negotiated);
        }
        if old.telephone_event != negotiated.telephone_event || old.ptime_ms != negotiated.ptime_ms {
            self.te_sender = te_sender(negotiated);
        }
        // 2. Keys: new contexts only when the keys changed (RFC 4568 §7.1.4).
        if old.srtp != negotiated.srtp || old.profile.is_secure() != negotiated.profile.is_secure() {
            self.srtp = srtp_session(negotiated)?;
        }
        // 3. Addresses: a new one clears the latch.
        if old.remote_rtp != negotiated.remote_rtp {
            self.rtp_latch = Latch::default();
        }
        if old.remote_rtcp != negotiated.remote_rtcp || old.remote_rtp != negotiated.remote_rtp {
            self.rtcp_latch = Latch::default();
        }
        // 4. Direction: resuming starts playout over and the inactivity clock anew.
        let was_held = self.is_on_hold();
        self.negotiated = negotiated.clone();
        if was_held && !self.is_on_hold() {
            self.jitter.reset();
            self.last_received = now;
            self.tx_marker = true;
        }
        if !self.expects_media() {
            self.last_received = now;
        }
        Ok(())
    }

    /// Feeds one datagram received on the leg's RTP or RTCP socket from `from`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<Received, DatagramError> {
        let result = if is_rtcp(datagram) {
            self.handle_rtcp(now, from, datagram)
        } else {
            self.handle_rtp(now, from, datagram)
        };
        if let Err(error) = &result {
            self.count(error);
        }
        result
    }

    /// The band the leg's audio is in: 8 kHz for G.711, 16 kHz for AMR-WB.
    pub fn band(&self) -> Band {
        self.codec.band()
    }

    /// The leg's audio for this 20 ms tick, in its band ([`Self::band`]), into `out` (that
    /// many samples: [`Band::frame`]; another length gets silence).
    pub fn poll_frame(&mut self, now: Instant, out: &mut [i16]) -> AudioStatus {
        if self.is_on_hold() {
            out.fill(0);
            return AudioStatus::Held;
        }
        if !self.negotiated.local_direction.receives() || out.len() != self.band().frame() {
            out.fill(0);
            return AudioStatus::Silence;
        }
        let playout = self.jitter.poll(now);
        let status = self.codec.play(playout, out);
        self.stats.jitter_buffer = self.jitter.stats();
        status
    }

    /// The leg's audio for this 20 ms tick at 16 kHz whatever its band, into `out`.
    pub fn poll_audio(&mut self, now: Instant, out: &mut [i16; WIDE_FRAME]) -> AudioStatus {
        if self.band() == Band::Wide {
            return self.poll_frame(now, out);
        }
        let mut pcm8 = [0; NARROW_FRAME];
        let status = self.poll_frame(now, &mut pcm8);
        self.wide.up.process(&pcm8, out);
        status
    }

    /// The next DTMF event received, if any.
    pub fn poll_event(&mut self) -> Option<LegEvent> {
        self.events.pop()
    }

    /// Encodes this tick's 20 ms of 16 kHz audio for the peer (the mix this leg hears) and
    /// queues the packets that are due. While a DTMF digit is being sent, its RFC 4733 packets
    /// replace the audio.
    pub fn send_audio(&mut self, now: Instant, pcm: &[i16; WIDE_FRAME]) {
        if self.band() == Band::Wide {
            return self.send_frame(now, pcm);
        }
        let mut pcm8 = [0; NARROW_FRAME];
        self.wide.down.process(pcm, &mut pcm8);
        self.send_frame(now, &pcm8);
    }

    /// [`Self::send_audio`] in the leg's band ([`Self::band`]): `pcm` is 20 ms of it (another
    /// length is counted as a dropped frame).
    pub fn send_frame(&mut self, now: Instant, pcm: &[i16]) {
        let samples = self.clock.ticks(Duration::from_millis(20)) as u32;
        let timestamp = self.tx_timestamp;
        self.tx_timestamp = self.tx_timestamp.wrapping_add(samples);
        if !self.sends() {
            self.tx_marker = true;
            return;
        }
        // 1. DTMF first: start the next queued digit after a short gap, send its packet.
        if self.send_telephone_event(now, timestamp) {
            return;
        }
        // 2. Audio: encode and packetize; the codec says when a packet is complete.
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut marker = self.tx_marker;
        let mut start = 0;
        loop {
            let ready = self.codec.encode(pcm, timestamp, start, &mut scratch[RTP_HEADER_LEN..]);
            start += 1;
            match ready {
                Ok(Some((ts, len))) => {
                    let pt = self.negotiated.payload_type;
                    self.send_rtp(now, &mut scratch, pt, marker, ts, len);
                    marker = false;
                }
                Ok(None) => break,
                Err(_) => {
                    // Our own encoder or packetizer refused: a bug, counted as a drop.
                    self.stats.tx_dropped += 1;
                    break;
                }
            }
        }
        self.tx_marker = marker;
        self.scratch = scratch;
    }

    /// Queues a DTMF digit to send as RFC 4733 events ([`DTMF_DURATION`] each, three end
    /// packets, [`DTMF_GAP_FRAMES`] quiet ticks between digits). The events are sent from
    /// [`Self::send_audio`] in place of audio. Their timestamps are the audio's; RFC 4733 §2.1
    /// wants the event clock to be the codec's, which every offer we accept has.
    pub fn send_dtmf(&mut self, _now: Instant, digit: char) -> Result<(), LegError> {
        if self.te_sender.is_none() {
            return Err(LegError::NoTelephoneEvent);
        }
        let event = Event::from_dtmf(digit).ok_or(LegError::InvalidDigit { digit })?;
        if !self.dtmf_queue.push(event) {
            return Err(LegError::DtmfQueueFull);
        }
        Ok(())
    }

    /// The next datagram to send, written into `buf` (offer [`MTU`] bytes).
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        self.tx.pop(buf)
    }

    /// When [`Self::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let rtcp = Some(self.next_rtcp);
        match self.te_receiver.poll_timeout() {
            Some(te) => rtcp.map(|r| r.min(te)),
            None => rtcp,
        }
    }

    /// Runs what is due: RTCP reports, the end of a DTMF digit whose end packets were lost.
    /// Early or repeated calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.te_receiver.handle_timeout(now);
        self.drain_te_events();
        if now >= self.next_rtcp {
            self.send_report(now);
            self.next_rtcp = now + self.rtcp_interval();
        }
    }

    /// Whether no RTP came from the peer for `timeout` while it should be sending: never
    /// while the peer holds or does not send (RFC 3264 directions).
    pub fn is_inactive(&self, now: Instant, timeout: Duration) -> bool {
        self.expects_media() && now.saturating_duration_since(self.last_received) >= timeout
    }

    /// Whether the peer holds the call (its direction does not receive).
    pub fn is_on_hold(&self) -> bool {
        !self.negotiated.remote_direction.receives()
    }

    /// What the SDP agreed, as last updated.
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> Ssrc {
        self.config.ssrc
    }

    /// The counters.
    pub fn stats(&self) -> LegStats {
        let mut stats = self.stats;
        if let Some(rx) = &self.rx_stats {
            stats.packets_lost = rx.cumulative_lost();
            stats.jitter = rx.jitter();
        }
        stats.jitter_buffer = self.jitter.stats();
        stats.target_delay = self.jitter.target_delay();
        stats
    }

    /// Whether a datagram from `from` on `channel` may be looked at (see the module docs);
    /// refusals are counted.
    fn admit(&mut self, channel: Channel, now: Instant, from: SocketAddr, secure: bool) -> Result<(), DatagramError> {
        let (latch, signalled) = match channel {
            Channel::Rtp => (&self.rtp_latch, self.negotiated.remote_rtp),
            Channel::Rtcp if self.negotiated.rtcp_mux => (&self.rtcp_latch, self.negotiated.remote_rtp),
            Channel::Rtcp => (&self.rtcp_latch, self.signalled_rtcp()),
        };
        match latch.admits(now, from, self.config.latching, signalled, secure) {
            Admission::Admitted => Ok(()),
            Admission::Latched => Err(DatagramError::ForeignSource { from }),
            Admission::Implausible => {
                self.stats.relatch_refused += 1;
                Err(DatagramError::ForeignSource { from })
            }
        }
    }

    fn handle_rtp(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Result<Received, DatagramError> {
        // 1. Source: the latched one, or any while nothing is latched, or a plausible one when
        //    it went quiet.
        let secure = self.srtp.is_some();
        self.admit(Channel::Rtp, now, from, secure)?;
        // 2. Authenticate and decrypt into our buffer, or read in place.
        // (The buffer is taken out and put back so `self` stays free; `take` allocates nothing.)
        let mut rx_buf = std::mem::take(&mut self.rx_buf);
        let result = (|| -> Result<Received, DatagramError> {
            let plain: &[u8] = match &mut self.srtp {
                Some(srtp) => {
                    let n = srtp.unprotect_rtp(datagram, &mut rx_buf[..])?;
                    &rx_buf[..n]
                }
                None => datagram,
            };
            let packet = RtpPacket::parse(plain)?;
            self.handle_packet(now, from, datagram.len(), &packet)
        })();
        self.rx_buf = rx_buf;
        result
    }

    /// Steps after the packet is authentic and parsed.
    fn handle_packet(
        &mut self,
        now: Instant,
        from: SocketAddr,
        wire_len: usize,
        packet: &RtpPacket<'_>,
    ) -> Result<Received, DatagramError> {
        // 3. A negotiated payload type, or the packet proves nothing.
        let pt = packet.payload_type;
        let kind = if pt == self.negotiated.payload_type {
            PayloadKind::Audio
        } else if self.negotiated.telephone_event.is_some_and(|(te, _)| te == pt) {
            PayloadKind::TelephoneEvent
        } else if self.negotiated.comfort_noise == Some(pt) {
            PayloadKind::ComfortNoise
        } else {
            return Err(DatagramError::UnknownPayloadType { payload_type: pt });
        };
        // 4. Latch, count, and follow SSRC changes.
        if self.rtp_latch.latch(now, from) {
            self.stats.relatches += 1;
        }
        self.last_received = now;
        self.stats.packets_received += 1;
        self.stats.bytes_received += wire_len as u64;
        match &mut self.rx_stats {
            Some(stats) if stats.ssrc() == packet.ssrc => {}
            other => {
                if other.is_some() {
                    self.stats.ssrc_changes += 1;
                }
                *other = Some(ReceiveStats::new(packet.ssrc, self.clock, packet.sequence, now));
            }
        }
        if let Some(stats) = &mut self.rx_stats
            && !stats.update(now, packet.sequence, packet.timestamp)
        {
            return Err(DatagramError::BadPayload { payload_type: pt });
        }
        if self.is_on_hold() || !self.negotiated.local_direction.receives() {
            return Ok(Received::Ignored);
        }
        // 5. Into the jitter buffer, or the event receiver.
        match kind {
            PayloadKind::TelephoneEvent => {
                self.te_receiver
                    .handle_packet(now, packet.timestamp, packet.payload)
                    .map_err(|_| DatagramError::BadPayload { payload_type: pt })?;
                self.drain_te_events();
                Ok(Received::TelephoneEvent)
            }
            PayloadKind::ComfortNoise => {
                self.jitter.packet(now, packet.ssrc, packet.timestamp);
                let data = &packet.payload[..packet.payload.len().min(SLOT_BYTES)];
                self.jitter.insert(packet.timestamp, Frame::Coded { kind: FrameKind::Comfort, tag: 0, data });
                Ok(Received::Audio)
            }
            PayloadKind::Audio => {
                self.codec.depacketize(&mut self.jitter, now, packet)?;
                Ok(Received::Audio)
            }
        }
    }

    fn handle_rtcp(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Result<Received, DatagramError> {
        let secure = self.srtp.is_some();
        self.admit(Channel::Rtcp, now, from, secure)?;
        let mut rx_buf = std::mem::take(&mut self.rx_buf);
        let result = (|| -> Result<Received, DatagramError> {
            let plain: &[u8] = match &mut self.srtp {
                Some(srtp) => {
                    let n = srtp.unprotect_rtcp(datagram, &mut rx_buf[..])?;
                    &rx_buf[..n]
                }
                None => datagram,
            };
            let summary = parse_compound(plain, self.config.ssrc)?;
            self.rtcp_latch.latch(now, from);
            self.stats.rtcp_received += 1;
            if let (Some(info), Some(stats)) = (summary.sender_info, &mut self.rx_stats)
                && summary.sender_ssrc == Some(stats.ssrc())
            {
                stats.sender_report(now, info.ntp);
            }
            if let Some(block) = summary.report {
                self.stats.remote_fraction_lost = Some(block.fraction_lost);
                self.stats.remote_packets_lost = Some(block.cumulative_lost);
                let now_ntp = ntp_time(self.wall_clock(now));
                self.stats.round_trip = rtcp::round_trip(&block, now_ntp).or(self.stats.round_trip);
            }
            Ok(Received::Rtcp)
        })();
        self.rx_buf = rx_buf;
        result
    }

    fn send_telephone_event(&mut self, now: Instant, timestamp: u32) -> bool {
        let Some(sender) = &mut self.te_sender else {
            return false;
        };
        if sender.is_idle() {
            if self.dtmf_gap > 0 {
                self.dtmf_gap -= 1;
            } else if let Some(event) = self.dtmf_queue.pop() {
                let ms = DTMF_DURATION.as_millis() as u32;
                // Cannot be busy: checked idle above.
                let _ = sender.start(timestamp, event, DTMF_VOLUME, ms);
                self.stats.dtmf_sent += 1;
            }
        }
        let Some(packet) = sender.poll_packet() else {
            return false;
        };
        if sender.is_idle() {
            self.dtmf_gap = DTMF_GAP_FRAMES;
        }
        let Some((pt, _)) = self.negotiated.telephone_event else {
            return false;
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        let bytes = packet.payload.to_bytes();
        scratch[RTP_HEADER_LEN..RTP_HEADER_LEN + 4].copy_from_slice(&bytes);
        self.send_rtp(now, &mut scratch, pt, packet.marker, packet.timestamp, 4);
        self.scratch = scratch;
        // The next talkspurt after the digit is a new one.
        self.tx_marker = true;
        true
    }

    /// Writes the header in front of the payload already in `scratch`, protects, queues.
    fn send_rtp(
        &mut self,
        now: Instant,
        scratch: &mut [u8],
        payload_type: u8,
        marker: bool,
        timestamp: u32,
        payload_len: usize,
    ) {
        let header = RtpHeader { marker, payload_type, sequence: self.tx_sequence, timestamp, ssrc: self.config.ssrc };
        // The scratch buffer is MTU bytes, always more than the 12-byte header.
        let Ok(header_len) = header.write(&mut scratch[..]) else {
            return;
        };
        let mut len = header_len + payload_len;
        if let Some(srtp) = &mut self.srtp {
            match srtp.protect_rtp(&mut scratch[..], len) {
                Ok(n) => len = n,
                Err(_) => {
                    self.stats.tx_dropped += 1;
                    return;
                }
            }
        }
        self.tx_sequence = self.tx_sequence.wrapping_add(1);
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += len as u64;
        self.sent_since_report = true;
        self.last_sent = Some((now, timestamp));
        let to = self.rtp_destination();
        if !self.tx.push(to, Channel::Rtp, &scratch[..len]) {
            self.stats.tx_dropped += 1;
        }
    }

    fn send_report(&mut self, now: Instant) {
        let (to, channel) = self.rtcp_destination();
        if to.ip().is_unspecified() {
            return;
        }
        // 1. SR when we sent since the last report, else RR; a block about what we receive.
        let sender_info = match self.last_sent.filter(|_| self.sent_since_report) {
            Some((at, ts)) => {
                let elapsed = self.clock.ticks(now.saturating_duration_since(at)) as u32;
                Some(SenderInfo {
                    ntp: ntp_time(self.wall_clock(now)),
                    rtp_timestamp: ts.wrapping_add(elapsed),
                    packets: self.stats.packets_sent as u32,
                    octets: self.stats.bytes_sent as u32,
                })
            }
            None => None,
        };
        self.sent_since_report = false;
        let block = self.rx_stats.as_mut().map(|s| s.report_block(now));
        if let Some(block) = &block {
            self.stats.fraction_lost = block.fraction_lost;
        }
        let report = Report { ssrc: self.config.ssrc, sender_info, block, cname: self.config.cname.as_bytes() };
        let mut scratch = std::mem::take(&mut self.scratch);
        // 2. Write, protect, queue.
        if let Ok(mut len) = report.write(&mut scratch[..MTU - 32]) {
            let protected = match &mut self.srtp {
                Some(srtp) => srtp.protect_rtcp(&mut scratch[..], len).map(|n| len = n),
                None => Ok(()),
            };
            if protected.is_ok() {
                self.stats.rtcp_sent += 1;
                if !self.tx.push(to, channel, &scratch[..len]) {
                    self.stats.tx_dropped += 1;
                }
            }
        }
        self.scratch = scratch;
    }

    fn drain_te_events(&mut self) {
        while let Some(event) = self.te_receiver.poll_event() {
            let clock = self.negotiated.telephone_event.map_or(8_000, |(_, c)| c.max(1));
            let leg_event = match event {
                ReceivedEvent::Began { event, .. } => event.dtmf().map(|digit| LegEvent::DtmfBegan { digit }),
                ReceivedEvent::Ended { event, duration, .. } => event.dtmf().map(|digit| {
                    self.stats.dtmf_received += 1;
                    LegEvent::DtmfEnded {
                        digit,
                        duration: Duration::from_micros(u64::from(duration) * 1_000_000 / u64::from(clock)),
                    }
                }),
            };
            if let Some(e) = leg_event {
                self.events.push(e);
            }
        }
    }

    fn count(&mut self, error: &DatagramError) {
        let stats = &mut self.stats;
        match error {
            DatagramError::ForeignSource { .. } => stats.foreign_source += 1,
            DatagramError::Srtp(SrtpError::Replay { .. }) => stats.replays += 1,
            DatagramError::Srtp(SrtpError::TooShort { .. }) => stats.malformed += 1,
            DatagramError::Srtp(_) => stats.auth_failures += 1,
            DatagramError::UnknownPayloadType { .. } => stats.unknown_payload_type += 1,
            DatagramError::Rtp(_)
            | DatagramError::Rtcp(_)
            | DatagramError::AmrWbPayload(_)
            | DatagramError::BadPayload { .. } => stats.malformed += 1,
        }
    }

    fn sends(&self) -> bool {
        self.negotiated.local_direction.sends()
            && self.negotiated.remote_direction.receives()
            && !self.rtp_destination().ip().is_unspecified()
    }

    fn expects_media(&self) -> bool {
        !self.is_on_hold() && self.negotiated.remote_direction.sends() && self.negotiated.local_direction.receives()
    }

    fn rtp_destination(&self) -> SocketAddr {
        self.rtp_latch.addr.unwrap_or(self.negotiated.remote_rtp)
    }

    fn rtcp_destination(&self) -> (SocketAddr, Channel) {
        if self.negotiated.rtcp_mux {
            return (self.rtp_destination(), Channel::Rtp);
        }
        (self.rtcp_latch.addr.unwrap_or(self.signalled_rtcp()), Channel::Rtcp)
    }

    /// The RTCP address the SDP gave: `a=rtcp`, else the RTP port + 1.
    fn signalled_rtcp(&self) -> SocketAddr {
        self.negotiated.remote_rtcp.unwrap_or_else(|| {
            let rtp = self.negotiated.remote_rtp;
            SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1))
        })
    }

    fn wall_clock(&self, now: Instant) -> SystemTime {
        self.config.wall_clock + now.saturating_duration_since(self.started)
    }

    fn rtcp_interval(&mut self) -> Duration {
        // RFC 3550 §6.3.1: randomized over [0.5, 1.5] of the nominal interval (xorshift).
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let factor = 0.5 + (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        RTCP_INTERVAL.mul_f64(factor)
    }
}

fn codec_clock(negotiated: &Negotiated) -> ClockRate {
    ClockRate::new(negotiated.codec.clock_rate()).unwrap_or(ClockRate::HZ_8000)
}

fn jitter_config(negotiated: &Negotiated, clock: ClockRate) -> JitterConfig {
    JitterConfig {
        clock,
        fill_byte: match negotiated.codec {
            Codec::Pcmu => 0xFF,
            Codec::Pcma => 0xD5,
            Codec::AmrWb(_) => 0,
        },
    }
}

fn ptime_samples(negotiated: &Negotiated) -> usize {
    // 10–60 ms at 8 kHz; anything else is clamped (the SDP layer already checked).
    (negotiated.ptime_ms.clamp(10, 60) * 8) as usize
}

fn srtp_session(negotiated: &Negotiated) -> Result<Option<SrtpSession>, LegError> {
    match (&negotiated.srtp, negotiated.profile.is_secure()) {
        (Some(keys), _) => Ok(Some(SrtpSession::new(keys)?)),
        (None, true) => Err(LegError::MissingKeys),
        (None, false) => Ok(None),
    }
}

fn te_sender(negotiated: &Negotiated) -> Option<TelephoneEventSender> {
    // One event packet per 20 ms tick, at the event payload type's clock.
    let (_, clock) = negotiated.telephone_event?;
    (clock >= 1_000).then(|| TelephoneEventSender::new(clock, 20))
}

#[cfg(test)]
mod tests;
