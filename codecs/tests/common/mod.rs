//! Helpers shared by the integration tests: external tools, scratch files, RTP and pcap.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs an external tool; a missing tool fails the test with the package to install.
pub fn run(tool: &str, package: &str, args: &[&str]) -> Output {
    let output = Command::new(tool).args(args).output().unwrap_or_else(|err| {
        panic!(
            "`{tool}` could not be run ({err}): install the Debian package `{package}` \
             (deps/test-packages.txt lists what the tests need)"
        )
    });
    assert!(
        output.status.success(),
        "`{tool} {}` failed with {}:\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A fresh scratch directory for one test under cargo's per-target temporary directory.
pub fn scratch_dir(test: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let unique = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("codecs-{test}-{}-{unique}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The path of a committed fixture.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn read_s16le(path: &std::path::Path) -> Vec<i16> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

pub fn write_s16le(path: &std::path::Path, samples: &[i16]) {
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

/// The fields of an RTP header (RFC 3550 §5.1) the tests look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// Splits an RTP packet into header and payload (CSRCs, extension and padding skipped).
pub fn parse_rtp(packet: &[u8]) -> (RtpHeader, &[u8]) {
    assert!(packet.len() >= 12 && packet[0] >> 6 == 2, "not RTP: {packet:02x?}");
    let csrc = usize::from(packet[0] & 0x0F);
    let mut start = 12 + 4 * csrc;
    if packet[0] & 0x10 != 0 {
        let words = usize::from(u16::from_be_bytes([packet[start + 2], packet[start + 3]]));
        start += 4 + 4 * words;
    }
    let mut end = packet.len();
    if packet[0] & 0x20 != 0 {
        end -= usize::from(packet[end - 1]);
    }
    let header = RtpHeader {
        marker: packet[1] & 0x80 != 0,
        payload_type: packet[1] & 0x7F,
        sequence: u16::from_be_bytes([packet[2], packet[3]]),
        timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
        ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
    };
    (header, &packet[start..end])
}

/// Builds an RTP packet with no CSRC, extension or padding.
pub fn build_rtp(header: RtpHeader, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x80, (u8::from(header.marker) << 7) | header.payload_type];
    packet.extend(header.sequence.to_be_bytes());
    packet.extend(header.timestamp.to_be_bytes());
    packet.extend(header.ssrc.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

/// Splits an RFC 4571 stream (2-byte big-endian length before each packet).
pub fn split_rfc4571(stream: &[u8]) -> Vec<&[u8]> {
    let mut packets = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        assert!(rest.len() >= 2, "dangling length prefix");
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        assert!(rest.len() >= 2 + len, "truncated packet in stream");
        packets.push(&rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
    packets
}

/// Frames RTP packets as an RFC 4571 stream.
pub fn join_rfc4571(packets: &[Vec<u8>]) -> Vec<u8> {
    packets.iter().flat_map(|p| (p.len() as u16).to_be_bytes().into_iter().chain(p.iter().copied())).collect()
}

/// Writes UDP datagrams from 127.0.0.1:`port` to 127.0.0.1:`port` into a pcap file with
/// link type RAW (IPv4 packets, no Ethernet), one every 20 ms.
pub fn write_pcap(path: &std::path::Path, port: u16, datagrams: &[Vec<u8>]) {
    let mut file = Vec::new();
    // Global header: magic, version 2.4, zone 0, sigfigs 0, snaplen 65535, LINKTYPE_RAW (101).
    file.extend(0xA1B2_C3D4u32.to_le_bytes());
    file.extend(2u16.to_le_bytes());
    file.extend(4u16.to_le_bytes());
    file.extend(0i32.to_le_bytes());
    file.extend(0u32.to_le_bytes());
    file.extend(65_535u32.to_le_bytes());
    file.extend(101u32.to_le_bytes());
    for (i, payload) in datagrams.iter().enumerate() {
        let udp_len = 8 + payload.len();
        let ip_len = 20 + udp_len;
        let mut ip =
            vec![0x45, 0, (ip_len >> 8) as u8, ip_len as u8, 0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1];
        let checksum = !ip.chunks(2).fold(0u32, |s, w| {
            let s = s + u32::from(u16::from_be_bytes([w[0], w[1]]));
            (s & 0xFFFF) + (s >> 16)
        }) as u16;
        ip[10..12].copy_from_slice(&checksum.to_be_bytes());
        ip.extend(port.to_be_bytes());
        ip.extend(port.to_be_bytes());
        ip.extend((udp_len as u16).to_be_bytes());
        ip.extend([0, 0]); // no UDP checksum (allowed over IPv4)
        ip.extend_from_slice(payload);
        let micros = i as u64 * 20_000;
        file.extend(((micros / 1_000_000) as u32).to_le_bytes());
        file.extend(((micros % 1_000_000) as u32).to_le_bytes());
        file.extend((ip.len() as u32).to_le_bytes());
        file.extend((ip.len() as u32).to_le_bytes());
        file.extend(ip);
    }
    std::fs::write(path, file).unwrap();
}
