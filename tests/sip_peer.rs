//! The SIP side against a real third-party peer: sipp (Debian `sip-tester`) runs scenarios
//! against the real daemon over UDP and TCP (CONTRACT §5).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Client, Daemon};
use serde_json::{Value, json};

/// The SIP address of a test daemon.
fn sip_addr(d: &Daemon) -> String {
    d.env.iter().find(|(k, _)| k == "INTERWORK_SIP_LISTEN").map(|(_, v)| v.clone()).unwrap()
}

/// Runs sipp with `scenario` (XML text, `[fieldN]` replaced by `fields`); returns (success, logs).
fn sipp(d: &Daemon, scenario: &str, fields: &[&str], args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let sf = dir.path().join("scenario.xml");
    // Fields are written into the scenario rather than an -inf CSV: tokens and UUI lists carry
    // ';', sipp's CSV separator.
    let mut text = scenario.to_string();
    for (i, field) in fields.iter().enumerate() {
        text = text.replace(&format!("[field{i}]"), field);
    }
    std::fs::write(&sf, text).unwrap();
    // sipp picks its own SIP port (the next free one from 5060); its media port is ours, and
    // when another process took it first sipp fails to bind and runs again on a fresh one.
    for attempt in 0.. {
        let media = common::free_port().to_string();
        let Ok(out) = Command::new("sipp")
            .current_dir(dir.path())
            .arg(sip_addr(d))
            .args(["-sf", sf.to_str().unwrap()])
            .args(["-i", "127.0.0.1", "-mp", &media])
            .args(["-timeout", "30s", "-timeout_error", "-nostdin", "-trace_err", "-trace_logs"])
            .args(if std::env::var_os("SIPP_TRACE_MSG").is_some() { &["-trace_msg"][..] } else { &[] })
            .args(args)
            .output()
        else {
            panic!("sipp is not installed: install the `sip-tester` package (make test-deps does)");
        };
        let mut logs = String::from_utf8_lossy(&out.stderr).into_owned();
        for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".log") {
                logs.push_str(&format!("\n--- {name}\n{}", std::fs::read_to_string(entry.path()).unwrap_or_default()));
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let port_taken = logs.contains("errno = 98") || logs.contains("Address already in use");
        if out.status.success() || !port_taken || attempt == 2 {
            return (out.status.success(), logs);
        }
    }
    unreachable!("the loop returns")
}

/// A participant in a session with its token.
fn participant(d: &Daemon, c: &Client) -> (String, String, String) {
    common::session_with_participant(d, c)
}

fn uui(token: &str) -> String {
    format!("{token};encoding=jwt")
}

