//! RTCP for a SIP leg (RFC 3550 §6): reception statistics, SR/RR with SDES CNAME written into
//! a caller's buffer, compound packets parsed over a borrowed buffer, and the rtcp-mux demux
//! (RFC 5761 §4).
//!
//! [`ReceiveStats`] follows RFC 3550 Appendix A.1 (sequence validation with `MAX_DROPOUT` and
//! `MAX_MISORDER`), A.3 (expected, lost, fraction lost) and A.8 (interarrival jitter), and
//! remembers the last SR of the peer for LSR/DLSR (§6.4.1). Nothing here allocates.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use crate::media::rtp::{ClockRate, Ssrc};

/// RTCP packet types (RFC 3550 §12.1).
pub const PT_SR: u8 = 200;
/// Receiver report.
pub const PT_RR: u8 = 201;
/// Source description.
pub const PT_SDES: u8 = 202;
/// Goodbye.
pub const PT_BYE: u8 = 203;

/// Whether a datagram on a muxed port is RTCP: its second byte (marker and payload type for
/// RTP, packet type for RTCP) is in 192–223 (RFC 5761 §4).
pub fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.get(1).is_some_and(|pt| (192..=223).contains(pt))
}

/// A report block (RFC 3550 §6.4.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source reported on.
    pub ssrc: Ssrc,
    /// Fraction lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed on the wire).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter in RTP ticks.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last SR received (0 if none).
    pub lsr: u32,
    /// Delay since that SR in 1/65536 s (0 if none).
    pub dlsr: u32,
}

/// The sender information of an SR (RFC 3550 §6.4.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderInfo {
    /// NTP timestamp (32.32 fixed point, seconds since 1900).
    pub ntp: u64,
    /// The RTP timestamp of the same instant.
    pub rtp_timestamp: u32,
    /// Packets sent.
    pub packets: u32,
    /// Payload octets sent.
    pub octets: u32,
}

/// What a compound packet told us.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtcpSummary {
    /// The SSRC of the first SR or RR.
    pub sender_ssrc: Option<Ssrc>,
    /// Its sender info, for an SR.
    pub sender_info: Option<SenderInfo>,
    /// A report block about our SSRC.
    pub report: Option<ReportBlock>,
    /// A BYE was in it.
    pub bye: bool,
}

/// Why bytes are not RTCP, or do not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum RtcpError {
    /// Shorter than a header, or a packet's length runs past the end.
    #[error("RTCP packet at offset {offset} needs {needed} bytes, {available} left")]
    Truncated {
        /// Where the packet starts.
        offset: usize,
        /// Bytes it claims.
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// Version is not 2.
    #[error("RTCP version {version}")]
    Version {
        /// The version read.
        version: u8,
    },
    /// The first packet is not an SR or RR (RFC 3550 §6.1).
    #[error("compound RTCP starting with packet type {packet_type}")]
    NotAReport {
        /// Its type.
        packet_type: u8,
    },
    /// A report count that does not fit the packet length.
    #[error("RTCP type {packet_type} with {count} report blocks in {len} bytes")]
    BadCount {
        /// Packet type.
        packet_type: u8,
        /// Report count.
        count: u8,
        /// Packet length.
        len: usize,
    },
    /// The output buffer is too small.
    #[error("RTCP of {needed} bytes, the buffer holds {capacity}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        capacity: usize,
    },
}

