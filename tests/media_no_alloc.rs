//! A steady SIP leg allocates nothing per packet or frame: two legs back to back, PCMU and
//! AMR-WB, 3,000 frames each way with RTCP and DTMF, under a counting global allocator; nor
//! does the heard decode (each publisher's Opus decoded once for the legs that hear it); nor do
//! two legs talking through the forwarder as a media worker and the router carry them (the
//! bridge's tick with its Opus encode and mix, the forwarder's queue, the forwarder's fan-out
//! to external subscribers, the heard decode). The
//! legs run without SRTP: rtc-srtp 0.21 returns each packet in a new buffer (see
//! `media::srtp`), which this test measures separately and reports.
//!
//! The counting allocator (`counting_alloc`) implements `GlobalAlloc`, an unsafe trait, hence
//! the allow.
#![allow(unsafe_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use codecs::opus::{MAX_PACKET_BYTES, OpusEncoder, OpusEncoderConfig, SampleRate};
use codecs::pcm::analysis::{dominant_frequency, rms_dbfs};
use interwork::ids::{ParticipantId, SessionId};
use interwork::media::bridge::Bridge;
use interwork::media::heard::HeardDecoders;
use interwork::media::leg::{LegConfig, MTU, SipLeg};
use interwork::media::router::{ExternalMedia, Forwarder, LegRequest};
use interwork::media::rtp::Ssrc;
use interwork::sip::sdp::{AmrWbParams, Codec, Negotiated, SrtpKeys, SrtpSuite};
use interwork::webrtc::sfu::{EndpointId, Scope, Sfu, SfuConfig, SfuEvent};
use str0m::media::{Frequency, MediaTime};
use tokio::sync::mpsc;

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

/// A tone of `hz` at 16 kHz, frame `n`.
fn tone_frame(hz: f64, n: u32) -> [i16; 320] {
    std::array::from_fn(|i| {
        let t = f64::from(n * 320 + i as u32) / 16_000.0;
        ((t * 2.0 * std::f64::consts::PI * hz).sin() * 8_000.0) as i16
    })
}

