//! The transaction layer and the call logic together, pumped as `sip::driver` pumps them, in
//! virtual time: a whole call with a lost ACK, retransmitted requests and the timers that end
//! every transaction.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::message::{Message, parse};
use super::transaction::{Limits, Peer, Timers, Transactions, Transport, TxOutput};
use super::ua::{Admitted, CallEvent, CallNo, Event, Inbound, Output, UaConfig, UserAgent};
use crate::ids::{AccountId, ParticipantId, SessionId};
use crate::interconnect::InterconnectMode;
use crate::sip::sdp::SrtpPolicy;
use crate::tokens::TokenError;

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
    m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

struct OneParticipant;

impl OneParticipant {
    fn admit(&mut self, token: &str) -> Result<Admitted, TokenError> {
        (token == "a.b.c")
            .then(|| Admitted {
                participant: ParticipantId::from("alice"),
                session: SessionId::from("s1"),
                account: AccountId::from("default"),
                mode: None,
            })
            .ok_or(TokenError::BadSignature)
    }
    fn allocate_rtp(&mut self, _call: CallNo) -> Option<u16> {
        Some(30_000)
    }
}

/// What went on the wire, when (from the start), and the call events.
#[derive(Default)]
struct Seen {
    wire: Vec<(Duration, String)>,
    events: Vec<CallEvent>,
}

struct Core {
    txs: Transactions,
    ua: UserAgent,
    env: OneParticipant,
    start: Instant,
    now: Instant,
    seen: Seen,
}

impl Core {
    fn new() -> Self {
        let config = UaConfig {
            default_mode: InterconnectMode::Transfer,
            max_calls: 10,
            max_conference_legs: 2,
            trusted_peers: vec![],
            invite_rate: 100,
            srtp: SrtpPolicy::Optional,
            media_ip: "127.0.0.1".parse().unwrap(),
            contact_host: "127.0.0.1:5060".into(),
            answer_delay: Duration::ZERO,
            session_expires: 1800,
            min_se: 90,
            rng_seed: [3; 32],
        };
        let now = Instant::now();
        Self {
            txs: Transactions::new(Timers::default(), Limits::default()),
            ua: UserAgent::new(config),
            env: OneParticipant,
            start: now,
            now,
            seen: Seen::default(),
        }
    }

    fn peer() -> Peer {
        let addr: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        Peer { addr, transport: Transport::Udp, conn: None }
    }

    /// A datagram from the caller.
    fn receive(&mut self, text: &str) {
        let message = parse(text.as_bytes()).unwrap();
        self.txs.handle_message(self.now, message, Self::peer());
        self.pump();
    }

    /// Runs both cores' outputs until neither has any, as the driver does.
    fn pump(&mut self) {
        loop {
            let mut busy = false;
            while let Some(o) = self.txs.poll_output() {
                busy = true;
                match o {
                    TxOutput::Transmit { bytes, .. } => {
                        self.seen.wire.push((self.now - self.start, String::from_utf8_lossy(&bytes).into_owned()));
                    }
                    TxOutput::Request { tx, request, from } => {
                        let inbound = Inbound { tx, source: from.addr, transport: from.transport, request };
                        self.ua.handle_request(self.now, inbound);
                    }
                    TxOutput::Ack { request, from } => {
                        let inbound = Inbound { tx: 0, source: from.addr, transport: from.transport, request };
                        self.ua.handle_request(self.now, inbound);
                    }
                    TxOutput::Cancelled { tx } => self.ua.handle_event(self.now, Event::Cancel { tx }),
                    other => panic!("unexpected {other:?}"),
                }
            }
            while let Some(o) = self.ua.poll_output() {
                busy = true;
                match o {
                    Output::Respond { tx, response } => self.txs.respond(self.now, tx, &response),
                    Output::Call(e) => self.seen.events.push(e),
                    Output::Admit { call, token } => {
                        let result = self.env.admit(&token);
                        self.ua.handle_event(self.now, Event::Admission { call, result });
                    }
                    Output::ReservePort { call } => {
                        let port = self.env.allocate_rtp(call);
                        self.ua.handle_event(self.now, Event::PortReserved { call, port });
                    }
                    Output::Media(_) | Output::Rooms(_) => {}
                    Output::Send { request, .. } => panic!("unexpected request {}", request.method),
                }
            }
            if !busy {
                return;
            }
        }
    }

