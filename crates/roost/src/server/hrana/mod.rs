//! Hrana over HTTP, versions 2 and 3 (libSQL's HRANA_3_SPEC.md and HTTP_V2_SPEC.md), in JSON
//! and (version 3) protobuf, answering as sqld does so that libSQL clients work against Roost:
//!
//! - `GET /db/{id}/v2`, `GET /db/{id}/v3`, `GET /db/{id}/v3-protobuf` (and `/v2`, `/v3`,
//!   `/v3-protobuf`): version checks (2xx); `@libsql/client` probes `v3-protobuf` first;
//! - `POST /db/{id}/v2/pipeline`, `POST /db/{id}/v3/pipeline`: a pipeline of stream requests;
//! - `POST /db/{id}/v3/cursor`: a batch whose results come back as newline-delimited JSON;
//! - `POST /db/{id}/v3-protobuf/pipeline`, `POST /db/{id}/v3-protobuf/cursor`: the same in
//!   protobuf ([`protobuf`]; `application/x-protobuf`), the cursor's answer a sequence of
//!   length-delimited messages (`CursorRespBody`, then `CursorEntry`s);
//! - `POST /v2/pipeline`, `POST /v3/pipeline`, `POST /v3/cursor` and their `v3-protobuf`
//!   twins: the same, with the actor taken from the `x-namespace` header.
//!
//! - `GET /db/{id}` (and `GET /` with `x-namespace`) upgraded to a WebSocket: Hrana over
//!   WebSocket, subprotocols `hrana1`..`hrana3` (JSON) and `hrana3-protobuf` ([`ws`]);
//! - `POST /db/{id}/v1/execute`, `POST /db/{id}/v1/batch` (and `/v1/...` with `x-namespace`):
//!   sqld's HTTP API v1 ([`v1`]).
//!
//! Both encodings share one executor: protobuf requests become the JSON path's structures
//! ([`proto`]) as they are decoded, and [`exec`] writes answers in the request's encoding.
//! Failures of a whole HTTP request (bad baton, malformed body, auth, limits) answer with the
//! same status and JSON error body in both encodings: `@libsql/client` reads a JSON error body
//! whatever the encoding, and nothing reads sqld's protobuf-encoded ones. Streams and batons
//! live in [`stream`].

mod exec;
mod proto;
mod protobuf;
mod socket;
mod stream;
mod v1;
mod ws;

use std::sync::Arc;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use tokio::sync::Semaphore;

use self::exec::{Ctx, Encoding};
use self::proto::{CursorReqBody, PipelineReqBody};
use self::stream::{Stream, Streams};
use super::api::actor_id;
use super::body::{answer_with_type, body_bytes, buffer_error, encode, json_answer, parse_json, JsonBody};
use super::error::ApiError;
use super::AppState;
use crate::actor_id::ActorId;
use crate::host::RequestMemory;

#[derive(Clone)]
struct Hrana {
    app: AppState,
    streams: Arc<Streams>,
    /// Permits of open WebSocket connections (`hrana_ws_sockets_max`).
    sockets: Arc<Semaphore>,
}

/// How many of [`decode_for_fuzzing`]'s decodings succeeded, by encoding.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Decoded {
    pub json: usize,
    pub protobuf: usize,
}

/// Decodes `bytes` as each Hrana request body and message, JSON and protobuf (HTTP pipeline
/// and cursor bodies, sqld's v1 bodies, WebSocket messages) and resolves what decoded the way
/// the handlers do, for every protocol version, with `statement_bytes_max`. Answers how many
/// decodings succeeded. The fuzz targets (`server::fuzzing`) require that this never panics.
pub(super) fn decode_for_fuzzing(bytes: &[u8], statement_bytes_max: usize) -> Decoded {
    let mut decoded = Decoded::default();
    for version in 1..=3 {
        let ctx = Ctx { version, encoding: Encoding::Json, statement_bytes_max, sql_texts_max: 4 };
        if let Ok(body) = parse_json::<PipelineReqBody>(bytes) {
            decoded.json += 1;
            resolve_all_for_fuzzing(body.requests, &ctx);
        }
        if let Ok(body) = parse_json::<CursorReqBody>(bytes) {
            decoded.json += 1;
            resolve_all_for_fuzzing(vec![proto::StreamRequest::Batch { batch: body.batch }], &ctx);
        }
        decoded.json += v1::decode_for_fuzzing(bytes, &ctx) + ws::decode_for_fuzzing(bytes, &ctx);
    }
    let ctx = Ctx { version: 3, encoding: Encoding::Protobuf, statement_bytes_max, sql_texts_max: 4 };
    let _ = protobuf::parse_bytes_bound(bytes);
    let pipeline = protobuf::decode::<protobuf::PipelineReqBody>(bytes).and_then(PipelineReqBody::try_from);
    if let Ok(body) = pipeline {
        decoded.protobuf += 1;
        resolve_all_for_fuzzing(body.requests, &ctx);
    }
    let cursor = protobuf::decode::<protobuf::CursorReqBody>(bytes).and_then(CursorReqBody::try_from);
    if let Ok(body) = cursor {
        decoded.protobuf += 1;
        resolve_all_for_fuzzing(vec![proto::StreamRequest::Batch { batch: body.batch }], &ctx);
    }
    decoded.protobuf += ws::decode_protobuf_for_fuzzing(bytes, &ctx);
    decoded
}

