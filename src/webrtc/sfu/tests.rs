//! The forwarder against simulated str0m browsers in virtual time (see `sim.rs`).

use std::sync::Arc;
use std::time::Duration;

use str0m::media::{Frequency, MediaTime};

use super::super::protocol::{CloseReason, ErrorCode, ServerMessage};
use super::super::sim::Sim;
use super::*;

const AUDIO: &[MediaType] = &[MediaType::Audio];

fn available(sim: &Sim, i: usize) -> Vec<String> {
    let mut live = Vec::new();
    for m in &sim.browsers[i].messages {
        match m {
            ServerMessage::StreamAvailable(s) => live.push(s.endpoint_id.clone()),
            ServerMessage::StreamUnavailable { endpoint_id } => live.retain(|e| e != endpoint_id),
            _ => {}
        }
    }
    live
}

fn published_endpoint(sim: &Sim, i: usize) -> String {
    sim.browsers[i]
        .messages
        .iter()
        .find_map(|m| match m {
            ServerMessage::Published { stream, .. } => Some(stream.endpoint_id.clone()),
            _ => None,
        })
        .expect("published")
}

#[test]
fn two_publishers_hear_each_other() {
    let mut sim = Sim::new(80);
    let a = sim.add_browser(AUDIO.to_vec());
    let b = sim.add_browser(AUDIO.to_vec());
    sim.publish(a);
    sim.publish(b);
    sim.run_for(Duration::from_secs(2));
    assert!(sim.sfu.is_connected(sim.browsers[a].peer));
    assert_eq!(available(&sim, a), vec![published_endpoint(&sim, b)]);
    assert_eq!(available(&sim, b), vec![published_endpoint(&sim, a)]);
    // About 50 frames a second once connected, each way.
    assert!(sim.received(a) > 50, "a got {}", sim.received(a));
    assert!(sim.received(b) > 50, "b got {}", sim.received(b));
}

#[test]
fn publishing_without_permission_is_refused() {
    let mut sim = Sim::new(80);
    let a = sim.add_browser(vec![]);
    sim.publish(a);
    assert!(
        sim.browsers[a]
            .messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Error { code: ErrorCode::PermissionDenied, request_id: Some(1), .. }))
    );
    // Video is refused even with the permission: audio only.
    let v = sim.add_browser(vec![MediaType::Audio, MediaType::Video]);
    let peer = sim.browsers[v].peer;
    sim.sfu.handle_publish(sim.now, peer, 7, true, true);
    sim.settle();
    assert!(
        sim.browsers[v]
            .messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Error { code: ErrorCode::Unsupported, request_id: Some(7), .. }))
    );
}

