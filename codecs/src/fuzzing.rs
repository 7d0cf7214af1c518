//! Fuzz entry points, shared by the cargo-fuzz targets in `codecs/fuzz/` and by the
//! `fuzz_corpus` test that replays the committed corpus on every `cargo test`. Each takes
//! arbitrary bytes and panics only on a bug (a broken invariant), never on bad input.
//! Hidden from the docs: not part of the API.

use std::time::{Duration, Instant};

use crate::amrwb::{AmrWbDecoder, FRAME_SAMPLES, FrameQuality, FrameRef, FrameType};
use crate::g711::{self, Law};
use crate::opus::{OpusDecoder, SampleRate};
use crate::rfc4733::{ReceivedEvent, TelephoneEventReceiver};
use crate::rfc4867::{Depacketizer, PacketFrames, Packetizer, PayloadConfig};

/// RFC 4867 octet-aligned depacketizing; what it accepts packs back to the same frames.
pub fn depacketize_octet_aligned(data: &[u8]) {
    depacketize(PayloadConfig::octet_aligned(), data);
}

/// RFC 4867 bandwidth-efficient depacketizing; what it accepts packs back to the same frames.
pub fn depacketize_bandwidth_efficient(data: &[u8]) {
    depacketize(PayloadConfig::bandwidth_efficient(), data);
}

fn depacketize(config: PayloadConfig, data: &[u8]) {
    let mut frames = PacketFrames::new();
    let Ok(cmr) = Depacketizer::new(config).depacketize(data, &mut frames) else {
        assert!(frames.is_empty(), "a refused payload left frames behind");
        return;
    };
    let mut refs = [FrameRef { frame_type: FrameType::NoData, quality: FrameQuality::Good, data: &[] };
        crate::rfc4867::MAX_FRAMES_PER_PACKET];
    for (slot, frame) in refs.iter_mut().zip(frames.iter()) {
        *slot = frame;
    }
    let refs = &refs[..frames.len()];
    let mut payload = [0u8; 2048];
    // A reserved CMR is reported but never sent: only a sendable CMR packs.
    if let Ok(len) = Packetizer::new(config).packetize(cmr, refs, &mut payload) {
        let mut again = PacketFrames::new();
        let back = Depacketizer::new(config).depacketize(&payload[..len], &mut again);
        assert_eq!(back, Ok(cmr));
        assert!(again.iter().eq(frames.iter()), "repacked frames differ");
    }
}

/// A sequence of arbitrary AMR-WB frames through one decoder: each is one control byte (FT,
/// Q, whether to use a wrong length, whether to conceal after) and then its bits.
pub fn amrwb_decode(data: &[u8]) {
    let Ok(mut decoder) = AmrWbDecoder::new() else {
        return;
    };
    let mut pcm = [0i16; FRAME_SAMPLES];
    let mut rest = data;
    while let Some((&control, tail)) = rest.split_first() {
        let Ok(frame_type) = FrameType::from_ft(control & 0x0F) else {
            rest = tail;
            continue;
        };
        let quality = FrameQuality::from_bit(control & 0x10 != 0);
        let len = if control & 0x20 != 0 { usize::from(control >> 6) * 20 } else { frame_type.bytes() };
        let len = len.min(tail.len());
        let result = decoder.decode(FrameRef { frame_type, quality, data: &tail[..len] }, &mut pcm);
        assert_eq!(result.is_ok(), len == frame_type.bytes(), "size check disagrees");
        if control & 0xE0 == 0xE0 {
            decoder.conceal(&mut pcm);
        }
        rest = &tail[len..];
    }
}

/// An arbitrary packet through an Opus decoder (rate from the first byte), with FEC and PLC.
pub fn opus_decode(data: &[u8]) {
    let Some((&control, packet)) = data.split_first() else {
        return;
    };
    let rate = [SampleRate::Hz8000, SampleRate::Hz16000, SampleRate::Hz48000][usize::from(control % 3)];
    let Ok(mut decoder) = OpusDecoder::new(rate) else {
        return;
    };
    let mut pcm = [0i16; 5_760];
    let frame = rate.frame_20ms();
    let _ = decoder.packet_samples(packet);
    let _ = decoder.decode(packet, &mut pcm);
    if control & 0x10 != 0 {
        let _ = decoder.decode_fec(packet, &mut pcm[..frame]);
    }
    if control & 0x20 != 0 {
        assert!(decoder.conceal(&mut pcm[..frame]).is_ok(), "PLC of a valid duration failed");
    }
    // A buffer too small for the packet is an error, not an overflow.
    let _ = decoder.decode(packet, &mut pcm[..usize::from(control)]);
}

/// Arbitrary (time, timestamp, payload) records through the RFC 4733 receiver: every event
/// that begins ends at most once. Records are 11 bytes: 2 of elapsed ms, 4 of timestamp, 1
/// of payload length (mod 6), 4 of payload.
pub fn telephone_event_receive(data: &[u8]) {
    let start = Instant::now();
    let mut receiver = TelephoneEventReceiver::new();
    let (mut began, mut ended) = (0usize, 0usize);
    for record in data.chunks(11) {
        let elapsed = record.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        let now = start + Duration::from_millis(u64::from(elapsed));
        let timestamp = record.get(2..6).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let len = record.get(6).map_or(0, |&l| usize::from(l % 6));
        let payload = record.get(7..).unwrap_or(&[]);
        let _ = receiver.handle_packet(now, timestamp, &payload[..len.min(payload.len())]);
        if let Some(deadline) = receiver.poll_timeout()
            && elapsed % 3 == 0
        {
            receiver.handle_timeout(deadline);
        }
        while let Some(event) = receiver.poll_event() {
            match event {
                ReceivedEvent::Began { .. } => began += 1,
                ReceivedEvent::Ended { .. } => ended += 1,
            }
        }
        assert!(ended <= began && began <= ended + 1, "began {began}, ended {ended}");
    }
}

/// G.711 decoding of arbitrary payloads into a buffer of arbitrary size.
pub fn g711_decode(data: &[u8]) {
    let mut pcm = [0i16; 512];
    let capacity = data.first().map_or(0, |&b| usize::from(b) * 2);
    for law in [Law::Mu, Law::A] {
        let result = g711::decode(law, data, &mut pcm[..capacity]);
        assert_eq!(result.is_ok(), data.len() <= capacity, "capacity check disagrees");
    }
}
