//! The per-frame path allocates nothing once a leg's buffers exist: the two chains of the
//! bridge and a three-party mix run under a counting global allocator for 500 frames.
//! (Allocations inside the C libraries do not pass through Rust's allocator; libopus,
//! opencore-amrwb and vo-amrwbenc allocate only in their init functions.)
//!
//! The counting allocator (`counting_alloc`) implements `GlobalAlloc`, an unsafe trait, hence
//! the allow.
#![allow(unsafe_code)]

use codecs::amrwb::{AmrWbDecoder, AmrWbEncoder, FRAME_SAMPLES, MAX_FRAME_BYTES, Mode};
use codecs::g711::{self, Law};
use codecs::opus::{MAX_PACKET_BYTES, OpusDecoder, OpusEncoder, OpusEncoderConfig, SampleRate};
use codecs::pcm::NMinusOneMixer;
use codecs::rfc4733::{Event, TelephoneEventReceiver, TelephoneEventSender};
use codecs::rfc4867::{Cmr, Depacketizer, PacketFrames, Packetizer, PayloadConfig};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

#[test]
fn chains_mixer_and_events_allocate_nothing_per_frame() {
    // Per leg, once.
    let be = PayloadConfig::bandwidth_efficient();
    let (packetizer, depacketizer) = (Packetizer::new(be), Depacketizer::new(be));
    let mut frames = PacketFrames::new();
    let mut amr_encoder = AmrWbEncoder::new(true).unwrap();
    let mut amr_decoder = AmrWbDecoder::new().unwrap();
    let mut opus16 = OpusEncoder::new(SampleRate::Hz16000, OpusEncoderConfig::default()).unwrap();
    let mut opus8 = OpusEncoder::new(SampleRate::Hz8000, OpusEncoderConfig::default()).unwrap();
    let mut opus_decoder = OpusDecoder::new(SampleRate::Hz16000).unwrap();
    let mut mixer = NMinusOneMixer::new(3, FRAME_SAMPLES);
    let mut sender = TelephoneEventSender::new(16_000, 20);
    let mut receiver = TelephoneEventReceiver::new();
    let start = std::time::Instant::now();
    let mut pcm = [0i16; FRAME_SAMPLES];
    let mut narrow = [0i16; 160];
    let mut ulaw = [0u8; 160];
    let mut decoded = [0i16; FRAME_SAMPLES];
    let mut bits = [0u8; MAX_FRAME_BYTES];
    let mut payload = [0u8; 256];
    let mut opus = [0u8; MAX_PACKET_BYTES];
    let others = [[100i16; FRAME_SAMPLES], [-50i16; FRAME_SAMPLES]];

    let mut run = |frame: usize| {
        for (n, s) in pcm.iter_mut().enumerate() {
            // Talk for 200 ms, pause for 200 ms, so DTX frames go through too.
            let on = (frame / 10).is_multiple_of(2);
            *s = if on { (((frame * FRAME_SAMPLES + n) as f64 * 0.2).sin() * 8_000.0) as i16 } else { 0 };
        }
        // AMR-WB leg: encode, packetize, depacketize, decode.
        let encoded = amr_encoder.encode(&pcm, Mode::M8, &mut bits).unwrap();
        let len = packetizer.packetize(Cmr::NoRequest, &[encoded.frame(&bits)], &mut payload).unwrap();
        depacketizer.depacketize(&payload[..len], &mut frames).unwrap();
        for frame in frames.iter() {
            amr_decoder.decode(frame, &mut decoded).unwrap();
        }
        // Mix with two others, Opus out and back.
        mixer.mix(&[Some(&decoded), Some(&others[0]), Some(&others[1])]).unwrap();
        let len = opus16.encode(mixer.output(0), &mut opus).unwrap();
        opus_decoder.decode(&opus[..len], &mut decoded).unwrap();
        // PCMU leg.
        for (o, pair) in narrow.iter_mut().zip(decoded.chunks_exact(2)) {
            *o = pair[0];
        }
        g711::encode(Law::Mu, &narrow, &mut ulaw).unwrap();
        g711::decode(Law::Mu, &ulaw, &mut narrow).unwrap();
        opus8.encode(&narrow, &mut opus).unwrap();
        // A digit every 50 frames.
        if frame.is_multiple_of(50) && sender.is_idle() {
            sender.start(frame as u32 * 320, Event(5), 10, 100).unwrap();
        }
        if let Some(packet) = sender.poll_packet() {
            let bytes = packet.payload.to_bytes();
            receiver.handle_packet(start, packet.timestamp, &bytes).unwrap();
            while receiver.poll_event().is_some() {}
        }
    };
    for frame in 0..20 {
        run(frame);
    }
    let before = counting_alloc::allocations();
    // The counter is live: setting up the mixer and the event queue allocated.
    assert!(before > 0);
    for frame in 20..520 {
        run(frame);
    }
    let after = counting_alloc::allocations();
    assert_eq!(after - before, 0, "{} allocations in 500 frames", after - before);
}
