//! `interwork replay`: replays the client side of a captured call against a running gateway
//! and checks the expectations beside the capture.
//!
//! The path of a replay, one module each:
//! [`capture`] reads pcap/pcapng into UDP datagrams and TCP-framed SIP messages; [`script`]
//! finds the calls, their client side, their timing and RTP (sans-IO); [`setup`] prepares the
//! gateway through its API; [`rewrite`] turns captured messages into ones for this gateway
//! (pure); [`call`] is one call's client side as a state machine (sans-IO); [`player`] drives
//! it over sockets and timers; [`audio`] decodes and judges what came
//! back; [`expect`] reads the expectations and compares; [`probe`] first checks that a gateway
//! answers SIP at the target at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

pub mod audio;
pub mod call;
pub mod capture;
pub mod expect;
pub mod player;
pub mod probe;
pub mod rewrite;
pub mod script;
pub mod setup;

use crate::config::Config;
use player::{CallResult, PlayOptions};

/// What `interwork replay` was asked.
#[derive(Clone, Debug)]
pub struct ReplayArgs {
    /// The capture.
    pub pcap: PathBuf,
    /// The gateway's SIP address; default: the config's `sip.listen`.
    pub target: Option<SocketAddr>,
    /// The expectations; default: the capture's path with `.toml`.
    pub expect: Option<PathBuf>,
    /// Timing factor (1 = as captured).
    pub speed: f64,
    /// How long each request may wait for its final answer.
    pub timeout: Duration,
    /// The account the API calls use.
    pub account: String,
}

/// The outcome of one replay.
#[derive(Debug)]
pub struct Report {
    /// Human summary, a few lines per call.
    pub lines: Vec<String>,
    /// Every expectation held.
    pub passed: bool,
}

/// Replays `args.pcap` against the gateway that `config` describes.
pub async fn run(args: &ReplayArgs, config: &Config) -> anyhow::Result<Report> {
    let name = args.pcap.display().to_string();
    let bytes = std::fs::read(&args.pcap).with_context(|| format!("{name}: cannot read the capture"))?;
    let capture = capture::read(&bytes).with_context(|| format!("{name}: cannot read the capture"))?;
    let script = script::build(&capture).with_context(|| format!("{name}: nothing to replay"))?;
    let expect_path = args.expect.clone().unwrap_or_else(|| args.pcap.with_extension("toml"));
    let expectations = expect::load(&expect_path).with_context(|| format!("{name}: no usable expectations"))?;
    anyhow::ensure!(args.speed > 0.0 && args.speed.is_finite(), "--speed must be a positive number");

    let target = args.target.unwrap_or_else(|| loopback_if_unspecified(config.sip.listen.0));
    // A gateway that is not there is a replay that cannot run (exit 2), not a failed call.
    let wait = args.timeout.clamp(PROBE_MIN_WAIT, PROBE_MAX_WAIT);
    probe::options(target, wait).await.with_context(|| {
        format!("{name}: the gateway is not reachable (is it running, and is --target or sip.listen right?)")
    })?;
    let mut notes = settings_notes(&name, &expectations.gateway, config);
    let gateway = setup::Gateway::from_config(config, &args.account)?;
    let mut participants: Vec<String> = Vec::new();
    let tokens: Vec<String> = script.calls.iter().flat_map(|c| c.tokens.iter().cloned()).collect();
    for call in &script.calls {
        for p in &call.participants {
            if !participants.contains(p) {
                participants.push(p.clone());
            }
        }
    }
    let prepared = gateway
        .prepare(expectations.setup.participants, &participants, &tokens)
        .await
        .with_context(|| format!("{name}: cannot prepare the gateway at {}", gateway.base))?;

    let opts = PlayOptions { target, speed: args.speed, timeout: args.timeout, mode: expectations.setup.mode.clone() };
    // Every call shares one clock so that the capture's relative timing holds across calls.
    let start = tokio::time::Instant::now() + START_DELAY;
    let longest = script
        .calls
        .iter()
        .flat_map(|c| c.steps.iter().map(|s| s.at).chain(c.media.iter().map(|m| m.at)))
        .max()
        .unwrap_or_default();
    let steps = script.calls.iter().map(|c| c.steps.len()).max().unwrap_or(0) as u32;
    // Bound of the whole replay: the capture's length plus every request timing out once.
    let limit = longest.div_f64(args.speed) + args.timeout * (steps + 2) + Duration::from_secs(10);
    let mut tasks = Vec::new();
    for call in script.calls.iter() {
        let call = Arc::new(call.clone());
        tasks.push(tokio::spawn(player::play_call(call, prepared.tokens.clone(), opts.clone(), start)));
    }
    let mut results: Vec<Option<CallResult>> = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    for task in tasks {
        results.push(tokio::time::timeout_at(deadline, task).await.ok().and_then(Result::ok));
    }
    gateway.cleanup(&prepared).await;
    let mut report = judge(&name, &script, &results, &expectations, expect_path.parent().unwrap_or(Path::new(".")));
    notes.append(&mut report.lines);
    report.lines = notes;
    Ok(report)
}

