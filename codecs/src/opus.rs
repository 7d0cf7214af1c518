//! Opus (RFC 6716) over libopus through audiopus, opened at the rate of the other leg.
//!
//! libopus resamples internally, so on the G.711 (8 kHz) and AMR-WB (16 kHz) paths the
//! encoder and decoder are opened at 8 or 16 kHz and no resampler runs (limits.md §6: the
//! native-rate path costs less than half of resampling to 48 kHz). Whatever the rate we
//! open at, the RTP clock of Opus is 48 kHz (RFC 7587 §4.1): use [`rtp_duration`].
//!
//! Frames are 2.5, 5, 10, 20, 40 or 60 ms; the bridge uses 20 ms ([`SampleRate::frame_20ms`]).
//! Mono only: the bridge mixes in mono and WebRTC Opus is sent mono.

use std::cell::RefCell;

use audiopus::coder::{Decoder, Encoder, GenericCtl as _};
use audiopus::packet::Packet;
use audiopus::{Application as OpusApplication, Bitrate, Channels, ErrorCode, MutSignals};
use thiserror::Error;

/// Largest Opus packet (RFC 6716 §3.2.1: 1275 bytes per frame) and so the size of the
/// buffer to give [`OpusEncoder::encode`].
pub const MAX_PACKET_BYTES: usize = 1275;
/// The RTP clock rate of Opus whatever the codec's rate (RFC 7587 §4.1).
pub const RTP_CLOCK_RATE: u32 = 48_000;

/// The rates we open libopus at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SampleRate {
    /// 8 kHz, the G.711 path (Opus picks narrowband).
    Hz8000,
    /// 16 kHz, the AMR-WB path and the bridge's mixing rate (wideband).
    Hz16000,
    /// 48 kHz, full band.
    Hz48000,
}

impl SampleRate {
    /// Samples per second.
    pub const fn hz(self) -> u32 {
        match self {
            Self::Hz8000 => 8_000,
            Self::Hz16000 => 16_000,
            Self::Hz48000 => 48_000,
        }
    }

    /// Samples in a 20 ms frame: 160, 320 or 960.
    pub const fn frame_20ms(self) -> usize {
        self.hz() as usize / 50
    }

    const fn to_audiopus(self) -> audiopus::SampleRate {
        match self {
            Self::Hz8000 => audiopus::SampleRate::Hz8000,
            Self::Hz16000 => audiopus::SampleRate::Hz16000,
            Self::Hz48000 => audiopus::SampleRate::Hz48000,
        }
    }
}

/// The RTP timestamp increment for `samples` at `rate` (48 kHz clock).
pub const fn rtp_duration(samples: usize, rate: SampleRate) -> u32 {
    (samples as u64 * RTP_CLOCK_RATE as u64 / rate.hz() as u64) as u32
}

/// The kind of signal the encoder tunes for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Application {
    /// Speech intelligibility first (the gateway's default).
    #[default]
    Voip,
    /// Fidelity to the input, e.g. music on hold.
    Audio,
}

/// Encoder settings, all changeable later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpusEncoderConfig {
    /// 0..=10; limits.md prices 0, 5 and 10.
    pub complexity: u8,
    /// Target bit rate in bits per second (500..=512,000).
    pub bitrate: u32,
    /// In-band FEC (LBRR, RFC 6716 §2.1.7), which browsers use to recover a lost packet.
    pub inband_fec: bool,
    /// Expected loss in percent; FEC is only spent when this is above zero.
    pub packet_loss_percent: u8,
    /// Discontinuous transmission during silence.
    pub dtx: bool,
    /// What to tune for.
    pub application: Application,
}

