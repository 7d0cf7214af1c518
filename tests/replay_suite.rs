//! Issue 7: every capture in `pcaps/` is replayed by the built `interwork replay` against a
//! freshly started daemon and must meet its expectations; a wrong expectation, bad captures and
//! a silent target make the replay fail with a clear message and a non-zero exit, in bounded
//! time.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::Daemon;

/// Exit status of `interwork replay` when the replay cannot run at all.
const REPLAY_ERROR: i32 = 2;

fn pcaps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pcaps")
}

/// Every capture under `pcaps/`, sorted.
fn captures() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![pcaps_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "pcap" || e == "pcapng") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// `interwork replay` with the daemon's environment (so the embedded config is the daemon's:
/// its HTTP and SIP addresses, its state directory with the token key and credentials).
fn replay(env: &[(String, String)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_interwork"))
        .arg("replay")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap()
}

/// An environment with no daemon behind it: a state directory of its own.
fn offline_env(dir: &Path) -> Vec<(String, String)> {
    vec![
        ("INTERWORK_STATE_DIR".into(), dir.join("state").display().to_string()),
        ("INTERWORK_HTTP_LISTEN".into(), format!("127.0.0.1:{}", common::free_port())),
    ]
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The `gateway.answer_delay` a capture's expectations ask of the gateway, if any.
fn answer_delay(capture: &Path) -> Option<String> {
    interwork::replay::expect::load(&capture.with_extension("toml")).ok()?.gateway.answer_delay
}

#[test]
fn every_capture_meets_its_expectations() {
    let daemon = Daemon::start();
    // Captures that need a ringing gateway get one of their own.
    let mut ringing: Vec<(String, Daemon)> = Vec::new();
    let all = captures();
    assert!(all.len() >= 12, "pcaps/ holds {} captures, expected at least 12", all.len());
    let mut failed = Vec::new();
    for capture in &all {
        let started = Instant::now();
        let target = match answer_delay(capture) {
            None => &daemon,
            Some(delay) => {
                if !ringing.iter().any(|(d, _)| *d == delay) {
                    ringing.push((delay.clone(), Daemon::start_with(&[("INTERWORK_SIP_ANSWER_DELAY", &delay)])));
                }
                &ringing.iter().find(|(d, _)| *d == delay).unwrap().1
            }
        };
        let out = replay(&target.env, &[capture.to_str().unwrap()]);
        eprintln!("{}({:.1} s)", text(&out), started.elapsed().as_secs_f64());
        if !out.status.success() {
            failed.push(format!("{} exited {}:\n{}", capture.display(), out.status, text(&out)));
        }
    }
    assert!(failed.is_empty(), "{} of {} captures failed:\n{}", failed.len(), all.len(), failed.join("\n"));
}

#[test]
fn a_wrong_expectation_fails_naming_the_capture_and_the_message() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(
        &wrong,
        "[setup]\nparticipants = \"captured\"\n[[call]]\n[[call.request]]\nmethod = \"INVITE\"\nstatus = 200\n",
    )
    .unwrap();
    let capture = pcaps_dir().join("bad_token.pcap");
    let out = replay(&daemon.env, &[capture.to_str().unwrap(), "--expect", wrong.to_str().unwrap()]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("bad_token.pcap: call 1"), "{all}");
    assert!(all.contains("INVITE: expected 200, got 403"), "{all}");
}

#[test]
fn a_wrong_tone_fails_with_the_measured_frequency() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.toml");
    // Call A hears B's 440 Hz, not 1 kHz.
    std::fs::write(&wrong, "[[call]]\n[call.audio]\ntone_hz = 1000.0\n").unwrap();
    let capture = pcaps_dir().join("pcmu_two_calls.pcap");
    let out = replay(&daemon.env, &[capture.to_str().unwrap(), "--expect", wrong.to_str().unwrap()]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("pcmu_two_calls.pcap: call 1") && all.contains("expected 1000.0"), "{all}");
}

/// Nothing answering SIP at the target is a replay that cannot run (exit 2), told apart from a
/// call that fails its expectations (exit 1).
#[test]
fn a_target_that_does_not_answer_cannot_be_replayed_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    // Bound and never read: datagrams vanish, nothing answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = silent.local_addr().unwrap().to_string();
    let started = Instant::now();
    let capture = pcaps_dir().join("bad_token.pcap");
    let out = replay(&offline_env(dir.path()), &[capture.to_str().unwrap(), "--target", &target, "--timeout", "1s"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("the gateway is not reachable") && all.contains("no answer to SIP OPTIONS"), "{all}");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
}

