//! Request extractors with the contract's errors: HTTP Basic per account, and JSON bodies that
//! refuse unknown fields, wrong types and oversized input with a 4xx JSON error.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq as _;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::limit::source_ip;
use crate::config::AccountConfig;
use crate::ids::AccountId;

/// The accounts and their credentials.
pub struct Accounts {
    by_id: BTreeMap<String, AccountConfig>,
}

impl Accounts {
    /// Accounts with complete credentials.
    pub fn new(by_id: BTreeMap<String, AccountConfig>) -> Self {
        Self { by_id }
    }

    /// The account whose credentials these are.
    fn authenticate(&self, username: &str, password: &str) -> Option<&str> {
        self.by_id.iter().find_map(|(id, a)| {
            let user_ok = a.username.as_bytes().ct_eq(username.as_bytes());
            let pass_ok = a.password.as_bytes().ct_eq(password.as_bytes());
            bool::from(user_ok & pass_ok).then_some(id.as_str())
        })
    }
}

/// The account whose HTTP Basic credentials the request carries, whatever its path.
///
/// No or unknown credentials: 401. A source address with too many failed sign-ins in the
/// current window (`http.auth_max_failures` per `http.auth_failure_window`): 429 with
/// `Retry-After`, whatever the credentials, so that guessing gets no answer at all.
pub struct AnyAccount(pub AccountId);

impl FromRequestParts<AppState> for AnyAccount {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        sign_in(parts, state).map(|id| Self(AccountId::from(id)))
    }
}

fn sign_in<'s>(parts: &Parts, state: &'s AppState) -> Result<&'s str, ApiError> {
    let source = source_ip(&parts.extensions);
    let now = tokio::time::Instant::now().into_std();
    state
        .auth_failures
        .check(source, now)
        .map_err(|after| ApiError::too_many("too many failed sign-ins from this address; try again later", after))?;
    // No header at all is a client that has not tried yet (a browser before its challenge):
    // not a failure.
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthenticated("HTTP Basic credentials are required"))?;
    let failed = |message: &'static str| {
        state.auth_failures.record(source, now);
        ApiError::unauthenticated(message)
    };
    let (user, pass) =
        parse_basic(header.as_bytes()).ok_or_else(|| failed("the Authorization header is not HTTP Basic"))?;
    state.accounts.authenticate(&user, &pass).ok_or_else(|| failed("wrong user name or password"))
}

/// The account of the request's path, proven by its HTTP Basic credentials.
///
/// No or unknown credentials: 401 (throttled per source address as [`AnyAccount`]).
/// Credentials of another account than the path's: 403.
pub struct Authenticated(pub AccountId);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let account = sign_in(parts, state)?;
        let params =
            RawPathParams::from_request_parts(parts, state).await.map_err(|_| ApiError::not_found("no such route"))?;
        let path_account = params
            .iter()
            .find(|(k, _)| *k == "accountId")
            .map(|(_, v)| v)
            .ok_or_else(|| ApiError::not_found("no such route"))?;
        if path_account != account {
            return Err(ApiError::permission_denied(format!("these credentials are not for account {path_account}")));
        }
        Ok(Self(AccountId::from(account)))
    }
}

fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, rest) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(rest.trim()).ok()?).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// A JSON body: an absent or empty body reads as `{}`, whatever its Content-Type (so a body the
/// OpenAPI document marks optional is truly optional, and one whose fields are required is refused
/// for what it lacks); a non-empty body is read as JSON even without a JSON Content-Type (as
/// `curl -d` sends it). Malformed JSON, unknown fields and wrong types are 400 INVALID_ARGUMENT
/// naming what is wrong; a body over the limit is 413 RESOURCE_EXHAUSTED.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.body_limit;
        let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::ResourceExhausted,
                format!("the body is larger than {limit} bytes"),
            )
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { bytes };
    serde_json::from_slice(text).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_parse() {
        let value = format!("Basic {}", STANDARD.encode("user:pa:ss"));
        assert_eq!(parse_basic(value.as_bytes()), Some(("user".into(), "pa:ss".into())));
        assert_eq!(parse_basic(b"Bearer abc"), None);
        assert_eq!(parse_basic(b"Basic !!!"), None);
        assert_eq!(parse_basic(format!("Basic {}", STANDARD.encode("nocolon")).as_bytes()), None);
    }

    #[test]
    fn accounts_authenticate_by_both_parts() {
        let accounts = Accounts::new(BTreeMap::from([
            ("a".to_string(), AccountConfig { username: "ua".into(), password: "pa".into() }),
            ("b".to_string(), AccountConfig { username: "ub".into(), password: "pb".into() }),
        ]));
        assert_eq!(accounts.authenticate("ua", "pa"), Some("a"));
        assert_eq!(accounts.authenticate("ub", "pb"), Some("b"));
        assert_eq!(accounts.authenticate("ua", "pb"), None);
        assert_eq!(accounts.authenticate("", ""), None);
    }
}
