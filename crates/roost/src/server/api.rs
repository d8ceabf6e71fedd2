//! The `/v1` JSON API of DESIGN.md.

use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value as JsonValue};

use super::error::ApiError;
use super::json::{empty_object, result_to_json, ActorJson, BatchBody, QueryBody};
use super::AppState;
use crate::actor_id::ActorId;
use crate::host::ActorState;

/// A JSON body whose failures are API errors: `payload_too_large` past the body limit,
/// `bad_request` for anything that does not parse into `T`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large("request body is larger than the limit")
            } else {
                ApiError::bad_request("cannot read the request body")
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

pub fn actor_id(raw: &str) -> Result<ActorId, ApiError> {
    ActorId::new(raw).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_actor_id", e.to_string()))
}

pub async fn query(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<QueryBody>,
) -> Result<Json<JsonValue>, ApiError> {
    let id = actor_id(&id)?;
    state.auth().check_actor(&headers, &id)?;
    let statement = body.into_statement(state.config().statement_bytes_max)?;
    let result = state.host().execute(&id, statement.sql, statement.params).await?;
    Ok(Json(result_to_json(&result)))
}

pub async fn batch(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<BatchBody>,
) -> Result<Json<JsonValue>, ApiError> {
    let id = actor_id(&id)?;
    state.auth().check_actor(&headers, &id)?;
    let max = state.config().statement_bytes_max;
    let statements =
        body.statements.into_iter().map(|s| s.into_statement(max)).collect::<Result<Vec<_>, _>>()?;
    let results = state.host().batch(&id, statements, body.transaction).await?;
    Ok(Json(json!({"results": results.iter().map(result_to_json).collect::<Vec<_>>()})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Most actors in one listing page.
const LIST_LIMIT_MAX: usize = 1000;

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JsonValue>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    state.auth().check_prefix(&headers, &query.prefix)?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > LIST_LIMIT_MAX {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {LIST_LIMIT_MAX}")));
    }
    let after = query.cursor.as_deref().map(actor_id).transpose()?;
    // A page may be short (the listing bounds the deleted actors it passes over per call);
    // the cursor then still points past what was examined.
    let listed = state.host().list(&query.prefix, after, limit).await?;
    let next_cursor = listed.next_after.map(|id| id.to_string());
    let actors: Vec<ActorJson> = listed
        .actors
        .into_iter()
        .map(|(id, st, size_bytes)| ActorJson { id: id.to_string(), state: public_state(st), size_bytes })
        .collect();
    Ok(Json(json!({"actors": actors, "next_cursor": next_cursor})))
}

fn public_state(state: ActorState) -> &'static str {
    match state {
        ActorState::Awake | ActorState::Poisoned => "awake",
        ActorState::Waking => "waking",
        ActorState::Asleep | ActorState::Sleeping => "asleep",
    }
}

pub async fn get_actor(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<JsonValue>, ApiError> {
    let id = actor_id(&id)?;
    state.auth().check_actor(&headers, &id)?;
    let size_bytes = existing_size(&state, &id).await?;
    let actor_state = public_state(state.host().state(&id));
    Ok(Json(json!(ActorJson { id: id.to_string(), state: actor_state, size_bytes })))
}

/// The size of an actor that has data; `not_found` otherwise.
pub async fn existing_size(state: &AppState, id: &ActorId) -> Result<u64, ApiError> {
    let size = state.host().size_bytes(id).await?;
    size.ok_or_else(|| ApiError::not_found(format!("actor {id} has no data")))
}

pub async fn sleep(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<JsonValue>, ApiError> {
    let id = actor_id(&id)?;
    state.auth().check_actor(&headers, &id)?;
    state.host().sleep(&id).await?;
    Ok(Json(empty_object()))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<JsonValue>, ApiError> {
    let id = actor_id(&id)?;
    state.auth().check_actor(&headers, &id)?;
    state.host().delete(&id).await?;
    Ok(Json(empty_object()))
}

pub async fn healthz() -> Json<JsonValue> {
    Json(json!({"status": "ok"}))
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}
