//! `/debug/memory` (JSON, or a table with `?format=text`), `/debug/dashboard` (a page charting
//! it) and `/metrics`.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value as JsonValue};

use super::error::ApiError;
use super::AppState;
use crate::host::process_memory;

/// Allocator figures, supplied by the binary that picked the allocator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocatorStats {
    pub allocated_bytes: u64,
    pub active_bytes: u64,
    pub resident_bytes: u64,
    pub retained_bytes: u64,
}

/// How many actors `/debug/memory` lists.
const TOP_ACTORS: usize = 20;

#[derive(Debug, Deserialize)]
pub struct MemoryQuery {
    format: Option<String>,
}

/// The memory breakdown as JSON.
pub fn memory_json(state: &AppState) -> JsonValue {
    let stats = state.host().stats();
    let m = &stats.memory;
    let process =
        process_memory().map(|p| json!({"rss_bytes": p.rss_bytes, "rss_peak_bytes": p.rss_peak_bytes}));
    let allocator = state.config().allocator_stats.map(|read| {
        let a = read();
        json!({"allocated_bytes": a.allocated_bytes, "active_bytes": a.active_bytes,
            "resident_bytes": a.resident_bytes, "retained_bytes": a.retained_bytes})
    });
    let pools: Vec<JsonValue> = m
        .pools
        .iter()
        .map(|p| json!({"name": p.name, "bytes_max": p.bytes_max, "bytes_used": p.bytes_used}))
        .collect();
    let top: Vec<JsonValue> = state
        .host()
        .top_actors(TOP_ACTORS)
        .into_iter()
        .map(|a| {
            json!({"id": a.id.as_str(), "total_bytes": a.total_bytes(), "cache_bytes": a.memory.cache_bytes,
                "schema_bytes": a.memory.schema_bytes, "statement_bytes": a.memory.statement_bytes})
        })
        .collect();
    let storage = state.host().storage();
    let spool = state.spool_budget();
    json!({
        "process": process,
        "allocator": allocator,
        "sqlite": {"used_bytes": m.sqlite.used_bytes, "highwater_bytes": m.sqlite.highwater_bytes,
            "page_cache_bytes": m.sqlite.page_cache_bytes},
        "store": {"cache_bytes": m.store.cache_bytes, "cache_bytes_max": m.store.cache_bytes_max,
            "write_buffer_bytes": m.store.write_buffer_bytes, "write_buffer_bytes_max": m.store.write_buffer_bytes_max,
            "disk_bytes": m.store.disk_bytes, "fs_free_bytes": m.store.disk.free_bytes,
            "fs_size_bytes": m.store.disk.total_bytes, "disk_reserve_bytes": m.store.disk.reserve_bytes,
            "compaction": m.store.compaction,
            "write_errors": write_errors(&m.store), "health": state.host().storage().store().health().reason(),
            "round_trips": round_trips_json()},
        "actors": {"awake": stats.actors_awake, "waking": stats.actors_waking, "queued": stats.wakes_queued,
            "known": stats.actors_known, "awake_max": stats.awake_max,
            "actor_bytes_measured": stats.actor_bytes_measured},
        "budget": {"budget_bytes": m.budget_bytes, "pools": pools},
        "request_buffers": request_buffers(state),
        // On disk with a scratch folder: capped on their own, outside the memory budget.
        "scratch": {"bytes": storage.scratch_bytes(), "bytes_max": storage.scratch_bytes_max(),
            "on_disk": storage.scratch_dir().is_some()},
        "spool": {"bytes": spool.bytes(), "bytes_max": spool.bytes_max()},
        "top_actors": top,
    })
}

/// Failed store writes by kind.
fn write_errors(store: &crate::kv::KvStats) -> JsonValue {
    store.write_errors.by_kind().into_iter().map(|(kind, n)| (kind.to_string(), json!(n))).collect()
}

/// The request pool's use, its high-water mark, the per-answer limit and refusals.
fn request_buffers(state: &AppState) -> JsonValue {
    let b = state.host().buffers().stats();
    json!({"bytes_used": b.bytes_used, "bytes_peak": b.bytes_peak, "bytes_max": b.bytes_max,
        "answer_bytes_max": b.answer_bytes_max, "refused_total": b.refused_total})
}

fn mib(bytes: &JsonValue) -> String {
    bytes.as_u64().map_or_else(|| "-".to_string(), |b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64))
}

fn write_errors_text(errors: &JsonValue) -> String {
    let kinds = errors.as_object().into_iter().flatten();
    kinds.map(|(kind, n)| format!("{kind} {n}")).collect::<Vec<_>>().join(", ")
}

