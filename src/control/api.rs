//! The account API's handlers and JSON shapes (CONTRACT §2). Handlers only translate: JSON to a
//! rooms operation and back. The OpenAPI document is generated from the annotations here.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::error::responses::{
    BadRequest, Forbidden, Internal, MethodNotAllowed, NotFound, PayloadTooLarge, TooManyRequests, Unauthorized,
};
use super::extract::{Authenticated, JsonBody};
use super::paging::{self, Listing, PageQuery};
use crate::ids::{self, ParticipantId, SessionId};
use crate::rooms::model::{MediaType, Participant, ParticipantSubscription, Session, Subscriptions};
use crate::rooms::{NewParticipant, Rooms};

/// Longest `tag` accepted.
const MAX_TAG_LEN: usize = 256;
/// Most stream aliases per subscription, and the longest alias.
const MAX_ALIASES: usize = 16;
const MAX_ALIAS_LEN: usize = 64;
/// Most explicit subscriptions in one request.
const MAX_SUBSCRIPTIONS: usize = 1000;

/// Body of `POST /sessions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateSessionRequest {
    /// A label of the customer's: at most 256 characters, no control characters.
    #[schema(max_length = 256)]
    pub tag: Option<String>,
}

/// A session.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionBody {
    /// Its id.
    pub id: String,
    /// Its label, or null.
    pub tag: Option<String>,
}

/// Subscriptions: the body of `PUT .../participants/{participantId}` and of the
/// subscriptions endpoint.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SubscriptionsBody {
    /// Subscribe to everyone in this session, both ways.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Participants subscribed to one by one.
    #[serde(default)]
    pub participants: Option<Vec<ParticipantSubscriptionBody>>,
}

/// One explicit subscription.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ParticipantSubscriptionBody {
    /// The publisher.
    pub participant_id: String,
    /// Names for the publisher's streams.
    #[serde(default)]
    pub stream_aliases: Option<Vec<String>>,
}

/// Body of `POST /participants`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateParticipantRequest {
    /// Where the participant's events are POSTed: an absolute http or https URL. Internal
    /// destinations (loopback, private, link-local, ...) are refused unless the gateway allows
    /// them (`callbacks.allow_private`).
    pub callback_url: Option<String>,
    /// What it may publish.
    pub publish_permissions: Vec<MediaType>,
    /// A label: at most 256 characters, no control characters.
    #[schema(max_length = 256)]
    pub tag: Option<String>,
    /// The device API version its client speaks.
    pub device_api_version: Option<String>,
}

/// A participant.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantBody {
    /// Its id.
    pub id: String,
    /// What it may publish.
    pub publish_permissions: Vec<MediaType>,
    /// The sessions it is in.
    pub sessions: Vec<String>,
    /// Its label, or null.
    pub tag: Option<String>,
    /// Its event receiver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Its client's API version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_api_version: Option<String>,
}

/// Answer of `GET /sessions`: a page of the account's sessions in id order.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionsPage {
    /// The sessions, as `GET /sessions/{sessionId}` gives each.
    pub sessions: Vec<SessionBody>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Answer of `GET /participants`: a page of the account's participants in id order.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantsPage {
    /// The participants, as `GET /participants/{participantId}` gives each.
    pub participants: Vec<ParticipantBody>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Answer of `POST /participants`: the participant and its token.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedParticipant {
    /// The participant.
    pub participant: ParticipantBody,
    /// Its participant token (CONTRACT §3).
    pub token: String,
}

#[utoipa::path(post, path = "/v1/accounts/{accountId}/sessions", tag = "sessions",
    params(("accountId" = String, Path, description = "Account id")),
    request_body(content = Option<CreateSessionRequest>,
        description = "Optional: no body (with or without a Content-Type) is `{}`"),
    responses((status = 200, body = SessionBody),
        BadRequest, Unauthorized, Forbidden, MethodNotAllowed, PayloadTooLarge, TooManyRequests, Internal),
    security(("basic" = [])))]
/// Creates a session.
pub async fn create_session(
    State(app): State<AppState>,
    Authenticated(account): Authenticated,
    JsonBody(req): JsonBody<CreateSessionRequest>,
) -> Result<Json<SessionBody>, ApiError> {
    check_tag(req.tag.as_deref())?;
    let session = app.rooms.create_session(&account, req.tag).await?;
    Ok(Json(session_body(&session)))
}

#[utoipa::path(get, path = "/v1/accounts/{accountId}/sessions", tag = "sessions",
    params(("accountId" = String, Path, description = "Account id"), PageQuery),
    responses((status = 200, body = SessionsPage),
        BadRequest, Unauthorized, Forbidden, MethodNotAllowed, TooManyRequests, Internal),
    security(("basic" = [])))]
