//! HTTP errors: a status, a stable snake_case code and a message for humans. Internal details
//! (store failures, panics) are logged, never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::host::HostError;
use crate::kv::NodeAddress;
use crate::vfs;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_ms: Option<u64>,
    /// The node that owns the actor, when another one does: the forwarding layer sends the
    /// request there instead of answering this error.
    pub moved_to: Option<NodeAddress>,
}

/// Marks an answer that another node should give (see [`ApiError::moved_to`]).
#[derive(Debug, Clone)]
pub struct MovedTo(pub NodeAddress);

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after_ms: None, moved_to: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    pub fn overloaded(message: impl Into<String>, retry_after_ms: u64) -> Self {
        Self {
            retry_after_ms: Some(retry_after_ms),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
        }
    }

    /// 503 `store_unavailable`: the store cannot write now; retry (the server reopens it).
    pub fn store_unavailable() -> Self {
        Self {
            retry_after_ms: Some(5_000),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store cannot write right now; retry later",
            )
        }
    }

    /// 507 `storage_full`: the write was refused and changed nothing; reads still work.
    pub fn storage_full() -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "storage_full",
            "the server is out of disk space; the write was not applied (reads still work)",
        )
    }

    /// 503 `moved`: another node owns the actor (or took it over during the request, which
    /// then changed nothing); a retry is served by the owner.
    pub fn moved(owner: Option<NodeAddress>) -> Self {
        Self {
            retry_after_ms: Some(1_000),
            moved_to: owner,
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "moved",
                "the actor is served by another node now; retry (nothing was applied)",
            )
        }
    }

    /// 503 `store_unavailable`: this node's lease is not current (it could not reach the
    /// store in time); it serves again once renewed, or another node takes its actors.
    pub fn lease_not_current() -> Self {
        Self {
            retry_after_ms: Some(1_000),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "this node cannot confirm its lease with the store right now; retry",
            )
        }
    }

    /// 504 `timeout`: the request was sent to the node that owns the actor, which did not
    /// answer; it may or may not have been applied.
    pub fn owner_silent() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the node that serves this actor did not answer; the request may or may not have been applied",
        )
    }

    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl From<HostError> for ApiError {
    fn from(error: HostError) -> Self {
        match error {
            HostError::Overloaded { reason, retry_after_ms } => {
                Self::overloaded(format!("server overloaded: {reason}"), retry_after_ms)
            }
            HostError::ShuttingDown => Self::overloaded("server is shutting down", 1000),
            HostError::Database(e) => Self::from(e),
            HostError::Poisoned | HostError::Config(_) => {
                tracing::error!(error = %error, "request failed");
                Self::internal()
            }
        }
    }
}

impl From<vfs::Error> for ApiError {
    fn from(error: vfs::Error) -> Self {
        use vfs::Error as E;
        match error {
            E::InvalidActorId(e) => Self::new(StatusCode::BAD_REQUEST, "invalid_actor_id", e.to_string()),
            E::Sql { message, .. } => Self::new(StatusCode::BAD_REQUEST, "sql_error", message),
            E::TransactionTooLarge { .. } => Self::new(StatusCode::BAD_REQUEST, "sql_error", error.to_string()),
            E::TransactionClosed => Self::new(StatusCode::BAD_REQUEST, "sql_error", error.to_string()),
            E::Parameters(message) => Self::bad_request(message),
            E::TooManyRows { .. } => Self::bad_request(error.to_string()),
            E::AnswerTooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "response_too_large", error.to_string())
            }
            E::AnswerMemoryFull { retry_after_ms } => Self::overloaded(error.to_string(), retry_after_ms),
            E::ScratchFull { .. } => Self::new(StatusCode::INSUFFICIENT_STORAGE, "storage_full", error.to_string()),
            E::Interrupted => Self::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "statement ran longer than the time limit and was interrupted; its transaction was rolled back",
            ),
            E::InBatch { index, source } => {
                let inner = Self::from(*source);
                Self { message: format!("statement {index}: {}", inner.message), ..inner }
            }
            E::Store(crate::kv::KvError::Failed(_)) => {
                tracing::error!(error = %error, "the store has stopped; the server reopens it");
                Self::store_unavailable()
            }
            E::Store(crate::kv::KvError::StorageFull { .. }) => {
                tracing::warn!(error = %error, "write refused: storage full");
                Self::storage_full()
            }
            E::Store(crate::kv::KvError::Unavailable(_)) => {
                tracing::warn!(error = %error, "the store is unavailable");
                Self {
                    retry_after_ms: Some(1_000),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "store_unavailable",
                        "the store cannot be reached; retry later",
                    )
                }
            }
            E::Moved(owner) => Self::moved(Some(owner)),
            E::Fenced => {
                tracing::warn!("a write was fenced: another node took the actor over; this node dropped it");
                Self::moved(None)
            }
            E::Store(_) | E::Corrupt(_) | E::ActorBusy | E::Poisoned | E::ScratchFolder(_) => {
                tracing::error!(error = %error, "storage failure");
                Self::internal()
            }
        }
    }
}

impl ApiError {
    /// The answer on Hrana endpoints: libSQL's clients read an HTTP-level error from a
    /// top-level `message` and `code` (as a Hrana `Error`); `error` keeps the `/v1` shape too.
    pub fn into_hrana_response(self) -> Response {
        let body = json!({
            "message": self.message,
            "code": self.code,
            "error": {"code": self.code, "message": self.message},
        });
        self.respond(body)
    }

    /// The answer in the shape the endpoint at `path` speaks (Hrana or `/v1`).
    pub fn into_response_for(self, path: &str) -> Response {
        let v1 = |name: &str| {
            path == format!("/v1/{name}")
                || (path.starts_with("/db/") && path.ends_with(&format!("/v1/{name}")))
        };
        if path.ends_with("/pipeline") || path.ends_with("/cursor") || v1("execute") || v1("batch") {
            self.into_hrana_response()
        } else {
            self.into_response()
        }
    }

    fn respond(self, body: serde_json::Value) -> Response {
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(owner) = self.moved_to {
            response.extensions_mut().insert(MovedTo(owner));
        }
        if let Some(ms) = self.retry_after_ms {
            let seconds = ms.div_ceil(1000).max(1);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        self.respond(body)
    }
}