impl Default for OpusEncoderConfig {
    /// Complexity 5, 24 kbit/s, VoIP, no FEC, no DTX: the configuration limits.md's budgets
    /// price. FEC costs about a third more encoder CPU (see codecs/README.md); turn it on with
    /// [`OpusEncoder::set_inband_fec`] and [`OpusEncoder::set_packet_loss_percent`] when the
    /// browser reports loss.
    fn default() -> Self {
        Self {
            complexity: 5,
            bitrate: 24_000,
            inband_fec: false,
            packet_loss_percent: 0,
            dtx: false,
            application: Application::Voip,
        }
    }
}

/// Errors from the Opus wrapper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum OpusError {
    /// The packet is empty or not a valid Opus packet.
    #[error("not a valid Opus packet")]
    InvalidPacket,
    /// A PCM buffer whose length is not an Opus frame duration at this rate.
    #[error("{samples} samples is not an Opus frame duration at {rate:?}")]
    FrameSize {
        /// Samples given.
        samples: usize,
        /// The codec's rate.
        rate: SampleRate,
    },
    /// The output buffer is too small for what the packet holds.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// A setting outside its range.
    #[error("invalid Opus setting {setting:?}")]
    InvalidSetting {
        /// Which setting.
        setting: OpusSetting,
    },
    /// Anything else libopus reports, by its error code (opus_defines.h).
    #[error("libopus error {code}")]
    Library {
        /// The negative libopus code, 0 when audiopus gave no code.
        code: i32,
    },
}

/// A setting, for [`OpusError::InvalidSetting`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpusSetting {
    /// Complexity.
    Complexity,
    /// Bit rate.
    Bitrate,
    /// Packet loss percentage.
    PacketLossPercent,
}

/// Most coders of each kind a thread keeps for reuse.
const SPARES_PER_THREAD: usize = 16;

thread_local! {
    /// Coders whose owners are done with them, kept for the next owner on this thread.
    /// Opening an Opus coder runs libopus's CPU feature detection (`cpuid`, which exits to the
    /// hypervisor on a virtual machine) and its initialization: 15 % of the daemon's CPU in a
    /// SIP call-setup profile, once per call. Resetting a kept one (`OPUS_RESET_STATE`, which
    /// makes it equal to a new one) costs neither. Per thread: no lock, and the bound keeps
    /// the memory small (a coder is tens of KB).
    static SPARE_ENCODERS: RefCell<Spares<(SampleRate, Application), Encoder>> = const { RefCell::new(Spares::new()) };
    static SPARE_DECODERS: RefCell<Spares<SampleRate, Decoder>> = const { RefCell::new(Spares::new()) };
}

/// Coders kept for reuse, each with what it was opened for; at most [`SPARES_PER_THREAD`].
struct Spares<K, C>(Vec<(K, C)>);

impl<K: PartialEq, C> Spares<K, C> {
    const fn new() -> Self {
        Self(Vec::new())
    }

    /// A kept coder opened for `key`.
    fn take(&mut self, key: &K) -> Option<C> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.swap_remove(i).1)
    }

    /// Keeps `coder` unless enough are kept already (then it is freed).
    fn keep(&mut self, key: K, coder: C) {
        if self.0.len() < SPARES_PER_THREAD {
            self.0.push((key, coder));
        }
    }
}

/// An Opus encoder, mono, reusable for a whole leg. Dropped, its coder is kept for the next
/// encoder of the same rate and application opened on the thread.
#[derive(Debug)]
pub struct OpusEncoder {
    /// Always `Some` until dropped.
    inner: Option<Encoder>,
    rate: SampleRate,
    application: Application,
}

