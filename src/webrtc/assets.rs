//! The browser SDK (`/sdk/interwork.js` and its TypeScript declarations), and the demo: the
//! seed's hello-world page at `/demo/` and `/demo/connectionInfo`, which makes a browser and a
//! phone participant in a demo session of the `default` account and returns their tokens.
//!
//! `/demo/connectionInfo` needs no credentials, so it is bounded on every side: requests per
//! minute per source address (`demo.requests_per_minute`, 429 with `Retry-After` beyond), demo
//! participants alive at once (`demo.max_participants`, counted apart from the account's own
//! quotas so that the account's API keeps working however many demo requests come), and each
//! demo participant's life (`demo.lifetime`, its token's too: an abandoned page frees its place).
//! The pair is made all or none ([`crate::rooms::Rooms::plan_join_demo`]): a refused request
//! leaves nothing behind.
//!
//! The files are compiled into the binary: no directory to install, no build step.

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;

use crate::app::config::DemoConfig;
use crate::control::AppState;
use crate::control::error::ApiError;
use crate::control::error::responses::{Internal, MethodNotAllowed, TooManyRequests};
use crate::control::limit::{SourceIp, WindowLimiter};
use crate::ids::AccountId;
use crate::rooms::NewParticipant;
use crate::rooms::model::MediaType;

/// The SDK.
pub const SDK_JS: &str = include_str!("assets/interwork.js");
/// The SDK's TypeScript declarations.
pub const SDK_DTS: &str = include_str!("assets/interwork.d.ts");
/// The demo page.
pub const DEMO_HTML: &str = include_str!("assets/demo.html");

/// The account demo sessions and participants are made in.
pub const DEMO_ACCOUNT: &str = "default";

#[utoipa::path(get, path = "/sdk/interwork.js", tag = "sdk",
    responses((status = 200, description = "The browser SDK (CONTRACT §4)", content_type = "text/javascript"),
        MethodNotAllowed))]
/// `GET /sdk/interwork.js`.
pub async fn sdk_js() -> Response {
    asset(SDK_JS, "text/javascript; charset=utf-8")
}

#[utoipa::path(get, path = "/sdk/interwork.d.ts", tag = "sdk",
    responses(
        (status = 200, description = "The SDK's TypeScript declarations", content_type = "application/typescript"),
        MethodNotAllowed))]
/// `GET /sdk/interwork.d.ts`.
pub async fn sdk_dts() -> Response {
    asset(SDK_DTS, "application/typescript; charset=utf-8")
}

#[utoipa::path(get, path = "/demo/", tag = "demo",
    responses((status = 200, description = "The demo page (when `demo.enabled`)", content_type = "text/html"),
        MethodNotAllowed))]
/// `GET /demo/`.
pub async fn demo_page() -> Response {
    asset(DEMO_HTML, "text/html; charset=utf-8")
}

#[utoipa::path(get, path = "/demo", tag = "demo",
    responses((status = 308, description = "To `/demo/`", headers(("Location" = String))), MethodNotAllowed))]
/// `GET /demo`: the page's relative URLs need the trailing slash.
pub async fn demo_redirect() -> Redirect {
    Redirect::permanent("/demo/")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // Customer pages on other origins load the SDK (CONTRACT §4).
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")),
        ],
        body,
    )
        .into_response()
}

/// The demo's limits.
pub struct DemoState {
    requests: WindowLimiter,
    lifetime: Duration,
}

impl DemoState {
    /// The demo as `[demo]` configures it.
    pub fn new(config: &DemoConfig) -> Self {
        Self {
            requests: WindowLimiter::new(config.requests_per_minute, Duration::from_secs(60)),
            lifetime: config.lifetime,
        }
    }
}

/// What `/demo/connectionInfo` returns.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionInfo {
    /// The browser participant's token, for `connect({deviceToken})`.
    pub token: String,
    /// The browser participant.
    pub participant_id: String,
    /// The demo session.
    pub session_id: String,
    /// Where to send a SIP INVITE to join the demo session.
    pub sip_uri: String,
    /// A `User-to-User` header value naming a phone participant of the same session.
    pub user_to_user: String,
    /// That phone participant.
    pub phone_participant_id: String,
}

#[utoipa::path(get, path = "/demo/connectionInfo", tag = "demo",
    responses((status = 200, body = ConnectionInfo), MethodNotAllowed, TooManyRequests, Internal))]
/// `GET /demo/connectionInfo`: a new browser participant in the demo session (both ways
/// subscribed to the whole session, as the seed's `createParticipant`), and a phone participant
/// for a SIP call into it; both, with their tokens, live `demo.lifetime`.
pub async fn connection_info(
    State(app): State<AppState>,
    SourceIp(source): SourceIp,
) -> Result<Json<ConnectionInfo>, ApiError> {
    let demo = &app.devices.demo;
    demo.requests
        .hit(source, tokio::time::Instant::now().into_std())
        .map_err(|after| ApiError::too_many("too many demo requests from this address; try again later", after))?;
    let account = AccountId::from(DEMO_ACCOUNT);
    let new = ["demo-browser", "demo-phone"].map(|tag| NewParticipant {
        tag: Some(tag.into()),
        callback_url: None,
        publish_permissions: vec![MediaType::Audio],
        device_api_version: None,
    });
    let joined = app.rooms.join_demo(&account, new.into()).await?;
    let now = SystemTime::now();
    let session = joined.session;
    let mut tokens = joined.participants.into_iter().map(|p| {
        let token = app.minter.mint(&p.id, Some(&session), None, Some(demo.lifetime), now);
        (p.id, token)
    });
    // join_demo makes exactly the participants asked for, in order: the browser, then the phone.
    let (Some((browser, token)), Some((phone, phone_token))) = (tokens.next(), tokens.next()) else {
        return Err(ApiError::internal(&"the demo made fewer participants than asked"));
    };
    Ok(Json(ConnectionInfo {
        token,
        participant_id: browser.to_string(),
        session_id: session.to_string(),
        sip_uri: format!("sip:demo@{}", app.devices.sip_listen),
        user_to_user: format!("{phone_token};encoding=jwt"),
        phone_participant_id: phone.to_string(),
    }))
}
