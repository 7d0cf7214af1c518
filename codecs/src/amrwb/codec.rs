//! The safe wrapper over the C codecs declared in `ffi.rs`. Each type owns one C state,
//! frees it in `Drop`, and is `Send` but not `Sync`: a leg's task owns its codec and calls
//! it with `&mut self`, so the C state is never touched from two threads at once.

use std::ffi::{c_int, c_void};
use std::ptr::NonNull;

use super::ffi;
use super::{AmrWbError, FRAME_SAMPLES, FrameQuality, FrameRef, FrameType, MAX_FRAME_BYTES, Mode};

/// An AMR-WB encoder (vo-amrwbenc). Reusable for a whole leg; switch mode per frame.
#[derive(Debug)]
pub struct AmrWbEncoder {
    state: NonNull<c_void>,
    dtx: bool,
    // vo-amrwbenc writes without a length; this holds the worst case (61 bytes) and more.
    scratch: [u8; SCRATCH_BYTES],
}

// SAFETY: the encoder state is plain heap memory owned by this value alone; vo-amrwbenc keeps
// no thread-local or global references to it, so moving it to another thread is sound. `&mut
// self` on every call (and no `Sync`) keeps two threads from using it at once.
unsafe impl Send for AmrWbEncoder {}

/// What the encoder wrote: the frame type and how many bytes of `out` hold its bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodedFrame {
    /// Speech in the requested mode, SID or NO_DATA (the last two only with DTX on).
    pub frame_type: FrameType,
    /// Bytes written at the start of `out` (`frame_type.bytes()`).
    pub len: usize,
}

impl EncodedFrame {
    /// Borrows the encoded frame from the buffer given to [`AmrWbEncoder::encode`].
    pub fn frame<'a>(&self, out: &'a [u8; MAX_FRAME_BYTES]) -> FrameRef<'a> {
        FrameRef { frame_type: self.frame_type, quality: FrameQuality::Good, data: &out[..self.len] }
    }
}

impl AmrWbEncoder {
    /// Opens an encoder. With `dtx` on, silence gives SID and NO_DATA frames (TS 26.193).
    pub fn new(dtx: bool) -> Result<Self, AmrWbError> {
        // SAFETY: E_IF_init takes no arguments and returns an owned state or NULL.
        let raw = unsafe { ffi::E_IF_init() };
        let state = NonNull::new(raw).ok_or(AmrWbError::OutOfMemory)?;
        Ok(Self { state, dtx, scratch: [0; SCRATCH_BYTES] })
    }

    /// Turns discontinuous transmission on or off from the next frame on.
    pub fn set_dtx(&mut self, dtx: bool) {
        self.dtx = dtx;
    }

    /// Whether DTX is on.
    pub fn dtx(&self) -> bool {
        self.dtx
    }

    /// Encodes 20 ms at 16 kHz into `out` and says what it wrote.
    pub fn encode(
        &mut self,
        pcm: &[i16; FRAME_SAMPLES],
        mode: Mode,
        out: &mut [u8; MAX_FRAME_BYTES],
    ) -> Result<EncodedFrame, AmrWbError> {
        // SAFETY: the state is live (owned by self, freed only in Drop); `pcm` points to 320
        // samples as E_IF_encode reads; `scratch` holds 64 bytes, more than the 61 it writes
        // at most; mode is 0..=8 by its type and dtx is 0 or 1.
        let written = unsafe {
            ffi::E_IF_encode(
                self.state.as_ptr(),
                c_int::from(mode.index()),
                pcm.as_ptr(),
                self.scratch.as_mut_ptr(),
                c_int::from(self.dtx),
            )
        };
        let header = self.scratch[0];
        let frame_type = FrameType::from_ft((header >> 3) & 0x0F)
            .map_err(|_| AmrWbError::UnexpectedEncoderOutput { len: written, header })?;
        let len = frame_type.bytes();
        if usize::try_from(written) != Ok(len + 1) {
            return Err(AmrWbError::UnexpectedEncoderOutput { len: written, header });
        }
        out[..len].copy_from_slice(&self.scratch[1..=len]);
        Ok(EncodedFrame { frame_type, len })
    }
}

impl Drop for AmrWbEncoder {
    fn drop(&mut self) {
        // SAFETY: the state came from E_IF_init and is freed exactly once, here.
        unsafe { ffi::E_IF_exit(self.state.as_ptr()) }
    }
}

/// An AMR-WB decoder (opencore-amrwb). Reusable for a whole leg.
#[derive(Debug)]
pub struct AmrWbDecoder {
    state: NonNull<c_void>,
    // D_IF_decode reads as many bytes as the header's FT says; stack.md §5 says always give it
    // 64, so the frame is copied here behind its header and the rest stays zero.
    input: [u8; SCRATCH_BYTES],
}

// SAFETY: as for the encoder: opencore's decoder state is heap memory owned by this value and
// only reached through `&mut self`.
unsafe impl Send for AmrWbDecoder {}