impl OpusEncoder {
    /// An encoder that takes PCM at `rate`: a kept coder reset to its initial state, else a
    /// new one.
    pub fn new(rate: SampleRate, config: OpusEncoderConfig) -> Result<Self, OpusError> {
        let application = config.application;
        let spare = SPARE_ENCODERS.with_borrow_mut(|spares| spares.take(&(rate, application)));
        let inner = match spare {
            Some(mut coder) => {
                coder.reset_state().map_err(map_error)?;
                coder
            }
            None => {
                let opus_application = match application {
                    Application::Voip => OpusApplication::Voip,
                    Application::Audio => OpusApplication::Audio,
                };
                Encoder::new(rate.to_audiopus(), Channels::Mono, opus_application).map_err(map_error)?
            }
        };
        let mut encoder = Self { inner: Some(inner), rate, application };
        encoder.set_complexity(config.complexity)?;
        encoder.set_bitrate(config.bitrate)?;
        encoder.set_inband_fec(config.inband_fec)?;
        encoder.set_packet_loss_percent(config.packet_loss_percent)?;
        encoder.set_dtx(config.dtx)?;
        Ok(encoder)
    }

    /// The rate the encoder takes.
    pub fn rate(&self) -> SampleRate {
        self.rate
    }

    /// Encodes one frame into `out` (give it [`MAX_PACKET_BYTES`]) and returns the packet
    /// length. With DTX on, a packet of 1–2 bytes during silence need not be sent.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, OpusError> {
        check_frame(pcm.len(), self.rate)?;
        self.coder().encode(pcm, out).map_err(map_error)
    }

    /// Sets the complexity (0..=10).
    pub fn set_complexity(&mut self, complexity: u8) -> Result<(), OpusError> {
        if complexity > 10 {
            return Err(OpusError::InvalidSetting { setting: OpusSetting::Complexity });
        }
        self.coder().set_complexity(complexity).map_err(map_error)
    }

    /// Sets the target bit rate in bits per second (500..=512,000).
    pub fn set_bitrate(&mut self, bitrate: u32) -> Result<(), OpusError> {
        let bits = i32::try_from(bitrate).ok().filter(|b| (500..=512_000).contains(b));
        let bits = bits.ok_or(OpusError::InvalidSetting { setting: OpusSetting::Bitrate })?;
        self.coder().set_bitrate(Bitrate::BitsPerSecond(bits)).map_err(map_error)
    }

    /// Turns in-band FEC on or off.
    pub fn set_inband_fec(&mut self, on: bool) -> Result<(), OpusError> {
        self.coder().set_inband_fec(on).map_err(map_error)
    }

    /// Sets the expected packet loss (0..=100 %), which sizes the FEC.
    pub fn set_packet_loss_percent(&mut self, percent: u8) -> Result<(), OpusError> {
        if percent > 100 {
            return Err(OpusError::InvalidSetting { setting: OpusSetting::PacketLossPercent });
        }
        self.coder().set_packet_loss_perc(percent).map_err(map_error)
    }

    /// Turns DTX on or off.
    pub fn set_dtx(&mut self, on: bool) -> Result<(), OpusError> {
        self.coder().set_dtx(on).map_err(map_error)
    }

    /// The encoder's look-ahead in samples at its rate (for aligning test signals).
    pub fn lookahead(&self) -> Result<usize, OpusError> {
        self.inner.as_ref().expect(HELD).lookahead().map(|n| n as usize).map_err(map_error)
    }

    fn coder(&mut self) -> &mut Encoder {
        self.inner.as_mut().expect(HELD)
    }
}

impl Drop for OpusEncoder {
    fn drop(&mut self) {
        if let Some(coder) = self.inner.take() {
            let (rate, application) = (self.rate, self.application);
            // During thread exit the spares may be gone: the coder is then simply freed.
            let _ = SPARE_ENCODERS.try_with(move |spares| spares.borrow_mut().keep((rate, application), coder));
        }
    }
}

/// Why a coder is there: it is taken only in `drop`.
const HELD: &str = "a coder is held until its owner is dropped";

/// An Opus decoder, mono, reusable for a whole leg. Dropped, its coder is kept for the next
/// decoder of the same rate opened on the thread.
#[derive(Debug)]
pub struct OpusDecoder {
    /// Always `Some` until dropped.
    inner: Option<Decoder>,
    rate: SampleRate,
}

