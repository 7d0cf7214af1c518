//! The UAC in virtual time, against a far end written out message by message.

use std::time::{Duration, Instant};

use super::*;
use crate::sip::message::{self, Method, Request, Response};

const OFFER: &[u8] =
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
const ANSWER: &[u8] =
    b"v=0\r\no=- 2 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";

fn peer() -> Peer {
    Peer { addr: "127.0.0.2:5060".parse().unwrap(), transport: Transport::Udp, conn: None }
}

fn uac() -> Uac {
    Uac::new(UacConfig::new("127.0.0.1:5070".parse().unwrap(), Transport::Udp, [7; 32]))
}

fn dial(offer: Option<&[u8]>, credentials: bool) -> Dial {
    Dial {
        uri: "sip:+4798765432@127.0.0.2".into(),
        from: "sip:+4712345678@interwork".into(),
        to: "sip:+4798765432@127.0.0.2".into(),
        next_hop: peer(),
        offer: offer.map(<[u8]>::to_vec),
        credentials: credentials.then(|| Credentials { username: "alice".into(), password: "secret".into() }),
        headers: vec![("P-Asserted-Identity".into(), "<sip:+4712345678@interwork>".into())],
    }
}

/// Everything the UAC put out, drained.
fn drain(uac: &mut Uac) -> Vec<UacOutput> {
    std::iter::from_fn(|| uac.poll_output()).collect()
}

fn requests(outs: &[UacOutput]) -> Vec<&Request> {
    outs.iter().filter_map(|o| if let UacOutput::Request { request, .. } = o { Some(request) } else { None }).collect()
}

fn transmitted(outs: &[UacOutput]) -> Vec<Request> {
    outs.iter()
        .filter_map(|o| match o {
            UacOutput::Transmit { bytes, .. } => match message::parse(bytes).unwrap() {
                message::Message::Request(r) => Some(r),
                message::Message::Response(_) => None,
            },
            _ => None,
        })
        .collect()
}

fn events(outs: &[UacOutput]) -> Vec<UacEvent> {
    outs.iter()
        .filter_map(|o| if let UacOutput::Event { event, .. } = o { Some(event.clone()) } else { None })
        .collect()
}

/// The far end's response to `req`, with its tag, Contact and Record-Route.
fn reply(req: &Request, status: u16, body: Option<&[u8]>, extra: &[(&str, &str)]) -> Response {
    let mut r = Response::to(req, status, message::reason_phrase(status), Some("far1"));
    r.headers.push("Record-Route", "<sip:p1.example;lr>, <sip:p2.example;lr>");
    r.headers.push("Contact", "<sip:far@127.0.0.2:5062>");
    for (n, v) in extra {
        r.headers.push(n, *v);
    }
    if let Some(b) = body {
        r.headers.push("Content-Type", "application/sdp");
        r.body = b.to_vec();
    }
    r
}

fn only_request(outs: &[UacOutput]) -> Request {
    let rs = requests(outs);
    assert_eq!(rs.len(), 1, "{outs:?}");
    rs[0].clone()
}

/// Dials with an offer and takes the call to Connected with `extra` on the 200.
fn connected(uac: &mut Uac, now: Instant, extra: &[(&str, &str)]) -> (CallRef, Request) {
    let call = uac.dial(now, dial(Some(OFFER), false)).unwrap();
    let invite = only_request(&drain(uac));
    uac.handle_response(now, reply(&invite, 200, Some(ANSWER), extra));
    let outs = drain(uac);
    assert!(events(&outs).contains(&UacEvent::Connected), "{outs:?}");
    (call, invite)
}

