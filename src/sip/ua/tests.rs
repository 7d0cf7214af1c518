//! The call logic in virtual time: every row of the SIP failure table, the dialog
//! methods, modes, timers and hold.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::*;
use crate::sip::message::{Message, Method, parse};

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
    m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

struct FakeEnv {
    tokens: HashMap<String, Result<Admitted, TokenError>>,
    next_port: u16,
    ports_free: bool,
}

/// What the shell answers to the user agent's admission and port requests.
impl FakeEnv {
    fn admit(&mut self, token: &str) -> Result<Admitted, TokenError> {
        self.tokens.get(token).cloned().unwrap_or(Err(TokenError::BadSignature))
    }
    fn allocate_rtp(&mut self, _call: CallNo) -> Option<u16> {
        self.ports_free.then(|| {
            self.next_port += 2;
            self.next_port
        })
    }
}

fn admitted(p: &str, mode: Option<InterconnectMode>) -> Admitted {
    Admitted {
        participant: ParticipantId::from(p),
        session: SessionId::from("s1"),
        account: AccountId::from("default"),
        mode,
    }
}

/// A made-up JWT shape; the fake env decides what it means.
fn jwt(name: &str) -> String {
    format!("eyJhbGciOiJFUzI1NiJ9.{name}.c2ln")
}

struct Harness {
    ua: UserAgent,
    env: FakeEnv,
    now: Instant,
    next_tx: TxId,
}

fn config() -> UaConfig {
    UaConfig {
        default_mode: InterconnectMode::Transfer,
        max_calls: 100,
        max_conference_legs: 2,
        trusted_peers: vec![],
        invite_rate: 1000,
        srtp: SrtpPolicy::Optional,
        media_ip: "127.0.0.1".parse().unwrap(),
        contact_host: "127.0.0.1:5060".into(),
        answer_delay: Duration::ZERO,
        session_expires: 1800,
        min_se: 90,
        rng_seed: [7; 32],
    }
}

impl Harness {
    fn new(config: UaConfig) -> Self {
        let mut tokens = HashMap::new();
        tokens.insert(jwt("alice"), Ok(admitted("alice", None)));
        tokens.insert(jwt("bob"), Ok(admitted("bob", Some(InterconnectMode::Bridge))));
        tokens.insert(jwt("carol"), Ok(admitted("carol", Some(InterconnectMode::Conference))));
        tokens.insert(jwt("dave"), Ok(admitted("dave", Some(InterconnectMode::Conference))));
        tokens.insert(jwt("erin"), Ok(admitted("erin", Some(InterconnectMode::Conference))));
        tokens.insert(jwt("ghost"), Err(TokenError::UnknownParticipant("ghost".into())));
        tokens.insert(jwt("old"), Err(TokenError::Expired));
        Self {
            ua: UserAgent::new(config),
            env: FakeEnv { tokens, next_port: 20000, ports_free: true },
            now: Instant::now(),
            next_tx: 1,
        }
    }

    fn send(&mut self, text: &str) -> (TxId, Vec<Output>) {
        let Message::Request(request) = parse(text.as_bytes()).unwrap() else { panic!("not a request") };
        let tx = self.next_tx;
        self.next_tx += 1;
        let inbound = Inbound { tx, source: "127.0.0.1:5070".parse().unwrap(), transport: Transport::Udp, request };
        self.ua.handle_request(self.now, inbound);
        (tx, self.drain())
    }

    fn event(&mut self, e: Event) -> Vec<Output> {
        self.ua.handle_event(self.now, e);
        self.drain()
    }

    fn advance(&mut self, d: Duration) -> Vec<Output> {
        let end = self.now + d;
        let mut out = Vec::new();
        // Bounded: a livelock fails instead of hanging.
        for _ in 0..10_000 {
            match self.ua.poll_timeout() {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.ua.handle_timeout(self.now);
                    out.extend(self.drain());
                }
                _ => break,
            }
        }
        self.now = end;
        out
    }

    /// The user agent's outputs, its admission and port requests answered by the fake env
    /// as the driver answers them.
    fn drain(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(o) = self.ua.poll_output() {
            match o {
                Output::Admit { call, token } => {
                    let result = self.env.admit(&token);
                    self.ua.handle_event(self.now, Event::Admission { call, result });
                }
                Output::ReservePort { call } => {
                    let port = self.env.allocate_rtp(call);
                    self.ua.handle_event(self.now, Event::PortReserved { call, port });
                }
                o => out.push(o),
            }
        }
        out
    }

    /// The outputs as they come, admission and port requests left for the test to answer.
    fn raw(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.ua.poll_output()).collect()
    }
}