/// Resolves `requests` in order on one stream's stored texts, as a pipeline would.
fn resolve_all_for_fuzzing(requests: Vec<proto::StreamRequest>, ctx: &Ctx) {
    let mut sqls = std::collections::HashMap::new();
    for request in requests {
        if exec::resolve_for_fuzzing(&mut sqls, request, ctx).is_err() {
            break;
        }
    }
}

/// The Hrana routes, with their own stream registry.
pub(super) fn router(state: &AppState) -> Router<AppState> {
    let config = state.config();
    let hrana = Hrana {
        app: state.clone(),
        streams: Streams::new(config.hrana_stream_idle_ms, config.hrana_streams_max, config.retry_after_ms),
        sockets: Arc::new(Semaphore::new(config.hrana_ws_sockets_max)),
    };
    Router::new()
        .route("/v2", get(version))
        .route("/v3", get(version))
        .route("/db/{id}/v2", get(version_of))
        .route("/db/{id}/v3", get(version_of))
        .route("/v3-protobuf", get(version))
        .route("/db/{id}/v3-protobuf", get(version_of))
        .route("/v2/pipeline", post(pipeline_v2))
        .route("/v3/pipeline", post(pipeline_v3))
        .route("/v3/cursor", post(cursor_v3))
        .route("/db/{id}/v2/pipeline", post(pipeline_v2_of))
        .route("/db/{id}/v3/pipeline", post(pipeline_v3_of))
        .route("/db/{id}/v3/cursor", post(cursor_v3_of))
        .route("/v3-protobuf/pipeline", post(pipeline_protobuf))
        .route("/v3-protobuf/cursor", post(cursor_protobuf))
        .route("/db/{id}/v3-protobuf/pipeline", post(pipeline_protobuf_of))
        .route("/db/{id}/v3-protobuf/cursor", post(cursor_protobuf_of))
        .route("/", get(websocket))
        .route("/db/{id}", get(websocket_of))
        .route("/db/{id}/", get(websocket_of))
        .route("/v1", get(version_v1))
        .route("/db/{id}/v1", get(version_v1_of))
        .route("/v1/execute", post(execute_v1))
        .route("/v1/batch", post(batch_v1))
        .route("/db/{id}/v1/execute", post(execute_v1_of))
        .route("/db/{id}/v1/batch", post(batch_v1_of))
        .with_state(hrana)
}

async fn pipeline_v2(State(hrana): State<Hrana>, request: Request) -> Response {
    pipeline(hrana, 2, Encoding::Json, None, request).await
}

async fn pipeline_v3(State(hrana): State<Hrana>, request: Request) -> Response {
    pipeline(hrana, 3, Encoding::Json, None, request).await
}

async fn cursor_v3(State(hrana): State<Hrana>, request: Request) -> Response {
    cursor(hrana, Encoding::Json, None, request).await
}

async fn pipeline_v2_of(State(hrana): State<Hrana>, Path(id): Path<String>, request: Request) -> Response {
    pipeline(hrana, 2, Encoding::Json, Some(id), request).await
}

async fn pipeline_v3_of(State(hrana): State<Hrana>, Path(id): Path<String>, request: Request) -> Response {
    pipeline(hrana, 3, Encoding::Json, Some(id), request).await
}

async fn cursor_v3_of(State(hrana): State<Hrana>, Path(id): Path<String>, request: Request) -> Response {
    cursor(hrana, Encoding::Json, Some(id), request).await
}

async fn pipeline_protobuf(State(hrana): State<Hrana>, request: Request) -> Response {
    pipeline(hrana, 3, Encoding::Protobuf, None, request).await
}

