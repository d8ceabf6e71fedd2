//! The node's life for health checks and shutdown: starting, ready, draining, failed.
//!
//! Invariants:
//! - `/healthz` answers 503 with the reason whenever the store cannot write (below the disk
//!   reserve, or stopped); it says nothing about draining, so a supervisor does not kill a node
//!   that is finishing its requests;
//! - `/readyz` answers 200 only in [`Phase::Ready`] with a store that is not stopped: a load
//!   balancer stops sending traffic while the node starts, drains on SIGTERM or has failed;
//! - once draining or failed, actor requests are refused with a retryable 503 and
//!   `Connection: close` (health and metrics still answer), and the phase never goes back;
//! - a stopped store ends [`super::serve`] with [`ServeExit::StoreFailed`]: the process then
//!   exits non-zero so that its supervisor restarts it, which recovers every acknowledged write.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;
use crate::kv::StoreHealth;

/// Where the node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Built, not serving yet.
    Starting = 0,
    /// Serving.
    Ready = 1,
    /// Shutting down: finishing in-flight requests, refusing new ones.
    Draining = 2,
    /// The store stopped: refusing requests, about to exit.
    Failed = 3,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Draining => "draining",
            Self::Failed => "failed",
        }
    }
}

/// The phase, shared by handlers and the serve loop.
#[derive(Debug)]
pub struct Lifecycle(AtomicU8);

impl Default for Lifecycle {
    fn default() -> Self {
        Self(AtomicU8::new(Phase::Starting as u8))
    }
}

impl Lifecycle {
    pub fn phase(&self) -> Phase {
        match self.0.load(Ordering::SeqCst) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            2 => Phase::Draining,
            _ => Phase::Failed,
        }
    }

    /// Moves forward to `phase`; never back (a failed node stays failed while it drains).
    pub fn advance(&self, phase: Phase) {
        self.0.fetch_max(phase as u8, Ordering::SeqCst);
    }

    /// Should actor requests be refused?
    pub fn refusing(&self) -> bool {
        matches!(self.phase(), Phase::Draining | Phase::Failed)
    }
}

/// How `serve` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServeExit {
    /// The shutdown signal came; in-flight requests were finished (or cut at the drain timeout).
    Shutdown { requests_cut: bool },
    /// The store stopped; the process should exit non-zero so that it is restarted.
    StoreFailed(String),
}

fn unavailable(body: serde_json::Value) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// `GET /healthz`: can this node write?
pub async fn healthz(State(state): State<AppState>) -> Response {
    match store_health(&state).reason() {
        None => Json(json!({"status": "ok"})).into_response(),
        Some(reason) => unavailable(json!({"status": "unavailable", "reason": reason})),
    }
}

/// `GET /readyz`: should this node take traffic?
pub async fn readyz(State(state): State<AppState>) -> Response {
    let phase = state.lifecycle().phase();
    let health = store_health(&state);
    match (phase, &health) {
        (Phase::Ready, StoreHealth::Ok) => Json(json!({"status": "ready"})).into_response(),
        // A full disk still serves reads: the node stays in rotation, health says why writes fail.
        (Phase::Ready, StoreHealth::Full { .. }) => {
            Json(json!({"status": "ready", "warning": health.reason()})).into_response()
        }
        (Phase::Ready, StoreHealth::Failed(_)) => {
            unavailable(json!({"status": "failed", "reason": health.reason()}))
        }
        (other, _) => unavailable(json!({"status": other.name(), "reason": phase_reason(other)})),
    }
}

fn phase_reason(phase: Phase) -> &'static str {
    match phase {
        Phase::Starting => "the server is starting",
        Phase::Ready => "ready",
        Phase::Draining => "the server is shutting down",
        Phase::Failed => "the store failed; the server is exiting so that it can be restarted",
    }
}

fn store_health(state: &AppState) -> StoreHealth {
    state.host().storage().store().health()
}

/// Resolves once the store has stopped, with its reason; logs entering and leaving "full".
pub async fn store_failed(state: AppState, interval: Duration) -> String {
    let mut full = false;
    loop {
        tokio::time::sleep(interval).await;
        match store_health(&state) {
            StoreHealth::Failed(why) => return why,
            StoreHealth::Full { free_bytes, reserve_bytes } if !full => {
                full = true;
                tracing::warn!(
                    free_bytes,
                    reserve_bytes,
                    "storage full: writes are refused until space is freed"
                );
            }
            StoreHealth::Ok if full => {
                full = false;
                tracing::info!("storage no longer full: writes are accepted again");
            }
            _ => {}
        }
    }
}
