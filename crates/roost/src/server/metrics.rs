//! Request counters and latency histograms, and the Prometheus text of `/metrics`.
//!
//! Labels are bounded: the route is the matched route template (or `unmatched`), the status
//! is its class (`2xx`...).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use parking_lot::Mutex;

use super::AppState;
use crate::host::{process_memory, HostStats};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS_S: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS_S.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS_S) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }
}

/// Per-route request metrics.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, &'static str), u64>>,
    latency: Mutex<BTreeMap<String, std::sync::Arc<Histogram>>>,
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl Metrics {
    fn record(&self, route: &str, status: u16, seconds: f64) {
        *self.requests.lock().entry((route.to_string(), status_class(status))).or_default() += 1;
        let histogram = self.latency.lock().entry(route.to_string()).or_default().clone();
        histogram.observe(seconds);
    }
}

/// Middleware: counts every request and times it.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics().record(&route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
}

/// The Prometheus text exposition of everything.
pub fn render(stats: &HostStats, metrics: &Metrics) -> String {
    let mut out = String::new();
    if let Some(process) = process_memory() {
        gauge(&mut out, "roost_process_resident_bytes", "Resident set size.", process.rss_bytes);
        gauge(
            &mut out,
            "roost_process_resident_peak_bytes",
            "Peak resident set size.",
            process.rss_peak_bytes,
        );
    }
    let m = &stats.memory;
    gauge(&mut out, "roost_sqlite_memory_used_bytes", "Bytes allocated by SQLite.", m.sqlite.used_bytes);
    gauge(
        &mut out,
        "roost_sqlite_memory_highwater_bytes",
        "Most bytes SQLite ever held.",
        m.sqlite.highwater_bytes,
    );
    gauge(
        &mut out,
        "roost_sqlite_page_cache_bytes",
        "Bytes of SQLite page caches.",
        m.sqlite.page_cache_bytes,
    );
    gauge(&mut out, "roost_store_cache_bytes", "Block cache of the store.", m.store.cache_bytes);
    gauge(&mut out, "roost_store_write_buffer_bytes", "Memtables of the store.", m.store.write_buffer_bytes);
    gauge(&mut out, "roost_memory_budget_bytes", "The process memory budget.", m.budget_bytes);
    let _ = writeln!(
        out,
        "# HELP roost_memory_pool_bytes Use of each budget pool.\n# TYPE roost_memory_pool_bytes gauge"
    );
    for pool in &m.pools {
        let _ = writeln!(out, "roost_memory_pool_bytes{{pool=\"{}\"}} {}", pool.name, pool.bytes_used);
    }
    let _ = writeln!(out, "# HELP roost_memory_pool_bytes_max Cap of each budget pool.\n# TYPE roost_memory_pool_bytes_max gauge");
    for pool in &m.pools {
        let _ = writeln!(out, "roost_memory_pool_bytes_max{{pool=\"{}\"}} {}", pool.name, pool.bytes_max);
    }
    let _ = writeln!(out, "# HELP roost_actors Actors by state.\n# TYPE roost_actors gauge");
    for (state, n) in
        [("awake", stats.actors_awake), ("waking", stats.actors_waking), ("known", stats.actors_known)]
    {
        let _ = writeln!(out, "roost_actors{{state=\"{state}\"}} {n}");
    }
    gauge(&mut out, "roost_awake_max", "Actors that may be awake at once.", stats.awake_max as u64);
    gauge(
        &mut out,
        "roost_actor_bytes_measured",
        "What one awake actor costs, as last measured (0 until measured).",
        stats.actor_bytes_measured,
    );
    gauge(&mut out, "roost_wakes_queued", "Wakes waiting for admission.", stats.wakes_queued as u64);
    counter(&mut out, "roost_wakes_total", "Actors woken.", stats.wakes_total);
    counter(&mut out, "roost_sleeps_total", "Actors put to sleep on request.", stats.sleeps_total);
    counter(
        &mut out,
        "roost_evictions_total",
        "Idle actors put to sleep to stay in budget.",
        stats.evictions_total,
    );
    counter(
        &mut out,
        "roost_idle_sleeps_total",
        "Actors put to sleep after the idle timeout.",
        stats.idle_sleeps_total,
    );
    counter(
        &mut out,
        "roost_overloaded_total",
        "Requests refused as overloaded by the host.",
        stats.overloaded_total,
    );
    counter(&mut out, "roost_store_read_calls_total", "Store read round trips.", m.store.read_calls);
    counter(&mut out, "roost_store_write_calls_total", "Store write round trips.", m.store.write_calls);
    counter(&mut out, "roost_store_group_commits_total", "Physical store commits.", m.store.group_commits);
    counter(&mut out, "roost_store_syncs_total", "Store fsyncs.", m.store.syncs);
    counter(
        &mut out,
        "roost_store_lost_answers_total",
        "Commits whose answer was lost and whose outcome was read back by commit id.",
        m.store.lost_answers,
    );
    render_round_trips(&mut out, &crate::vfs::RoundTrips::now());
    counter(
        &mut out,
        "roost_store_staged_writes_total",
        "Writes too big for one call, uploaded in chunks ahead of their commit.",
        m.store.staged_writes,
    );
    counter(
        &mut out,
        "roost_store_staged_uploads_total",
        "Upload round trips of staged writes (on top of the write calls).",
        m.store.staged_uploads,
    );
    render_store_latency(&mut out, &m.store);
    render_wake_latency(&mut out, &stats.wake_latency);
    render_store_capacity(&mut out, &m.store);
    render_requests(&mut out, metrics);
    out
}