impl OpusDecoder {
    /// A decoder that produces PCM at `rate`, whatever rate the sender encoded at: a kept
    /// coder reset to its initial state, else a new one.
    pub fn new(rate: SampleRate) -> Result<Self, OpusError> {
        let spare = SPARE_DECODERS.with_borrow_mut(|spares| spares.take(&rate));
        let inner = match spare {
            Some(mut coder) => {
                coder.reset_state().map_err(map_error)?;
                coder
            }
            None => Decoder::new(rate.to_audiopus(), Channels::Mono).map_err(map_error)?,
        };
        Ok(Self { inner: Some(inner), rate })
    }

    fn coder(&mut self) -> &mut Decoder {
        self.inner.as_mut().expect(HELD)
    }

    /// The rate the decoder produces.
    pub fn rate(&self) -> SampleRate {
        self.rate
    }

    /// Decodes one packet into `pcm` and returns the samples written. `pcm` must hold the
    /// packet's duration (give it 120 ms, or [`Self::packet_samples`]).
    pub fn decode(&mut self, packet: &[u8], pcm: &mut [i16]) -> Result<usize, OpusError> {
        let packet = Packet::try_from(packet).map_err(|_| OpusError::InvalidPacket)?;
        let output = MutSignals::try_from(pcm).map_err(|_| OpusError::BufferTooSmall)?;
        self.coder().decode(Some(packet), output, false).map_err(map_error)
    }

    /// Conceals one lost packet (PLC): fills all of `pcm`, whose length is the lost duration.
    pub fn conceal(&mut self, pcm: &mut [i16]) -> Result<usize, OpusError> {
        check_frame(pcm.len(), self.rate)?;
        let output = MutSignals::try_from(pcm).map_err(|_| OpusError::BufferTooSmall)?;
        self.coder().decode(None, output, false).map_err(map_error)
    }

    /// Recovers a lost packet from the FEC data in the packet after it: call with that next
    /// packet before decoding it normally. `pcm`'s length is the lost duration; without FEC
    /// data in `next` this conceals like [`Self::conceal`].
    pub fn decode_fec(&mut self, next: &[u8], pcm: &mut [i16]) -> Result<usize, OpusError> {
        check_frame(pcm.len(), self.rate)?;
        let packet = Packet::try_from(next).map_err(|_| OpusError::InvalidPacket)?;
        let output = MutSignals::try_from(pcm).map_err(|_| OpusError::BufferTooSmall)?;
        self.coder().decode(Some(packet), output, true).map_err(map_error)
    }

    /// The duration of `packet` in samples at this decoder's rate.
    pub fn packet_samples(&self, packet: &[u8]) -> Result<usize, OpusError> {
        let packet = Packet::try_from(packet).map_err(|_| OpusError::InvalidPacket)?;
        self.inner.as_ref().expect(HELD).nb_samples(packet).map_err(map_error)
    }
}

impl Drop for OpusDecoder {
    fn drop(&mut self) {
        if let Some(coder) = self.inner.take() {
            let rate = self.rate;
            let _ = SPARE_DECODERS.try_with(move |spares| spares.borrow_mut().keep(rate, coder));
        }
    }
}

/// Opus frames last 2.5, 5, 10, 20, 40 or 60 ms (RFC 6716 §2.1.4).
fn check_frame(samples: usize, rate: SampleRate) -> Result<(), OpusError> {
    let per_2_5_ms = rate.hz() as usize / 400;
    match samples.checked_div(per_2_5_ms) {
        Some(1 | 2 | 4 | 8 | 16 | 24) if samples.is_multiple_of(per_2_5_ms) => Ok(()),
        _ => Err(OpusError::FrameSize { samples, rate }),
    }
}

fn map_error(error: audiopus::Error) -> OpusError {
    match error {
        audiopus::Error::Opus(ErrorCode::InvalidPacket) | audiopus::Error::EmptyPacket => OpusError::InvalidPacket,
        audiopus::Error::Opus(ErrorCode::BufferTooSmall) => OpusError::BufferTooSmall,
        audiopus::Error::Opus(code) => OpusError::Library { code: code as i32 },
        _ => OpusError::Library { code: 0 },
    }
}

