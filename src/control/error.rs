//! The API's one error shape (CONTRACT §2): `{"status", "code", "message"}`, and the one place
//! where internal errors become it.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::callbacks::CallbackUrlError;
use super::paging::PagingError;
use crate::rooms::{RoomsError, RoomsHandleError};

/// The error codes of CONTRACT §2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The request is malformed or names something impossible.
    InvalidArgument,
    /// No or wrong credentials.
    Unauthenticated,
    /// Credentials of another account.
    PermissionDenied,
    /// No such resource (or route).
    NotFound,
    /// The route exists but not with this method (405; the `Allow` header lists the methods).
    MethodNotAllowed,
    /// The request conflicts with the current state.
    Conflict,
    /// A limit is reached.
    ResourceExhausted,
    /// Our fault.
    Internal,
}

impl ErrorCode {
    /// The code a bare HTTP status stands for, for errors produced below our handlers.
    pub fn for_status(status: StatusCode) -> Self {
        match status.as_u16() {
            401 => Self::Unauthenticated,
            403 => Self::PermissionDenied,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            409 => Self::Conflict,
            413 | 429 => Self::ResourceExhausted,
            500..=599 => Self::Internal,
            _ => Self::InvalidArgument,
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The HTTP status, repeated.
    pub status: u16,
    /// What kind of error.
    pub code: ErrorCode,
    /// What went wrong, for a human.
    pub message: String,
}

/// An error answered by the API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    /// When to try again (a 429's `Retry-After`), if known.
    retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    /// 429 RESOURCE_EXHAUSTED with `Retry-After`: a rate or a quota that frees up with time.
    pub fn too_many(message: impl Into<String>, retry_after: Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::ResourceExhausted, message)
        }
    }

    /// 400 INVALID_ARGUMENT.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidArgument, message)
    }

    /// 404 NOT_FOUND.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    /// 401 UNAUTHENTICATED.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated, message)
    }

    /// 403 PERMISSION_DENIED.
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::PermissionDenied, message)
    }

    /// 500 INTERNAL; the detail is logged, not sent.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, "internal error")
    }

    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<RoomsError> for ApiError {
    fn from(e: RoomsError) -> Self {
        let message = e.to_string();
        match e {
            RoomsError::SessionNotFound(_) | RoomsError::ParticipantNotFound(_) | RoomsError::NotInSession(..) => {
                Self::not_found(message)
            }
            RoomsError::InvalidArgument(_) => Self::invalid(message),
            RoomsError::ResourceExhausted(_) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::ResourceExhausted, message)
            }
            RoomsError::DemoFull { retry_after, .. } => Self::too_many(message, retry_after),
        }
    }
}

impl From<CallbackUrlError> for ApiError {
    fn from(e: CallbackUrlError) -> Self {
        Self::invalid(e.to_string())
    }
}

impl From<PagingError> for ApiError {
    fn from(e: PagingError) -> Self {
        Self::invalid(e.to_string())
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        Self::invalid(format!("invalid query: {}", e.body_text()))
    }
}

impl From<RoomsHandleError> for ApiError {
    fn from(e: RoomsHandleError) -> Self {
        match e {
            RoomsHandleError::Rooms(e) => e.into(),
            RoomsHandleError::Store(e) => Self::internal(&e),
            RoomsHandleError::Stopped(_) => Self::internal(&e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { status: self.status.as_u16(), code: self.code, message: self.message };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(after) = self.retry_after {
            // Whole seconds, rounded up so that a client waiting that long finds room (RFC 9110
            // §10.2.3).
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"interwork\""));
        }
        response
    }
}

/// Gives every error response the JSON shape, including those made below the handlers (an
/// unknown method's 405, a timeout's 408, a caught panic's 500).
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, _) = response.into_parts();
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    let mut rebuilt = ApiError::new(status, ErrorCode::for_status(status), reason).into_response();
    // Keep headers such as `Allow` on a 405.
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rebuilt.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rebuilt
}

/// The error responses as the OpenAPI document lists them, one type per status, each with the
/// [`ErrorBody`] schema: operations name those they can give (`responses((status = 200, ..),
/// BadRequest, Unauthorized, ..)`). What produces each is above: [`ApiError`], the extractors,
/// and [`json_errors`] for those made below the handlers.
pub mod responses {
    use super::ErrorBody;

    /// INVALID_ARGUMENT: malformed JSON, unknown fields, wrong types, impossible values, a bad
    /// query.
    #[derive(utoipa::IntoResponses)]
    #[response(status = 400)]
    pub struct BadRequest(pub ErrorBody);

    /// UNAUTHENTICATED: no or wrong HTTP Basic credentials.
    #[derive(utoipa::IntoResponses)]
    #[response(status = 401, headers(("WWW-Authenticate" = String, description = "Basic realm=\"interwork\"")))]
    pub struct Unauthorized(pub ErrorBody);

    /// PERMISSION_DENIED: the credentials are another account's.
    #[derive(utoipa::IntoResponses)]
    #[response(status = 403)]
    pub struct Forbidden(pub ErrorBody);

    /// NOT_FOUND: no such session or participant in this account, or not in that session.
    #[derive(utoipa::IntoResponses)]
    #[response(status = 404)]
    pub struct NotFound(pub ErrorBody);

    /// METHOD_NOT_ALLOWED: the path exists, not with this method.
    #[derive(utoipa::IntoResponses)]
    #[response(status = 405, headers(("Allow" = String, description = "The methods the path has")))]
    pub struct MethodNotAllowed(pub ErrorBody);

    /// RESOURCE_EXHAUSTED: the body is larger than `http.body_limit`.
    #[derive(utoipa::IntoResponses)]
    #[response(status = 413)]
    pub struct PayloadTooLarge(pub ErrorBody);

    /// The request is not a WebSocket upgrade this server can make.
    #[derive(utoipa::IntoResponses)]
    #[response(status = 426)]
    pub struct UpgradeRequired(pub ErrorBody);

    /// RESOURCE_EXHAUSTED: a quota (sessions, participants, per session) or a rate (failed
    /// sign-ins, demo requests) is reached.
    #[derive(utoipa::IntoResponses)]
    #[response(status = 429, headers(("Retry-After" = u64, description = "Seconds to wait, for rates")))]
    pub struct TooManyRequests(pub ErrorBody);

    /// INTERNAL: our fault; the detail is in the log, not here.
    #[derive(utoipa::IntoResponses)]
    #[response(status = 500)]
    pub struct Internal(pub ErrorBody);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bare_405_becomes_method_not_allowed_and_keeps_allow() {
        let bare = Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, "GET,HEAD")
            .body(axum::body::Body::empty())
            .unwrap();
        let shaped = json_errors(bare).await;
        assert_eq!(shaped.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(shaped.headers()[header::ALLOW], "GET,HEAD");
        let bytes = axum::body::to_bytes(shaped.into_body(), 4096).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["code"], "METHOD_NOT_ALLOWED");
        assert_eq!(body["status"], 405);
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let r = ApiError::too_many("slow down", Duration::from_millis(1500)).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let r = ApiError::too_many("slow down", Duration::ZERO).into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