/// The breakdown as a table for a terminal.
pub fn memory_text(memory: &JsonValue) -> String {
    let mut rows: Vec<(String, String)> = vec![
        ("process rss".into(), mib(&memory["process"]["rss_bytes"])),
        ("process rss peak".into(), mib(&memory["process"]["rss_peak_bytes"])),
        ("allocator allocated".into(), mib(&memory["allocator"]["allocated_bytes"])),
        ("allocator resident".into(), mib(&memory["allocator"]["resident_bytes"])),
        ("sqlite used".into(), mib(&memory["sqlite"]["used_bytes"])),
        ("sqlite high-water".into(), mib(&memory["sqlite"]["highwater_bytes"])),
        ("sqlite page cache".into(), mib(&memory["sqlite"]["page_cache_bytes"])),
        ("store block cache".into(), mib(&memory["store"]["cache_bytes"])),
        ("store write buffers".into(), mib(&memory["store"]["write_buffer_bytes"])),
        ("store on disk".into(), mib(&memory["store"]["disk_bytes"])),
        (
            "store fs free".into(),
            format!(
                "{} of {} (reserve {})",
                mib(&memory["store"]["fs_free_bytes"]),
                mib(&memory["store"]["fs_size_bytes"]),
                mib(&memory["store"]["disk_reserve_bytes"])
            ),
        ),
        ("store write errors".into(), write_errors_text(&memory["store"]["write_errors"])),
    ];
    for pool in memory["budget"]["pools"].as_array().into_iter().flatten() {
        let name = format!("pool {}", pool["name"].as_str().unwrap_or("?"));
        rows.push((name, format!("{} of {}", mib(&pool["bytes_used"]), mib(&pool["bytes_max"]))));
    }
    for part in ["scratch", "spool"] {
        let (used, max) = (&memory[part]["bytes"], &memory[part]["bytes_max"]);
        rows.push((format!("{part} files"), format!("{} of {}", mib(used), mib(max))));
    }
    let a = &memory["actors"];
    rows.push(("budget".into(), mib(&memory["budget"]["budget_bytes"])));
    rows.push((
        "actors".into(),
        format!(
            "{} awake (max {}), {} waking, {} queued, {} known",
            a["awake"], a["awake_max"], a["waking"], a["queued"], a["known"]
        ),
    ));
    let mut out = String::new();
    for (name, value) in rows {
        out += &format!("{name:<22} {value}\n");
    }
    out += "\ntop actors             total      cache      schema     statements\n";
    for actor in memory["top_actors"].as_array().into_iter().flatten() {
        let kib = |v: &JsonValue| format!("{:.1} KiB", v.as_u64().unwrap_or(0) as f64 / 1024.0);
        out += &format!(
            "{:<22} {:<10} {:<10} {:<10} {}\n",
            actor["id"].as_str().unwrap_or("?"),
            kib(&actor["total_bytes"]),
            kib(&actor["cache_bytes"]),
            kib(&actor["schema_bytes"]),
            kib(&actor["statement_bytes"])
        );
    }
    out
}

pub async fn memory(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<MemoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    state.auth().check_admin(&headers)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let memory = memory_json(&state);
    match query.format.as_deref() {
        None | Some("json") => Ok(Json(memory).into_response()),
        Some("text") => {
            Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], memory_text(&memory)).into_response())
        }
        Some(other) => Err(ApiError::bad_request(format!("unknown format {other:?} (json or text)"))),
    }
}

/// The dashboard: one self-contained page that polls `/debug/memory` every second.
const DASHBOARD: &str = include_str!("dashboard.html");

/// Everything the page loads is inline and its only request is to its own origin; it may not be
/// framed (clickjacking) nor leak its URL, which may hold the token, in a `Referer`.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Debug, Deserialize)]
pub struct DashboardQuery {
    token: Option<String>,
}

pub async fn dashboard(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<DashboardQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    state.auth().check_admin_or_query(&headers, query.token.as_deref())?;
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CONTENT_SECURITY_POLICY, DASHBOARD_CSP),
        (header::REFERRER_POLICY, "no-referrer"),
        // The URL may hold the admin token: keep the page out of caches.
        (header::CACHE_CONTROL, "no-store"),
    ];
    Ok((headers, DASHBOARD).into_response())
}

pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    state.auth().check_admin(&headers)?;
    let mut text = super::metrics::render(&state.host().stats(), state.metrics());
    super::metrics::render_files(&mut text, &state);
    super::metrics::render_cluster(&mut text, &state);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

pub async fn heap_profile(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    state.auth().check_admin(&headers)?;
    let off = "heap profiling is not available in this build";
    let dump = state.config().heap_profile.ok_or_else(|| ApiError::not_found(off))?;
    let profile = tokio::task::spawn_blocking(dump).await.map_err(|_| ApiError::internal())?;
    let bytes = profile.map_err(ApiError::not_found)?;
    let disposition = "attachment; filename=\"heap.pb.gz\"";
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream"), (header::CONTENT_DISPOSITION, disposition)],
        bytes,
    )
        .into_response())
}

/// Store round trips per wake and per commit since the start (see `vfs::RoundTrips`).
fn round_trips_json() -> JsonValue {
    let trips = crate::vfs::RoundTrips::now();
    json!({"wakes": trips.wakes, "per_wake": trips.per_wake(), "commits": trips.commits,
        "per_commit": trips.per_commit()})
}
