//! SRTP and SRTCP (RFC 3711, RFC 7714 for GCM) keyed by SDES (RFC 4568) for one SIP leg.
//!
//! A [`SrtpSession`] holds two rtc-srtp contexts, one per direction (a context is one-way):
//! `tx` keyed with our master key (`SrtpKeys::local_key`), `rx` with the peer's
//! (`SrtpKeys::remote_key`). Replay protection is on in the receive direction (a 64-packet
//! window for SRTP, RFC 3711 §3.3.2; the same for SRTCP) and the rollover counter follows the
//! sequence number across 65535 → 0 (RFC 3711 §3.3.1).
//!
//! A packet that fails is refused with an [`SrtpError`] saying why (authentication, replay,
//! too short): the leg drops it and counts it. Nothing here panics on input.
//!
//! Bounded state: rtc-srtp keeps per-SSRC state (replay window, ROC) for every SSRC it is asked
//! to decrypt, authenticated or not. The session lets at most [`MAX_RX_SSRCS`] distinct SSRCs
//! reach the receive context; past that, packets with yet another SSRC are refused
//! ([`SrtpError::TooManySsrcs`]) without touching the context, unless no SSRC ever
//! authenticated, in which case the context is rebuilt (nothing worth keeping is lost). So a
//! flood of forged packets with random SSRCs costs a bounded amount of memory.
//!
//! Allocation: rtc-srtp 0.21 returns each protected or unprotected packet as a fresh
//! `BytesMut`, so SRTP costs one allocation per packet; the session copies the result into
//! the caller's buffer and drops it. Everything else here is allocated once.

use rtc_shared::error::Error as RtcError;
use rtc_srtp::context::Context;
use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc_srtp::protection_profile::ProtectionProfile;
use thiserror::Error;

use super::params::{SrtpKeys, SrtpSuite};

/// Both directions of SRTP/SRTCP for one leg.
pub struct SrtpSession {
    suite: SrtpSuite,
    remote_key: Vec<u8>,
    tx: Context,
    rx: Context,
    /// SSRCs handed to `rx` so far and whether one of their packets authenticated.
    rx_ssrcs: [(u32, bool); MAX_RX_SSRCS],
    rx_ssrc_count: usize,
}

impl std::fmt::Debug for SrtpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never reach a log (STYLE §8).
        f.debug_struct("SrtpSession")
            .field("suite", &self.suite)
            .field("rx_ssrc_count", &self.rx_ssrc_count)
            .finish_non_exhaustive()
    }
}

/// Why SRTP could not be set up or a packet was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum SrtpError {
    /// The SDES key material has the wrong length for the suite.
    #[error("SRTP {direction} key material of {actual} bytes, {suite:?} needs {expected}")]
    KeyLength {
        /// Which key.
        direction: KeyDirection,
        /// The suite.
        suite: SrtpSuite,
        /// Bytes the suite needs (master key then salt).
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The crypto backend refused to build a context.
    #[error("the SRTP backend cannot run {suite:?}")]
    Unsupported {
        /// The suite.
        suite: SrtpSuite,
    },
    /// The authentication tag did not verify (or the packet is not SRTP at all).
    #[error("SRTP authentication failed")]
    Authentication,
    /// A packet already received (RFC 3711 §3.3.2).
    #[error("replayed SRTP packet: ssrc {ssrc:#010x}, index {index}")]
    Replay {
        /// Its SSRC.
        ssrc: u32,
        /// Its sequence number (SRTP) or SRTCP index.
        index: u64,
    },
    /// Too short to hold a header and the tag.
    #[error("{len} bytes, too short for SRTP")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// Yet another SSRC after [`MAX_RX_SSRCS`]: refused before decryption.
    #[error("SRTP packet from a new SSRC {ssrc:#010x} after {MAX_RX_SSRCS} SSRCs")]
    TooManySsrcs {
        /// Its SSRC.
        ssrc: u32,
    },
    /// The output buffer is too small.
    #[error("SRTP output of {needed} bytes, the buffer holds {capacity}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        capacity: usize,
    },
    /// Sending failed (the key is exhausted after 2^48 packets, or a malformed packet).
    #[error("SRTP protect failed")]
    Protect,
}

/// Which of the two keys of [`SrtpKeys`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyDirection {
    /// `local_key`: what we send.
    Local,
    /// `remote_key`: what the peer sends.
    Remote,
}

impl std::fmt::Display for KeyDirection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Local => "local",
            Self::Remote => "remote",
        })
    }
}

