//! The HTTP face of the browser side: the device socket's upgrade at `/v1/device` (the socket
//! itself is `crate::webrtc::signaling`), the browser SDK (`/sdk/interwork.js` and its TypeScript
//! declarations), and the demo: the
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
//! The files are compiled into the binary (`crate::webrtc::assets`): no directory to install, no
//! build step.

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;
use super::error::responses::{BadRequest, Internal, MethodNotAllowed, TooManyRequests, UpgradeRequired};
use super::limit::{SourceIp, WindowLimiter};
use crate::config::DemoConfig;
use crate::ids::AccountId;
use crate::rooms::NewParticipant;
use crate::rooms::model::MediaType;
use crate::webrtc::assets::{DEMO_ACCOUNT, DEMO_HTML, SDK_DTS, SDK_JS};
use crate::webrtc::{protocol, signaling};

/// The routes outside the account base that the browser side needs: `/v1/device`, `/sdk/*`
/// and, when the demo is on, `/demo/*`, with their OpenAPI operations.
pub fn routes(demo_enabled: bool) -> OpenApiRouter<AppState> {
    let r = OpenApiRouter::new().routes(routes!(device_socket)).routes(routes!(sdk_js)).routes(routes!(sdk_dts));
    if demo_enabled {
        r.routes(routes!(demo_redirect)).routes(routes!(demo_page)).routes(routes!(connection_info))
    } else {
        r
    }
}

#[utoipa::path(get, path = "/v1/device", tag = "sdk",
    description = "The device socket: a WebSocket the SDK opens (CONTRACT §4); its messages are the \
        project's own protocol (docs/device-protocol.md in the repository). The participant token is \
        sent in the first message (`hello`); any `Origin` is accepted.",
    params(
        ("Upgrade" = String, Header, description = "`websocket`"),
        ("Connection" = String, Header, description = "`Upgrade`"),
        ("Sec-WebSocket-Key" = String, Header, description = "RFC 6455"),
        ("Sec-WebSocket-Version" = String, Header, description = "`13`"),
    ),
    responses((status = 101, description = "Switching Protocols: the device socket is open"),
        BadRequest, MethodNotAllowed, UpgradeRequired))]
/// `GET /v1/device`: upgrades to the device socket.
pub async fn device_socket(ws: WebSocketUpgrade, State(app): State<AppState>) -> Response {
    let hub = app.devices.clone();
    ws.max_message_size(protocol::MAX_MESSAGE_BYTES)
        .max_frame_size(protocol::MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| signaling::serve(socket, hub))
}

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

/// The demo's limits, and where it tells phones to call.
pub struct DemoState {
    /// `demo.enabled`: whether `/demo/*` is served.
    pub enabled: bool,
    requests: WindowLimiter,
    lifetime: Duration,
    sip_listen: std::net::SocketAddr,
}

impl DemoState {
    /// The demo as `[demo]` configures it; phones call `sip_listen`.
    pub fn new(config: &DemoConfig, sip_listen: std::net::SocketAddr) -> Self {
        Self {
            enabled: config.enabled,
            requests: WindowLimiter::new(config.requests_per_minute, Duration::from_secs(60)),
            lifetime: config.lifetime,
            sip_listen,
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
    let demo = &app.demo;
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
        sip_uri: format!("sip:demo@{}", demo.sip_listen),
        user_to_user: format!("{phone_token};encoding=jwt"),
        phone_participant_id: phone.to_string(),
    }))
}