#[test]
fn a_call_with_an_offer_rings_is_answered_and_acked_in_its_dialog() {
    let mut uac = uac();
    let now = Instant::now();
    let call = uac.dial(now, dial(Some(OFFER), false)).unwrap();
    let invite = only_request(&drain(&mut uac));
    assert_eq!(invite.method, Method::Invite);
    assert_eq!(invite.body, OFFER);
    assert_eq!(invite.headers.get("Supported"), Some("timer, 100rel"));
    assert_eq!(invite.headers.get("Session-Expires"), Some("1800"));
    assert!(invite.headers.get("Contact").unwrap().contains("127.0.0.1:5070"));
    assert_eq!(invite.headers.get("P-Asserted-Identity"), Some("<sip:+4712345678@interwork>"));
    assert!(invite.branch().unwrap().starts_with("z9hG4bK"));
    assert!(invite.from_tag().is_some() && invite.to_tag().is_none());

    uac.handle_response(now, reply(&invite, 100, None, &[]));
    assert!(drain(&mut uac).is_empty());
    uac.handle_response(now, reply(&invite, 180, None, &[]));
    assert_eq!(events(&drain(&mut uac)), vec![UacEvent::Progress { status: 180 }]);

    uac.handle_response(now, reply(&invite, 200, Some(ANSWER), &[]));
    let outs = drain(&mut uac);
    assert_eq!(events(&outs), vec![UacEvent::Answer { sdp: ANSWER.to_vec() }, UacEvent::Connected]);
    let acks = transmitted(&outs);
    assert_eq!(acks.len(), 1);
    let ack = &acks[0];
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri, "sip:far@127.0.0.2:5062", "the ACK goes to the remote target");
    assert_eq!(ack.headers.get("CSeq"), Some(format!("{} ACK", invite.cseq()).as_str()));
    assert_eq!(ack.to_tag(), Some("far1"));
    let routes: Vec<_> = ack.headers.get_all("Route").collect();
    assert_eq!(routes, ["<sip:p2.example;lr>", "<sip:p1.example;lr>"], "the route set is reversed");
    assert_ne!(ack.branch(), invite.branch(), "the ACK of a 2xx is a transaction of its own");

    // A retransmitted 2xx is ACKed again, with the same ACK; no new event.
    uac.handle_response(now, reply(&invite, 200, Some(ANSWER), &[]));
    let outs = drain(&mut uac);
    assert!(events(&outs).is_empty());
    assert_eq!(transmitted(&outs), acks);

    // Hang up: BYE in the dialog; its 200 ends the call.
    uac.hang_up(now, call).unwrap();
    let bye = only_request(&drain(&mut uac));
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(bye.uri, "sip:far@127.0.0.2:5062");
    assert_eq!(bye.cseq(), invite.cseq() + 1);
    uac.handle_response(now, reply(&bye, 200, None, &[]));
    assert_eq!(events(&drain(&mut uac)), vec![UacEvent::Ended { why: EndReason::HungUp }]);
    assert!(uac.is_empty());
}

#[test]
fn digest_challenges_are_answered_once_per_nonce() {
    let mut uac = uac();
    let now = Instant::now();
    uac.dial(now, dial(Some(OFFER), true)).unwrap();
    let invite = only_request(&drain(&mut uac));
    let challenge = "Digest realm=\"trunk\", nonce=\"abc\", qop=\"auth\", algorithm=SHA-256";
    uac.handle_response(now, reply(&invite, 407, None, &[("Proxy-Authenticate", challenge)]));
    let again = only_request(&drain(&mut uac));
    assert_eq!(again.cseq(), invite.cseq() + 1);
    assert_eq!(again.call_id(), invite.call_id());
    assert_eq!(again.from_tag(), invite.from_tag());
    assert_ne!(again.branch(), invite.branch());
    assert_eq!(again.body, OFFER);
    let auth = again.headers.get("Proxy-Authorization").unwrap();
    assert!(auth.contains("username=\"alice\"") && auth.contains("algorithm=SHA-256") && auth.contains("nc=00000001"));
    assert!(auth.contains("uri=\"sip:+4798765432@127.0.0.2\""), "{auth}");
    // Then the server challenges too: both answers go.
    uac.handle_response(now, reply(&again, 401, None, &[("WWW-Authenticate", "Digest realm=\"srv\", nonce=\"n2\"")]));
    let third = only_request(&drain(&mut uac));
    assert!(third.headers.get("Proxy-Authorization").is_some() && third.headers.get("Authorization").is_some());
    // Refused again with the same (not stale) nonce: the credentials are wrong.
    uac.handle_response(now, reply(&third, 401, None, &[("WWW-Authenticate", "Digest realm=\"srv\", nonce=\"n2\"")]));
    assert_eq!(events(&drain(&mut uac)), vec![UacEvent::Ended { why: EndReason::AuthFailed { status: 401 } }]);

    // No credentials: a challenge ends the call.
    uac.dial(now, dial(None, false)).unwrap();
    let invite = only_request(&drain(&mut uac));
    uac.handle_response(now, reply(&invite, 401, None, &[("WWW-Authenticate", "Digest realm=\"r\", nonce=\"n\"")]));
    assert_eq!(events(&drain(&mut uac)), vec![UacEvent::Ended { why: EndReason::AuthFailed { status: 401 } }]);
    // A challenge we cannot read does too.
    uac.dial(now, dial(None, true)).unwrap();
    let invite = only_request(&drain(&mut uac));
    uac.handle_response(now, reply(&invite, 401, None, &[("WWW-Authenticate", "Basic realm=\"r\"")]));
    assert_eq!(events(&drain(&mut uac)), vec![UacEvent::Ended { why: EndReason::AuthFailed { status: 401 } }]);
}

