//! The HTTP control API (CONTRACT §2) on axum: the account API for sessions, participants and
//! subscriptions, the JWKS, health, readiness, metrics, the OpenAPI document and its interactive
//! page (`/docs`).
//!
//! Every route is registered in one list (`service`) through utoipa's `OpenApiRouter`, so the
//! router and `/openapi.json` are two views of it: an operation cannot be served undocumented.
//! The document lists each operation's error responses by status ([`error::responses`]) and the
//! callbacks as OpenAPI 3.1 `webhooks` ([`callback_events`]).
//!
//! Handlers hold no business rule: they translate JSON to [`crate::rooms`] operations. Errors
//! take one shape ([`error::ApiError`]); a layer gives that shape to errors made below the
//! handlers too. Every request gets an id (`x-request-id`, echoed back) carried by its log span.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub mod api;
pub mod browser;
pub mod callback_events;
pub mod callbacks;
pub mod error;
pub mod extract;
pub mod limit;
pub mod paging;

use crate::config::HttpConfig;
use crate::drain::Drain;
use crate::metrics::{HttpLabels, Metrics};
use crate::rooms::RoomsHandle;
use crate::tokens::{Minter, NodeKey};
use error::ApiError;
use error::responses::{MethodNotAllowed, TooManyRequests, Unauthorized};
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
    /// The way to the WebRTC side for device sockets.
    pub devices: crate::webrtc::DeviceHub,
    /// The demo's limits (`/demo/*`).
    pub demo: Arc<browser::DemoState>,
    /// Failed sign-ins per source address (`http.auth_max_failures`).
    pub auth_failures: Arc<limit::WindowLimiter>,
    /// Which `callbackUrl`s are accepted (`callbacks.allow_private`).
    pub callback_targets: callbacks::TargetPolicy,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "interwork", description = "The HTTP service of the interwork SIP/WebRTC gateway: the control \
        API (sessions, participants, subscriptions; HTTP Basic per account), the participant tokens' JWKS, health, \
        readiness, metrics, the browser SDK and its device socket, the demo, and this document. Errors are \
        {status, code, message}. The callbacks the gateway POSTs to participants' callbackUrl are the `webhooks`."),
    modifiers(&BasicAuth),
    components(schemas(error::ErrorBody, error::ErrorCode, callback_events::CallbackEvent)),
    tags(
        (name = "sessions", description = "Sessions and who is in them (CONTRACT §2)"),
        (name = "participants", description = "Participants and their tokens (CONTRACT §2)"),
        (name = "service", description = "Health, readiness, metrics, keys and this documentation"),
        (name = "sdk", description = "The browser SDK and its device socket (CONTRACT §4)"),
        (name = "demo", description = "The demo page (when `demo.enabled`)"),
    )
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

/// Every route of the main listener with its OpenAPI operation, from one list: the router and
/// the document are two views of it, so a route cannot be served undocumented. `/metrics` is
/// documented even when `http.metrics_listen` serves it elsewhere; `serve_metrics` says whether
/// this router has it.
fn service(demo: bool, metrics_auth: bool, serve_metrics: bool) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (metrics, metrics_doc) = metrics_route(metrics_auth).split_for_parts();
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::create_session, api::list_sessions))
        .routes(routes!(api::get_session, api::delete_session))
        .routes(routes!(api::list_session_participants))
        .routes(routes!(api::add_participant_to_session, api::remove_participant_from_session))
        .routes(routes!(api::get_subscriptions, api::put_subscriptions))
        .routes(routes!(api::create_participant, api::list_participants))
        .routes(routes!(api::get_participant, api::delete_participant))
        .merge(browser::routes(demo))
        .routes(routes!(openapi_json))
        .routes(routes!(docs_page))
        .routes(routes!(jwks))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .split_for_parts();
    doc.merge(metrics_doc);
    let router = if serve_metrics { router.merge(metrics) } else { router };
    (router, doc)
}