#[test]
fn a_subscription_removed_makes_the_stream_unavailable_and_back() {
    let mut sim = Sim::new(80);
    let a = sim.add_browser(AUDIO.to_vec());
    let b = sim.add_browser(AUDIO.to_vec());
    sim.publish(a);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(available(&sim, b).len(), 1);
    assert!(sim.sfu.is_connected(sim.browsers[b].peer), "b connected");
    assert!(sim.received(b) > 20, "b receives {:?} {:?}", sim.sfu.counters(), sim.browsers[b].received);
    let (pa, pb) = (sim.browsers[a].participant.clone(), sim.browsers[b].participant.clone());
    sim.deaf.push((pb, pa));
    sim.refresh();
    sim.settle();
    assert!(available(&sim, b).is_empty());
    let before = sim.received(b);
    sim.run_for(Duration::from_secs(1));
    assert!(sim.received(b) - before < 3, "frames still flow after unsubscribing");
    sim.deaf.clear();
    sim.refresh();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(available(&sim, b).len(), 1);
    assert!(
        sim.received(b) - before > 30,
        "{:?} {:?}",
        sim.browsers[b].received,
        sim.browsers[b]
            .messages
            .iter()
            .map(|m| match m {
                ServerMessage::Offer { sdp, .. } => sdp
                    .lines()
                    .filter(|l| l.starts_with("m=")
                        || l.starts_with("a=mid")
                        || l.starts_with("a=send")
                        || l.starts_with("a=recv")
                        || l.starts_with("a=inactive")
                        || l.starts_with("a=ssrc"))
                    .collect::<Vec<_>>()
                    .join(" | "),
                m => format!("{m:?}"),
            })
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_vanished_peer_is_removed_and_its_stream_goes_within_bounds() {
    let mut sim = Sim::new(80);
    let a = sim.add_browser(AUDIO.to_vec());
    let b = sim.add_browser(AUDIO.to_vec());
    sim.publish(a);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(available(&sim, b).len(), 1);
    sim.vanish(a);
    let bound = DEFAULT_IDLE_TIMEOUT + DEFAULT_RECONNECT_GRACE + Duration::from_secs(1);
    sim.run_for(bound);
    assert_eq!(sim.sfu.peer_count(), 1);
    assert!(available(&sim, b).is_empty());
}

#[test]
fn a_second_connection_replaces_the_first_and_a_republish_keeps_the_stream() {
    let mut sim = Sim::new(80);
    let a = sim.add_browser(AUDIO.to_vec());
    let b = sim.add_browser(AUDIO.to_vec());
    sim.publish(a);
    sim.run_for(Duration::from_secs(1));
    let endpoint = published_endpoint(&sim, a);
    // A new tab of a's participant.
    let info = PeerInfo {
        participant: sim.browsers[a].participant.clone(),
        session: sim.session.clone(),
        permissions: AUDIO.to_vec(),
    };
    let newer = sim.sfu.add_peer(sim.now, info).unwrap();
    sim.settle();
    assert_eq!(sim.browsers[a].closed, Some(CloseReason::Replaced));
    assert_ne!(newer, sim.browsers[a].peer);
    // Within the grace the stream is still there, and publishing again continues it.
    assert_eq!(available(&sim, b), vec![endpoint.clone()]);
    sim.sfu.handle_publish(sim.now, newer, 2, true, false);
    let published = std::iter::from_fn(|| sim.sfu.poll_event())
        .any(|e| matches!(e, SfuEvent::ToDevice(p, ServerMessage::Offer { .. }) if p == newer));
    assert!(published, "an offer for the new tab");
}

#[test]
fn answers_out_of_order_or_not_sdp_are_protocol_errors() {
    let mut sim = Sim::new(80);
    let a = sim.add_browser(AUDIO.to_vec());
    let peer = sim.browsers[a].peer;
    sim.sfu.handle_answer(sim.now, peer, "v=0\r\n");
    sim.settle();
    assert!(
        sim.browsers[a].messages.iter().any(|m| matches!(m, ServerMessage::Error { code: ErrorCode::OutOfOrder, .. }))
    );
    sim.sfu.handle_dtmf(peer, "12x");
    sim.settle();
    assert!(
        sim.browsers[a]
            .messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Error { code: ErrorCode::InvalidArgument, .. }))
    );
    // Garbage datagrams cost a counter.
    sim.sfu.handle_datagram(sim.now, "10.9.9.9:1".parse().unwrap(), &[0xFF; 3]);
    sim.sfu.handle_datagram(sim.now, "10.9.9.9:1".parse().unwrap(), &[]);
    let c = sim.sfu.counters();
    assert_eq!(c.unparsable_datagrams + c.unrouted_datagrams, 2);
}

#[test]
fn dtmf_reaches_whoever_hears_the_sender() {
    let mut sim = Sim::new(80);
    let a = sim.add_browser(AUDIO.to_vec());
    let b = sim.add_browser(AUDIO.to_vec());
    let peer = sim.browsers[a].peer;
    sim.sfu.handle_dtmf(peer, "1#");
    sim.settle();
    let tones: Vec<char> = sim.browsers[b]
        .messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Dtmf { tone, .. } => Some(*tone),
            _ => None,
        })
        .collect();
    assert_eq!(tones, vec!['1', '#']);
}

#[test]
fn external_publishers_and_subscribers_use_the_same_endpoints() {
    let mut sim = Sim::new(80);
    let b = sim.add_browser(AUDIO.to_vec());
    let session = sim.session.clone();
    let sip = ParticipantId::from("sip-leg");
    let endpoint = sim.sfu.add_external_publisher(sip.clone(), session.clone());
    let sub = sim.sfu.add_external_subscriber(ParticipantId::from("sip-ear"), session);
    sim.refresh();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(available(&sim, b), vec![endpoint.0.to_string()]);
    let frame: Arc<[u8]> = vec![1u8; 40].into();
    let mut external = Vec::new();
    for i in 0..50u64 {
        sim.now += Duration::from_millis(20);
        sim.sfu
            .handle_external_frame(
                sim.now,
                &endpoint,
                MediaTime::new(7_000 + i * 960, Frequency::FORTY_EIGHT_KHZ),
                frame.clone(),
            )
            .unwrap();
        while let Some(e) = sim.sfu.poll_event() {
            if let SfuEvent::ExternalFrame { subscriber, rtp_time, .. } = e {
                assert_eq!(subscriber, sub);
                external.push(rtp_time.numer());
            }
        }
        sim.settle();
    }
    assert!(sim.received(b) > 40, "browser got {}", sim.received(b));
    assert_eq!(external.len(), 50);
    // The leg ends in bridge mode (parked) and a new leg of the same participant continues
    // the stream: same endpoint, its RTP time restarts, the timeline continues.
    sim.sfu.park_external_publisher(sim.now, &endpoint);
    assert_eq!(sim.sfu.add_external_publisher(sip.clone(), sim.session.clone()), endpoint);
    // The mixer that heard it takes it again once the rooms are asked (the driver's flush).
    sim.refresh();
    sim.now += Duration::from_millis(20);
    sim.sfu.handle_external_frame(sim.now, &endpoint, MediaTime::new(5, Frequency::FORTY_EIGHT_KHZ), frame).unwrap();
    let next = std::iter::from_fn(|| sim.sfu.poll_event())
        .find_map(|e| match e {
            SfuEvent::ExternalFrame { rtp_time, .. } => Some(rtp_time.numer()),
            _ => None,
        })
        .unwrap();
    assert_eq!(next, external.last().unwrap() + 960);
}

