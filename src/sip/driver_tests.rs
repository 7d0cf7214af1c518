//! The SIP driver, whole (real sockets, the transactions, the user agent, rooms, tokens, media
//! legs), in paused tokio time: what takes a minute of timers on the wire runs in an instant,
//! and the times the peer sees are the virtual ones the timers were set for.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::driver::SipService;
use super::message::{self, Message, Method, Request, Response};
use crate::config::{Config, ListenAddr};
use crate::control::callbacks::Callbacks;
use crate::drain::Drain;
use crate::ids::AccountId;
use crate::metrics::Metrics;
use crate::rooms::model::Subscriptions;
use crate::rooms::{NewParticipant, RoomsConfig, RoomsHandle};
use crate::store::MemoryStore;
use crate::tokens::{Minter, NodeKey, Verifier};

/// A gateway's SIP side on loopback, and a participant token that admits a call.
struct Gateway {
    sip: SipService,
    token: String,
    _dir: tempfile::TempDir,
}

async fn gateway() -> Gateway {
    let mut config = Config::embedded(&HashMap::<String, String>::new()).unwrap();
    config.sip.listen = ListenAddr(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.media.webrtc_listen = ListenAddr(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.media.rtp_timeout = Duration::from_secs(3600);
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = NodeKey::load_or_generate(&dir.path().join("node.key")).unwrap();
    let key = Arc::new(key);
    let verifier = Arc::new(Verifier::new(&key, &config.tokens).unwrap());
    let rooms = RoomsHandle::open(
        RoomsConfig {
            lifetime: Duration::from_secs(3600),
            conference_lifetime: Duration::from_secs(3600),
            max_sessions: 10,
            max_participants: 10,
            max_participants_per_session: 10,
            demo_max_participants: 2,
            demo_lifetime: Duration::from_secs(600),
        },
        Box::new(MemoryStore::default()),
    )
    .await
    .unwrap();
    let account = AccountId::from("default");
    let session = rooms.create_session(&account, None).await.unwrap();
    let new = NewParticipant {
        tag: None,
        callback_url: None,
        publish_permissions: vec![crate::rooms::model::MediaType::Audio],
        device_api_version: None,
    };
    let participant = rooms.create_participant(&account, new).await.unwrap();
    let whole = Subscriptions { session_id: Some(session.id.clone()), participants: vec![] };
    rooms.add_to_session(&account, &session.id, &participant.id, whole).await.unwrap();
    let minter = Minter::new(key.clone(), &config.tokens.issuer, Duration::from_secs(3600));
    let token = minter.mint(&participant.id, Some(&session.id), None, None, SystemTime::now());
    let metrics = Arc::new(Metrics::default());
    let drain = Drain::default();
    let webrtc = crate::webrtc::WebrtcService::new(&config, verifier.clone(), rooms.clone(), drain.clone());
    let callbacks = Callbacks::new(config.callbacks.clone(), metrics.clone());
    let sip = SipService::start(&config, rooms, verifier, drain, callbacks, metrics, webrtc.forwarder()).await.unwrap();
    Gateway { sip, token, _dir: dir }
}

/// A SIP peer on a UDP socket, writing its requests out by hand.
struct Peer {
    socket: UdpSocket,
    gateway: SocketAddr,
    start: Instant,
}

impl Peer {
    async fn new(gateway: SocketAddr) -> Self {
        Self { socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(), gateway, start: Instant::now() }
    }

    fn local(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    async fn send(&self, text: &str) {
        self.socket.send_to(text.as_bytes(), self.gateway).await.unwrap();
    }

    /// The next message from the gateway and the virtual time it came at; panics after `limit`
    /// of virtual time.
    async fn recv(&self, limit: Duration) -> (Duration, Message) {
        let mut buf = vec![0; 65_536];
        let (n, _) = tokio::time::timeout(limit, self.socket.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("nothing from the gateway within {limit:?}"))
            .unwrap();
        (self.start.elapsed(), message::parse(&buf[..n]).unwrap())
    }

    /// The next response (requests in between are returned too, in order).
    async fn response(&self, limit: Duration) -> (Duration, Response) {
        loop {
            if let (at, Message::Response(r)) = self.recv(limit).await {
                return (at, r);
            }
        }
    }

    fn invite(&self, token: &str, call_id: &str, extra: &str) -> String {
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                   m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
        format!(
            "INVITE sip:gw@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}\r\nMax-Forwards: 70\r\n\
             From: <sip:caller@{me}>;tag=caller\r\nTo: <sip:gw@{gw}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:caller@{me}>\r\nUser-to-User: {token};encoding=jwt\r\n{extra}\
             Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
            gw = self.gateway,
            me = self.local(),
            len = sdp.len(),
        )
    }

    /// The 200 a peer sends to the gateway's request.
    async fn ok(&self, req: &Request) {
        let r = Response::to(req, 200, "OK", None);
        self.socket.send_to(&r.to_bytes(), self.gateway).await.unwrap();
    }

    async fn ack(&self, ok: &Response, call_id: &str) {
        let to = ok.headers.get("To").unwrap();
        let ack = format!(
            "ACK sip:gw@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKack{call_id}\r\nMax-Forwards: 70\r\n\
             From: <sip:caller@{me}>;tag=caller\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            gw = self.gateway,
            me = self.local(),
        );
        self.send(&ack).await;
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// No ACK ever comes: the 2xx goes again at T1, 2T1, 4T1 … capped at T2 (RFC 3261 §13.3.1.4),
/// and after 64·T1 = 32 s the gateway ends the dialog with BYE; the participant is free again.
#[tokio::test(start_paused = true)]
async fn an_unacknowledged_2xx_is_retransmitted_on_schedule_then_the_call_ends() {
    let g = gateway().await;
    let peer = Peer::new(g.sip.local_addr()).await;
    peer.send(&peer.invite(&g.token, "noack", "")).await;
    let limit = Duration::from_secs(60);
    let (_, trying) = peer.response(limit).await;
    assert_eq!(trying.status, 100);
    let (first, ok) = peer.response(limit).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let mut resent = Vec::new();
    let bye = loop {
        match peer.recv(limit).await {
            (at, Message::Response(r)) if r.status == 200 => resent.push(secs(at - first)),
            (at, Message::Request(r)) if r.method == Method::Bye => break (at - first, r),
            (_, other) => panic!("unexpected {other:?}"),
        }
    };
    let expected = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5];
    assert_eq!(resent.len(), expected.len(), "2xx resent at {resent:?}");
    for (got, want) in resent.iter().zip(expected) {
        assert!((got - want).abs() < 0.05, "2xx resent at {resent:?}, expected {expected:?}");
    }
    assert!((secs(bye.0) - 32.0).abs() < 0.1, "BYE at {:?}", bye.0);
    assert!(bye.1.headers.get("Reason").is_some_and(|r| r.contains("no ACK")), "{:?}", bye.1);
    peer.ok(&bye.1).await;
    // The call is over: the same participant can call again (one live leg per participant).
    peer.send(&peer.invite(&g.token, "again", "")).await;
    let (_, trying) = peer.response(limit).await;
    let (_, answer) = peer.response(limit).await;
    assert_eq!((trying.status, answer.status), (100, 200), "{answer:?}");
}

/// The caller asks to refresh a 90 s session and never does: the gateway ends the call before
/// the interval is over (RFC 4028 §10), a minute of timers in virtual time.
#[tokio::test(start_paused = true)]
async fn a_session_the_caller_fails_to_refresh_is_ended_before_it_expires() {
    let g = gateway().await;
    let peer = Peer::new(g.sip.local_addr()).await;
    let extra = "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n";
    peer.send(&peer.invite(&g.token, "timer", extra)).await;
    let limit = Duration::from_secs(120);
    let _trying = peer.response(limit).await;
    let (answered, ok) = peer.response(limit).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.headers.get("Session-Expires"), Some("90;refresher=uac"));
    peer.ack(&ok, "timer").await;
    let (at, bye) = loop {
        match peer.recv(limit).await {
            (at, Message::Request(r)) if r.method == Method::Bye => break (at - answered, r),
            (_, Message::Response(r)) if r.status == 200 => continue,
            (_, other) => panic!("unexpected {other:?}"),
        }
    };
    assert!(secs(at) >= 58.0 && secs(at) < 90.0, "BYE at {at:?}");
    assert!(bye.headers.get("Reason").is_some_and(|r| r.contains("session timer")), "{bye:?}");
    peer.ok(&bye).await;
}

/// What finishes a call already admitted is not queued behind requests that would start new
/// ones: a BYE that arrives after a burst of out-of-dialog requests is answered first (the
/// endpoint's two lanes, `transport::Lane`).
#[tokio::test(start_paused = true)]
async fn a_bye_is_answered_before_a_burst_of_new_requests_that_came_first() {
    let g = gateway().await;
    let peer = Peer::new(g.sip.local_addr()).await;
    let limit = Duration::from_secs(5);
    peer.send(&peer.invite(&g.token, "live", "")).await;
    let ok = loop {
        let (_, r) = peer.response(limit).await;
        if r.status == 200 {
            break r;
        }
    };
    peer.ack(&ok, "live").await;
    let (gw, me) = (peer.gateway, peer.local());
    let to = ok.headers.get("To").unwrap();
    // All in the socket before the gateway reads any: no await between the sends.
    for n in 0..20 {
        let options = format!(
            "OPTIONS sip:gw@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKopt{n}\r\nMax-Forwards: 70\r\n\
             From: <sip:caller@{me}>;tag=o{n}\r\nTo: <sip:gw@{gw}>\r\nCall-ID: opt{n}\r\nCSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n"
        );
        peer.socket.try_send_to(options.as_bytes(), gw).unwrap();
    }
    let bye = format!(
        "BYE sip:gw@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKbyelive\r\nMax-Forwards: 70\r\n\
         From: <sip:caller@{me}>;tag=caller\r\nTo: {to}\r\nCall-ID: live\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    peer.socket.try_send_to(bye.as_bytes(), gw).unwrap();
    let mut order = Vec::new();
    while order.len() < 21 {
        let (_, r) = peer.response(limit).await;
        order.push(r.headers.get("CSeq").unwrap().to_string());
    }
    assert_eq!(order[0], "2 BYE", "answered in the order {order:?}");
    assert_eq!(order.iter().filter(|c| c.ends_with("OPTIONS")).count(), 20, "{order:?}");
}
