//! Shared pieces of the actor benchmarks' results: process memory, latency summaries, the aligned
//! text table and the JSON document.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use roost::host::HostStats;
use serde::{Deserialize, Serialize};

use super::BenchResult;

pub const KIB: f64 = 1024.0;
pub const MIB: f64 = 1024.0 * 1024.0;

/// The process's resident memory now and its peak, from `/proc/self/status`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ProcMemory {
    pub rss_bytes: u64,
    pub hwm_bytes: u64,
}

impl ProcMemory {
    pub fn read() -> BenchResult<Self> {
        let status = std::fs::read_to_string("/proc/self/status")
            .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
        let field = |name: &str| -> BenchResult<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .ok_or_else(|| format!("/proc/self/status has no {name}"))?;
            let kib = line[name.len()..].trim().trim_end_matches("kB").trim();
            Ok(kib.parse::<u64>().map_err(|e| format!("{name} {kib:?}: {e}"))? * 1024)
        };
        Ok(Self { rss_bytes: field("VmRSS:")?, hwm_bytes: field("VmHWM:")? })
    }
}

/// The process allocator's (jemalloc's) figures: bytes in live allocations, in active pages, and
/// resident (live plus freed pages not yet returned to the system).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct AllocatorFigures {
    pub allocated_bytes: u64,
    pub active_bytes: u64,
    pub resident_bytes: u64,
    pub retained_bytes: u64,
}

impl AllocatorFigures {
    pub fn read() -> Self {
        let s = crate::alloc::stats();
        Self {
            allocated_bytes: s.allocated_bytes,
            active_bytes: s.active_bytes,
            resident_bytes: s.resident_bytes,
            retained_bytes: s.retained_bytes,
        }
    }
}

/// The soft limit on open files, from `/proc/self/limits`.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// The `p`-quantile (0..=1) of sorted values, nearest rank; 0 when empty.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// p50, p99 and max of a set of values.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Summary {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(mut values: Vec<f64>) -> Self {
        values.sort_unstable_by(f64::total_cmp);
        Self { p50: quantile(&values, 0.5), p99: quantile(&values, 0.99), max: quantile(&values, 1.0) }
    }

    /// Latencies summarized in milliseconds.
    pub fn of_ms(latencies: &[Duration]) -> Self {
        Self::of(latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect())
    }
}

/// One named memory pool of the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pool {
    pub name: String,
    pub bytes_max: u64,
    pub bytes_used: u64,
}

/// The host's counters and memory, serializable.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostFigures {
    pub actors_awake: usize,
    pub actors_known: usize,
    pub awake_max: usize,
    pub wakes_total: u64,
    pub sleeps_total: u64,
    pub evictions_total: u64,
    pub idle_sleeps_total: u64,
    pub overloaded_total: u64,
    pub requests_total: u64,
    pub budget_bytes: u64,
    pub sqlite_used_bytes: u64,
    pub sqlite_highwater_bytes: u64,
    pub sqlite_page_cache_bytes: u64,
    pub store_cache_bytes: u64,
    pub store_cache_bytes_max: u64,
    pub store_write_buffer_bytes: u64,
    pub store_write_buffer_bytes_max: u64,
    pub pools: Vec<Pool>,
}

impl From<HostStats> for HostFigures {
    fn from(s: HostStats) -> Self {
        let m = s.memory;
        Self {
            actors_awake: s.actors_awake,
            actors_known: s.actors_known,
            awake_max: s.awake_max,
            wakes_total: s.wakes_total,
            sleeps_total: s.sleeps_total,
            evictions_total: s.evictions_total,
            idle_sleeps_total: s.idle_sleeps_total,
            overloaded_total: s.overloaded_total,
            requests_total: s.requests_total,
            budget_bytes: m.budget_bytes,
            sqlite_used_bytes: m.sqlite.used_bytes,
            sqlite_highwater_bytes: m.sqlite.highwater_bytes,
            sqlite_page_cache_bytes: m.sqlite.page_cache_bytes,
            store_cache_bytes: m.store.cache_bytes,
            store_cache_bytes_max: m.store.cache_bytes_max,
            store_write_buffer_bytes: m.store.write_buffer_bytes,
            store_write_buffer_bytes_max: m.store.write_buffer_bytes_max,
            pools: m
                .pools
                .into_iter()
                .map(|p| Pool { name: p.name.to_string(), bytes_max: p.bytes_max, bytes_used: p.bytes_used })
                .collect(),
        }
    }
}

/// A number with `decimals`, or `-`.
pub fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

pub fn fixed(value: f64, decimals: usize) -> String {
    format!("{value:.decimals$}")
}

/// An aligned text table: the first `left` columns are left-aligned, the others right-aligned.
/// An empty row prints as a blank line.
pub struct Table {
    headers: Vec<&'static str>,
    left: usize,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str], left: usize) -> Self {
        Self { headers: headers.to_vec(), left, rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn blank(&mut self) {
        self.rows.push(Vec::new());
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                let sep = if i == 0 { "" } else { "  " };
                let _ = if i < self.left {
                    write!(out, "{sep}{cell:<width$}")
                } else {
                    write!(out, "{sep}{cell:>width$}")
                };
            }
            let trimmed = out.trim_end_matches(' ').len();
            out.truncate(trimmed);
            out.push('\n');
        }
        out
    }
}

/// `met` / `MISSED` for a target.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

pub fn write_json(path: &Path, value: &impl Serialize) -> BenchResult<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("\nresults written to {}", path.display());
    Ok(())
}

/// The machine and build a run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub sqlite_version: &'static str,
    pub data_dir: String,
}

impl Machine {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            sqlite_version: rusqlite::version(),
            data_dir: data_dir.display().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&sorted, 0.5), 50.0);
        assert_eq!(quantile(&sorted, 0.99), 99.0);
        assert_eq!(quantile(&sorted, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&["name", "n"], 1);
        t.row(vec!["a".into(), "1000".into()]);
        t.blank();
        t.row(vec!["long name".into(), "2".into()]);
        assert_eq!(t.render(), "name          n\na          1000\n\nlong name     2\n");
    }

    #[test]
    fn proc_memory_is_readable() {
        let m = ProcMemory::read().unwrap();
        assert!(m.rss_bytes > 0 && m.hwm_bytes >= m.rss_bytes);
    }
}