#[test]
fn offers_announce_every_configured_host_candidate_and_ice_lite() {
    let local: std::net::SocketAddr = "10.1.0.5:19000".parse().unwrap();
    let public: std::net::SocketAddr = "203.0.113.9:19000".parse().unwrap();
    let mut sfu = Sfu::new(SfuConfig::new(local, vec![local, public]));
    let now = std::time::Instant::now();
    let info = PeerInfo { participant: "p".into(), session: "s".into(), permissions: AUDIO.to_vec() };
    let peer = sfu.add_peer(now, info).unwrap();
    sfu.handle_publish(now, peer, 1, true, false);
    let sdp = std::iter::from_fn(|| sfu.poll_event())
        .find_map(|e| match e {
            SfuEvent::ToDevice(_, ServerMessage::Offer { sdp, publish_mid: Some(_) }) => Some(sdp),
            _ => None,
        })
        .expect("an offer with a publish m-line");
    assert!(sdp.contains("a=ice-lite"), "{sdp}");
    assert!(sdp.contains("10.1.0.5 19000 typ host"), "{sdp}");
    assert!(sdp.contains("203.0.113.9 19000 typ host"), "{sdp}");
    assert!(sdp.contains("opus/48000/2"), "{sdp}");
    assert!(sdp.contains("a=setup:actpass") && sdp.contains("a=fingerprint:sha-256"), "{sdp}");
}

/// Which external subscribers a frame of `endpoint` reaches.
fn reached(sfu: &mut Sfu, now: Instant, endpoint: &EndpointId) -> Vec<ExternalSubscriberId> {
    while sfu.poll_event().is_some() {}
    let frame: Arc<[u8]> = vec![1u8; 40].into();
    sfu.handle_external_frame(now, endpoint, MediaTime::new(960, Frequency::FORTY_EIGHT_KHZ), frame).unwrap();
    let mut out: Vec<ExternalSubscriberId> = std::iter::from_fn(|| sfu.poll_event())
        .filter_map(|e| match e {
            SfuEvent::ExternalFrame { subscriber, .. } => Some(subscriber),
            _ => None,
        })
        .collect();
    out.sort_by_key(|s| s.0);
    out
}

/// The targeted and full changes the forwarder asked for since the last call.
fn stale_changes(sfu: &mut Sfu) -> Vec<Change> {
    std::iter::from_fn(|| sfu.poll_event())
        .filter_map(|e| match e {
            SfuEvent::SubscriptionsStale { change, .. } => Some(change),
            _ => None,
        })
        .collect()
}

/// A forwarder on a fixed address, for tests of external publishers and subscribers.
fn bare_sfu() -> Sfu {
    Sfu::new(SfuConfig::new("127.0.0.1:19000".parse().unwrap(), vec!["127.0.0.1:19000".parse().unwrap()]))
}

