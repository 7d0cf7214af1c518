//! Two legs back to back over the emulated link, in virtual time.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use codecs::pcm::analysis::{dominant_frequency, rms_dbfs, tone};
use codecs::rfc4867::{Cmr, Depacketizer, PacketFrames, Packetizer, PayloadConfig};

use super::*;
use crate::media::netem::{Link, LinkConfig};
use crate::media::params::{AmrWbParams, Direction, SrtpKeys, SrtpSuite};
use crate::media::rtp::RtpPacket;

const A: &str = "192.0.2.1:40000";
const B: &str = "198.51.100.2:50000";
const TICK: Duration = Duration::from_millis(20);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn rtcp_addr(rtp: SocketAddr) -> SocketAddr {
    SocketAddr::new(rtp.ip(), rtp.port() + 1)
}

/// What A and B agreed, seen from A (`remote` = B) and with keys in A's direction.
fn negotiated(codec: Codec, suite: Option<SrtpSuite>, remote: SocketAddr, flip: bool) -> Negotiated {
    let srtp = suite.map(|suite| {
        let k1: Vec<u8> = (0..suite.master_len() as u8).collect();
        let k2: Vec<u8> = (0..suite.master_len() as u8).map(|b| b.wrapping_mul(7) ^ 0x5A).collect();
        let (local_key, remote_key) = if flip { (k2, k1) } else { (k1, k2) };
        SrtpKeys { suite, tag: 1, remote_key, local_key }
    });
    Negotiated { comfort_noise: Some(13), ..Negotiated::sendrecv(codec, remote) }.with_srtp(srtp)
}

fn config(ssrc: u32, seq: u16, ts: u32) -> LegConfig {
    LegConfig {
        ssrc: Ssrc(ssrc),
        initial_sequence: seq,
        initial_timestamp: ts,
        cname: format!("leg-{ssrc:x}@test"),
        wall_clock: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        latching: Default::default(),
    }
}

/// A and B, their links, virtual time, and what each played.
struct Pair {
    a: SipLeg,
    b: SipLeg,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    ab: Link,
    ba: Link,
    start: Instant,
    tick: u32,
    played_a: Vec<i16>,
    played_b: Vec<i16>,
    status_a: Vec<AudioStatus>,
    status_b: Vec<AudioStatus>,
    events_a: Vec<LegEvent>,
    events_b: Vec<LegEvent>,
    /// Datagrams A sent, as (channel, bytes), for inspection.
    sent_by_a: Vec<(Transmit, Vec<u8>)>,
    /// Whether each side calls `send_audio`.
    a_talks: bool,
    b_talks: bool,
}

impl Pair {
    fn new(codec: Codec, suite: Option<SrtpSuite>, link: LinkConfig, seed: u64) -> Self {
        let clock = codec.clock_rate();
        Self::with_event_clock(codec, suite, link, seed, clock)
    }

    /// As [`Pair::new`], with telephone-event at `event_clock` whatever the codec's clock.
    fn with_event_clock(codec: Codec, suite: Option<SrtpSuite>, link: LinkConfig, seed: u64, event_clock: u32) -> Self {
        let start = Instant::now();
        let (a_addr, b_addr) = (addr(A), addr(B));
        let with_events = |n: Negotiated| Negotiated { telephone_event: Some((101, event_clock)), ..n };
        let a = SipLeg::new(
            start,
            &with_events(negotiated(codec.clone(), suite, b_addr, false)),
            config(0xA, 65_500, u32::MAX - 3_000),
        )
        .unwrap();
        let b = SipLeg::new(start, &with_events(negotiated(codec, suite, a_addr, true)), config(0xB, 1, 7)).unwrap();
        Self {
            a,
            b,
            a_addr,
            b_addr,
            ab: Link::new(link, seed),
            ba: Link::new(link, seed ^ 0xFFFF),
            start,
            tick: 0,
            played_a: Vec::new(),
            played_b: Vec::new(),
            status_a: Vec::new(),
            status_b: Vec::new(),
            events_a: Vec::new(),
            events_b: Vec::new(),
            sent_by_a: Vec::new(),
            a_talks: true,
            b_talks: true,
        }
    }

    fn now(&self) -> Instant {
        self.start + TICK * self.tick
    }