/// Scratch files and spools: disk, capped on their own.
pub fn render_files(out: &mut String, state: &AppState) {
    let storage = state.host().storage();
    let spool = state.spool_budget();
    let help = "Bytes of SQLite scratch files (sorts, temp tables, VACUUM copies).";
    gauge(out, "roost_scratch_bytes", help, storage.scratch_bytes());
    gauge(out, "roost_scratch_bytes_max", "Cap of roost_scratch_bytes.", storage.scratch_bytes_max());
    gauge(out, "roost_spool_bytes", "Bytes of import and export spools.", spool.bytes());
    gauge(out, "roost_spool_bytes_max", "Cap of roost_spool_bytes.", spool.bytes_max());
}

/// This node's lease, forwarding and routing, with several nodes.
pub fn render_cluster(out: &mut String, state: &AppState) {
    let Some(cluster) = state.cluster() else { return };
    let c = &cluster.counters;
    let read = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
    gauge(
        out,
        "roost_cluster_serving",
        "1 while this node's lease is current.",
        u64::from(cluster.serving()),
    );
    gauge(out, "roost_cluster_epoch", "This node's registration epoch.", cluster.epoch().max(0) as u64);
    gauge(out, "roost_cluster_routes", "Remote actor owners remembered.", cluster.routes_len() as u64);
    counter(out, "roost_cluster_lease_renewals_total", "Lease renewals.", read(&c.renewals));
    counter(
        out,
        "roost_cluster_lease_renewal_failures_total",
        "Failed lease renewals.",
        read(&c.renewal_failures),
    );
    counter(out, "roost_cluster_leases_lost_total", "Times the lease lapsed.", read(&c.leases_lost));
    counter(out, "roost_cluster_forwarded_total", "Requests forwarded to another node.", read(&c.forwarded));
    counter(
        out,
        "roost_cluster_forward_failures_total",
        "Forwards that could not reach the owner.",
        read(&c.forward_failures),
    );
    counter(out, "roost_cluster_owner_lookups_total", "Owner lookups in the store.", read(&c.owner_lookups));
    counter(
        out,
        "roost_cluster_actors_moved_total",
        "Actors moved to the PostgreSQL shard they belong to.",
        read(&c.actors_moved),
    );
    counter(
        out,
        "roost_cluster_rebalances_total",
        "Walks of every shard for actors to move that have ended (one after the node starts).",
        read(&c.rebalances),
    );
    gauge(
        out,
        "roost_cluster_shards",
        "PostgreSQL shards this node stores actors on.",
        cluster.shards().len() as u64,
    );
}

/// Store round trips per wake and per durable commit, as two counter pairs.
fn render_round_trips(out: &mut String, trips: &crate::vfs::RoundTrips) {
    counter(out, "roost_wakes_measured_total", "Wakes whose first statement ended.", trips.wakes);
    counter(
        out,
        "roost_wake_store_calls_total",
        "Store calls of wakes: the claim or first read and every call of the first statement.",
        trips.wake_calls,
    );
    counter(out, "roost_commits_total", "Durable commits of actors.", trips.commits);
    counter(
        out,
        "roost_commit_store_calls_total",
        "Store writes of durable commits, the transaction's earlier non-durable writes included.",
        trips.commit_calls,
    );
}