/// Lists the account's sessions, a page at a time, in id order: paging while sessions are made
/// never skips nor repeats one that exists throughout.
pub async fn list_sessions(
    State(app): State<AppState>,
    Authenticated(account): Authenticated,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<SessionsPage>, ApiError> {
    let paging = query?.check(Listing::Sessions)?;
    let after = paging.after.map(SessionId::from);
    app.rooms.read(|r| {
        let page = r.sessions_page(&account, after.as_ref(), paging.limit);
        let next_cursor =
            page.items.last().filter(|_| page.more).map(|s| paging::encode(Listing::Sessions, s.id.as_str()));
        Ok(Json(SessionsPage { sessions: page.items.into_iter().map(session_body).collect(), next_cursor }))
    })
}

#[utoipa::path(get, path = "/v1/accounts/{accountId}/sessions/{sessionId}", tag = "sessions",
    params(("accountId" = String, Path), ("sessionId" = String, Path)),
    responses((status = 200, body = SessionBody),
        Unauthorized, Forbidden, NotFound, MethodNotAllowed, TooManyRequests, Internal),
    security(("basic" = [])))]
/// Reads a session.
pub async fn get_session(
    State(app): State<AppState>,
    Authenticated(account): Authenticated,
    Path((_, session)): Path<(String, String)>,
) -> Result<Json<SessionBody>, ApiError> {
    let session = SessionId::from(session);
    app.rooms.read(|r| Ok(Json(session_body(r.session(&account, &session)?))))
}

#[utoipa::path(delete, path = "/v1/accounts/{accountId}/sessions/{sessionId}", tag = "sessions",
    params(("accountId" = String, Path), ("sessionId" = String, Path)),
    responses((status = 204, description = "Deleted; its participants left"),
        Unauthorized, Forbidden, NotFound, MethodNotAllowed, TooManyRequests, Internal),
    security(("basic" = [])))]
/// Deletes a session: its participants leave and their SIP legs get BYE.
pub async fn delete_session(
    State(app): State<AppState>,
    Authenticated(account): Authenticated,
    Path((_, session)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    app.rooms.delete_session(&account, &SessionId::from(session)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/accounts/{accountId}/sessions/{sessionId}/participants", tag = "sessions",
    params(("accountId" = String, Path), ("sessionId" = String, Path)),
    responses((status = 200, body = [ParticipantBody]),
        Unauthorized, Forbidden, NotFound, MethodNotAllowed, TooManyRequests, Internal),
    security(("basic" = [])))]
/// Lists the participants in a session.
pub async fn list_session_participants(
    State(app): State<AppState>,
    Authenticated(account): Authenticated,
    Path((_, session)): Path<(String, String)>,
) -> Result<Json<Vec<ParticipantBody>>, ApiError> {
    let session = SessionId::from(session);
    app.rooms.read(|r| {
        let members = r.members(&account, &session)?;
        Ok(Json(members.into_iter().map(|p| participant_body(r, p)).collect()))
    })
}

#[utoipa::path(put, path = "/v1/accounts/{accountId}/sessions/{sessionId}/participants/{participantId}",
    tag = "sessions",
    params(("accountId" = String, Path), ("sessionId" = String, Path), ("participantId" = String, Path)),
    request_body(content = Option<SubscriptionsBody>,
        description = "Its subscriptions; optional: no body is `{}` (no subscriptions)"),
    responses((status = 204, description = "Added (or updated)"),
        BadRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed, PayloadTooLarge, TooManyRequests, Internal),
    security(("basic" = [])))]
/// Adds a participant to a session and sets its subscriptions there.
pub async fn add_participant_to_session(
    State(app): State<AppState>,
    Authenticated(account): Authenticated,
    Path((_, session, participant)): Path<(String, String, String)>,
    JsonBody(body): JsonBody<SubscriptionsBody>,
) -> Result<StatusCode, ApiError> {
    let subscriptions = subscriptions_from(body)?;
    app.rooms
        .add_to_session(&account, &SessionId::from(session), &ParticipantId::from(participant), subscriptions)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/v1/accounts/{accountId}/sessions/{sessionId}/participants/{participantId}",
    tag = "sessions",
    params(("accountId" = String, Path), ("sessionId" = String, Path), ("participantId" = String, Path)),
    responses((status = 204, description = "Removed; in transfer mode its SIP leg gets BYE"),
        Unauthorized, Forbidden, NotFound, MethodNotAllowed, TooManyRequests, Internal),
    security(("basic" = [])))]