#[test]
fn a_target_where_nothing_listens_cannot_be_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let capture = pcaps_dir().join("tcp_out_of_order.pcap");
    let out = replay(
        &offline_env(dir.path()),
        &[
            capture.to_str().unwrap(),
            "--target",
            &format!("127.0.0.1:{port}"),
            "--timeout",
            "1s",
            "--expect",
            pcaps_dir().join("bad_token.toml").to_str().unwrap(),
        ],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("the gateway is not reachable") && all.contains("connection refused"), "{all}");
}

/// A capture whose `[gateway]` asks for a setting the gateway's config does not have says so.
#[test]
fn a_capture_asking_for_other_gateway_settings_says_so() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().unwrap();
    let expect = dir.path().join("ringing.toml");
    std::fs::write(
        &expect,
        "[gateway]\nanswer_delay = \"3s\"\n[setup]\nparticipants = \"captured\"\n\
         [[call]]\n[[call.request]]\nmethod = \"INVITE\"\nstatus = 403\n",
    )
    .unwrap();
    let capture = pcaps_dir().join("bad_token.pcap");
    let out = replay(&daemon.env, &[capture.to_str().unwrap(), "--expect", expect.to_str().unwrap()]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "the call itself meets its expectation: {all}");
    assert!(all.contains("note: the capture asks the gateway for sip.answer_delay = \"3s\""), "{all}");
    assert!(all.contains("has \"0s\""), "{all}");

    // Configured as asked: no note.
    let mut env = daemon.env.clone();
    env.push(("INTERWORK_SIP_ANSWER_DELAY".into(), "3s".into()));
    let out = replay(&env, &[capture.to_str().unwrap(), "--expect", expect.to_str().unwrap()]);
    assert!(!text(&out).contains("note: the capture asks"), "{}", text(&out));
}

/// A capture file made of `frames` on `link`.
fn write_pcap(path: &Path, link: pcap_file::DataLink, frames: &[Vec<u8>]) {
    let header = pcap_file::pcap::PcapHeader { datalink: link, ..Default::default() };
    let mut w = pcap_file::pcap::PcapWriter::with_header(std::fs::File::create(path).unwrap(), header).unwrap();
    for (i, f) in frames.iter().enumerate() {
        w.write_packet(&pcap_file::pcap::PcapPacket::new(Duration::from_millis(i as u64), f.len() as u32, f)).unwrap();
    }
}

fn udp_frame(payload: &[u8]) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64).udp(4000, 5060);
    let mut out = Vec::new();
    builder.write(&mut out, payload).unwrap();
    out
}

/// Runs the replay on a bad file and returns its combined output, checking the exit status.
fn refused(path: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let expect = pcaps_dir().join("bad_token.toml");
    let started = Instant::now();
    let out = replay(&offline_env(dir.path()), &[path.to_str().unwrap(), "--expect", expect.to_str().unwrap()]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(REPLAY_ERROR), "{all}");
    assert!(all.contains(&path.display().to_string()), "the message names the capture: {all}");
    assert!(started.elapsed() < Duration::from_secs(10));
    all
}

