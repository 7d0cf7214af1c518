//! The AMR-WB decoder fed arbitrary frames (any frame type, quality, bits and length) in
//! sequence through one decoder, as a leg would: errors for wrong sizes, never a crash.
#![no_main]

use codecs::amrwb::{AmrWbDecoder, FRAME_SAMPLES, FrameQuality, FrameRef, FrameType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut decoder = AmrWbDecoder::new().unwrap();
    let mut pcm = [0i16; FRAME_SAMPLES];
    let mut rest = data;
    // Each frame: one control byte (FT, Q, whether to use the right length), then its bits.
    while let Some((&control, tail)) = rest.split_first() {
        let Ok(frame_type) = FrameType::from_ft(control & 0x0F) else {
            rest = tail;
            continue;
        };
        let quality = FrameQuality::from_bit(control & 0x10 != 0);
        let len = if control & 0x20 != 0 {
            usize::from(control >> 6) * 20
        } else {
            frame_type.bytes()
        };
        let len = len.min(tail.len());
        let frame = FrameRef {
            frame_type,
            quality,
            data: &tail[..len],
        };
        let result = decoder.decode(frame, &mut pcm);
        assert_eq!(result.is_ok(), len == frame_type.bytes());
        if control & 0xE0 == 0xE0 {
            decoder.conceal(&mut pcm);
        }
        rest = &tail[len..];
    }
});
