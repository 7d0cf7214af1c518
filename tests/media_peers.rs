//! The media bridge against real third-party peers, judged by the audio itself, each test in
//! a network namespace with only `lo` alongside headless Chromium (whose fake microphone
//! plays 440 Hz) in the same session as the SIP call. In every test the page hears the SIP
//! peer's 1 kHz (±15 Hz, the analyser's bin) on the SIP participant's stream at the level the
//! peer sends (±3 dB), and the SIP side gets the microphone's 440 Hz ±2 Hz at the level of the
//! page's own processed microphone (±3 dB; Chromium's noise suppression lowers a steady sine):
//!
//! - sipp (Debian `sip-tester`) calls with a PCMU offer and plays a 1 kHz tone from a pcap the
//!   test writes (`play_pcap_audio`); what the gateway sends to sipp's media port, captured by
//!   dumpcap and read by tshark, is one RTP stream with no gap that decodes (G.711) to 440 Hz.
//!   The gateway ends the call (the participant removed) and sipp answers its BYE.
//! - The same with PCMA (sipp offers PCMA only).
//! - AMR-WB octet-aligned over SRTP-SDES (AES_CM_128_HMAC_SHA1_80) with GStreamer as the media
//!   peer (the test's own SIP UA signals, offering `octet-align=1` and the key GStreamer's
//!   `srtpenc` sends with): `voamrwbenc`/`rtpamrpay` reach the page, and GStreamer's `srtpdec`,
//!   `rtpamrdepay` and `amrwbdec` decode every captured packet of the gateway's to 440 Hz.
//! - tshark dissects the gateway's bandwidth-efficient AMR-WB (over SRTP, decrypted by the test
//!   with the answer's key into a capture of plain RTP; `mode-set=0,1,2`):
//!   no malformed or flagged packet, one frame per packet, all of mode 2 (the highest offered),
//!   no mode request; read as octet-aligned the same capture is flagged, packet by packet, so
//!   the check can fail. The captured frames decode (codecs crate) to 440 Hz.
//!
//! Needs root (for `unshare -n` and sipp's raw sockets), chromium, chromium-driver, sox,
//! sip-tester, tshark (dumpcap) and GStreamer (tools, plugins base, good, bad, ugly), all in
//! deps/test-packages.txt. Without root a missing tool skips the test with a message; as
//! root (CI) it fails.

#[path = "support/chrome.rs"]
mod chrome;
mod common;
#[path = "support/peers.rs"]
mod peers;
#[path = "support/sip_ua.rs"]
mod sip_ua;

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use codecs::amrwb::{AmrWbDecoder, FRAME_SAMPLES};
use codecs::g711::{self, Law};
use codecs::pcm::analysis::{dominant_frequency, rms_dbfs, tone};
use codecs::rfc4867::{Depacketizer, PacketFrames, PayloadConfig};
use common::{Client, Daemon};
use peers::{Capture, Proc, Tool};
use serde_json::json;
use sip_ua::SipUa;

/// What the SIP side sends.
const SIP_TONE: f64 = 1000.0;
/// The page's fake microphone.
const MIC_TONE: u32 = 440;
/// Bound of every wait for audio.
const AUDIO_LIMIT: Duration = Duration::from_secs(30);
/// Gateway packets captured per test, 20 ms each: the microphone's level settles within the
/// first 3 s of the call (the browser's audio processing), and the last 2 s are judged.
const CAPTURED: u32 = 400;

const BROWSER: [Tool; 3] = [
    Tool { path: chrome::CHROMIUM, package: "chromium" },
    Tool { path: chrome::CHROMEDRIVER, package: "chromium-driver" },
    Tool { path: "/usr/bin/sox", package: "sox" },
];

/// Checks the test's tools (and GStreamer elements) before it enters its namespace; true in
/// the re-executed test process that runs the body there.
fn runnable(test: &str, tools: &[Tool], gst_elements: &[(&str, &str)]) -> bool {
    let all: Vec<Tool> = BROWSER.into_iter().chain(tools.iter().copied()).collect();
    peers::have_tools(test, &all) && peers::have_gst_elements(test, gst_elements) && chrome::in_netns(test)
}