impl AmrWbDecoder {
    /// Opens a decoder.
    pub fn new() -> Result<Self, AmrWbError> {
        // SAFETY: D_IF_init takes no arguments and returns an owned state or NULL.
        let raw = unsafe { ffi::D_IF_init() };
        let state = NonNull::new(raw).ok_or(AmrWbError::OutOfMemory)?;
        Ok(Self { state, input: [0; SCRATCH_BYTES] })
    }

    /// Decodes one frame into 20 ms at 16 kHz. SID and NO_DATA give comfort noise; a
    /// damaged speech frame (Q = 0) or SPEECH_LOST is concealed from the past frames.
    pub fn decode(&mut self, frame: FrameRef<'_>, pcm: &mut [i16; FRAME_SAMPLES]) -> Result<(), AmrWbError> {
        let expected = frame.frame_type.bytes();
        if frame.data.len() != expected {
            return Err(AmrWbError::WrongFrameSize {
                frame_type: frame.frame_type,
                expected,
                actual: frame.data.len(),
            });
        }
        // opencore ignores the Q bit, so a damaged frame is handed over as the frame type
        // that makes it conceal: speech becomes SPEECH_LOST, a damaged SID becomes NO_DATA
        // (keep the comfort noise going).
        let frame_type = match (frame.frame_type, frame.quality) {
            (_, FrameQuality::Good) => frame.frame_type,
            (FrameType::Speech(_) | FrameType::SpeechLost, FrameQuality::Damaged) => FrameType::SpeechLost,
            (FrameType::Sid | FrameType::NoData, FrameQuality::Damaged) => FrameType::NoData,
        };
        self.input.fill(0);
        self.input[0] = (frame_type.ft() << 3) | 0x04;
        if frame_type == frame.frame_type {
            self.input[1..=expected].copy_from_slice(frame.data);
        }
        self.decode_input(pcm);
        Ok(())
    }

    /// Conceals one lost frame (nothing arrived for it).
    pub fn conceal(&mut self, pcm: &mut [i16; FRAME_SAMPLES]) {
        self.input.fill(0);
        self.input[0] = (FrameType::SpeechLost.ft() << 3) | 0x04;
        self.decode_input(pcm);
    }

    fn decode_input(&mut self, pcm: &mut [i16; FRAME_SAMPLES]) {
        // SAFETY: the state is live (freed only in Drop); `input` is 64 bytes, which covers the
        // header plus the largest frame D_IF_decode reads (60 bytes), and its FT is one the
        // library handles (0–9, 14, 15: reserved values cannot be built as a FrameType);
        // `pcm` has room for the 320 samples it writes. bfi = 0: losses are signalled by FT.
        unsafe { ffi::D_IF_decode(self.state.as_ptr(), self.input.as_ptr(), pcm.as_mut_ptr(), 0) }
    }
}

impl Drop for AmrWbDecoder {
    fn drop(&mut self) {
        // SAFETY: the state came from D_IF_init and is freed exactly once, here.
        unsafe { ffi::D_IF_exit(self.state.as_ptr()) }
    }
}

