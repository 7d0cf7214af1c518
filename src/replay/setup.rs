//! Prepares a fresh gateway for a capture through its HTTP API (CONTRACT §2): one session, a
//! participant for each one the captured tokens name, everyone subscribed to the session, and a
//! token per participant, minted with the gateway's key when it is readable (`interwork token`
//! semantics), else the one the API returned.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::expect::ParticipantPolicy;
use crate::app::state;
use crate::config::Config;
use crate::ids::{ParticipantId, SessionId};
use crate::tokens::{Minter, NodeKey};

/// Where and how to reach the gateway's API.
pub struct Gateway {
    /// `http://host:port`.
    pub base: String,
    /// The account's id.
    pub account: String,
    /// HTTP Basic user.
    pub username: String,
    /// HTTP Basic password.
    pub password: String,
    /// The gateway's own token key, when its state or config gives it.
    pub minter: Option<Minter>,
    client: reqwest::Client,
}

/// Why the gateway could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The request failed (connection refused, timeout).
    #[error("{what}: {source}")]
    Http {
        /// The API call.
        what: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The API answered with an error.
    #[error("{what}: the API answered {status}: {body}")]
    Status {
        /// The API call.
        what: String,
        /// Its status.
        status: u16,
        /// Its body.
        body: String,
    },
    /// Re-minting needs the gateway's key, and its state or config does not give it.
    #[error("re-minting tokens needs the gateway's signing key: give its config with --config")]
    NoKey,
    /// The config has no account to use.
    #[error("the gateway's config has no account {0:?}")]
    NoAccount(String),
}

/// What the replay set up, to substitute tokens and to clean up afterwards.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Token to send, by captured participant.
    pub tokens: HashMap<String, String>,
    /// The session created, if any.
    pub session: Option<String>,
}