/// Where the capture's `[gateway]` asks for settings that the gateway's config, as this replay
/// reads it (`--config`, else the embedded default and `INTERWORK_*`), does not have: the
/// replay cannot change a running gateway, so its expectations may fail for that reason alone.
fn settings_notes(name: &str, wanted: &expect::Gateway, config: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(text) = &wanted.answer_delay {
        let have = config.sip.answer_delay;
        match humantime::parse_duration(text) {
            Ok(want) if want == have => {}
            Ok(_) => notes.push(format!(
                "{name}: note: the capture asks the gateway for sip.answer_delay = \"{text}\"; the gateway's \
                 config (--config, else the embedded default) has \"{}\": expectations may fail for that reason",
                humantime::format_duration(have)
            )),
            Err(e) => notes.push(format!("{name}: note: [gateway] answer_delay \"{text}\" is not a duration: {e}")),
        }
    }
    notes
}

/// Compares each call with its expectations and writes the summary.
fn judge(
    name: &str,
    script: &script::Script,
    results: &[Option<CallResult>],
    expectations: &expect::Expectations,
    base: &Path,
) -> Report {
    let mut lines = Vec::new();
    let mut passed = true;
    for (i, e) in expectations.calls.iter().enumerate() {
        let index = e.index.unwrap_or(i + 1);
        if script.calls.iter().all(|c| c.index != index) {
            passed = false;
            lines.push(format!(
                "{name}: call {index}: FAILED: expected, but the capture has {} call(s)",
                script.calls.len()
            ));
        }
    }
    for (call, result) in script.calls.iter().zip(results) {
        let label = format!("{name}: call {} (Call-ID {})", call.index, call.call_id);
        let Some(result) = result else {
            passed = false;
            lines.push(format!("{label}: FAILED: the replay did not finish in time"));
            continue;
        };
        let expected =
            expectations.calls.iter().enumerate().find(|(i, e)| e.index.unwrap_or(i + 1) == call.index).map(|(_, e)| e);
        let mut failures = Vec::new();
        let mut audio_line = String::new();
        if let Some(e) = expected {
            failures.extend(expect::check_requests(&e.requests, &result.requests));
            if let Some(a) = &e.audio {
                match &result.audio {
                    Some(audio) => {
                        let (m, f) = audio::check(a, audio, base);
                        audio_line = format!(
                            "; heard {:.1} Hz at {:.1} dBFS for {:.1} s{}",
                            m.hz,
                            m.dbfs,
                            m.seconds,
                            if audio.digits.is_empty() { String::new() } else { format!(", digits {}", audio.digits) }
                        );
                        failures.extend(f);
                    }
                    None => failures.push("audio: no media was negotiated with the gateway".into()),
                }
            }
        }
        let exchanges: Vec<String> = result
            .requests
            .iter()
            .map(|r| match &r.response {
                Some((status, _, _)) => format!("{} → {status}", r.method),
                None if r.method == "ACK" => "ACK".to_string(),
                None => format!("{} → none", r.method),
            })
            .collect();
        let verdict = if failures.is_empty() { "ok" } else { "FAILED" };
        let unchecked = if expected.is_none() { " (no expectations)" } else { "" };
        lines.push(format!("{label}: {verdict}{unchecked}: {}{audio_line}", exchanges.join(", ")));
        for f in &failures {
            lines.push(format!("  {label}: {f}"));
        }
        for n in &result.notes {
            lines.push(format!("  note: {n}"));
        }
        passed &= failures.is_empty();
    }
    Report { lines, passed }
}

fn loopback_if_unspecified(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}

/// How long the reachability probe waits: `--timeout`, within these bounds.
const PROBE_MIN_WAIT: Duration = Duration::from_secs(2);
const PROBE_MAX_WAIT: Duration = Duration::from_secs(8);

/// Time to set up every call's sockets before the capture's clock starts.
const START_DELAY: Duration = Duration::from_millis(100);
