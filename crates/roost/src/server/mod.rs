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
mod forward;
#[cfg(test)]
mod fuzz_json;
#[doc(hidden)]
pub mod fuzzing;
mod hrana;
mod json;
mod lifecycle;
mod metrics;
mod openapi;
mod spool;
mod transfer;

pub use self::auth::{Auth, Token};
pub use self::debug::{memory_json, memory_text, AllocatorStats};
pub use self::error::ApiError;
pub use self::forward::{FORWARDED_HEADER, NODE_HEADER};
pub use self::lifecycle::{Phase, ServeExit};

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Semaphore;

use crate::cluster::Cluster;
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
    /// Stored SQL texts per Hrana stream (per WebSocket session).
    pub hrana_sql_texts_max: usize,
    /// Hrana WebSocket connections open at once; beyond it the upgrade is refused with
    /// `overloaded`.
    pub hrana_ws_sockets_max: usize,
    /// A Hrana socket with no request for this long (and none pending) is closed; while one of
    /// its streams holds a transaction, `hrana_stream_idle_ms` applies instead.
    pub hrana_ws_idle_ms: u64,
    /// A socket silent this long is pinged; one that leaves the ping unanswered as long again
    /// is closed.
    pub hrana_ws_ping_ms: u64,
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
    /// After the shutdown signal, how long in-flight requests may take before their
    /// connections are closed.
    pub drain_timeout_ms: u64,
    /// How often the store's health is checked (a stopped store ends `serve`).
    pub store_check_interval_ms: u64,
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
            hrana_ws_sockets_max: 1_000,
            hrana_ws_idle_ms: 60_000,
            hrana_ws_ping_ms: 15_000,
            retry_after_ms: 1000,
            import_bytes_max: 10 << 30,
            spool_bytes_max: 20 << 30,
            auth: Auth::default(),
            allocator_stats: None,
            heap_profile: None,
            memory_log_interval_s: 60,
            drain_timeout_ms: 30_000,
            store_check_interval_ms: 250,
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
    lifecycle: lifecycle::Lifecycle,
    /// Set when several nodes share the store.
    cluster: Option<Arc<Cluster>>,
    forward: forward::ForwardClient,
    /// WebSockets tunnelled to the node that owns their actor (as many as sockets).
    tunnels: Arc<Semaphore>,
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

impl AppState {
    pub fn new(host: Host, config: ServerConfig) -> Self {
        Self::with_cluster(host, config, None)
    }

    /// A node of several sharing the store (see [`crate::cluster`]): actor requests are
    /// forwarded to the node that owns the actor.
    pub fn with_cluster(host: Host, config: ServerConfig, cluster: Option<Arc<Cluster>>) -> Self {
        let in_flight = Semaphore::new(config.requests_in_flight_max);
        let spool = Arc::new(spool::SpoolBudget::new(config.spool_bytes_max));
        let metrics = metrics::Metrics::default();
        let lifecycle = lifecycle::Lifecycle::default();
        let forward = forward::client();
        let tunnels = Arc::new(Semaphore::new(config.hrana_ws_sockets_max));
        let inner =
            StateInner { host, config, in_flight, metrics, spool, lifecycle, cluster, forward, tunnels };
        Self { inner: Arc::new(inner) }
    }

    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.inner.cluster.as_ref()
    }

    fn forward_client(&self) -> &forward::ForwardClient {
        &self.inner.forward
    }

    fn tunnels(&self) -> &Arc<Semaphore> {
        &self.inner.tunnels
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

    pub fn lifecycle(&self) -> &lifecycle::Lifecycle {
        &self.inner.lifecycle
    }
}

/// Paths that answer in every phase: health, readiness and metrics.
fn always_served(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics") || path.starts_with("/debug/")
}

/// Sheds load beyond `requests_in_flight_max`.
async fn limit_in_flight(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.lifecycle().refusing() && !always_served(request.uri().path()) {
        let draining = state.lifecycle().phase() == Phase::Draining;
        let refusal = match draining {
            true => ApiError::overloaded("server is shutting down", state.config().retry_after_ms),
            false => ApiError::store_unavailable(),
        };
        return body::closing(refusal.into_response_for(request.uri().path()));
    }
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
        .route("/healthz", get(lifecycle::healthz))
        .route("/readyz", get(lifecycle::readyz))
        .route("/metrics", get(debug::metrics))
        .route("/debug/memory", get(debug::memory))
        .route("/debug/dashboard", get(debug::dashboard))
        .route("/debug/pprof/heap", get(debug::heap_profile))
        .route("/v1/openapi.json", get(openapi::document))
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
        .layer(middleware::from_fn_with_state(state.clone(), forward::route))
        .layer(middleware::from_fn_with_state(state.clone(), body::buffer_body))
        .layer(middleware::from_fn_with_state(state.clone(), limit_in_flight))
        .layer(middleware::from_fn_with_state(state.clone(), metrics::track))
        .with_state(state)
}