#[test]
fn reliable_provisionals_are_pracked_once_in_order() {
    let mut uac = uac();
    let now = Instant::now();
    uac.dial(now, dial(Some(OFFER), false)).unwrap();
    let invite = only_request(&drain(&mut uac));
    let p183 = reply(&invite, 183, Some(ANSWER), &[("Require", "100rel"), ("RSeq", "7")]);
    uac.handle_response(now, p183.clone());
    let outs = drain(&mut uac);
    assert_eq!(events(&outs), vec![UacEvent::Progress { status: 183 }, UacEvent::Answer { sdp: ANSWER.to_vec() }]);
    let prack = only_request(&outs);
    assert_eq!(prack.method, Method::Prack);
    assert_eq!(prack.headers.get("RAck"), Some(format!("7 {} INVITE", invite.cseq()).as_str()));
    assert_eq!(prack.to_tag(), Some("far1"));
    assert_eq!(prack.uri, "sip:far@127.0.0.2:5062");
    assert_eq!(prack.cseq(), invite.cseq() + 1);
    // Its retransmission is discarded; one that skips a number too.
    uac.handle_response(now, p183);
    uac.handle_response(now, reply(&invite, 180, None, &[("Require", "100rel"), ("RSeq", "9")]));
    assert!(drain(&mut uac).is_empty());
    // The next in order is PRACKed; the 2xx's SDP (same answer) is not reported twice.
    uac.handle_response(now, reply(&invite, 180, None, &[("Require", "100rel"), ("RSeq", "8")]));
    let prack2 = only_request(&drain(&mut uac));
    assert_eq!(prack2.headers.get("RAck"), Some(format!("8 {} INVITE", invite.cseq()).as_str()));
    uac.handle_response(now, reply(&prack2, 200, None, &[]));
    uac.handle_response(now, reply(&invite, 200, Some(ANSWER), &[]));
    assert_eq!(events(&drain(&mut uac)), vec![UacEvent::Connected]);
}

