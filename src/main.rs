//! The `interwork` command (CONTRACT §1): run the daemon, check a config, mint a token.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use interwork::app::config::{Config, InterconnectMode, ProcessEnv};
use interwork::app::{self, Daemon};

/// Exit status for a bad config or command line (sysexits.h EX_USAGE).
const EX_USAGE: u8 = 64;

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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // rsipstack links rustls with ring and reqwest with aws-lc-rs: with two providers built in,
    // rustls cannot pick one, so pick one before any TLS is used. An error means one is set.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match cli.command {
        Command::Run { config } => {
            let Some(config) = load(config.as_ref()) else { return ExitCode::from(EX_USAGE) };
            app::init_logging(&config.log);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("interwork: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(async {
                let daemon = Daemon::prepare(config)?;
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
            Ok(_) => {
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
        Command::Token { participant, session, ttl, mode, config } => {
            let Some(config) = load(config.as_ref()) else { return ExitCode::from(EX_USAGE) };
            match app::mint_token(&config, &participant, session.as_deref(), ttl, mode) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("interwork: {e:#}");
                    ExitCode::FAILURE
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