/// Removes a participant from a session.
pub async fn remove_participant_from_session(
    State(app): State<AppState>,
    Authenticated(account): Authenticated,
    Path((_, session, participant)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    app.rooms.remove_from_session(&account, &SessionId::from(session), &ParticipantId::from(participant)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get,
    path = "/v1/accounts/{accountId}/sessions/{sessionId}/participants/{participantId}/subscriptions",
    tag = "sessions",
    params(("accountId" = String, Path), ("sessionId" = String, Path), ("participantId" = String, Path)),
    responses((status = 200, body = SubscriptionsBody),
        Unauthorized, Forbidden, NotFound, MethodNotAllowed, TooManyRequests, Internal),
    security(("basic" = [])))]
/// Reads a participant's subscriptions in a session.
pub async fn get_subscriptions(
    State(app): State<AppState>,
    Authenticated(account): Authenticated,
    Path((_, session, participant)): Path<(String, String, String)>,
) -> Result<Json<SubscriptionsBody>, ApiError> {
    let (session, participant) = (SessionId::from(session), ParticipantId::from(participant));
    app.rooms.read(|r| Ok(Json(subscriptions_body(r.subscriptions(&account, &session, &participant)?))))
}

#[utoipa::path(put,
    path = "/v1/accounts/{accountId}/sessions/{sessionId}/participants/{participantId}/subscriptions",
    tag = "sessions",
    params(("accountId" = String, Path), ("sessionId" = String, Path), ("participantId" = String, Path)),
    request_body(content = Option<SubscriptionsBody>,
        description = "Optional: no body is `{}` (no subscriptions)"),
    responses((status = 204, description = "Replaced"),
        BadRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed, PayloadTooLarge, TooManyRequests, Internal),
    security(("basic" = [])))]
/// Replaces a participant's subscriptions in a session.
pub async fn put_subscriptions(
    State(app): State<AppState>,
    Authenticated(account): Authenticated,
    Path((_, session, participant)): Path<(String, String, String)>,
    JsonBody(body): JsonBody<SubscriptionsBody>,
) -> Result<StatusCode, ApiError> {
    let subscriptions = subscriptions_from(body)?;
    app.rooms
        .set_subscriptions(&account, &SessionId::from(session), &ParticipantId::from(participant), subscriptions)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/accounts/{accountId}/participants", tag = "participants",
    params(("accountId" = String, Path)),
    request_body = CreateParticipantRequest,
    responses((status = 200, body = CreatedParticipant),
        BadRequest, Unauthorized, Forbidden, MethodNotAllowed, PayloadTooLarge, TooManyRequests, Internal),
    security(("basic" = [])))]
/// Creates a participant and mints its token.
pub async fn create_participant(
    State(app): State<AppState>,
    Authenticated(account): Authenticated,
    JsonBody(req): JsonBody<CreateParticipantRequest>,
) -> Result<Json<CreatedParticipant>, ApiError> {
    check_tag(req.tag.as_deref())?;
    if let Some(url) = &req.callback_url {
        app.callback_targets.check_url(url)?;
    }
    if req.device_api_version.as_ref().is_some_and(|v| v.len() > 16) {
        return Err(ApiError::invalid("deviceApiVersion is at most 16 characters"));
    }
    let new = NewParticipant {
        tag: req.tag,
        callback_url: req.callback_url,
        publish_permissions: req.publish_permissions,
        device_api_version: req.device_api_version,
    };
    let participant = app.rooms.create_participant(&account, new).await?;
    let token = app.minter.mint(&participant.id, None, None, None, std::time::SystemTime::now());
    let body = app.rooms.read(|r| participant_body(r, &participant));
    Ok(Json(CreatedParticipant { participant: body, token }))
}

#[utoipa::path(get, path = "/v1/accounts/{accountId}/participants", tag = "participants",
    params(("accountId" = String, Path, description = "Account id"), PageQuery),
    responses((status = 200, body = ParticipantsPage),
        BadRequest, Unauthorized, Forbidden, MethodNotAllowed, TooManyRequests, Internal),
    security(("basic" = [])))]
/// Lists the account's participants, a page at a time, in id order (as sessions).
pub async fn list_participants(
    State(app): State<AppState>,
    Authenticated(account): Authenticated,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<ParticipantsPage>, ApiError> {
    let paging = query?.check(Listing::Participants)?;
    let after = paging.after.map(ParticipantId::from);
    app.rooms.read(|r| {
        let page = r.participants_page(&account, after.as_ref(), paging.limit);
        let next_cursor =
            page.items.last().filter(|_| page.more).map(|p| paging::encode(Listing::Participants, p.id.as_str()));
        let participants = page.items.into_iter().map(|p| participant_body(r, p)).collect();
        Ok(Json(ParticipantsPage { participants, next_cursor }))
    })
}

#[utoipa::path(get, path = "/v1/accounts/{accountId}/participants/{participantId}", tag = "participants",
    params(("accountId" = String, Path), ("participantId" = String, Path)),
    responses((status = 200, body = ParticipantBody),
        Unauthorized, Forbidden, NotFound, MethodNotAllowed, TooManyRequests, Internal),
    security(("basic" = [])))]
