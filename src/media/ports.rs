//! The RTP port range: even ports for RTP, the next for RTCP, handed out in turn.
//!
//! The range knows which pairs its legs hold: one bit per pair, set when a pair is bound and
//! cleared by the [`RtpPair`]'s drop when its leg ends. Looking for a free pair is then a walk
//! over bits, and a bind is only tried where no leg of ours sits; without it, a node with
//! thousands of live legs tried to bind every held port on its way round the range (three
//! system calls each), which under overload took two thirds of the CPU. The bits are atomics
//! written once by the side that hands pairs out and once by the leg that gives one back: no
//! lock between the SIP and media paths.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The configured range and where the next search starts; owned by the SIP side.
#[derive(Debug)]
pub struct PortRange {
    ip: IpAddr,
    /// The first RTP port (even).
    min: u16,
    /// Pairs in the range.
    pairs: usize,
    /// The pair the next search starts at.
    cursor: usize,
    held: Arc<[AtomicU64]>,
}

/// A bound RTP/RTCP socket pair; its pair is free again when this is dropped (after the
/// sockets, which are declared first).
#[derive(Debug)]
pub struct RtpPair {
    /// The RTP socket.
    pub rtp: UdpSocket,
    /// The RTCP socket (the RTP port + 1).
    pub rtcp: UdpSocket,
    /// The pair's place in the range: keep it as long as the sockets.
    pub lease: Lease,
}

/// A pair's place in its range, given back on drop.
#[derive(Debug)]
pub struct Lease {
    held: Arc<[AtomicU64]>,
    pair: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.held[self.pair / 64].fetch_and(!(1 << (self.pair % 64)), Ordering::Release);
    }
}

impl PortRange {
    /// The pairs between `min` and `max` (inclusive) on `ip`: RTP on the even ports, RTCP on
    /// the next one, which must be in the range too.
    pub fn new(ip: IpAddr, min: u16, max: u16) -> Self {
        let min = min.saturating_add(min % 2);
        let pairs = if max > min { usize::from((max - min - 1) / 2) + 1 } else { 0 };
        let held: Arc<[AtomicU64]> = (0..pairs.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        Self { ip, min, pairs, cursor: 0, held }
    }

    /// Binds the next free pair after the last one handed out; `None` when every pair is held
    /// (by our legs or by other processes).
    pub fn reserve(&mut self) -> Option<(u16, RtpPair)> {
        for _ in 0..self.pairs {
            let pair = self.cursor;
            self.cursor = (self.cursor + 1) % self.pairs;
            if self.held[pair / 64].load(Ordering::Acquire) & (1 << (pair % 64)) != 0 {
                continue;
            }
            let Ok(port) = u16::try_from(pair * 2).map(|offset| self.min + offset) else { continue };
            let Ok(rtp) = UdpSocket::bind(SocketAddr::new(self.ip, port)) else { continue };
            let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(self.ip, port + 1)) else { continue };
            self.held[pair / 64].fetch_or(1 << (pair % 64), Ordering::Release);
            return Some((port, RtpPair { rtp, rtcp, lease: Lease { held: self.held.clone(), pair } }));
        }
        None
    }

    /// Pairs our legs hold now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.iter().map(|w| w.load(Ordering::Relaxed).count_ones() as usize).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_handed_out_in_turn_and_come_back_when_dropped() {
        // A range of three pairs on ports the kernel picks for nobody else: find a free block
        // by binding its first port, then use the block.
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // Below the ephemeral range, where only explicit binds land, and below the default RTP
        // range (20000–29999) that the daemons of other tests bind in.
        let mut found = None;
        for base in (12_000..18_000).step_by(16) {
            let mut r = PortRange::new(ip, base, base + 5);
            let pairs: Vec<(u16, RtpPair)> = std::iter::from_fn(|| r.reserve()).collect();
            if pairs.iter().map(|(p, _)| *p).eq([base, base + 2, base + 4]) {
                found = Some((base, r, pairs));
                break;
            }
        }
        let (base, mut range, pairs) = found.expect("a free block of ports");
        let mut pairs = pairs.into_iter().map(|(_, p)| p);
        let (pair0, pair1, _pair2) = (pairs.next().unwrap(), pairs.next().unwrap(), pairs.next().unwrap());
        assert_eq!(pair0.rtcp.local_addr().unwrap().port(), base + 1);
        assert_eq!(range.held(), 3);
        assert!(range.reserve().is_none(), "every pair is held");
        // The middle one ends: it is the next one handed out, and bound for real.
        drop(pair1);
        assert_eq!(range.held(), 2);
        // Given back, the pair is bound again for real: another process could take it in
        // between (then the range has nothing to give, which is not ours to fail on).
        let again = range.reserve();
        match &again {
            Some((port, _)) => assert_eq!(*port, base + 2),
            None => assert!(
                UdpSocket::bind((ip, base + 2)).is_err() || UdpSocket::bind((ip, base + 3)).is_err(),
                "the pair given back is free, yet was not handed out"
            ),
        }
        drop(pair0);
        assert_eq!(range.held(), 1 + usize::from(again.is_some()));
    }

    #[test]
    fn a_port_held_by_another_process_is_passed_over() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // Someone else's socket on a port; a range starting there skips its pair.
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        let taken = other.local_addr().unwrap().port();
        let start = taken - taken % 2;
        let mut range = PortRange::new(ip, start, start + 3);
        match range.reserve() {
            Some((port, _pair)) => assert_eq!(port, start + 2),
            // The other pair may be taken too on a busy machine: then nothing, never a crash.
            None => assert_eq!(range.held(), 0),
        }
    }

    #[test]
    fn empty_and_odd_ranges() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(PortRange::new(ip, 20_001, 20_001).reserve().is_none());
        assert_eq!(PortRange::new(ip, 20_001, 20_004).pairs, 1, "20002/20003 only");
        assert_eq!(PortRange::new(ip, 20_000, 20_001).pairs, 1);
        assert_eq!(PortRange::new(ip, 20_000, 20_000).pairs, 0, "no room for RTCP");
        assert_eq!(PortRange::new(ip, 65_534, 65_535).pairs, 1);
    }
}