    /// One 20 ms tick: deliver, send this tick's frames, deliver, play.
    fn step(&mut self, to_a: &[i16; WIDE_FRAME], to_b: &[i16; WIDE_FRAME]) {
        let now = self.now();
        self.deliver(now);
        if self.a_talks {
            self.a.send_audio(now, to_a);
        }
        if self.b_talks {
            self.b.send_audio(now, to_b);
        }
        for leg in [Side::A, Side::B] {
            if self.leg(leg).poll_timeout().is_some_and(|t| t <= now) {
                self.leg(leg).handle_timeout(now);
            }
        }
        self.drain(now);
        let play_at = now + Duration::from_millis(10);
        self.deliver(play_at);
        let mut out = [0i16; WIDE_FRAME];
        let status = self.a.poll_audio(play_at, &mut out);
        self.played_a.extend_from_slice(&out);
        self.status_a.push(status);
        let status = self.b.poll_audio(play_at, &mut out);
        self.played_b.extend_from_slice(&out);
        self.status_b.push(status);
        while let Some(e) = self.a.poll_event() {
            self.events_a.push(e);
        }
        while let Some(e) = self.b.poll_event() {
            self.events_b.push(e);
        }
        self.tick += 1;
    }

    fn leg(&mut self, side: Side) -> &mut SipLeg {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    fn drain(&mut self, now: Instant) {
        let mut buf = [0u8; MTU];
        while let Some(t) = self.a.poll_transmit(&mut buf) {
            assert_eq!(t.to.ip(), self.b_addr.ip());
            self.sent_by_a.push((t, buf[..t.len].to_vec()));
            self.ab.send(now, &tagged(t, &buf[..t.len]));
        }
        while let Some(t) = self.b.poll_transmit(&mut buf) {
            assert_eq!(t.to.ip(), self.a_addr.ip());
            self.ba.send(now, &tagged(t, &buf[..t.len]));
        }
    }

    fn deliver(&mut self, until: Instant) {
        while let Some((at, d)) = self.ab.receive_until(until) {
            let from = if d[0] == 0 { self.a_addr } else { rtcp_addr(self.a_addr) };
            let _ = self.b.handle_datagram(at, from, &d[1..]);
        }
        while let Some((at, d)) = self.ba.receive_until(until) {
            let from = if d[0] == 0 { self.b_addr } else { rtcp_addr(self.b_addr) };
            let _ = self.a.handle_datagram(at, from, &d[1..]);
        }
    }

    /// Runs `seconds` with a 1 kHz tone into A and an 800 Hz tone into B.
    fn run_tones(&mut self, seconds: u32) {
        let n = seconds as usize * 50;
        let to_a = tone(16_000, 1_000.0, -10.0, n * WIDE_FRAME);
        let to_b = tone(16_000, 800.0, -10.0, n * WIDE_FRAME);
        for i in 0..n {
            let fa: &[i16; WIDE_FRAME] = to_a[i * WIDE_FRAME..(i + 1) * WIDE_FRAME].try_into().unwrap();
            let fb: &[i16; WIDE_FRAME] = to_b[i * WIDE_FRAME..(i + 1) * WIDE_FRAME].try_into().unwrap();
            self.step(fa, fb);
        }
    }

    fn run_silence(&mut self, seconds: u32) {
        for _ in 0..seconds * 50 {
            self.step(&[0; WIDE_FRAME], &[0; WIDE_FRAME]);
        }
    }
}

#[derive(Clone, Copy)]
enum Side {
    A,
    B,
}

fn tagged(t: Transmit, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![u8::from(t.channel == Channel::Rtcp)];
    v.extend_from_slice(bytes);
    v
}

/// The last `seconds` of what a leg played.
fn tail(played: &[i16], seconds: f64) -> &[i16] {
    let n = (seconds * 16_000.0) as usize;
    &played[played.len().saturating_sub(n)..]
}

fn assert_tone(played: &[i16], freq: f64, what: &str) {
    let f = dominant_frequency(played, 16_000);
    let level = rms_dbfs(played);
    // A -10 dBFS peak sine is -13 dBFS RMS.
    assert!((f - freq).abs() <= 2.0, "{what}: {f} Hz, expected {freq}");
    assert!((level - (-13.0)).abs() <= 3.0, "{what}: {level} dBFS");
}

fn amr(octet_align: bool) -> Codec {
    Codec::AmrWb(AmrWbParams::new(octet_align))
}

fn jittery() -> LinkConfig {
    LinkConfig { jitter: Duration::from_millis(5), ..LinkConfig::latency(Duration::from_millis(30)) }
}

#[test]
fn tones_cross_every_codec_both_ways_with_and_without_srtp() {
    let codecs = [Codec::Pcmu, Codec::Pcma, amr(false), amr(true)];
    for (i, codec) in codecs.into_iter().enumerate() {
        for suite in [None, Some(SrtpSuite::AesCm128HmacSha1_80)] {
            let what = format!("{codec:?} {suite:?}");
            let mut pair = Pair::new(codec.clone(), suite, jittery(), i as u64);
            pair.run_tones(3);
            assert_tone(tail(&pair.played_b, 2.0), 1_000.0, &format!("A->B {what}"));
            assert_tone(tail(&pair.played_a, 2.0), 800.0, &format!("B->A {what}"));
            let (a, b) = (pair.a.stats(), pair.b.stats());
            assert!(b.packets_received >= 145, "{what} {b:?}");
            assert_eq!(b.jitter_buffer.concealed, 0, "{what} {b:?}");
            assert_eq!(a.auth_failures + b.auth_failures + a.malformed + b.malformed, 0, "{what}");
            assert!(b.target_delay <= Duration::from_millis(120));
        }
    }
}

#[test]
fn the_other_srtp_suites_carry_the_tone_too() {
    for suite in [SrtpSuite::AesCm128HmacSha1_32, SrtpSuite::AeadAes128Gcm] {
        let mut pair = Pair::new(Codec::Pcmu, Some(suite), jittery(), 9);
        pair.run_tones(2);
        assert_tone(tail(&pair.played_b, 1.0), 1_000.0, &format!("{suite:?}"));
        assert_tone(tail(&pair.played_a, 1.0), 800.0, &format!("{suite:?}"));
    }
}

#[test]
fn five_percent_loss_keeps_the_tone_and_is_concealed_and_reported() {
    for codec in [Codec::Pcmu, amr(false)] {
        let link = LinkConfig {
            loss: 0.05,
            jitter: Duration::from_millis(3),
            ..LinkConfig::latency(Duration::from_millis(40))
        };
        let mut pair = Pair::new(codec.clone(), Some(SrtpSuite::AesCm128HmacSha1_80), link, 42);
        pair.run_tones(20);
        assert_tone(tail(&pair.played_b, 15.0), 1_000.0, &format!("{codec:?}"));
        let b = pair.b.stats();
        let share = b.jitter_buffer.concealed as f64 / 1000.0;
        assert!((0.025..0.08).contains(&share), "{codec:?}: {b:?}");
        assert!((20..=80).contains(&b.packets_lost), "{codec:?}: {b:?}");
        // A heard from B about it in RTCP, and measured the round trip (2 × 40 ms + jitter).
        let a = pair.a.stats();
        assert!(a.remote_packets_lost.is_some_and(|l| l > 0), "{a:?}");
        let rtt = a.round_trip.expect("round trip from RTCP");
        assert!(rtt >= Duration::from_millis(75) && rtt <= Duration::from_millis(110), "{rtt:?}");
        assert!(a.rtcp_sent >= 3 && a.rtcp_received >= 3, "{a:?}");
    }
}

#[test]
fn dtmf_crosses_both_ways_at_each_clock() {
    // The codec's clock, and the other one (AMR-WB/16000 with telephone-event/8000 as baresip
    // offers it, G.711 with telephone-event/16000): durations are counted in the event's clock.
    for (codec, event_clock) in [(Codec::Pcma, 8_000), (amr(true), 16_000), (amr(false), 8_000), (Codec::Pcmu, 16_000)]
    {
        let mut pair =
            Pair::with_event_clock(codec.clone(), Some(SrtpSuite::AesCm128HmacSha1_80), jittery(), 5, event_clock);
        pair.run_silence(1);
        for digit in ['1', '#', 'D'] {
            pair.a.send_dtmf(pair.now(), digit).unwrap();
        }
        pair.b.send_dtmf(pair.now(), '9').unwrap();
        pair.run_silence(2);
        let ended = |events: &[LegEvent]| -> Vec<(char, Duration)> {
            events
                .iter()
                .filter_map(|e| match e {
                    LegEvent::DtmfEnded { digit, duration } => Some((*digit, *duration)),
                    LegEvent::DtmfBegan { .. } => None,
                })
                .collect()
        };
        let at_b = ended(&pair.events_b);
        assert_eq!(at_b.iter().map(|(d, _)| *d).collect::<String>(), "1#D", "{codec:?}");
        assert!(at_b.iter().all(|(_, d)| *d == DTMF_DURATION), "{codec:?} {event_clock}: {at_b:?}");
        let at_a = ended(&pair.events_a);
        assert_eq!(at_a.iter().map(|(d, _)| *d).collect::<String>(), "9");
        assert!(at_a.iter().all(|(_, d)| *d == DTMF_DURATION), "{codec:?} {event_clock}: {at_a:?}");
        assert_eq!(pair.a.stats().dtmf_sent, 3);
        assert_eq!(pair.b.stats().dtmf_received, 3);
        // Three end packets per digit (RFC 4733 §2.5.1.4).
        let ends = pair
            .sent_by_a
            .iter()
            .filter_map(|(t, bytes)| (t.channel == Channel::Rtp).then_some(bytes))
            .filter(|bytes| bytes[1] & 0x7F == 101)
            .count();
        assert!(ends >= 3 * 5, "{ends} event packets");
    }
    let mut pair = Pair::new(Codec::Pcmu, None, jittery(), 1);
    assert_eq!(pair.a.send_dtmf(pair.now(), 'x'), Err(LegError::InvalidDigit { digit: 'x' }));
}

#[test]
fn hold_silences_and_stops_sending_and_resume_brings_the_tone_back() {
    let mut pair = Pair::new(Codec::Pcmu, Some(SrtpSuite::AesCm128HmacSha1_80), jittery(), 7);
    pair.run_tones(2);
    // B holds A: B declares sendonly, A answers recvonly.
    let (a_addr, b_addr) = (pair.a_addr, pair.b_addr);
    let mut held_a = negotiated(Codec::Pcmu, Some(SrtpSuite::AesCm128HmacSha1_80), b_addr, false);
    held_a.remote_direction = Direction::SendOnly;
    held_a.local_direction = Direction::RecvOnly;
    let mut held_b = negotiated(Codec::Pcmu, Some(SrtpSuite::AesCm128HmacSha1_80), a_addr, true);
    held_b.remote_direction = Direction::RecvOnly;
    held_b.local_direction = Direction::SendOnly;
    let now = pair.now();
    pair.a.update(now, &held_a).unwrap();
    pair.b.update(now, &held_b).unwrap();
    let sent_before = pair.a.stats().packets_sent;
    pair.run_tones(5);
    assert!(pair.a.is_on_hold());
    assert_eq!(pair.a.stats().packets_sent, sent_before, "A sends nothing while held");
    assert!(pair.status_a[pair.status_a.len() - 200..].iter().all(|s| *s == AudioStatus::Held));
    assert!(tail(&pair.played_a, 3.0).iter().all(|s| *s == 0));
    assert!(!pair.a.is_inactive(pair.now(), Duration::from_secs(1)));
    // B stops sending too: still no inactivity while held.
    pair.b_talks = false;
    pair.run_tones(3);
    assert!(!pair.a.is_inactive(pair.now(), Duration::from_secs(2)));
    // Resume.
    pair.b_talks = true;
    let now = pair.now();
    pair.a.update(now, &negotiated(Codec::Pcmu, Some(SrtpSuite::AesCm128HmacSha1_80), b_addr, false)).unwrap();
    pair.b.update(now, &negotiated(Codec::Pcmu, Some(SrtpSuite::AesCm128HmacSha1_80), a_addr, true)).unwrap();
    pair.run_tones(2);
    assert_tone(tail(&pair.played_a, 1.0), 800.0, "B->A after resume");
    assert_tone(tail(&pair.played_b, 1.0), 1_000.0, "A->B after resume");
    // c=0.0.0.0 hold: nothing is sent to the unspecified address.
    let mut zero = negotiated(Codec::Pcmu, None, "0.0.0.0:50000".parse().unwrap(), false);
    zero.remote_direction = Direction::SendOnly;
    zero.local_direction = Direction::RecvOnly;
    let mut leg = SipLeg::new(pair.start, &zero, config(1, 1, 1)).unwrap();
    leg.send_audio(pair.start, &[0; WIDE_FRAME]);
    leg.handle_timeout(pair.start + Duration::from_secs(10));
    assert!(leg.poll_transmit(&mut [0; MTU]).is_none());
}

#[test]
fn inactivity_is_reported_only_when_the_peer_should_be_sending() {
    let mut pair = Pair::new(amr(false), None, jittery(), 8);
    pair.run_tones(1);
    assert!(!pair.a.is_inactive(pair.now(), Duration::from_secs(1)));
    pair.b_talks = false;
    pair.run_tones(3);
    assert!(pair.a.is_inactive(pair.now(), Duration::from_secs(2)));
    assert!(!pair.a.is_inactive(pair.now(), Duration::from_secs(4)));
    // Audio goes quiet (silence once the buffer gives up), never garbage.
    assert_eq!(pair.status_a.last(), Some(&AudioStatus::Silence));
}

#[test]
fn a_new_ssrc_mid_call_resyncs_and_the_tone_goes_on() {
    let mut pair = Pair::new(Codec::Pcmu, Some(SrtpSuite::AesCm128HmacSha1_80), jittery(), 11);
    pair.run_tones(2);
    // B restarts its media (new SSRC, sequence and timestamp), same keys and address.
    let neg_b = negotiated(Codec::Pcmu, Some(SrtpSuite::AesCm128HmacSha1_80), pair.a_addr, true);
    pair.b = SipLeg::new(pair.now(), &neg_b, config(0xBB, 40_000, 123_456_789)).unwrap();
    pair.run_tones(3);
    assert_tone(tail(&pair.played_a, 2.0), 800.0, "after the SSRC change");
    let a = pair.a.stats();
    assert_eq!(a.ssrc_changes, 1, "{a:?}");
    assert!(a.jitter_buffer.resyncs >= 1, "{a:?}");
    assert!(a.jitter_buffer.concealed <= 3, "{a:?}");
}

#[test]
fn hostile_datagrams_never_panic_and_are_counted() {
    for suite in [None, Some(SrtpSuite::AesCm128HmacSha1_80)] {
        let mut pair = Pair::new(amr(false), suite, jittery(), 13);
        pair.run_tones(1);
        let (b, now) = (pair.b_addr, pair.now());
        let mut rtp = [0u8; 40];
        RtpHeader { marker: false, payload_type: 96, sequence: 9, timestamp: 9, ssrc: Ssrc(0xB) }
            .write(&mut rtp)
            .unwrap();
        let mut wrong_pt = rtp;
        wrong_pt[1] = 33;
        let mut csrc = rtp;
        csrc[0] = 0x8F; // fifteen CSRCs, none there
        let mut hostile: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x80],
            vec![0x80, 200],
            vec![0xFF; 3],
            rtp[..11].to_vec(),
            wrong_pt.to_vec(),
            csrc.to_vec(),
            vec![0x81, 201, 0xFF, 0xFF, 0, 0, 0, 0xB],
            vec![0x80, 200, 0, 0],
            vec![0u8; 1400],
            vec![0x80; 2000],
        ];
        // A genuine packet of B with a flipped tag or payload bit.
        let genuine = pair.ba.receive_until(now + Duration::from_secs(1)).map(|(_, d)| d[1..].to_vec()).unwrap();
        for at in [genuine.len() - 1, 14] {
            let mut bad = genuine.clone();
            bad[at] ^= 0x10;
            if suite.is_some() {
                hostile.push(bad);
            }
        }
        let mut seed = 99u64;
        for len in [12, 20, 33, 64, 172, 400] {
            for _ in 0..50 {
                let mut junk = vec![0u8; len];
                for x in &mut junk {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    *x = (seed >> 56) as u8;
                }
                junk[0] = 0x80 | (junk[0] & 0x3F);
                if suite.is_none() {
                    // Without SRTP any bytes with a negotiated payload type are audio.
                    junk[1] = 110 + junk[1] % 18;
                }
                hostile.push(junk);
            }
        }
        let before = pair.a.stats();
        for d in &hostile {
            assert!(pair.a.handle_datagram(now, b, d).is_err(), "{suite:?} {d:02x?}");
        }
        let after = pair.a.stats();
        let counted =
            |s: &LegStats| s.malformed + s.auth_failures + s.replays + s.unknown_payload_type + s.foreign_source;
        assert_eq!(counted(&after) - counted(&before), hostile.len() as u64, "{suite:?} {after:?}");
        if suite.is_some() {
            assert!(after.auth_failures - before.auth_failures >= 200, "{after:?}");
        } else {
            assert!(after.unknown_payload_type > before.unknown_payload_type, "{after:?}");
        }
        // The call goes on.
        pair.run_tones(2);
        assert_tone(tail(&pair.played_a, 1.0), 800.0, "after the hostile datagrams");
    }
}

