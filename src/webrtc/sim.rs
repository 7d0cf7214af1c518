//! A simulated network of browser-like str0m peers around one [`Sfu`], in virtual time: what the
//! forwarder's unit tests and the forwarding benchmark drive instead of real browsers.
//!
//! Each simulated browser is a full-ICE str0m [`Rtc`] that answers the server's offers the way
//! the SDK does (attach the microphone to the offered publish m-line, receive the others),
//! writes a 20 ms "Opus" frame per tick when it publishes, and counts what it receives per
//! stream. Datagrams cross a perfect link at once. Nothing here touches a socket or the clock.

#![doc(hidden)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{Frequency, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

use super::protocol::ServerMessage;
use super::sfu::{PeerId, PeerInfo, Sfu, SfuConfig, SfuEvent};
use crate::ids::{ParticipantId, SessionId};
use crate::rooms::model::MediaType;

/// The server's address in the simulation.
pub const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)), 19000);

/// One simulated browser.
pub struct Browser {
    /// Its peer in the forwarder.
    pub peer: PeerId,
    /// Its participant.
    pub participant: ParticipantId,
    /// Its address.
    pub addr: SocketAddr,
    rtc: Rtc,
    next_timeout: Instant,
    /// The m-line it publishes on, once the server offered one.
    pub publish_mid: Option<Mid>,
    /// Whether it sends a frame each tick.
    pub publishing: bool,
    rtp_time: u64,
    /// Frames received per m-line.
    pub received: HashMap<Mid, u64>,
    /// Messages the server sent it.
    pub messages: Vec<ServerMessage>,
    /// Set when the server closed it.
    pub closed: Option<super::protocol::CloseReason>,
}

/// The forwarder and its browsers.
pub struct Sim {
    /// The forwarder.
    pub sfu: Sfu,
    /// The browsers, in creation order.
    pub browsers: Vec<Browser>,
    /// Virtual now.
    pub now: Instant,
    /// The session everyone is in.
    pub session: SessionId,
    /// `hears(listener, publisher)`: everyone hears everyone unless a pair is listed here.
    pub deaf: Vec<(ParticipantId, ParticipantId)>,
    /// Participants that hear nobody (publish-only).
    pub deaf_listeners: Vec<ParticipantId>,
    /// Wall time spent inside the forwarder's calls (one thread: its CPU time).
    pub sfu_time: Duration,
    frame: Arc<[u8]>,
    next_tick: Instant,
}

impl Sim {
    /// A forwarder with no browsers; frames carry `frame_bytes` bytes.
    pub fn new(frame_bytes: usize) -> Self {
        let now = Instant::now();
        Self {
            sfu: Sfu::new(SfuConfig::new(SERVER, vec![SERVER])),
            browsers: Vec::new(),
            now,
            session: SessionId::from("sim-session"),
            deaf: Vec::new(),
            sfu_time: Duration::ZERO,
            deaf_listeners: Vec::new(),
            frame: vec![0xF8; frame_bytes].into(),
            next_tick: now,
        }
    }