async fn cursor_protobuf(State(hrana): State<Hrana>, request: Request) -> Response {
    cursor(hrana, Encoding::Protobuf, None, request).await
}

async fn pipeline_protobuf_of(
    State(hrana): State<Hrana>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    pipeline(hrana, 3, Encoding::Protobuf, Some(id), request).await
}

async fn cursor_protobuf_of(
    State(hrana): State<Hrana>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    cursor(hrana, Encoding::Protobuf, Some(id), request).await
}

async fn execute_v1(State(hrana): State<Hrana>, request: Request) -> Response {
    v1::execute(hrana, None, request).await
}

async fn batch_v1(State(hrana): State<Hrana>, request: Request) -> Response {
    v1::batch(hrana, None, request).await
}

async fn execute_v1_of(State(hrana): State<Hrana>, Path(id): Path<String>, request: Request) -> Response {
    v1::execute(hrana, Some(id), request).await
}

async fn batch_v1_of(State(hrana): State<Hrana>, Path(id): Path<String>, request: Request) -> Response {
    v1::batch(hrana, Some(id), request).await
}

async fn websocket(State(hrana): State<Hrana>, request: Request) -> Response {
    websocket_to(hrana, None, request)
}

async fn websocket_of(State(hrana): State<Hrana>, Path(id): Path<String>, request: Request) -> Response {
    websocket_to(hrana, Some(id), request)
}

/// The actor is checked before the upgrade; the token comes with `hello` (or, when `hello`
/// has none, from the upgrade request's `Authorization` header).
fn websocket_to(hrana: Hrana, path: Option<String>, mut request: Request) -> Response {
    let Ok(upgrade) = socket::Upgrade::from_request(&mut request) else {
        return ApiError::not_found("expected a WebSocket upgrade (Hrana over WebSocket)").into_response();
    };
    match actor_of(path, request.headers()) {
        Ok(id) => ws::upgrade(hrana, id, request.headers(), upgrade),
        Err(error) => error.into_response(),
    }
}

const VERSION_V1_TEXT: &str = "This is sqld HTTP API v1";

async fn version_v1() -> &'static str {
    VERSION_V1_TEXT
}

async fn version_v1_of(Path(id): Path<String>) -> Result<&'static str, ApiError> {
    actor_id(&id)?;
    Ok(VERSION_V1_TEXT)
}

const VERSION_TEXT: &str = "Hello, this is HTTP API v2 (Hrana over HTTP)";

async fn version() -> &'static str {
    VERSION_TEXT
}

async fn version_of(Path(id): Path<String>) -> Result<&'static str, ApiError> {
    actor_id(&id)?;
    Ok(VERSION_TEXT)
}

/// The actor of a request: from the path, or else from the `x-namespace` header; then the
/// token is checked against it.
fn authorized_actor(hrana: &Hrana, path: Option<String>, headers: &HeaderMap) -> Result<ActorId, ApiError> {
    let id = actor_of(path, headers)?;
    hrana.app.auth().check_actor(headers, &id)?;
    Ok(id)
}

/// The actor of a request: from the path, or else from the `x-namespace` header.
fn actor_of(path: Option<String>, headers: &HeaderMap) -> Result<ActorId, ApiError> {
    Ok(match path {
        Some(id) => actor_id(&id)?,
        None => {
            let namespace = headers
                .get("x-namespace")
                .ok_or_else(|| ApiError::bad_request("missing x-namespace header (or use /db/{id}/...)"))?;
            actor_id(
                namespace
                    .to_str()
                    .map_err(|_| ApiError::bad_request("x-namespace is not a valid actor id"))?,
            )?
        }
    })
}

impl Hrana {
    fn ctx(&self, version: u8, encoding: Encoding) -> Ctx {
        let config = self.app.config();
        Ctx {
            version,
            encoding,
            statement_bytes_max: config.statement_bytes_max,
            sql_texts_max: config.hrana_sql_texts_max,
        }
    }

    /// The stream of `baton` (a new one when there is none).
    fn stream(&self, baton: Option<&str>, id: ActorId) -> Result<Stream, ApiError> {
        match baton {
            None => self.streams.open(id, self.app.host().clone()),
            Some(baton) => self.streams.take(baton, &id),
        }
    }

    /// After a request: the new baton of a stream still open (`None` once closed).
    async fn finish(&self, stream: Stream) -> Option<String> {
        if stream.closed {
            stream.close().await;
            None
        } else {
            Some(self.streams.park(stream))
        }
    }
}

