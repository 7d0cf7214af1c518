//! The client side of the SIP core against a real third-party peer: sipp (Debian `sip-tester`)
//! plays the UAS (a trunk) while our transactions and UAC, driven by a small loop over a real
//! UDP socket, place calls to it: a digest challenge checked by sipp's `verifyauth`, a reliable
//! 183 with early SDP and its PRACK, the 2xx and its ACK, a session refresh by UPDATE, BYE;
//! a wrong password refused; an INVITE without an offer answered in the ACK and a BYE from the
//! far end; CANCEL after 180.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use interwork::sip::message::{self, Response};
use interwork::sip::transaction::{ClientTx, Limits, Peer, Timers, Transactions, Transport, TxOutput};
use interwork::sip::uac::{CallRef, Credentials, Dial, EndReason, Sent, Uac, UacConfig, UacEvent, UacOutput};

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// The test's SIP end: the sans-IO cores and a UDP socket, run by a loop whose every wait ends
/// at a packet or at the cores' next deadline.
struct Shell {
    socket: UdpSocket,
    txs: Transactions,
    uac: Uac,
    sent: HashMap<ClientTx, Sent>,
    events: Vec<(CallRef, UacEvent)>,
    /// Final responses to our requests, as (CSeq method, status).
    finals: Vec<(String, u16)>,
}

impl Shell {
    fn new(session_expires: Option<u32>) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let local = socket.local_addr().unwrap();
        let mut config = UacConfig::new(local, Transport::Udp, [3; 32]);
        config.session_expires = session_expires;
        config.min_se = 1;
        Self {
            socket,
            txs: Transactions::new(Timers::default(), Limits::default()),
            uac: Uac::new(config),
            sent: HashMap::new(),
            events: Vec::new(),
            finals: Vec::new(),
        }
    }

    /// Carries every output of both cores to the other core or the socket, until both are quiet.
    fn pump(&mut self) {
        loop {
            let now = Instant::now();
            let mut busy = false;
            while let Some(out) = self.uac.poll_output() {
                busy = true;
                match out {
                    UacOutput::Request { sent, request, to } => match self.txs.send_request(now, request, to) {
                        Ok(id) => {
                            self.sent.insert(id, sent);
                        }
                        Err(e) => panic!("the UAC's request could not be sent: {e}"),
                    },
                    UacOutput::Transmit { to, bytes } => {
                        self.socket.send_to(&bytes, to.addr).unwrap();
                    }
                    UacOutput::Respond { tx, response } => self.txs.respond(now, tx, &response),
                    UacOutput::Event { call, event } => self.events.push((call, event)),
                }
            }
            while let Some(out) = self.txs.poll_output() {
                busy = true;
                match out {
                    TxOutput::Transmit { to, bytes } => {
                        self.socket.send_to(&bytes, to.addr).unwrap();
                    }
                    TxOutput::Request { tx, request, .. } => {
                        if !self.uac.handle_request(now, tx, request.clone()) {
                            self.txs.respond(now, tx, &Response::to(&request, 481, "No Such Call", None));
                        }
                    }
                    TxOutput::Ack { request, .. } => {
                        self.uac.handle_ack(now, &request);
                    }
                    TxOutput::Response { response, .. } => {
                        if response.status >= 200 {
                            let method =
                                response.headers.get("CSeq").and_then(|c| c.split_whitespace().nth(1)).unwrap_or("");
                            self.finals.push((method.to_string(), response.status));
                        }
                        self.uac.handle_response(now, response);
                    }
                    TxOutput::Timeout { client } => {
                        if let Some(sent) = self.sent.remove(&client) {
                            self.uac.request_failed(now, sent);
                        }
                    }
                    TxOutput::Cancelled { .. } | TxOutput::Shed { .. } => {}
                }
            }
            if !busy {
                return;
            }
        }
    }

    /// Runs until `done` holds for the events so far, or `limit` passes (then panics).
    fn run_until(&mut self, limit: Duration, what: &str, done: impl Fn(&Self) -> bool) {
        let give_up = Instant::now() + limit;
        let mut buf = vec![0u8; 65_536];
        loop {
            self.pump();
            if done(self) {
                return;
            }
            let now = Instant::now();
            assert!(now < give_up, "no {what} within {limit:?}; events: {:?}", self.events);
            let next =
                [self.txs.poll_timeout(), self.uac.poll_timeout(), Some(give_up)].into_iter().flatten().min().unwrap();
            let wait = next.saturating_duration_since(now).max(Duration::from_millis(1));
            self.socket.set_read_timeout(Some(wait)).unwrap();
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let now = Instant::now();
                    match message::parse(&buf[..n]) {
                        Ok(m) => {
                            self.txs.handle_message(now, m, Peer { addr: from, transport: Transport::Udp, conn: None })
                        }
                        Err(e) => {
                            panic!("sipp sent what we cannot parse ({e}): {}", String::from_utf8_lossy(&buf[..n]))
                        }
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("recv: {e}"),
            }
            let now = Instant::now();
            self.txs.handle_timeout(now);
            self.uac.handle_timeout(now);
        }
    }

    fn dial(&mut self, to: SocketAddr, offer: bool, password: Option<&str>) -> CallRef {
        let dial = Dial {
            uri: format!("sip:+4798765432@{to}"),
            from: "sip:+4712345678@interwork.test".into(),
            to: format!("sip:+4798765432@{to}"),
            next_hop: Peer { addr: to, transport: Transport::Udp, conn: None },
            offer: offer.then(|| OFFER.as_bytes().to_vec()),
            credentials: password.map(|p| Credentials { username: "trunkuser".into(), password: p.into() }),
            headers: vec![],
        };
        self.uac.dial(Instant::now(), dial).unwrap()
    }

    fn ended(&self, call: CallRef) -> Option<EndReason> {
        self.events.iter().find_map(|(c, e)| match e {
            UacEvent::Ended { why } if *c == call => Some(why.clone()),
            _ => None,
        })
    }
}