/// The OpenAPI 3.1 document `/openapi.json` serves: the operations of every route, and the
/// callbacks as `webhooks` (generated from [`callback_events::CallbackEvent`]).
/// `demo`: `demo.enabled`; `metrics_auth`: `http.metrics_auth`.
pub fn openapi(demo: bool, metrics_auth: bool) -> serde_json::Value {
    document(service(demo, metrics_auth, true).1)
}

fn document(doc: utoipa::openapi::OpenApi) -> serde_json::Value {
    // utoipa has no `webhooks` (OpenAPI 3.1 §4.8.1): they are added to the JSON.
    let mut json = serde_json::to_value(&doc).unwrap_or_default();
    let webhooks = webhooks(&json["components"]["schemas"]["CallbackEvent"]);
    json["webhooks"] = webhooks;
    json
}

/// One webhook per kind of callback, named by its `event`, whose body is that kind's schema: the
/// kinds are read from the generated schema of [`callback_events::CallbackEvent`] (one `oneOf`
/// branch per variant), so a new kind of callback is documented by being added there.
fn webhooks(callback_event: &serde_json::Value) -> serde_json::Value {
    let mut hooks = serde_json::Map::new();
    for branch in callback_event["oneOf"].as_array().into_iter().flatten() {
        let parts = branch["allOf"].as_array().map_or(&[][..], Vec::as_slice);
        let name = parts.iter().find_map(|p| p["properties"]["event"]["enum"][0].as_str());
        let Some(name) = name else { continue };
        hooks.insert(
            name.to_string(),
            serde_json::json!({
                "post": {
                    "operationId": name,
                    "summary": format!("The `{name}` callback"),
                    "description": "POSTed to the participant's callbackUrl; retried with backoff on \
                        connection errors, timeouts, 408, 429 and 5xx.",
                    "requestBody": {
                        "required": true,
                        "content": {"application/json": {"schema": branch}},
                    },
                    "responses": {"2XX": {"description": "Received"}},
                }
            }),
        );
    }
    serde_json::Value::Object(hooks)
}

/// The whole HTTP service. `GET /metrics` is part of it unless `http.metrics_listen` gives it a
/// listener of its own ([`metrics_router`]); `http.metrics_auth` puts it behind any account's
/// credentials.
pub fn router(state: AppState, http: &HttpConfig) -> Router {
    let (routes, doc) = service(state.demo.enabled, http.metrics_auth, http.metrics_listen.is_none());
    let document = ServedDocument(axum::body::Bytes::from(document(doc).to_string()));
    layered(routes.layer(axum::Extension(document)), state, http.request_timeout)
}

/// The service of the separate metrics listener (`http.metrics_listen`): `GET /metrics` only.
pub fn metrics_router(state: AppState, http: &HttpConfig) -> Router {
    layered(metrics_route(http.metrics_auth).split_for_parts().0, state, http.request_timeout)
}

fn metrics_route(auth: bool) -> OpenApiRouter<AppState> {
    if auth {
        OpenApiRouter::new().routes(routes!(metrics_signed_in))
    } else {
        OpenApiRouter::new().routes(routes!(metrics))
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

/// The document `/openapi.json` serves, serialized once.
#[derive(Clone)]
struct ServedDocument(axum::body::Bytes);

#[utoipa::path(get, path = "/openapi.json", tag = "service",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json"),
        MethodNotAllowed))]
/// `GET /openapi.json`.
async fn openapi_json(Extension(doc): Extension<ServedDocument>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], doc.0)
}

/// The interactive API page: plain HTML and JavaScript that reads `/openapi.json`; nothing is
/// loaded from elsewhere.
pub const DOCS_HTML: &str = include_str!("assets/docs.html");

#[utoipa::path(get, path = "/docs", tag = "service",
    responses((status = 200, description = "The API's interactive page: every operation of /openapi.json, \
        with a form to try it", content_type = "text/html"), MethodNotAllowed))]
/// `GET /docs`.
async fn docs_page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // Everything the page needs is in it or on this origin.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
                ),
            ),
        ],
        DOCS_HTML,
    )
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "service",
    responses((status = 200, description = "The public keys of participant tokens (RFC 7517)",
        content_type = "application/json"), MethodNotAllowed))]
