//! A capture file (pcap or pcapng) read into timestamped UDP datagrams and TCP-carried SIP
//! messages.
//!
//! Link layers: Ethernet, Linux cooked (SLL and SLL2), BSD loopback (NULL and LOOP) and raw IP.
//! TCP is reassembled per flow by sequence number (segments may be captured out of order or
//! twice) and the stream is cut into SIP messages by their Content-Length (RFC 3261 §18.3).
//! Packets that are not IP, not UDP/TCP, or IP fragments are skipped and counted; a file that
//! cannot be read, or a link type we do not know, is an error.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice};
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};

/// The transport a packet or message came over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// One datagram.
    Udp,
    /// A message cut out of a reassembled stream.
    Tcp,
}

impl Transport {
    /// The name in a Via header.
    pub fn via_name(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
        }
    }
}

/// A UDP datagram, or one SIP message of a TCP stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Capture time (since the epoch, as the file says).
    pub ts: Duration,
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// UDP or TCP.
    pub transport: Transport,
    /// Datagram payload, or the whole message for TCP.
    pub payload: Vec<u8>,
}

/// What a capture holds, in time order.
#[derive(Debug, Default)]
pub struct Capture {
    /// UDP datagrams and TCP messages, sorted by time.
    pub packets: Vec<Packet>,
    /// Frames that were not IPv4/IPv6 UDP or TCP, or were fragments.
    pub skipped: usize,
    /// Bytes of TCP streams that did not form a whole message (a gap or a cut at the end).
    pub tcp_leftover: usize,
}

/// Why a capture cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Neither the pcap nor the pcapng magic number.
    #[error("not a pcap or pcapng file (first bytes {0:02x?})")]
    NotACapture(Vec<u8>),
    /// The file header or a record is cut short or inconsistent.
    #[error("corrupt or truncated capture at record {record}: {source}")]
    Corrupt {
        /// Records read successfully before it.
        record: usize,
        /// What pcap-file said.
        source: pcap_file::PcapError,
    },
    /// A link type we cannot take apart.
    #[error("unsupported link type {0:?} (supported: Ethernet, Linux SLL/SLL2, loopback NULL, raw IP)")]
    UnknownLinkType(DataLink),
    /// A pcapng packet names an interface that was never described.
    #[error("pcapng packet {record} names interface {interface}, which has no description block")]
    UnknownInterface {
        /// Its record number.
        record: usize,
        /// The interface id.
        interface: u32,
    },
}

/// Reads a whole capture file's bytes.
pub fn read(bytes: &[u8]) -> Result<Capture, CaptureError> {
    let magic = bytes.get(..4).unwrap_or(bytes);
    let mut frames = Vec::new();
    match magic {
        [0x0a, 0x0d, 0x0d, 0x0a] => read_pcapng(bytes, &mut frames)?,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xd4, 0xc3, 0xb2, 0xa1] | [0xa1, 0xb2, 0x3c, 0x4d] | [0x4d, 0x3c, 0xb2, 0xa1] => {
            read_pcap(bytes, &mut frames)?;
        }
        _ => return Err(CaptureError::NotACapture(magic.to_vec())),
    }
    let mut capture = Capture::default();
    let mut tcp = TcpFlows::default();
    for (ts, link, data) in &frames {
        let Some(sliced) = slice(*link, data) else {
            capture.skipped += 1;
            continue;
        };
        let (src_ip, dst_ip) = match &sliced.net {
            Some(NetSlice::Ipv4(ip)) if !ip.is_payload_fragmented() => {
                (IpAddr::V4(ip.header().source_addr()), IpAddr::V4(ip.header().destination_addr()))
            }
            Some(NetSlice::Ipv6(ip)) if !ip.is_payload_fragmented() => {
                (IpAddr::V6(ip.header().source_addr()), IpAddr::V6(ip.header().destination_addr()))
            }
            _ => {
                capture.skipped += 1;
                continue;
            }
        };
        match &sliced.transport {
            Some(TransportSlice::Udp(udp)) => capture.packets.push(Packet {
                ts: *ts,
                src: SocketAddr::new(src_ip, udp.source_port()),
                dst: SocketAddr::new(dst_ip, udp.destination_port()),
                transport: Transport::Udp,
                payload: udp.payload().to_vec(),
            }),
            Some(TransportSlice::Tcp(seg)) => tcp.add(
                (SocketAddr::new(src_ip, seg.source_port()), SocketAddr::new(dst_ip, seg.destination_port())),
                Segment { ts: *ts, seq: seg.sequence_number(), syn: seg.syn(), data: seg.payload().to_vec() },
            ),
            _ => capture.skipped += 1,
        }
    }
    let (messages, leftover) = tcp.into_messages();
    capture.packets.extend(messages);
    capture.tcp_leftover = leftover;
    // Stable: packets with one timestamp keep the file's order.
    capture.packets.sort_by_key(|p| p.ts);
    Ok(capture)
}