#[test]
fn without_an_offer_the_answer_goes_in_the_ack_or_the_prack() {
    let mut uac = uac();
    let now = Instant::now();
    let call = uac.dial(now, dial(None, false)).unwrap();
    let invite = only_request(&drain(&mut uac));
    assert!(invite.body.is_empty() && invite.headers.get("Content-Type").is_none());
    uac.handle_response(now, reply(&invite, 200, Some(ANSWER), &[]));
    let outs = drain(&mut uac);
    assert_eq!(events(&outs), vec![UacEvent::Connected, UacEvent::Offer { sdp: ANSWER.to_vec() }]);
    assert!(transmitted(&outs).is_empty(), "the ACK waits for the answer");
    uac.answer(now, call, Some(OFFER.to_vec())).unwrap();
    let acks = transmitted(&drain(&mut uac));
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].body, OFFER);
    assert_eq!(uac.answer(now, call, Some(OFFER.to_vec())), Err(UacError::State), "nothing left to answer");

    // The offer in a reliable 183: the PRACK answers it.
    let call = uac.dial(now, dial(None, false)).unwrap();
    let invite = only_request(&drain(&mut uac));
    uac.handle_response(now, reply(&invite, 183, Some(ANSWER), &[("Require", "100rel"), ("RSeq", "1")]));
    let outs = drain(&mut uac);
    assert!(requests(&outs).is_empty(), "the PRACK waits for the answer");
    assert_eq!(events(&outs), vec![UacEvent::Progress { status: 183 }, UacEvent::Offer { sdp: ANSWER.to_vec() }]);
    uac.answer(now, call, Some(OFFER.to_vec())).unwrap();
    let prack = only_request(&drain(&mut uac));
    assert_eq!((prack.method.clone(), prack.body.as_slice()), (Method::Prack, OFFER));
}

#[test]
fn cancel_waits_for_a_provisional_and_a_crossing_2xx_is_acked_and_hung_up() {
    let mut uac = uac();
    let now = Instant::now();
    let call = uac.dial(now, dial(Some(OFFER), false)).unwrap();
    let invite = only_request(&drain(&mut uac));
    uac.hang_up(now, call).unwrap();
    assert!(drain(&mut uac).is_empty(), "no CANCEL before a provisional (§9.1)");
    uac.handle_response(now, reply(&invite, 180, None, &[]));
    let cancel = only_request(&drain(&mut uac));
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(cancel.branch(), invite.branch());
    assert_eq!(cancel.headers.get("CSeq"), Some(format!("{} CANCEL", invite.cseq()).as_str()));
    assert_eq!(cancel.uri, invite.uri);
    uac.handle_response(now, reply(&cancel, 200, None, &[]));
    uac.handle_response(now, reply(&invite, 487, None, &[]));
    assert_eq!(events(&drain(&mut uac)), vec![UacEvent::Ended { why: EndReason::Cancelled }]);

    let call = uac.dial(now, dial(Some(OFFER), false)).unwrap();
    let invite = only_request(&drain(&mut uac));
    uac.handle_response(now, reply(&invite, 180, None, &[]));
    drain(&mut uac);
    uac.hang_up(now, call).unwrap();
    let _cancel = only_request(&drain(&mut uac));
    uac.handle_response(now, reply(&invite, 200, Some(ANSWER), &[]));
    let outs = drain(&mut uac);
    assert_eq!(transmitted(&outs).len(), 1, "the 2xx is ACKed");
    let bye = only_request(&outs);
    assert_eq!(bye.method, Method::Bye);
    assert!(events(&outs).is_empty());
    uac.handle_response(now, reply(&bye, 200, None, &[]));
    assert_eq!(events(&drain(&mut uac)), vec![UacEvent::Ended { why: EndReason::Cancelled }]);
}

#[test]
fn refusals_timeouts_and_422_end_or_retry_the_invite() {
    let mut uac = uac();
    let now = Instant::now();
    let call = uac.dial(now, dial(Some(OFFER), false)).unwrap();
    let invite = only_request(&drain(&mut uac));
    uac.handle_response(now, reply(&invite, 422, None, &[("Min-SE", "3600")]));
    let again = only_request(&drain(&mut uac));
    assert_eq!(again.headers.get("Session-Expires"), Some("3600"));
    assert_eq!(again.cseq(), invite.cseq() + 1);
    uac.handle_response(now, reply(&again, 486, None, &[]));
    assert_eq!(
        events(&drain(&mut uac)),
        vec![UacEvent::Ended { why: EndReason::Refused { status: 486, reason: "Busy Here".into() } }]
    );
    assert_eq!(uac.hang_up(now, call), Err(UacError::NoCall));

    let call = uac.dial(now, dial(Some(OFFER), false)).unwrap();
    let invite = only_request(&drain(&mut uac));
    uac.request_failed(now, Sent { call, cseq: invite.cseq(), method: Method::Invite });
    assert_eq!(events(&drain(&mut uac)), vec![UacEvent::Ended { why: EndReason::Timeout }]);

    assert!(matches!(uac.dial(now, Dial { uri: "sip:a b".into(), ..dial(None, false) }), Err(UacError::Invalid(_))));
    assert!(matches!(
        uac.dial(now, Dial { to: "x>\r\nEvil: 1".into(), ..dial(None, false) }),
        Err(UacError::Invalid(_))
    ));
}