const SDP: &str = "      v=0
      o=user1 53655765 2353687637 IN IP4 [local_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=DIRECTION
";

fn invite(extra: &str, cseq: u32) -> String {
    format!(
        r#"  <send retrans="500">
    <![CDATA[
      INVITE sip:gw@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:gw@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: {cseq} INVITE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      User-to-User: [field0]
      [field1]
      {extra}
      Content-Type: application/sdp
      Content-Length: [len]

{sdp}
    ]]>
  </send>
"#,
        sdp = SDP.replace("DIRECTION", "sendrecv")
    )
}

fn in_dialog(method: &str, cseq: u32, headers: &str, body: &str) -> String {
    // No empty line may appear among the headers: it would end them.
    let mut extra = String::new();
    if !headers.is_empty() {
        extra.push_str(&format!("      {headers}\n"));
    }
    if !body.is_empty() {
        extra.push_str("      Content-Type: application/sdp\n");
    }
    format!(
        r#"  <send retrans="500">
    <![CDATA[
      {method} [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:gw@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} {method}
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      [routes]
      Max-Forwards: 70
{extra}      Content-Length: [len]

{body}
    ]]>
  </send>
"#
    )
}

fn ack(cseq: u32) -> String {
    format!(
        r#"  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:gw@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} ACK
      [routes]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"#
    )
}

/// ACK of a non-2xx final response: same branch as the INVITE (RFC 3261 §17.1.1.3).
const ACK_ERROR: &str = r#"  <send>
    <![CDATA[
      ACK sip:gw@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"#;

fn scenario(body: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"t\">\n{body}</scenario>\n")
}

/// A whole call: INVITE, 200, ACK, BYE. Responses are matched to their transaction: under
/// loss a retransmitted 200 of the INVITE must not pass for the BYE's.
fn call_scenario() -> String {
    scenario(&format!(
        "{}  <recv response=\"100\" optional=\"true\" response_txn=\"invite\"/>\n  <recv response=\"200\" rrs=\"true\" response_txn=\"invite\"/>\n{}  <pause milliseconds=\"100\"/>\n{}  <recv response=\"200\" response_txn=\"bye\"/>\n",
        invite("X-Case: call", 1).replacen("<send retrans=\"500\">", "<send retrans=\"500\" start_txn=\"invite\">", 1),
        ack(1).replacen("<send>", "<send ack_txn=\"invite\">", 1),
        in_dialog("BYE", 2, "", "").replacen("<send retrans=\"500\">", "<send retrans=\"500\" start_txn=\"bye\">", 1)
    ))
}

/// An INVITE refused with `status` and a Warning saying why.
fn refused_scenario(status: u16) -> String {
    scenario(&format!(
        "{}  <recv response=\"100\" optional=\"true\"/>\n  <recv response=\"{status}\">\n    <action>\n      <ereg regexp=\"[0-9]{{3}} interwork\" search_in=\"hdr\" header=\"Warning:\" check_it=\"true\" assign_to=\"w\"/>\n      <log message=\"[$w]\"/>\n    </action>\n  </recv>\n{ACK_ERROR}",
        invite("X-Case: refused", 1)
    ))
}

/// A call that waits for our BYE and answers it.
fn wait_bye_scenario() -> String {
    scenario(&format!(
        r#"{}  <recv response="100" optional="true"/>
  <recv response="200" rrs="true"/>
{}  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
"#,
        invite("X-Case: wait", 1),
        ack(1)
    ))
}

fn active_dialogs(d: &Daemon, c: &Client) -> u64 {
    let text = c.http.get(d.url("/metrics")).send().unwrap().text().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("interwork_sip_active_dialogs "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn a_valid_call_over_udp_and_over_tcp() {
    let d = Daemon::start_with(&[("INTERWORK_SIP_DEFAULT_MODE", "bridge")]);
    let c = Client::new();
    let (_, pid, token) = participant(&d, &c);
    let (ok, logs) = sipp(&d, &call_scenario(), &[&uui(&token), "X-Transport: udp"], &["-m", "3", "-l", "1"]);
    assert!(ok, "{logs}");
    let (ok, logs) =
        sipp(&d, &call_scenario(), &[&uui(&token), "X-Transport: tcp"], &["-t", "t1", "-m", "3", "-l", "1"]);
    assert!(ok, "{logs}");
    let metrics = c.http.get(d.url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains(r#"interwork_sip_invites_total{status="200",mode="bridge"} 6"#), "{metrics}");
    let p: Value = c.get(&d.api(&format!("/participants/{pid}"))).json().unwrap();
    assert_eq!(p["sessions"].as_array().unwrap().len(), 1, "bridge legs leave the participant in its session");
}

#[test]
fn ten_percent_loss_is_absorbed_by_retransmissions() {
    let d = Daemon::start_with(&[("INTERWORK_SIP_DEFAULT_MODE", "bridge")]);
    let c = Client::new();
    let (_, _, token) = participant(&d, &c);
    let (ok, logs) =
        sipp(&d, &call_scenario(), &[&uui(&token), "X-Case: loss"], &["-m", "20", "-l", "1", "-lost", "10"]);
    assert!(ok, "every call completes despite 10 % loss:\n{logs}");
}

#[test]
fn every_failure_row_is_answered_with_its_status_and_a_warning() {
    let d = Daemon::start_with(&[("INTERWORK_TOKENS_LEEWAY", "1s")]);
    let c = Client::new();
    let (_, pid, token) = participant(&d, &c);
    let lonely: Value = c.post(&d.api("/participants"), json!({"publishPermissions": []})).json().unwrap();
    let lonely_token = lonely["token"].as_str().unwrap().to_string();
    let ghost_token = {
        let out = Command::new(env!("CARGO_BIN_EXE_interwork"))
            .args(["token", "--participant", "ghost"])
            .env("INTERWORK_STATE_DIR", &d.state_dir)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let expired = {
        let out = Command::new(env!("CARGO_BIN_EXE_interwork"))
            .args(["token", "--participant", &pid, "--ttl", "1s"])
            .env("INTERWORK_STATE_DIR", &d.state_dir)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let mut forged = token.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    let cases: Vec<(u16, String, &str)> = vec![
        (403, "abc".to_string(), "X-Case: no jwt"),
        (403, format!("{token};encoding=base64"), "X-Case: not jwt encoded"),
        (403, uui(&forged), "X-Case: bad signature"),
        (404, uui(&ghost_token), "X-Case: unknown participant"),
        (404, uui(&lonely_token), "X-Case: not in a session"),
        (400, uui(&token), "X-Interconnect-Mode: relay"),
        (422, uui(&token), "Session-Expires: 10"),
        (420, uui(&token), "Require: 100rel"),
    ];
    for (status, field0, field1) in cases {
        let (ok, logs) = sipp(&d, &refused_scenario(status), &[&field0, field1], &["-m", "1"]);
        assert!(ok, "{field1}: expected {status}\n{logs}");
    }
    // An expired token (1 s lifetime, 1 s leeway).
    std::thread::sleep(Duration::from_millis(2100));
    let (ok, logs) = sipp(&d, &refused_scenario(403), &[&uui(&expired), "X-Case: expired"], &["-m", "1"]);
    assert!(ok, "expired token → 403\n{logs}");
    // No codec in common → 488.
    let g729 = refused_scenario(488)
        .replace("RTP/AVP 0 101", "RTP/AVP 18")
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000");
    let (ok, logs) = sipp(&d, &g729, &[&uui(&token), "X-Case: codec"], &["-m", "1"]);
    assert!(ok, "no common codec → 488\n{logs}");
    // No User-to-User at all → 403.
    let no_uui = refused_scenario(403).replace("      User-to-User: [field0]\n", "      X-None: [field0]\n");
    let (ok, logs) = sipp(&d, &no_uui, &["x", "X-Case: none"], &["-m", "1"]);
    assert!(ok, "no UUI → 403\n{logs}");
    assert_eq!(active_dialogs(&d, &c), 0, "no refused call is leaked");
}

#[test]
fn limits_and_trust_answer_503_and_403() {
    let d = Daemon::start_with(&[("INTERWORK_SIP_TRUSTED_PEERS", "10.0.0.0/8")]);
    let c = Client::new();
    let (_, _, token) = participant(&d, &c);
    let (ok, logs) = sipp(&d, &refused_scenario(403), &[&uui(&token), "X-Case: untrusted"], &["-m", "1"]);
    assert!(ok, "untrusted source → 403\n{logs}");
    let d = Daemon::start_with(&[("INTERWORK_SIP_INVITE_RATE", "1")]);
    let (_, _, token) = participant(&d, &c);
    let (ok, logs) = sipp(&d, &call_scenario(), &[&uui(&token), "X-Case: first"], &["-m", "1"]);
    assert!(ok, "{logs}");
    let (ok, logs) = sipp(&d, &refused_scenario(503), &[&uui(&token), "X-Case: rate"], &["-m", "1"]);
    assert!(ok, "over the INVITE rate → 503\n{logs}");
}

#[test]
fn a_second_live_leg_of_a_transfer_participant_is_busy() {
    let d = Daemon::start();
    let c = Client::new();
    let (_, _, token) = participant(&d, &c);
    let long_call = scenario(&format!(
        "{}  <recv response=\"100\" optional=\"true\"/>\n  <recv response=\"200\" rrs=\"true\"/>\n{}  <pause milliseconds=\"4000\"/>\n{}  <recv response=\"200\"/>\n",
        invite("X-Case: long", 1),
        ack(1),
        in_dialog("BYE", 2, "", "")
    ));
    std::thread::scope(|s| {
        let first = s.spawn(|| sipp(&d, &long_call, &[&uui(&token), "X-Case: first"], &["-m", "1"]));
        wait_for("the first leg", || active_dialogs(&d, &c) == 1);
        let (ok, logs) = sipp(&d, &refused_scenario(486), &[&uui(&token), "X-Case: second"], &["-m", "1"]);
        assert!(ok, "second leg → 486\n{logs}");
        let (ok, logs) = first.join().unwrap();
        assert!(ok, "{logs}");
    });
}

#[test]
fn cancel_before_answer_gets_487() {
    let d = Daemon::start_with(&[("INTERWORK_SIP_ANSWER_DELAY", "3s")]);
    let c = Client::new();
    let (_, _, token) = participant(&d, &c);
    let cancel = scenario(&format!(
        r#"{}  <recv response="100" optional="true"/>
  <recv response="180"/>
  <send>
    <![CDATA[
      CANCEL sip:gw@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      [last_From:]
      To: <sip:gw@[remote_ip]:[remote_port]>
      [last_Call-ID:]
      CSeq: 1 CANCEL
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
  <recv response="487"/>
{ACK_ERROR}"#,
        invite("X-Case: cancel", 1)
    ));
    let (ok, logs) = sipp(&d, &cancel, &[&uui(&token), "X-Case: cancel"], &["-m", "1"]);
    assert!(ok, "{logs}");
    assert_eq!(active_dialogs(&d, &c), 0);
}

#[test]
fn hold_and_resume_by_reinvite_follow_rfc_3264() {
    let d = Daemon::start();
    let c = Client::new();
    let (_, _, token) = participant(&d, &c);
    let reinvite = |cseq: u32, offered: &str, answered: &str| {
        format!(
            "{}  <recv response=\"100\" optional=\"true\"/>\n  <recv response=\"200\">\n    <action>\n      <ereg regexp=\"a={answered}\" search_in=\"body\" check_it=\"true\" assign_to=\"d{cseq}\"/>\n      <log message=\"[$d{cseq}]\"/>\n    </action>\n  </recv>\n{}",
            in_dialog("INVITE", cseq, "", &SDP.replace("DIRECTION", offered)),
            ack(cseq)
        )
    };
    let hold = scenario(&format!(
        "{}  <recv response=\"100\" optional=\"true\"/>\n  <recv response=\"200\" rrs=\"true\"/>\n{}{}{}{}{}  <recv response=\"200\"/>\n",
        invite("X-Case: hold", 1),
        ack(1),
        reinvite(2, "sendonly", "recvonly"),
        reinvite(3, "inactive", "inactive"),
        reinvite(4, "sendrecv", "sendrecv"),
        in_dialog("BYE", 5, "", ""),
    ));
    let (ok, logs) = sipp(&d, &hold, &[&uui(&token), "X-Case: hold"], &["-m", "1"]);
    assert!(ok, "{logs}");
}

#[test]
fn options_are_answered_200_with_allow() {
    let d = Daemon::start();
    let options = scenario(
        r#"  <send>
    <![CDATA[
      OPTIONS sip:gw@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]o[call_number]
      To: <sip:gw@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 OPTIONS
      Max-Forwards: 70
      X-Field: [field0] [field1]
      Content-Length: 0

    ]]>
  </send>
  <recv response="200">
    <action>
      <ereg regexp="INVITE" search_in="hdr" header="Allow:" check_it="true" assign_to="allow"/>
      <log message="[$allow]"/>
    </action>
  </recv>
"#,
    );
    let (ok, logs) = sipp(&d, &options, &["a", "b"], &["-m", "3"]);
    assert!(ok, "{logs}");
}

#[test]
fn session_refresh_by_update_keeps_the_call() {
    let d = Daemon::start();
    let c = Client::new();
    let (_, _, token) = participant(&d, &c);
    let refresh = scenario(&format!(
        "{}  <recv response=\"100\" optional=\"true\"/>\n  <recv response=\"200\" rrs=\"true\">\n    <action>\n      <ereg regexp=\"90;refresher=uac\" search_in=\"hdr\" header=\"Session-Expires:\" check_it=\"true\" assign_to=\"se\"/>\n      <log message=\"[$se]\"/>\n    </action>\n  </recv>\n{}{}  <recv response=\"200\">\n    <action>\n      <ereg regexp=\"90\" search_in=\"hdr\" header=\"Session-Expires:\" check_it=\"true\" assign_to=\"se2\"/>\n      <log message=\"[$se2]\"/>\n    </action>\n  </recv>\n{}  <recv response=\"200\"/>\n",
        invite("Supported: timer\n      Session-Expires: 90;refresher=uac", 1),
        ack(1),
        in_dialog("UPDATE", 2, "Session-Expires: 90;refresher=uac\n      Supported: timer", ""),
        in_dialog("BYE", 3, "", ""),
    ));
    let (ok, logs) = sipp(&d, &refresh, &[&uui(&token), "X-Case: refresh"], &["-m", "1"]);
    assert!(ok, "{logs}");
}

#[test]
fn the_uui_list_form_finds_the_token() {
    let d = Daemon::start();
    let c = Client::new();
    let (_, _, token) = participant(&d, &c);
    let list = format!("MTIzNDU2;encoding=base64,{token};encoding=jwt;purpose=interwork");
    let (ok, logs) = sipp(&d, &call_scenario(), &[&list, "X-Case: list"], &["-m", "1"]);
    assert!(ok, "{logs}");
}

#[test]
fn removal_through_the_api_sends_bye_and_sip_bye_removes_the_participant() {
    let d = Daemon::start();
    let c = Client::new();
    let (sid, pid, token) = participant(&d, &c);
    let wait_bye = wait_bye_scenario();
    std::thread::scope(|s| {
        let call = s.spawn(|| sipp(&d, &wait_bye, &[&uui(&token), "X-Case: wait"], &["-m", "1"]));
        wait_for("the leg", || active_dialogs(&d, &c) == 1);
        assert_eq!(c.delete(&d.api(&format!("/sessions/{sid}/participants/{pid}"))).status().as_u16(), 204);
        let (ok, logs) = call.join().unwrap();
        assert!(ok, "the transfer leg got BYE:\n{logs}");
    });
    wait_for("the dialog to end", || active_dialogs(&d, &c) == 0);

    // And the other way: BYE from SIP removes a transfer participant from its session.
    let r = c.put(&d.api(&format!("/sessions/{sid}/participants/{pid}")), json!({"sessionId": sid}));
    assert_eq!(r.status().as_u16(), 204);
    let (ok, logs) = sipp(&d, &call_scenario(), &[&uui(&token), "X-Case: bye"], &["-m", "1"]);
    assert!(ok, "{logs}");
    wait_for("the participant to leave", || {
        let p: Value = c.get(&d.api(&format!("/participants/{pid}"))).json().unwrap();
        p["sessions"] == json!([])
    });
}

#[test]
fn a_leg_whose_rtp_stops_gets_bye() {
    let d = Daemon::start_with(&[("INTERWORK_MEDIA_RTP_TIMEOUT", "1s")]);
    let c = Client::new();
    let (_, _, token) = participant(&d, &c);
    let (ok, logs) = sipp(&d, &wait_bye_scenario(), &[&uui(&token), "X-Case: silent"], &["-m", "1"]);
    assert!(ok, "the silent leg got BYE:\n{logs}");
}

#[test]
fn sipp_is_the_peer_here() {
    // A guard against running the suite without the peer: the others would fail less clearly.
    assert!(Path::new("/usr/bin/sipp").exists(), "install sip-tester (make test-deps does)");
}
