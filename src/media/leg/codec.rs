//! The leg's codec state: G.711 or AMR-WB (RFC 4867) with its encoder and decoder, and how a
//! payload is told apart from comfort noise and telephone events.

use super::*;

/// What a negotiated payload type carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PayloadKind {
    Audio,
    TelephoneEvent,
    ComfortNoise,
}

/// The codec side of the leg.
pub(super) enum CodecState {
    G711(Box<G711State>),
    AmrWb(Box<AmrWbState>),
}

pub(super) struct G711State {
    law: Law,
    /// Last decoded frame, for concealment by repetition.
    last: [i16; NARROW_FRAME],
    concealed_run: u32,
    /// Comfort noise level from the last CN packet, in -dBov (RFC 3389 §3.1).
    cn_level: Option<u8>,
    noise: u32,
    /// Encoded samples waiting for a packet, and the timestamp of the first.
    pending: [u8; 480],
    pending_len: usize,
    pending_ts: u32,
    pub(super) ptime_samples: usize,
}

pub(super) struct AmrWbState {
    encoder: AmrWbEncoder,
    decoder: AmrWbDecoder,
    packetizer: Packetizer,
    depacketizer: Depacketizer,
    frames: PacketFrames,
    mode_set: ModeSet,
    mode: Mode,
    frames_per_packet: usize,
    pending: [[u8; MAX_FRAME_BYTES]; MAX_FRAMES_OUT],
    pending_types: [FrameType; MAX_FRAMES_OUT],
    pending_len: usize,
    pending_ts: u32,
    pcm: [i16; FRAME_SAMPLES],
}

impl CodecState {
    pub(super) fn new(negotiated: &Negotiated) -> Result<Self, LegError> {
        Ok(match &negotiated.codec {
            Codec::Pcmu | Codec::Pcma => Self::G711(Box::new(G711State {
                law: if negotiated.codec == Codec::Pcmu { Law::Mu } else { Law::A },
                last: [0; NARROW_FRAME],
                concealed_run: 0,
                cn_level: None,
                noise: 0x1234_5678,
                pending: [0; 480],
                pending_len: 0,
                pending_ts: 0,
                ptime_samples: ptime_samples(negotiated),
            })),
            Codec::AmrWb(params) => {
                let mut state = AmrWbState {
                    encoder: AmrWbEncoder::new(false)?,
                    decoder: AmrWbDecoder::new()?,
                    packetizer: Packetizer::new(PayloadConfig::bandwidth_efficient()),
                    depacketizer: Depacketizer::new(PayloadConfig::bandwidth_efficient()),
                    frames: PacketFrames::new(),
                    mode_set: ModeSet::ALL,
                    mode: Mode::M8,
                    frames_per_packet: 1,
                    pending: [[0; MAX_FRAME_BYTES]; MAX_FRAMES_OUT],
                    pending_types: [FrameType::NoData; MAX_FRAMES_OUT],
                    pending_len: 0,
                    pending_ts: 0,
                    pcm: [0; FRAME_SAMPLES],
                };
                state.configure(params.mode_set.as_deref(), negotiated.ptime_ms, params.octet_align);
                Self::AmrWb(Box::new(state))
            }
        })
    }

    /// Reads one RTP payload of the audio payload type into the jitter buffer.
    pub(super) fn depacketize(
        &mut self,
        jitter: &mut JitterBuffer,
        now: Instant,
        packet: &RtpPacket<'_>,
    ) -> Result<(), DatagramError> {
        match self {
            Self::G711(_) => {
                if packet.payload.is_empty() {
                    return Err(DatagramError::BadPayload { payload_type: packet.payload_type });
                }
                jitter.packet(now, packet.ssrc, packet.timestamp);
                // Up to 60 ms (or more) per packet: one slot's worth at a time.
                for (i, chunk) in packet.payload.chunks(SLOT_BYTES).enumerate() {
                    let ts = packet.timestamp.wrapping_add((i * SLOT_BYTES) as u32);
                    jitter.insert(ts, Frame::Samples(chunk));
                }
            }
            Self::AmrWb(amr) => {
                let cmr = amr.depacketizer.depacketize(packet.payload, &mut amr.frames)?;
                // RFC 4867 §4.3.1: follow the peer's request within the mode-set.
                if let Cmr::Mode(requested) = cmr
                    && let Some(mode) = amr.mode_set.mode_for_request(requested)
                {
                    amr.mode = mode;
                }
                jitter.packet(now, packet.ssrc, packet.timestamp);
                for (i, frame) in amr.frames.iter().enumerate() {
                    let ts = packet.timestamp.wrapping_add((i * FRAME_SAMPLES) as u32);
                    let kind = match frame.frame_type {
                        FrameType::Speech(_) | FrameType::SpeechLost => FrameKind::Speech,
                        FrameType::Sid => FrameKind::Comfort,
                        FrameType::NoData => FrameKind::NoData,
                    };
                    let tag = (frame.frame_type.ft() << 1) | u8::from(frame.quality.bit());
                    jitter.insert(ts, Frame::Coded { kind, tag, data: frame.data });
                }
            }
        }
        Ok(())
    }