#[test]
fn latching_follows_the_first_authentic_source_and_relatches_after_silence() {
    let mut pair =
        Pair::new(Codec::Pcmu, Some(SrtpSuite::AesCm128HmacSha1_80), LinkConfig::latency(Duration::from_millis(10)), 3);
    // B is really behind a NAT: its packets come from another address than its SDP says.
    let nat: SocketAddr = "203.0.113.9:61000".parse().unwrap();
    let mut buf = [0u8; MTU];
    let now = pair.start;
    pair.b.send_audio(now, &[0; WIDE_FRAME]);
    let t = pair.b.poll_transmit(&mut buf).unwrap();
    // A forgery from elsewhere first: it does not authenticate, so it latches nothing.
    let mut forged = buf[..t.len].to_vec();
    forged[20] ^= 1;
    let evil: SocketAddr = "192.0.2.66:6666".parse().unwrap();
    assert!(pair.a.handle_datagram(now, evil, &forged).is_err());
    assert!(pair.a.handle_datagram(now, nat, &buf[..t.len]).is_ok());
    pair.a.send_audio(now, &[0; WIDE_FRAME]);
    assert_eq!(pair.a.poll_transmit(&mut buf).unwrap().to, nat, "sends to the latched source");
    // Another source is ignored while the latched one is live...
    pair.b.send_audio(now + TICK, &[0; WIDE_FRAME]);
    let t = pair.b.poll_transmit(&mut buf).unwrap();
    assert_eq!(
        pair.a.handle_datagram(now + TICK, evil, &buf[..t.len]),
        Err(DatagramError::ForeignSource { from: evil })
    );
    // ... and taken over after it has been silent for RELATCH_AFTER.
    let later = now + RELATCH_AFTER + TICK * 2;
    pair.b.send_audio(later, &[0; WIDE_FRAME]);
    let t = pair.b.poll_transmit(&mut buf).unwrap();
    let moved: SocketAddr = "203.0.113.9:62000".parse().unwrap();
    assert!(pair.a.handle_datagram(later, moved, &buf[..t.len]).is_ok());
    assert_eq!(pair.a.stats().relatches, 1);
    assert_eq!(pair.a.stats().foreign_source, 1);
    pair.a.send_audio(later, &[0; WIDE_FRAME]);
    assert_eq!(pair.a.poll_transmit(&mut buf).unwrap().to, moved);
}

