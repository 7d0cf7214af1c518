//! The `interwork` command (CONTRACT §1): run the daemon, check a config, mint a token, replay a
//! capture.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use interwork::app::{self, Daemon};
use interwork::config::{Config, InterconnectMode, ProcessEnv};

/// Exit status for a bad config or command line (sysexits.h EX_USAGE).
const EX_USAGE: u8 = 64;

/// Exit status of a replay that could not run (bad capture, unreachable API), apart from 1 for
/// failed expectations.
const REPLAY_ERROR: u8 = 2;

#[derive(Parser)]
#[command(name = "interwork", version, about = "SIP to WebRTC interworking gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (on the embedded default when no config file is given).
    Run {
        /// TOML config file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Check a config file; print each problem with its key; exit non-zero on any.
    CheckConfig {
        /// TOML config file.
        file: PathBuf,
    },
    /// Mint a participant token with the node's key.
    Token {
        /// Participant id (the token's `sub`).
        #[arg(long)]
        participant: String,
        /// Session id (the token's `sid`).
        #[arg(long)]
        session: Option<String>,
        /// Lifetime, e.g. 1h or 30m (default: tokens.ttl).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// Interconnect mode claim.
        #[arg(long, value_parser = parse_mode)]
        mode: Option<InterconnectMode>,
        /// TOML config file (for the state directory and signing key).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Mint without asking the running daemon whether the participant exists.
        #[arg(long)]
        no_check: bool,
    },
    /// Replay the client side of a captured call against a running gateway and check the
    /// expectations; exit 0 when all hold, 1 when one fails, 2 when the replay cannot run.
    Replay {
        /// pcap or pcapng capture.
        pcap: PathBuf,
        /// The gateway's SIP address (default: the config's sip.listen).
        #[arg(long, value_name = "HOST:PORT")]
        target: Option<std::net::SocketAddr>,
        /// Expectations (default: the capture's path with extension .toml).
        #[arg(long, value_name = "FILE")]
        expect: Option<PathBuf>,
        /// Play N times faster than captured.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// How long a request may wait for its final answer, e.g. 10s.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// The gateway's config file (HTTP address, account credentials, state with the token key).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The account whose API the replay uses to set up participants.
        #[arg(long, default_value = "default")]
        account: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Pick rustls's crypto provider before any TLS is used, in case a dependency builds in a
    // second one (rustls cannot choose then). An error means one is set.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match cli.command {
        Command::Run { config: path } => {
            let Some(config) = load(path.as_ref()) else { return ExitCode::from(EX_USAGE) };
            app::init_logging(&config.log);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("interwork: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(async {
                let mut daemon = Daemon::prepare(config).await?;
                daemon.config_path = path;
                daemon.run().await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("interwork: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { file } => match Config::load(&file, &ProcessEnv) {
            Ok(config) => {
                // What the daemon would warn about at start, said now (not a failure).
                for warning in config.warnings() {
                    println!("{}: warning: {warning}", file.display());
                }
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                for p in &e.problems {
                    println!("{}: {p}", file.display());
                }
                ExitCode::from(EX_USAGE)
            }
        },
        Command::Token { participant, session, ttl, mode, config, no_check } => {
            let Some(config) = load(config.as_ref()) else { return ExitCode::from(EX_USAGE) };
            let token = match app::mint_token(&config, &participant, session.as_deref(), ttl, mode) {
                Ok(token) => token,
                Err(e) => {
                    eprintln!("interwork: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            if !no_check {
                let known = tokio::runtime::Runtime::new().map_err(anyhow::Error::from).and_then(|rt| {
                    rt.block_on(app::token_check::participant_known(&config, &participant, session.as_deref()))
                });
                match known {
                    Ok(app::token_check::Known::Yes) => {}
                    Ok(app::token_check::Known::No(reason)) => {
                        eprintln!(
                            "interwork: {reason}: the gateway would refuse this token (404); create it first \
                             (POST /v1/accounts/{{account}}/participants), or give the daemon's --config"
                        );
                        return ExitCode::FAILURE;
                    }
                    Err(e) => eprintln!(
                        "interwork: warning: could not check that {participant} exists ({e:#}); minted anyway"
                    ),
                }
            }
            println!("{token}");
            ExitCode::SUCCESS
        }
        Command::Replay { pcap, target, expect, speed, timeout, config, account } => {
            let Some(config) = load(config.as_ref()) else { return ExitCode::from(EX_USAGE) };
            let args = interwork::replay::ReplayArgs { pcap, target, expect, speed, timeout, account };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("interwork: cannot start the runtime: {e}");
                    return ExitCode::from(REPLAY_ERROR);
                }
            };
            match runtime.block_on(interwork::replay::run(&args, &config)) {
                Ok(report) => {
                    for line in &report.lines {
                        println!("{line}");
                    }
                    if report.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE }
                }
                Err(e) => {
                    eprintln!("interwork replay: {e:#}");
                    ExitCode::from(REPLAY_ERROR)
                }
            }
        }
    }
}

/// The config from `path`, or the embedded default; problems are printed with their keys.
fn load(path: Option<&PathBuf>) -> Option<Config> {
    let result = match path {
        Some(p) => Config::load(p, &ProcessEnv),
        None => Config::embedded(&ProcessEnv),
    };
    match result {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("interwork: refusing to start, the configuration has problems:");
            for p in &e.problems {
                eprintln!("  {p}");
            }
            None
        }
    }
}

fn parse_mode(s: &str) -> Result<InterconnectMode, String> {
    match s {
        "transfer" => Ok(InterconnectMode::Transfer),
        "bridge" => Ok(InterconnectMode::Bridge),
        "conference" => Ok(InterconnectMode::Conference),
        _ => Err("one of transfer, bridge, conference".into()),
    }
}