/// A daemon, a session with a browser participant (publishing its 440 Hz microphone, the page
/// connected) and a SIP participant for the peer to call as.
struct Scene {
    d: Daemon,
    c: Client,
    sid: String,
    sip_pid: String,
    sip_token: String,
    page: chrome::Browser,
    _driver: chrome::Driver,
    dir: tempfile::TempDir,
}

impl Scene {
    fn new() -> Self {
        let d = Daemon::start();
        let c = Client::new();
        let s: serde_json::Value = c.post(&d.api("/sessions"), json!({})).json().unwrap();
        let sid = s["id"].as_str().unwrap().to_string();
        let (_, web_token) = common::joined_participant(&d, &c, &sid);
        let (sip_pid, sip_token) = common::joined_participant(&d, &c, &sid);
        let dir = tempfile::tempdir().unwrap();
        let mut driver = chrome::Driver::start();
        let wav = chrome::tone_wav(dir.path(), MIC_TONE);
        let page = driver.browser(&wav);
        page.load_sdk(&d.url(""));
        assert_eq!(page.connect(&web_token), None, "connect");
        page.publish().expect("publish");
        // Chromium's capture processing (getUserMedia's defaults: noise suppression, AGC)
        // brings the steady sine down by some 15 dB over its first seconds, so the level the
        // SIP side should hear is the processed microphone's, measured here in the page from
        // a second capture of the same fake device.
        page.eval(
            "window.micDb = null; navigator.mediaDevices.getUserMedia({audio: true}).then(s => { \
             const an = audioCtx.createAnalyser(); an.fftSize = 2048; audioCtx.createMediaStreamSource(s).connect(an); \
             const d = new Float32Array(an.fftSize); setInterval(() => { an.getFloatTimeDomainData(d); \
             let e = 0; for (const x of d) e += x * x; micDb = 10 * Math.log10(e / d.length); }, 200); }); return true;",
        );
        Self { d, c, sid, sip_pid, sip_token, page, _driver: driver, dir }
    }

