//! The node's life for health checks and shutdown: starting, ready, draining, failed.
//!
//! Invariants:
//! - `/healthz` answers 503 with the reason whenever the store cannot write (below the disk
//!   reserve, or stopped); it says nothing about draining, so a supervisor does not kill a node
//!   that is finishing its requests;
//! - `/readyz` answers 200 only in [`Phase::Ready`] with a store that is not stopped (and, with
//!   several nodes, a current lease): a load balancer stops sending traffic while the node
//!   starts, drains on SIGTERM, has failed or cannot confirm its lease;
//! - once draining or failed, actor requests are refused with a retryable 503 and
//!   `Connection: close` (health and metrics still answer), and the phase never goes back;
//! - a stopped store is reopened in place: every actor is put to sleep (no cache built on the
//!   stopped store survives), the store is reopened (recovering what reached the disk, as a
//!   restart would), and meanwhile actor requests answer 503 `store_unavailable` and
//!   `/readyz` says `recovering`;
//! - a store that cannot be reopened, or stops again more than [`REOPENS_MAX`] times within
//!   [`REOPEN_WINDOW`], ends [`super::serve`] with [`ServeExit::StoreFailed`]: the process then
//!   exits non-zero so that its supervisor restarts it. Never a node that stays up and fails
//!   every write.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

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

/// Reopens of the store allowed within [`REOPEN_WINDOW`] before the process gives up.
pub const REOPENS_MAX: usize = 3;
/// See [`REOPENS_MAX`].
pub const REOPEN_WINDOW: Duration = Duration::from_secs(60);

/// The phase, shared by handlers and the serve loop.
#[derive(Debug)]
pub struct Lifecycle {
    phase: AtomicU8,
    /// The store is being reopened.
    recovering: AtomicBool,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self { phase: AtomicU8::new(Phase::Starting as u8), recovering: AtomicBool::new(false) }
    }
}

impl Lifecycle {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            2 => Phase::Draining,
            _ => Phase::Failed,
        }
    }

    /// Moves forward to `phase`; never back (a failed node stays failed while it drains).
    pub fn advance(&self, phase: Phase) {
        self.phase.fetch_max(phase as u8, Ordering::SeqCst);
    }

    pub fn recovering(&self) -> bool {
        self.recovering.load(Ordering::SeqCst)
    }

    /// Should actor requests be refused?
    pub fn refusing(&self) -> bool {
        self.recovering() || matches!(self.phase(), Phase::Draining | Phase::Failed)
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
    if phase == Phase::Ready && state.lifecycle().recovering() {
        let reason = "the store stopped and is being reopened";
        return unavailable(json!({"status": "recovering", "reason": reason}));
    }
    if phase == Phase::Ready && state.cluster().is_some_and(|c| !c.serving()) {
        let reason = "this node's lease in PostgreSQL is not current; it serves again once renewed";
        return unavailable(json!({"status": "lease_lost", "reason": reason}));
    }
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

/// Watches the store: logs entering and leaving "full", reopens it when it stops, and resolves
/// (with the reason) only once it cannot be revived.
pub async fn store_lost(state: AppState, interval: Duration) -> String {
    let mut full = false;
    let mut reopens: VecDeque<Instant> = VecDeque::new();
    loop {
        tokio::time::sleep(interval).await;
        match store_health(&state) {
            StoreHealth::Failed(why) => {
                reopens.retain(|at| at.elapsed() < REOPEN_WINDOW);
                if reopens.len() >= REOPENS_MAX {
                    return format!("{why}; it stopped {} times within {REOPEN_WINDOW:?}", reopens.len() + 1);
                }
                reopens.push_back(Instant::now());
                if let Err(e) = reopen(&state, &why).await {
                    return format!("{why}; reopening it failed: {e}");
                }
            }
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

/// Puts every actor to sleep and reopens the store, refusing actor requests meanwhile.
async fn reopen(state: &AppState, why: &str) -> Result<(), String> {
    tracing::error!(reason = %why, "the store stopped: putting every actor to sleep and reopening it; requests meanwhile answer 503 store_unavailable");
    state.lifecycle().recovering.store(true, Ordering::SeqCst);
    state.host().sleep_all().await;
    let store = state.host().storage().store().clone();
    let reopened = tokio::task::spawn_blocking(move || store.reopen()).await;
    state.lifecycle().recovering.store(false, Ordering::SeqCst);
    match reopened {
        Ok(Ok(true)) => {
            tracing::info!("store reopened in place: writes are accepted again");
            Ok(())
        }
        Ok(Ok(false)) => Err("this store cannot be reopened in place".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("the reopen panicked: {e}")),
    }
}
