//! The browser SDK (`/sdk/interwork.js` and its TypeScript declarations), and the demo: the
//! seed's hello-world page at `/demo/` and `/demo/connectionInfo`, which makes a participant in
//! a demo session of the `default` account and returns its token.
//!
//! The files are compiled into the binary: no directory to install, no build step.

use std::sync::Mutex;
use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;

use crate::control::AppState;
use crate::control::error::ApiError;
use crate::ids::{AccountId, SessionId};
use crate::rooms::NewParticipant;
use crate::rooms::model::{MediaType, Subscriptions};

/// The SDK.
pub const SDK_JS: &str = include_str!("assets/interwork.js");
/// The SDK's TypeScript declarations.
pub const SDK_DTS: &str = include_str!("assets/interwork.d.ts");
/// The demo page.
pub const DEMO_HTML: &str = include_str!("assets/demo.html");

/// The account demo sessions and participants are made in.
pub const DEMO_ACCOUNT: &str = "default";

/// `GET /sdk/interwork.js`.
pub async fn sdk_js() -> Response {
    asset(SDK_JS, "text/javascript; charset=utf-8")
}

/// `GET /sdk/interwork.d.ts`.
pub async fn sdk_dts() -> Response {
    asset(SDK_DTS, "application/typescript; charset=utf-8")
}

/// `GET /demo/`.
pub async fn demo_page() -> Response {
    asset(DEMO_HTML, "text/html; charset=utf-8")
}

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

/// The demo session, reused while it lives.
#[derive(Default)]
pub struct DemoState {
    session: Mutex<Option<SessionId>>,
}

/// What `/demo/connectionInfo` returns.
#[derive(Serialize)]
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

/// `GET /demo/connectionInfo`: a new browser participant in the demo session (both ways
/// subscribed to the whole session, as the seed's `createParticipant`), and a phone participant
/// for a SIP call into it.
pub async fn connection_info(State(app): State<AppState>) -> Result<Json<ConnectionInfo>, ApiError> {
    let account = AccountId::from(DEMO_ACCOUNT);
    let session = demo_session(&app, &account)?;
    let mut made = Vec::new();
    for tag in ["demo-browser", "demo-phone"] {
        let new = NewParticipant {
            tag: Some(tag.into()),
            callback_url: None,
            publish_permissions: vec![MediaType::Audio],
            device_api_version: None,
        };
        let p = app.rooms.create_participant(&account, new)?;
        let subs = Subscriptions { session_id: Some(session.clone()), participants: vec![] };
        app.rooms.add_to_session(&account, &session, &p.id, subs)?;
        let token = app.minter.mint(&p.id, Some(&session), None, None, SystemTime::now());
        made.push((p.id, token));
    }
    let [(browser, token), (phone, phone_token)]: [_; 2] =
        made.try_into().map_err(|_| ApiError::internal(&"two participants were made"))?;
    Ok(Json(ConnectionInfo {
        token,
        participant_id: browser.0,
        session_id: session.0,
        sip_uri: format!("sip:demo@{}", app.devices.sip_listen),
        user_to_user: format!("{phone_token};encoding=jwt"),
        phone_participant_id: phone.0,
    }))
}

fn demo_session(app: &AppState, account: &AccountId) -> Result<SessionId, ApiError> {
    let demo = &app.devices.demo;
    // Held only across in-memory rooms calls, never an await.
    let mut current = demo.session.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(id) = current.as_ref()
        && app.rooms.read(|r| r.session(account, id).is_ok())
    {
        return Ok(id.clone());
    }
    let s = app.rooms.create_session(account, Some("demo".into()))?;
    *current = Some(s.id.clone());
    Ok(s.id)
}