impl Gateway {
    /// From the gateway's config (the same file `interwork run --config` reads, or the embedded
    /// default with `INTERWORK_*`): HTTP address, account credentials (configured or stored in
    /// the state directory), the signing key if present.
    pub fn from_config(config: &Config, account: &str) -> Result<Self, SetupError> {
        let mut accounts = config.accounts.clone();
        let dir = &config.state.dir;
        if dir.join(state::CREDENTIALS_FILE).exists() {
            // Only reads: the file holds every account the daemon generated.
            let _ = state::complete_credentials(dir, &mut accounts);
        }
        let creds = accounts.get(account).ok_or_else(|| SetupError::NoAccount(account.to_string()))?;
        let key = match &config.tokens.signing_key {
            Some(path) => std::fs::read_to_string(path).ok().and_then(|pem| NodeKey::from_pem(&pem, path).ok()),
            None => {
                let path = dir.join(state::KEY_FILE);
                if path.exists() { NodeKey::load_or_generate(&path).ok().map(|(k, _)| k) } else { None }
            }
        };
        let minter = key.map(|k| Minter::new(Arc::new(k), &config.tokens.issuer, config.tokens.ttl));
        let mut host = config.http.listen.0;
        if host.ip().is_unspecified() {
            host.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        Ok(Self {
            base: format!("http://{host}"),
            account: account.to_string(),
            username: creds.username.clone(),
            password: creds.password.clone(),
            minter,
            client: reqwest::Client::builder().timeout(HTTP_TIMEOUT).build().unwrap_or_default(),
        })
    }

    /// Sets up what `policy` asks for the `participants` named in the capture (`tokens`: the
    /// captured tokens).
    pub async fn prepare(
        &self,
        policy: ParticipantPolicy,
        participants: &[String],
        tokens: &[String],
    ) -> Result<Prepared, SetupError> {
        let mut prepared = Prepared::default();
        if participants.is_empty() || policy == ParticipantPolicy::Captured {
            return Ok(prepared);
        }
        if policy == ParticipantPolicy::Existing {
            let minter = self.minter.as_ref().ok_or(SetupError::NoKey)?;
            prepared.tokens = remint_expired(minter, tokens, SystemTime::now());
            return Ok(prepared);
        }
        let session = match policy {
            ParticipantPolicy::Fresh => {
                let s = self
                    .call(reqwest::Method::POST, "/sessions", Some(json!({"tag": "replay"})), "create a session")
                    .await?;
                Some(s["id"].as_str().unwrap_or_default().to_string())
            }
            _ => None,
        };
        prepared.session = session.clone();
        for captured in participants {
            let p = self
                .call(
                    reqwest::Method::POST,
                    "/participants",
                    Some(json!({"publishPermissions": ["AUDIO"], "tag": "replay"})),
                    "create a participant",
                )
                .await?;
            let id = p["participant"]["id"].as_str().unwrap_or_default().to_string();
            let api_token = p["token"].as_str().unwrap_or_default().to_string();
            if let Some(sid) = &session {
                let path = format!("/sessions/{sid}/participants/{id}");
                self.call(
                    reqwest::Method::PUT,
                    &path,
                    Some(json!({"sessionId": sid})),
                    "add the participant to the session",
                )
                .await?;
            }
            let token = match &self.minter {
                Some(m) => m.mint(
                    &ParticipantId::from(id.as_str()),
                    session.as_deref().map(SessionId::from).as_ref(),
                    None,
                    None,
                    SystemTime::now(),
                ),
                None => api_token,
            };
            if policy == ParticipantPolicy::Deleted {
                self.call(reqwest::Method::DELETE, &format!("/participants/{id}"), None, "delete the participant")
                    .await?;
            }
            prepared.tokens.insert(captured.clone(), token);
        }
        Ok(prepared)
    }

    /// Deletes the session the replay created (its legs get BYE; the calls are over by now).
    pub async fn cleanup(&self, prepared: &Prepared) {
        if let Some(sid) = &prepared.session {
            let _ = self.call(reqwest::Method::DELETE, &format!("/sessions/{sid}"), None, "delete the session").await;
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> Result<Value, SetupError> {
        let url = format!("{}/v1/accounts/{}{path}", self.base, self.account);
        let what = format!("{what} ({method} {url})");
        let mut request = self.client.request(method, &url).basic_auth(&self.username, Some(&self.password));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|source| SetupError::Http { what: what.clone(), source })?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(SetupError::Status { what, status, body: text });
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// New tokens, by `sub`, for the captured tokens that have expired at `now`: same participant
/// and session, the gateway's key and lifetime.
pub fn remint_expired(minter: &Minter, tokens: &[String], now: SystemTime) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for token in tokens {
        let Some(claims) = super::script::jwt_claims(token) else { continue };
        let (Some(sub), Some(exp)) = (claims["sub"].as_str(), claims["exp"].as_u64()) else { continue };
        if exp > crate::tokens::unix_seconds(now) {
            continue;
        }
        let sid = claims["sid"].as_str().map(SessionId::from);
        out.insert(sub.to_string(), minter.mint(&ParticipantId::from(sub), sid.as_ref(), None, None, now));
    }
    out
}

/// Bound of each API request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_expired_tokens_are_reminted_for_the_same_participant_and_session() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = NodeKey::load_or_generate(&dir.path().join("key.pem")).unwrap();
        let minter = Minter::new(Arc::new(key), "interwork", Duration::from_secs(3600));
        let then = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let sid = SessionId::from("s1");
        let old = minter.mint(&ParticipantId::from("p-old"), Some(&sid), None, None, then);
        let now = SystemTime::now();
        let live = minter.mint(&ParticipantId::from("p-live"), None, None, None, now);
        let fresh = remint_expired(&minter, &[old, live, "not.a.jwt".into()], now);
        assert_eq!(fresh.len(), 1);
        let token = &fresh["p-old"];
        assert_eq!(super::super::script::jwt_claim(token, "sub").as_deref(), Some("p-old"));
        assert_eq!(super::super::script::jwt_claim(token, "sid").as_deref(), Some("s1"));
        let exp = super::super::script::jwt_claims(token).unwrap()["exp"].as_u64().unwrap();
        assert!(exp > crate::tokens::unix_seconds(now));
    }
}