    /// Waits until the page hears the SIP tone from the SIP participant's stream, then until
    /// its level there is within 3 dB of `sent_db` (the RMS dBFS the peer sends): the first
    /// readings after the stream starts are low while the analyser's window fills.
    fn page_hears_sip(&self, sent_db: f64) {
        let endpoint = self.page.wait_for_tone(SIP_TONE, AUDIO_LIMIT);
        assert_eq!(self.page.eval(&format!("return t.streams[{endpoint:?}].participantId")), json!(self.sip_pid));
        let script = format!(
            "const an = t.streams[{endpoint:?}].an; const d = new Float32Array(an.fftSize); \
             an.getFloatTimeDomainData(d); let e = 0; for (const x of d) e += x * x; \
             return {{hz: dominant({endpoint:?}).hz, db: 10 * Math.log10(e / d.length)}};"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.page.eval(&script);
            let (hz, db) = (v["hz"].as_f64().unwrap_or(0.0), v["db"].as_f64().unwrap_or(f64::NEG_INFINITY));
            if (hz - SIP_TONE).abs() < 15.0 && (db - sent_db).abs() <= 3.0 {
                eprintln!("the page hears {hz:.1} Hz at {db:.1} dBFS; the peer sends {sent_db:.1} dBFS");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the page hears {hz:.1} Hz at {db:.1} dBFS, not {SIP_TONE} Hz at {sent_db:.1} dBFS ±3 dB"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The page's processed microphone level now, in dBFS (RMS, full-scale sine -3).
    fn mic_level(&self) -> f64 {
        let v = self.page.wait_for("the microphone meter", Duration::from_secs(10), "return micDb");
        // WebAudio's full scale is 1.0 for a peak: its RMS of a full-scale sine is -3 dB, as
        // rms_dbfs reads it.
        v.as_f64().unwrap()
    }

    /// Removing the SIP participant from the session makes the gateway send BYE (transfer).
    fn hang_up_from_the_gateway(&self) {
        let r = self.c.delete(&self.d.api(&format!("/sessions/{}/participants/{}", self.sid, self.sip_pid)));
        assert_eq!(r.status().as_u16(), 204, "{}", r.text().unwrap_or_default());
    }
}

/// Checks that the last 2 s of `pcm` are the microphone's 440 Hz at the level the page's own
/// processed microphone has (`mic_db`).
fn assert_hears_mic(what: &str, pcm: &[i16], rate: u32, mic_db: f64) {
    let tail = &pcm[pcm.len().saturating_sub(2 * rate as usize)..];
    assert!(tail.len() >= 2 * rate as usize, "{what}: only {} samples", pcm.len());
    let (hz, level) = (dominant_frequency(tail, rate), rms_dbfs(tail));
    eprintln!("{what}: the SIP side hears {hz:.2} Hz at {level:.1} dBFS; the page's microphone is at {mic_db:.1} dBFS");
    assert!((hz - f64::from(MIC_TONE)).abs() <= 2.0, "{what}: {hz:.2} Hz, not {MIC_TONE}");
    assert!((-45.0..=-3.0).contains(&level), "{what}: {hz:.1} Hz at {level:.1} dBFS");
    // Opus, the mix and the SIP codec carry the level through within a few dB.
    assert!((level - mic_db).abs() <= 3.0, "{what}: {level:.1} dBFS on SIP, {mic_db:.1} dBFS in the page");
}

/// Checks the gateway's stream: one payload type, one SSRC, consecutive sequence numbers.
fn assert_one_clean_stream(packets: &[peers::RtpPacket], pt: u8) {
    assert_eq!(packets.len(), CAPTURED as usize, "every captured datagram is RTP");
    assert!(packets.iter().all(|p| p.pt == pt && p.ssrc == packets[0].ssrc), "one stream of PT {pt}");
    for w in packets.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "no gap or reordering on loopback");
    }
}

/// A sipp UAC scenario: INVITE with the token in User-to-User and an offer of `codec`, ACK,
/// play the pcap, then wait for the gateway's BYE and answer it. The token goes straight into
/// the XML: it is base64url and dots, nothing XML or sipp would read.
fn sipp_scenario(token: &str, codec_pt: u8, codec_name: &str, pcap: &Path) -> String {
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="media_peers">
  <send retrans="500">
    <![CDATA[
      INVITE sip:gw@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:gw@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      User-to-User: {token};encoding=jwt
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 53655765 2353687637 IN IP4 [local_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP {codec_pt} 101
      a=rtpmap:{codec_pt} {codec_name}/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
      a=ptime:20
      a=sendrecv
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:gw@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      [routes]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop>
    <action>
      <exec play_pcap_audio="{pcap}"/>
    </action>
  </nop>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#,
        pcap = pcap.display()
    )
}

/// Starts sipp on `scenario` with a media port of its own, and the capture of what reaches it.
/// sipp binds its `-mp` port and the video port two above it only when it starts, so a port
/// found free can be taken by another process first; sipp then exits ("errno = 98") and is
/// started again on other ports, up to 4 times. Started means the gateway counted its INVITE
/// (`interwork_sip_invites_total`), or sipp ended first.
fn start_sipp(scene: &Scene, scenario: &Path) -> (Proc, Capture, u16) {
    let dir = scene.dir.path();
    let invites = || {
        let text = scene.c.get(&scene.d.url("/metrics")).text().unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("interwork_sip_invites_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = invites();
    for attempt in 1..=4 {
        let media_port = loop {
            let port = common::free_port();
            // The video port too (and both RTCP ports), for sipp's start.
            if port.is_multiple_of(2) && (1..=3).all(|k| std::net::UdpSocket::bind(("127.0.0.1", port + k)).is_ok()) {
                break port;
            }
        };
        let capture = Capture::start(dir, media_port, CAPTURED);
        let mut cmd = Command::new(peers::SIPP.path);
        cmd.current_dir(dir)
            .arg(scene.d.sip_addr().to_string())
            .arg("-sf")
            .arg(scenario)
            // sipp takes the next free SIP port itself; the media port is the capture's.
            .args(["-i", "127.0.0.1", "-mp", &media_port.to_string()])
            .args(["-m", "1", "-timeout", "50s", "-timeout_error", "-nostdin", "-trace_err"]);
        let mut sipp = Proc::spawn("sipp", cmd, &dir.join(format!("sipp-{attempt}.out")));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if invites() > before {
                return (sipp, capture, media_port);
            }
            if sipp.try_status().is_some() {
                let output = sipp.output();
                assert!(output.contains("errno = 98") && attempt < 4, "sipp ended before calling:\n{output}");
                eprintln!("sipp could not bind media port {media_port} (taken meanwhile); again on others");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "sipp sent no INVITE within 20 s:\n{}", sipp.output());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    unreachable!("the loop returns or fails")
}

/// sipp calls with G.711 `law` and plays a 1 kHz pcap; the page hears it, and the gateway's
/// G.711 to sipp's media port decodes to the microphone's 440 Hz.
fn sipp_g711_both_ways(law: Law) {
    let (pt, name) = match law {
        Law::Mu => (0u8, "PCMU"),
        Law::A => (8u8, "PCMA"),
    };
    let scene = Scene::new();
    let dir = scene.dir.path();

    // 12 s of a 1 kHz tone at -10 dBFS peak, longer than the page takes to hear it.
    let pcm = tone(8000, SIP_TONE, -10.0, 8000 * 12);
    let sent_db = rms_dbfs(&pcm);
    let payloads: Vec<Vec<u8>> = pcm
        .chunks(160)
        .map(|c| {
            let mut out = vec![0u8; 160];
            let n = g711::encode(law, c, &mut out).unwrap();
            out.truncate(n);
            out
        })
        .collect();
    let pcap = dir.join(format!("tone-1k-{name}.pcap"));
    peers::write_rtp_pcap(&pcap, pt, 160, &payloads);

    let scenario = dir.join("scenario.xml");
    std::fs::write(&scenario, sipp_scenario(&scene.sip_token, pt, name, &pcap)).unwrap();
    let (mut sipp, mut capture, media_port) = start_sipp(&scene, &scenario);

    scene.page_hears_sip(sent_db);
    capture.finish(AUDIO_LIMIT);
    let mic_db = scene.mic_level();
    scene.hang_up_from_the_gateway();
    let status = sipp.wait(Duration::from_secs(15));
    let errors = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("errors.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(status.success(), "sipp's call failed ({status}):\n{}\n{errors}", sipp.output());

    let packets = peers::rtp_packets(&capture.file, media_port);
    assert_one_clean_stream(&packets, pt);
    let mut decoded = Vec::new();
    for p in &packets {
        let mut out = vec![0i16; p.payload.len()];
        let n = g711::decode(law, &p.payload, &mut out).unwrap();
        decoded.extend(&out[..n]);
    }
    assert_hears_mic(name, &decoded, 8000, mic_db);
}

#[test]
fn sipp_pcmu_from_a_pcap_and_the_browser_hear_each_other() {
    let test = "sipp_pcmu_from_a_pcap_and_the_browser_hear_each_other";
    if !runnable(test, &[peers::SIPP, peers::DUMPCAP, peers::TSHARK], &[]) {
        return;
    }
    sipp_g711_both_ways(Law::Mu);
}

#[test]
fn sipp_pcma_from_a_pcap_and_the_browser_hear_each_other() {
    let test = "sipp_pcma_from_a_pcap_and_the_browser_hear_each_other";
    if !runnable(test, &[peers::SIPP, peers::DUMPCAP, peers::TSHARK], &[]) {
        return;
    }
    sipp_g711_both_ways(Law::A);
}

/// Our SDP offer of AMR-WB on plain RTP, `fmtp` its format parameters.
fn amrwb_offer(port: u16, proto: &str, fmtp: &str, extra: &str) -> String {
    format!(
        "v=0\r\no=- 4242 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} {proto} 96 101\r\na=rtpmap:96 AMR-WB/16000\r\na=fmtp:96 {fmtp}\r\n\
         a=rtpmap:101 telephone-event/16000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n{extra}a=sendrecv\r\n"
    )
}

/// One AMR-WB packet as tshark's AMR dissector read it.
#[derive(Debug)]
struct Dissected {
    cmr: String,
    ft: String,
    f: String,
    q: String,
    malformed: String,
    expert: String,
}

/// tshark's reading of the AMR-WB packets in `file` (RTP on `port`, PT 96) under `layout`,
/// the `amr.encoding.version` preference.
fn dissect_amrwb(file: &Path, port: u16, layout: &str) -> Vec<Dissected> {
    let text = peers::tshark(
        file,
        &[
            "-d",
            &format!("udp.port=={port},rtp"),
            "-d",
            "rtp.pt==96,amr_wb",
            "-o",
            &format!("amr.encoding.version:{layout}"),
            "-Y",
            "rtp",
            "-T",
            "fields",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=,",
            "-e",
            "amr.wb.cmr",
            "-e",
            "amr.wb.toc.ft",
            "-e",
            "amr.toc.f",
            "-e",
            "amr.toc.q",
            "-e",
            "_ws.malformed",
            "-e",
            "_ws.expert",
        ],
    );
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<String> = l.split('\t').map(str::to_string).collect();
            assert_eq!(f.len(), 6, "tshark line {l:?}");
            Dissected {
                cmr: f[0].clone(),
                ft: f[1].clone(),
                f: f[2].clone(),
                q: f[3].clone(),
                malformed: f[4].clone(),
                expert: f[5].clone(),
            }
        })
        .collect()
}

/// The gateway's bandwidth-efficient AMR-WB, read by a third party: tshark's AMR dissector
/// finds every frame well formed and of the highest mode our `mode-set` allowed, and the same
/// bytes read as octet-aligned are flagged, which shows the check can fail.
#[test]
fn tshark_dissects_our_bandwidth_efficient_amrwb_cleanly() {
    let test = "tshark_dissects_our_bandwidth_efficient_amrwb_cleanly";
    if !runnable(test, &[peers::DUMPCAP, peers::TSHARK], &[]) {
        return;
    }
    let scene = Scene::new();
    let dir = scene.dir.path();
    // Holds the port the offer names: no ICMP port-unreachable goes back to the gateway.
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = rtp.local_addr().unwrap().port();
    let mut capture = Capture::start(dir, port, CAPTURED);
    let mut key = [0u8; 30];
    interwork::ids::fill_random(&mut key);
    let crypto = format!(
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key)
    );
    let mut ua = SipUa::new(scene.d.sip_addr());
    let answer = ua.invite(&scene.sip_token, &amrwb_offer(port, "RTP/SAVP", "mode-set=0,1,2", &crypto));
    assert!(answer.contains("a=rtpmap:96 AMR-WB/16000") && answer.contains("RTP/SAVP"), "{answer}");
    assert!(!answer.contains("octet-align=1"), "a bandwidth-efficient answer: {answer}");
    let their_key = sip_ua::read_answer(&answer).1.expect("the answer's a=crypto");
    capture.finish(AUDIO_LIMIT);
    let mic_db = scene.mic_level();
    assert_eq!(ua.bye(), 200);

    // What went over the wire is SRTP: decrypt it with the answer's key (every packet must
    // authenticate) into a capture of the plain RTP, which tshark then reads.
    let keys = interwork::sip::sdp::SrtpKeys {
        suite: interwork::sip::sdp::SrtpSuite::AesCm128HmacSha1_80,
        tag: 1,
        remote_key: their_key,
        local_key: key.to_vec(),
    };
    let mut srtp = interwork::media::srtp::SrtpSession::new(&keys).unwrap();
    let mut plain = Vec::new();
    for datagram in peers::udp_payloads(&capture.file) {
        let mut out = vec![0u8; datagram.len()];
        let n = srtp.unprotect_rtp(&datagram, &mut out).expect("the gateway's SRTP authenticates");
        out.truncate(n);
        plain.push(out);
    }
    assert_eq!(plain.len(), CAPTURED as usize);
    let decrypted = dir.join("decrypted.pcap");
    peers::write_udp_pcap(&decrypted, port, &plain);
    let capture_file = decrypted;

    let be = dissect_amrwb(&capture_file, port, "RFC 3267 BW-efficient");
    assert_eq!(be.len(), CAPTURED as usize, "every captured datagram is RTP");
    for d in &be {
        // One 20 ms frame per packet (ptime 20): F = 0; mode 2 (12.65 kbit/s) is the highest of
        // mode-set=0,1,2; no mode request; a good frame; nothing malformed or flagged.
        assert_eq!(
            (d.cmr.as_str(), d.ft.as_str(), d.f.as_str(), d.q.as_str(), d.malformed.as_str(), d.expert.as_str()),
            ("15", "2", "0", "1", "", ""),
            "{d:?}"
        );
    }
    let oa = dissect_amrwb(&capture_file, port, "RFC 3267 octet aligned");
    assert_eq!(oa.len(), CAPTURED as usize);
    let flagged = oa.iter().filter(|d| !d.malformed.is_empty() || !d.expert.is_empty()).count();
    assert_eq!(flagged, oa.len(), "read as octet-aligned, every packet is flagged: {:?}", oa.first());

    // And the frames carry the microphone.
    let packets = peers::rtp_packets(&capture_file, port);
    assert_one_clean_stream(&packets, 96);
    let depacketizer = Depacketizer::new(PayloadConfig::bandwidth_efficient());
    let mut frames = PacketFrames::new();
    let mut decoder = AmrWbDecoder::new().unwrap();
    let mut pcm = [0i16; FRAME_SAMPLES];
    let mut decoded = Vec::new();
    for p in &packets {
        depacketizer.depacketize(&p.payload, &mut frames).unwrap();
        for f in frames.iter() {
            decoder.decode(f, &mut pcm).unwrap();
            decoded.extend(&pcm);
        }
    }
    assert_hears_mic("AMR-WB bandwidth-efficient", &decoded, 16_000, mic_db);
}

/// SRTP parameters as GStreamer's srtpenc and srtpdec name them, for AES_CM_128_HMAC_SHA1_80.
const GST_SRTP: [(&str, &str); 4] = [
    ("rtp-cipher", "aes-128-icm"),
    ("rtp-auth", "hmac-sha1-80"),
    ("rtcp-cipher", "aes-128-icm"),
    ("rtcp-auth", "hmac-sha1-80"),
];

/// GStreamer as the SIP call's media peer, AMR-WB octet-aligned over SRTP-SDES, the repo's UA
/// signalling: the page hears GStreamer's 1 kHz, and GStreamer decrypts and decodes what the
/// gateway sent it (captured on the way) to the microphone's 440 Hz.
#[test]
fn gstreamer_amrwb_octet_aligned_over_srtp_and_the_browser_hear_each_other() {
    let test = "gstreamer_amrwb_octet_aligned_over_srtp_and_the_browser_hear_each_other";
    let elements = [
        ("audiotestsrc", "gstreamer1.0-plugins-base"),
        ("audioconvert", "gstreamer1.0-plugins-base"),
        ("voamrwbenc", "gstreamer1.0-plugins-bad"),
        ("srtpenc", "gstreamer1.0-plugins-bad"),
        ("srtpdec", "gstreamer1.0-plugins-bad"),
        ("rtpamrpay", "gstreamer1.0-plugins-good"),
        ("rtpamrdepay", "gstreamer1.0-plugins-good"),
        ("udpsink", "gstreamer1.0-plugins-good"),
        ("udpsrc", "gstreamer1.0-plugins-good"),
        ("amrwbdec", "gstreamer1.0-plugins-ugly"),
    ];
    if !runnable(test, &[peers::DUMPCAP, peers::TSHARK, peers::GST_LAUNCH, peers::GST_INSPECT], &elements) {
        return;
    }
    let scene = Scene::new();
    let dir = scene.dir.path();
    // Our SDES master key and salt: GStreamer's srtpenc sends with it.
    let mut key = [0u8; 30];
    interwork::ids::fill_random(&mut key);
    // GStreamer binds this port to send from (symmetric RTP: the gateway answers to it).
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut capture = Capture::start(dir, port, CAPTURED);
    let crypto = format!(
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key)
    );
    let mut ua = SipUa::new(scene.d.sip_addr());
    let answer = ua.invite(&scene.sip_token, &amrwb_offer(port, "RTP/SAVP", "octet-align=1", &crypto));
    assert!(answer.contains("RTP/SAVP") && answer.contains("octet-align=1"), "an octet-aligned SRTP answer: {answer}");
    let (gateway, their_key) = sip_ua::read_answer(&answer);
    let their_key = their_key.expect("the answer's a=crypto");

    let mut cmd = Command::new(peers::GST_LAUNCH.path);
    cmd.args(["-q", "audiotestsrc", "is-live=true", "wave=sine", "freq=1000", "volume=0.3", "samplesperbuffer=320"])
        .args(["!", "audio/x-raw,format=S16LE,rate=16000,channels=1", "!", "voamrwbenc", "band-mode=8"])
        // One frame per packet, as the offer's ptime says.
        .args(["!", "rtpamrpay", "pt=96", "max-ptime=20000000", "!", "srtpenc"])
        // The key's hex in quotes: unquoted, gst-launch's parser does not read it as a buffer.
        .arg(format!("key=\"{}\"", peers::to_hex(&key)))
        .args(GST_SRTP.iter().map(|(k, v)| format!("{k}={v}")))
        .args(["!", "udpsink", "bind-address=127.0.0.1"])
        .arg(format!("bind-port={port}"))
        .arg(format!("host={}", gateway.ip()))
        .arg(format!("port={}", gateway.port()));
    let mut sender = Proc::spawn("gst-launch (sender)", cmd, &dir.join("gst-sender.log"));

    // audiotestsrc's sine at volume 0.3: -10.5 dBFS peak, -13.5 dBFS RMS.
    scene.page_hears_sip(20.0 * 0.3f64.log10() - 3.01);
    capture.finish(AUDIO_LIMIT);
    let mic_db = scene.mic_level();
    assert!(sender.try_status().is_none(), "GStreamer's sender stopped:\n{}", sender.output());
    sender.stop();
    assert_eq!(ua.bye(), 200);

    // srtpdec needs the SSRC in its caps: the first packet's (the header is in the clear).
    let packets = peers::rtp_packets(&capture.file, port);
    assert_one_clean_stream(&packets, 96);
    let mut caps = format!(
        "application/x-srtp,media=(string)audio,clock-rate=(int)16000,encoding-name=(string)AMR-WB,\
         encoding-params=(string)1,octet-align=(string)1,payload=(int)96,ssrc=(uint){},srtp-key=(buffer){}",
        packets[0].ssrc,
        peers::to_hex(&their_key)
    );
    for (k, v) in GST_SRTP {
        caps.push_str(&format!(",s{k}=(string){v}"));
    }
    // GStreamer decodes the captured datagrams replayed to its udpsrc. (Its pcapparse reading
    // the capture directly would be simpler, but srtpdec 1.22 passes pcapparse's buffers on
    // still encrypted.) Raw samples, not WAV: the file is complete without an EOS.
    let replay_port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let raw = dir.join("gateway-to-gstreamer.s16");
    let mut cmd = Command::new(peers::GST_LAUNCH.path);
    cmd.args(["udpsrc", "address=127.0.0.1"])
        .arg(format!("port={replay_port}"))
        .arg(format!("caps={caps}"))
        .args(["!", "srtpdec", "!", "rtpamrdepay", "!", "amrwbdec", "!", "audioconvert"])
        .args(["!", "audio/x-raw,format=S16LE,rate=16000,channels=1", "!", "filesink", "buffer-mode=unbuffered"])
        .arg(format!("location={}", raw.display()));
    let mut decoder = Proc::spawn("gst-launch (decoder)", cmd, &dir.join("gst-decoder.log"));
    peers::wait_udp_bound(replay_port, Duration::from_secs(15), &mut decoder);
    let datagrams = peers::udp_payloads(&capture.file);
    assert_eq!(datagrams.len(), packets.len());
    let replayer = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in &datagrams {
        replayer.send_to(d, ("127.0.0.1", replay_port)).unwrap();
        // Pacing, not synchronisation: hundreds of datagrams at once would overflow udpsrc's
        // socket buffer.
        std::thread::sleep(Duration::from_millis(2));
    }
    // Every packet decrypted and decoded: 320 samples (640 bytes) each.
    let want = datagrams.len() as u64 * 640;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::fs::metadata(&raw).map_or(0, |m| m.len()) < want {
        assert!(decoder.try_status().is_none(), "GStreamer's decoder stopped:\n{}", decoder.output());
        assert!(
            std::time::Instant::now() < deadline,
            "GStreamer decoded {} of {want} bytes:\n{}",
            std::fs::metadata(&raw).map_or(0, |m| m.len()),
            decoder.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    decoder.stop();
    let pcm: Vec<i16> =
        std::fs::read(&raw).unwrap().chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
    assert_eq!(pcm.len() as u64 * 2, want, "no more than one frame per packet either");
    assert_hears_mic("AMR-WB octet-aligned over SRTP, decoded by GStreamer", &pcm, 16_000, mic_db);
}