/// Serves until `shutdown` resolves or the store stops for good (a stopped store is reopened in
/// place first, see `lifecycle`), then drains: new requests are refused,
/// in-flight ones may finish within `drain_timeout_ms`, every actor is put to sleep and the
/// store is synced. Requests still running at the drain timeout are abandoned: the caller
/// drops the runtime (closing their connections) without waiting for them, and their
/// statements' unacknowledged transactions are rolled back by recovery at the next start.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<ServeExit> {
    let app = router(state.clone());
    let memory_log = spawn_memory_log(state.clone());
    let drain_started = Arc::new(tokio::sync::Notify::new());
    let (failed_tx, mut failed_rx) = tokio::sync::watch::channel(None::<String>);
    let stop = stop_signal(state.clone(), shutdown, drain_started.clone(), failed_tx);
    state.lifecycle().advance(Phase::Ready);
    let server = axum::serve(listener, app).with_graceful_shutdown(stop);
    let drain_timeout = std::time::Duration::from_millis(state.config().drain_timeout_ms);
    let requests_cut = tokio::select! {
        result = server => { result?; false }
        _ = async { drain_started.notified().await; tokio::time::sleep(drain_timeout).await } => {
            tracing::warn!(timeout_ms = drain_timeout.as_millis() as u64, "drain timeout: closing connections of unfinished requests");
            true
        }
    };
    if let Some(task) = memory_log {
        task.abort();
    }
    put_actors_to_sleep(&state, requests_cut).await;
    release_lease(&state).await;
    let failed = failed_rx.borrow_and_update().clone();
    match failed {
        Some(why) => Ok(ServeExit::StoreFailed(why)),
        None => {
            sync_store(&state).await;
            Ok(ServeExit::Shutdown { requests_cut })
        }
    }
}

/// After the drain timeout, how long actors still busy may take to go to sleep before the
/// process moves on (their unfinished transactions are rolled back by recovery, as after a
/// crash; nothing was acknowledged for them).
const BUSY_ACTORS_WAIT_MS: u64 = 1_000;

/// Puts every actor to sleep; once requests were cut, waits for busy ones only briefly.
async fn put_actors_to_sleep(state: &AppState, requests_cut: bool) {
    if !requests_cut {
        return state.host().shutdown().await;
    }
    let wait = std::time::Duration::from_millis(BUSY_ACTORS_WAIT_MS);
    if tokio::time::timeout(wait, state.host().shutdown()).await.is_err() {
        tracing::warn!(
            "actors still busy after the drain timeout are left running; the store is synced without them"
        );
    }
}

/// Resolves when serving must stop: the shutdown signal or a stopped store. Marks the phase
/// and starts the drain clock.
async fn stop_signal(
    state: AppState,
    shutdown: impl std::future::Future<Output = ()>,
    drain_started: Arc<tokio::sync::Notify>,
    failed: tokio::sync::watch::Sender<Option<String>>,
) {
    let interval = std::time::Duration::from_millis(state.config().store_check_interval_ms.max(1));
    let lease_end = lease_lost(state.clone());
    tokio::select! {
        _ = shutdown => state.lifecycle().advance(Phase::Draining),
        why = lease_end => {
            tracing::error!(reason = %why, "this node lost its place in the cluster: exiting");
            state.lifecycle().advance(Phase::Failed);
            let _ = failed.send(Some(why));
        }
        why = lifecycle::store_lost(state.clone(), interval) => {
            tracing::error!(reason = %why, "the store stopped and cannot be reopened: refusing requests and exiting so that a supervisor restarts roost (a restart recovers every acknowledged write)");
            state.lifecycle().advance(Phase::Failed);
            let _ = failed.send(Some(why));
        }
    }
    drain_started.notify_one();
}

/// Runs the cluster lease (forever without a cluster); resolves when this node was replaced.
async fn lease_lost(state: AppState) -> String {
    let Some(cluster) = state.cluster().cloned() else { return std::future::pending().await };
    let mover = cluster.clone();
    tokio::task::spawn_blocking(move || {
        let moved = mover.rebalance();
        if moved > 0 {
            tracing::info!(moved, "moved actors to the shards they belong to");
        }
    });
    match cluster.run_lease(state.host().clone()).await {
        crate::cluster::LeaseEnd::Replaced(why) => why,
    }
}

/// Hands this node's actors back (its lease ends now) once every actor is asleep, so other
/// nodes take them over without waiting for the lease to run out.
async fn release_lease(state: &AppState) {
    let Some(cluster) = state.cluster().cloned() else { return };
    match tokio::task::spawn_blocking(move || cluster.release()).await {
        Ok(Ok(())) => tracing::info!("lease released: other nodes take this node's actors at once"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "releasing the lease failed; other nodes wait for it to expire")
        }
        Err(e) => tracing::warn!(error = %e, "releasing the lease panicked"),
    }
}

/// Makes everything written durable before the process exits (relaxed durability included).
async fn sync_store(state: &AppState) {
    let store = state.host().storage().store().clone();
    match tokio::task::spawn_blocking(move || store.sync()).await {
        Ok(Ok(())) => tracing::info!("store synced"),
        Ok(Err(e)) => tracing::error!(error = %e, "final sync of the store failed"),
        Err(e) => tracing::error!(error = %e, "final sync of the store panicked"),
    }
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
                store_disk_bytes = m.store.disk_bytes,
                store_fs_free_bytes = m.store.disk.free_bytes,
                store_disk_reserve_bytes = m.store.disk.reserve_bytes,
                store_write_errors_storage_full = m.store.write_errors.storage_full,
                store_write_errors_failed = m.store.write_errors.failed,
                store_write_errors_other = m.store.write_errors.other,
                actors_awake = stats.actors_awake,
                actors_waking = stats.actors_waking,
                wakes_queued = stats.wakes_queued,
                actors_known = stats.actors_known,
                "memory"
            );
        }
    }))
}