    /// The band the codec's audio is in.
    pub(super) fn band(&self) -> Band {
        match self {
            Self::G711(_) => Band::Narrow,
            Self::AmrWb(_) => Band::Wide,
        }
    }

    /// Turns the jitter buffer's answer into 20 ms of audio in the codec's band
    /// ([`Self::band`]; `out` is that long).
    pub(super) fn play(&mut self, playout: Playout<'_>, out: &mut [i16]) -> AudioStatus {
        match self {
            Self::G711(g) => {
                let Ok(pcm8) = <&mut [i16; NARROW_FRAME]>::try_from(out) else { return AudioStatus::Silence };
                match playout {
                    Playout::Buffering => {
                        pcm8.fill(0);
                        AudioStatus::Silence
                    }
                    Playout::Frame(frame) if frame.kind == FrameKind::Speech => {
                        let n = g711::decode(g.law, frame.data, pcm8).unwrap_or(0);
                        pcm8[n..].fill(0);
                        g.last = *pcm8;
                        g.concealed_run = 0;
                        g.cn_level = None;
                        AudioStatus::Audio
                    }
                    Playout::Frame(frame) => {
                        g.cn_level = Some(frame.data.first().copied().unwrap_or(127));
                        g.comfort_noise(pcm8);
                        AudioStatus::ComfortNoise
                    }
                    Playout::Dtx => {
                        g.comfort_noise(pcm8);
                        AudioStatus::ComfortNoise
                    }
                    Playout::Conceal | Playout::Stretch => {
                        // Repeat the last frame, fading out over three frames.
                        g.concealed_run += 1;
                        let gain = match g.concealed_run {
                            1 => 1.0,
                            2 => 0.6,
                            3 => 0.3,
                            _ => 0.0,
                        };
                        for (o, l) in pcm8.iter_mut().zip(&g.last) {
                            *o = (f32::from(*l) * gain) as i16;
                        }
                        AudioStatus::Concealed
                    }
                }
            }
            Self::AmrWb(amr) => {
                let Ok(out) = <&mut [i16; WIDE_FRAME]>::try_from(out) else { return AudioStatus::Silence };
                amr.play(playout, out)
            }
        }
    }

    /// Encodes one 20 ms frame at RTP time `timestamp` (call with `step` 0) and returns the
    /// packets that became complete: call again with `step` 1, 2, ... until `Ok(None)`. Each
    /// packet's payload is written into `out`, with its timestamp and length returned.
    pub(super) fn encode(
        &mut self,
        pcm: &[i16],
        timestamp: u32,
        step: usize,
        out: &mut [u8],
    ) -> Result<Option<(u32, usize)>, ()> {
        match self {
            Self::G711(g) => {
                if step == 0 {
                    // Samples left from before a gap (DTMF, hold) would get a wrong timestamp.
                    if g.pending_ts.wrapping_add(g.pending_len as u32) != timestamp {
                        g.pending_len = 0;
                    }
                    let narrow = <&[i16; NARROW_FRAME]>::try_from(pcm).map_err(|_| ())?;
                    if g.pending_len + NARROW_FRAME > g.pending.len() {
                        g.pending_len = 0;
                    }
                    if g.pending_len == 0 {
                        g.pending_ts = timestamp;
                    }
                    let at = g.pending_len;
                    g711::encode(g.law, narrow, &mut g.pending[at..at + NARROW_FRAME]).map_err(|_| ())?;
                    g.pending_len += NARROW_FRAME;
                }
                let n = g.ptime_samples;
                if g.pending_len < n {
                    return Ok(None);
                }
                let ts = g.pending_ts;
                out.get_mut(..n).ok_or(())?.copy_from_slice(&g.pending[..n]);
                g.pending.copy_within(n..g.pending_len, 0);
                g.pending_len -= n;
                g.pending_ts = ts.wrapping_add(n as u32);
                Ok(Some((ts, n)))
            }
            Self::AmrWb(amr) => {
                if step > 0 {
                    return Ok(None);
                }
                let expected = (amr.pending_len * FRAME_SAMPLES) as u32;
                if amr.pending_len == 0 || amr.pending_ts.wrapping_add(expected) != timestamp {
                    amr.pending_len = 0;
                    amr.pending_ts = timestamp;
                }
                amr.pcm.copy_from_slice(pcm.get(..FRAME_SAMPLES).ok_or(())?);
                let i = amr.pending_len;
                let encoded = amr.encoder.encode(&amr.pcm, amr.mode, &mut amr.pending[i]).map_err(|_| ())?;
                amr.pending_types[i] = encoded.frame_type;
                amr.pending_len += 1;
                if amr.pending_len < amr.frames_per_packet {
                    return Ok(None);
                }
                let count = amr.pending_len;
                amr.pending_len = 0;
                let frames: [FrameRef<'_>; MAX_FRAMES_OUT] = std::array::from_fn(|k| FrameRef {
                    frame_type: amr.pending_types[k],
                    quality: FrameQuality::Good,
                    data: &amr.pending[k][..amr.pending_types[k].bytes()],
                });
                let len = amr.packetizer.packetize(Cmr::NoRequest, &frames[..count], out).map_err(|_| ())?;
                Ok(Some((amr.pending_ts, len)))
            }
        }
    }
}

