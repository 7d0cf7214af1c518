//! Every timer of every transaction kind, in virtual time, with loss, duplication and
//! reordering.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;

const MS: Duration = Duration::from_millis(1);

fn peer(transport: Transport) -> Peer {
    let addr: SocketAddr = "192.0.2.1:5060".parse().unwrap();
    Peer { addr, transport, conn: transport.is_reliable().then_some(7) }
}

fn request(method: &str, branch: &str) -> Request {
    let text = format!(
        "{method} sip:gw@192.0.2.9 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@192.0.2.1>;tag=f1\r\nTo: <sip:gw@192.0.2.9>\r\n\
         Call-ID: call-1\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    );
    match message::parse(text.as_bytes()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!(),
    }
}

/// A layer and a clock that only moves when the test says so.
struct Harness {
    txs: Transactions,
    now: Instant,
}

impl Harness {
    fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    fn with_limits(limits: Limits) -> Self {
        Self { txs: Transactions::new(Timers::default(), limits), now: Instant::now() }
    }

    fn drain(&mut self) -> Vec<TxOutput> {
        std::iter::from_fn(|| self.txs.poll_output()).collect()
    }

    fn receive(&mut self, message: Message, transport: Transport) -> Vec<TxOutput> {
        self.txs.handle_message(self.now, message, peer(transport));
        self.drain()
    }

    /// Moves the clock to `at`, firing every timer on the way at its own time; returns the
    /// outputs with their offsets from `start`.
    fn run_until(&mut self, start: Instant, at: Instant) -> Vec<(Duration, TxOutput)> {
        let mut out = Vec::new();
        while let Some(due) = self.txs.poll_timeout().filter(|d| *d <= at) {
            self.now = self.now.max(due);
            self.txs.handle_timeout(self.now);
            out.extend(self.drain().into_iter().map(|o| (self.now - start, o)));
        }
        self.now = at;
        out
    }
}

fn statuses(outputs: &[TxOutput]) -> Vec<String> {
    outputs
        .iter()
        .map(|o| match o {
            TxOutput::Transmit { bytes, .. } => {
                let text = String::from_utf8_lossy(bytes);
                text.lines().next().unwrap_or("").to_string()
            }
            TxOutput::Request { request, .. } => format!("request {}", request.method),
            TxOutput::Ack { .. } => "ack".into(),
            TxOutput::Cancelled { .. } => "cancelled".into(),
            TxOutput::Response { response, .. } => format!("response {}", response.status),
            TxOutput::Timeout { .. } => "timeout".into(),
            TxOutput::Shed { .. } => "shed".into(),
        })
        .collect()
}

fn new_tx(outputs: &[TxOutput]) -> TxId {
    outputs
        .iter()
        .find_map(|o| match o {
            TxOutput::Request { tx, .. } => Some(*tx),
            _ => None,
        })
        .expect("a new request")
}

fn transmit_times(outputs: &[(Duration, TxOutput)]) -> Vec<Duration> {
    outputs.iter().filter(|(_, o)| matches!(o, TxOutput::Transmit { .. })).map(|(t, _)| *t).collect()
}

#[test]
fn invite_server_sends_trying_at_once_and_answers_retransmissions_with_the_last_response() {
    let mut h = Harness::new();
    let invite = request("INVITE", "z9hG4bKinv1");
    let out = h.receive(Message::Request(invite.clone()), Transport::Udp);
    assert_eq!(statuses(&out), ["SIP/2.0 100 Trying", "request INVITE"]);
    let tx = new_tx(&out);
    assert_eq!(h.txs.pending(), 1);
    // A retransmission is absorbed and gets the 100 again.
    assert_eq!(statuses(&h.receive(Message::Request(invite.clone()), Transport::Udp)), ["SIP/2.0 100 Trying"]);
    h.txs.respond(h.now, tx, &Response::to(&invite, 180, "Ringing", Some("t")));
    assert_eq!(statuses(&h.drain()), ["SIP/2.0 180 Ringing"]);
    assert_eq!(statuses(&h.receive(Message::Request(invite), Transport::Udp)), ["SIP/2.0 180 Ringing"]);
}

#[test]
fn invite_server_timer_g_doubles_to_t2_until_the_ack_and_timer_i_absorbs_ack_retransmissions() {
    let mut h = Harness::new();
    let invite = request("INVITE", "z9hG4bKinv2");
    let tx = new_tx(&h.receive(Message::Request(invite.clone()), Transport::Udp));
    let start = h.now;
    h.txs.respond(h.now, tx, &Response::to(&invite, 486, "Busy Here", Some("t")));
    assert_eq!(statuses(&h.drain()), ["SIP/2.0 486 Busy Here"]);
    assert_eq!(h.txs.pending(), 1, "a refusal holds its slot until the ACK");
    // The ACK is lost for a while: G fires at 0.5, 1.5, 3.5, 7.5, 11.5 s (intervals 0.5, 1, 2, 4, 4).
    let out = h.run_until(start, start + 12 * 1000 * MS);
    let times: Vec<u64> = transmit_times(&out).iter().map(|d| d.as_millis() as u64).collect();
    assert_eq!(times, [500, 1500, 3500, 7500, 11500]);
    // The ACK (same branch) confirms: no more 486, nothing for the user.
    let ack = request("ACK", "z9hG4bKinv2");
    assert!(h.receive(Message::Request(ack.clone()), Transport::Udp).is_empty());
    assert_eq!(h.txs.pending(), 0, "acknowledged");
    assert!(h.receive(Message::Request(ack), Transport::Udp).is_empty(), "a retransmitted ACK is absorbed");
    let out = h.run_until(start, start + 20 * 1000 * MS);
    assert!(transmit_times(&out).is_empty(), "{out:?}");
    assert_eq!(h.txs.len(), (0, 0), "timer I (T4) ended it");
}

#[test]
fn invite_server_timer_h_gives_up_on_a_missing_ack() {
    let mut h = Harness::new();
    let invite = request("INVITE", "z9hG4bKinv3");
    let tx = new_tx(&h.receive(Message::Request(invite.clone()), Transport::Udp));
    let start = h.now;
    h.txs.respond(h.now, tx, &Response::to(&invite, 603, "Decline", Some("t")));
    h.drain();
    h.run_until(start, start + 32 * 1000 * MS - MS);
    assert_eq!(h.txs.len(), (1, 0), "still waiting just before 64·T1");
    h.run_until(start, start + 32 * 1000 * MS);
    assert_eq!((h.txs.len(), h.txs.pending()), ((0, 0), 0), "timer H");
}

#[test]
fn invite_server_over_tcp_never_retransmits() {
    let mut h = Harness::new();
    let invite = request("INVITE", "z9hG4bKinv4");
    let tx = new_tx(&h.receive(Message::Request(invite.clone()), Transport::Tcp));
    let start = h.now;
    h.txs.respond(h.now, tx, &Response::to(&invite, 486, "Busy Here", Some("t")));
    h.drain();
    let out = h.run_until(start, start + 40 * 1000 * MS);
    assert!(transmit_times(&out).is_empty(), "{out:?}");
    assert_eq!(h.txs.len(), (0, 0));
}

#[test]
fn invite_server_accepted_absorbs_retransmissions_passes_the_users_2xx_and_ends_at_timer_l() {
    let mut h = Harness::new();
    let invite = request("INVITE", "z9hG4bKinv5");
    let tx = new_tx(&h.receive(Message::Request(invite.clone()), Transport::Udp));
    let start = h.now;
    let ok = Response::to(&invite, 200, "OK", Some("t"));
    h.txs.respond(h.now, tx, &ok);
    assert_eq!(statuses(&h.drain()), ["SIP/2.0 200 OK"]);
    // A retransmitted INVITE is absorbed (the user retransmits the 2xx itself).
    assert!(h.receive(Message::Request(invite.clone()), Transport::Udp).is_empty());
    h.txs.respond(h.now, tx, &ok);
    assert_eq!(statuses(&h.drain()), ["SIP/2.0 200 OK"], "the user's retransmission passes");
    // The ACK of a 2xx has its own branch: it goes to the dialog layer.
    let ack = request("ACK", "z9hG4bKack5");
    assert_eq!(statuses(&h.receive(Message::Request(ack), Transport::Udp)), ["ack"]);
    let out = h.run_until(start, start + 32 * 1000 * MS);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(h.txs.len(), (0, 0), "timer L");
}

#[test]
fn non_invite_server_absorbs_until_answered_then_repeats_the_final_until_timer_j() {
    let mut h = Harness::new();
    let bye = request("BYE", "z9hG4bKbye1");
    let out = h.receive(Message::Request(bye.clone()), Transport::Udp);
    assert_eq!(statuses(&out), ["request BYE"], "no 100 for non-INVITE");
    let tx = new_tx(&out);
    assert!(h.receive(Message::Request(bye.clone()), Transport::Udp).is_empty(), "Trying absorbs");
    let start = h.now;
    h.txs.respond(h.now, tx, &Response::to(&bye, 200, "OK", None));
    assert_eq!(statuses(&h.drain()), ["SIP/2.0 200 OK"]);
    assert_eq!(statuses(&h.receive(Message::Request(bye.clone()), Transport::Udp)), ["SIP/2.0 200 OK"]);
    // Late answers from the user are ignored.
    h.txs.respond(h.now, tx, &Response::to(&bye, 500, "Server Internal Error", None));
    assert!(h.drain().is_empty());
    h.run_until(start, start + 32 * 1000 * MS);
    assert_eq!(h.txs.len(), (0, 0), "timer J");
    // Over TCP the transaction ends with its final response.
    let out = h.receive(Message::Request(request("BYE", "z9hG4bKbye2")), Transport::Tcp);
    h.txs.respond(h.now, new_tx(&out), &Response::to(&bye, 200, "OK", None));
    h.drain();
    h.run_until(h.now, h.now);
    assert_eq!(h.txs.len(), (0, 0));
}

#[test]
fn cancel_is_answered_here_and_names_the_invite_it_cancels() {
    let mut h = Harness::new();
    let invite = request("INVITE", "z9hG4bKinv6");
    let tx = new_tx(&h.receive(Message::Request(invite.clone()), Transport::Udp));
    let cancel = request("CANCEL", "z9hG4bKinv6");
    let out = h.receive(Message::Request(cancel.clone()), Transport::Udp);
    assert_eq!(statuses(&out), ["SIP/2.0 200 OK", "cancelled"]);
    assert!(out.contains(&TxOutput::Cancelled { tx }));
    // A retransmitted CANCEL gets the same 200 and no second event.
    assert_eq!(statuses(&h.receive(Message::Request(cancel), Transport::Udp)), ["SIP/2.0 200 OK"]);
    // A CANCEL that matches nothing gets 481.
    let stray = request("CANCEL", "z9hG4bKnothing");
    assert_eq!(
        statuses(&h.receive(Message::Request(stray), Transport::Udp)),
        ["SIP/2.0 481 Call/Transaction Does Not Exist"]
    );
    // Once the INVITE is answered, a CANCEL gets 200 and changes nothing.
    h.txs.respond(h.now, tx, &Response::to(&invite, 487, "Request Terminated", Some("t")));
    h.drain();
    let late = request("CANCEL", "z9hG4bKinv6");
    assert_eq!(statuses(&h.receive(Message::Request(late), Transport::Udp)), ["SIP/2.0 200 OK"]);
}

#[test]
fn overload_is_shed_statelessly_with_retry_after() {
    let limits = Limits { max_pending: 2, ..Limits::default() };
    let mut h = Harness::with_limits(limits);
    let a = new_tx(&h.receive(Message::Request(request("INVITE", "z9hG4bKa")), Transport::Udp));
    new_tx(&h.receive(Message::Request(request("INVITE", "z9hG4bKb")), Transport::Udp));
    let out = h.receive(Message::Request(request("INVITE", "z9hG4bKc")), Transport::Udp);
    assert_eq!(statuses(&out), ["SIP/2.0 503 Service Unavailable", "shed"]);
    let TxOutput::Transmit { bytes, .. } = &out[0] else { unreachable!() };
    let text = String::from_utf8_lossy(bytes);
    assert!(text.contains("Retry-After: 5\r\n") && text.contains(";tag="), "{text}");
    assert_eq!(h.txs.len(), (2, 0), "nothing kept for it");
    // Answering one makes room.
    h.txs.respond(h.now, a, &Response::to(&request("INVITE", "z9hG4bKa"), 200, "OK", Some("t")));
    h.drain();
    let out = h.receive(Message::Request(request("INVITE", "z9hG4bKd")), Transport::Udp);
    assert_eq!(statuses(&out), ["SIP/2.0 100 Trying", "request INVITE"]);
}

#[test]
fn a_server_transaction_the_user_never_answers_is_dropped() {
    let limits = Limits { unanswered: Duration::from_secs(60), ..Limits::default() };
    let mut h = Harness::with_limits(limits);
    let start = h.now;
    h.receive(Message::Request(request("OPTIONS", "z9hG4bKo")), Transport::Udp);
    h.run_until(start, start + Duration::from_secs(60));
    assert_eq!((h.txs.len(), h.txs.pending()), ((0, 0), 0));
}

fn our_request(method: &str, branch: &str) -> Request {
    let mut r = request(method, branch);
    r.headers.set("Via", format!("SIP/2.0/UDP 192.0.2.9:5060;branch={branch};rport"));
    r
}

fn response_to(req: &Request, status: u16) -> Message {
    Message::Response(Response::to(req, status, message::reason_phrase(status), Some("rt")))
}

#[test]
fn non_invite_client_timer_e_then_t2_after_a_provisional_and_timer_f() {
    let mut h = Harness::new();
    let bye = our_request("BYE", "z9hG4bKiwc1");
    let start = h.now;
    let client = h.txs.send_request(h.now, bye.clone(), peer(Transport::Udp)).unwrap();
    assert_eq!(statuses(&h.drain()), ["BYE sip:gw@192.0.2.9 SIP/2.0"]);
    // E: 0.5, 1.5, 3.5, 7.5 s.
    let out = h.run_until(start, start + 8 * 1000 * MS);
    let times: Vec<u64> = transmit_times(&out).iter().map(|d| d.as_millis() as u64).collect();
    assert_eq!(times, [500, 1500, 3500, 7500]);
    // A provisional: retransmissions every T2 from then on.
    assert_eq!(statuses(&h.receive(response_to(&bye, 100), Transport::Udp)), ["response 100"]);
    let out = h.run_until(start, start + 20 * 1000 * MS);
    let times: Vec<u64> = transmit_times(&out).iter().map(|d| d.as_millis() as u64).collect();
    assert_eq!(times, [11500, 15500, 19500]);
    // F at 64·T1.
    let out = h.run_until(start, start + 32 * 1000 * MS);
    assert!(out.iter().any(|(t, o)| *o == TxOutput::Timeout { client } && *t == 32 * 1000 * MS), "{out:?}");
    assert_eq!(h.txs.len(), (0, 0));
}

#[test]
fn non_invite_client_passes_one_final_and_absorbs_its_duplicates_until_timer_k() {
    let mut h = Harness::new();
    let bye = our_request("BYE", "z9hG4bKiwc2");
    let start = h.now;
    let client = h.txs.send_request(h.now, bye.clone(), peer(Transport::Udp)).unwrap();
    h.drain();
    // Reordered: the final before the provisional; then duplicates of both.
    let out = h.receive(response_to(&bye, 200), Transport::Udp);
    assert!(matches!(&out[..], [TxOutput::Response { client: c, response }] if *c == client && response.status == 200));
    assert!(h.receive(response_to(&bye, 100), Transport::Udp).is_empty());
    assert!(h.receive(response_to(&bye, 200), Transport::Udp).is_empty());
    let out = h.run_until(start, start + 5 * 1000 * MS);
    assert!(transmit_times(&out).is_empty(), "no retransmission once answered: {out:?}");
    assert_eq!(h.txs.len(), (0, 0), "timer K (T4)");
}

#[test]
fn invite_client_timer_a_stops_at_a_provisional_and_timer_b_times_out() {
    let mut h = Harness::new();
    let invite = our_request("INVITE", "z9hG4bKiwc3");
    let start = h.now;
    let client = h.txs.send_request(h.now, invite.clone(), peer(Transport::Udp)).unwrap();
    h.drain();
    // A doubles without the T2 cap: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s.
    let out = h.run_until(start, start + 32 * 1000 * MS);
    let times: Vec<u64> = transmit_times(&out).iter().map(|d| d.as_millis() as u64).collect();
    assert_eq!(times, [500, 1500, 3500, 7500, 15500, 31500]);
    assert!(out.iter().any(|(_, o)| *o == TxOutput::Timeout { client }), "timer B");

    let invite = our_request("INVITE", "z9hG4bKiwc4");
    let start = h.now;
    h.txs.send_request(h.now, invite.clone(), peer(Transport::Udp)).unwrap();
    h.drain();
    h.run_until(start, start + 600 * MS);
    h.receive(response_to(&invite, 180), Transport::Udp);
    let out = h.run_until(start, start + 30 * 1000 * MS);
    assert!(transmit_times(&out).is_empty(), "timer A stopped: {out:?}");
}

#[test]
fn invite_client_acks_a_failure_itself_and_again_for_its_retransmissions() {
    let mut h = Harness::new();
    let invite = our_request("INVITE", "z9hG4bKiwc5");
    let start = h.now;
    h.txs.send_request(h.now, invite.clone(), peer(Transport::Udp)).unwrap();
    h.drain();
    let out = h.receive(response_to(&invite, 486), Transport::Udp);
    let s = statuses(&out);
    assert_eq!(s, ["ACK sip:gw@192.0.2.9 SIP/2.0", "response 486"]);
    let TxOutput::Transmit { bytes, .. } = &out[0] else { unreachable!() };
    let ack = match message::parse(bytes).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!(),
    };
    assert_eq!(ack.branch(), Some("z9hG4bKiwc5"), "the INVITE's branch");
    assert_eq!(ack.to_tag(), Some("rt"), "the response's To");
    assert_eq!(ack.headers.get("CSeq"), Some("1 ACK"));
    assert_eq!(statuses(&h.receive(response_to(&invite, 486), Transport::Udp)), ["ACK sip:gw@192.0.2.9 SIP/2.0"]);
    h.run_until(start, start + 32 * 1000 * MS);
    assert_eq!(h.txs.len(), (0, 0), "timer D");
}