/// sipp running a UAS scenario on its own port, killed by its pid when dropped.
struct Sipp {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Sipp {
    fn start(scenario: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sf = dir.path().join("uas.xml");
        std::fs::write(&sf, scenario).unwrap();
        // A port that was free a moment ago (sipp cannot be told to bind port 0 and say which):
        // should another process take it first, sipp fails and so does the test, with its logs.
        // Our INVITE may reach the port before sipp listens: timer A resends it.
        #[allow(clippy::never_loop)]
        for _ in 0..1 {
            let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new("sipp")
                .current_dir(dir.path())
                .args(["-sf", sf.to_str().unwrap(), "-i", "127.0.0.1", "-p", &port.to_string()])
                .args(["-m", "1", "-timeout", "60s", "-timeout_error", "-nostdin", "-trace_err", "-trace_msg"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("sipp is not installed: install the `sip-tester` package (make test-deps does)");
            return Self { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), _dir: dir };
        }
        unreachable!("the loop returns");
    }

    /// Waits (bounded) for sipp to finish; whether its scenario passed, and its logs.
    fn finish(mut self) -> (bool, String) {
        let give_up = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > give_up {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut logs = String::new();
        for entry in std::fs::read_dir(self._dir.path()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".log") {
                logs.push_str(&format!("\n--- {name}\n{}", std::fs::read_to_string(entry.path()).unwrap_or_default()));
            }
        }
        (status.is_some_and(|s| s.success()), logs)
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A trunk: challenges the first INVITE, checks the answer with `verifyauth` (403 when wrong),
/// sends a reliable 183 with SDP and waits for its PRACK, answers with a 4 s session timer that
/// we refresh (UPDATE), and takes our BYE.
const TRUNK: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="trunk with digest, 100rel and session timer">
  <recv request="INVITE" />
  <send><![CDATA[
SIP/2.0 401 Unauthorized
[last_Via:]
[last_From:]
[last_To:];tag=[pid]trunk[call_number]
[last_Call-ID:]
[last_CSeq:]
WWW-Authenticate: Digest realm="trunk.test", nonce="4f1c2d3e5a6b7c8d", qop="auth", algorithm=MD5
Content-Length: 0

]]></send>
  <recv request="ACK" />
  <recv request="INVITE">
    <action>
      <verifyauth assign_to="authok" username="trunkuser" password="s3cret" />
      <ereg regexp=".*" search_in="hdr" header="Via:" check_it="true" assign_to="invite_via" />
      <ereg regexp=".*" search_in="hdr" header="CSeq:" check_it="true" assign_to="invite_cseq" />
      <ereg regexp="100rel" search_in="hdr" header="Supported:" check_it="true" assign_to="rel" />
    </action>
  </recv>
  <nop hide="true" test="authok" next="good" />
  <send next="refused"><![CDATA[
SIP/2.0 403 Forbidden
Via:[$invite_via]
[last_From:]
[last_To:];tag=[pid]trunk[call_number]
[last_Call-ID:]
CSeq:[$invite_cseq]
Warning: 399 trunk "[$rel]"
Content-Length: 0

]]></send>
  <label id="good" />
  <send><![CDATA[
SIP/2.0 183 Session Progress
[last_Via:]
[last_From:]
[last_To:];tag=[pid]trunk[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:trunk@[local_ip]:[local_port]>
Require: 100rel
RSeq: 1
Content-Type: application/sdp
Content-Length: [len]

v=0
o=trunk 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [local_ip]
t=0 0
m=audio 40002 RTP/AVP 0
a=rtpmap:0 PCMU/8000

]]></send>
  <recv request="PRACK" />
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <send><![CDATA[
SIP/2.0 200 OK
Via:[$invite_via]
[last_From:]
[last_To:]
[last_Call-ID:]
CSeq:[$invite_cseq]
Contact: <sip:trunk@[local_ip]:[local_port]>
Allow: INVITE, ACK, BYE, CANCEL, UPDATE, PRACK
Supported: timer
Require: timer
Session-Expires: 4;refresher=uac
Content-Type: application/sdp
Content-Length: [len]

v=0
o=trunk 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [local_ip]
t=0 0
m=audio 40002 RTP/AVP 0
a=rtpmap:0 PCMU/8000

]]></send>
  <recv request="ACK" />
  <recv request="UPDATE" />
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:trunk@[local_ip]:[local_port]>
Require: timer
Session-Expires: 4;refresher=uac
Content-Length: 0

]]></send>
  <recv request="BYE" />
  <send next="end"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <label id="refused" />
  <recv request="ACK" />
  <label id="end" />
</scenario>
"#;

#[test]
fn a_trunk_call_with_digest_100rel_session_refresh_and_bye() {
    let sipp = Sipp::start(TRUNK);
    let mut shell = Shell::new(Some(1800));
    let call = shell.dial(sipp.addr, true, Some("s3cret"));
    shell.run_until(Duration::from_secs(20), "Connected", |s| s.events.iter().any(|(_, e)| *e == UacEvent::Connected));
    let kinds: Vec<_> = shell.events.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(kinds[0], UacEvent::Progress { status: 183 }, "{kinds:?}");
    assert!(
        matches!(&kinds[1], UacEvent::Answer { sdp } if String::from_utf8_lossy(sdp).contains("m=audio 40002")),
        "{kinds:?}"
    );
    assert_eq!(kinds[2], UacEvent::Connected);
    assert_eq!(shell.finals.iter().filter(|(m, _)| m == "INVITE").map(|(_, s)| *s).collect::<Vec<_>>(), [401, 200]);
    assert!(shell.finals.contains(&("PRACK".into(), 200)), "{:?}", shell.finals);
    // The trunk asked for a 4 s session with us refreshing: the UPDATE goes after 2 s and sipp
    // answers it (its scenario then waits for our BYE).
    shell.run_until(Duration::from_secs(10), "the refresh's answer", |s| s.finals.contains(&("UPDATE".into(), 200)));
    let events = shell.events.len();
    assert_eq!(events, 3, "a refresh is not reported: {:?}", shell.events);
    shell.uac.hang_up(Instant::now(), call).unwrap();
    shell.run_until(Duration::from_secs(10), "the end", |s| s.ended(call).is_some());
    assert_eq!(shell.ended(call), Some(EndReason::HungUp));
    let (ok, logs) = sipp.finish();
    assert!(ok, "sipp's scenario failed (the digest answer, PRACK, UPDATE or BYE): {logs}");
}

#[test]
fn a_wrong_password_is_refused_by_the_trunk() {
    let sipp = Sipp::start(TRUNK);
    let mut shell = Shell::new(Some(1800));
    let call = shell.dial(sipp.addr, true, Some("wrong"));
    shell.run_until(Duration::from_secs(20), "the end", |s| s.ended(call).is_some());
    assert_eq!(shell.ended(call), Some(EndReason::Refused { status: 403, reason: "Forbidden".into() }));
    let (ok, logs) = sipp.finish();
    assert!(ok, "{logs}");
}

/// Answers an INVITE without an offer with its own offer, checks that our ACK carries the
/// answer, then hangs up itself.
const LATE_OFFER: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="late offer, BYE from the far end">
  <recv request="INVITE">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="their_from" />
      <ereg regexp="sip:[^>]*" search_in="hdr" header="Contact:" check_it="true" assign_to="their_contact" />
    </action>
  </recv>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]late[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:far@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=far 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [local_ip]
t=0 0
m=audio 40004 RTP/AVP 0
a=rtpmap:0 PCMU/8000

]]></send>
  <recv request="ACK">
    <action>
      <ereg regexp="m=audio 40000" search_in="body" check_it="true" assign_to="answer" />
    </action>
  </recv>
  <send><![CDATA[
BYE [$their_contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:far@[local_ip]:[local_port]>;tag=[pid]late[call_number]
To:[$their_from]
Subject: answered with [$answer]
[last_Call-ID:]
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200" />
</scenario>
"#;

#[test]
fn an_invite_without_an_offer_is_answered_in_the_ack_and_the_far_end_hangs_up() {
    let sipp = Sipp::start(LATE_OFFER);
    let mut shell = Shell::new(None);
    let call = shell.dial(sipp.addr, false, None);
    shell.run_until(Duration::from_secs(20), "the offer", |s| {
        s.events.iter().any(|(_, e)| matches!(e, UacEvent::Offer { .. }))
    });
    let offer =
        shell.events.iter().find_map(|(_, e)| if let UacEvent::Offer { sdp } = e { Some(sdp.clone()) } else { None });
    assert!(String::from_utf8_lossy(&offer.unwrap()).contains("m=audio 40004"));
    shell.uac.answer(Instant::now(), call, Some(OFFER.as_bytes().to_vec())).unwrap();
    shell.run_until(Duration::from_secs(20), "the far end's BYE", |s| s.ended(call).is_some());
    assert_eq!(shell.ended(call), Some(EndReason::RemoteHangup));
    let (ok, logs) = sipp.finish();
    assert!(ok, "sipp's scenario failed (no answer in the ACK, or no 200 to its BYE): {logs}");
}

/// Rings, then expects CANCEL: 200 to it, 487 to the INVITE, and the ACK of the 487.
const RINGING: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="rings until cancelled">
  <recv request="INVITE">
    <action>
      <ereg regexp=".*" search_in="hdr" header="Via:" check_it="true" assign_to="invite_via" />
      <ereg regexp=".*" search_in="hdr" header="CSeq:" check_it="true" assign_to="invite_cseq" />
    </action>
  </recv>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]ring[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:far@[local_ip]:[local_port]>
Content-Length: 0

]]></send>
  <recv request="CANCEL" />
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]ring[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <send><![CDATA[
SIP/2.0 487 Request Terminated
Via:[$invite_via]
[last_From:]
[last_To:];tag=[pid]ring[call_number]
[last_Call-ID:]
CSeq:[$invite_cseq]
Content-Length: 0

]]></send>
  <recv request="ACK" />
</scenario>
"#;

#[test]
fn a_ringing_call_is_cancelled() {
    let sipp = Sipp::start(RINGING);
    let mut shell = Shell::new(Some(1800));
    let call = shell.dial(sipp.addr, true, None);
    shell.run_until(Duration::from_secs(20), "180", |s| {
        s.events.iter().any(|(_, e)| *e == UacEvent::Progress { status: 180 })
    });
    shell.uac.hang_up(Instant::now(), call).unwrap();
    shell.run_until(Duration::from_secs(20), "the end", |s| s.ended(call).is_some());
    assert_eq!(shell.ended(call), Some(EndReason::Cancelled));
    let (ok, logs) = sipp.finish();
    assert!(ok, "sipp's scenario failed (CANCEL or the ACK of the 487): {logs}");
}