/// Plain RTP/AVP: after the real peer has been quiet for [`RELATCH_AFTER`], RTP from another
/// host with the peer's SSRC must not pull the gateway's audio away (issue 11: it did). The
/// peer's NAT moving it to another port of the same address still re-latches.
#[test]
fn plain_rtp_relatches_only_to_a_plausible_source() {
    let signalled = addr(B);
    let attacker: SocketAddr = "192.0.2.66:6666".parse().unwrap();
    let same_ip_new_port = SocketAddr::new(signalled.ip(), signalled.port() + 100);
    // (policy, source after the silence, taken over?)
    let cases = [
        (Latching::Ip, attacker, false),
        (Latching::Ip, same_ip_new_port, true),
        (Latching::Any, attacker, true),
        (Latching::Strict, same_ip_new_port, false),
        (Latching::Strict, attacker, false),
    ];
    for (policy, source, taken) in cases {
        let start = Instant::now();
        let neg = negotiated(Codec::Pcmu, None, signalled, false);
        let mut gateway = SipLeg::new(start, &neg, LegConfig { latching: policy, ..config(0xA, 1, 1) }).unwrap();
        let mut phone = SipLeg::new(start, &negotiated(Codec::Pcmu, None, addr(A), true), config(0xB, 1, 1)).unwrap();
        let mut buf = [0u8; MTU];
        let mut from_phone = |at: Instant| {
            let mut buf = [0u8; MTU];
            phone.send_audio(at, &[0; WIDE_FRAME]);
            let t = phone.poll_transmit(&mut buf).unwrap();
            buf[..t.len].to_vec()
        };
        let first = from_phone(start);
        gateway.handle_datagram(start, signalled, &first).unwrap();
        // The phone goes quiet; the same SSRC's RTP turns up from `source`.
        let later = start + RELATCH_AFTER + TICK;
        let packet = from_phone(later);
        let result = gateway.handle_datagram(later, source, &packet);
        gateway.send_audio(later, &[0; WIDE_FRAME]);
        let to = gateway.poll_transmit(&mut buf).unwrap().to;
        let stats = gateway.stats();
        if taken {
            assert!(result.is_ok(), "{policy:?} {source}: {result:?}");
            assert_eq!((to, stats.relatches, stats.relatch_refused), (source, 1, 0), "{policy:?} {source}");
        } else {
            assert_eq!(result, Err(DatagramError::ForeignSource { from: source }), "{policy:?} {source}");
            assert_eq!((to, stats.relatches, stats.relatch_refused), (signalled, 0, 1), "{policy:?} {source}");
            // The real peer coming back is still heard.
            let back = later + TICK;
            assert!(gateway.handle_datagram(back, signalled, &from_phone(back)).is_ok(), "{policy:?}");
        }
    }
}