#[test]
fn invite_client_passes_every_2xx_for_the_dialog_to_ack_until_timer_m() {
    let mut h = Harness::new();
    let invite = our_request("INVITE", "z9hG4bKiwc6");
    let start = h.now;
    let client = h.txs.send_request(h.now, invite.clone(), peer(Transport::Udp)).unwrap();
    h.drain();
    for _ in 0..3 {
        let out = h.receive(response_to(&invite, 200), Transport::Udp);
        assert!(matches!(&out[..], [TxOutput::Response { client: c, .. }] if *c == client), "{out:?}");
    }
    assert!(h.txs.cancel_request(client).is_none(), "nothing to cancel once answered");
    h.run_until(start, start + 32 * 1000 * MS);
    assert_eq!(h.txs.len(), (0, 0), "timer M");
    assert!(h.receive(response_to(&invite, 200), Transport::Udp).is_empty(), "stray");
}

#[test]
fn a_cancel_copies_the_invite_and_acks_are_never_transactions() {
    let mut h = Harness::new();
    let invite = our_request("INVITE", "z9hG4bKiwc7");
    let client = h.txs.send_request(h.now, invite, peer(Transport::Tcp)).unwrap();
    let (cancel, to) = h.txs.cancel_request(client).unwrap();
    assert_eq!(to, peer(Transport::Tcp));
    assert_eq!(cancel.branch(), Some("z9hG4bKiwc7"));
    assert_eq!(cancel.headers.get("CSeq"), Some("1 CANCEL"));
    h.txs.send_request(h.now, cancel, to).expect("a CANCEL is a transaction of its own");
    assert_eq!(h.txs.send_request(h.now, our_request("ACK", "z9hG4bKiwc8"), to), Err(SendError::Ack));
    assert_eq!(h.txs.send_request(h.now, our_request("BYE", "z9hG4bKiwc7"), to).map(|_| ()), Ok(()));
    assert_eq!(h.txs.send_request(h.now, our_request("BYE", "z9hG4bKiwc7"), to), Err(SendError::Exists));
}