/// Parses a compound packet (RFC 3550 §6.1) and picks out what the leg uses. `ours` is our
/// SSRC, to find the report block about us.
pub fn parse_compound(buf: &[u8], ours: Ssrc) -> Result<RtcpSummary, RtcpError> {
    let mut summary = RtcpSummary::default();
    let mut offset = 0;
    while offset < buf.len() {
        // 1. Common header: V, P, count, PT, length in 32-bit words minus one.
        let rest = &buf[offset..];
        let &[b0, packet_type, l0, l1, ..] = rest else {
            return Err(RtcpError::Truncated { offset, needed: 4, available: rest.len() });
        };
        let version = b0 >> 6;
        if version != 2 {
            return Err(RtcpError::Version { version });
        }
        let len = (usize::from(u16::from_be_bytes([l0, l1])) + 1) * 4;
        let packet = rest.get(..len).ok_or(RtcpError::Truncated { offset, needed: len, available: rest.len() })?;
        if offset == 0 && !matches!(packet_type, PT_SR | PT_RR) {
            return Err(RtcpError::NotAReport { packet_type });
        }
        let count = b0 & 0x1F;
        // 2. The packet types we read.
        match packet_type {
            PT_SR | PT_RR => {
                let info_len = if packet_type == PT_SR { 20 } else { 0 };
                let blocks_at = 8 + info_len;
                if packet.len() < blocks_at + 24 * usize::from(count) {
                    return Err(RtcpError::BadCount { packet_type, count, len });
                }
                let ssrc = Ssrc(be32(packet, 4));
                if summary.sender_ssrc.is_none() {
                    summary.sender_ssrc = Some(ssrc);
                    if packet_type == PT_SR {
                        summary.sender_info = Some(SenderInfo {
                            ntp: (u64::from(be32(packet, 8)) << 32) | u64::from(be32(packet, 12)),
                            rtp_timestamp: be32(packet, 16),
                            packets: be32(packet, 20),
                            octets: be32(packet, 24),
                        });
                    }
                }
                for i in 0..usize::from(count) {
                    let block = &packet[blocks_at + 24 * i..blocks_at + 24 * (i + 1)];
                    if Ssrc(be32(block, 0)) == ours {
                        let lost = be32(block, 4) & 0x00FF_FFFF;
                        // Sign-extend the 24-bit count.
                        let cumulative_lost = ((lost << 8) as i32) >> 8;
                        summary.report = Some(ReportBlock {
                            ssrc: ours,
                            fraction_lost: block[4],
                            cumulative_lost,
                            highest_seq: be32(block, 8),
                            jitter: be32(block, 12),
                            lsr: be32(block, 16),
                            dlsr: be32(block, 20),
                        });
                    }
                }
            }
            PT_BYE => summary.bye = true,
            _ => {}
        }
        offset += len;
    }
    Ok(summary)
}

/// What to put in a compound report we send.
#[derive(Clone, Copy, Debug)]
pub struct Report<'a> {
    /// Our SSRC.
    pub ssrc: Ssrc,
    /// Sender info when we sent RTP since the last report (then it is an SR).
    pub sender_info: Option<SenderInfo>,
    /// A block about the stream we receive, if any.
    pub block: Option<ReportBlock>,
    /// Our CNAME (RFC 3550 §6.5.1), at most 255 bytes.
    pub cname: &'a [u8],
}

impl Report<'_> {
    /// Writes SR or RR, then SDES with the CNAME, into `out`; returns the length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, RtcpError> {
        let cname = &self.cname[..self.cname.len().min(255)];
        let report_len =
            8 + if self.sender_info.is_some() { 20 } else { 0 } + if self.block.is_some() { 24 } else { 0 };
        // SDES: header, SSRC, CNAME item (type, length, text), end item, pad to 32 bits.
        let sdes_len = (8 + 2 + cname.len() + 1).div_ceil(4) * 4;
        let needed = report_len + sdes_len;
        let capacity = out.len();
        let out = out.get_mut(..needed).ok_or(RtcpError::BufferTooSmall { needed, capacity })?;
        out.fill(0);
        // 1. SR or RR.
        let count = u8::from(self.block.is_some());
        let packet_type = if self.sender_info.is_some() { PT_SR } else { PT_RR };
        out[0] = 0x80 | count;
        out[1] = packet_type;
        out[2..4].copy_from_slice(&((report_len / 4 - 1) as u16).to_be_bytes());
        out[4..8].copy_from_slice(&self.ssrc.0.to_be_bytes());
        let mut at = 8;
        if let Some(info) = self.sender_info {
            out[at..at + 8].copy_from_slice(&info.ntp.to_be_bytes());
            out[at + 8..at + 12].copy_from_slice(&info.rtp_timestamp.to_be_bytes());
            out[at + 12..at + 16].copy_from_slice(&info.packets.to_be_bytes());
            out[at + 16..at + 20].copy_from_slice(&info.octets.to_be_bytes());
            at += 20;
        }
        if let Some(block) = self.block {
            let lost = (block.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32) & 0x00FF_FFFF;
            out[at..at + 4].copy_from_slice(&block.ssrc.0.to_be_bytes());
            out[at + 4..at + 8].copy_from_slice(&((u32::from(block.fraction_lost) << 24) | lost).to_be_bytes());
            out[at + 8..at + 12].copy_from_slice(&block.highest_seq.to_be_bytes());
            out[at + 12..at + 16].copy_from_slice(&block.jitter.to_be_bytes());
            out[at + 16..at + 20].copy_from_slice(&block.lsr.to_be_bytes());
            out[at + 20..at + 24].copy_from_slice(&block.dlsr.to_be_bytes());
            at += 24;
        }
        // 2. SDES with one chunk: our SSRC and CNAME (RFC 3550 §6.5).
        let sdes = &mut out[at..];
        sdes[0] = 0x81;
        sdes[1] = PT_SDES;
        sdes[2..4].copy_from_slice(&((sdes_len / 4 - 1) as u16).to_be_bytes());
        sdes[4..8].copy_from_slice(&self.ssrc.0.to_be_bytes());
        sdes[8] = 1; // CNAME
        sdes[9] = cname.len() as u8;
        sdes[10..10 + cname.len()].copy_from_slice(cname);
        // The end item and padding are the zeroes already there.
        Ok(needed)
    }
}

