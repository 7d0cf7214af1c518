use proptest::prelude::*;

use super::*;

fn frame(frame_type: FrameType, quality: FrameQuality, data: &[u8]) -> FrameRef<'_> {
    FrameRef { frame_type, quality, data }
}

fn round_trip(config: PayloadConfig, cmr: Cmr, frames: &[FrameRef<'_>]) -> (Vec<u8>, PacketFrames) {
    let mut payload = [0u8; 1500];
    let len = Packetizer::new(config).packetize(cmr, frames, &mut payload).unwrap();
    let mut out = PacketFrames::new();
    let got = Depacketizer::new(config).depacketize(&payload[..len], &mut out).unwrap();
    assert_eq!(got, cmr);
    (payload[..len].to_vec(), out)
}

// Worked by hand from RFC 4867 §4.3 (bandwidth-efficient) and §4.4 (octet-aligned):
// CMR = 15, one SID frame (FT 9, 40 bits) with Q = 1 and bits 12 34 56 78 9A.
//   BE bits: 1111 | 0 1001 1 | 0001 0010 0011 0100 0101 0110 0111 1000 1001 1010 | 000000
//   -> 11110100 11000100 10001101 00010101 10011110 00100110 10000000
//   OA: 1111 0000 | 0 1001 1 00 | 12 34 56 78 9A
const SID_BITS: [u8; 5] = [0x12, 0x34, 0x56, 0x78, 0x9A];
const SID_BE: [u8; 7] = [0xF4, 0xC4, 0x8D, 0x15, 0x9E, 0x26, 0x80];
const SID_OA: [u8; 7] = [0xF0, 0x4C, 0x12, 0x34, 0x56, 0x78, 0x9A];

#[test]
fn single_sid_frame_bit_exact_in_both_layouts() {
    let frames = [frame(FrameType::Sid, FrameQuality::Good, &SID_BITS)];
    let (be, _) = round_trip(PayloadConfig::bandwidth_efficient(), Cmr::NoRequest, &frames);
    assert_eq!(be, SID_BE);
    let (oa, _) = round_trip(PayloadConfig::octet_aligned(), Cmr::NoRequest, &frames);
    assert_eq!(oa, SID_OA);
}

// CMR = 8; three entries: mode 0 all ones (Q = 1), NO_DATA (Q = 1), mode 0 all zeros (Q = 0).
// Mode 0 has 132 bits: 16 octets and 4 bits.
//   BE: 1000 | 1 0000 1 | 1 1111 1 | 0 0000 0 = 22 header bits -> 88 7F and the top six bits of
//   the third octet; then 132 ones (bits 22..154), 132 zeros, 2 padding bits: 288 bits = 36 octets.
//   OA: 80 | 84 FC 00 | FF x16 F0 | 00 x17 = 38 octets.
fn multi_frame_example() -> (Vec<u8>, Vec<u8>) {
    let mut be = vec![0x88, 0x7F, 0x03];
    be.extend([0xFF; 16]);
    be.push(0xC0);
    be.extend([0x00; 16]);
    let mut oa = vec![0x80, 0x84, 0xFC, 0x00];
    oa.extend([0xFF; 16]);
    oa.push(0xF0);
    oa.extend([0x00; 17]);
    (be, oa)
}

#[test]
fn multi_frame_packet_with_no_data_and_a_damaged_frame_bit_exact() {
    let mut ones = [0xFFu8; 17];
    ones[16] = 0xF0;
    let zeros = [0u8; 17];
    let frames = [
        frame(FrameType::Speech(Mode::M0), FrameQuality::Good, &ones),
        frame(FrameType::NoData, FrameQuality::Good, &[]),
        frame(FrameType::Speech(Mode::M0), FrameQuality::Damaged, &zeros),
    ];
    let (expected_be, expected_oa) = multi_frame_example();
    let (be, out) = round_trip(PayloadConfig::bandwidth_efficient(), Cmr::Mode(Mode::M8), &frames);
    assert_eq!(be, expected_be);
    assert_eq!(out.iter().collect::<Vec<_>>(), frames);
    let (oa, out) = round_trip(PayloadConfig::octet_aligned(), Cmr::Mode(Mode::M8), &frames);
    assert_eq!(oa, expected_oa);
    assert_eq!(out.iter().collect::<Vec<_>>(), frames);
    let toc: Vec<bool> = out.toc().map(|entry| entry.follows).collect();
    assert_eq!(toc, [true, true, false]);
}

#[test]
fn payload_sizes_match_the_spike_measurements() {
    // stack.md §5: mode 8 single frame OA 62 / BE 61 bytes; 3 x 12.65 kbit/s OA 100 / BE 98.
    let m8 = [0u8; 60];
    let one = [frame(FrameType::Speech(Mode::M8), FrameQuality::Good, &m8)];
    assert_eq!(round_trip(PayloadConfig::octet_aligned(), Cmr::NoRequest, &one).0.len(), 62);
    assert_eq!(round_trip(PayloadConfig::bandwidth_efficient(), Cmr::NoRequest, &one).0.len(), 61);
    let m2 = [0u8; 32];
    let three = [frame(FrameType::Speech(Mode::M2), FrameQuality::Good, &m2); 3];
    assert_eq!(round_trip(PayloadConfig::octet_aligned(), Cmr::NoRequest, &three).0.len(), 100);
    assert_eq!(round_trip(PayloadConfig::bandwidth_efficient(), Cmr::NoRequest, &three).0.len(), 98);
}

#[test]
fn padding_bits_of_input_frames_do_not_leak_into_the_payload() {
    let mut dirty = [0u8; 17];
    dirty[16] = 0x0F; // only padding bits set
    let frames = [frame(FrameType::Speech(Mode::M0), FrameQuality::Good, &dirty)];
    for config in [PayloadConfig::octet_aligned(), PayloadConfig::bandwidth_efficient()] {
        let (payload, out) = round_trip(config, Cmr::NoRequest, &frames);
        assert!(payload[2..].iter().all(|&b| b == 0), "{payload:02x?}");
        assert_eq!(out.get(0).unwrap().data, [0u8; 17]);
    }
}

#[test]
fn packetizer_refuses_what_the_session_does_not_allow() {
    let m8 = [0u8; 60];
    let config = PayloadConfig {
        mode_set: ModeSet::new(&[Mode::M0, Mode::M2]),
        max_frames: 2,
        ..PayloadConfig::octet_aligned()
    };
    let packetizer = Packetizer::new(config);
    let mut out = [0u8; 200];
    let m8_frame = frame(FrameType::Speech(Mode::M8), FrameQuality::Good, &m8);
    assert_eq!(
        packetizer.packetize(Cmr::NoRequest, &[m8_frame], &mut out),
        Err(PacketizeError::ModeNotInModeSet { index: 0, mode: Mode::M8 })
    );
    let sid = frame(FrameType::Sid, FrameQuality::Good, &SID_BITS);
    assert_eq!(
        packetizer.packetize(Cmr::NoRequest, &[sid; 3], &mut out),
        Err(PacketizeError::TooManyFrames { count: 3, max: 2 })
    );
    assert_eq!(packetizer.packetize(Cmr::NoRequest, &[], &mut out), Err(PacketizeError::NoFrames));
    assert_eq!(
        packetizer.packetize(Cmr::Mode(Mode::M8), &[sid], &mut out),
        Err(PacketizeError::InvalidCmr(Cmr::Mode(Mode::M8)))
    );
    assert_eq!(
        packetizer.packetize(Cmr::Reserved(9), &[sid], &mut out),
        Err(PacketizeError::InvalidCmr(Cmr::Reserved(9)))
    );
    let short = frame(FrameType::Sid, FrameQuality::Good, &SID_BITS[..4]);
    assert_eq!(
        packetizer.packetize(Cmr::NoRequest, &[sid, short], &mut out),
        Err(PacketizeError::WrongFrameSize { index: 1, frame_type: FrameType::Sid, expected: 5, actual: 4 })
    );
    assert_eq!(
        packetizer.packetize(Cmr::NoRequest, &[sid], &mut out[..6]),
        Err(PacketizeError::BufferTooSmall { needed: 7, capacity: 6 })
    );
    // SID is allowed whatever the mode-set.
    assert_eq!(packetizer.packetize(Cmr::Mode(Mode::M2), &[sid], &mut out), Ok(7));
}

#[test]
fn depacketizer_refuses_bad_payloads_with_the_reason() {
    let oa = Depacketizer::new(PayloadConfig::octet_aligned());
    let be = Depacketizer::new(PayloadConfig::bandwidth_efficient());
    let mut out = PacketFrames::new();
    // Empty.
    assert_eq!(oa.depacketize(&[], &mut out), Err(DepacketizeError::Truncated { needed_bits: 8, available_bits: 0 }));
    assert_eq!(be.depacketize(&[], &mut out), Err(DepacketizeError::Truncated { needed_bits: 4, available_bits: 0 }));
    // CMR only: no ToC.
    assert_eq!(
        oa.depacketize(&[0xF0], &mut out),
        Err(DepacketizeError::Truncated { needed_bits: 16, available_bits: 8 })
    );
    // ToC says another entry follows, then the payload ends.
    assert_eq!(
        oa.depacketize(&[0xF0, 0xFC], &mut out),
        Err(DepacketizeError::Truncated { needed_bits: 24, available_bits: 16 })
    );
    // ToC promises a mode 8 frame (60 bytes) that is not there.
    assert_eq!(
        oa.depacketize(&[0xF0, 0x44, 1, 2, 3], &mut out),
        Err(DepacketizeError::Truncated { needed_bits: 62 * 8, available_bits: 40 })
    );
    assert_eq!(
        be.depacketize(&[0xF4, 0x00, 0x00], &mut out),
        Err(DepacketizeError::Truncated { needed_bits: 4 + 6 + 477, available_bits: 24 })
    );
    // Reserved frame type 12: 0 1100 1 00.
    assert_eq!(oa.depacketize(&[0xF0, 0x64], &mut out), Err(DepacketizeError::ReservedFrameType { index: 0, ft: 12 }));
    // Extra octets after the last frame.
    let mut long = SID_OA.to_vec();
    long.extend([0, 0]);
    assert_eq!(oa.depacketize(&long, &mut out), Err(DepacketizeError::TrailingBytes { extra: 2 }));
    let mut long = SID_BE.to_vec();
    long.push(0);
    assert_eq!(be.depacketize(&long, &mut out), Err(DepacketizeError::TrailingBytes { extra: 1 }));
    // A bandwidth-efficient payload read as octet-aligned is refused, not misread.
    assert!(oa.depacketize(&SID_BE, &mut out).is_err());
    assert!(out.is_empty());
}

#[test]
fn depacketizer_enforces_mode_set_and_frame_count() {
    let (be_payload, oa_payload) = multi_frame_example();
    let mut out = PacketFrames::new();
    let only_m8 = ModeSet::new(&[Mode::M8]);
    for (layout, payload) in [(Layout::BandwidthEfficient, &be_payload), (Layout::OctetAligned, &oa_payload)] {
        let strict = Depacketizer::new(PayloadConfig { layout, mode_set: only_m8, max_frames: 16 });
        assert_eq!(
            strict.depacketize(payload, &mut out),
            Err(DepacketizeError::ModeNotInModeSet { index: 0, mode: Mode::M0 })
        );
        assert!(out.is_empty());
        let two = Depacketizer::new(PayloadConfig { layout, mode_set: ModeSet::ALL, max_frames: 2 });
        assert_eq!(two.depacketize(payload, &mut out), Err(DepacketizeError::TooManyFrames { max: 2 }));
    }
    // A ToC of 17 NO_DATA entries overflows even the largest buffer.
    let mut many = vec![0xF0];
    many.extend([0xFC; 16]);
    many.push(0x7C);
    let oa = Depacketizer::new(PayloadConfig::octet_aligned());
    assert_eq!(oa.depacketize(&many, &mut out), Err(DepacketizeError::TooManyFrames { max: 16 }));
}

#[test]
fn a_cmr_picks_the_highest_allowed_mode_not_above_it() {
    let set = ModeSet::new(&[Mode::M2, Mode::M5, Mode::M8]);
    assert_eq!(set.mode_for_request(Mode::M8), Some(Mode::M8));
    assert_eq!(set.mode_for_request(Mode::M7), Some(Mode::M5));
    assert_eq!(set.mode_for_request(Mode::M4), Some(Mode::M2));
    assert_eq!(set.mode_for_request(Mode::M0), Some(Mode::M2));
    assert_eq!(ModeSet::new(&[]).mode_for_request(Mode::M8), None);
    assert_eq!(ModeSet::ALL.highest(), Some(Mode::M8));
}

#[test]
fn reserved_cmr_is_reported_not_refused() {
    let mut payload = SID_OA;
    payload[0] = 0xB0; // CMR 11
    let mut out = PacketFrames::new();
    let cmr = Depacketizer::new(PayloadConfig::octet_aligned()).depacketize(&payload, &mut out).unwrap();
    assert_eq!(cmr, Cmr::Reserved(11));
    assert_eq!(out.len(), 1);
}

fn arb_frame() -> impl Strategy<Value = (FrameType, FrameQuality, Vec<u8>)> {
    let frame_type = prop_oneof![
        (0u8..9).prop_map(|i| FrameType::Speech(Mode::from_index(i).unwrap())),
        Just(FrameType::Sid),
        Just(FrameType::SpeechLost),
        Just(FrameType::NoData),
    ];
    (frame_type, any::<bool>()).prop_flat_map(|(frame_type, q)| {
        proptest::collection::vec(any::<u8>(), frame_type.bytes()).prop_map(move |mut data| {
            clear_padding(&mut data, frame_type.bits());
            (frame_type, FrameQuality::from_bit(q), data)
        })
    })
}

fn arb_cmr() -> impl Strategy<Value = Cmr> {
    prop_oneof![Just(Cmr::NoRequest), (0u8..9).prop_map(|i| Cmr::Mode(Mode::from_index(i).unwrap()))]
}

proptest! {
    #[test]
    fn packetize_then_depacketize_is_the_identity(
        frames in proptest::collection::vec(arb_frame(), 1..=MAX_FRAMES_PER_PACKET),
        cmr in arb_cmr(),
        octet_align in any::<bool>(),
    ) {
        let refs: Vec<FrameRef<'_>> = frames.iter().map(|(t, q, d)| frame(*t, *q, d)).collect();
        let config = if octet_align { PayloadConfig::octet_aligned() } else { PayloadConfig::bandwidth_efficient() };
        let (payload, out) = round_trip(config, cmr, &refs);
        prop_assert_eq!(out.iter().collect::<Vec<_>>(), refs.clone());
        let expected_len = if octet_align {
            1 + refs.len() + refs.iter().map(|f| f.frame_type.bytes()).sum::<usize>()
        } else {
            (4 + 6 * refs.len() + refs.iter().map(|f| f.frame_type.bits()).sum::<usize>()).div_ceil(8)
        };
        prop_assert_eq!(payload.len(), expected_len);
    }

    #[test]
    fn depacketize_never_panics_and_clears_on_error(
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        octet_align in any::<bool>(),
    ) {
        let config = if octet_align { PayloadConfig::octet_aligned() } else { PayloadConfig::bandwidth_efficient() };
        let mut out = PacketFrames::new();
        match Depacketizer::new(config).depacketize(&payload, &mut out) {
            Ok(_) => {
                // What was accepted packs back to the same bytes, minus padding bits.
                let refs: Vec<FrameRef<'_>> = out.iter().collect();
                prop_assert!(!refs.is_empty());
            }
            Err(_) => prop_assert!(out.is_empty()),
        }
    }
}
