//! A steady SIP leg allocates nothing per packet or frame: two legs back to back, PCMU and
//! AMR-WB, 3,000 frames each way with RTCP and DTMF, under a counting global allocator; nor
//! does the heard decode (each publisher's Opus decoded once for the legs that hear it). The
//! legs run without SRTP: rtc-srtp 0.21 returns each packet in a new buffer (see
//! `media::srtp`), which this test measures separately and reports.
//!
//! The counting allocator (`counting_alloc`) implements `GlobalAlloc`, an unsafe trait, hence
//! the allow.
#![allow(unsafe_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use codecs::opus::{MAX_PACKET_BYTES, OpusEncoder, OpusEncoderConfig, SampleRate};
use interwork::media::heard::HeardDecoders;
use interwork::media::leg::{LegConfig, MTU, SipLeg};
use interwork::media::rtp::Ssrc;
use interwork::sip::sdp::{AmrWbParams, Codec, Negotiated, SrtpKeys, SrtpSuite};
use interwork::webrtc::sfu::EndpointId;
use str0m::media::{Frequency, MediaTime};

#[path = "../codecs/tests/support/counting_alloc.rs"]
mod counting_alloc;

fn negotiated(codec: Codec, remote: SocketAddr, srtp: Option<SrtpKeys>) -> Negotiated {
    Negotiated { rtcp_mux: true, ..Negotiated::sendrecv(codec, remote) }.with_srtp(srtp)
}

fn config(ssrc: u32) -> LegConfig {
    LegConfig {
        ssrc: Ssrc(ssrc),
        initial_sequence: 65_000,
        initial_timestamp: u32::MAX - 10_000,
        cname: format!("leg-{ssrc}"),
        wall_clock: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        latching: Default::default(),
    }
}

/// Runs `frames` 20 ms ticks of two legs wired back to back; returns the allocations counted
/// after the first `warm_up` ticks.
fn allocations(codec: Codec, srtp: bool, frames: u32, warm_up: u32) -> usize {
    let (a_addr, b_addr): (SocketAddr, SocketAddr) =
        ("192.0.2.1:4000".parse().unwrap(), "192.0.2.2:5000".parse().unwrap());
    let keys = |flip: bool| {
        srtp.then(|| {
            let k1: Vec<u8> = (0..30).collect();
            let k2: Vec<u8> = (100..130).collect();
            let (local_key, remote_key) = if flip { (k2, k1) } else { (k1, k2) };
            SrtpKeys { suite: SrtpSuite::AesCm128HmacSha1_80, tag: 1, remote_key, local_key }
        })
    };
    let start = Instant::now();
    let mut a = SipLeg::new(start, &negotiated(codec.clone(), b_addr, keys(false)), config(1)).unwrap();
    let mut b = SipLeg::new(start, &negotiated(codec, a_addr, keys(true)), config(2)).unwrap();
    let mut buf = vec![0u8; MTU];
    let mut pcm = [0i16; 320];
    let mut out = [0i16; 320];
    let mut counted_from = 0;
    for n in 0..frames {
        if n == warm_up {
            counted_from = counting_alloc::allocations();
        }
        let now = start + Duration::from_millis(20 * u64::from(n));
        for (i, s) in pcm.iter_mut().enumerate() {
            // A 1 kHz tone, on for 400 ms and off for 400 ms.
            let on = (n / 20) % 2 == 0;
            let t = f64::from(n * 320 + i as u32) / 16_000.0;
            *s = if on { ((t * 2.0 * std::f64::consts::PI * 1_000.0).sin() * 8_000.0) as i16 } else { 0 };
        }
        if n % 100 == 50 {
            a.send_dtmf(now, '5').unwrap();
        }
        a.send_audio(now, &pcm);
        b.send_audio(now, &pcm);
        for leg in [&mut a, &mut b] {
            if leg.poll_timeout().is_some_and(|t| t <= now) {
                leg.handle_timeout(now);
            }
        }
        let arrive = now + Duration::from_millis(5);
        while let Some(t) = a.poll_transmit(&mut buf) {
            let _ = b.handle_datagram(arrive, a_addr, &buf[..t.len]);
        }
        while let Some(t) = b.poll_transmit(&mut buf) {
            let _ = a.handle_datagram(arrive, b_addr, &buf[..t.len]);
        }
        let play = now + Duration::from_millis(10);
        a.poll_audio(play, &mut out);
        b.poll_audio(play, &mut out);
        while a.poll_event().is_some() || b.poll_event().is_some() {}
    }
    let stats = b.stats();
    assert!(stats.packets_received > u64::from(frames) * 9 / 10, "{stats:?}");
    assert!(stats.dtmf_received > 0 && stats.rtcp_received > 0, "{stats:?}");
    counting_alloc::allocations() - counted_from
}

/// Runs the heard decode of two publishers, each frame fetched by three subscribers, one packet
/// in 50 lost (concealed with PLC and FEC); returns the allocations after `warm_up` frames.
fn heard_allocations(frames: usize, warm_up: usize) -> usize {
    let mut encoder = OpusEncoder::new(SampleRate::Hz16000, OpusEncoderConfig::default()).unwrap();
    let packets: Vec<Vec<u8>> = (0..frames)
        .map(|n| {
            let pcm: Vec<i16> = (0..320)
                .map(|i| {
                    let t = (n * 320 + i) as f64 / 16_000.0;
                    ((t * 2.0 * std::f64::consts::PI * 440.0).sin() * 8_000.0) as i16
                })
                .collect();
            let mut out = [0u8; MAX_PACKET_BYTES];
            let len = encoder.encode(&pcm, &mut out).unwrap();
            out[..len].to_vec()
        })
        .collect();
    let publishers = [EndpointId("alice".into()), EndpointId("bob".into())];
    let mut heard = HeardDecoders::new();
    let start = Instant::now();
    let mut counted_from = 0;
    let mut level = 0u64;
    for (n, packet) in packets.iter().enumerate() {
        if n == warm_up {
            counted_from = counting_alloc::allocations();
        }
        let now = start + Duration::from_millis(20 * n as u64);
        let time = MediaTime::new(48_000 + n as u64 * 960, Frequency::FORTY_EIGHT_KHZ);
        for publisher in &publishers {
            if n % 50 == 25 {
                continue;
            }
            for _subscriber in 0..3 {
                let pcm = heard.decode(now, publisher, time, packet).expect("decodes");
                level += pcm.iter().map(|s| u64::from(s.unsigned_abs())).sum::<u64>();
            }
        }
    }
    assert!(heard.frames_concealed > 0 && level > 0, "the path ran: {heard:?}");
    counting_alloc::allocations() - counted_from
}

#[test]
fn a_steady_leg_allocates_nothing_per_frame() {
    // (One test: the counter is global and tests run in parallel.)
    let count = heard_allocations(3_000, 200);
    assert_eq!(count, 0, "the heard decode: {count} allocations in 2,800 frames of 2 publishers");
    for codec in [Codec::Pcmu, Codec::AmrWb(AmrWbParams::new(false)), Codec::AmrWb(AmrWbParams::new(true))] {
        let count = allocations(codec.clone(), false, 3_000, 200);
        assert_eq!(count, 0, "{codec:?}: {count} allocations in 2,800 frames");
    }
    // With SRTP only the SRTP library allocates: a buffer per protect and per unprotect.
    // (One test, not two: the counter is global and tests run in parallel.)
    let frames = 1_000;
    let count = allocations(Codec::Pcmu, true, frames, 200);
    let packets = 2 * 2 * (frames - 200) as usize;
    assert!(count <= packets + 100, "{count} allocations for {packets} SRTP operations");
}
