//! Request bodies and answers inside the memory budget's `request_buffers` pool.
//!
//! Invariants:
//! - every request body except an import's (which streams to a spool file) is read in full by
//!   [`buffer_body`] before any handler runs, its bytes charged to the request's
//!   [`RequestMemory`] chunk by chunk; so a handler that answers early (unauthorized, invalid
//!   id, an endpoint that takes no body) never leaves unread bytes on a kept-alive connection;
//! - a request refused before its body was read answers with `Connection: close`, so a client
//!   never writes its next request into a connection the server is dropping;
//! - parsing a JSON body is charged before it runs, with a bound on what the parsed values can
//!   take ([`parse_bytes_bound`]); an answer's bytes were charged while its rows were
//!   collected, and its body holds the request's account until the body has been sent.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::ApiError;
use super::AppState;
use crate::host::{BufferError, RequestMemory};

/// What parsing may allocate per structural JSON character (`[`, `{`, `,`, `:`): every value
/// in a body follows one, and a parsed value costs at most a `serde_json::Value` (32 bytes),
/// a growing vector's slack and the SQL value built from it.
const PARSE_BYTES_PER_TOKEN: u64 = 96;

/// An upper bound of the memory that parsing `body` into requests takes, beyond the body.
pub fn parse_bytes_bound(body: &[u8]) -> u64 {
    let tokens = body.iter().filter(|b| matches!(b, b'[' | b'{' | b',' | b':')).count() as u64;
    body.len() as u64 + PARSE_BYTES_PER_TOKEN * (tokens + 1)
}

/// Adds `Connection: close` to an answer given before the request body was read.
pub fn closing(mut response: Response) -> Response {
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A buffer charge that failed, as an API error: too large for the pool is the request's own
/// limit (413); a busy pool is `overloaded` (503, retry).
pub fn buffer_error(error: BufferError, what: &str) -> ApiError {
    match error {
        BufferError::TooLarge { bytes_max } => {
            ApiError::too_large(format!("{what} needs more than the {bytes_max}-byte request memory limit"))
        }
        BufferError::Full { retry_after_ms } => {
            ApiError::overloaded(format!("request memory is busy ({what})"), retry_after_ms)
        }
    }
}

fn is_import(request: &Request) -> bool {
    request.method() == Method::PUT && request.uri().path().ends_with("/import")
}

/// Reads and charges the whole body (up to the body limit) before the handler runs; the
/// request's account travels in its extensions.
pub async fn buffer_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if is_import(&request) {
        return next.run(request).await;
    }
    let limit = state.config().body_bytes_max;
    let memory = state.host().request_memory();
    let (mut parts, body) = request.into_parts();
    let declared =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return closing(ApiError::too_large("request body is larger than the limit").into_response());
    }
    let bytes = match read_charged(body, limit, &memory).await {
        Ok(bytes) => bytes,
        Err(error) => return closing(error.into_response()),
    };
    parts.extensions.insert(memory);
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

async fn read_charged(body: Body, limit: usize, memory: &RequestMemory) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ApiError::bad_request("cannot read the request body"))?;
        total += chunk.len();
        if total > limit {
            return Err(ApiError::too_large("request body is larger than the limit"));
        }
        memory.charge(chunk.len() as u64).map_err(|e| buffer_error(e, "the request body"))?;
        chunks.push(chunk);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => {
            // Joining needs the bytes twice for a moment.
            memory.charge(total as u64).map_err(|e| buffer_error(e, "the request body"))?;
            let joined = Bytes::from(chunks.concat());
            drop(chunks);
            memory.release(total as u64);
            joined
        }
    })
}

/// The request's account (a fresh one when the body did not pass [`buffer_body`]).
pub fn request_memory(state: &AppState, request: &Request) -> RequestMemory {
    request.extensions().get::<RequestMemory>().cloned().unwrap_or_else(|| state.host().request_memory())
}

/// A JSON body parsed inside the request's memory account. Failures are API errors:
/// `payload_too_large` past the body limit, `bad_request` for anything that does not parse.
pub struct JsonBody<T> {
    pub value: T,
    pub memory: RequestMemory,
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let memory = request_memory(state, &req);
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large("request body is larger than the limit")
            } else {
                ApiError::bad_request("cannot read the request body")
            }
        })?;
        memory.charge(parse_bytes_bound(&bytes)).map_err(|e| buffer_error(e, "parsing the request body"))?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
        Ok(Self { value, memory })
    }
}

/// Encodes `value` as JSON (answers' bytes were charged when their rows were collected).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("answers serialize")
}

/// A JSON answer whose body keeps the request's account until it has been sent.
pub fn json_answer(bytes: Vec<u8>, memory: RequestMemory) -> Response {
    answer_with_type(bytes, memory, "application/json")
}

/// An answer of `content_type` that keeps the request's account until it has been sent.
pub fn answer_with_type(bytes: Vec<u8>, memory: RequestMemory, content_type: &'static str) -> Response {
    let length = bytes.len();
    // The stream's state holds the account: it is dropped when the body is polled past its
    // only chunk, i.e. once that chunk was handed to the connection.
    let chunks =
        futures_util::stream::unfold((Some(Bytes::from(bytes)), memory), |(chunk, memory)| async move {
            let chunk = chunk?;
            Some((Ok::<_, std::convert::Infallible>(chunk), (None, memory)))
        });
    let mut response = Body::from_stream(chunks).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_bound_covers_values() {
        let body = br#"{"sql":"x","params":[1,2,3]}"#;
        let tokens = 2 + 2 + 2 + 1;
        assert_eq!(parse_bytes_bound(body), body.len() as u64 + PARSE_BYTES_PER_TOKEN * (tokens + 1));
    }
}