type Frame = (Duration, DataLink, Vec<u8>);

fn read_pcap(bytes: &[u8], frames: &mut Vec<Frame>) -> Result<(), CaptureError> {
    let mut reader = PcapReader::new(bytes).map_err(|source| CaptureError::Corrupt { record: 0, source })?;
    let link = reader.header().datalink;
    check_link(link)?;
    while let Some(packet) = reader.next_packet() {
        let packet = packet.map_err(|source| CaptureError::Corrupt { record: frames.len(), source })?;
        frames.push((packet.timestamp, link, packet.data.into_owned()));
    }
    Ok(())
}

fn read_pcapng(bytes: &[u8], frames: &mut Vec<Frame>) -> Result<(), CaptureError> {
    let mut reader = PcapNgReader::new(bytes).map_err(|source| CaptureError::Corrupt { record: 0, source })?;
    // Per interface: link type and timestamp resolution (ticks per second).
    let mut interfaces: Vec<(DataLink, u64)> = Vec::new();
    let mut record = 0;
    while let Some(block) = reader.next_block() {
        let block = block.map_err(|source| CaptureError::Corrupt { record, source })?;
        record += 1;
        match block {
            // A new section starts a new interface numbering (pcapng §4.1).
            Block::SectionHeader(_) => interfaces.clear(),
            Block::InterfaceDescription(idb) => {
                check_link(idb.linktype)?;
                let resolution = idb
                    .options
                    .iter()
                    .find_map(|o| match o {
                        pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption::IfTsResol(r) => {
                            Some(*r)
                        }
                        _ => None,
                    })
                    .unwrap_or(6);
                interfaces.push((idb.linktype, ticks_per_second(resolution)));
            }
            Block::EnhancedPacket(epb) => {
                let &(link, ticks) = interfaces
                    .get(epb.interface_id as usize)
                    .ok_or(CaptureError::UnknownInterface { record, interface: epb.interface_id })?;
                // pcap-file hands the raw 64-bit tick count over as nanoseconds.
                let raw = u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX);
                let ts = Duration::from_secs(raw / ticks)
                    + Duration::from_nanos(((raw % ticks) as u128 * 1_000_000_000 / ticks as u128) as u64);
                frames.push((ts, link, epb.data.into_owned()));
            }
            Block::SimplePacket(spb) => {
                let &(link, _) = interfaces.first().ok_or(CaptureError::UnknownInterface { record, interface: 0 })?;
                // Simple packets carry no time: keep the order, at the last time seen.
                let ts = frames.last().map_or(Duration::ZERO, |f| f.0);
                frames.push((ts, link, spb.data.into_owned()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `if_tsresol` (pcapng §4.2): bit 7 clear, a negative power of ten; set, of two.
fn ticks_per_second(resolution: u8) -> u64 {
    let exp = u32::from(resolution & 0x7f);
    if resolution & 0x80 == 0 {
        10u64.checked_pow(exp).unwrap_or(1_000_000)
    } else {
        2u64.checked_pow(exp).unwrap_or(1_000_000)
    }
}

fn check_link(link: DataLink) -> Result<(), CaptureError> {
    match link {
        DataLink::ETHERNET | DataLink::LINUX_SLL | DataLink::LINUX_SLL2 | DataLink::NULL | DataLink::LOOP => Ok(()),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Ok(()),
        other => Err(CaptureError::UnknownLinkType(other)),
    }
}

/// Takes a frame apart down to the transport; `None` for what is not IP.
fn slice(link: DataLink, data: &[u8]) -> Option<SlicedPacket<'_>> {
    match link {
        DataLink::ETHERNET => SlicedPacket::from_ethernet(data).ok(),
        DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(data).ok(),
        // SLL2: protocol type (2 bytes) first, a 20-byte header in all.
        DataLink::LINUX_SLL2 => {
            let proto = u16::from_be_bytes([*data.first()?, *data.get(1)?]);
            SlicedPacket::from_ether_type(EtherType(proto), data.get(SLL2_HEADER..)?).ok()
        }
        // The address family in 4 bytes, host order for NULL, network order for LOOP; what
        // follows is an IP packet, whose version the slicer reads itself.
        DataLink::NULL | DataLink::LOOP => SlicedPacket::from_ip(data.get(4..)?).ok(),
        _ => SlicedPacket::from_ip(data).ok(),
    }
}

/// One captured TCP segment.
struct Segment {
    ts: Duration,
    seq: u32,
    syn: bool,
    data: Vec<u8>,
}

/// Segments per direction of each connection.
#[derive(Default)]
struct TcpFlows {
    flows: BTreeMap<(SocketAddr, SocketAddr), Vec<Segment>>,
}

impl TcpFlows {
    fn add(&mut self, flow: (SocketAddr, SocketAddr), segment: Segment) {
        self.flows.entry(flow).or_default().push(segment);
    }

    /// Every flow reassembled and cut into messages; also the bytes that formed none.
    fn into_messages(self) -> (Vec<Packet>, usize) {
        let mut out = Vec::new();
        let mut leftover = 0;
        for ((src, dst), segments) in self.flows {
            let stream = reassemble(&segments);
            leftover += frame_messages(&stream, |ts, payload| {
                out.push(Packet { ts, src, dst, transport: Transport::Tcp, payload });
            });
        }
        (out, leftover)
    }
}

/// The stream's bytes in sequence order, each with the capture time of the segment that
/// brought it; stops at the first gap (what follows cannot be framed reliably).
fn reassemble(segments: &[Segment]) -> Vec<(u8, Duration)> {
    // The stream starts after the SYN's sequence number, else at the lowest sequence number
    // seen, compared relative to the first segment so that a wrap of the 32-bit space is fine.
    let Some(first) = segments.first() else { return Vec::new() };
    let rel = |seq: u32| seq.wrapping_sub(first.seq) as i32 as i64;
    let start = segments
        .iter()
        .find(|s| s.syn)
        .map(|s| rel(s.seq) + 1)
        .unwrap_or_else(|| segments.iter().map(|s| rel(s.seq)).min().unwrap_or(0));
    let mut ordered: Vec<&Segment> = segments.iter().filter(|s| !s.data.is_empty()).collect();
    ordered.sort_by_key(|s| rel(s.seq));
    let mut stream: Vec<(u8, Duration)> = Vec::new();
    for s in ordered {
        let offset = rel(s.seq) - start;
        let have = stream.len() as i64;
        if offset > have {
            break;
        }
        // A retransmission overlaps what we have: keep only its new bytes.
        let skip = usize::try_from(have - offset).unwrap_or(usize::MAX);
        stream.extend(s.data.iter().skip(skip).map(|b| (*b, s.ts)));
    }
    stream
}

/// Cuts SIP messages off the stream; `emit(ts, message)` for each, with the time its last byte
/// was captured. Returns the bytes left over.
fn frame_messages(stream: &[(u8, Duration)], mut emit: impl FnMut(Duration, Vec<u8>)) -> usize {
    let bytes: Vec<u8> = stream.iter().map(|(b, _)| *b).collect();
    let mut pos = 0;
    loop {
        // Keep-alive CRLFs between messages (RFC 5626 §3.5.1) are not messages.
        while pos < bytes.len() && (bytes[pos] == b'\r' || bytes[pos] == b'\n') {
            pos += 1;
        }
        let Some(len) = message_len(&bytes[pos..]) else { return bytes.len() - pos };
        let end = pos + len;
        let ts = stream[pos..end].iter().map(|(_, t)| *t).max().unwrap_or_default();
        emit(ts, bytes[pos..end].to_vec());
        pos = end;
    }
}

/// The length of the first whole message of `bytes` (head and Content-Length body), if whole.
pub(crate) fn message_len(bytes: &[u8]) -> Option<usize> {
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&bytes[..head_end]);
    let body = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| {
            let n = name.trim();
            n.eq_ignore_ascii_case("Content-Length") || n.eq_ignore_ascii_case("l")
        })
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let len = head_end.checked_add(body)?;
    (len <= bytes.len()).then_some(len)
}

/// Length of the Linux cooked v2 header.
const SLL2_HEADER: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(seq: u32, data: &[u8], ms: u64) -> Segment {
        Segment { ts: Duration::from_millis(ms), seq, syn: false, data: data.to_vec() }
    }

    #[test]
    fn out_of_order_and_duplicate_segments_reassemble() {
        let segments = vec![
            Segment { ts: Duration::ZERO, seq: 99, syn: true, data: vec![] },
            seg(106, b"world", 3),
            seg(100, b"hello ", 1),
            seg(100, b"hello ", 2),
            seg(109, b"ld!", 4),
        ];
        let text: Vec<u8> = reassemble(&segments).iter().map(|(b, _)| *b).collect();
        assert_eq!(text, b"hello world!");
    }

    #[test]
    fn sequence_numbers_may_wrap() {
        let segments = vec![seg(0, b"cd", 2), seg(u32::MAX - 1, b"ab", 1)];
        let text: Vec<u8> = reassemble(&segments).iter().map(|(b, _)| *b).collect();
        assert_eq!(text, b"abcd");
    }

    #[test]
    fn a_gap_stops_the_stream() {
        let segments = vec![seg(0, b"ab", 1), seg(10, b"zz", 2)];
        assert_eq!(reassemble(&segments).len(), 2);
    }

    #[test]
    fn messages_are_framed_by_content_length() {
        let two =
            b"OPTIONS sip:a SIP/2.0\r\nl: 3\r\n\r\nabc\r\n\r\nBYE sip:b SIP/2.0\r\nContent-Length: 0\r\n\r\nINVITE";
        let stream: Vec<(u8, Duration)> = two.iter().map(|b| (*b, Duration::ZERO)).collect();
        let mut got = Vec::new();
        let left = frame_messages(&stream, |_, m| got.push(m));
        assert_eq!(got.len(), 2);
        assert!(got[0].ends_with(b"abc"));
        assert!(got[1].starts_with(b"BYE"));
        assert_eq!(left, 6);
    }

    #[test]
    fn garbage_is_not_a_capture() {
        assert!(matches!(read(b"hello world"), Err(CaptureError::NotACapture(_))));
        assert!(matches!(read(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0]), Err(CaptureError::Corrupt { .. })));
    }

    const SIP: &[u8] = b"OPTIONS sip:gw@h SIP/2.0\r\nContent-Length: 0\r\n\r\n";

    fn ipv4_udp() -> Vec<u8> {
        let b = etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(5061, 5060);
        let mut out = Vec::new();
        b.write(&mut out, SIP).unwrap();
        out
    }

    fn ipv6_udp() -> Vec<u8> {
        let b = etherparse::PacketBuilder::ipv6(
            [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            64,
        )
        .udp(5061, 5060);
        let mut out = Vec::new();
        b.write(&mut out, SIP).unwrap();
        out
    }

    fn pcap(link: DataLink, frame: Vec<u8>) -> Vec<u8> {
        let header = pcap_file::pcap::PcapHeader { datalink: link, ..Default::default() };
        let mut w = pcap_file::pcap::PcapWriter::with_header(Vec::new(), header).unwrap();
        w.write_packet(&pcap_file::pcap::PcapPacket::new(Duration::from_secs(7), frame.len() as u32, &frame)).unwrap();
        w.into_writer()
    }

    fn one_packet(bytes: &[u8]) -> Packet {
        let capture = read(bytes).unwrap();
        assert_eq!(capture.packets.len(), 1, "skipped {}", capture.skipped);
        capture.packets[0].clone()
    }

    #[test]
    fn every_link_type_reaches_the_udp_payload() {
        let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 1, 0, 1, 4, 6, 2, 0, 0, 0, 0, 1, 0, 0];
        sll2.extend(ipv4_udp());
        let mut null_v6 = 30u32.to_le_bytes().to_vec();
        null_v6.extend(ipv6_udp());
        let mut loop_v4 = 2u32.to_be_bytes().to_vec();
        loop_v4.extend(ipv4_udp());
        let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
        sll.extend(ipv4_udp());
        let mut eth = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        eth.extend(ipv6_udp());
        for (link, frame) in [
            (DataLink::LINUX_SLL2, sll2),
            (DataLink::NULL, null_v6),
            (DataLink::LOOP, loop_v4),
            (DataLink::LINUX_SLL, sll),
            (DataLink::ETHERNET, eth),
            (DataLink::RAW, ipv6_udp()),
        ] {
            let p = one_packet(&pcap(link, frame));
            assert_eq!(p.payload, SIP, "{link:?}");
            assert_eq!(p.dst.port(), 5060, "{link:?}");
            assert_eq!(p.ts, Duration::from_secs(7));
        }
    }

    #[test]
    fn pcapng_timestamps_follow_the_interface_resolution() {
        use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
        use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
        let mut w = pcap_file::pcapng::PcapNgWriter::new(Vec::new()).unwrap();
        // Default resolution: microseconds. 1.5 s = 1_500_000 ticks.
        w.write_pcapng_block(InterfaceDescriptionBlock { linktype: DataLink::RAW, snaplen: 0, options: vec![] })
            .unwrap();
        let frame = ipv4_udp();
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_nanos(1_500_000),
            original_len: frame.len() as u32,
            data: frame.into(),
            options: vec![],
        })
        .unwrap();
        let p = one_packet(&w.into_inner());
        assert_eq!(p.ts, Duration::from_millis(1500));
    }

    #[test]
    fn unknown_link_types_and_truncated_files_are_errors() {
        assert!(matches!(read(&pcap(DataLink::USER0, ipv4_udp())), Err(CaptureError::UnknownLinkType(_))));
        let whole = pcap(DataLink::RAW, ipv4_udp());
        assert!(matches!(read(&whole[..whole.len() - 5]), Err(CaptureError::Corrupt { record: 0, .. })));
    }

    #[test]
    fn tsresol_is_decoded() {
        assert_eq!(ticks_per_second(6), 1_000_000);
        assert_eq!(ticks_per_second(9), 1_000_000_000);
        assert_eq!(ticks_per_second(0x80 | 10), 1024);
    }
}