#[test]
fn bad_captures_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();

    let truncated = dir.path().join("truncated.pcap");
    let whole = std::fs::read(pcaps_dir().join("pcmu_two_calls.pcap")).unwrap();
    std::fs::write(&truncated, &whole[..whole.len() / 2 + 7]).unwrap();
    assert!(refused(&truncated).contains("corrupt or truncated capture"));

    let garbage = dir.path().join("garbage.pcap");
    std::fs::write(&garbage, b"this is not a capture at all").unwrap();
    assert!(refused(&garbage).contains("not a pcap or pcapng file"));

    let empty = dir.path().join("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    assert!(refused(&empty).contains("not a pcap or pcapng file"));

    let no_sip = dir.path().join("no_sip.pcap");
    write_pcap(&no_sip, pcap_file::DataLink::RAW, &[udp_frame(&[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff])]);
    assert!(refused(&no_sip).contains("no SIP messages"));

    let unknown = dir.path().join("unknown_link.pcap");
    write_pcap(&unknown, pcap_file::DataLink::USER0, &[udp_frame(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n")]);
    assert!(refused(&unknown).contains("unsupported link type"));
}

#[test]
fn missing_or_bad_expectations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("call.pcap");
    std::fs::copy(pcaps_dir().join("bad_token.pcap"), &capture).unwrap();
    let out = replay(&offline_env(dir.path()), &[capture.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(REPLAY_ERROR));
    assert!(text(&out).contains("call.toml"), "names the default expectations file: {}", text(&out));

    std::fs::write(dir.path().join("call.toml"), "[[call]]\n[[call.request]]\nmethod = \"INVITE\"\nstauts = 200\n")
        .unwrap();
    let out = replay(&offline_env(dir.path()), &[capture.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(REPLAY_ERROR));
    assert!(text(&out).contains("stauts"), "names the unknown key: {}", text(&out));
}

/// The value of header `name` in a SIP message's text.
fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
        .unwrap_or("")
}

/// A gateway played by the test over UDP: it answers the INVITE, then sends OPTIONS, a
/// re-INVITE putting the call on hold and a BYE to the replay's Contact; returns what the
/// replay answered to each.
fn scripted_gateway(sock: UdpSocket) -> Vec<String> {
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = vec![0u8; 65_535];
    let mut recv = |want: &dyn Fn(&str) -> bool| -> Option<(String, std::net::SocketAddr)> {
        while Instant::now() < deadline {
            let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.starts_with("OPTIONS ") && header(&text, "Call-ID").starts_with("replay-probe-") {
                // The replay's reachability probe.
                let ok = format!(
                    "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=gw0\r\nCall-ID: {}\r\nCSeq: 1 OPTIONS\r\n\
                     Content-Length: 0\r\n\r\n",
                    header(&text, "Via"),
                    header(&text, "From"),
                    header(&text, "To"),
                    header(&text, "Call-ID")
                );
                sock.send_to(ok.as_bytes(), from).unwrap();
                continue;
            }
            if want(&text) {
                return Some((text, from));
            }
        }
        None
    };
    let Some((invite, from)) = recv(&|t| t.starts_with("INVITE ")) else { return vec!["no INVITE".into()] };
    let local = sock.local_addr().unwrap();
    let contact = header(&invite, "Contact").trim_matches(|c| c == '<' || c == '>').to_string();
    let to = format!("{};tag=gw1", header(&invite, "To"));
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\na=sendrecv\r\n";
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:gw@{local}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        header(&invite, "Via"),
        header(&invite, "From"),
        header(&invite, "Call-ID"),
        header(&invite, "CSeq"),
        sdp.len()
    );
    sock.send_to(ok.as_bytes(), from).unwrap();
    if recv(&|t| t.starts_with("ACK ")).is_none() {
        return vec!["no ACK".into()];
    }
    let target: std::net::SocketAddr = contact.rsplit('@').next().unwrap().parse().unwrap();
    let hold = sdp.replace("a=sendrecv", "a=sendonly");
    let mut answers = Vec::new();
    for (cseq, method, body) in [(1, "OPTIONS", ""), (2, "INVITE", hold.as_str()), (3, "BYE", "")] {
        let ctype = if body.is_empty() { "" } else { "Content-Type: application/sdp\r\n" };
        let request = format!(
            "{method} {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKgw{cseq}\r\nFrom: {to}\r\nTo: {}\r\n\
             Call-ID: {}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
            header(&invite, "From"),
            header(&invite, "Call-ID"),
            body.len()
        );
        sock.send_to(request.as_bytes(), target).unwrap();
        let want = format!("{cseq} {method}");
        let Some((answer, _)) = recv(&|t| t.starts_with("SIP/2.0 ") && header(t, "CSeq") == want) else {
            answers.push(format!("{method}: no answer"));
            break;
        };
        answers.push(format!("{method}: {}", answer.lines().next().unwrap_or("")));
        if method == "INVITE" {
            answers.push(format!(
                "hold answered with {}",
                if answer.contains("a=recvonly") { "recvonly" } else { "something else" }
            ));
            let ack = request.replacen("INVITE ", "ACK ", 1).replace("2 INVITE", "2 ACK");
            sock.send_to(ack.as_bytes(), target).unwrap();
        }
    }
    answers
}

#[test]
fn the_gateways_own_requests_are_answered_and_its_bye_ends_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = gateway.local_addr().unwrap().to_string();
    let fake = std::thread::spawn(move || scripted_gateway(gateway));
    let expect = dir.path().join("expect.toml");
    std::fs::write(
        &expect,
        "[setup]\nparticipants = \"captured\"\n[[call]]\n[[call.request]]\nmethod = \"INVITE\"\nstatus = 200\n",
    )
    .unwrap();
    let capture = pcaps_dir().join("session_refresh.pcap");
    let out = replay(
        &offline_env(dir.path()),
        &[capture.to_str().unwrap(), "--target", &target, "--expect", expect.to_str().unwrap(), "--timeout", "2s"],
    );
    let all = text(&out);
    let answers = fake.join().unwrap();
    assert_eq!(
        answers,
        ["OPTIONS: SIP/2.0 200 OK", "INVITE: SIP/2.0 200 OK", "hold answered with recvonly", "BYE: SIP/2.0 200 OK"],
        "{all}"
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("note: the gateway sent BYE"), "{all}");
    // The capture's own UPDATE and BYE came after the gateway's BYE: not sent.
    assert!(all.contains("UPDATE → none") && all.contains("BYE → none"), "{all}");
}
