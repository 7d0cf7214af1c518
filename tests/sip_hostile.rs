//! Malformed and hostile SIP never crashes or wedges the daemon, and gets 400 (or 505) where a
//! response is possible; a call's RTP socket is real and sends the leg's RTP.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use common::{Client, Daemon};

fn sip_addr(d: &Daemon) -> SocketAddr {
    d.env.iter().find(|(k, _)| k == "INTERWORK_SIP_LISTEN").map(|(_, v)| v.parse().unwrap()).unwrap()
}

fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    s
}

/// Sends `bytes` and returns the first final answer, if one comes (100 Trying is skipped).
/// Retransmitted final answers to earlier INVITEs (never ACKed here, so the gateway repeats
/// them) are told apart by their Call-ID and skipped.
fn exchange(s: &UdpSocket, to: SocketAddr, bytes: &[u8]) -> Option<String> {
    s.send_to(bytes, to).unwrap();
    let call_id =
        |text: &str| text.split("\r\n").find_map(|l| l.strip_prefix("Call-ID: ").map(|v| v.trim().to_string()));
    let ours = call_id(&String::from_utf8_lossy(bytes));
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, _) = s.recv_from(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let earlier_invite =
            text.contains(" INVITE\r\n") && matches!((&ours, call_id(&text)), (Some(a), Some(b)) if *a != b);
        if !earlier_invite && !text.starts_with("SIP/2.0 1") {
            return Some(text);
        }
    }
}