#[test]
fn a_refresh_scoped_to_the_changed_session_matches_a_full_one_and_leaves_others_alone() {
    let mut sfu = bare_sfu();
    let now = Instant::now();
    let (a, b) = (SessionId::from("sa"), SessionId::from("sb"));
    let everyone = |_: &SessionId, l: &ParticipantId, p: &ParticipantId| l != p;
    let pa = sfu.add_external_publisher(ParticipantId::from("a1"), a.clone());
    let sa = sfu.add_external_subscriber(ParticipantId::from("a2"), a.clone());
    let pb = sfu.add_external_publisher(ParticipantId::from("b1"), b.clone());
    let sb = sfu.add_external_subscriber(ParticipantId::from("b2"), b.clone());
    sfu.refresh_subscriptions(now, Scope::All, everyone);
    assert_eq!(reached(&mut sfu, now, &pa), vec![sa]);
    assert_eq!(reached(&mut sfu, now, &pb), vec![sb]);
    // A new listener in a: the event names a, and a refresh of a alone takes it in.
    let sa2 = sfu.add_external_subscriber(ParticipantId::from("a3"), a.clone());
    let stale: Vec<SessionId> = std::iter::from_fn(|| sfu.poll_event())
        .filter_map(|e| match e {
            SfuEvent::SubscriptionsStale { session, .. } => Some(session),
            _ => None,
        })
        .collect();
    assert_eq!(stale, vec![a.clone()]);
    // Meanwhile the rooms would say b's listener hears nobody; a refresh of a must not act on it.
    let b_deaf = |s: &SessionId, l: &ParticipantId, p: &ParticipantId| l != p && *s != SessionId::from("sb");
    sfu.refresh_subscriptions(now, Scope::Sessions(std::slice::from_ref(&a)), b_deaf);
    assert_eq!(reached(&mut sfu, now, &pa), vec![sa, sa2]);
    assert_eq!(reached(&mut sfu, now, &pb), vec![sb], "session b was out of scope");
    // A full refresh then agrees with the rooms everywhere.
    sfu.refresh_subscriptions(now, Scope::All, b_deaf);
    assert_eq!(reached(&mut sfu, now, &pa), vec![sa, sa2]);
    assert!(reached(&mut sfu, now, &pb).is_empty());
    // The per-session index follows removals and forgets empty sessions.
    assert_eq!(sfu.by_session.len(), 2);
    for sub in [sa, sa2, sb] {
        sfu.remove_external_subscriber(sub);
    }
    for endpoint in [&pa, &pb] {
        sfu.remove_external_publisher(now, endpoint);
    }
    assert!(sfu.by_session.is_empty() && sfu.by_owner.is_empty());
}

#[test]
fn targeted_changes_reach_what_a_full_refresh_would_and_touch_nothing_else() {
    let mut sfu = bare_sfu();
    let now = Instant::now();
    let (a, b) = (SessionId::from("sa"), SessionId::from("sb"));
    // a3 hears nobody; everyone else hears everyone but themselves.
    let rooms = |_: &SessionId, l: &ParticipantId, p: &ParticipantId| l != p && *l != ParticipantId::from("a3");
    let sa1 = sfu.add_external_subscriber(ParticipantId::from("a1"), a.clone());
    let sa3 = sfu.add_external_subscriber(ParticipantId::from("a3"), a.clone());
    let sb1 = sfu.add_external_subscriber(ParticipantId::from("b1"), b.clone());
    assert_eq!(
        stale_changes(&mut sfu),
        vec![Change::Subscriber(sa1), Change::Subscriber(sa3), Change::Subscriber(sb1)]
    );
    // A stream of a2 in a: a1 hears it, a3 does not, b's subscriber is in another session.
    let pa2 = sfu.add_external_publisher(ParticipantId::from("a2"), a.clone());
    let ch = stale_changes(&mut sfu);
    assert_eq!(ch, vec![Change::Stream(pa2.clone())]);
    let (listeners, publishers) = sfu.change_pairs(&ch[0]);
    assert_eq!(listeners.len(), 2, "a's two subscribers, not b's: {listeners:?}");
    assert_eq!(publishers, vec![(a.clone(), ParticipantId::from("a2"))]);
    sfu.apply_change(now, &ch[0], rooms);
    assert_eq!(reached(&mut sfu, now, &pa2), vec![sa1]);
    // Its own stream is never sent back to its publisher's subscriber.
    let pa1 = sfu.add_external_publisher(ParticipantId::from("a1"), a.clone());
    let ch = stale_changes(&mut sfu);
    sfu.apply_change(now, &ch[0], rooms);
    assert!(reached(&mut sfu, now, &pa1).is_empty(), "a1 does not hear itself, a3 hears nobody");
    // A new subscriber of a2 gets a1's stream and not its own.
    let sa2 = sfu.add_external_subscriber(ParticipantId::from("a2"), a.clone());
    let ch = stale_changes(&mut sfu);
    assert_eq!(ch, vec![Change::Subscriber(sa2)]);
    sfu.apply_change(now, &ch[0], rooms);
    assert_eq!(reached(&mut sfu, now, &pa1), vec![sa2]);
    assert_eq!(reached(&mut sfu, now, &pa2), vec![sa1]);
    // Applying twice adds nothing; a full refresh agrees with the targeted result.
    sfu.apply_change(now, &ch[0], rooms);
    assert_eq!(reached(&mut sfu, now, &pa1), vec![sa2]);
    sfu.refresh_subscriptions(now, Scope::All, rooms);
    assert_eq!(reached(&mut sfu, now, &pa1), vec![sa2]);
    assert_eq!(reached(&mut sfu, now, &pa2), vec![sa1]);
    // A change whose stream or subscriber is gone by the flush does nothing.
    sfu.remove_external_subscriber(sa2);
    sfu.apply_change(now, &ch[0], rooms);
    assert!(reached(&mut sfu, now, &pa1).is_empty());
    assert_eq!(sfu.change_pairs(&ch[0]), (Vec::new(), Vec::new()));
    // Removing a stream needs no recomputation: it leaves every subscriber itself.
    sfu.remove_external_publisher(now, &pa2);
    assert!(stale_changes(&mut sfu).is_empty());
    assert!(sfu.externals.get(&sa1).is_some_and(|s| s.wanted.is_empty()));
}