    /// Adds a browser for a new participant with `permissions`; returns its index.
    pub fn add_browser(&mut self, permissions: Vec<MediaType>) -> usize {
        let n = self.browsers.len();
        let participant = ParticipantId::from(format!("p{n}"));
        let info = PeerInfo { participant: participant.clone(), session: self.session.clone(), permissions };
        let peer = self.sfu.add_peer(self.now, info).expect("the simulation's peers are valid");
        let addr = SocketAddr::new(
            std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 1, (n % 250) as u8 + 1)),
            40_000 + n as u16,
        );
        let mut rtc = Rtc::builder().clear_codecs().enable_opus(true, false).build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("a valid address"));
        self.browsers.push(Browser {
            peer,
            participant,
            addr,
            rtc,
            next_timeout: self.now,
            publish_mid: None,
            publishing: false,
            rtp_time: 0,
            received: HashMap::new(),
            messages: Vec::new(),
            closed: None,
        });
        self.settle();
        n
    }

    /// Browser `i` asks to publish audio.
    pub fn publish(&mut self, i: usize) {
        let peer = self.browsers[i].peer;
        self.sfu.handle_publish(self.now, peer, 1, true, false);
        self.browsers[i].publishing = true;
        self.settle();
    }

    /// Recomputes subscriptions: everyone hears everyone except the pairs in [`Sim::deaf`]
    /// and the listeners in [`Sim::deaf_listeners`].
    pub fn refresh(&mut self) {
        let deaf = self.deaf.clone();
        let deaf_listeners = self.deaf_listeners.clone();
        let t0 = Instant::now();
        self.sfu.refresh_subscriptions(self.now, crate::webrtc::sfu::Scope::All, |_, l, p| {
            !deaf_listeners.contains(l) && !deaf.iter().any(|(a, b)| a == l && b == p)
        });
        self.sfu_time += t0.elapsed();
    }

    /// Runs until nothing more happens at this instant.
    pub fn settle(&mut self) {
        for _ in 0..1000 {
            let mut progressed = false;
            loop {
                let t0 = Instant::now();
                let ev = self.sfu.poll_event();
                self.sfu_time += t0.elapsed();
                let Some(ev) = ev else { break };
                progressed = true;
                self.on_event(ev);
            }
            loop {
                let t0 = Instant::now();
                let t = self.sfu.poll_transmit();
                self.sfu_time += t0.elapsed();
                let Some(t) = t else { break };
                progressed = true;
                if let Some(b) = self.browsers.iter_mut().find(|b| b.addr == t.destination)
                    && let Ok(r) = Receive::new(Protocol::Udp, t.source, t.destination, &t.contents)
                {
                    let _ = b.rtc.handle_input(Input::Receive(self.now, r));
                }
            }
            for i in 0..self.browsers.len() {
                progressed |= self.poll_browser(i);
            }
            if !progressed {
                return;
            }
        }
    }

    /// Advances virtual time by `d`, ticking 20 ms frames and every timer on the way.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            let mut next = self.next_tick.min(end);
            if let Some(t) = self.sfu.poll_timeout() {
                next = next.min(t.max(self.now));
            }
            for b in &self.browsers {
                next = next.min(b.next_timeout.max(self.now));
            }
            if next <= self.now {
                next = self.now + Duration::from_millis(1);
            }
            self.now = next.min(end);
            if self.now >= self.next_tick {
                self.next_tick += Duration::from_millis(20);
                self.write_frames();
            }
            let t0 = Instant::now();
            self.sfu.handle_timeout(self.now);
            self.sfu_time += t0.elapsed();
            for b in &mut self.browsers {
                // Always: str0m may report a far timeout right after an offer was accepted.
                let _ = b.rtc.handle_input(Input::Timeout(self.now));
            }
            self.settle();
        }
    }

    /// Frames received by browser `i` on all its m-lines.
    pub fn received(&self, i: usize) -> u64 {
        self.browsers[i].received.values().sum()
    }

    fn write_frames(&mut self) {
        for b in &mut self.browsers {
            let (true, Some(mid)) = (b.publishing, b.publish_mid) else { continue };
            if !b.rtc.is_connected() {
                continue;
            }
            let Some(w) = b.rtc.writer(mid) else { continue };
            let Some(pt) = w.payload_params().find(|p| p.spec().codec == Codec::Opus).map(|p| p.pt()) else { continue };
            b.rtp_time += 960;
            let _ = w.write(pt, self.now, MediaTime::new(b.rtp_time, Frequency::FORTY_EIGHT_KHZ), self.frame.clone());
        }
    }

    fn on_event(&mut self, ev: SfuEvent) {
        match ev {
            SfuEvent::ToDevice(peer, msg) => {
                let Some(b) = self.browsers.iter_mut().find(|b| b.peer == peer) else { return };
                if let ServerMessage::Offer { sdp, publish_mid } = &msg {
                    let offer = SdpOffer::from_sdp_string(sdp).expect("the server's offers parse");
                    let answer = b.rtc.sdp_api().accept_offer(offer).expect("the browser accepts the server's offer");
                    if let Some(m) = publish_mid {
                        b.publish_mid = Some(Mid::from(m.as_str()));
                    }
                    let sdp = answer.to_sdp_string();
                    b.messages.push(msg);
                    self.sfu.handle_answer(self.now, peer, &sdp);
                    return;
                }
                b.messages.push(msg);
            }
            SfuEvent::CloseDevice(peer, reason) => {
                if let Some(b) = self.browsers.iter_mut().find(|b| b.peer == peer) {
                    b.closed = Some(reason);
                }
            }
            SfuEvent::SubscriptionsStale { .. } => self.refresh(),
            SfuEvent::Dtmf { session, participant, tone } => {
                self.sfu.fan_out_dtmf(&session, &participant, tone, |l| l != &participant);
            }
            SfuEvent::ExternalFrame { .. } | SfuEvent::ExternalDtmf { .. } => {}
        }
    }

    fn poll_browser(&mut self, i: usize) -> bool {
        let mut progressed = false;
        let b = &mut self.browsers[i];
        if b.closed.is_some() {
            return false;
        }
        loop {
            match b.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    b.next_timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    progressed = true;
                    let t0 = Instant::now();
                    self.sfu.handle_datagram(self.now, t.source, &t.contents);
                    self.sfu_time += t0.elapsed();
                }
                Ok(Output::Event(Event::MediaData(d))) => {
                    *b.received.entry(d.mid).or_default() += 1;
                }
                Ok(Output::Event(_)) => {}
                Err(_) => break,
            }
        }
        progressed
    }

    /// Drops browser `i` from the network without a word (a vanished tab).
    pub fn vanish(&mut self, i: usize) {
        self.browsers[i].closed = Some(super::protocol::CloseReason::Normal);
        self.browsers[i].rtc.disconnect();
    }
}