fn request(method: &str, branch: &str, extra: &str, body: &str) -> String {
    format!(
        "{method} sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{branch};rport\r\n\
         From: <sip:a@127.0.0.1>;tag=t{branch}\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: {branch}@test\r\n\
         CSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The corpus: (name, bytes, status expected, or None when no answer is possible).
fn corpus(token: &str) -> Vec<(&'static str, Vec<u8>, Option<u16>)> {
    let ok = request("OPTIONS", "base", "", "");
    let invite = |branch: &str, extra: &str, body: &str| {
        request("INVITE", branch, &format!("User-to-User: {token};encoding=jwt\r\n{extra}"), body).into_bytes()
    };
    let sdp_head = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n";
    let many_m = format!("{sdp_head}{}", "m=audio 4000 RTP/AVP 0\r\n".repeat(100));
    let many_a = format!("{sdp_head}m=audio 4000 RTP/AVP 0\r\n{}", "a=x\r\n".repeat(300));
    let big_sdp = format!("{sdp_head}m=audio 4000 RTP/AVP 0\r\n{}", "a=rtpmap:0 PCMU/8000\r\n".repeat(2700));
    vec![
        ("no request line", b"\r\n\r\nGARBAGE".to_vec(), None),
        ("request line only", b"INVITE sip:x@y SIP/2.0\r\n\r\n".to_vec(), None),
        ("missing version", ok.replace(" SIP/2.0\r\nVia", "\r\nVia").into_bytes(), Some(400)),
        ("SIP/3.0", ok.replace(" SIP/2.0\r\nVia", " SIP/3.0\r\nVia").into_bytes(), Some(505)),
        ("missing Via", ok.replace("Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKbase;rport\r\n", "").into_bytes(), None),
        ("missing Call-ID", ok.replace("Call-ID: base@test\r\n", "").into_bytes(), Some(400)),
        ("missing CSeq", ok.replace("CSeq: 1 OPTIONS\r\n", "").into_bytes(), Some(400)),
        ("missing From", ok.replace("From: <sip:a@127.0.0.1>;tag=tbase\r\n", "").into_bytes(), Some(400)),
        ("missing To", ok.replace("To: <sip:gw@127.0.0.1>\r\n", "").into_bytes(), Some(400)),
        ("CSeq method mismatch", ok.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE").into_bytes(), Some(400)),
        ("CSeq not a number", ok.replace("CSeq: 1 OPTIONS", "CSeq: one OPTIONS").into_bytes(), Some(400)),
        ("CSeq too large", ok.replace("CSeq: 1 OPTIONS", "CSeq: 99999999999 OPTIONS").into_bytes(), Some(400)),
        ("Content-Length too large", ok.replace("Content-Length: 0", "Content-Length: 900").into_bytes(), Some(400)),
        ("Content-Length negative", ok.replace("Content-Length: 0", "Content-Length: -5").into_bytes(), Some(400)),
        (
            "Content-Length twice",
            ok.replace("Content-Length: 0", "Content-Length: 0\r\nContent-Length: 3").into_bytes(),
            Some(400),
        ),
        ("Max-Forwards not a number", ok.replace("Max-Forwards: 70", "Max-Forwards: many").into_bytes(), Some(400)),
        (
            "huge header",
            ok.replace("Max-Forwards: 70", &format!("X-Huge: {}", "h".repeat(9000))).into_bytes(),
            Some(400),
        ),
        ("too many headers", ok.replace("Max-Forwards: 70\r\n", &"X-N: 1\r\n".repeat(300)).into_bytes(), Some(400)),
        ("header without colon", ok.replace("Max-Forwards: 70", "Max-Forwards 70").into_bytes(), Some(400)),
        ("bad header name", ok.replace("Max-Forwards: 70", "Max Forwards: 70").into_bytes(), Some(400)),
        ("Via not SIP", ok.replace("SIP/2.0/UDP 127.0.0.1:9", "HTTP/1.1 127.0.0.1:9").into_bytes(), Some(400)),
        ("From without URI", ok.replace("<sip:a@127.0.0.1>", "nobody").into_bytes(), Some(400)),
        ("folding before any header", ok.replace("Via:", "  continued\r\nVia:").into_bytes(), Some(400)),
        (
            "huge Request-URI",
            ok.replace("sip:gw@127.0.0.1 SIP", &format!("sip:{}@x SIP", "u".repeat(3000))).into_bytes(),
            Some(400),
        ),
        (
            "non-UTF-8 header",
            ok.replacen("Max-Forwards: 70\r\n", "X-Bin: @@\r\nMax-Forwards: 70\r\n", 1)
                .replace("@@", "\u{fffd}")
                .into_bytes()
                .into_iter()
                .map(|b| if b == 0xbd { 0xff } else { b })
                .collect(),
            Some(400),
        ),
        ("NUL in a header", ok.replace("Max-Forwards: 70", "Max-Forwards: 70\0\0").into_bytes(), Some(400)),
        ("binary junk", (0..512u32).map(|i| (i * 7919 % 251) as u8).collect(), None),
        ("junk response", b"SIP/2.0 999 Whatever\r\nVia: x\r\n\r\n".to_vec(), None),
        (
            "From without tag on INVITE",
            String::from_utf8(invite("notag", "", "")).unwrap().replace(";tag=tnotag", "").into_bytes(),
            Some(400),
        ),
        ("SDP with 100 m-lines", invite("mmm", "Content-Type: application/sdp\r\n", &many_m), Some(400)),
        ("SDP with 300 attributes", invite("aaa", "Content-Type: application/sdp\r\n", &many_a), Some(400)),
        (
            "an INVITE of 60 KB whose SDP is over the attribute limit",
            invite("big", "Content-Type: application/sdp\r\n", &big_sdp),
            Some(400),
        ),
        ("SDP garbage", invite("garb", "Content-Type: application/sdp\r\n", "hello world"), Some(400)),
        (
            "UUI with 100 elements",
            request("INVITE", "uuis", &format!("User-to-User: {}\r\n", vec!["00;encoding=hex"; 100].join(",")), "")
                .into_bytes(),
            Some(403),
        ),
        (
            "UUI token of 5000 characters",
            request("INVITE", "long", &format!("User-to-User: {};encoding=jwt\r\n", "a.b.".repeat(1250)), "")
                .into_bytes(),
            Some(403),
        ),
        // Short hops: the Via stays under the 8 KiB header limit, so the 400 can be addressed.
        (
            "Via with 300 hops",
            ok.replace(
                "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKbase;rport",
                &format!("Via: {}", vec!["SIP/2.0/UDP h:9"; 300].join(",")),
            )
            .into_bytes(),
            Some(400),
        ),
        ("BYE for no dialog", request("BYE", "bye", "", "").into_bytes(), Some(481)),
        ("unknown method", request("FROBNICATE", "frob", "", "").into_bytes(), Some(405)),
    ]
}

#[test]
fn a_corpus_of_hostile_messages_is_answered_or_dropped_and_the_daemon_stays_up() {
    let mut d = Daemon::start();
    let c = Client::new();
    let (_, _, token) = common::session_with_participant(&d, &c);
    let to = sip_addr(&d);
    let s = socket();
    let corpus = corpus(&token);
    assert!(corpus.len() >= 30);
    for (name, bytes, expected) in corpus {
        if bytes.len() > 65_000 {
            // Larger than a datagram can be: the socket refuses to send it; over TCP below.
            continue;
        }
        let answer = exchange(&s, to, &bytes);
        match expected {
            Some(status) => {
                let answer = answer.unwrap_or_else(|| panic!("{name}: no answer"));
                assert!(answer.starts_with(&format!("SIP/2.0 {status} ")), "{name}: {answer}");
                if status == 400 || status == 505 || status == 513 {
                    assert!(answer.contains("Warning: "), "{name}: says why: {answer}");
                }
            }
            None => {
                if let Some(a) = answer {
                    assert!(a.starts_with("SIP/2.0 4") || a.starts_with("SIP/2.0 5"), "{name}: {a}");
                }
            }
        }
        // Drain anything else (retransmissions of final responses).
        while exchange_nothing(&s) {}
    }
    // Still serving SIP and HTTP, still the same process.
    let answer = exchange(&s, to, request("OPTIONS", "after", "", "").as_bytes()).expect("OPTIONS after the corpus");
    assert!(answer.starts_with("SIP/2.0 200 "), "{answer}");
    assert!(d.child.as_mut().unwrap().try_wait().unwrap().is_none(), "the daemon is alive");
    assert_eq!(c.http.get(d.url("/healthz")).send().unwrap().status().as_u16(), 200);
}

fn exchange_nothing(s: &UdpSocket) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = vec![0u8; 65_535];
    let got = s.recv_from(&mut buf).is_ok();
    s.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    got
}

#[test]
fn garbage_over_tcp_does_not_wedge_the_daemon() {
    let d = Daemon::start();
    let to = sip_addr(&d);
    for junk in [
        b"\x00\x01\x02garbage\r\n\r\n".to_vec(),
        b"INVITE sip:x SIP/2.0\r\nContent-Length: 99999999\r\n\r\n".to_vec(),
        vec![b'A'; 200_000],
        b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKt\r\n".to_vec(),
    ] {
        let mut stream = TcpStream::connect(to).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = stream.write_all(&junk);
        // Half-open or closed by the daemon: either is fine; it must not take the daemon down.
        drop(stream);
    }
    // A proper request over TCP still works.
    let mut stream = TcpStream::connect(to).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let options = request("OPTIONS", "tcp1", "", "").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    stream.write_all(options.as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("SIP/2.0 200 "), "{answer}");
}

#[test]
fn a_call_gets_a_real_rtp_socket_that_sends_rtp() {
    let d = Daemon::start();
    let c = Client::new();
    let (_, _, token) = common::session_with_participant(&d, &c);
    let to = sip_addr(&d);
    let s = socket();
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    rtp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let port = rtp.local_addr().unwrap().port();
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    let invite = request(
        "INVITE",
        "rtp",
        &format!(
            "User-to-User: {token};encoding=jwt\r\nContact: <sip:a@127.0.0.1:9>\r\nContent-Type: application/sdp\r\n"
        ),
        &sdp,
    );
    s.send_to(invite.as_bytes(), to).unwrap();
    let mut buf = vec![0u8; 65_535];
    let ok = loop {
        let (n, _) = s.recv_from(&mut buf).expect("an answer");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("SIP/2.0 100") {
            break text;
        }
    };
    assert!(ok.starts_with("SIP/2.0 200 "), "{ok}");
    let media_port: u16 = ok
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("our port in the answer");
    assert!((20_000..=29_999).contains(&media_port), "{media_port} from the configured range");
    // The leg sends what its participant hears (silence: nobody else is in the session) as
    // PCMU, 20 ms per packet, from the port it announced (symmetric RTP).
    let mut packet = vec![0x80, 0x00, 0x00, 0x01, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78];
    packet.extend(std::iter::repeat_n(0xff, 160));
    rtp.send_to(&packet, ("127.0.0.1", media_port)).unwrap();
    let (n, from) = rtp.recv_from(&mut buf).expect("the leg's RTP");
    assert_eq!((buf[0] >> 6, buf[1] & 0x7f, n), (2, 0, 12 + 160), "an RTP PCMU packet of 20 ms");
    assert_eq!(from.port(), media_port, "symmetric RTP: from the port we announced");
}

#[test]
fn tls_is_served_when_a_certificate_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-keyout", key.to_str().unwrap(), "-out", cert.to_str().unwrap()])
        .output()
        .expect("openssl is installed (make test-deps)");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let tls_addr = format!("127.0.0.1:{}", common::free_port());
    let d = Daemon::start_with(&[
        ("INTERWORK_SIP_TLS_LISTEN", &tls_addr),
        ("INTERWORK_SIP_TLS_CERT", cert.to_str().unwrap()),
        ("INTERWORK_SIP_TLS_KEY", key.to_str().unwrap()),
    ]);
    // Where it listens in the end (a port taken meanwhile is retried on a fresh one).
    let tls_addr = d.env.iter().find(|(k, _)| k == "INTERWORK_SIP_TLS_LISTEN").unwrap().1.clone();
    let mut client = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &tls_addr, "-quiet", "-no_ign_eof"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let options = request("OPTIONS", "tls1", "", "").replace("SIP/2.0/UDP", "SIP/2.0/TLS");
    client.stdin.as_mut().unwrap().write_all(options.as_bytes()).unwrap();
    let mut stdout = client.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let n = stdout.read(&mut buf).unwrap_or(0);
        let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
    });
    let answer = rx.recv_timeout(Duration::from_secs(10)).expect("an answer over TLS");
    let _ = client.kill();
    let _ = client.wait();
    assert!(answer.starts_with("SIP/2.0 200 "), "{answer}");
}