/// RFC 3550 reception statistics for the source we receive.
#[derive(Clone, Copy, Debug)]
pub struct ReceiveStats {
    ssrc: Ssrc,
    clock: ClockRate,
    epoch: Instant,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    transit: Option<i64>,
    /// A.8: jitter in ticks, times 16.
    jitter: u32,
    last_sr: Option<(u32, Instant)>,
}

impl ReceiveStats {
    /// Statistics for `ssrc`, starting with the packet numbered `seq` arriving at `now`.
    pub fn new(ssrc: Ssrc, clock: ClockRate, seq: u16, now: Instant) -> Self {
        Self {
            ssrc,
            clock,
            epoch: now,
            max_seq: seq,
            cycles: 0,
            base_seq: u32::from(seq),
            bad_seq: RTP_SEQ_MOD + 1,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter: 0,
            last_sr: None,
        }
    }

    /// The source.
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// Counts one packet (RFC 3550 A.1 `update_seq`, A.8); `false` when the sequence number
    /// is out of line and the packet should be dropped.
    pub fn update(&mut self, now: Instant, seq: u16, timestamp: u32) -> bool {
        // 1. Sequence (A.1).
        let udelta = seq.wrapping_sub(self.max_seq);
        if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
        } else if udelta <= (RTP_SEQ_MOD - MAX_MISORDER) as u16 {
            // A large jump: accept it only when the next packet follows it (a restart).
            if u32::from(seq) == self.bad_seq {
                *self = Self {
                    last_sr: self.last_sr,
                    jitter: self.jitter,
                    ..Self::new(self.ssrc, self.clock, seq, self.epoch)
                };
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
                return false;
            }
        }
        // (else a duplicate or reordered packet: counted, max unchanged)
        self.received += 1;
        // 2. Interarrival jitter (A.8) in ticks.
        let arrival = self.clock.ticks(now.saturating_duration_since(self.epoch)) as i64;
        let transit = arrival.wrapping_sub(i64::from(timestamp));
        if let Some(last) = self.transit {
            // Timestamps wrap at 32 bits: take the difference in 32 bits.
            let d = (transit.wrapping_sub(last) as i32).unsigned_abs();
            self.jitter = self.jitter.wrapping_add(d.min(1 << 26)).wrapping_sub((self.jitter + 8) >> 4);
        }
        self.transit = Some(transit);
        true
    }

    /// Notes an SR from this source (for LSR/DLSR).
    pub fn sender_report(&mut self, now: Instant, ntp: u64) {
        self.last_sr = Some(((ntp >> 16) as u32, now));
    }

    /// Extended highest sequence number received.
    pub fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Packets expected (A.3).
    pub fn expected(&self) -> u64 {
        u64::from(self.extended_max()).saturating_sub(u64::from(self.base_seq)) + 1
    }

    /// Packets received, duplicates included.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Cumulative lost (A.3): may be negative with duplicates.
    pub fn cumulative_lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// The interarrival jitter.
    pub fn jitter(&self) -> Duration {
        self.clock.duration(u64::from(self.jitter >> 4))
    }

    /// The report block for now; starts a new interval for the fraction lost.
    pub fn report_block(&mut self, now: Instant) -> ReportBlock {
        // A.3: fraction lost over the interval.
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => {
                let delay = now.saturating_duration_since(at);
                (lsr, (delay.as_secs_f64() * 65_536.0) as u32)
            }
            None => (0, 0),
        };
        ReportBlock {
            ssrc: self.ssrc,
            fraction_lost,
            cumulative_lost: self.cumulative_lost().clamp(-0x80_0000, 0x7F_FFFF) as i32,
            highest_seq: self.extended_max(),
            jitter: self.jitter >> 4,
            lsr,
            dlsr,
        }
    }
}

