//! tshark's AMR dissector reads our bandwidth-efficient (and octet-aligned) payloads with no
//! malformed frame, and sees the CMR, ToC and frame types we wrote.
mod common;

use codecs::amrwb::{AmrWbEncoder, FRAME_SAMPLES, FrameQuality, FrameRef, FrameType, MAX_FRAME_BYTES, Mode};
use codecs::pcm::analysis::tone;
use codecs::rfc4867::{Cmr, Layout, Packetizer, PayloadConfig};

const PORT: u16 = 40_000;

/// One packet's CMR and ToC as we wrote them.
type Expected = (u8, Vec<(u8, bool)>);

/// A call's worth of packets: every mode, one and three frames per packet, SID, NO_DATA and
/// damaged frames, different CMRs. Returns the RTP packets and what each should dissect to.
fn make_packets(layout: Layout) -> (Vec<Vec<u8>>, Vec<Expected>) {
    let input = tone(16_000, 500.0, -12.0, FRAME_SAMPLES * 3);
    let packetizer = Packetizer::new(PayloadConfig { layout, ..PayloadConfig::bandwidth_efficient() });
    let mut encoder = AmrWbEncoder::new(false).unwrap();
    let mut packets = Vec::new();
    let mut expected = Vec::new();
    let mut push = |cmr: Cmr, frames: &[FrameRef<'_>]| {
        let mut payload = [0u8; 400];
        let len = packetizer.packetize(cmr, frames, &mut payload).unwrap();
        let i = packets.len();
        let header = common::RtpHeader {
            marker: i == 0,
            payload_type: 96,
            sequence: i as u16,
            timestamp: 320 * i as u32,
            ssrc: 0xA3B,
        };
        packets.push(common::build_rtp(header, &payload[..len]));
        expected.push((cmr.bits(), frames.iter().map(|f| (f.frame_type.ft(), f.quality.bit())).collect()));
    };
    let mut bits = [[0u8; MAX_FRAME_BYTES]; 3];
    for (m, mode) in Mode::ALL.into_iter().enumerate() {
        let [a, b, c] = &mut bits;
        let chunk = |i: usize| -> &[i16; FRAME_SAMPLES] {
            input[i * FRAME_SAMPLES..(i + 1) * FRAME_SAMPLES].try_into().unwrap()
        };
        let fa = encoder.encode(chunk(0), mode, a).unwrap();
        let fb = encoder.encode(chunk(1), mode, b).unwrap();
        let fc = encoder.encode(chunk(2), mode, c).unwrap();
        let cmr = Cmr::Mode(Mode::ALL[8 - m]);
        push(cmr, &[fa.frame(a)]);
        let damaged = FrameRef { quality: FrameQuality::Damaged, ..fc.frame(c) };
        push(Cmr::NoRequest, &[fa.frame(a), fb.frame(b), damaged]);
        let no_data = FrameRef { frame_type: FrameType::NoData, quality: FrameQuality::Good, data: &[] };
        push(cmr, &[fa.frame(a), no_data, fc.frame(c)]);
    }
    let sid = [0x5Au8; 5];
    push(Cmr::NoRequest, &[FrameRef { frame_type: FrameType::Sid, quality: FrameQuality::Good, data: &sid }]);
    (packets, expected)
}

fn tshark(pcap: &std::path::Path, preference: &str) -> String {
    let output = common::run(
        "tshark",
        "tshark",
        &[
            "-n",
            "-r",
            pcap.to_str().unwrap(),
            "-d",
            &format!("udp.port=={PORT},rtp"),
            "-d",
            "rtp.pt==96,amr_wb",
            "-o",
            &format!("amr.encoding.version:{preference}"),
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-E",
            "aggregator=,",
            "-e",
            "amr.wb.cmr",
            "-e",
            "amr.wb.toc.ft",
            "-e",
            "amr.toc.q",
            "-e",
            "_ws.malformed",
            "-e",
            "_ws.expert.message",
        ],
    );
    String::from_utf8(output.stdout).unwrap()
}

fn check(layout: Layout, preference: &str) {
    let (packets, expected) = make_packets(layout);
    let dir = common::scratch_dir("tshark");
    let pcap = dir.join("ours.pcap");
    common::write_pcap(&pcap, PORT, &packets);
    let text = tshark(&pcap, preference);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), packets.len(), "tshark output:\n{text}");
    for (i, (line, (cmr, toc))) in lines.iter().zip(&expected).enumerate() {
        let fields: Vec<&str> = line.split('|').collect();
        let [cmr_field, ft_field, q_field, malformed, expert] = fields[..] else {
            panic!("packet {i}: unexpected tshark line {line:?}");
        };
        assert!(malformed.is_empty() && expert.is_empty(), "packet {i}: tshark says {malformed:?} {expert:?}");
        assert_eq!(cmr_field, cmr.to_string(), "packet {i} CMR");
        let fts: Vec<String> = toc.iter().map(|(ft, _)| ft.to_string()).collect();
        assert_eq!(ft_field, fts.join(","), "packet {i} FTs");
        let qs: Vec<&str> = toc.iter().map(|(_, q)| if *q { "1" } else { "0" }).collect();
        assert_eq!(q_field, qs.join(","), "packet {i} Q bits");
    }
}

#[test]
fn tshark_reads_our_bandwidth_efficient_payloads_without_malformed_frames() {
    check(Layout::BandwidthEfficient, "RFC 3267 BW-efficient");
}

#[test]
fn tshark_reads_our_octet_aligned_payloads_without_malformed_frames() {
    check(Layout::OctetAligned, "RFC 3267 octet aligned");
}

#[test]
fn tshark_flags_our_bandwidth_efficient_payloads_when_told_octet_aligned() {
    // The control: the same packets under the wrong preference must be flagged, or the checks
    // above could never fail.
    let (packets, _) = make_packets(Layout::BandwidthEfficient);
    let dir = common::scratch_dir("tshark-control");
    let pcap = dir.join("ours.pcap");
    common::write_pcap(&pcap, PORT, &packets);
    let text = tshark(&pcap, "RFC 3267 octet aligned");
    let flagged = text.lines().filter(|line| line.split('|').skip(3).any(|f| !f.is_empty())).count();
    assert!(flagged > packets.len() / 2, "only {flagged} of {} packets flagged:\n{text}", packets.len());
}