impl SrtpSession {
    /// Both contexts from the SDES keys.
    pub fn new(keys: &SrtpKeys) -> Result<Self, SrtpError> {
        let tx = context(keys.suite, &keys.local_key, KeyDirection::Local)?;
        let rx = context(keys.suite, &keys.remote_key, KeyDirection::Remote)?;
        Ok(Self {
            suite: keys.suite,
            remote_key: keys.remote_key.clone(),
            tx,
            rx,
            rx_ssrcs: [(0, false); MAX_RX_SSRCS],
            rx_ssrc_count: 0,
        })
    }

    /// The suite.
    pub fn suite(&self) -> SrtpSuite {
        self.suite
    }

    /// Bytes SRTP adds to an RTP packet: the authentication tag.
    pub fn rtp_overhead(&self) -> usize {
        match self.suite {
            SrtpSuite::AesCm128HmacSha1_80 => 10,
            SrtpSuite::AesCm128HmacSha1_32 => 4,
            SrtpSuite::AeadAes128Gcm => 16,
        }
    }

    /// Protects the RTP packet in `buf[..len]` in place; returns the protected length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let plain = buf.get(..len).ok_or(SrtpError::TooShort { len })?;
        let out = self.tx.encrypt_rtp(plain).map_err(|_| SrtpError::Protect)?;
        copy_out(&out, buf)
    }

    /// Protects the RTCP compound packet in `buf[..len]` in place; returns the new length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let plain = buf.get(..len).ok_or(SrtpError::TooShort { len })?;
        let out = self.tx.encrypt_rtcp(plain).map_err(|_| SrtpError::Protect)?;
        copy_out(&out, buf)
    }

    /// Authenticates and decrypts the SRTP packet `packet` into `out`; returns its length.
    pub fn unprotect_rtp(&mut self, packet: &[u8], out: &mut [u8]) -> Result<usize, SrtpError> {
        // 1. Enough for a header and the tag, before the backend sees it.
        if packet.len() < 12 + self.rtp_overhead() {
            return Err(SrtpError::TooShort { len: packet.len() });
        }
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        // 2. Bound the SSRCs the context keeps state for.
        let slot = self.admit(ssrc)?;
        // 3. Decrypt; only an authenticated packet marks its SSRC as genuine.
        let plain = self.rx.decrypt_rtp(packet).map_err(|e| refused(e, packet.len()))?;
        self.rx_ssrcs[slot].1 = true;
        copy_out(&plain, out)
    }

    /// Authenticates and decrypts the SRTCP packet `packet` into `out`; returns its length.
    pub fn unprotect_rtcp(&mut self, packet: &[u8], out: &mut [u8]) -> Result<usize, SrtpError> {
        // 1. Header, E flag and index, tag: the index sits before the HMAC tag (RFC 3711
        //    §3.4) and after the GCM tag (RFC 7714 §17).
        let len = packet.len();
        let tag = match self.suite {
            SrtpSuite::AesCm128HmacSha1_80 | SrtpSuite::AesCm128HmacSha1_32 => 10,
            SrtpSuite::AeadAes128Gcm => 16,
        };
        if len < 8 + 4 + tag {
            return Err(SrtpError::TooShort { len });
        }
        // 2. rtc-srtp 0.21 returns a packet whose E flag is clear without checking its tag;
        //    we always encrypt SRTCP and never negotiate UNENCRYPTED_SRTCP, so refuse those.
        let index_at = match self.suite {
            SrtpSuite::AeadAes128Gcm => len - 4,
            _ => len - tag - 4,
        };
        if packet[index_at] & 0x80 == 0 {
            return Err(SrtpError::Authentication);
        }
        let ssrc = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let slot = self.admit(ssrc)?;
        let plain = self.rx.decrypt_rtcp(packet).map_err(|e| refused(e, len))?;
        self.rx_ssrcs[slot].1 = true;
        copy_out(&plain, out)
    }

    /// The table slot of `ssrc`, adding it when there is room (see the module docs).
    fn admit(&mut self, ssrc: u32) -> Result<usize, SrtpError> {
        if let Some(i) = self.rx_ssrcs[..self.rx_ssrc_count].iter().position(|(s, _)| *s == ssrc) {
            return Ok(i);
        }
        if self.rx_ssrc_count == MAX_RX_SSRCS {
            if self.rx_ssrcs.iter().any(|(_, authenticated)| *authenticated) {
                return Err(SrtpError::TooManySsrcs { ssrc });
            }
            // Only forgeries so far: start over with an empty receive context.
            self.rx = context(self.suite, &self.remote_key, KeyDirection::Remote)?;
            self.rx_ssrc_count = 0;
        }
        self.rx_ssrcs[self.rx_ssrc_count] = (ssrc, false);
        self.rx_ssrc_count += 1;
        Ok(self.rx_ssrc_count - 1)
    }
}

