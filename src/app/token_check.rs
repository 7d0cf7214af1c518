//! `interwork token` asks the running daemon whether the participant (and session) it mints
//! for exist, through the daemon's own API with the accounts' credentials from the config and
//! the state directory: a token for a participant the gateway does not know is refused at the
//! INVITE (404), which is better said at the command line. When the daemon cannot be asked
//! (not running, other credentials), the token is minted with a warning.

use std::time::Duration;

use anyhow::Context as _;

use super::state;
use crate::config::Config;

/// What the daemon said about the ids.
#[derive(Debug, PartialEq, Eq)]
pub enum Known {
    /// An account has the participant (and the session, when one was named).
    Yes,
    /// No account has it: the reason, to print.
    No(String),
}

/// How long each API request may take: the daemon is local or not there.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Asks the daemon of `config` about `participant` and `session`, account by account. An error
/// means it could not be asked (no credentials, not reachable, an unexpected answer).
pub async fn participant_known(config: &Config, participant: &str, session: Option<&str>) -> anyhow::Result<Known> {
    let mut accounts = config.accounts.clone();
    if config.state.dir.join(state::CREDENTIALS_FILE).exists() {
        // Only reads: the file holds the credentials the daemon generated.
        state::complete_credentials(&config.state.dir, &mut accounts).context("cannot read the credentials")?;
    }
    let mut host = config.http.listen.0;
    if host.ip().is_unspecified() {
        host.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    anyhow::ensure!(
        accounts.values().any(|c| !c.username.is_empty()),
        "no account credentials in the config or in {}",
        config.state.dir.join(state::CREDENTIALS_FILE).display()
    );
    let client = reqwest::Client::builder().timeout(TIMEOUT).build()?;
    let mut asked = false;
    for (account, creds) in accounts.iter().filter(|(_, c)| !c.username.is_empty()) {
        let base = format!("http://{host}/v1/accounts/{account}");
        let get = |path: String| client.get(format!("{base}{path}")).basic_auth(&creds.username, Some(&creds.password));
        let status = |r: reqwest::Response| r.status().as_u16();
        let found = get(format!("/participants/{participant}"))
            .send()
            .await
            .map(status)
            .with_context(|| format!("the daemon's API at http://{host} is not reachable"))?;
        match found {
            200 => {}
            404 => {
                asked = true;
                continue;
            }
            other => {
                // 401: these credentials are not the running daemon's; another account may do.
                tracing::debug!(account, status = other, "participant lookup");
                continue;
            }
        }
        let Some(session) = session else { return Ok(Known::Yes) };
        return match get(format!("/sessions/{session}")).send().await.map(status)? {
            200 => Ok(Known::Yes),
            404 => Ok(Known::No(format!("session {session} does not exist (account {account})"))),
            other => anyhow::bail!("the API answered {other} for session {session}"),
        };
    }
    anyhow::ensure!(asked, "no account's credentials were accepted by the daemon at http://{host}");
    Ok(Known::No(format!("participant {participant} does not exist on the gateway at http://{host}")))
}