#[test]
fn as_refresher_the_session_is_refreshed_with_update_at_half_interval() {
    let mut uac = uac();
    let t0 = Instant::now();
    let (call, _) =
        connected(&mut uac, t0, &[("Session-Expires", "90;refresher=uac"), ("Allow", "INVITE, ACK, BYE, UPDATE")]);
    assert_eq!(uac.poll_timeout(), Some(t0 + Duration::from_secs(45)));
    uac.handle_timeout(t0 + Duration::from_secs(44));
    assert!(drain(&mut uac).is_empty());
    let t1 = t0 + Duration::from_secs(45);
    uac.handle_timeout(t1);
    let update = only_request(&drain(&mut uac));
    assert_eq!(update.method, Method::Update);
    assert!(update.body.is_empty());
    assert_eq!(update.headers.get("Session-Expires"), Some("90;refresher=uac"));
    uac.handle_response(t1, reply(&update, 200, None, &[("Session-Expires", "90;refresher=uac")]));
    assert!(events(&drain(&mut uac)).is_empty(), "a refresh is not reported");
    // The next refresh is due 45 s after this one; stale timer entries do nothing.
    uac.handle_timeout(t1 + Duration::from_secs(44));
    assert!(drain(&mut uac).is_empty());
    uac.handle_timeout(t1 + Duration::from_secs(45));
    let next = only_request(&drain(&mut uac));
    assert_eq!(next.method, Method::Update);
    // That refresh fails (not 481): without a refresh the session ends with BYE before expiry.
    let t2 = t1 + Duration::from_secs(45);
    uac.handle_response(t2, reply(&next, 500, None, &[]));
    assert!(drain(&mut uac).is_empty());
    uac.handle_timeout(t2 + Duration::from_secs(60));
    let bye = only_request(&drain(&mut uac));
    assert_eq!(bye.method, Method::Bye);
    uac.handle_response(t2, reply(&bye, 200, None, &[]));
    assert_eq!(events(&drain(&mut uac)), vec![UacEvent::Ended { why: EndReason::SessionExpired }]);
    let _ = call;
}

#[test]
fn without_update_the_refresh_is_a_reinvite_with_the_same_offer_and_481_loses_the_dialog() {
    let mut uac = uac();
    let t0 = Instant::now();
    let (_call, invite) =
        connected(&mut uac, t0, &[("Session-Expires", "120;refresher=uac"), ("Allow", "INVITE, ACK, BYE")]);
    uac.handle_timeout(t0 + Duration::from_secs(60));
    let reinvite = only_request(&drain(&mut uac));
    assert_eq!(reinvite.method, Method::Invite);
    assert_eq!(reinvite.body, OFFER);
    assert_eq!(reinvite.to_tag(), Some("far1"));
    assert_eq!(reinvite.cseq(), invite.cseq() + 1);
    uac.handle_response(t0, reply(&reinvite, 481, None, &[]));
    assert_eq!(events(&drain(&mut uac)), vec![UacEvent::Ended { why: EndReason::DialogLost }]);
}

