//! The README's commands, run as written: the walk through the API, then the sipp call of
//! "Calling it over SIP" with `examples/call.xml`. The shell blocks are read from the README
//! itself, so the test breaks when they do. Only what a test must change is changed: the
//! daemon's ports (the README's are the embedded default's) and the path of the binary.
//!
//! The daemon starts as a newcomer's does: credentials generated into `./interwork-state/` of
//! the directory the commands run in. The call must end with sipp's BYE (not the gateway's
//! "no ACK" after 32 s) with sipp's audio received by the gateway.
//!
//! Needs root (sipp's `play_pcap_audio`), sipp, curl and python3.

mod common;

use std::process::Command;

use common::{Client, Daemon};

/// The shell blocks (```sh) of the README section headed `heading`.
fn shell_blocks(readme: &str, heading: &str) -> String {
    let start = readme.find(&format!("\n## {heading}\n")).unwrap_or_else(|| panic!("no section {heading}"));
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut script = String::new();
    let mut inside = false;
    for line in section.lines() {
        match (inside, line.trim()) {
            (false, "```sh") => inside = true,
            (true, "```") => inside = false,
            (true, _) => script.push_str(&format!("{line}\n")),
            _ => {}
        }
    }
    assert!(!script.is_empty(), "no shell block under {heading}");
    script
}

#[test]
fn the_readme_walk_through_and_sipp_call_run_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("interwork-state");
    // No configured credentials: generated on the first start, as for `make run`.
    let d = Daemon::start_with(&[
        ("INTERWORK_STATE_DIR", state.to_str().unwrap()),
        ("INTERWORK_ACCOUNTS_DEFAULT_USERNAME", ""),
        ("INTERWORK_ACCOUNTS_DEFAULT_PASSWORD", ""),
    ]);
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let script = format!(
        "set -euo pipefail\n{}\n{}",
        shell_blocks(&readme, "A walk through the API"),
        shell_blocks(&readme, "Calling it over SIP")
    )
    .replace("http://127.0.0.1:8080", &d.url(""))
    .replace("127.0.0.1:5060", &d.sip_addr().to_string())
    .replace("./target/release/interwork", env!("CARGO_BIN_EXE_interwork"))
    .replace("examples/call.xml", concat!(env!("CARGO_MANIFEST_DIR"), "/examples/call.xml"));
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("bash");
    let said = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the README's commands failed:\n{said}\n--- script\n{script}");
    // The walk-through's PUT answered 204 (printed after the participant's JSON), and the
    // UUI line carries a JWT.
    assert!(said.lines().any(|l| l.trim_end().ends_with("}204")), "{said}");
    assert!(said.contains("User-to-User: ey") && said.contains(";encoding=jwt"), "{said}");
    // The listing answered with a page.
    assert!(said.contains(r#""sessions":[{"#) && said.contains(r#""nextCursor":null"#), "{said}");
    // sipp's summary: one successful call, none failed.
    let count = |label: &str| -> Option<u64> {
        let line = said.lines().find(|l| l.trim_start().starts_with(label))?;
        line.split('|').nth(2)?.trim().parse().ok()
    };
    assert_eq!((count("Successful call"), count("Failed call")), (Some(1), Some(0)), "{said}");
    // The call ended by sipp's BYE, with sipp's 7 s of audio in it (the pcap's 236 packets).
    let metrics = Client::new().http.get(d.url("/metrics")).send().unwrap().text().unwrap();
    let value = |name: &str| -> f64 {
        metrics.lines().find_map(|l| l.strip_prefix(name)).map_or(0.0, |v| v.trim().parse().unwrap())
    };
    assert_eq!(value("interwork_sip_active_dialogs "), 0.0, "{metrics}");
    assert!(value("interwork_media_leg_total{kind=\"rtp_received\"} ") >= 230.0, "{metrics}");
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The relative link targets `[text](target)` of a Markdown text, outside code blocks and spans.
fn relative_links(markdown: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop code spans: a `](x)` inside backticks is not a link.
        let plain: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = rest[..end].trim();
            if !target.contains("://") && !target.starts_with("mailto:") && !target.is_empty() {
                links.push(target.to_string());
            }
            rest = &rest[end..];
        }
    }
    links
}

/// Every relative link of the README and of docs/ leads to a file of the repo (and, with a
/// `#fragment`, to one of its headings): a newcomer has the clone and nothing beside it.
#[test]
fn the_readme_and_docs_link_only_inside_the_repo() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).canonicalize().unwrap();
    let mut pages = vec![repo.join("README.md"), repo.join("codecs/README.md"), repo.join("pcaps/README.md")];
    let mut dirs = vec![repo.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                pages.push(path);
            }
        }
    }
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for link in relative_links(&text) {
            checked += 1;
            let (file, fragment) = link.split_once('#').unwrap_or((&link, ""));
            let target = if file.is_empty() { page.clone() } else { page.parent().unwrap().join(file) };
            let Ok(target) = target.canonicalize() else {
                broken.push(format!("{}: {link}: no such file", page.display()));
                continue;
            };
            if !target.starts_with(&repo) {
                broken.push(format!("{}: {link}: outside the repo", page.display()));
                continue;
            }
            if !fragment.is_empty() && target.extension().is_some_and(|e| e == "md") {
                let headings = std::fs::read_to_string(&target).unwrap();
                let found = headings
                    .lines()
                    .filter(|l| l.starts_with('#'))
                    .any(|l| anchor(l.trim_start_matches('#')) == fragment);
                if !found {
                    broken.push(format!("{}: {link}: no heading #{fragment}", page.display()));
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} links found: the reader is broken");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The README speaks to users: no tracker or internal design jargon.
#[test]
fn the_readme_has_no_internal_jargon() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for word in ["CONTRACT", "§", "the seed's", "seed 0", "issue ", "shared/design", "shared/research", "limits.md"] {
        let lines: Vec<&str> = readme.lines().filter(|l| l.contains(word)).collect();
        assert!(lines.is_empty(), "README says {word:?}: {lines:?}");
    }
}
