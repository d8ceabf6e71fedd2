//! Helpers every benchmark shares: errors, scratch folders, process memory, CPU time and disk
//! writes, the allocator's figures, nearest-rank quantiles, the aligned text table and the JSON document.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use roost::server::AllocatorStats;
use serde::{Deserialize, Serialize};

/// Errors of the benchmarks: anything printable.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub const KIB: f64 = 1024.0;
pub const MIB: f64 = 1024.0 * 1024.0;

/// Bytes in MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

pub fn to_usize(n: u64) -> BenchResult<usize> {
    usize::try_from(n).map_err(|_| format!("{n} is too large").into())
}

/// A fresh folder named `<prefix><random>`, removed when dropped: inside `data` (created if
/// missing) if given, else in the system temp dir.
pub fn scratch_dir(data: Option<&Path>, prefix: &str) -> BenchResult<tempfile::TempDir> {
    let builder = tempfile::Builder::new().prefix(prefix).clone();
    let dir = match data {
        Some(data) => {
            std::fs::create_dir_all(data).map_err(|e| format!("cannot create {}: {e}", data.display()))?;
            builder.tempdir_in(data)?
        }
        None => builder.tempdir()?,
    };
    Ok(dir)
}

/// A port of loopback that was free a moment ago (for a server to listen on).
pub fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// Waits (at most 30 s) until a `roost serve` listens on `port` of loopback.
pub fn wait_listening(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("roost serve did not start listening within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// This binary's `roost serve` in a child process on the embedded store in `data`, listening on
/// `port` of loopback with `--memory-budget budget_bytes` and no memory log lines; returns once
/// it listens.
pub fn start_server(data: &Path, port: u16, budget_bytes: u64) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let child = Command::new(exe)
        .args(["serve", "--data", &data.display().to_string(), "--listen", &format!("127.0.0.1:{port}")])
        .args(["--memory-budget", &budget_bytes.to_string(), "--memory-log-interval-s", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start roost serve: {e}"))?;
    wait_listening(port)?;
    Ok(child)
}

/// The process's resident memory now and its peak (`roost::host::process_memory`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ProcMemory {
    pub rss_bytes: u64,
    pub hwm_bytes: u64,
}

impl ProcMemory {
    pub fn read() -> BenchResult<Self> {
        let m =
            roost::host::process_memory().ok_or("cannot read the process's memory from /proc/self/status")?;
        Ok(Self { rss_bytes: m.rss_bytes, hwm_bytes: m.rss_peak_bytes })
    }
}

/// Linux's `USER_HZ`: the unit of the CPU times in `/proc/<pid>/stat`, part of /proc's ABI (100 on
/// every architecture roost builds for), so a reading has a 10 ms resolution.
const PROC_TICKS_PER_SEC: u64 = 100;

/// This process's CPU time (user and system, all threads including exited ones: `utime` and
/// `stime` of `/proc/self/stat`) and the bytes it caused to be written to disk (`write_bytes` of
/// `/proc/self/io`: counted when a page-cache page is dirtied, so a small append to a page a
/// previous fsync cleaned counts as a whole 4 KiB page). Two readings around a phase give that
/// phase's cost; background threads of a store are included, which is the point.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ProcUsage {
    pub user_us: u64,
    pub system_us: u64,
    pub write_bytes: u64,
}

impl ProcUsage {
    pub fn read() -> BenchResult<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat")?;
        let io = std::fs::read_to_string("/proc/self/io")?;
        Self::parse(&stat, &io).ok_or_else(|| "cannot parse /proc/self/stat or /proc/self/io".into())
    }

    fn parse(stat: &str, io: &str) -> Option<Self> {
        // The command name (field 2) is in parentheses and may hold spaces or ')': the fields
        // after the last ')' start with field 3 (state); utime and stime are fields 14 and 15.
        let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace().skip(11);
        let mut ticks_us = || fields.next()?.parse::<u64>().ok().map(|t| t * 1_000_000 / PROC_TICKS_PER_SEC);
        let (user_us, system_us) = (ticks_us()?, ticks_us()?);
        let line = io.lines().find(|l| l.starts_with("write_bytes:"))?;
        let write_bytes = line["write_bytes:".len()..].trim().parse().ok()?;
        Some(Self { user_us, system_us, write_bytes })
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            user_us: self.user_us.saturating_sub(earlier.user_us),
            system_us: self.system_us.saturating_sub(earlier.system_us),
            write_bytes: self.write_bytes.saturating_sub(earlier.write_bytes),
        }
    }

    /// A phase's usage (see [`since`](Self::since)) divided among the `ops` operations it did.
    pub fn per_op(&self, ops: u64) -> UsagePerOp {
        let per = |v: u64| v as f64 / ops.max(1) as f64;
        UsagePerOp {
            cpu_us_per_op: per(self.user_us + self.system_us),
            system_us_per_op: per(self.system_us),
            write_bytes_per_op: per(self.write_bytes),
        }
    }
}

