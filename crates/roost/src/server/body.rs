//! Request bodies and answers inside the memory budget's `request_buffers` pool.
//!
//! Invariants:
//! - every request body except an import's (which streams to a spool file) is read in full by
//!   [`buffer_body`] before any handler runs, its bytes charged to the request's
//!   [`RequestMemory`] chunk by chunk; so a handler that answers early (unauthorized, invalid
//!   id, an endpoint that takes no body) never leaves unread bytes on a kept-alive connection;
//! - a body over the limit (or that the request pool cannot hold) is read to its end and
//!   discarded, up to `DRAIN_FACTOR` times the limit, so the client reads the answer on a
//!   connection that stays open; a request refused without reading its body answers with
//!   `Connection: close`, so a client never writes its next request into a connection the
//!   server is dropping;
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
    let path = parts.uri.path().to_string();
    let declared =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let drain_max = (limit as u64).saturating_mul(DRAIN_FACTOR);
    if declared.is_some_and(|length| length > drain_max) {
        return closing(
            ApiError::too_large("request body is larger than the limit").into_response_for(&path),
        );
    }
    let bytes = match read_charged(body, limit, &memory).await {
        Ok(bytes) => bytes,
        Err(Refused { error, rest: Some(rest) }) => {
            // Read the rest (discarded, up to a bound) so the client sees the answer and the
            // connection stays usable.
            let drained = drain(rest, drain_max).await;
            let response = error.into_response_for(&path);
            return if drained { response } else { closing(response) };
        }
        Err(Refused { error, rest: None }) => return closing(error.into_response_for(&path)),
    };
    parts.extensions.insert(memory);
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// A body refused while it was read: the error, and the unread rest of the body when it is
/// worth draining.
struct Refused {
    error: ApiError,
    rest: Option<axum::body::BodyDataStream>,
}

/// A body over the limit is still read (and discarded) up to this many times the limit, so the
/// client can read the 413; beyond that the connection is closed.
const DRAIN_FACTOR: u64 = 4;

async fn read_charged(body: Body, limit: usize, memory: &RequestMemory) -> Result<Bytes, Refused> {
    let mut stream = body.into_data_stream();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return Err(Refused { error: ApiError::bad_request("cannot read the request body"), rest: None });
        };
        total += chunk.len();
        if total > limit {
            let error = ApiError::too_large("request body is larger than the limit");
            return Err(Refused { error, rest: Some(stream) });
        }
        if let Err(e) = memory.charge(chunk.len() as u64) {
            return Err(Refused { error: buffer_error(e, "the request body"), rest: Some(stream) });
        }
        chunks.push(chunk);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => {
            // Joining needs the bytes twice for a moment.
            if let Err(e) = memory.charge(total as u64) {
                return Err(Refused { error: buffer_error(e, "the request body"), rest: None });
            }
            let joined = Bytes::from(chunks.concat());
            drop(chunks);
            memory.release(total as u64);
            joined
        }
    })
}

/// Reads and discards the rest of a body; `false` when it is longer than `bytes_max` or broken.
pub(crate) async fn drain(mut rest: axum::body::BodyDataStream, bytes_max: u64) -> bool {
    let mut total = 0u64;
    while let Some(chunk) = rest.next().await {
        let Ok(chunk) = chunk else { return false };
        total += chunk.len() as u64;
        if total > bytes_max {
            return false;
        }
    }
    true
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
        let (bytes, memory) = body_bytes(req, state).await?;
        memory.charge(parse_bytes_bound(&bytes)).map_err(|e| buffer_error(e, "parsing the request body"))?;
        let value = parse_json(&bytes)?;
        Ok(Self { value, memory })
    }
}

/// A request's body (buffered and charged already, see the module docs) and its account; a
/// decoder charges what decoding it takes before it runs.
pub async fn body_bytes(req: Request, state: &AppState) -> Result<(Bytes, RequestMemory), ApiError> {
    let memory = request_memory(state, &req);
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large("request body is larger than the limit")
        } else {
            ApiError::bad_request("cannot read the request body")
        }
    })?;
    Ok((bytes, memory))
}

/// Parses a request body as `T`: UTF-8 JSON only. (`serde_json::from_slice` skips the strings
/// of fields it ignores without checking that they are UTF-8, so a body that is not JSON could
/// be accepted.)
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: not UTF-8 ({e})")))?;
    serde_json::from_str(text).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
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

    #[test]
    fn bodies_that_are_not_utf8_are_refused_even_in_ignored_fields() {
        // Found by the hrana_json fuzz target: Hrana bodies ignore unknown fields, and
        // serde_json skips an ignored string without checking it, so this was accepted.
        #[derive(Debug, serde::Deserialize)]
        struct Body {
            #[allow(dead_code)]
            sql: String,
        }
        let body = b"{\"baton\":\"b\xa5\xa5\",\"sql\":\"SELECT 1\"}";
        assert!(serde_json::from_slice::<Body>(body).is_ok(), "serde_json's leniency changed");
        let refused = parse_json::<Body>(body).unwrap_err();
        assert_eq!(refused.code, "bad_request");
        assert!(refused.message.contains("not UTF-8"), "{}", refused.message);
        assert!(parse_json::<Body>(br#"{"baton":"b","sql":"SELECT 1"}"#).is_ok());
    }
}