/// NTP time (RFC 5905 32.32, seconds since 1900) of a wall-clock instant.
pub fn ntp_time(wall: SystemTime) -> u64 {
    let since_unix = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_unix.as_secs() + NTP_UNIX_OFFSET;
    let fraction = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

/// Round-trip time from a report block about us (RFC 3550 §6.4.1), given our NTP time now.
pub fn round_trip(block: &ReportBlock, now_ntp: u64) -> Option<Duration> {
    if block.lsr == 0 {
        return None;
    }
    let now_mid = (now_ntp >> 16) as u32;
    let rtt = now_mid.wrapping_sub(block.lsr).wrapping_sub(block.dlsr);
    // Negative (clock trouble) shows as huge: ignore anything over a minute.
    (rtt < 60 << 16).then(|| Duration::from_secs_f64(f64::from(rtt) / 65_536.0))
}

/// Seconds from 1900 to 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// RFC 3550 A.1.
const RTP_SEQ_MOD: u32 = 1 << 16;
/// RFC 3550 A.1: largest forward jump taken as loss.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: largest backward step taken as reordering.
const MAX_MISORDER: u32 = 100;

fn be32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(sender: bool) -> (Vec<u8>, ReportBlock, SenderInfo) {
        let block = ReportBlock {
            ssrc: Ssrc(0xB0B),
            fraction_lost: 12,
            cumulative_lost: -3,
            highest_seq: 0x0001_0005,
            jitter: 77,
            lsr: 0x1234_5678,
            dlsr: 0x0000_8000,
        };
        let info = SenderInfo { ntp: 0xE000_0000_8000_0000, rtp_timestamp: 160_000, packets: 50, octets: 8_000 };
        let mut buf = [0u8; 256];
        let n = Report {
            ssrc: Ssrc(0xA11CE),
            sender_info: sender.then_some(info),
            block: Some(block),
            cname: b"interwork@leg-1",
        }
        .write(&mut buf)
        .unwrap();
        (buf[..n].to_vec(), block, info)
    }

    #[test]
    fn written_reports_parse_here_and_in_rtc_rtcp() {
        for sender in [true, false] {
            let (bytes, block, info) = report(sender);
            let summary = parse_compound(&bytes, Ssrc(0xB0B)).unwrap();
            assert_eq!(summary.sender_ssrc, Some(Ssrc(0xA11CE)));
            assert_eq!(summary.report, Some(block));
            assert_eq!(summary.sender_info, sender.then_some(info));
            let mut reader = &bytes[..];
            let packets = rtc_rtcp::packet::unmarshal(&mut reader).unwrap();
            assert_eq!(packets.len(), 2, "report and SDES");
            let first = packets[0].as_any();
            if sender {
                let sr = first.downcast_ref::<rtc_rtcp::sender_report::SenderReport>().unwrap();
                assert_eq!(sr.ssrc, 0xA11CE);
                assert_eq!(sr.ntp_time, info.ntp);
                assert_eq!(sr.packet_count, 50);
                assert_eq!(sr.reports[0].total_lost, 0xFF_FFFD);
                assert_eq!(sr.reports[0].last_sequence_number, 0x0001_0005);
            } else {
                let rr = first.downcast_ref::<rtc_rtcp::receiver_report::ReceiverReport>().unwrap();
                assert_eq!(rr.reports[0].ssrc, 0xB0B);
                assert_eq!(rr.reports[0].fraction_lost, 12);
                assert_eq!(rr.reports[0].jitter, 77);
                assert_eq!(rr.reports[0].delay, 0x8000);
            }
        }
    }

    #[test]
    fn rtcp_mux_demux_by_packet_type() {
        assert!(is_rtcp(&[0x80, 200]));
        assert!(is_rtcp(&[0x81, 201]));
        assert!(!is_rtcp(&[0x80, 0]));
        assert!(!is_rtcp(&[0x80, 0x80 | 8])); // PCMA with marker: 136
        assert!(!is_rtcp(&[0x80, 96]));
        assert!(!is_rtcp(&[0x80]));
        assert!(!is_rtcp(&[0x80, 224]));
    }

    #[test]
    fn hostile_compounds_are_errors() {
        assert!(parse_compound(&[0x80, 200], Ssrc(1)).is_err());
        assert!(matches!(
            parse_compound(&[0x80, 202, 0, 1, 0, 0, 0, 0], Ssrc(1)),
            Err(RtcpError::NotAReport { packet_type: 202 })
        ));
        // RR with 31 blocks in 8 bytes.
        assert!(matches!(parse_compound(&[0x9F, 201, 0, 1, 0, 0, 0, 0], Ssrc(1)), Err(RtcpError::BadCount { .. })));
        // Length past the end.
        assert!(matches!(
            parse_compound(&[0x80, 201, 0xFF, 0xFF, 0, 0, 0, 0], Ssrc(1)),
            Err(RtcpError::Truncated { .. })
        ));
        let (bytes, _, _) = report(true);
        for len in 0..bytes.len() {
            let _ = parse_compound(&bytes[..len], Ssrc(0xB0B));
        }
        let mut seed = 3u64;
        for _ in 0..2000 {
            let mut junk = [0u8; 64];
            for b in &mut junk {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                *b = (seed >> 40) as u8;
            }
            junk[0] = 0x80 | (junk[0] & 0x1F);
            let _ = parse_compound(&junk, Ssrc(1));
        }
    }

    #[test]
    fn loss_fraction_cumulative_and_sequence_wrap() {
        let t0 = Instant::now();
        let mut stats = ReceiveStats::new(Ssrc(7), ClockRate::HZ_8000, 65_000, t0);
        let mut received = 0;
        // 1000 packets from 65000 across the wrap, every 10th lost, no jitter.
        for i in 0..1000u32 {
            let seq = (65_000 + i) as u16;
            if i % 10 == 5 {
                continue;
            }
            let at = t0 + Duration::from_millis(u64::from(i) * 20);
            assert!(stats.update(at, seq, i * 160));
            received += 1;
        }
        assert_eq!(stats.received(), received);
        assert_eq!(stats.expected(), 1000);
        assert_eq!(stats.cumulative_lost(), 100);
        assert_eq!(stats.extended_max(), 65_536 + (65_000 + 999 - 65_536));
        let block = stats.report_block(t0 + Duration::from_secs(20));
        assert_eq!(block.fraction_lost, 25); // 10 % of 256
        assert_eq!(block.cumulative_lost, 100);
        assert_eq!(block.jitter, 0);
        // The next interval without loss reports 0.
        for i in 1000..1100u32 {
            stats.update(t0 + Duration::from_millis(u64::from(i) * 20), (65_000 + i) as u16, i * 160);
        }
        assert_eq!(stats.report_block(t0).fraction_lost, 0);
    }

    #[test]
    fn jitter_follows_rfc3550_a8() {
        let t0 = Instant::now();
        let mut stats = ReceiveStats::new(Ssrc(7), ClockRate::HZ_8000, 0, t0);
        // Arrivals alternate 0 and +10 ms late: |D| = 80 ticks each time; J -> 80.
        for i in 0..2000u32 {
            let late = if i % 2 == 0 { 0 } else { 10 };
            let at = t0 + Duration::from_millis(u64::from(i) * 20 + late);
            stats.update(at, i as u16, i * 160);
        }
        let j = stats.report_block(t0).jitter;
        assert!((75..=80).contains(&j), "{j}");
    }

    #[test]
    fn a_restart_with_a_big_sequence_jump_is_accepted_on_the_second_packet() {
        let t0 = Instant::now();
        let mut stats = ReceiveStats::new(Ssrc(7), ClockRate::HZ_8000, 100, t0);
        assert!(stats.update(t0, 100, 0));
        assert!(!stats.update(t0, 30_000, 0));
        assert!(stats.update(t0, 30_001, 160));
        assert!(stats.update(t0, 30_002, 320));
        assert_eq!(stats.expected(), 2);
    }

    #[test]
    fn lsr_dlsr_and_round_trip() {
        let t0 = Instant::now();
        let mut stats = ReceiveStats::new(Ssrc(7), ClockRate::HZ_8000, 0, t0);
        stats.update(t0, 0, 0);
        let their_ntp = 0x0000_1234_5678_0000u64;
        stats.sender_report(t0, their_ntp);
        let block = stats.report_block(t0 + Duration::from_millis(500));
        assert_eq!(block.lsr, 0x1234_5678);
        assert_eq!(block.dlsr, 32_768);
        // Their clock: the SR left at their_ntp; our report arrives back 500 ms + 80 ms later.
        let back = their_ntp + (((580u64 << 32) / 1000) & !0xFFFF);
        let rtt = round_trip(&block, back).unwrap();
        assert!((rtt.as_secs_f64() - 0.080).abs() < 0.001, "{rtt:?}");
        let ntp = ntp_time(UNIX_EPOCH + Duration::from_secs(1));
        assert_eq!(ntp >> 32, NTP_UNIX_OFFSET + 1);
    }
}