#[test]
fn when_the_far_end_refreshes_a_missed_refresh_ends_the_call() {
    let mut uac = uac();
    let t0 = Instant::now();
    connected(&mut uac, t0, &[("Session-Expires", "90;refresher=uas")]);
    // BYE at expiry minus min(32, 90/3) = 60 s.
    assert_eq!(uac.poll_timeout(), Some(t0 + Duration::from_secs(60)));
    let bye_at = t0 + Duration::from_secs(60);
    uac.handle_timeout(bye_at);
    let bye = only_request(&drain(&mut uac));
    assert_eq!(bye.method, Method::Bye);
}

#[test]
fn the_far_ends_requests_inside_the_dialog() {
    let mut uac = uac();
    let t0 = Instant::now();
    let (call, invite) = connected(&mut uac, t0, &[("Session-Expires", "90;refresher=uas")]);
    let ack = transmitted(&drain(&mut uac));
    let _ = ack;
    let far = |method: Method, cseq: u32, body: Option<&[u8]>, extra: &[(&str, &str)]| {
        let mut h = message::Headers::default();
        h.push("Via", "SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKfar");
        h.push("From", "<sip:+4798765432@127.0.0.2>;tag=far1");
        h.push("To", invite.headers.get("From").unwrap());
        h.push("Call-ID", invite.call_id());
        h.push("CSeq", format!("{cseq} {method}"));
        h.push("Contact", "<sip:far@127.0.0.2:5064>");
        for (n, v) in extra {
            h.push(n, *v);
        }
        let mut r = Request { method, uri: "sip:interwork@127.0.0.1:5070".into(), headers: h, body: Vec::new() };
        if let Some(b) = body {
            r.headers.push("Content-Type", "application/sdp");
            r.body = b.to_vec();
        }
        r
    };
    let responses = |outs: &[UacOutput]| -> Vec<Response> {
        outs.iter()
            .filter_map(|o| if let UacOutput::Respond { response, .. } = o { Some(response.clone()) } else { None })
            .collect()
    };
    // A refresh by UPDATE without a body: 200 with the session timer, restarted.
    let t1 = t0 + Duration::from_secs(40);
    assert!(uac.handle_request(
        t1,
        1,
        far(Method::Update, 1, None, &[("Session-Expires", "90;refresher=uac"), ("Supported", "timer")])
    ));
    let r = responses(&drain(&mut uac));
    assert_eq!(r[0].status, 200);
    assert_eq!(r[0].headers.get("Session-Expires"), Some("90;refresher=uac"));
    assert_eq!(r[0].headers.get("Require"), Some("timer"));
    uac.handle_timeout(t0 + Duration::from_secs(60));
    assert!(requests(&drain(&mut uac)).is_empty(), "the refresh moved the expiry");
    // A re-INVITE with an offer: for the owner; its 2xx retransmitted until the ACK.
    assert!(uac.handle_request(t1, 2, far(Method::Invite, 2, Some(ANSWER), &[])));
    assert_eq!(events(&drain(&mut uac)), vec![UacEvent::Offer { sdp: ANSWER.to_vec() }]);
    // Glare: an offer of ours now is refused.
    assert_eq!(uac.modify(t1, call, OFFER.to_vec(), true), Err(UacError::Pending));
    uac.answer(t1, call, Some(OFFER.to_vec())).unwrap();
    let r = responses(&drain(&mut uac));
    assert_eq!((r[0].status, r[0].body.as_slice()), (200, OFFER));
    uac.handle_timeout(t1 + Duration::from_millis(500));
    let outs = drain(&mut uac);
    assert!(matches!(&outs[..], [UacOutput::Transmit { .. }]), "{outs:?}");
    assert!(uac.handle_ack(t1, &far(Method::Ack, 2, None, &[])));
    uac.handle_timeout(t1 + Duration::from_millis(1500));
    assert!(drain(&mut uac).is_empty(), "the ACK stopped the retransmissions");
    // Old CSeq: 500. Unknown method: 405. Wrong tag: 481.
    uac.handle_request(t1, 3, far(Method::Info, 2, None, &[]));
    assert_eq!(responses(&drain(&mut uac))[0].status, 500);
    uac.handle_request(t1, 4, far(Method::Other("MESSAGE".into()), 5, None, &[]));
    assert_eq!(responses(&drain(&mut uac))[0].status, 405);
    let mut stranger = far(Method::Bye, 6, None, &[]);
    stranger.headers.set("From", "<sip:x@y>;tag=other");
    uac.handle_request(t1, 5, stranger);
    assert_eq!(responses(&drain(&mut uac))[0].status, 481);
    // The far end hangs up.
    uac.handle_request(t1, 6, far(Method::Bye, 7, None, &[]));
    let outs = drain(&mut uac);
    assert_eq!(responses(&outs)[0].status, 200);
    assert_eq!(events(&outs), vec![UacEvent::Ended { why: EndReason::RemoteHangup }]);
    assert!(!uac.handle_request(t1, 7, far(Method::Bye, 8, None, &[])), "the call is gone");
}