/// How long a phase's measurement waits after its last operation before it reads [`ProcUsage`],
/// whatever the engine: work a store does in the background (fjall's memtable flushes and
/// compactions, journal rotation) then lands in the phase that caused it rather than the next one.
/// fjall has no "flush everything now" call that would not also add writes a steady state never
/// makes.
pub const USAGE_SETTLE: Duration = Duration::from_secs(1);

/// [`ProcUsage`] per operation. For a commit workload, an operation is one commit.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct UsagePerOp {
    /// User plus system CPU time of the whole process.
    pub cpu_us_per_op: f64,
    pub system_us_per_op: f64,
    pub write_bytes_per_op: f64,
}

/// Where the process allocator's statistics come from: set once by the binary that owns the
/// global allocator (the `roost` binary's jemalloc).
static ALLOCATOR_STATS: OnceLock<fn() -> AllocatorStats> = OnceLock::new();

/// Tells the benchmarks how to read the process allocator's statistics; the first call wins.
pub fn set_allocator_stats(stats: fn() -> AllocatorStats) {
    let _ = ALLOCATOR_STATS.set(stats);
}

/// The process allocator's (jemalloc's) figures: bytes in live allocations, in active pages, and
/// resident (live plus freed pages not yet returned to the system). All 0 when the binary did
/// not call [`set_allocator_stats`].
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct AllocatorFigures {
    pub allocated_bytes: u64,
    pub active_bytes: u64,
    pub resident_bytes: u64,
    pub retained_bytes: u64,
}

impl AllocatorFigures {
    pub fn read() -> Self {
        let Some(stats) = ALLOCATOR_STATS.get() else { return Self::default() };
        let s = stats();
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

/// The `p`-quantile (0..=1) of sorted values, nearest rank; `None` when empty. The one
/// implementation behind [`quantile`], [`quantile_ms`] and [`quantile_us`].
pub fn nearest_rank<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// The `p`-quantile (0..=1) of sorted values, nearest rank; 0 when empty.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    nearest_rank(sorted, p).unwrap_or(0.0)
}

/// The `p`-quantile of sorted latencies, nearest rank, in milliseconds; 0 when empty.
pub fn quantile_ms(sorted: &[Duration], p: f64) -> f64 {
    nearest_rank(sorted, p).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// The `p`-quantile of sorted latencies, nearest rank, in microseconds; 0 when empty.
pub fn quantile_us(sorted: &[Duration], p: f64) -> f64 {
    nearest_rank(sorted, p).map_or(0.0, |d| d.as_secs_f64() * 1e6)
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

/// Writes `value` to `path` as pretty JSON (with a final newline).
pub fn write_json(path: &Path, value: &impl Serialize) -> BenchResult<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// [`write_json`], then says where the results went.
pub fn write_results(path: &Path, value: &impl Serialize) -> BenchResult<()> {
    write_json(path, value)?;
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
        assert_eq!(quantile(&sorted[..1], 0.99), 1.0);
    }

    #[test]
    fn latency_quantiles_use_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(quantile_us(&sorted, 0.5), 50.0);
        assert_eq!(quantile_us(&sorted, 0.99), 99.0);
        assert_eq!(quantile_us(&sorted, 1.0), 100.0);
        assert_eq!(quantile_us(&sorted[..1], 0.99), 1.0);
        assert!((quantile_ms(&sorted, 0.5) - 0.05).abs() < 1e-12);
        assert_eq!(quantile_ms(&[], 0.5), 0.0);
        assert_eq!(quantile_us(&[], 0.5), 0.0);
    }

    #[test]
    fn scratch_dirs_are_created_inside_data_and_removed() {
        let data = tempfile::tempdir().unwrap();
        let inside = data.path().join("missing");
        let dir = scratch_dir(Some(&inside), "roost-bench-test-").unwrap();
        let path = dir.path().to_path_buf();
        assert!(path.starts_with(&inside) && path.is_dir());
        assert!(path.file_name().unwrap().to_string_lossy().starts_with("roost-bench-test-"));
        drop(dir);
        assert!(!path.exists());
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
    fn proc_usage_parses_and_subtracts() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 3 0 100 1000 10";
        let io = "rchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\nread_bytes: 0\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        let u = ProcUsage::parse(stat, io).unwrap();
        assert_eq!((u.user_us, u.system_us, u.write_bytes), (2_500_000, 370_000, 8192));
        let per = u.since(&ProcUsage { user_us: 500_000, system_us: 70_000, write_bytes: 0 }).per_op(100);
        assert_eq!(
            (per.cpu_us_per_op, per.system_us_per_op, per.write_bytes_per_op),
            (23_000.0, 3_000.0, 81.92)
        );
        let now = ProcUsage::read().unwrap();
        assert!(ProcUsage::read().unwrap().user_us >= now.user_us);
    }

    #[test]
    fn proc_memory_is_readable() {
        let m = ProcMemory::read().unwrap();
        assert!(m.rss_bytes > 0 && m.hwm_bytes >= m.rss_bytes);
    }
}
