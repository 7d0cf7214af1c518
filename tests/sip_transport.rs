//! The SIP transport's limits on the real daemon: no file descriptor outlives its connection,
//! connections are capped per source, a message over the size limit on a stream gets 513, a
//! message that never completes is cut off, and a call still gets through during a slow-loris
//! attack.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::Daemon;

/// The daemon's open file descriptors.
fn fds(d: &Daemon) -> usize {
    let pid = d.child.as_ref().expect("running").id();
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc").count()
}

/// Waits (bounded) until `cond` holds of the daemon's fd count; returns the last count.
fn fds_until(d: &Daemon, limit: Duration, cond: impl Fn(usize) -> bool) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let n = fds(d);
        if cond(n) || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn options(branch: &str, transport: &str) -> String {
    format!(
        "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{transport} 127.0.0.1:9;branch=z9hG4bK{branch}\r\n\
         From: <sip:a@127.0.0.1>;tag=t{branch}\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: {branch}@test\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Reads one response head (and nothing past it) from a stream.
fn read_answer(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The end of a long log.
fn tail(logs: &str) -> &str {
    let mut from = logs.len().saturating_sub(3000);
    while !logs.is_char_boundary(from) {
        from += 1;
    }
    &logs[from..]
}

fn udp_options(to: SocketAddr, branch: &str) -> String {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send_to(options(branch, "UDP").as_bytes(), to).unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, _) = s.recv_from(&mut buf).expect("an answer over UDP");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn connections_that_send_a_request_and_close_leave_no_descriptor_behind() {
    let mut d = Daemon::start();
    let to = d.sip_addr();
    // One connection first, so that lazily opened descriptors are in the baseline.
    let mut warm = TcpStream::connect(to).unwrap();
    warm.write_all(options("warm", "TCP").as_bytes()).unwrap();
    assert!(read_answer(&mut warm).starts_with("SIP/2.0 200 "));
    drop(warm);
    let baseline = fds_until(&d, Duration::from_secs(10), |_| true);
    for i in 0..300 {
        let mut s = TcpStream::connect(to).unwrap();
        s.write_all(options(&format!("c{i}"), "TCP").as_bytes()).unwrap();
        // Half of them wait for the answer, half close at once.
        if i % 2 == 0 {
            let answer = read_answer(&mut s);
            if !answer.starts_with("SIP/2.0 200 ") {
                let logs = d.kill_for_logs();
                panic!("no answer on connection {i}: {answer:?}; the daemon's last logs:\n{}", tail(&logs));
            }
        }
    }
    let after = fds_until(&d, Duration::from_secs(20), |n| n <= baseline + 1);
    assert!(after <= baseline + 1, "300 closed connections left descriptors: {baseline} before, {after} after");
}

#[test]
fn a_stream_message_over_the_size_limit_gets_513_and_the_connection_closes() {
    let d = Daemon::start();
    let to = d.sip_addr();
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n{}",
        "a=x-padding:0123456789012345678901234567890123456789012345678901234567890123\r\n".repeat(900)
    );
    assert!(sdp.len() > 64 * 1024);
    let invite = options("big", "TCP")
        .replace("OPTIONS sip", "INVITE sip")
        .replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE")
        .replace(
            "Content-Length: 0\r\n",
            &format!("Content-Type: application/sdp\r\nContent-Length: {}\r\n", sdp.len()),
        );
    let mut s = TcpStream::connect(to).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    // The daemon may close before reading it all: a failed write is fine, silence is not.
    let _ = s.write_all(invite.as_bytes()).and_then(|()| s.write_all(sdp.as_bytes()));
    let answer = read_answer(&mut s);
    assert!(answer.starts_with("SIP/2.0 513 "), "{answer}");
    assert!(answer.contains("Call-ID: big@test"), "addressed to the request: {answer}");
    assert!(answer.contains("Warning: 399 interwork"), "{answer}");
    // Still serving over TCP.
    let mut s = TcpStream::connect(to).unwrap();
    s.write_all(options("after", "TCP").as_bytes()).unwrap();
    assert!(read_answer(&mut s).starts_with("SIP/2.0 200 "));
}

#[test]
fn a_message_that_never_completes_is_cut_off() {
    let d = Daemon::start();
    let mut s = TcpStream::connect(d.sip_addr()).unwrap();
    s.write_all(b"OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKslow\r\n").unwrap();
    // The daemon closes it (transport::INCOMPLETE_MESSAGE is 10 s); reading sees the end.
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).expect("closed, not timed out");
    assert_eq!(n, 0, "no answer to half a message");
    assert!(started.elapsed() < Duration::from_secs(35));
}

#[test]
fn slow_loris_connections_are_bounded_and_calls_still_get_through() {
    let d = Daemon::start();
    let to = d.sip_addr();
    let baseline = fds(&d);
    // 2,000 connections from one address that each send a byte and stall.
    let mut held = Vec::new();
    for _ in 0..2000 {
        match TcpStream::connect(to) {
            Ok(mut s) => {
                let _ = s.write_all(b"O");
                held.push(s);
            }
            Err(e) => panic!("connect failed after {} connections: {e}", held.len()),
        }
    }
    // The daemon holds at most its per-source cap of them (transport::MAX_CONNECTIONS_PER_SOURCE).
    let during = fds_until(&d, Duration::from_secs(10), |n| n <= baseline + 256 + 8);
    assert!(during <= baseline + 256 + 8, "{during} descriptors for 2,000 stalled connections (baseline {baseline})");
    // A request over UDP, and over TCP from another source address, still gets its answer.
    assert!(udp_options(to, "during-udp").starts_with("SIP/2.0 200 "));
    let mut s = connect_from("127.0.0.2:0".parse().unwrap(), to);
    s.write_all(options("during-tcp", "TCP").as_bytes()).unwrap();
    assert!(read_answer(&mut s).starts_with("SIP/2.0 200 "));
    drop(held);
    let after = fds_until(&d, Duration::from_secs(20), |n| n <= baseline + 2);
    assert!(after <= baseline + 2, "descriptors after the stalled connections went: {after} (baseline {baseline})");
}

/// A TCP connection from `local` (std cannot bind before connecting; tokio's socket can).
fn connect_from(local: SocketAddr, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(local).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stream = rt.block_on(socket.connect(to)).unwrap();
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

/// At the file-descriptor limit the accept loop backs off and says so once, instead of spinning
/// and logging every failed accept; once descriptors come back, SIP and HTTP answer again.
#[test]
fn the_accept_loop_backs_off_at_the_descriptor_limit() {
    let mut d = Daemon::start();
    let to = d.sip_addr();
    let pid = d.child.as_ref().unwrap().id();
    let limit = fds(&d) + 16;
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:{limit}")])
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success());
    // More connections than descriptors left: the daemon reaches its limit, the rest wait in the
    // listen backlog.
    let held: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(to).unwrap()).collect();
    let at_limit = fds_until(&d, Duration::from_secs(10), |n| n + 2 >= limit);
    assert!(at_limit + 2 >= limit, "the daemon did not reach its limit: {at_limit} of {limit}");
    // An observation window for a spinning loop to show itself (not a synchronization).
    std::thread::sleep(Duration::from_secs(2));
    drop(held);
    // Descriptors come back (the connections were closed) and service resumes.
    let mut s = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.is_none() && Instant::now() < deadline {
        let mut c = TcpStream::connect(to).unwrap();
        c.write_all(options("after-limit", "TCP").as_bytes()).unwrap();
        if read_answer(&mut c).starts_with("SIP/2.0 200 ") {
            s = Some(c);
        }
    }
    assert!(s.is_some(), "SIP over TCP answers again");
    let client = common::Client::new();
    assert_eq!(client.http.get(d.url("/healthz")).send().unwrap().status().as_u16(), 200);
    let logs = d.kill_for_logs();
    let warnings = logs.matches("cannot accept SIP connections").count();
    assert!(
        (1..=3).contains(&warnings),
        "{warnings} accept warnings (want one per 10 s):\n{}",
        &logs[..logs.len().min(3000)]
    );
}