/// Reads a request body in `encoding`: JSON into `J`, or protobuf into `P` converted to `J`;
/// what decoding takes is charged to the request's account first.
async fn read_body<J, P>(
    hrana: &Hrana,
    encoding: Encoding,
    request: Request,
) -> Result<(J, RequestMemory), ApiError>
where
    J: serde::de::DeserializeOwned,
    P: prost::Message + Default + TryInto<J, Error = ApiError>,
{
    match encoding {
        Encoding::Json => {
            let JsonBody { value, memory } = JsonBody::<J>::from_request(request, &hrana.app).await?;
            Ok((value, memory))
        }
        Encoding::Protobuf => {
            let (bytes, memory) = body_bytes(request, &hrana.app).await?;
            memory
                .charge(protobuf::parse_bytes_bound(&bytes))
                .map_err(|e| buffer_error(e, "decoding the request body"))?;
            let value = protobuf::decode::<P>(&bytes)?.try_into()?;
            Ok((value, memory))
        }
    }
}

async fn pipeline(
    hrana: Hrana,
    version: u8,
    encoding: Encoding,
    path: Option<String>,
    request: Request,
) -> Response {
    let served = async {
        let id = authorized_actor(&hrana, path, request.headers())?;
        let (body, memory) =
            read_body::<PipelineReqBody, protobuf::PipelineReqBody>(&hrana, encoding, request).await?;
        let mut stream = hrana.stream(body.baton.as_deref(), id)?;
        let ctx = hrana.ctx(version, encoding);
        let mut results = Vec::with_capacity(body.requests.len());
        for request in body.requests {
            let kind = request.kind();
            match exec::handle(&mut stream, request, &ctx, &memory).await {
                Ok(reply) => results.push(match encoding {
                    Encoding::Json => proto::wrap_ok(&reply),
                    Encoding::Protobuf => protobuf::stream_result(kind, &reply),
                }),
                Err(error) => {
                    stream.close().await;
                    return Err(error);
                }
            }
        }
        let baton = hrana.finish(stream).await;
        Ok::<_, ApiError>(match encoding {
            Encoding::Json => json_answer(pipeline_answer(baton, &results), memory),
            Encoding::Protobuf => {
                let body = protobuf::pipeline_answer(baton.as_deref(), &results);
                answer_with_type(body, memory, "application/x-protobuf")
            }
        })
    };
    served.await.unwrap_or_else(ApiError::into_hrana_response)
}

/// `{"baton": ..., "base_url": null, "results": [...]}` around results encoded already.
fn pipeline_answer(baton: Option<String>, results: &[Vec<u8>]) -> Vec<u8> {
    let head = encode(&json!({"baton": baton, "base_url": null}));
    let length = head.len() + 14 + results.iter().map(|r| r.len() + 1).sum::<usize>();
    let mut out = Vec::with_capacity(length);
    out.extend_from_slice(&head[..head.len() - 1]);
    out.extend_from_slice(b",\"results\":[");
    for (index, result) in results.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(result);
    }
    out.extend_from_slice(b"]}");
    out
}

async fn cursor(hrana: Hrana, encoding: Encoding, path: Option<String>, request: Request) -> Response {
    let served = async {
        let id = authorized_actor(&hrana, path, request.headers())?;
        let (body, memory) =
            read_body::<CursorReqBody, protobuf::CursorReqBody>(&hrana, encoding, request).await?;
        let mut stream = hrana.stream(body.baton.as_deref(), id)?;
        let ctx = hrana.ctx(3, encoding);
        let ran = exec::cursor(&mut stream, body.batch, &ctx, &memory).await;
        let entries = match ran {
            Ok(entries) => entries,
            Err(error) => {
                stream.close().await;
                return Err(error);
            }
        };
        let baton = hrana.finish(stream).await;
        // sqld's content types: the JSON cursor is text lines, the protobuf one a byte stream.
        let (mut body, content_type) = match encoding {
            Encoding::Json => {
                let mut head = encode(&json!({"baton": baton, "base_url": null}));
                head.push(b'\n');
                (head, "text/plain")
            }
            Encoding::Protobuf => (protobuf::cursor_head(baton.as_deref()), "application/octet-stream"),
        };
        body.extend(entries);
        Ok::<_, ApiError>(answer_with_type(body, memory, content_type))
    };
    served.await.unwrap_or_else(ApiError::into_hrana_response)
}