#[test]
fn amr_wb_honours_the_mode_set_and_the_peers_cmr() {
    let mut params = AmrWbParams::new(false);
    params.mode_set = Some(vec![0, 2, 4]);
    let neg = negotiated(Codec::AmrWb(params), None, addr(B), false);
    let start = Instant::now();
    let mut leg = SipLeg::new(start, &neg, config(1, 1, 1)).unwrap();
    let mut buf = [0u8; MTU];
    let speech = tone(16_000, 440.0, -10.0, WIDE_FRAME);
    let speech: &[i16; WIDE_FRAME] = speech[..].try_into().unwrap();
    let mut frames = PacketFrames::new();
    let depack = Depacketizer::new(PayloadConfig::bandwidth_efficient());
    let mut sent_mode = |leg: &mut SipLeg, at: Instant| {
        leg.send_audio(at, speech);
        let t = leg.poll_transmit(&mut buf).unwrap();
        let packet = RtpPacket::parse(&buf[..t.len]).unwrap();
        depack.depacketize(packet.payload, &mut frames).unwrap();
        frames.get(0).unwrap().frame_type
    };
    // The highest mode of the set, not M8.
    assert_eq!(sent_mode(&mut leg, start), FrameType::Speech(Mode::M4));
    // The peer asks for M2 (RFC 4867 §4.3.1).
    let packetizer = Packetizer::new(PayloadConfig::bandwidth_efficient());
    let mut encoder = AmrWbEncoder::new(false).unwrap();
    let mut bits = [0u8; MAX_FRAME_BYTES];
    let encoded = encoder.encode(speech, Mode::M8, &mut bits).unwrap();
    let mut packet = [0u8; 200];
    let n = RtpHeader { marker: false, payload_type: 96, sequence: 5, timestamp: 0, ssrc: Ssrc(77) }
        .write(&mut packet)
        .unwrap();
    let len = packetizer.packetize(Cmr::Mode(Mode::M2), &[encoded.frame(&bits)], &mut packet[n..]).unwrap();
    leg.handle_datagram(start, addr(B), &packet[..n + len]).unwrap();
    assert_eq!(sent_mode(&mut leg, start + TICK), FrameType::Speech(Mode::M2));
    // A request above the set is capped to the highest allowed below it.
    let len = packetizer.packetize(Cmr::Mode(Mode::M7), &[encoded.frame(&bits)], &mut packet[n..]).unwrap();
    packet[3] = 6;
    leg.handle_datagram(start + TICK, addr(B), &packet[..n + len]).unwrap();
    assert_eq!(sent_mode(&mut leg, start + TICK * 2), FrameType::Speech(Mode::M4));
}

