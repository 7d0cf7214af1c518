//! The SIP leg's media facing hostile sources, on the real daemon over real sockets:
//!
//! - RTP latching (`media.latching = "ip"`, the default): after the peer has been quiet for a
//!   second, RTP with its SSRC from another host does not pull the gateway's audio away (it
//!   kept flowing to the peer, the other host got nothing, `relatch_refused` counted live);
//!   the peer's NAT moving it to another port of its address still re-latches.
//! - SRTP packets that do not authenticate show in `/metrics` while the call lasts, not only
//!   when it ends.

mod common;
#[path = "support/sip_ua.rs"]
mod sip_ua;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{Client, Daemon};
use sip_ua::{MediaPeer, PeerCodec, SipUa, offer, read_answer};

/// Bound of every wait.
const LIMIT: Duration = Duration::from_secs(10);
/// The RTP packets' SSRC, the peer's and the impostor's.
const SSRC: u32 = 0x1234_5678;

/// `interwork_media_leg_total{kind}` in a scrape of `/metrics`.
fn media_counter(c: &Client, d: &Daemon, kind: &str) -> u64 {
    let text = c.http.get(d.url("/metrics")).send().unwrap().text().unwrap();
    let prefix = format!("interwork_media_leg_total{{kind=\"{kind}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse().unwrap())
}

/// Scrapes until `kind` reaches `at_least`; its value then.
fn wait_for_counter(c: &Client, d: &Daemon, kind: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + LIMIT;
    loop {
        let value = media_counter(c, d, kind);
        if value >= at_least {
            return value;
        }
        assert!(Instant::now() < deadline, "{kind} stayed at {value}, below {at_least}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A PCMU packet of silence with our SSRC.
fn rtp(sequence: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&sequence.to_be_bytes());
    p.extend_from_slice(&(u32::from(sequence) * 160).to_be_bytes());
    p.extend_from_slice(&SSRC.to_be_bytes());
    p.extend_from_slice(&[0xFF; 160]);
    p
}

/// Sends `count` packets 20 ms apart from `socket` to `to`, numbered from `first`.
fn send_rtp(socket: &UdpSocket, to: SocketAddr, first: u16, count: u16) {
    for i in 0..count {
        socket.send_to(&rtp(first + i), to).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Datagrams `socket` receives within `window` (it must have a read timeout).
fn received_within(socket: &UdpSocket, window: Duration) -> usize {
    let end = Instant::now() + window;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while Instant::now() < end {
        if socket.recv_from(&mut buf).is_ok() {
            n += 1;
        }
    }
    n
}

#[test]
fn a_quiet_peers_rtp_is_not_taken_over_from_another_host() {
    let d = Daemon::start();
    let c = Client::new();
    let (_, _, token) = common::session_with_participant(&d, &c);
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut ua = SipUa::new(d.sip_addr());
    let answer = ua.invite(&token, &offer(PeerCodec::Pcmu, peer.local_addr().unwrap().port(), "sendrecv", 1, &[]));
    let (gateway, _) = read_answer(&answer);

    // The peer talks, the gateway latches to it and sends it RTP.
    send_rtp(&peer, gateway, 1, 25);
    assert!(received_within(&peer, Duration::from_millis(300)) >= 5, "the gateway sends to the peer");

    // The peer goes quiet for longer than the re-latch delay; another host sends its SSRC.
    std::thread::sleep(Duration::from_millis(1_300));
    let impostor = UdpSocket::bind("127.0.0.2:0").expect("127.0.0.2 on lo");
    impostor.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    send_rtp(&impostor, gateway, 26, 25);
    assert_eq!(received_within(&impostor, Duration::from_millis(300)), 0, "the impostor got the gateway's audio");
    assert!(received_within(&peer, Duration::from_millis(300)) >= 5, "the gateway's audio left the peer");
    assert!(wait_for_counter(&c, &d, "relatch_refused", 25) >= 25, "refused sources are counted while the call lasts");

    // The peer's NAT gives it a new port on the same address: that does re-latch.
    let rebound = UdpSocket::bind("127.0.0.1:0").unwrap();
    rebound.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    send_rtp(&rebound, gateway, 51, 10);
    assert!(received_within(&rebound, Duration::from_millis(500)) >= 5, "NAT rebinding on the same address re-latches");
    assert_eq!(ua.bye(), 200);
}

#[test]
fn srtp_that_does_not_authenticate_shows_in_metrics_while_the_call_lasts() {
    let d = Daemon::start();
    let c = Client::new();
    let (_, _, token) = common::session_with_participant(&d, &c);
    let mut ua = SipUa::new(d.sip_addr());
    let mut media = MediaPeer::bind(PeerCodec::AmrWbSrtp);
    let answer = ua.invite(&token, &media.offer("sendrecv", 1));
    let (gateway, _) = read_answer(&answer);
    let before = media_counter(&c, &d, "srtp_auth_failed");
    // Forged SRTP (a valid RTP header, a payload and tag that are noise) before the peer talks.
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    for sequence in 0..20u16 {
        let mut packet = rtp(sequence);
        packet[1] = 96;
        packet.truncate(12 + 40);
        forger.send_to(&packet, gateway).unwrap();
    }
    media.start(&answer, 1000.0);
    assert!(wait_for_counter(&c, &d, "srtp_auth_failed", before + 20) >= before + 20);
    assert!(wait_for_counter(&c, &d, "rtp_received", 1) >= 1, "the genuine peer's packets count live too");
    assert_eq!(ua.bye(), 200);
}