/// `GET /.well-known/jwks.json`.
async fn jwks(State(app): State<AppState>) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"))], axum::Json(crate::tokens::jwks(&app.node_key)))
}

/// `{"status": ...}` of `/healthz` and `/readyz`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Status {
    /// `ok`, `ready` or `draining`.
    pub status: String,
}

#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, description = "The process runs", body = Status), MethodNotAllowed))]
/// `GET /healthz`.
async fn healthz() -> impl IntoResponse {
    axum::Json(Status { status: "ok".into() })
}

#[utoipa::path(get, path = "/readyz", tag = "service",
    responses((status = 200, description = "Taking work", body = Status),
        (status = 503, description = "Draining: new work is refused", body = Status), MethodNotAllowed))]
/// `GET /readyz`: 503 while draining.
async fn readyz(State(app): State<AppState>) -> Response {
    if app.drain.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(Status { status: "draining".into() })).into_response()
    } else {
        axum::Json(Status { status: "ready".into() }).into_response()
    }
}

#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus metrics (text exposition format 0.0.4)",
        content_type = "text/plain"), Unauthorized, MethodNotAllowed, TooManyRequests),
    security(("basic" = [])))]
/// `GET /metrics` behind HTTP Basic (`http.metrics_auth`): any account's credentials.
async fn metrics_signed_in(_account: extract::AnyAccount, state: State<AppState>) -> Response {
    metrics(state).await.into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus metrics (text exposition format 0.0.4)",
        content_type = "text/plain"), MethodNotAllowed))]
