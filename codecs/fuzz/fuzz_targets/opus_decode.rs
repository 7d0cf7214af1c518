//! The Opus decoder fed arbitrary packets, with PLC and FEC decoding in between.
#![no_main]

use codecs::opus::{OpusDecoder, SampleRate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, packet)) = data.split_first() else {
        return;
    };
    let rate =
        [SampleRate::Hz8000, SampleRate::Hz16000, SampleRate::Hz48000][usize::from(control % 3)];
    let mut decoder = OpusDecoder::new(rate).unwrap();
    let mut pcm = [0i16; 5760];
    let frame = rate.frame_20ms();
    let _ = decoder.packet_samples(packet);
    let _ = decoder.decode(packet, &mut pcm);
    if control & 0x10 != 0 {
        let _ = decoder.decode_fec(packet, &mut pcm[..frame]);
    }
    if control & 0x20 != 0 {
        decoder.conceal(&mut pcm[..frame]).unwrap();
    }
    // A buffer too small for the packet is an error, not an overflow.
    let _ = decoder.decode(packet, &mut pcm[..usize::from(control)]);
});