/// Disk use of the store, the free space left and failed writes by kind.
fn render_store_capacity(out: &mut String, store: &crate::kv::KvStats) {
    gauge(out, "roost_store_disk_bytes", "Bytes the store takes on disk.", store.disk_bytes);
    gauge(out, "roost_store_fs_free_bytes", "Free bytes on the store's file system.", store.disk.free_bytes);
    gauge(out, "roost_store_fs_size_bytes", "Size of the store's file system.", store.disk.total_bytes);
    gauge(
        out,
        "roost_store_disk_reserve_bytes",
        "Writes are refused (storage_full) while free bytes are below this.",
        store.disk.reserve_bytes,
    );
    let c = &store.compaction;
    gauge(
        out,
        "roost_store_compactions_running",
        "Background compactions of the store's tables running now.",
        c.running,
    );
    counter(
        out,
        "roost_store_compactions_total",
        "Background compactions of the store's tables finished (roost compact not counted).",
        c.completed,
    );
    let name = "roost_store_compaction_seconds_total";
    let _ = writeln!(
        out,
        "# HELP {name} Time spent in background compactions of the store's tables.\n# TYPE {name} counter"
    );
    let _ = writeln!(out, "{name} {}", c.time_ms as f64 / 1e3);
    gauge(
        out,
        "roost_store_flushes_pending",
        "Sealed write buffers not yet written out as tables.",
        c.flushes_pending,
    );
    gauge(out, "roost_store_tables", "Tables of the store on disk.", c.tables);
    gauge(
        out,
        "roost_store_l0_tables",
        "Tables written out and not yet merged (compaction debt).",
        c.l0_tables,
    );
    let name = "roost_store_write_errors_total";
    let _ = writeln!(out, "# HELP {name} Failed store writes by kind.\n# TYPE {name} counter");
    for (kind, n) in store.write_errors.by_kind() {
        let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {n}");
    }
}

/// One histogram series of `name` (with `label`, e.g. `op="read"`, or none) in seconds.
fn histogram(out: &mut String, name: &str, label: &str, h: &crate::kv::LatencyHistogram) {
    let sep = if label.is_empty() { "" } else { "," };
    for (n, bound) in h.buckets.iter().zip(crate::kv::LATENCY_BUCKETS_S) {
        let _ = writeln!(out, "{name}_bucket{{{label}{sep}le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{label}{sep}le=\"+Inf\"}} {}", h.count);
    let braces = |s: &str| if s.is_empty() { String::new() } else { format!("{{{s}}}") };
    let _ = writeln!(out, "{name}_sum{} {}", braces(label), h.sum_micros as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{} {}", braces(label), h.count);
}

/// From a request's arrival to its statement starting, for requests that found their actor
/// asleep.
fn render_wake_latency(out: &mut String, h: &crate::kv::LatencyHistogram) {
    let name = "roost_wake_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} From a request's arrival to its statement starting, when its actor was asleep.\n# TYPE {name} histogram"
    );
    histogram(out, name, "", h);
}

fn render_store_latency(out: &mut String, store: &crate::kv::KvStats) {
    let name = "roost_store_call_duration_seconds";
    let _ = writeln!(out, "# HELP {name} Store round-trip latency.\n# TYPE {name} histogram");
    for (op, h) in [("read", &store.read_latency), ("write", &store.write_latency)] {
        histogram(out, name, &format!("op=\"{op}\""), h);
    }
}

fn render_requests(out: &mut String, metrics: &Metrics) {
    let _ = writeln!(
        out,
        "# HELP roost_http_requests_total HTTP requests.\n# TYPE roost_http_requests_total counter"
    );
    for ((route, status), n) in metrics.requests.lock().iter() {
        let _ = writeln!(out, "roost_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP roost_http_request_duration_seconds HTTP request latency.\n# TYPE roost_http_request_duration_seconds histogram"
    );
    for (route, h) in metrics.latency.lock().iter() {
        for (bucket, bound) in h.buckets.iter().zip(BUCKETS_S) {
            let n = bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "roost_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}"
            );
        }
        let count = h.count.load(Ordering::Relaxed);
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "roost_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(out, "roost_http_request_duration_seconds_sum{{route=\"{route}\"}} {sum}");
        let _ = writeln!(out, "roost_http_request_duration_seconds_count{{route=\"{route}\"}} {count}");
    }
}