fn invite(call_id: &str, token: Option<&str>, extra: &str, body: &str) -> String {
    let uui = token.map(|t| format!("User-to-User: {t};encoding=jwt\r\n")).unwrap_or_default();
    format!(
        "INVITE sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{call_id}\r\n\
         From: <sip:pv@127.0.0.1>;tag=f-{call_id}\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:pv@127.0.0.1:5070>\r\nMax-Forwards: 70\r\n{uui}{extra}\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn in_dialog(method: &str, call_id: &str, to_tag: &str, cseq: u32, extra: &str, body: &str) -> String {
    format!(
        "{method} sip:interwork@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{call_id}-{cseq}{method}\r\n\
         From: <sip:pv@127.0.0.1>;tag=f-{call_id}\r\nTo: <sip:gw@127.0.0.1>;tag={to_tag}\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn responses(out: &[Output]) -> Vec<&Response> {
    out.iter().filter_map(|o| if let Output::Respond { response, .. } = o { Some(response) } else { None }).collect()
}

fn final_status(out: &[Output]) -> u16 {
    responses(out).iter().map(|r| r.status).rfind(|s| *s >= 200).expect("a final response")
}

fn to_tag(r: &Response) -> String {
    crate::sip::message::header_param(r.headers.get("To").unwrap(), "tag").unwrap().to_string()
}

/// Sets up a confirmed call; returns its INVITE transaction and our tag.
fn connected(h: &mut Harness, call_id: &str, token: &str, extra: &str) -> (TxId, String) {
    let (tx, out) = h.send(&invite(call_id, Some(token), extra, OFFER));
    assert_eq!(final_status(&out), 200, "{out:?}");
    let tag = to_tag(responses(&out)[0]);
    let ack = in_dialog("ACK", call_id, &tag, 1, "", "");
    let Message::Request(ack) = parse(ack.as_bytes()).unwrap() else { unreachable!() };
    let out = h.event(Event::Ack { tx, request: ack });
    assert!(out.iter().any(|o| matches!(o, Output::Call(CallEvent::Connected(_)))), "{out:?}");
    (tx, tag)
}

#[test]
fn a_valid_invite_is_answered_with_sdp_and_media_starts() {
    let mut h = Harness::new(config());
    let (_, out) = h.send(&invite("c1", Some(&jwt("alice")), "", OFFER));
    let ok = responses(&out)[0];
    assert_eq!(ok.status, 200);
    assert!(ok.headers.get("Contact").unwrap().contains("sip:interwork@127.0.0.1:5060"));
    let sdp = String::from_utf8(ok.body.clone()).unwrap();
    assert!(sdp.contains("m=audio 20002 RTP/AVP 0"), "{sdp}");
    assert!(out.iter().any(|o| matches!(o, Output::Media(MediaCommand::Start { local_port: 20002, .. }))));
    assert!(out.iter().any(|o| matches!(o, Output::Call(CallEvent::InviteAnswered { status: 200, .. }))));
}

#[test]
fn every_failure_row_of_the_contract_has_its_status_and_a_reason() {
    let mut h = Harness::new(config());
    let bad_codec =
        OFFER.replace("RTP/AVP 0 101", "RTP/AVP 18").replace("a=rtpmap:0 PCMU/8000\r\n", "a=rtpmap:18 G729/8000\r\n");
    let cases = [
        (invite("n1", None, "", OFFER), 403),
        (invite("n2", Some("not-a-jwt"), "", OFFER), 403),
        (invite("n3", Some(&jwt("forged")), "", OFFER), 403),
        (invite("n4", Some(&jwt("old")), "", OFFER), 403),
        (invite("n5", Some(&jwt("ghost")), "", OFFER), 404),
        (invite("n6", Some(&jwt("alice")), "", &bad_codec), 488),
        (invite("n7", Some(&jwt("alice")), "X-Interconnect-Mode: relay\r\n", OFFER), 400),
        (invite("n8", Some(&jwt("alice")), "Require: 100rel\r\n", OFFER), 420),
        (invite("n9", Some(&jwt("alice")), "Session-Expires: 30\r\n", OFFER), 422),
    ];
    for (text, status) in cases {
        let (_, out) = h.send(&text);
        let r = responses(&out).into_iter().last().unwrap();
        assert_eq!(r.status, status, "{text}");
        assert!(r.headers.get("Warning").is_some(), "{status} says why");
    }
    assert_eq!(h.ua.call_count(), 0, "no call is leaked by a refusal");
    let (_, out) = h.send(&invite("n9", Some(&jwt("alice")), "Session-Expires: 30\r\n", OFFER));
    assert_eq!(responses(&out)[0].headers.get("Min-SE"), Some("90"));
}

#[test]
fn a_second_live_leg_is_busy_and_limits_answer_503() {
    let mut h = Harness::new(config());
    connected(&mut h, "c1", &jwt("alice"), "");
    let (_, out) = h.send(&invite("c2", Some(&jwt("alice")), "", OFFER));
    assert_eq!(final_status(&out), 486);
    // Conference limit (2 legs).
    connected(&mut h, "c3", &jwt("carol"), "");
    connected(&mut h, "c4", &jwt("dave"), "");
    let (_, out) = h.send(&invite("c5", Some(&jwt("erin")), "", OFFER));
    let r = responses(&out)[0];
    assert_eq!((r.status, r.headers.get("Retry-After").is_some()), (503, true));
    // Draining.
    h.event(Event::Drain);
    let (_, out) = h.send(&invite("c6", Some(&jwt("bob")), "", OFFER));
    assert_eq!(final_status(&out), 503);
    // No RTP port.
    let mut h = Harness::new(config());
    h.env.ports_free = false;
    let (_, out) = h.send(&invite("c7", Some(&jwt("alice")), "", OFFER));
    assert_eq!(final_status(&out), 503);
}

#[test]
fn max_calls_trusted_peers_and_the_rate_limit() {
    let mut cfg = config();
    cfg.max_calls = 1;
    let mut h = Harness::new(cfg);
    connected(&mut h, "c1", &jwt("alice"), "");
    let (_, out) = h.send(&invite("c2", Some(&jwt("bob")), "", OFFER));
    assert_eq!(final_status(&out), 503);

    let mut cfg = config();
    cfg.trusted_peers = vec!["10.0.0.0/8".parse().unwrap()];
    let mut h = Harness::new(cfg);
    let (_, out) = h.send(&invite("c1", Some(&jwt("alice")), "", OFFER));
    assert_eq!(final_status(&out), 403);

    let mut cfg = config();
    cfg.invite_rate = 2;
    let mut h = Harness::new(cfg);
    let statuses: Vec<u16> =
        (0..3).map(|i| final_status(&h.send(&invite(&format!("r{i}"), Some(&jwt("ghost")), "", OFFER)).1)).collect();
    assert_eq!(statuses, [404, 404, 503]);
    h.advance(Duration::from_secs(1));
    assert_eq!(final_status(&h.send(&invite("r4", Some(&jwt("ghost")), "", OFFER)).1), 404, "refilled");
}

#[test]
fn a_request_that_comes_back_through_our_own_via_is_a_loop() {
    let mut h = Harness::new(config());
    let looped = invite("l1", Some(&jwt("alice")), "", OFFER).replace(
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-l1\r\n",
        &format!("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-l1\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={OUR_BRANCH_PREFIX}x\r\n"),
    );
    assert_eq!(final_status(&h.send(&looped).1), 482);
    assert_eq!(h.ua.call_count(), 0);
}

#[test]
fn max_forwards_zero_and_merged_requests() {
    let mut h = Harness::new(config());
    let text = invite("m1", Some(&jwt("alice")), "", OFFER).replace("Max-Forwards: 70", "Max-Forwards: 0");
    assert_eq!(final_status(&h.send(&text).1), 483);
    connected(&mut h, "m2", &jwt("alice"), "");
    let merged = invite("m2", Some(&jwt("bob")), "", OFFER).replace("branch=z9hG4bK-m2", "branch=z9hG4bK-other");
    assert_eq!(final_status(&h.send(&merged).1), 482);
}

#[test]
fn the_2xx_is_retransmitted_until_the_ack_then_bye_after_64_t1() {
    let mut h = Harness::new(config());
    let (tx, out) = h.send(&invite("c1", Some(&jwt("alice")), "", OFFER));
    assert_eq!(final_status(&out), 200);
    let out = h.advance(Duration::from_millis(600));
    assert_eq!(responses(&out).len(), 1, "one retransmission after T1");
    let out = h.advance(Duration::from_secs(10));
    let n = responses(&out).len();
    assert!((3..=5).contains(&n), "doubling up to T2: {n}");
    // Nothing ends before 64*T1 (32 s)…
    let out = h.advance(Duration::from_secs(21));
    assert!(!out.iter().any(|o| matches!(o, Output::Media(MediaCommand::Stop { .. }))), "media stopped early");
    // … and at 64*T1 the BYE goes out and the media stops with it (no RTP while the BYE's
    // transaction runs its course).
    let out = h.advance(Duration::from_secs(1) + Duration::from_millis(500));
    assert!(
        out.iter().any(|o| matches!(o, Output::Send { request, .. } if request.method == Method::Bye)),
        "BYE after 64*T1 without ACK"
    );
    assert!(out.iter().any(|o| matches!(o, Output::Media(MediaCommand::Stop { .. }))), "media stops at 64*T1");
    let _ = tx;
}

#[test]
fn cancel_before_answer_gets_487() {
    let mut cfg = config();
    cfg.answer_delay = Duration::from_secs(2);
    let mut h = Harness::new(cfg);
    let (tx, out) = h.send(&invite("c1", Some(&jwt("alice")), "", OFFER));
    assert_eq!(responses(&out)[0].status, 180);
    let out = h.event(Event::Cancel { tx });
    assert_eq!(final_status(&out), 487);
    assert_eq!(h.ua.call_count(), 0);
    assert!(h.advance(Duration::from_secs(5)).iter().all(|o| !matches!(o, Output::Respond { .. })), "no late 200");
}

#[test]
fn ringing_then_answer_after_the_delay() {
    let mut cfg = config();
    cfg.answer_delay = Duration::from_secs(2);
    let mut h = Harness::new(cfg);
    h.send(&invite("c1", Some(&jwt("alice")), "", OFFER));
    let out = h.advance(Duration::from_secs(2));
    assert_eq!(final_status(&out), 200);
}

#[test]
fn bye_from_sip_ends_a_transfer_leg_and_removes_the_participant() {
    let mut h = Harness::new(config());
    let (_, tag) = connected(&mut h, "c1", &jwt("alice"), "");
    let (_, out) = h.send(&in_dialog("BYE", "c1", &tag, 2, "", ""));
    assert_eq!(final_status(&out), 200);
    assert!(out.iter().any(|o| matches!(o, Output::Rooms(RoomsCommand::RemoveFromSession { participant, .. }) if participant.as_str() == "alice")));
    assert!(out.iter().any(|o| matches!(o, Output::Call(CallEvent::Ended { reason, .. }) if reason == "remote BYE")));
    assert_eq!(h.ua.call_count(), 0);
    // The dialog is gone: another BYE gets 481.
    assert_eq!(final_status(&h.send(&in_dialog("BYE", "c1", &tag, 3, "", "")).1), 481);
}

#[test]
fn bridge_legs_keep_the_participant_and_can_come_back() {
    let mut h = Harness::new(config());
    let (_, tag) = connected(&mut h, "c1", &jwt("bob"), "");
    let (_, out) = h.send(&in_dialog("BYE", "c1", &tag, 2, "", ""));
    assert!(!out.iter().any(|o| matches!(o, Output::Rooms(_))), "the participant stays in the session");
    connected(&mut h, "c2", &jwt("bob"), "");
}

#[test]
fn removal_through_the_api_sends_bye_in_transfer_mode_only() {
    let mut h = Harness::new(config());
    connected(&mut h, "c1", &jwt("alice"), "");
    connected(&mut h, "c2", &jwt("bob"), "");
    let left = |p: &str, reason| {
        Event::Room(RoomEvent::ParticipantLeft {
            account: AccountId::from("default"),
            session: SessionId::from("s1"),
            participant: ParticipantId::from(p),
            callback_url: None,
            reason,
        })
    };
    let out = h.event(left("alice", LeaveReason::Removed));
    let bye = out.iter().find_map(|o| {
        if let Output::Send { request, destination, .. } = o { Some((request, destination)) } else { None }
    });
    let (bye, destination) = bye.expect("BYE for the transfer leg");
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(bye.uri, "sip:pv@127.0.0.1:5070");
    assert_eq!(destination.to_string(), "127.0.0.1:5070");
    assert!(bye.headers.get("To").unwrap().contains("tag=f-c1"));
    let out = h.event(left("bob", LeaveReason::Removed));
    assert!(out.is_empty(), "a bridge leg survives removal");
    let out = h.event(left("bob", LeaveReason::SessionDeleted));
    assert!(out.iter().any(|o| matches!(o, Output::Send { .. })), "but not the session's deletion");
    // The BYE's answer ends the call; the participant already left, so no second removal.
    let out = h.event(Event::Sent { call: 1, status: Some(200) });
    assert!(!out.iter().any(|o| matches!(o, Output::Rooms(_))));
    assert!(out.iter().any(|o| matches!(o, Output::Call(CallEvent::Ended { .. }))));
}

#[test]
fn hold_and_resume_follow_rfc_3264_directions() {
    let mut h = Harness::new(config());
    let (_, tag) = connected(&mut h, "c1", &jwt("alice"), "");
    for (cseq, offered, answered) in
        [(2, "sendonly", "recvonly"), (3, "inactive", "inactive"), (4, "sendrecv", "sendrecv")]
    {
        let offer = OFFER.replace("a=sendrecv", &format!("a={offered}")).replace("o=- 1 1", &format!("o=- 1 {cseq}"));
        let (tx, out) = h.send(&in_dialog("INVITE", "c1", &tag, cseq, "Content-Type: application/sdp\r\n", &offer));
        let ok = responses(&out)[0];
        assert_eq!(ok.status, 200);
        let sdp = String::from_utf8(ok.body.clone()).unwrap();
        assert!(sdp.contains(&format!("a={answered}")), "{offered} → {answered}: {sdp}");
        assert!(out.iter().any(|o| matches!(o, Output::Media(MediaCommand::Update { .. }))));
        // The RTP inactivity timeout does not end a held call.
        let inactive = h.event(Event::MediaInactive { call: 1 });
        let held = offered != "sendrecv";
        assert_eq!(inactive.iter().any(|o| matches!(o, Output::Send { .. })), !held, "{offered}");
        if !held {
            break;
        }
        let ack = in_dialog("ACK", "c1", &tag, cseq, "", "");
        let Message::Request(ack) = parse(ack.as_bytes()).unwrap() else { unreachable!() };
        h.event(Event::Ack { tx, request: ack });
    }
}

#[test]
fn a_failed_media_leg_ends_the_call_even_on_hold() {
    let mut h = Harness::new(config());
    let (_, tag) = connected(&mut h, "c1", &jwt("alice"), "");
    let offer = OFFER.replace("a=sendrecv", "a=sendonly").replace("o=- 1 1", "o=- 1 2");
    let (tx, _) = h.send(&in_dialog("INVITE", "c1", &tag, 2, "Content-Type: application/sdp\r\n", &offer));
    let ack = in_dialog("ACK", "c1", &tag, 2, "", "");
    let Message::Request(ack) = parse(ack.as_bytes()).unwrap() else { unreachable!() };
    h.event(Event::Ack { tx, request: ack });
    // Held: the inactivity timeout would not end it; a leg that is gone does.
    assert!(!h.event(Event::MediaInactive { call: 1 }).iter().any(|o| matches!(o, Output::Send { .. })));
    let out = h.event(Event::MediaFailed { call: 1 });
    let bye = out.iter().find_map(|o| if let Output::Send { request, .. } = o { Some(request) } else { None });
    assert_eq!(bye.expect("BYE on a failed leg").method, Method::Bye);
}

#[test]
fn a_reinvite_before_the_previous_ack_is_taken_as_its_ack_and_cseq_is_ordered() {
    let mut h = Harness::new(config());
    let (_, tag) = connected(&mut h, "c1", &jwt("alice"), "");
    let body = OFFER;
    let (_, out) = h.send(&in_dialog("INVITE", "c1", &tag, 2, "Content-Type: application/sdp\r\n", body));
    assert_eq!(final_status(&out), 200);
    // Its ACK is still on the way: the client's transaction completed on our 2xx (which held
    // the answer), so it may send the next INVITE (RFC 3261 §14.1): not a 491 (a busy machine
    // delivered them in this order to the sipp hold test).
    let (_, out) = h.send(&in_dialog("INVITE", "c1", &tag, 3, "Content-Type: application/sdp\r\n", body));
    assert_eq!(final_status(&out), 200);
    let (_, out) = h.send(&in_dialog("OPTIONS", "c1", &tag, 3, "", ""));
    assert_eq!(final_status(&out), 500, "CSeq not above the last one");
    assert_eq!(final_status(&h.send(&in_dialog("OPTIONS", "c1", &tag, 4, "", "")).1), 200);
    assert_eq!(final_status(&h.send(&in_dialog("BYE", "c1", "wrong-tag", 5, "", "")).1), 481);
}

#[test]
fn late_offer_puts_our_offer_in_the_200_and_takes_the_answer_from_the_ack() {
    let mut h = Harness::new(config());
    let (tx, out) = h.send(&invite("c1", Some(&jwt("alice")), "", ""));
    let ok = responses(&out)[0];
    assert_eq!(ok.status, 200);
    let offer = String::from_utf8(ok.body.clone()).unwrap();
    assert!(offer.contains("m=audio 20002"), "{offer}");
    assert!(!out.iter().any(|o| matches!(o, Output::Media(MediaCommand::Start { .. }))), "no media before the answer");
    let tag = to_tag(ok);
    let answer = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 41000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let ack = in_dialog("ACK", "c1", &tag, 1, "Content-Type: application/sdp\r\n", answer);
    let Message::Request(ack) = parse(ack.as_bytes()).unwrap() else { unreachable!() };
    let out = h.event(Event::Ack { tx, request: ack });
    let started = out.iter().find_map(|o| {
        if let Output::Media(MediaCommand::Start { negotiated, .. }) = o { Some(negotiated) } else { None }
    });
    assert_eq!(started.expect("media after the ACK").remote_rtp.port(), 41000);
}

#[test]
fn a_reinvite_before_the_first_ack_confirms_the_call_once_and_the_late_ack_changes_nothing() {
    let mut h = Harness::new(config());
    let (tx, out) = h.send(&invite("c1", Some(&jwt("alice")), "", OFFER));
    let tag = to_tag(responses(&out)[0]);
    let hold = OFFER.replace("a=sendrecv", "a=sendonly").replace("o=- 1 1", "o=- 1 2");
    let (_, out) = h.send(&in_dialog("INVITE", "c1", &tag, 2, "Content-Type: application/sdp\r\n", &hold));
    assert_eq!(final_status(&out), 200, "{out:?}");
    let connected = |out: &[Output]| out.iter().filter(|o| matches!(o, Output::Call(CallEvent::Connected(_)))).count();
    assert_eq!(connected(&out), 1, "the re-INVITE confirmed the call: {out:?}");
    // The first 2xx is no longer retransmitted; only the re-INVITE's 2xx is, until its ACK.
    let ack = in_dialog("ACK", "c1", &tag, 1, "", "");
    let Message::Request(ack) = parse(ack.as_bytes()).unwrap() else { unreachable!() };
    let out = h.event(Event::Ack { tx, request: ack });
    assert!(out.is_empty(), "the late ACK is absorbed: {out:?}");
    let retransmitted = h.advance(Duration::from_millis(600));
    let oks: Vec<u32> = retransmitted
        .iter()
        .filter_map(|o| match o {
            Output::Respond { response, .. } => {
                response.headers.get("CSeq").map(|c| c.split(' ').next().unwrap().parse().unwrap())
            }
            _ => None,
        })
        .collect();
    assert_eq!(oks, vec![2], "{retransmitted:?}");
}

#[test]
fn a_reinvite_while_a_late_offer_awaits_its_answer_in_the_ack_gets_491() {
    let mut h = Harness::new(config());
    let (tx, out) = h.send(&invite("c1", Some(&jwt("alice")), "", ""));
    let tag = to_tag(responses(&out)[0]);
    // Our offer went in the 200; its answer comes in the ACK: the exchange is open.
    let (_, out) = h.send(&in_dialog("INVITE", "c1", &tag, 2, "Content-Type: application/sdp\r\n", OFFER));
    assert_eq!(final_status(&out), 491);
    let answer = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 41000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let ack = in_dialog("ACK", "c1", &tag, 1, "Content-Type: application/sdp\r\n", answer);
    let Message::Request(ack) = parse(ack.as_bytes()).unwrap() else { unreachable!() };
    let out = h.event(Event::Ack { tx, request: ack });
    assert!(out.iter().any(|o| matches!(o, Output::Call(CallEvent::Connected(_)))), "{out:?}");
}

#[test]
fn the_invite_again_before_its_ack_gets_the_same_200_and_no_second_call() {
    let mut h = Harness::new(config());
    let text = invite("c1", Some(&jwt("alice")), "", OFFER);
    let (tx, out) = h.send(&text);
    let first = responses(&out)[0].clone();
    assert_eq!(first.status, 200);
    // A busy client retransmitted before our 2xx reached it; the 2xx ended the transaction,
    // so the copy comes up as a new one.
    let (_, out) = h.send(&text);
    let again = responses(&out);
    assert_eq!(again.len(), 1, "{out:?}");
    assert_eq!((again[0].status, to_tag(again[0])), (200, to_tag(&first)));
    assert_eq!(again[0].body, first.body, "the same answer");
    assert!(!out.iter().any(|o| matches!(o, Output::Media(_))), "no second call: {out:?}");
    // A different request with the same identifiers is still a merged request.
    let merged = text.replace("branch=z9hG4bK-c1", "branch=z9hG4bK-other");
    assert_eq!(final_status(&h.send(&merged).1), 482);
    let ack = in_dialog("ACK", "c1", &to_tag(&first), 1, "", "");
    let Message::Request(ack) = parse(ack.as_bytes()).unwrap() else { unreachable!() };
    let out = h.event(Event::Ack { tx, request: ack });
    assert!(out.iter().any(|o| matches!(o, Output::Call(CallEvent::Connected(_)))), "{out:?}");
}

#[test]
fn session_timers_end_a_call_whose_refresh_is_missed_and_refreshes_keep_it() {
    let mut h = Harness::new(config());
    let (_, tag) = h_connected_with_timer(&mut h);
    // A refresh by UPDATE at 60 s restarts the interval: 120 s, BYE 32 s before its end
    // (RFC 4028 §10: the interval minus min(32 s, interval / 3)).
    h.advance(Duration::from_secs(60));
    let (_, out) = h.send(&in_dialog("UPDATE", "c1", &tag, 2, "Session-Expires: 120;refresher=uac\r\n", ""));
    let ok = responses(&out)[0];
    assert_eq!(ok.headers.get("Session-Expires"), Some("120;refresher=uac"));
    let out = h.advance(Duration::from_secs(87));
    assert!(!out.iter().any(|o| matches!(o, Output::Send { .. })));
    let out = h.advance(Duration::from_secs(2));
    assert!(
        out.iter().any(|o| matches!(o, Output::Send { request, .. } if request.method == Method::Bye)),
        "missed refresh → BYE: {out:?}"
    );
}

fn h_connected_with_timer(h: &mut Harness) -> (TxId, String) {
    let (tx, tag) = connected(h, "c1", &jwt("alice"), "Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n");
    (tx, tag)
}

#[test]
fn info_dtmf_relay_becomes_a_dtmf_event() {
    let mut h = Harness::new(config());
    let (_, tag) = connected(&mut h, "c1", &jwt("alice"), "");
    let (_, out) = h.send(&in_dialog(
        "INFO",
        "c1",
        &tag,
        2,
        "Content-Type: application/dtmf-relay\r\n",
        "Signal=5\r\nDuration=160\r\n",
    ));
    assert_eq!(final_status(&out), 200);
    assert!(out.iter().any(|o| matches!(o, Output::Call(CallEvent::Dtmf { tone: '5', duration_ms: 160, .. }))));
    let (_, out) = h.send(&in_dialog("INFO", "c1", &tag, 3, "Content-Type: text/plain\r\n", "hello"));
    assert_eq!(final_status(&out), 415);
}

#[test]
fn options_and_unsupported_methods() {
    let mut h = Harness::new(config());
    let opts = "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-o\r\n\
        From: <sip:pv@127.0.0.1>;tag=x\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let (_, out) = h.send(opts);
    let r = responses(&out)[0];
    assert_eq!(r.status, 200);
    assert_eq!(r.headers.get("Allow"), Some(ALLOW));
    let msg = opts.replace("OPTIONS", "MESSAGE");
    let (_, out) = h.send(&msg);
    let r = responses(&out)[0];
    assert_eq!((r.status, r.headers.get("Allow")), (405, Some(ALLOW)));
    let bye = opts.replace("OPTIONS", "BYE");
    assert_eq!(final_status(&h.send(&bye).1), 481, "BYE outside a dialog");
}

#[test]
fn drain_over_ends_every_call() {
    let mut h = Harness::new(config());
    connected(&mut h, "c1", &jwt("alice"), "");
    connected(&mut h, "c2", &jwt("bob"), "");
    h.event(Event::Drain);
    let out = h.event(Event::DrainOver);
    assert_eq!(out.iter().filter(|o| matches!(o, Output::Send { .. })).count(), 2);
    h.event(Event::Sent { call: 1, status: Some(200) });
    let out = h.advance(Duration::from_secs(40));
    assert!(
        out.iter().any(|o| matches!(o, Output::Call(CallEvent::Ended { .. }))),
        "an unanswered BYE still ends the call"
    );
    assert_eq!(h.ua.call_count(), 0);
}

#[test]
fn uui_list_form_is_accepted() {
    let mut h = Harness::new(config());
    let text =
        invite("u1", None, &format!("User-to-User: 3a2f;encoding=hex, {};encoding=jwt\r\n", jwt("alice")), OFFER);
    assert_eq!(final_status(&h.send(&text).1), 200);
}

#[test]
fn record_route_is_copied_and_bye_follows_the_route_set() {
    let mut h = Harness::new(config());
    let rr = "Record-Route: <sip:10.9.9.9:5080;lr>, <sip:10.9.9.8;lr>\r\n";
    let (tx, out) = h.send(&invite("c1", Some(&jwt("alice")), rr, OFFER));
    let ok = responses(&out)[0];
    assert_eq!(ok.headers.get_all("Record-Route").collect::<Vec<_>>(), ["<sip:10.9.9.9:5080;lr>, <sip:10.9.9.8;lr>"]);
    let tag = to_tag(ok);
    let ack = in_dialog("ACK", "c1", &tag, 1, "", "");
    let Message::Request(ack) = parse(ack.as_bytes()).unwrap() else { unreachable!() };
    h.event(Event::Ack { tx, request: ack });
    let out = h.event(Event::MediaInactive { call: 1 });
    let (bye, destination) = out
        .iter()
        .find_map(
            |o| if let Output::Send { request, destination, .. } = o { Some((request, destination)) } else { None },
        )
        .expect("BYE on RTP timeout");
    assert_eq!(bye.uri, "sip:pv@127.0.0.1:5070", "loose routing keeps the remote target");
    assert_eq!(bye.headers.get_all("Route").collect::<Vec<_>>(), ["<sip:10.9.9.9:5080;lr>", "<sip:10.9.9.8;lr>"]);
    assert_eq!(destination.to_string(), "10.9.9.9:5080", "sent to the first route");
}

/// Admission and ports are asked of the shell and may take their time: a CANCEL meanwhile is
/// answered 487, a port reserved after it is given back, and a second INVITE for the same
/// participant while the first waits for its port is refused as busy.
#[test]
fn admission_and_ports_are_asked_and_their_answers_may_come_late() {
    let mut h = Harness::new(config());
    let tok = jwt("alice");
    let Message::Request(request) = parse(invite("c1", Some(&tok), "", OFFER).as_bytes()).unwrap() else { panic!() };
    let source = "127.0.0.1:5070".parse().unwrap();
    let tx = h.next_tx;
    h.next_tx += 1;
    h.ua.handle_request(h.now, Inbound { tx, source, transport: Transport::Udp, request });
    let out = h.raw();
    let [Output::Admit { call, token: asked }] = &out[..] else { panic!("{out:?}") };
    assert_eq!(asked, &tok);
    let call = *call;
    h.ua.handle_event(h.now, Event::Admission { call, result: Ok(admitted("alice", None)) });
    let out = h.raw();
    assert!(matches!(&out[..], [Output::ReservePort { call: c }] if *c == call), "{out:?}");
    // The same participant again while the first waits for its port: busy.
    let (_, out) = h.send(&invite("c2", Some(&tok), "", OFFER));
    assert!(responses(&out).iter().any(|r| r.status == 486), "{out:?}");
    // CANCEL: 487 at once; the port that comes later goes back.
    h.ua.handle_event(h.now, Event::Cancel { tx });
    let out = h.raw();
    assert!(responses(&out).iter().any(|r| r.status == 487), "{out:?}");
    h.ua.handle_event(h.now, Event::PortReserved { call, port: Some(20_000) });
    let out = h.raw();
    assert!(matches!(&out[..], [Output::Media(MediaCommand::Stop { call: c })] if *c == call), "{out:?}");
    assert_eq!(h.ua.call_count(), 0);
    // A late verdict for a call that is gone changes nothing.
    h.ua.handle_event(h.now, Event::Admission { call, result: Ok(admitted("alice", None)) });
    assert!(h.raw().is_empty());
}

#[test]
fn removal_before_the_ack_waits_for_it_and_does_not_remove_twice() {
    let mut h = Harness::new(config());
    let (tx, out) = h.send(&invite("c1", Some(&jwt("alice")), "", OFFER));
    assert_eq!(final_status(&out), 200);
    let tag = to_tag(responses(&out)[0]);
    let out = h.event(Event::Room(RoomEvent::ParticipantLeft {
        account: AccountId::from("default"),
        session: SessionId::from("s1"),
        participant: ParticipantId::from("alice"),
        callback_url: None,
        reason: LeaveReason::Removed,
    }));
    assert!(!out.iter().any(|o| matches!(o, Output::Send { .. })), "no BYE before the ACK (RFC 3261 §15): {out:?}");
    let ack = in_dialog("ACK", "c1", &tag, 1, "", "");
    let Message::Request(ack) = parse(ack.as_bytes()).unwrap() else { unreachable!() };
    let out = h.event(Event::Ack { tx, request: ack });
    let bye = out.iter().find_map(|o| if let Output::Send { request, .. } = o { Some(request) } else { None });
    let bye = bye.expect("the BYE goes out with the ACK");
    assert!(bye.headers.get("Reason").unwrap().contains("participant removed"), "{bye:?}");
    let out = h.event(Event::Sent { call: 1, status: Some(200) });
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Call(CallEvent::Ended { reason, .. }) if reason == "participant removed"))
    );
    assert!(!out.iter().any(|o| matches!(o, Output::Rooms(_))), "the participant already left: {out:?}");
    assert_eq!(h.ua.call_count(), 0);
}