/// A flood is shed at the door: past `sip.max_pending` requests waiting for the gateway's
/// final answer (here 2: two INVITEs ringing for 30 s), the next request gets 503 +
/// Retry-After at once and is not queued; the refusals are counted. Answered requests do not
/// count: a third INVITE that is refused at once leaves room.
#[test]
fn requests_past_max_pending_are_shed_with_503() {
    let d = Daemon::start_with(&[("INTERWORK_SIP_MAX_PENDING", "2"), ("INTERWORK_SIP_ANSWER_DELAY", "30s")]);
    let c = Client::new();
    let (sid, _, first) = common::session_with_participant(&d, &c);
    let (_, second) = common::joined_participant(&d, &c, &sid);
    let to = sip_addr(&d);
    let s = socket();
    for (branch, token) in [("p1", &first), ("p2", &second)] {
        let invite = request("INVITE", branch, &format!("User-to-User: {token};encoding=jwt\r\n"), "");
        s.send_to(invite.as_bytes(), to).unwrap();
        let mut buf = vec![0u8; 65_535];
        let ringing = loop {
            let (n, _) = s.recv_from(&mut buf).expect("an answer");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !text.starts_with("SIP/2.0 100") {
                break text;
            }
        };
        assert!(ringing.starts_with("SIP/2.0 180"), "{ringing}");
    }
    let answer = exchange(&s, to, request("OPTIONS", "p3", "", "").as_bytes()).expect("an answer");
    assert!(answer.starts_with("SIP/2.0 503"), "{answer}");
    assert!(answer.contains("Retry-After: "), "{answer}");
    assert!(answer.contains("overloaded"), "{answer}");
    let text = Client::new().http.get(d.url("/metrics")).send().unwrap().text().unwrap();
    assert!(text.lines().any(|l| l == "interwork_sip_shed_total 1"), "{text}");
}
