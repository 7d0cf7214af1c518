//! The HTTP control API (CONTRACT §2) on axum: the account API for sessions, participants and
//! subscriptions, the JWKS, health, readiness, metrics and the OpenAPI document.
//!
//! Handlers hold no business rule: they translate JSON to [`crate::rooms`] operations. Errors
//! take one shape ([`error::ApiError`]); a layer gives that shape to errors made below the
//! handlers too. Every request gets an id (`x-request-id`, echoed back) carried by its log span.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub mod api;
pub mod callbacks;
pub mod error;
pub mod extract;
pub mod limit;
pub mod paging;

use crate::app::config::HttpConfig;
use crate::app::drain::Drain;
use crate::app::metrics::{HttpLabels, Metrics};
use crate::rooms::RoomsHandle;
use crate::tokens::{Minter, NodeKey};
use error::ApiError;
use extract::Accounts;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The rooms.
    pub rooms: RoomsHandle,
    /// Accounts and credentials.
    pub accounts: Arc<Accounts>,
    /// Mints participant tokens.
    pub minter: Minter,
    /// The node's key, for the JWKS.
    pub node_key: Arc<NodeKey>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Drain state, for `/readyz`.
    pub drain: Drain,
    /// Largest request body.
    pub body_limit: usize,
    /// Device sockets, the SDK and the demo (the WebRTC side).
    pub devices: crate::webrtc::DeviceHub,
    /// Failed sign-ins per source address (`http.auth_max_failures`).
    pub auth_failures: Arc<limit::WindowLimiter>,
    /// Which `callbackUrl`s are accepted (`callbacks.allow_private`).
    pub callback_targets: callbacks::TargetPolicy,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "interwork control API", description = "Sessions, participants and subscriptions of the \
        interwork SIP/WebRTC gateway. Errors are {status, code, message}."),
    modifiers(&BasicAuth),
    components(schemas(error::ErrorBody, error::ErrorCode))
)]
struct ApiDoc;

struct BasicAuth;

impl utoipa::Modify for BasicAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("basic", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
    }
}

/// The account API with its OpenAPI document, built from the same route list so the two
/// cannot disagree.
fn account_api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::create_session, api::list_sessions))
        .routes(routes!(api::get_session, api::delete_session))
        .routes(routes!(api::list_session_participants))
        .routes(routes!(api::add_participant_to_session, api::remove_participant_from_session))
        .routes(routes!(api::get_subscriptions, api::put_subscriptions))
        .routes(routes!(api::create_participant, api::list_participants))
        .routes(routes!(api::get_participant, api::delete_participant))
        .split_for_parts()
}

/// The OpenAPI document of the account API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    account_api().1
}

/// The whole HTTP service. `GET /metrics` is part of it unless `http.metrics_listen` gives it a
/// listener of its own ([`metrics_router`]); `http.metrics_auth` puts it behind any account's
/// credentials.
pub fn router(state: AppState, http: &HttpConfig) -> Router {
    let (api, doc) = account_api();
    let doc = Arc::new(doc);
    let mut routes = Router::new()
        .merge(api)
        .merge(crate::webrtc::routes(&state.devices))
        .route("/openapi.json", get(move || async move { axum::Json(doc.as_ref().clone()) }))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if http.metrics_listen.is_none() {
        routes = routes.merge(metrics_route(http.metrics_auth));
    }
    layered(routes, state, http.request_timeout)
}

/// The service of the separate metrics listener (`http.metrics_listen`): `GET /metrics` only.
pub fn metrics_router(state: AppState, http: &HttpConfig) -> Router {
    layered(metrics_route(http.metrics_auth), state, http.request_timeout)
}

fn metrics_route(auth: bool) -> Router<AppState> {
    if auth {
        Router::new().route("/metrics", get(metrics_signed_in))
    } else {
        Router::new().route("/metrics", get(metrics))
    }
}

/// The layers every listener's service has: JSON errors, timeout, panics caught, counted,
/// traced with a request id.
fn layered(routes: Router<AppState>, state: AppState, request_timeout: Duration) -> Router {
    let service = routes.fallback(|| async { ApiError::not_found("no such route") }).with_state(state.clone());
    let metrics_layer = middleware::from_fn_with_state(state, count_request);
    service
        .layer(middleware::map_response(error::json_errors))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, request_timeout))
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(metrics_layer)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(RequestIds::default()))
}

async fn jwks(State(app): State<AppState>) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"))], axum::Json(crate::tokens::jwks(&app.node_key)))
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(app): State<AppState>) -> Response {
    if app.drain.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "draining"}))).into_response()
    } else {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    }
}

/// `GET /metrics` behind HTTP Basic (`http.metrics_auth`): any account's credentials.
async fn metrics_signed_in(_account: extract::AnyAccount, state: State<AppState>) -> Response {
    metrics(state).await.into_response()
}

async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let (sessions, participants) = app.rooms.read(crate::rooms::Rooms::counts);
    app.metrics.sessions.set(sessions as i64);
    app.metrics.participants.set(participants as i64);
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))],
        app.metrics.encode(),
    )
}

/// Counts each request by route template and status.
async fn count_request(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let response = next.run(req).await;
    let labels = HttpLabels { method, route, status: response.status().as_u16() };
    app.metrics.http_requests.get_or_create(&labels).inc();
    response
}

fn request_span(req: &Request) -> tracing::Span {
    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path())
}

/// Request ids: a per-process prefix and a counter, short and unique enough to grep logs by.
#[derive(Clone)]
struct RequestIds {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl Default for RequestIds {
    fn default() -> Self {
        Self { prefix: crate::ids::random_id(6).into(), next: Arc::new(AtomicU64::new(1)) }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _req: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n}", self.prefix)).ok().map(RequestId::new)
    }
}