/// Padded packets' lengths are multiples of this ([`padded_length`]).
pub const PAD_TO: usize = 16;

/// The length [`pad`] gives a packet of `len` bytes: the next multiple of [`PAD_TO`] with room
/// for the two bytes padding adds.
pub const fn padded_length(len: usize) -> usize {
    (len + 2).div_ceil(PAD_TO) * PAD_TO
}

/// Pads the one-frame packet in `packet[..len]` to `target` bytes in place (RFC 6716 §3.2.5: a
/// code 3 packet of one frame with padding), returning `target`. It decodes to the same audio.
///
/// Packets of a few lengths can go out in buffers used again (an encoder's VBR output has a
/// different length nearly every frame), and lengths rounded up give away less of what is said
/// through SRTP (RFC 6562). Only code 0 packets (one frame, which is what a 20 ms encode gives)
/// are padded, by at most 254 bytes.
pub fn pad(packet: &mut [u8], len: usize, target: usize) -> Result<usize, OpusError> {
    if len == 0 || packet[0] & 0x03 != 0 || target < len + 2 || target - len - 2 > 254 {
        return Err(OpusError::InvalidPacket);
    }
    if packet.len() < target {
        return Err(OpusError::BufferTooSmall);
    }
    // TOC (code 3), frame count byte (CBR, padding, one frame), padding length, the frame,
    // then the padding's zeros.
    packet.copy_within(1..len, 3);
    packet[0] |= 0x03;
    packet[1] = 0x40 | 1;
    packet[2] = (target - len - 2) as u8;
    packet[len + 2..target].fill(0);
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcm::analysis::{best_delay, dominant_frequency, rms_dbfs, tone};

    /// Encodes and decodes `input` with the coders `new` gives on this thread.
    fn coded(config: OpusEncoderConfig, input: &[i16]) -> (Vec<Vec<u8>>, Vec<i16>) {
        let rate = SampleRate::Hz16000;
        let mut encoder = OpusEncoder::new(rate, config).unwrap();
        let mut decoder = OpusDecoder::new(rate).unwrap();
        let mut packet = [0u8; MAX_PACKET_BYTES];
        let mut pcm = vec![0i16; rate.frame_20ms()];
        let (mut packets, mut out) = (Vec::new(), Vec::new());
        for frame in input.chunks_exact(rate.frame_20ms()) {
            let len = encoder.encode(frame, &mut packet).unwrap();
            packets.push(packet[..len].to_vec());
            let n = decoder.decode(&packet[..len], &mut pcm).unwrap();
            out.extend_from_slice(&pcm[..n]);
        }
        (packets, out)
    }

    /// Padded packets decode to exactly what the packet did, and padding that cannot be done
    /// is an error: a packet of several frames, a target too short or too long, a short buffer.
    #[test]
    fn padding_changes_the_length_not_the_audio() {
        let input = tone(16_000, 440.0, -12.0, 8_000);
        let (packets, _) = coded(OpusEncoderConfig::default(), &input);
        let mut plain = OpusDecoder::new(SampleRate::Hz16000).unwrap();
        let mut padded = OpusDecoder::new(SampleRate::Hz16000).unwrap();
        let (mut a, mut b) = ([0i16; 320], [0i16; 320]);
        for packet in &packets {
            let target = padded_length(packet.len());
            assert!(target >= packet.len() + 2 && target % PAD_TO == 0 && target < packet.len() + 2 + PAD_TO);
            let mut buf = [0u8; MAX_PACKET_BYTES];
            buf[..packet.len()].copy_from_slice(packet);
            assert_eq!(pad(&mut buf, packet.len(), target), Ok(target));
            assert_eq!(plain.decode(packet, &mut a).unwrap(), padded.decode(&buf[..target], &mut b).unwrap());
            assert_eq!(a, b, "the padded packet decodes to the same samples");
        }
        let mut buf = [0u8; MAX_PACKET_BYTES];
        buf[..packets[0].len()].copy_from_slice(&packets[0]);
        let n = packets[0].len();
        assert_eq!(pad(&mut buf, n, n + 1), Err(OpusError::InvalidPacket), "no room for the header");
        assert_eq!(pad(&mut buf, n, n + 300), Err(OpusError::InvalidPacket), "over 254 bytes of padding");
        assert_eq!(pad(&mut buf[..n + 4], n, n + 8), Err(OpusError::BufferTooSmall));
        buf[0] |= 1;
        assert_eq!(pad(&mut buf, n, n + 8), Err(OpusError::InvalidPacket), "two frames");
        assert_eq!(pad(&mut buf, 0, 8), Err(OpusError::InvalidPacket), "empty");
    }

    /// A kept coder is reset and given its new owner's settings: what it encodes and decodes
    /// is bit-exact what fresh coders give, whatever its last owner did and set.
    #[test]
    fn reused_coders_are_equal_to_new_ones() {
        std::thread::spawn(|| {
            let a = tone(16_000, 440.0, -12.0, 16_000);
            let b = tone(16_000, 1_000.0, -6.0, 16_000);
            // Fresh coders on a new thread (nothing kept yet).
            let fresh = coded(OpusEncoderConfig::default(), &a);
            // Leave a coder that encoded something else with other settings…
            let mut other = OpusEncoderConfig { complexity: 10, bitrate: 64_000, ..OpusEncoderConfig::default() };
            other.inband_fec = true;
            other.packet_loss_percent = 20;
            let _ = coded(other, &b);
            // …then open again: the kept ones come back, equal to new.
            let again = coded(OpusEncoderConfig::default(), &a);
            // One coder of each kind served all three owners (new ones would be kept too).
            assert_eq!(SPARE_ENCODERS.with_borrow(|s| s.0.len()), 1, "the kept encoder was reused");
            assert_eq!(SPARE_DECODERS.with_borrow(|s| s.0.len()), 1, "the kept decoder was reused");
            assert_eq!(again.0, fresh.0, "packets differ from a fresh encoder's");
            assert_eq!(again.1, fresh.1, "decoded audio differs from a fresh decoder's");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_keeps_a_bounded_number_of_coders() {
        std::thread::spawn(|| {
            let many: Vec<_> =
                (0..40).map(|_| OpusEncoder::new(SampleRate::Hz8000, OpusEncoderConfig::default()).unwrap()).collect();
            drop(many);
            assert_eq!(SPARE_ENCODERS.with_borrow(|s| s.0.len()), SPARES_PER_THREAD);
        })
        .join()
        .unwrap();
    }

    fn round_trip(rate: SampleRate, config: OpusEncoderConfig, input: &[i16]) -> Vec<i16> {
        let mut encoder = OpusEncoder::new(rate, config).unwrap();
        let mut decoder = OpusDecoder::new(rate).unwrap();
        let mut packet = [0u8; MAX_PACKET_BYTES];
        let mut pcm = vec![0i16; rate.frame_20ms()];
        let mut output = Vec::with_capacity(input.len());
        for frame in input.chunks_exact(rate.frame_20ms()) {
            let len = encoder.encode(frame, &mut packet).unwrap();
            let n = decoder.decode(&packet[..len], &mut pcm).unwrap();
            assert_eq!(n, rate.frame_20ms());
            output.extend_from_slice(&pcm[..n]);
        }
        output
    }

    #[test]
    fn tone_keeps_frequency_and_level_at_every_rate_and_complexity() {
        for (rate, frequency) in
            [(SampleRate::Hz8000, 1_004.0), (SampleRate::Hz16000, 440.0), (SampleRate::Hz48000, 3_000.0)]
        {
            for complexity in [0, 5, 10] {
                let input = tone(rate.hz(), frequency, -12.0, rate.hz() as usize * 2);
                let config = OpusEncoderConfig { complexity, ..OpusEncoderConfig::default() };
                let output = round_trip(rate, config, &input);
                let settled = &output[rate.hz() as usize / 2..];
                let found = dominant_frequency(settled, rate.hz());
                assert!((found - frequency).abs() < 2.0, "{rate:?} c{complexity}: {found} Hz");
                let level = rms_dbfs(settled) - rms_dbfs(&input);
                assert!(level.abs() < 3.0, "{rate:?} c{complexity}: level {level:.1} dB");
            }
        }
    }

    #[test]
    fn encoder_at_8k_gives_narrowband_and_the_rtp_clock_stays_48k() {
        let mut encoder = OpusEncoder::new(SampleRate::Hz8000, OpusEncoderConfig::default()).unwrap();
        let input = tone(8_000, 500.0, -12.0, 160);
        let mut packet = [0u8; MAX_PACKET_BYTES];
        let len = encoder.encode(&input, &mut packet).unwrap();
        // RFC 6716 §3.1 TOC: configs 0-3 are SILK narrowband; 12-13 hybrid, 16-19 CELT NB.
        let config = packet[0] >> 3;
        assert!(config <= 3 || (16..=19).contains(&config), "TOC config {config}");
        // A 48 kHz decoder sees the same packet as 960 samples: 20 ms on the 48 kHz clock.
        let wide = OpusDecoder::new(SampleRate::Hz48000).unwrap();
        assert_eq!(wide.packet_samples(&packet[..len]), Ok(960));
        assert_eq!(rtp_duration(160, SampleRate::Hz8000), 960);
        assert_eq!(rtp_duration(320, SampleRate::Hz16000), 960);
        assert_eq!(rtp_duration(960, SampleRate::Hz48000), 960);
    }

    #[test]
    fn settings_are_checked() {
        let mut encoder = OpusEncoder::new(SampleRate::Hz16000, OpusEncoderConfig::default()).unwrap();
        assert_eq!(encoder.set_complexity(11), Err(OpusError::InvalidSetting { setting: OpusSetting::Complexity }));
        assert_eq!(encoder.set_bitrate(100), Err(OpusError::InvalidSetting { setting: OpusSetting::Bitrate }));
        assert_eq!(
            encoder.set_packet_loss_percent(101),
            Err(OpusError::InvalidSetting { setting: OpusSetting::PacketLossPercent })
        );
        encoder.set_bitrate(12_000).unwrap();
        encoder.set_complexity(0).unwrap();
        let mut packet = [0u8; MAX_PACKET_BYTES];
        assert_eq!(
            encoder.encode(&[0; 300], &mut packet),
            Err(OpusError::FrameSize { samples: 300, rate: SampleRate::Hz16000 })
        );
        assert!(encoder.lookahead().unwrap() > 0);
    }

    #[test]
    fn bitrate_setting_changes_the_packet_size() {
        let input = tone(16_000, 440.0, -12.0, 16_000);
        let sizes: Vec<usize> = [8_000, 32_000]
            .into_iter()
            .map(|bitrate| {
                let config = OpusEncoderConfig { bitrate, inband_fec: false, ..OpusEncoderConfig::default() };
                let mut encoder = OpusEncoder::new(SampleRate::Hz16000, config).unwrap();
                let mut packet = [0u8; MAX_PACKET_BYTES];
                input.chunks_exact(320).map(|f| encoder.encode(f, &mut packet).unwrap()).sum()
            })
            .collect();
        // 1 s at 8 and 32 kbit/s is about 1,000 and 4,000 bytes.
        assert!(sizes[0] < 1_400 && sizes[1] > 2_800, "{sizes:?}");
    }

    #[test]
    fn dtx_shrinks_silence_to_tiny_packets() {
        let config = OpusEncoderConfig { dtx: true, ..OpusEncoderConfig::default() };
        let mut encoder = OpusEncoder::new(SampleRate::Hz16000, config).unwrap();
        let mut packet = [0u8; MAX_PACKET_BYTES];
        let sizes: Vec<usize> = (0..50).map(|_| encoder.encode(&[0; 320], &mut packet).unwrap()).collect();
        assert!(sizes[20..].iter().filter(|&&n| n <= 2).count() >= 20, "{sizes:?}");
    }

    #[test]
    fn fec_recovers_a_lost_packet_better_than_plc() {
        let rate = SampleRate::Hz16000;
        // A chirp-free but changing signal: two tones alternating every 100 ms.
        let mut input = Vec::new();
        for i in 0..20 {
            input.extend(tone(16_000, if i % 2 == 0 { 500.0 } else { 900.0 }, -12.0, 1_600));
        }
        let config = OpusEncoderConfig { inband_fec: true, packet_loss_percent: 30, ..OpusEncoderConfig::default() };
        let mut encoder = OpusEncoder::new(rate, config).unwrap();
        let packets: Vec<Vec<u8>> = input
            .chunks_exact(320)
            .map(|f| {
                let mut p = [0u8; MAX_PACKET_BYTES];
                let n = encoder.encode(f, &mut p).unwrap();
                p[..n].to_vec()
            })
            .collect();
        let lost = 55; // frame 55 starts at 17,600: inside the 900 Hz stretch (16,000..17,600 is 500 Hz).
        let decode_with = |recover: &dyn Fn(&mut OpusDecoder, &mut [i16])| -> Vec<i16> {
            let mut decoder = OpusDecoder::new(rate).unwrap();
            let mut out = Vec::new();
            let mut pcm = [0i16; 320];
            for (i, p) in packets.iter().enumerate() {
                if i == lost {
                    recover(&mut decoder, &mut pcm);
                } else {
                    decoder.decode(p, &mut pcm).unwrap();
                }
                out.extend_from_slice(&pcm);
            }
            out
        };
        let fec = decode_with(&|d, pcm| {
            assert_eq!(d.decode_fec(&packets[lost + 1], pcm), Ok(320));
        });
        let plc = decode_with(&|d, pcm| {
            assert_eq!(d.conceal(pcm), Ok(320));
        });
        let clean = decode_with(&|d, pcm| {
            d.decode(&packets[lost], pcm).unwrap();
        });
        let region = lost * 320..(lost + 1) * 320;
        let error = |x: &[i16]| -> f64 {
            x[region.clone()]
                .iter()
                .zip(&clean[region.clone()])
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                .sum()
        };
        assert!(error(&fec) < error(&plc), "FEC error {} vs PLC error {}", error(&fec), error(&plc));
        let _ = best_delay;
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut decoder = OpusDecoder::new(SampleRate::Hz16000).unwrap();
        let mut pcm = [0i16; 5_760];
        assert_eq!(decoder.decode(&[], &mut pcm), Err(OpusError::InvalidPacket));
        // Code 3 (arbitrary frame count) with a count of zero frames (RFC 6716 §3.2.5, R5).
        assert_eq!(decoder.decode(&[0x03, 0x00], &mut pcm), Err(OpusError::InvalidPacket));
        // Code 1 (two equal frames) with an odd payload length (§3.2.3, R3).
        assert_eq!(decoder.decode(&[0x01, 0x01, 0x02, 0x03], &mut pcm), Err(OpusError::InvalidPacket));
        // Config 3 is 60 ms of SILK narrowband, which does not fit a 20 ms buffer.
        let mut short = [0i16; 320];
        assert_eq!(decoder.decode(&[0x18, 0x01, 0x02], &mut short), Err(OpusError::BufferTooSmall));
        assert_eq!(
            decoder.conceal(&mut short[..100]),
            Err(OpusError::FrameSize { samples: 100, rate: SampleRate::Hz16000 })
        );
    }
}