#[test]
fn sip_mixers_skip_parked_streams_until_they_flow_again() {
    let mut sfu = bare_sfu();
    let now = Instant::now();
    let s = SessionId::from("big");
    let everyone = |_: &SessionId, l: &ParticipantId, p: &ParticipantId| l != p;
    // A mixer hears a flowing stream, whose leg then ends in bridge mode: parked, out of the mix.
    let mixer = sfu.add_external_subscriber(ParticipantId::from("ear"), s.clone());
    let parked: Vec<EndpointId> = (0..50)
        .map(|i| {
            let p = ParticipantId::from(format!("p{i}"));
            let e = sfu.add_external_publisher(p, s.clone());
            for ch in stale_changes(&mut sfu) {
                sfu.apply_change(now, &ch, everyone);
            }
            e
        })
        .collect();
    assert_eq!(reached(&mut sfu, now, &parked[0]), vec![mixer]);
    for e in &parked {
        sfu.park_external_publisher(now, e);
    }
    assert!(sfu.externals[&mixer].wanted.is_empty(), "parking takes a stream out of the mixers");
    assert!(reached(&mut sfu, now, &parked[0]).is_empty());
    // A new mixer in a session of parked streams: the rooms are asked about flowing ones only,
    // and it subscribes to none; a full refresh agrees.
    let flowing = sfu.add_external_publisher(ParticipantId::from("live"), s.clone());
    for ch in stale_changes(&mut sfu) {
        sfu.apply_change(now, &ch, everyone);
    }
    let late = sfu.add_external_subscriber(ParticipantId::from("late"), s.clone());
    let ch = stale_changes(&mut sfu);
    assert_eq!(ch, vec![Change::Subscriber(late)]);
    let (_, publishers) = sfu.change_pairs(&ch[0]);
    assert_eq!(publishers, vec![(s.clone(), ParticipantId::from("live"))], "parked publishers are not asked about");
    sfu.apply_change(now, &ch[0], everyone);
    assert_eq!(sfu.externals[&late].wanted.iter().collect::<Vec<_>>(), vec![&flowing]);
    sfu.refresh_subscriptions(now, Scope::All, everyone);
    assert_eq!(sfu.externals[&late].wanted.len(), 1, "a refresh keeps parked streams out of mixers");
    // The participant's next leg continues the parked stream: a targeted change brings it back
    // to every mixer that hears it.
    let again = sfu.add_external_publisher(ParticipantId::from("p7"), s.clone());
    assert_eq!(again, parked[7]);
    let ch = stale_changes(&mut sfu);
    assert_eq!(ch, vec![Change::Stream(again.clone())]);
    sfu.apply_change(now, &ch[0], everyone);
    assert_eq!(reached(&mut sfu, now, &again), vec![mixer, late]);
    // Leaving, deletion and the end of the session remove parked streams through the indexes.
    sfu.remove_parked(now, Parked::Of(&ParticipantId::from("p1"), &s));
    sfu.remove_parked(now, Parked::OfParticipant(&ParticipantId::from("p2")));
    sfu.remove_parked(now, Parked::Of(&ParticipantId::from("p3"), &SessionId::from("other")));
    assert!(!sfu.endpoints.contains_key(&parked[1]) && !sfu.endpoints.contains_key(&parked[2]));
    assert!(sfu.endpoints.contains_key(&parked[3]), "p3 left another session");
    assert!(sfu.endpoints.contains_key(&again), "a flowing stream is not parked");
    sfu.remove_parked(now, Parked::InSession(&s));
    assert_eq!(sfu.endpoints.len(), 2, "the flowing ones stay");
    assert!(sfu.by_session[&s].parked.is_empty());
}