/// Most distinct SSRCs the receive context keeps state for (see the module docs). A peer
/// changes SSRC on a restart or a re-INVITE; 16 is many calls' worth of that.
pub const MAX_RX_SSRCS: usize = 16;

/// SRTP replay window in packets (RFC 3711 §3.3.2 asks for at least 64).
const REPLAY_WINDOW: usize = 64;

fn profile(suite: SrtpSuite) -> ProtectionProfile {
    match suite {
        SrtpSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        SrtpSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        SrtpSuite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
    }
}

fn context(suite: SrtpSuite, key: &[u8], direction: KeyDirection) -> Result<Context, SrtpError> {
    if key.len() != suite.master_len() {
        return Err(SrtpError::KeyLength { direction, suite, expected: suite.master_len(), actual: key.len() });
    }
    let (master_key, master_salt) = key.split_at(suite.key_len());
    let provider = rtc_srtp::crypto::providers::RingProvider::new();
    use rtc_srtp::crypto::RTCCryptoProvider as _;
    Context::new(
        master_key,
        master_salt,
        profile(suite),
        Some(srtp_replay_protection(REPLAY_WINDOW)),
        Some(srtcp_replay_protection(REPLAY_WINDOW)),
        provider.crypto(),
    )
    .map_err(|_| SrtpError::Unsupported { suite })
}

fn refused(error: RtcError, len: usize) -> SrtpError {
    match error {
        RtcError::SrtpSsrcDuplicated(ssrc, seq) => SrtpError::Replay { ssrc, index: u64::from(seq) },
        RtcError::SrtcpSsrcDuplicated(ssrc, index) => SrtpError::Replay { ssrc, index: index as u64 },
        RtcError::ErrTooShortRtp | RtcError::ErrTooShortRtcp => SrtpError::TooShort { len },
        _ => SrtpError::Authentication,
    }
}