#[test]
fn a_transport_failure_ends_a_client_transaction_as_a_timeout() {
    let mut h = Harness::new();
    let client = h.txs.send_request(h.now, our_request("BYE", "z9hG4bKiwc9"), peer(Transport::Tcp)).unwrap();
    h.drain();
    h.txs.transport_failed(client);
    assert_eq!(h.drain(), [TxOutput::Timeout { client }]);
    assert_eq!(h.txs.len(), (0, 0));
}

#[test]
fn a_late_new_invite_is_refused_statelessly_and_a_late_retransmission_is_not() {
    let mut h = Harness::new();
    // A new INVITE that waited too long: 503 with Retry-After and our stateless tag, no
    // transaction, nothing for the user.
    let late = request("INVITE", "z9hG4bKlate1");
    assert!(h.txs.handle_late_message(h.now, Message::Request(late.clone()), peer(Transport::Udp)));
    let out = h.drain();
    assert_eq!(statuses(&out), ["SIP/2.0 503 Service Unavailable", "shed"]);
    let TxOutput::Transmit { bytes, .. } = &out[0] else { panic!("a transmit") };
    let text = String::from_utf8_lossy(bytes);
    assert!(text.contains("Retry-After: ") && text.contains(";tag=shed-"), "{text}");
    assert_eq!(h.txs.len(), (0, 0));
    // A late retransmission of an INVITE we took is its transaction's: it gets the last answer.
    let invite = request("INVITE", "z9hG4bKlate2");
    let tx = new_tx(&h.receive(Message::Request(invite.clone()), Transport::Udp));
    h.txs.respond(h.now, tx, &Response::to(&invite, 180, "Ringing", Some("t")));
    h.drain();
    assert!(!h.txs.handle_late_message(h.now, Message::Request(invite), peer(Transport::Udp)));
    assert_eq!(statuses(&h.drain()), ["SIP/2.0 180 Ringing"]);
    // Anything else late is handled as usual.
    let options = request("OPTIONS", "z9hG4bKlate3");
    assert!(!h.txs.handle_late_message(h.now, Message::Request(options), peer(Transport::Udp)));
    assert_eq!(statuses(&h.drain()), ["request OPTIONS"]);
}
