//! The HTTP server: the `/v1` JSON API, Hrana over HTTP, health and (later) debug endpoints.
//!
//! Every request passes the in-flight limit (`overloaded` + `Retry-After` beyond it) and the
//! body limit (`payload_too_large`); every actor request is authorized against the actor id
//! before it touches the host.

mod api;
mod auth;
mod body;
mod debug;
mod error;
mod hrana;
mod json;
mod metrics;
mod spool;
mod transfer;

pub use self::auth::{Auth, Token};
pub use self::debug::{memory_json, memory_text, AllocatorStats};
pub use self::error::ApiError;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Semaphore;

use crate::host::Host;

/// Writes a gzipped pprof heap profile, or says why it cannot.
pub type HeapProfileFn = fn() -> Result<Vec<u8>, String>;

/// Named limits and settings of the server (defaults from DESIGN.md).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// JSON or Hrana request body.
    pub body_bytes_max: usize,
    /// One SQL statement's text.
    pub statement_bytes_max: usize,
    /// Requests being served at once; beyond it `overloaded`.
    pub requests_in_flight_max: usize,
    /// Hrana streams idle this long are closed (their transaction rolled back).
    pub hrana_stream_idle_ms: u64,
    /// Hrana streams open at once.
    pub hrana_streams_max: usize,
    /// Stored SQL texts per Hrana stream.
    pub hrana_sql_texts_max: usize,
    /// The retry-after hint of `overloaded` answers.
    pub retry_after_ms: u64,
    /// Largest import body (DESIGN.md: the per-actor database size limit); it is spooled to
    /// a file in the scratch folder, not held in memory. Beyond it `payload_too_large`.
    pub import_bytes_max: u64,
    /// Bytes of all import and export spools at once; beyond it `overloaded`. At least
    /// `import_bytes_max`, so that one upload alone always fits.
    pub spool_bytes_max: u64,
    pub auth: Auth,
    /// Reads the allocator's statistics (set by the binary that installs the allocator).
    pub allocator_stats: Option<fn() -> AllocatorStats>,
    /// Writes a pprof heap profile (set by the binary that installs the allocator).
    pub heap_profile: Option<HeapProfileFn>,
    /// Every this many seconds one structured log line with the memory figures; 0: off.
    pub memory_log_interval_s: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_bytes_max: 8 << 20,
            statement_bytes_max: 1 << 20,
            requests_in_flight_max: 1024,
            hrana_stream_idle_ms: 10_000,
            hrana_streams_max: 10_000,
            hrana_sql_texts_max: 1_000,
            retry_after_ms: 1000,
            import_bytes_max: 10 << 30,
            spool_bytes_max: 20 << 30,
            auth: Auth::default(),
            allocator_stats: None,
            heap_profile: None,
            memory_log_interval_s: 60,
        }
    }
}

impl ServerConfig {
    /// Refuses to serve beyond loopback without tokens, and a spool limit below the import
    /// limit (such an upload could never be taken).
    pub fn validate(&self) -> Result<(), String> {
        if self.auth.is_open() && !self.listen.ip().is_loopback() {
            return Err(format!(
                "refusing to listen on {} without tokens: set ROOST_TOKENS / --tokens-file, or listen on loopback",
                self.listen
            ));
        }
        if self.spool_bytes_max < self.import_bytes_max {
            return Err(format!(
                "the spool limit ({} bytes) must hold one import of the largest size ({} bytes)",
                self.spool_bytes_max, self.import_bytes_max
            ));
        }
        Ok(())
    }
}

struct StateInner {
    host: Host,
    config: ServerConfig,
    in_flight: Semaphore,
    metrics: metrics::Metrics,
    spool: Arc<spool::SpoolBudget>,
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

impl AppState {
    pub fn new(host: Host, config: ServerConfig) -> Self {
        let in_flight = Semaphore::new(config.requests_in_flight_max);
        let spool = Arc::new(spool::SpoolBudget::new(config.spool_bytes_max));
        let metrics = metrics::Metrics::default();
        Self { inner: Arc::new(StateInner { host, config, in_flight, metrics, spool }) }
    }

    pub fn host(&self) -> &Host {
        &self.inner.host
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    pub fn auth(&self) -> &Auth {
        &self.inner.config.auth
    }

    pub fn metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }

    /// Bytes held by import and export spools.
    pub fn spool_budget(&self) -> &Arc<spool::SpoolBudget> {
        &self.inner.spool
    }
}

/// Sheds load beyond `requests_in_flight_max`.
async fn limit_in_flight(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.inner.in_flight.try_acquire() {
        Ok(_permit) => next.run(request).await,
        Err(_) => {
            let error = ApiError::overloaded("too many requests in flight", state.config().retry_after_ms);
            body::closing(error.into_response_for(request.uri().path()))
        }
    }
}

/// All routes.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config().body_bytes_max;
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(debug::metrics))
        .route("/debug/memory", get(debug::memory))
        .route("/debug/pprof/heap", get(debug::heap_profile))
        .route("/v1/actors", get(api::list))
        .route("/v1/actors/{id}", get(api::get_actor).delete(api::delete))
        .route("/v1/actors/{id}/query", post(api::query))
        .route("/v1/actors/{id}/batch", post(api::batch))
        .route("/v1/actors/{id}/sleep", post(api::sleep))
        .route("/v1/actors/{id}/export", get(transfer::export))
        .route("/v1/actors/{id}/import", axum::routing::put(transfer::import))
        .merge(hrana::router(&state))
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), body::buffer_body))
        .layer(middleware::from_fn_with_state(state.clone(), limit_in_flight))
        .layer(middleware::from_fn_with_state(state.clone(), metrics::track))
        .with_state(state)
}

/// Serves until `shutdown` resolves, lets in-flight requests finish, then puts every actor to
/// sleep (connections closed, store flushed by its owner afterwards).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let memory_log = spawn_memory_log(state.clone());
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    if let Some(task) = memory_log {
        task.abort();
    }
    state.host().shutdown().await;
    Ok(())
}

/// Logs one line of memory figures every `memory_log_interval_s` seconds.
fn spawn_memory_log(state: AppState) -> Option<tokio::task::JoinHandle<()>> {
    let interval_s = state.config().memory_log_interval_s;
    if interval_s == 0 {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(std::time::Duration::from_secs(interval_s));
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let stats = state.host().stats();
            let process = crate::host::process_memory().unwrap_or_default();
            let allocator = state.config().allocator_stats.map(|read| read().resident_bytes).unwrap_or(0);
            let m = &stats.memory;
            tracing::info!(
                target: "roost::memory",
                rss_bytes = process.rss_bytes,
                rss_peak_bytes = process.rss_peak_bytes,
                allocator_resident_bytes = allocator,
                sqlite_used_bytes = m.sqlite.used_bytes,
                sqlite_page_cache_bytes = m.sqlite.page_cache_bytes,
                store_cache_bytes = m.store.cache_bytes,
                store_write_buffer_bytes = m.store.write_buffer_bytes,
                actors_awake = stats.actors_awake,
                actors_waking = stats.actors_waking,
                wakes_queued = stats.wakes_queued,
                actors_known = stats.actors_known,
                "memory"
            );
        }
    }))
}