#[test]
fn a_second_fork_answering_is_acked_and_sent_bye() {
    let mut uac = uac();
    let now = Instant::now();
    let (_call, invite) = connected(&mut uac, now, &[]);
    let mut other = Response::to(&invite, 200, "OK", Some("fork2"));
    other.headers.push("Contact", "<sip:fork2@127.0.0.3>");
    uac.handle_response(now, other);
    let outs = drain(&mut uac);
    let ack = &transmitted(&outs)[0];
    assert_eq!(
        (ack.method.clone(), ack.to_tag(), ack.uri.as_str()),
        (Method::Ack, Some("fork2"), "sip:fork2@127.0.0.3")
    );
    let bye = only_request(&outs);
    assert_eq!((bye.method.clone(), bye.to_tag()), (Method::Bye, Some("fork2")));
    assert!(events(&outs).is_empty(), "the call itself goes on");
}

#[test]
fn owner_modifications_report_their_answer_or_failure() {
    let mut uac = uac();
    let now = Instant::now();
    let (call, _) = connected(&mut uac, now, &[]);
    drain(&mut uac);
    uac.modify(now, call, OFFER.to_vec(), false).unwrap();
    let reinvite = only_request(&drain(&mut uac));
    assert_eq!(uac.modify(now, call, OFFER.to_vec(), true), Err(UacError::Pending));
    uac.handle_response(now, reply(&reinvite, 200, Some(ANSWER), &[]));
    let outs = drain(&mut uac);
    assert_eq!(transmitted(&outs)[0].method, Method::Ack);
    assert_eq!(events(&outs), vec![UacEvent::Answer { sdp: ANSWER.to_vec() }]);
    uac.modify(now, call, OFFER.to_vec(), true).unwrap();
    let update = only_request(&drain(&mut uac));
    assert_eq!(update.method, Method::Update);
    uac.handle_response(now, reply(&update, 488, None, &[]));
    assert_eq!(events(&drain(&mut uac)), vec![UacEvent::ModifyFailed { status: 488 }]);
}

#[test]
fn garbage_responses_change_nothing() {
    let mut uac = uac();
    let now = Instant::now();
    let call = uac.dial(now, dial(Some(OFFER), false)).unwrap();
    let invite = only_request(&drain(&mut uac));
    let mut no_cseq = reply(&invite, 200, None, &[]);
    no_cseq.headers.remove("CSeq");
    uac.handle_response(now, no_cseq);
    let mut other_call = reply(&invite, 200, None, &[]);
    other_call.headers.set("Call-ID", "nope");
    uac.handle_response(now, other_call);
    let mut bad_rseq = reply(&invite, 183, None, &[("Require", "100rel"), ("RSeq", "x")]);
    bad_rseq.headers.remove("Contact");
    uac.handle_response(now, bad_rseq);
    let mut no_tag = Response::to(&invite, 180, "Ringing", None);
    no_tag.headers.push("Require", "100rel");
    no_tag.headers.push("RSeq", "1");
    uac.handle_response(now, no_tag);
    assert!(drain(&mut uac).is_empty());
    assert_eq!(uac.len(), 1);
    assert!(uac.hang_up(now, call).is_ok());
}