/// Reads a participant.
pub async fn get_participant(
    State(app): State<AppState>,
    Authenticated(account): Authenticated,
    Path((_, participant)): Path<(String, String)>,
) -> Result<Json<ParticipantBody>, ApiError> {
    let id = ParticipantId::from(participant);
    app.rooms.read(|r| Ok(Json(participant_body(r, r.participant(&account, &id)?))))
}

#[utoipa::path(delete, path = "/v1/accounts/{accountId}/participants/{participantId}", tag = "participants",
    params(("accountId" = String, Path), ("participantId" = String, Path)),
    responses((status = 204, description = "Deleted; it left its sessions"),
        Unauthorized, Forbidden, NotFound, MethodNotAllowed, TooManyRequests, Internal),
    security(("basic" = [])))]
/// Deletes a participant; it leaves every session.
pub async fn delete_participant(
    State(app): State<AppState>,
    Authenticated(account): Authenticated,
    Path((_, participant)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    app.rooms.delete_participant(&account, &ParticipantId::from(participant)).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn session_body(s: &Session) -> SessionBody {
    SessionBody { id: s.id.to_string(), tag: s.tag.clone() }
}

fn participant_body(rooms: &Rooms, p: &Participant) -> ParticipantBody {
    ParticipantBody {
        id: p.id.to_string(),
        publish_permissions: p.publish_permissions.clone(),
        sessions: rooms.sessions_of(&p.id).into_iter().map(|s| s.to_string()).collect(),
        tag: p.tag.clone(),
        callback_url: p.callback_url.clone(),
        device_api_version: p.device_api_version.clone(),
    }
}

fn subscriptions_body(s: &Subscriptions) -> SubscriptionsBody {
    SubscriptionsBody {
        session_id: s.session_id.as_ref().map(|s| s.to_string()),
        participants: Some(
            s.participants
                .iter()
                .map(|p| ParticipantSubscriptionBody {
                    participant_id: p.participant_id.to_string(),
                    stream_aliases: Some(p.stream_aliases.clone()),
                })
                .collect(),
        ),
    }
}

fn subscriptions_from(body: SubscriptionsBody) -> Result<Subscriptions, ApiError> {
    let listed = body.participants.unwrap_or_default();
    if listed.len() > MAX_SUBSCRIPTIONS {
        return Err(ApiError::invalid(format!("at most {MAX_SUBSCRIPTIONS} participants per subscription list")));
    }
    if let Some(sid) = &body.session_id
        && !ids::is_valid_id(sid)
    {
        return Err(ApiError::invalid("sessionId is not a valid id"));
    }
    let mut participants = Vec::with_capacity(listed.len());
    for entry in listed {
        if !ids::is_valid_id(&entry.participant_id) {
            return Err(ApiError::invalid(format!("participantId {:?} is not a valid id", entry.participant_id)));
        }
        let aliases = entry.stream_aliases.unwrap_or_default();
        if aliases.len() > MAX_ALIASES || aliases.iter().any(|a| a.is_empty() || a.len() > MAX_ALIAS_LEN) {
            return Err(ApiError::invalid(format!(
                "streamAliases: at most {MAX_ALIASES}, each 1 to {MAX_ALIAS_LEN} characters"
            )));
        }
        participants.push(ParticipantSubscription {
            participant_id: ParticipantId::from(entry.participant_id),
            stream_aliases: aliases,
        });
    }
    Ok(Subscriptions { session_id: body.session_id.map(SessionId::from), participants })
}

/// A tag is a label: at most [`MAX_TAG_LEN`] characters, none of them control characters (C0,
/// DEL, C1), which would travel into logs, callbacks and other systems' displays.
fn check_tag(tag: Option<&str>) -> Result<(), ApiError> {
    let Some(tag) = tag else { return Ok(()) };
    if tag.chars().count() > MAX_TAG_LEN {
        return Err(ApiError::invalid(format!("tag is at most {MAX_TAG_LEN} characters")));
    }
    if let Some(c) = tag.chars().find(|c| c.is_control()) {
        return Err(ApiError::invalid(format!("tag cannot contain control characters (found U+{:04X})", u32::from(c))));
    }
    Ok(())
}