impl G711State {
    pub(super) fn comfort_noise(&mut self, pcm8: &mut [i16; NARROW_FRAME]) {
        // RFC 3389 §3.1: the level is -dBov; 127 and no level mean silence here.
        let Some(level) = self.cn_level.filter(|l| *l < 127) else {
            pcm8.fill(0);
            return;
        };
        let amplitude = 32_767.0 * 10f32.powf(-f32::from(level) / 20.0) * 3f32.sqrt();
        for s in pcm8.iter_mut() {
            self.noise = self.noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let uniform = (self.noise >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
            *s = (uniform * amplitude) as i16;
        }
    }
}

impl AmrWbState {
    /// The jitter buffer's answer as 16 kHz audio.
    fn play(&mut self, playout: Playout<'_>, out: &mut [i16; WIDE_FRAME]) -> AudioStatus {
        let amr = self;
        match playout {
            Playout::Buffering => {
                out.fill(0);
                AudioStatus::Silence
            }
            Playout::Frame(frame) => {
                let quality = FrameQuality::from_bit(frame.tag & 1 == 1);
                let frame_type = FrameType::from_ft(frame.tag >> 1).unwrap_or(FrameType::SpeechLost);
                let decoded = amr.decoder.decode(FrameRef { frame_type, quality, data: frame.data }, out);
                match (decoded, frame.kind) {
                    (Err(_), _) => {
                        amr.decoder.conceal(out);
                        AudioStatus::Concealed
                    }
                    (Ok(()), FrameKind::Speech) => AudioStatus::Audio,
                    (Ok(()), _) => AudioStatus::ComfortNoise,
                }
            }
            Playout::Dtx => {
                let no_data = FrameRef { frame_type: FrameType::NoData, quality: FrameQuality::Good, data: &[] };
                if amr.decoder.decode(no_data, out).is_err() {
                    out.fill(0);
                }
                AudioStatus::ComfortNoise
            }
            Playout::Conceal | Playout::Stretch => {
                amr.decoder.conceal(out);
                AudioStatus::Concealed
            }
        }
    }

    pub(super) fn configure(&mut self, mode_set: Option<&[u8]>, ptime_ms: u32, octet_align: bool) {
        let modes = mode_set.map_or(ModeSet::ALL, |set| {
            let mut modes = [Mode::M0; 9];
            let mut n = 0;
            for m in set.iter().filter_map(|&i| Mode::from_index(i)) {
                if n < modes.len() {
                    modes[n] = m;
                    n += 1;
                }
            }
            if n == 0 { ModeSet::ALL } else { ModeSet::new(&modes[..n]) }
        });
        let layout = if octet_align { Layout::OctetAligned } else { Layout::BandwidthEfficient };
        self.frames_per_packet = ((ptime_ms / 20) as usize).clamp(1, MAX_FRAMES_OUT);
        self.packetizer =
            Packetizer::new(PayloadConfig { layout, mode_set: modes, max_frames: self.frames_per_packet });
        // Receive leniently: any mode, as many frames as RFC 4867 allows.
        self.depacketizer =
            Depacketizer::new(PayloadConfig { layout, mode_set: ModeSet::ALL, max_frames: MAX_FRAMES_PER_PACKET });
        if self.mode_set != modes || !modes.contains(self.mode) {
            self.mode = modes.highest().unwrap_or(Mode::M8);
        }
        self.mode_set = modes;
        self.pending_len = 0;
    }
}
