//! Results of the storage benchmark: latency summaries, the text table and the JSON document.

use std::fmt::Write as _;
use std::time::Duration;

use roost::kv::KvStats;
use serde::Serialize;

use super::engines::SqliteEngine;
use crate::common::{opt, quantile_us, ProcUsage, UsagePerOp, USAGE_SETTLE};

/// Time taken to preload one engine.
#[derive(Debug, Clone, Serialize)]
pub struct Load {
    pub engine: &'static str,
    pub rows: usize,
    pub secs: f64,
    pub rows_per_sec: f64,
}

impl Load {
    pub fn new(engine: &'static str, rows: usize, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64();
        Self { engine, rows, secs, rows_per_sec: rows as f64 / secs }
    }
}

/// Store call counts per operation (roost only).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StoreCalls {
    /// Store `write` calls per operation; every operation of a commit workload is one commit.
    pub store_writes_per_commit: f64,
    pub store_reads_per_op: f64,
    pub store_syncs_per_op: f64,
    pub store_group_commits_per_op: f64,
}

impl StoreCalls {
    pub fn between(before: KvStats, after: KvStats, ops: usize) -> Self {
        let per_op = |a: u64, b: u64| (b - a) as f64 / ops as f64;
        Self {
            store_writes_per_commit: per_op(before.write_calls, after.write_calls),
            store_reads_per_op: per_op(before.read_calls, after.read_calls),
            store_syncs_per_op: per_op(before.syncs, after.syncs),
            store_group_commits_per_op: per_op(before.group_commits, after.group_commits),
        }
    }
}

/// One engine on one workload.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub engine: &'static str,
    pub workload: &'static str,
    pub ops: usize,
    pub secs: f64,
    pub ops_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// CPU time and disk writes of the whole process over the workload plus
    /// [`USAGE_SETTLE`]; every operation of a commit workload is one
    /// commit.
    #[serde(flatten)]
    pub usage: UsagePerOp,
    #[serde(flatten)]
    pub store: Option<StoreCalls>,
    /// ops/s divided by the ops/s of sqlite-wal-full (resp. -normal) on the same workload.
    pub vs_sqlite_wal_full: Option<f64>,
    pub vs_sqlite_wal_normal: Option<f64>,
}

impl Measurement {
    pub fn new(
        engine: &'static str,
        workload: &'static str,
        mut latencies: Vec<Duration>,
        wall: Duration,
        usage: &ProcUsage,
    ) -> Self {
        latencies.sort_unstable();
        let ops = latencies.len();
        let secs = wall.as_secs_f64();
        Self {
            engine,
            workload,
            ops,
            secs,
            ops_per_sec: ops as f64 / secs,
            p50_us: quantile_us(&latencies, 0.50),
            p99_us: quantile_us(&latencies, 0.99),
            max_us: quantile_us(&latencies, 1.0),
            usage: usage.per_op(ops as u64),
            store: None,
            vs_sqlite_wal_full: None,
            vs_sqlite_wal_normal: None,
        }
    }
}

/// Fills the ratio columns of every measurement from the SQLite baselines.
pub fn fill_ratios(results: &mut [Measurement]) {
    let baseline = |results: &[Measurement], engine: &str, workload: &str| {
        results.iter().find(|m| m.engine == engine && m.workload == workload).map(|m| m.ops_per_sec)
    };
    for i in 0..results.len() {
        let workload = results[i].workload;
        let full = baseline(results, SqliteEngine::FULL, workload);
        let normal = baseline(results, SqliteEngine::NORMAL, workload);
        let own = results[i].ops_per_sec;
        results[i].vs_sqlite_wal_full = full.map(|b| own / b);
        results[i].vs_sqlite_wal_normal = normal.map(|b| own / b);
    }
}

/// The parameters of the run and the machine it ran on.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub rows: usize,
    pub ops: usize,
    pub txn_ops: usize,
    pub txn_rows: usize,
    pub value_bytes: usize,
    pub seed: u64,
    pub data_dir: String,
    pub cpus: usize,
    pub sqlite_version: &'static str,
}

/// The whole JSON document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub run: RunInfo,
    pub loads: Vec<Load>,
    pub results: Vec<Measurement>,
}

/// Table columns: header and width. The first two are left-aligned, the others right-aligned.
const COLUMNS: [(&str, usize); 12] = [
    ("workload", 12),
    ("engine", 18),
    ("ops", 6),
    ("ops/s", 10),
    ("p50 us", 9),
    ("p99 us", 9),
    ("vs full", 8),
    ("vs normal", 10),
    ("cpu us/op", 10),
    ("write B/op", 11),
    ("writes/commit", 14),
    ("reads/op", 9),
];

fn push_line(out: &mut String, cells: &[String]) {
    for (i, (cell, (_, width))) in cells.iter().zip(COLUMNS).enumerate() {
        let _ = match i {
            0 => write!(out, "{cell:<width$}"),
            1 => write!(out, " {cell:<width$}"),
            _ => write!(out, " {cell:>width$}"),
        };
    }
    out.push('\n');
}

fn cells(m: &Measurement) -> Vec<String> {
    vec![
        m.workload.to_string(),
        m.engine.to_string(),
        m.ops.to_string(),
        format!("{:.0}", m.ops_per_sec),
        format!("{:.1}", m.p50_us),
        format!("{:.1}", m.p99_us),
        opt(m.vs_sqlite_wal_full, 2),
        opt(m.vs_sqlite_wal_normal, 2),
        format!("{:.1}", m.usage.cpu_us_per_op),
        format!("{:.0}", m.usage.write_bytes_per_op),
        opt(m.store.map(|s| s.store_writes_per_commit), 2),
        opt(m.store.map(|s| s.store_reads_per_op), 2),
    ]
}

impl Report {
    /// The results as an aligned text table, grouped by workload.
    pub fn table(&self) -> String {
        let run = &self.run;
        let mut out = format!(
            "roost bench storage: {} rows preloaded, {} ops per workload ({} for txn_100rows), seed {}\n",
            run.rows, run.ops, run.txn_ops, run.seed
        );
        let _ = writeln!(out, "{} cpus, SQLite {}, data in {}\n", run.cpus, run.sqlite_version, run.data_dir);
        for load in &self.loads {
            let _ = writeln!(
                out,
                "load {:<18} {} rows in {:.3} s ({:.0} rows/s)",
                load.engine, load.rows, load.secs, load.rows_per_sec
            );
        }
        out.push('\n');
        push_line(&mut out, &COLUMNS.map(|(header, _)| header.to_string()));
        let mut previous = "";
        for m in &self.results {
            if !previous.is_empty() && previous != m.workload {
                out.push('\n');
            }
            previous = m.workload;
            push_line(&mut out, &cells(m));
        }
        out.push_str("\nvs full / vs normal: ops/s divided by sqlite-wal-full / sqlite-wal-normal ops/s.\n");
        let _ = writeln!(
            out,
            "cpu us/op, write B/op: user+system CPU time of the whole process (/proc/self/stat, 10 ms ticks) and \
             bytes it caused to be written to disk (/proc/self/io write_bytes) per operation, over the workload \
             plus a {} s settle; a commit workload's operation is one commit.",
            USAGE_SETTLE.as_secs_f64()
        );
        out.push_str("writes/commit, reads/op: KV store write and read calls per operation (roost only).\n");
        out
    }
}
