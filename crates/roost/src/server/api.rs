//! The `/v1` JSON API of DESIGN.md.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value as JsonValue};

pub use super::body::JsonBody;
use super::body::{encode, json_answer};
use super::error::ApiError;
use super::json::{empty_object, ActorJson, BatchBody, BatchJson, QueryBody, ResultJson};
use super::AppState;
use crate::actor_id::ActorId;
use crate::host::ActorState;

pub fn actor_id(raw: &str) -> Result<ActorId, ApiError> {
    ActorId::new(raw).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_actor_id", e.to_string()))
}

/// The `{id}` of an actor route, validated. A segment that does not percent-decode to UTF-8
/// is `invalid_actor_id` too: axum's own rejection would answer plain text, outside the
/// documented error shape.
pub struct ActorPath(pub ActorId);

impl<S: Send + Sync> FromRequestParts<S> for ActorPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await.map_err(|_| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_actor_id", "actor id is not valid UTF-8")
        })?;
        actor_id(&raw).map(Self)
    }
}

/// Runs one statement. Its answer is charged to the request's memory while its rows are
/// collected and encoded on the blocking thread, so only the encoded bytes come back.
pub async fn query(
    State(state): State<AppState>,
    ActorPath(id): ActorPath,
    request: Request,
) -> Result<Response, ApiError> {
    state.auth().check_actor(request.headers(), &id)?;
    let JsonBody { value, memory } = JsonBody::<QueryBody>::from_request(request, &state).await?;
    let statement = value.into_statement(state.config().statement_bytes_max)?;
    let meter = memory.clone();
    let encoded = state
        .host()
        .with_db(&id, move |db| {
            let result = db.execute_metered(&statement.sql, &statement.params, &meter)?;
            Ok(encode(&ResultJson(&result)))
        })
        .await?;
    Ok(json_answer(encoded, memory))
}

pub async fn batch(
    State(state): State<AppState>,
    ActorPath(id): ActorPath,
    request: Request,
) -> Result<Response, ApiError> {
    state.auth().check_actor(request.headers(), &id)?;
    let JsonBody { value, memory } = JsonBody::<BatchBody>::from_request(request, &state).await?;
    let max = state.config().statement_bytes_max;
    let statements =
        value.statements.into_iter().map(|s| s.into_statement(max)).collect::<Result<Vec<_>, _>>()?;
    let transaction = value.transaction;
    let meter = memory.clone();
    let encoded = state
        .host()
        .with_db(&id, move |db| {
            let results = db.batch_metered(&statements, transaction, &meter)?;
            Ok(encode(&BatchJson(&results)))
        })
        .await?;
    Ok(json_answer(encoded, memory))
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
        .filter(|(id, _, _)| state.auth().allows(&headers, id))
        .map(|(id, st, size_bytes)| ActorJson {
            id: id.to_string(),
            state: public_state(st),
            size_bytes,
            node: None,
        })
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
    ActorPath(id): ActorPath,
    headers: HeaderMap,
) -> Result<Json<JsonValue>, ApiError> {
    state.auth().check_actor(&headers, &id)?;
    let size_bytes = existing_size(&state, &id).await?;
    let actor_state = public_state(state.host().state(&id));
    let node = owner_node(&state, &id).await?;
    Ok(Json(json!(ActorJson { id: id.to_string(), state: actor_state, size_bytes, node })))
}

/// With several nodes, the node that owns `id` (this one when it is awake here).
async fn owner_node(state: &AppState, id: &ActorId) -> Result<Option<String>, ApiError> {
    let Some(cluster) = state.cluster().cloned() else { return Ok(None) };
    if state.host().state(id) == ActorState::Awake {
        return Ok(Some(cluster.node_id().to_string()));
    }
    let id = id.clone();
    match tokio::task::spawn_blocking(move || cluster.owner(&id)).await {
        Ok(Ok(node)) => Ok(node),
        Ok(Err(e)) => Err(ApiError::from(crate::vfs::Error::Store(e))),
        Err(_) => Err(ApiError::internal()),
    }
}

/// The size of an actor that has data; `not_found` otherwise.
pub async fn existing_size(state: &AppState, id: &ActorId) -> Result<u64, ApiError> {
    let size = state.host().size_bytes(id).await?;
    size.ok_or_else(|| ApiError::not_found(format!("actor {id} has no data")))
}

pub async fn sleep(
    State(state): State<AppState>,
    ActorPath(id): ActorPath,
    headers: HeaderMap,
) -> Result<Json<JsonValue>, ApiError> {
    state.auth().check_actor(&headers, &id)?;
    state.host().sleep(&id).await?;
    Ok(Json(empty_object()))
}

pub async fn delete(
    State(state): State<AppState>,
    ActorPath(id): ActorPath,
    headers: HeaderMap,
) -> Result<Json<JsonValue>, ApiError> {
    state.auth().check_actor(&headers, &id)?;
    state.host().delete(&id).await?;
    Ok(Json(empty_object()))
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}