/// Two SIP legs of one session hearing each other through the forwarder, as the daemon carries
/// them: phone → leg → the bridge's tick (Opus, shared buffer) → the forwarder's queue → the
/// forwarder (external publisher to external subscriber) → the other bridge (heard decode, mix)
/// → its leg → its phone. Phone A says 1 kHz and phone B 440 Hz; returns the allocations after
/// `warm_up` ticks and what each phone heard in the last second.
fn bridged_allocations(codec: Codec, frames: u32, warm_up: u32) -> (usize, [Vec<i16>; 2]) {
    let phones: [SocketAddr; 2] = ["192.0.2.1:4000".parse().unwrap(), "192.0.2.2:4000".parse().unwrap()];
    let legs: [SocketAddr; 2] = ["198.51.100.1:20000".parse().unwrap(), "198.51.100.1:20002".parse().unwrap()];
    let start = Instant::now();
    let local = "127.0.0.1:19000".parse().unwrap();
    let mut sfu = Sfu::new(SfuConfig::new(local, vec![local]));
    let session = SessionId::from("s");
    let who = [ParticipantId::from("a"), ParticipantId::from("b")];
    let (requests, mut queue) = mpsc::channel(64);
    let forwarder = Forwarder::new(requests);
    let mut bridges: Vec<Bridge> = (0..2)
        .map(|i| {
            let mut bridge = Bridge::new(
                i as u64,
                who[i].clone(),
                session.clone(),
                forwarder.clone(),
                &negotiated(codec.clone(), phones[i], None),
            );
            bridge.endpoint = Some(sfu.add_external_publisher(who[i].clone(), session.clone()));
            bridge
        })
        .collect();
    let subscribers: Vec<_> = (0..2).map(|i| sfu.add_external_subscriber(who[i].clone(), session.clone())).collect();
    // Each leg's queue of heard media, which the router fills and the worker drains.
    let (heard_tx, mut heard_rx): (Vec<_>, Vec<_>) = (0..2).map(|_| mpsc::channel::<ExternalMedia>(64)).unzip();
    sfu.refresh_subscriptions(start, Scope::All, |_, listener, publisher| listener != publisher);
    while sfu.poll_event().is_some() {}
    let mut gateway: Vec<SipLeg> = (0..2)
        .map(|i| SipLeg::new(start, &negotiated(codec.clone(), phones[i], None), config(10 + i as u32)).unwrap())
        .collect();
    let mut phone: Vec<SipLeg> = (0..2)
        .map(|i| SipLeg::new(start, &negotiated(codec.clone(), legs[i], None), config(20 + i as u32)).unwrap())
        .collect();
    let mut decoders = HeardDecoders::new();
    let mut buf = vec![0u8; MTU];
    let mut out = [0i16; 320];
    let mut heard = [Vec::with_capacity(16_000), Vec::with_capacity(16_000)];
    let mut counted_from = 0;
    for n in 0..frames {
        if n == warm_up {
            counted_from = counting_alloc::allocations();
        }
        let now = start + Duration::from_millis(20 * u64::from(n));
        for (i, hz) in [1_000.0, 440.0].into_iter().enumerate() {
            phone[i].send_audio(now, &tone_frame(hz, n));
            while let Some(t) = phone[i].poll_transmit(&mut buf) {
                let _ = gateway[i].handle_datagram(now + Duration::from_millis(5), phones[i], &buf[..t.len]);
            }
        }
        // The worker's pass: each leg's heard media, then its tick; then the router forwards
        // what was published.
        let tick = now + Duration::from_millis(10);
        for i in 0..2 {
            while let Ok(media) = heard_rx[i].try_recv() {
                bridges[i].handle_media(tick, &mut gateway[i], &mut decoders, media);
            }
            if gateway[i].poll_timeout().is_some_and(|t| t <= tick) {
                gateway[i].handle_timeout(tick);
            }
            bridges[i].tick(tick, &mut gateway[i]);
        }
        while let Ok(request) = queue.try_recv() {
            if let LegRequest::Frame { endpoint, rtp_time, data } = request {
                sfu.handle_external_frame(tick, &endpoint, rtp_time, data).unwrap();
            }
        }
        while let Some(event) = sfu.poll_event() {
            if let SfuEvent::ExternalFrame { subscriber, endpoint, rtp_time, data } = event {
                let i = subscribers.iter().position(|s| *s == subscriber).unwrap();
                heard_tx[i].try_send(ExternalMedia::Frame { endpoint, rtp_time, data }).unwrap();
            }
        }
        for i in 0..2 {
            while let Some(t) = gateway[i].poll_transmit(&mut buf) {
                let _ = phone[i].handle_datagram(tick, legs[i], &buf[..t.len]);
            }
            phone[i].poll_audio(now + Duration::from_millis(15), &mut out);
            if n + 50 >= frames {
                heard[i].extend_from_slice(&out);
            }
            while gateway[i].poll_event().is_some() || phone[i].poll_event().is_some() {}
        }
    }
    (counting_alloc::allocations() - counted_from, heard)
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
    for codec in [Codec::Pcmu, Codec::AmrWb(AmrWbParams::new(false))] {
        let (count, heard) = bridged_allocations(codec.clone(), 1_500, 300);
        for (heard, hz) in heard.iter().zip([440.0, 1_000.0]) {
            let f = dominant_frequency(heard, 16_000);
            assert!(
                (f - hz).abs() < 5.0 && rms_dbfs(heard) > -20.0,
                "{codec:?}: heard {f} Hz at {} dBFS",
                rms_dbfs(heard)
            );
        }
        assert_eq!(count, 0, "{codec:?} through the forwarder: {count} allocations in 1,200 ticks of two legs");
    }
    // With SRTP only the SRTP library allocates: a buffer per protect and per unprotect.
    // (One test, not two: the counter is global and tests run in parallel.)
    let frames = 1_000;
    let count = allocations(Codec::Pcmu, true, frames, 200);
    let packets = 2 * 2 * (frames - 200) as usize;
    assert!(count <= packets + 100, "{count} allocations for {packets} SRTP operations");
}