    /// Moves the clock to `start + at`, firing both cores' timers on the way.
    fn run_until(&mut self, at: Duration) {
        let end = self.start + at;
        for _ in 0..10_000 {
            let next = [self.txs.poll_timeout(), self.ua.poll_timeout()].into_iter().flatten().min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.txs.handle_timeout(self.now);
                    self.ua.handle_timeout(self.now);
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    /// What was sent from the `from`th message on: (ms since the start, start line).
    fn sent_since(&self, from: usize) -> Vec<(u64, &str)> {
        self.seen.wire[from..].iter().map(|(t, m)| (t.as_millis() as u64, m.lines().next().unwrap_or(""))).collect()
    }
}

fn invite() -> String {
    format!(
        "INVITE sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv\r\n\
         From: <sip:pv@127.0.0.1>;tag=f1\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:pv@127.0.0.1:5070>\r\nMax-Forwards: 70\r\nUser-to-User: a.b.c;encoding=jwt\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{OFFER}",
        OFFER.len()
    )
}

fn in_dialog(method: &str, branch: &str, cseq: u32, tag: &str) -> String {
    format!(
        "{method} sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{branch}\r\n\
         From: <sip:pv@127.0.0.1>;tag=f1\r\nTo: <sip:gw@127.0.0.1>;tag={tag}\r\nCall-ID: c1\r\n\
         CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn a_whole_call_through_both_cores_with_a_late_ack_and_retransmissions() {
    let mut core = Core::new();
    core.receive(&invite());
    assert_eq!(core.sent_since(0), [(0, "SIP/2.0 100 Trying"), (0, "SIP/2.0 200 OK")]);
    // Our tag, from the 2xx.
    let Ok(Message::Response(ok)) = parse(core.seen.wire[1].1.as_bytes()) else { panic!("a response") };
    let tag = super::message::header_param(ok.headers.get("To").unwrap(), "tag").unwrap().to_string();
    // The ACK is lost: the user agent retransmits its 2xx through the INVITE's transaction,
    // which is Accepted (RFC 6026), at T1, 2·T1, 4·T1.
    core.run_until(Duration::from_millis(3_600));
    assert_eq!(core.sent_since(2), [(500, "SIP/2.0 200 OK"), (1_500, "SIP/2.0 200 OK"), (3_500, "SIP/2.0 200 OK")]);
    // A retransmitted INVITE is absorbed by the transaction: no second call, nothing sent.
    let before = core.seen.wire.len();
    core.receive(&invite());
    assert_eq!(core.seen.wire.len(), before, "{:?}", core.sent_since(before));
    assert_eq!(core.ua.call_count(), 1);
    // The ACK of the 2xx has a branch of its own: the transaction layer hands it to the
    // dialog, which takes it as the ACK of the 2xx it retransmits; the leg is up.
    core.receive(&in_dialog("ACK", "ack1", 1, &tag));
    assert!(core.seen.events.iter().any(|e| matches!(e, CallEvent::Connected(_))), "{:?}", core.seen.events);
    let before = core.seen.wire.len();
    core.run_until(Duration::from_secs(20));
    assert_eq!(core.sent_since(before), [], "no 2xx after the ACK");
    // BYE, then the same BYE again (our 200 lost): the transaction answers the copy itself.
    core.receive(&in_dialog("BYE", "bye1", 2, &tag));
    core.receive(&in_dialog("BYE", "bye1", 2, &tag));
    assert_eq!(core.sent_since(before), [(20_000, "SIP/2.0 200 OK"), (20_000, "SIP/2.0 200 OK")]);
    let ended = core.seen.events.iter().filter(|e| matches!(e, CallEvent::Ended { .. })).count();
    assert_eq!(ended, 1, "one end, not two");
    assert_eq!(core.ua.call_count(), 0);
    // Timer J (and L of the INVITE) end every transaction; nothing is left.
    core.run_until(Duration::from_secs(60));
    assert_eq!(core.txs.len(), (0, 0));
    assert!(core.txs.poll_timeout().is_none() && core.ua.poll_timeout().is_none());
}
