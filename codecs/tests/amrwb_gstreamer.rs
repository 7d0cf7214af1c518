//! RFC 4867 octet-aligned interop with GStreamer, both ways:
//! - we depacketize packets GStreamer's rtpamrpay made (committed fixtures, see
//!   tests/fixtures/make_gstreamer_amrwb.sh) and decode them sample-identical to its amrwbdec;
//! - GStreamer's rtpamrdepay + amrwbdec read packets our packetizer made.
mod common;

use codecs::amrwb::{AmrWbDecoder, AmrWbEncoder, FRAME_SAMPLES, FrameType, MAX_FRAME_BYTES, Mode};
use codecs::pcm::analysis::{dominant_frequency, tone};
use codecs::rfc4867::{Cmr, Depacketizer, PacketFrames, Packetizer, PayloadConfig};

/// Depacketizes and decodes a fixture; returns the PCM and the frame count of each packet.
fn decode_fixture(name: &str, mode: Mode, timestamped: bool) -> (Vec<i16>, Vec<usize>) {
    let stream = std::fs::read(common::fixture(&format!("gstreamer/{name}.rtpstream"))).unwrap();
    let depacketizer = Depacketizer::new(PayloadConfig::octet_aligned());
    let mut decoder = AmrWbDecoder::new().unwrap();
    let mut frames = PacketFrames::new();
    let mut pcm = [0i16; FRAME_SAMPLES];
    let (mut output, mut per_packet) = (Vec::new(), Vec::new());
    let mut expected: Option<(u16, u32)> = None;
    for packet in common::split_rfc4571(&stream) {
        let (header, payload) = common::parse_rtp(packet);
        assert_eq!((header.payload_type, header.ssrc), (96, 0x1122_3344));
        // Sequence numbers wrap at 65535 and the 16 kHz timestamp moves 320 per frame (when
        // GStreamer had timestamps to go by: see the fixtures' README).
        if let Some((sequence, timestamp)) = expected {
            assert_eq!(header.sequence, sequence);
            if timestamped {
                assert_eq!(header.timestamp, timestamp);
            }
        }
        let cmr = depacketizer.depacketize(payload, &mut frames).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(cmr, Cmr::NoRequest);
        for frame in frames.iter() {
            assert_eq!(frame.frame_type, FrameType::Speech(mode));
            decoder.decode(frame, &mut pcm).unwrap();
            output.extend_from_slice(&pcm);
        }
        per_packet.push(frames.len());
        expected = Some((header.sequence.wrapping_add(1), header.timestamp.wrapping_add(320 * frames.len() as u32)));
    }
    (output, per_packet)
}

#[test]
fn rtpamrpay_single_frame_packets_decode_like_amrwbdec() {
    let (ours, per_packet) = decode_fixture("oa_m8_single", Mode::M8, true);
    assert_eq!(per_packet, vec![1; 50]);
    let theirs = common::read_s16le(&common::fixture("gstreamer/oa_m8_single.decoded.raw"));
    assert_eq!(ours.len(), theirs.len());
    assert!(ours == theirs, "PCM differs from GStreamer amrwbdec");
    let frequency = dominant_frequency(&ours[1_600..], 16_000);
    assert!((frequency - 440.0).abs() < 2.0, "{frequency}");
}

#[test]
fn rtpamrpay_multi_frame_packets_decode_like_amrwbdec() {
    let (ours, per_packet) = decode_fixture("oa_m2_triple", Mode::M2, false);
    // 50 frames, three per packet: 16 full packets and one of two.
    let mut expected = vec![3; 16];
    expected.push(2);
    assert_eq!(per_packet, expected);
    let theirs = common::read_s16le(&common::fixture("gstreamer/oa_m2_triple.decoded.raw"));
    assert!(ours == theirs, "PCM differs from GStreamer amrwbdec");
    let frequency = dominant_frequency(&ours[1_600..], 16_000);
    assert!((frequency - 1_000.0).abs() < 2.0, "{frequency}");
}

#[test]
fn gstreamer_depayloads_and_decodes_our_octet_aligned_packets() {
    // 1 s of 700 Hz, mode 8, two frames per packet (GStreamer decodes every frame of a packet).
    let input = tone(16_000, 700.0, -12.0, 16_000);
    let mut encoder = AmrWbEncoder::new(false).unwrap();
    let mut decoder = AmrWbDecoder::new().unwrap();
    let packetizer = Packetizer::new(PayloadConfig { max_frames: 2, ..PayloadConfig::octet_aligned() });
    let mut bits = [[0u8; MAX_FRAME_BYTES]; 2];
    let mut ours = Vec::new();
    let mut packets = Vec::new();
    for (i, pair) in input.chunks_exact(2 * FRAME_SAMPLES).enumerate() {
        let [first_bits, second_bits] = &mut bits;
        let first = encoder.encode(pair[..FRAME_SAMPLES].try_into().unwrap(), Mode::M8, first_bits).unwrap();
        let second = encoder.encode(pair[FRAME_SAMPLES..].try_into().unwrap(), Mode::M8, second_bits).unwrap();
        let frames = [first.frame(first_bits), second.frame(second_bits)];
        let mut pcm = [0i16; FRAME_SAMPLES];
        for frame in frames {
            decoder.decode(frame, &mut pcm).unwrap();
            ours.extend_from_slice(&pcm);
        }
        let mut payload = [0u8; 200];
        let len = packetizer.packetize(Cmr::NoRequest, &frames, &mut payload).unwrap();
        let header = common::RtpHeader {
            marker: i == 0,
            payload_type: 96,
            sequence: i as u16,
            timestamp: 640 * i as u32,
            ssrc: 0x5EED,
        };
        packets.push(common::build_rtp(header, &payload[..len]));
    }
    let dir = common::scratch_dir("gst-depay");
    let stream = dir.join("ours.rtpstream");
    let decoded = dir.join("gst.raw");
    std::fs::write(&stream, common::join_rfc4571(&packets)).unwrap();
    common::run(
        "gst-launch-1.0",
        "gstreamer1.0-tools (with gstreamer1.0-plugins-good and -ugly)",
        &[
            "-q",
            "filesrc",
            &format!("location={}", stream.display()),
            "!",
            "application/x-rtp-stream",
            "!",
            "rtpstreamdepay",
            "!",
            "application/x-rtp,media=audio,clock-rate=16000,encoding-name=AMR-WB,octet-align=(string)1,payload=96",
            "!",
            "rtpamrdepay",
            "!",
            "amrwbdec",
            "!",
            "filesink",
            &format!("location={}", decoded.display()),
        ],
    );
    let theirs = common::read_s16le(&decoded);
    assert_eq!(theirs.len(), ours.len(), "GStreamer decoded {} samples", theirs.len());
    assert!(theirs == ours, "GStreamer's decoding of our packets differs from ours");
}
