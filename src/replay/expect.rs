//! The expectations of a capture: a small TOML file beside it (`capture.pcap` →
//! `capture.toml`), and the comparison of a replay's outcome with it.
//!
//! ```toml
//! [setup]
//! participants = "fresh"      # fresh (default) | captured | deleted | existing
//!
//! [[call]]                    # the calls in capture order; `index = 2` to pick one
//! [[call.request]]
//! method = "INVITE"
//! status = 200
//! headers = { "Content-Type" = "application/sdp" }
//! [call.audio]
//! tone_hz = 440.0             # the gateway's audio toward this call, decoded
//! tolerance_hz = 5.0
//! min_dbfs = -30.0
//! max_dbfs = -3.0
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything expected of one capture.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// What the capture needs of the gateway's configuration.
    #[serde(default)]
    pub gateway: Gateway,
    /// How the gateway is prepared.
    #[serde(default)]
    pub setup: Setup,
    /// Per call.
    #[serde(default, rename = "call")]
    pub calls: Vec<CallExpect>,
}

/// What a capture needs of the gateway's configuration. The replay cannot change a running
/// gateway: the suite (`tests/replay_suite.rs`) starts a daemon so configured, and an operator
/// replays such a capture against a gateway configured the same way.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// `sip.answer_delay`, e.g. "2s": the gateway rings this long before answering, so that a
    /// captured CANCEL meets a ringing INVITE.
    #[serde(default)]
    pub answer_delay: Option<String>,
}

/// How the gateway is prepared before the replay.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// What to do with the participants the captured tokens name.
    #[serde(default)]
    pub participants: ParticipantPolicy,
    /// `X-Interconnect-Mode` to put on every INVITE (e.g. "conference"), replacing any captured.
    #[serde(default)]
    pub mode: Option<String>,
}

/// What to do with the participants named in the captured tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParticipantPolicy {
    /// One fresh session; a fresh participant per captured one, subscribed to the session; its
    /// token re-minted.
    #[default]
    Fresh,
    /// Keep the captured tokens as they are (a bad or expired token stays so).
    Captured,
    /// A validly signed token for a participant that was deleted (the "unknown participant"
    /// case).
    Deleted,
    /// The captured participants exist on this gateway: keep them, re-mint only the tokens that
    /// have expired (same `sub` and `sid`), with the gateway's key.
    Existing,
}

/// What one call must see.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallExpect {
    /// The call's number in capture order (1-based); default: this entry's position.
    #[serde(default)]
    pub index: Option<usize>,
    /// Final responses to the client's requests.
    #[serde(default, rename = "request")]
    pub requests: Vec<RequestExpect>,
    /// The audio the gateway sent to this call.
    #[serde(default)]
    pub audio: Option<AudioExpect>,
}

/// The final response to one of the client's requests.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestExpect {
    /// The request's method.
    pub method: String,
    /// Its CSeq number; default: the first request with this method not yet matched.
    #[serde(default)]
    pub cseq: Option<u32>,
    /// The final status.
    pub status: u16,
    /// Headers the response must carry; the value must occur in the header's value
    /// (case-insensitive), `""` only asks for presence.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The decoded audio the gateway sent to the call.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioExpect {
    /// Dominant frequency.
    #[serde(default)]
    pub tone_hz: Option<f64>,
    /// Allowed error of `tone_hz`.
    #[serde(default = "default_tolerance")]
    pub tolerance_hz: f64,
    /// Lowest RMS level, dBFS.
    #[serde(default)]
    pub min_dbfs: Option<f64>,
    /// Highest RMS level, dBFS.
    #[serde(default)]
    pub max_dbfs: Option<f64>,
    /// Audio to ignore at the start (the mixer and jitter buffers filling).
    #[serde(default = "default_skip")]
    pub skip_seconds: f64,
    /// Least audio that must arrive (after `skip_seconds`).
    #[serde(default = "default_min_seconds")]
    pub min_seconds: f64,
    /// A mono 16-bit WAV to compare with (after aligning), relative to the expectations file.
    #[serde(default)]
    pub reference_wav: Option<PathBuf>,
    /// Least SNR against `reference_wav`.
    #[serde(default)]
    pub min_snr_db: Option<f64>,
    /// RFC 4733 digits that must arrive, in order.
    #[serde(default)]
    pub digits: Option<String>,
}

fn default_tolerance() -> f64 {
    5.0
}
fn default_skip() -> f64 {
    1.0
}
fn default_min_seconds() -> f64 {
    0.5
}

/// Why expectations cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ExpectError {
    /// The file cannot be read.
    #[error("cannot read the expectations {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML for the model (unknown keys are refused).
    #[error("bad expectations {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with the line.
        message: String,
    },
}