/// `GET /metrics`.
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use serde_json::Value;

    use super::callback_events::*;
    use super::*;
    use crate::ids::{AccountId, ParticipantId, SessionId};
    use crate::rooms::{LeaveReason, RoomEvent};

    /// One real payload of each kind: the room ones made by the code that sends them, the SIP
    /// ones as the SIP driver fills them.
    fn payloads() -> Vec<CallbackEvent> {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let (account, session, participant) =
            (AccountId::from("default"), SessionId::from("s1"), ParticipantId::from("p1"));
        let url = Some("https://hooks.example.com/cb".to_string());
        let joined = RoomEvent::ParticipantJoined {
            account: account.clone(),
            session: session.clone(),
            participant: participant.clone(),
            callback_url: url.clone(),
        };
        let left = RoomEvent::ParticipantLeft {
            account,
            session,
            participant,
            callback_url: url,
            reason: LeaveReason::SessionDeleted,
        };
        let connected = SipLegConnectedEvent {
            timestamp: timestamp(now),
            account_id: "default".into(),
            session_id: "s1".into(),
            participant_id: "p1".into(),
            call_id: "abc@198.51.100.7".into(),
            mode: crate::interconnect::InterconnectMode::Bridge.into(),
        };
        let media = LegMedia {
            codec: "AMR-WB".into(),
            packets_received: 500,
            packets_sent: 498,
            packets_lost: -1,
            jitter_ms: 2.5,
            concealed_frames: 3,
            auth_failures: 0,
            latency_to_webrtc_ms: 60,
            latency_to_sip_ms: 70,
        };
        let ended = |media: Option<LegMedia>| {
            CallbackEvent::SipLegEnded(SipLegEndedEvent {
                timestamp: timestamp(now),
                account_id: "default".into(),
                session_id: "s1".into(),
                participant_id: "p1".into(),
                call_id: "abc@198.51.100.7".into(),
                mode: Mode::Transfer,
                duration_ms: 10_000,
                reason: "BYE from SIP".into(),
                media,
            })
        };
        vec![
            callbacks::room_callback(&joined, now).unwrap().1,
            callbacks::room_callback(&left, now).unwrap().1,
            CallbackEvent::SipLegConnected(connected),
            ended(Some(media)),
            ended(None),
            CallbackEvent::Dtmf(DtmfEvent {
                timestamp: timestamp(now),
                participant_id: "p1".into(),
                tone: "#".into(),
                duration_ms: 160,
            }),
        ]
    }

    #[test]
    fn every_callback_validates_against_its_webhook() {
        let doc = openapi(false, false);
        let hooks = doc["webhooks"].as_object().expect("webhooks");
        let names: std::collections::BTreeSet<&str> = hooks.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["dtmf", "participantJoined", "participantLeft", "sipLegConnected", "sipLegEnded"].into(),
            "one webhook per kind of callback"
        );
        for event in payloads() {
            let body = event.to_json();
            assert_eq!(body["event"], event.name());
            let schema = &hooks[event.name()]["post"]["requestBody"]["content"]["application/json"]["schema"];
            let mut seen = Vec::new();
            if let Err(e) = validate(&doc, schema, &body, &mut seen) {
                panic!("{} does not validate: {e}\n{body}", event.name());
            }
            // Every field sent is documented (no field the schema does not name).
            let sent: Vec<&String> = body.as_object().unwrap().keys().collect();
            for key in sent {
                assert!(seen.contains(key), "{}: field {key} is not in the schema", event.name());
            }
        }
    }

    #[test]
    fn a_wrong_payload_does_not_validate() {
        let doc = openapi(false, false);
        let schema = &doc["webhooks"]["dtmf"]["post"]["requestBody"]["content"]["application/json"]["schema"];
        let good = payloads().pop().unwrap().to_json();
        assert!(validate(&doc, schema, &good, &mut Vec::new()).is_ok());
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("tone");
        assert!(validate(&doc, schema, &missing, &mut Vec::new()).is_err());
        let mut wrong_type = good.clone();
        wrong_type["durationMs"] = "long".into();
        assert!(validate(&doc, schema, &wrong_type, &mut Vec::new()).is_err());
        let mut wrong_event = good;
        wrong_event["event"] = "participantJoined".into();
        assert!(validate(&doc, schema, &wrong_event, &mut Vec::new()).is_err());
    }

    /// The JSON Schema subset the generated document uses: `$ref`, `allOf`, `oneOf`, `type`
    /// (one or several), `enum`, `properties`, `required`, `items`. Collects the property
    /// names met at the top level into `seen`.
    fn validate(doc: &Value, schema: &Value, value: &Value, seen: &mut Vec<String>) -> Result<(), String> {
        if let Some(r) = schema["$ref"].as_str() {
            let name = r.strip_prefix("#/components/schemas/").ok_or(format!("ref {r}"))?;
            return validate(doc, &doc["components"]["schemas"][name], value, seen);
        }
        for part in schema["allOf"].as_array().into_iter().flatten() {
            validate(doc, part, value, seen)?;
        }
        if let Some(branches) = schema["oneOf"].as_array() {
            let ok = branches.iter().filter(|b| validate(doc, b, value, &mut Vec::new()).is_ok()).count();
            if ok != 1 {
                return Err(format!("{value} matches {ok} branches of oneOf"));
            }
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(value)
        {
            return Err(format!("{value} is not one of {allowed:?}"));
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.is_empty() && !types.iter().any(|t| is_type(t, value)) {
            return Err(format!("{value} is not {types:?}"));
        }
        if let (Some(props), Some(object)) = (schema["properties"].as_object(), value.as_object()) {
            for (key, sub) in props {
                seen.push(key.clone());
                if let Some(v) = object.get(key) {
                    validate(doc, sub, v, &mut Vec::new()).map_err(|e| format!("{key}: {e}"))?;
                }
            }
        }
        for key in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if value.get(key).is_none() {
                return Err(format!("required field {key} is missing"));
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for v in array {
                validate(doc, items, v, &mut Vec::new())?;
            }
        }
        Ok(())
    }

    fn is_type(t: &str, v: &Value) -> bool {
        match t {
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "object" => v.is_object(),
            "array" => v.is_array(),
            "null" => v.is_null(),
            _ => false,
        }
    }

    #[test]
    fn every_operation_lists_its_errors_with_the_error_body() {
        let doc = openapi(true, true);
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                let errors: Vec<&String> = responses.keys().filter(|s| s.starts_with('4')).collect();
                assert!(!errors.is_empty(), "{method} {path} lists no 4xx");
                assert!(responses.contains_key("405"), "{method} {path} lacks 405");
                for status in errors {
                    let schema = &responses[status]["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path} {status}");
                }
            }
        }
    }
}