#[test]
fn ptime_sets_the_packet_size_and_several_amr_frames_share_a_packet() {
    for (codec, ptime, per_tick, payload) in [
        (Codec::Pcmu, 10, 2.0, 80),
        (Codec::Pcmu, 40, 0.5, 320),
        (Codec::Pcma, 30, 2.0 / 3.0, 240),
        (amr(true), 60, 1.0 / 3.0, 0),
    ] {
        let mut neg = negotiated(codec.clone(), None, addr(B), false);
        neg.ptime_ms = ptime;
        let start = Instant::now();
        let mut leg = SipLeg::new(start, &neg, config(1, 1, 1)).unwrap();
        let mut peer_neg = negotiated(codec.clone(), None, addr(A), false);
        peer_neg.ptime_ms = ptime;
        let mut peer = SipLeg::new(start, &peer_neg, config(2, 1, 1)).unwrap();
        let input = tone(16_000, 1_000.0, -10.0, 300 * WIDE_FRAME);
        let mut buf = [0u8; MTU];
        let mut packets = 0;
        let mut played = Vec::new();
        for i in 0..300 {
            let now = start + TICK * i as u32;
            leg.send_audio(now, input[i * WIDE_FRAME..(i + 1) * WIDE_FRAME].try_into().unwrap());
            while let Some(t) = leg.poll_transmit(&mut buf) {
                if t.channel == Channel::Rtcp {
                    continue;
                }
                packets += 1;
                let p = RtpPacket::parse(&buf[..t.len]).unwrap();
                if payload > 0 {
                    assert_eq!(p.payload.len(), payload, "{codec:?} ptime {ptime}");
                }
                peer.handle_datagram(now + Duration::from_millis(5), addr(A), &buf[..t.len]).unwrap();
            }
            let mut out = [0i16; WIDE_FRAME];
            peer.poll_audio(now + Duration::from_millis(10), &mut out);
            played.extend_from_slice(&out);
        }
        assert!((packets as f64 - 300.0 * per_tick).abs() <= 1.0, "{codec:?} ptime {ptime}: {packets}");
        assert_tone(tail(&played, 3.0), 1_000.0, &format!("{codec:?} ptime {ptime}"));
    }
}