/// Reads and checks an expectations file.
pub fn load(path: &Path) -> Result<Expectations, ExpectError> {
    let text = std::fs::read_to_string(path).map_err(|source| ExpectError::Read { path: path.into(), source })?;
    parse(&text).map_err(|message| ExpectError::Parse { path: path.into(), message })
}

/// Parses expectations text.
pub fn parse(text: &str) -> Result<Expectations, String> {
    let e: Expectations = toml::from_str(text).map_err(|e| e.to_string())?;
    if let Some(delay) = &e.gateway.answer_delay {
        humantime::parse_duration(delay).map_err(|err| format!("gateway.answer_delay {delay:?}: {err}"))?;
    }
    Ok(e)
}

/// A final response as the replay saw it: status, reason phrase, headers in order.
pub type FinalResponse = (u16, String, Vec<(String, String)>);

/// What the replay saw of one client request.
#[derive(Clone, Debug)]
pub struct RequestOutcome {
    /// Its method.
    pub method: String,
    /// Its CSeq number.
    pub cseq: Option<u32>,
    /// The final response.
    pub response: Option<FinalResponse>,
    /// Why there is none (not sent, no answer in time, transport error).
    pub note: Option<String>,
}

/// Compares requests with what was expected; one line per difference.
pub fn check_requests(expected: &[RequestExpect], outcomes: &[RequestOutcome]) -> Vec<String> {
    let mut failures = Vec::new();
    let mut used = vec![false; outcomes.len()];
    for e in expected {
        let found = outcomes.iter().enumerate().position(|(i, o)| {
            !used[i] && o.method.eq_ignore_ascii_case(&e.method) && e.cseq.is_none_or(|c| o.cseq == Some(c))
        });
        let what = match e.cseq {
            Some(c) => format!("{} (CSeq {c})", e.method),
            None => e.method.clone(),
        };
        let Some(i) = found else {
            failures.push(format!("{what}: expected {}, but the capture has no such request", e.status));
            continue;
        };
        used[i] = true;
        let Some((status, reason, headers)) = &outcomes[i].response else {
            let why = outcomes[i].note.as_deref().unwrap_or("no final response");
            failures.push(format!("{what}: expected {}, got none ({why})", e.status));
            continue;
        };
        if *status != e.status {
            failures.push(format!("{what}: expected {}, got {status} {reason}", e.status));
        }
        for (name, want) in &e.headers {
            let values: Vec<&str> =
                headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect();
            if values.is_empty() {
                failures.push(format!("{what}: the {status} has no {name} header"));
            } else if !values.iter().any(|v| v.to_ascii_lowercase().contains(&want.to_ascii_lowercase())) {
                failures.push(format!("{what}: {name} is {:?}, expected it to contain {want:?}", values.join(", ")));
            }
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses() {
        let e = parse(
            r#"
            [setup]
            participants = "captured"
            [[call]]
            [[call.request]]
            method = "INVITE"
            status = 403
            headers = { Warning = "" }
            [call.audio]
            tone_hz = 440.0
            "#,
        )
        .unwrap();
        assert_eq!(e.setup.participants, ParticipantPolicy::Captured);
        assert_eq!(e.calls[0].requests[0].status, 403);
        assert_eq!(e.calls[0].audio.as_ref().unwrap().tolerance_hz, 5.0);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = parse("[[call]]\n[[call.request]]\nmethod = \"INVITE\"\nstatus = 200\nstatsu = 1\n").unwrap_err();
        assert!(err.contains("statsu"), "{err}");
    }

    #[test]
    fn differences_are_named() {
        let outcome = |status: u16| RequestOutcome {
            method: "INVITE".into(),
            cseq: Some(1),
            response: Some((status, "X".into(), vec![("Content-Type".into(), "application/sdp".into())])),
            note: None,
        };
        let expected = parse("[[call]]\n[[call.request]]\nmethod = \"INVITE\"\nstatus = 404\n").unwrap();
        let failures = check_requests(&expected.calls[0].requests, &[outcome(403)]);
        assert_eq!(failures, ["INVITE: expected 404, got 403 X"]);
        let expected = parse(
            "[[call]]\n[[call.request]]\nmethod = \"INVITE\"\nstatus = 200\nheaders = { \"content-type\" = \"application/SDP\" }\n",
        )
        .unwrap();
        assert!(check_requests(&expected.calls[0].requests, &[outcome(200)]).is_empty());
        let none =
            RequestOutcome { method: "BYE".into(), cseq: Some(2), response: None, note: Some("no answer".into()) };
        let expected = parse("[[call]]\n[[call.request]]\nmethod = \"BYE\"\nstatus = 200\n").unwrap();
        assert_eq!(check_requests(&expected.calls[0].requests, &[none]), ["BYE: expected 200, got none (no answer)"]);
    }
}