fn copy_out(data: &[u8], out: &mut [u8]) -> Result<usize, SrtpError> {
    let capacity = out.len();
    out.get_mut(..data.len()).ok_or(SrtpError::BufferTooSmall { needed: data.len(), capacity })?.copy_from_slice(data);
    Ok(data.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::{RtpHeader, RtpPacket, Ssrc};

    fn keys(suite: SrtpSuite, a: u8, b: u8) -> SrtpKeys {
        SrtpKeys {
            suite,
            tag: 1,
            remote_key: (0..suite.master_len() as u8).map(|i| i ^ a).collect(),
            local_key: (0..suite.master_len() as u8).map(|i| i ^ b).collect(),
        }
    }

    /// Two sessions with crossed keys: what one protects the other unprotects.
    fn pair(suite: SrtpSuite) -> (SrtpSession, SrtpSession) {
        let alice = keys(suite, 0x11, 0x22);
        let bob =
            SrtpKeys { remote_key: alice.local_key.clone(), local_key: alice.remote_key.clone(), ..alice.clone() };
        (SrtpSession::new(&alice).unwrap(), SrtpSession::new(&bob).unwrap())
    }

    fn rtp(seq: u16, payload: u8) -> ([u8; 256], usize) {
        let mut buf = [0u8; 256];
        let n = RtpHeader {
            marker: false,
            payload_type: 0,
            sequence: seq,
            timestamp: u32::from(seq) * 160,
            ssrc: Ssrc(0x1234_5678),
        }
        .write(&mut buf)
        .unwrap();
        buf[n..n + 160].fill(payload);
        (buf, n + 160)
    }

    #[test]
    fn every_suite_round_trips_across_the_rollover_and_refuses_tamper_and_replay() {
        for suite in SrtpSuite::ALL {
            let (mut alice, mut bob) = pair(suite);
            let mut out = [0u8; 300];
            // 65530 -> 65549 crosses the ROC rollover.
            for i in 0..20u16 {
                let seq = 65_530u16.wrapping_add(i);
                let (mut buf, len) = rtp(seq, i as u8);
                let protected = alice.protect_rtp(&mut buf, len).unwrap();
                assert_eq!(protected, len + alice.rtp_overhead(), "{suite:?}");
                assert_ne!(&buf[12..len], &[i as u8; 160][..], "payload encrypted");
                let n = bob.unprotect_rtp(&buf[..protected], &mut out).unwrap();
                let packet = RtpPacket::parse(&out[..n]).unwrap();
                assert_eq!(packet.sequence, seq);
                assert_eq!(packet.payload, &[i as u8; 160][..], "{suite:?} seq {seq}");
                // The same packet again is a replay.
                assert!(matches!(bob.unprotect_rtp(&buf[..protected], &mut out), Err(SrtpError::Replay { .. })));
            }
            // A flipped bit in the payload or the tag fails authentication.
            let (mut buf, len) = rtp(20, 7);
            let protected = alice.protect_rtp(&mut buf, len).unwrap();
            for at in [20, protected - 1] {
                let mut bad = buf;
                bad[at] ^= 1;
                assert_eq!(bob.unprotect_rtp(&bad[..protected], &mut out), Err(SrtpError::Authentication), "{suite:?}");
            }
            // The genuine one still goes through after the forgeries.
            assert!(bob.unprotect_rtp(&buf[..protected], &mut out).is_ok());
            // Our own packets do not decrypt with our own receive key.
            let (mut buf, len) = rtp(21, 7);
            let protected = alice.protect_rtp(&mut buf, len).unwrap();
            assert_eq!(alice.unprotect_rtp(&buf[..protected], &mut out), Err(SrtpError::Authentication));
        }
    }

    #[test]
    fn srtcp_round_trips_and_refuses_replay_and_tamper() {
        for suite in SrtpSuite::ALL {
            let (mut alice, mut bob) = pair(suite);
            // A minimal RR: V=2, RC=0, PT=201, length 1, SSRC.
            let mut buf = [0u8; 128];
            buf[..8].copy_from_slice(&[0x80, 201, 0, 1, 1, 2, 3, 4]);
            let n = alice.protect_rtcp(&mut buf, 8).unwrap();
            let mut out = [0u8; 128];
            let m = bob.unprotect_rtcp(&buf[..n], &mut out).unwrap();
            assert_eq!(&out[..m], &[0x80, 201, 0, 1, 1, 2, 3, 4]);
            assert!(matches!(bob.unprotect_rtcp(&buf[..n], &mut out), Err(SrtpError::Replay { .. })));
            // An SRTCP packet with the E flag clear is refused, not passed unauthenticated.
            let mut clear = [0u8; 40];
            clear[..8].copy_from_slice(&[0x80, 201, 0, 1, 1, 2, 3, 4]);
            assert_eq!(bob.unprotect_rtcp(&clear, &mut out), Err(SrtpError::Authentication), "{suite:?}");
            let mut second = [0u8; 128];
            second[..8].copy_from_slice(&[0x80, 201, 0, 1, 1, 2, 3, 4]);
            let n = alice.protect_rtcp(&mut second, 8).unwrap();
            second[n - 1] ^= 0x40;
            assert_eq!(bob.unprotect_rtcp(&second[..n], &mut out), Err(SrtpError::Authentication), "{suite:?}");
        }
    }

    #[test]
    fn wrong_key_lengths_are_refused_with_the_numbers() {
        let mut k = keys(SrtpSuite::AeadAes128Gcm, 1, 2);
        k.local_key.push(0);
        assert_eq!(
            SrtpSession::new(&k).unwrap_err(),
            SrtpError::KeyLength {
                direction: KeyDirection::Local,
                suite: SrtpSuite::AeadAes128Gcm,
                expected: 28,
                actual: 29
            }
        );
    }

    #[test]
    fn garbage_never_panics_and_random_ssrcs_stay_bounded() {
        let (mut alice, mut bob) = pair(SrtpSuite::AesCm128HmacSha1_80);
        let mut out = [0u8; 2048];
        let mut seed = 7u64;
        for len in 0..300usize {
            let mut buf = [0u8; 300];
            for b in &mut buf[..len] {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                *b = (seed >> 33) as u8;
            }
            if len > 0 {
                buf[0] = 0x80;
            }
            assert!(bob.unprotect_rtp(&buf[..len], &mut out).is_err());
            let r = bob.unprotect_rtcp(&buf[..len], &mut out);
            assert!(r.is_err(), "{len} {:02x?} {r:?}", &buf[..len]);
        }
        assert!(bob.rx_ssrc_count <= MAX_RX_SSRCS);
        // After a genuine packet, forged new SSRCs beyond the table are refused early...
        let (mut buf, len) = rtp(1, 1);
        let n = alice.protect_rtp(&mut buf, len).unwrap();
        bob.unprotect_rtp(&buf[..n], &mut out).unwrap();
        let mut refused_early = 0;
        for ssrc in 0..100u32 {
            let mut forged = buf;
            forged[8..12].copy_from_slice(&(ssrc + 0x1000).to_be_bytes());
            if let Err(SrtpError::TooManySsrcs { .. }) = bob.unprotect_rtp(&forged[..n], &mut out) {
                refused_early += 1;
            }
        }
        assert!(refused_early > 80);
        // ... and the genuine stream goes on.
        let (mut buf, len) = rtp(2, 2);
        let n = alice.protect_rtp(&mut buf, len).unwrap();
        assert!(bob.unprotect_rtp(&buf[..n], &mut out).is_ok());
    }
}