#[test]
fn a_codec_change_by_reinvite_switches_both_ways() {
    let mut pair = Pair::new(Codec::Pcmu, None, jittery(), 21);
    pair.run_tones(1);
    let now = pair.now();
    let (a_addr, b_addr) = (pair.a_addr, pair.b_addr);
    pair.a.update(now, &negotiated(amr(false), None, b_addr, false)).unwrap();
    pair.b.update(now, &negotiated(amr(false), None, a_addr, true)).unwrap();
    pair.run_tones(2);
    assert_tone(tail(&pair.played_b, 1.0), 1_000.0, "after the switch to AMR-WB");
    assert_tone(tail(&pair.played_a, 1.0), 800.0, "after the switch to AMR-WB");
}

#[test]
fn comfort_noise_and_dtx_from_a_g711_peer_are_not_loss() {
    let start = Instant::now();
    let mut leg = SipLeg::new(start, &negotiated(Codec::Pcmu, None, addr(B), false), config(1, 1, 1)).unwrap();
    let mut packet = [0u8; 200];
    let mut statuses = Vec::new();
    for i in 0..200u32 {
        let now = start + TICK * i;
        // Speech for 1 s, then one CN packet (-60 dBov) and nothing for 2 s, then speech.
        let (pt, len) = match i {
            0..50 | 150.. => (0, 160),
            50 => (13, 1),
            _ => (255, 0),
        };
        if pt != 255 {
            let n =
                RtpHeader { marker: i == 150, payload_type: pt, sequence: i as u16, timestamp: i * 160, ssrc: Ssrc(5) }
                    .write(&mut packet)
                    .unwrap();
            packet[n..n + len].fill(if pt == 13 { 60 } else { 0x7F });
            leg.handle_datagram(now, addr(B), &packet[..n + len]).unwrap();
        }
        statuses.push(leg.poll_audio(now + Duration::from_millis(10), &mut [0; WIDE_FRAME]));
    }
    let s = leg.stats();
    assert_eq!(s.jitter_buffer.concealed, 0, "{s:?}");
    assert!(statuses.iter().filter(|s| **s == AudioStatus::ComfortNoise).count() > 90);
    assert_eq!(statuses.last(), Some(&AudioStatus::Audio));
}

#[test]
fn rtcp_goes_to_port_plus_one_or_the_muxed_port_and_parses() {
    for mux in [false, true] {
        let mut neg = negotiated(Codec::Pcmu, Some(SrtpSuite::AeadAes128Gcm), addr(B), false);
        neg.rtcp_mux = mux;
        let start = Instant::now();
        let mut leg = SipLeg::new(start, &neg, config(1, 1, 1)).unwrap();
        let mut buf = [0u8; MTU];
        let mut reports = 0;
        for i in 0..1000u32 {
            let now = start + TICK * i;
            leg.send_audio(now, &[0; WIDE_FRAME]);
            if leg.poll_timeout().is_some_and(|t| t <= now) {
                leg.handle_timeout(now);
            }
            while let Some(t) = leg.poll_transmit(&mut buf) {
                if is_rtcp(&buf[..t.len]) {
                    reports += 1;
                    let expected = if mux { (addr(B), Channel::Rtp) } else { (rtcp_addr(addr(B)), Channel::Rtcp) };
                    assert_eq!((t.to, t.channel), expected);
                }
            }
        }
        // 20 s at a randomized 5 s interval: 3 to 8 reports.
        assert!((3..=8).contains(&reports), "{reports}");
    }
}