/// Storage-format scratch size: header byte plus the largest frame, rounded up.
const SCRATCH_BYTES: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcm::analysis::{dominant_frequency, snr_db, tone};

    fn encode_all(encoder: &mut AmrWbEncoder, pcm: &[i16], mode: Mode) -> Vec<(EncodedFrame, [u8; MAX_FRAME_BYTES])> {
        pcm.chunks_exact(FRAME_SAMPLES)
            .map(|chunk| {
                let mut out = [0u8; MAX_FRAME_BYTES];
                let frame = encoder.encode(chunk.try_into().unwrap(), mode, &mut out).unwrap();
                (frame, out)
            })
            .collect()
    }

    #[test]
    fn every_mode_round_trips_a_tone() {
        let input = tone(16_000, 440.0, -12.0, 16_000 * 2);
        for mode in Mode::ALL {
            let mut encoder = AmrWbEncoder::new(false).unwrap();
            let mut decoder = AmrWbDecoder::new().unwrap();
            let mut output = Vec::new();
            for (frame, out) in encode_all(&mut encoder, &input, mode) {
                assert_eq!(frame.frame_type, FrameType::Speech(mode));
                assert_eq!(frame.len, FrameType::Speech(mode).bytes());
                let mut pcm = [0i16; FRAME_SAMPLES];
                decoder.decode(frame.frame(&out), &mut pcm).unwrap();
                output.extend_from_slice(&pcm);
            }
            let decoded = &output[CODEC_DELAY..];
            let frequency = dominant_frequency(&decoded[3200..], 16_000);
            assert!((frequency - 440.0).abs() < 2.0, "mode {mode:?}: {frequency} Hz");
            // stack.md §5 measured 8.3 dB at mode 0 and 18 dB at mode 8 on a two-tone signal.
            let snr = snr_db(&input[3200..input.len() - CODEC_DELAY], &decoded[3200..]);
            assert!(snr > 5.0, "mode {mode:?}: SNR {snr:.1} dB");
        }
    }

    #[test]
    fn dtx_gives_sid_and_no_data_on_silence_and_decodes_them() {
        let silence = vec![0i16; FRAME_SAMPLES * 40];
        let mut encoder = AmrWbEncoder::new(true).unwrap();
        let mut decoder = AmrWbDecoder::new().unwrap();
        let frames = encode_all(&mut encoder, &silence, Mode::M8);
        let sids = frames.iter().filter(|(f, _)| f.frame_type == FrameType::Sid).count();
        let no_data = frames.iter().filter(|(f, _)| f.frame_type == FrameType::NoData).count();
        assert!(sids >= 2, "SID frames: {sids}");
        assert!(no_data >= 20, "NO_DATA frames: {no_data}");
        for (frame, out) in &frames {
            assert_eq!(frame.len, frame.frame_type.bytes());
            let mut pcm = [1i16; FRAME_SAMPLES];
            decoder.decode(frame.frame(out), &mut pcm).unwrap();
            // Comfort noise for digital silence stays quiet.
            assert!(pcm.iter().all(|s| s.unsigned_abs() < 2000), "{:?}", frame.frame_type);
        }
    }

    #[test]
    fn dtx_off_never_gives_sid() {
        let silence = vec![0i16; FRAME_SAMPLES * 20];
        let mut encoder = AmrWbEncoder::new(false).unwrap();
        assert!(!encoder.dtx());
        for (frame, _) in encode_all(&mut encoder, &silence, Mode::M2) {
            assert_eq!(frame.frame_type, FrameType::Speech(Mode::M2));
        }
        encoder.set_dtx(true);
        let later = encode_all(&mut encoder, &silence, Mode::M2);
        assert!(later.iter().any(|(f, _)| f.frame_type != FrameType::Speech(Mode::M2)));
    }

    #[test]
    fn wrong_frame_size_is_an_error() {
        let mut decoder = AmrWbDecoder::new().unwrap();
        let mut pcm = [0i16; FRAME_SAMPLES];
        let data = [0u8; 59];
        let frame = FrameRef { frame_type: FrameType::Speech(Mode::M8), quality: FrameQuality::Good, data: &data };
        assert_eq!(
            decoder.decode(frame, &mut pcm),
            Err(AmrWbError::WrongFrameSize { frame_type: FrameType::Speech(Mode::M8), expected: 60, actual: 59 })
        );
        let sid = FrameRef { frame_type: FrameType::NoData, quality: FrameQuality::Good, data: &data[..1] };
        assert!(matches!(decoder.decode(sid, &mut pcm), Err(AmrWbError::WrongFrameSize { expected: 0, .. })));
    }

    #[test]
    fn loss_and_damaged_frames_are_concealed_not_played() {
        let input = tone(16_000, 600.0, -12.0, FRAME_SAMPLES * 30);
        let mut encoder = AmrWbEncoder::new(false).unwrap();
        let frames = encode_all(&mut encoder, &input, Mode::M8);
        // Three decoders in the same state after 20 good frames.
        let mut decoders: Vec<AmrWbDecoder> = (0..3).map(|_| AmrWbDecoder::new().unwrap()).collect();
        let mut pcm = [0i16; FRAME_SAMPLES];
        for decoder in &mut decoders {
            for (frame, out) in &frames[..20] {
                decoder.decode(frame.frame(out), &mut pcm).unwrap();
            }
        }
        // A lost frame continues the tone from memory rather than going silent.
        let mut concealed = [0i16; FRAME_SAMPLES];
        decoders[0].conceal(&mut concealed);
        assert!(crate::pcm::analysis::rms_dbfs(&concealed) > -30.0);
        // A damaged frame (Q = 0) is concealed exactly like a loss, whatever its bits...
        let garbage = [0xA5u8; 60];
        let damaged =
            FrameRef { frame_type: FrameType::Speech(Mode::M8), quality: FrameQuality::Damaged, data: &garbage };
        let mut from_damaged = [0i16; FRAME_SAMPLES];
        decoders[1].decode(damaged, &mut from_damaged).unwrap();
        assert_eq!(from_damaged, concealed);
        // ...whereas the same bits marked good are played.
        let mut played = [0i16; FRAME_SAMPLES];
        decoders[2].decode(FrameRef { quality: FrameQuality::Good, ..damaged }, &mut played).unwrap();
        assert_ne!(played, concealed);
    }

    #[test]
    fn encoder_and_decoder_are_send() {
        fn assert_send<T: Send>() {}
        assert_send::<AmrWbEncoder>();
        assert_send::<AmrWbDecoder>();
    }

    #[test]
    fn a_decoder_is_reusable_across_streams_and_threads() {
        let input = tone(16_000, 1000.0, -12.0, FRAME_SAMPLES * 25);
        let mut encoder = AmrWbEncoder::new(false).unwrap();
        let frames = encode_all(&mut encoder, &input, Mode::M4);
        let decoder = AmrWbDecoder::new().unwrap();
        let decoder = std::thread::spawn(move || {
            let mut decoder = decoder;
            let mut pcm = [0i16; FRAME_SAMPLES];
            for (frame, out) in &frames {
                decoder.decode(frame.frame(out), &mut pcm).unwrap();
            }
            decoder
        })
        .join()
        .unwrap();
        drop(decoder);
    }

    const CODEC_DELAY: usize = super::super::CODEC_DELAY_SAMPLES;
}
