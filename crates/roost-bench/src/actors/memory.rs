//! `roost bench actors memory`: what N awake, idle actors cost.
//!
//! For every N (0 and 1 always included) and every engine, a fresh child process runs the
//! reference workload on `actor-0000` .. one actor at a time, leaves every actor open and idle,
//! waits for background work to settle and reads VmRSS / VmHWM and SQLite's heap. Then, with
//! the memory figures taken, it times single-row autocommit inserts on actor 0 and the wake
//! (first query after sleeping) of a sample of actors.
//!
//! Engines: `roost` (a `Host` over fjall, budget large enough that every actor stays awake, no
//! idle timeout), `native` (one rusqlite connection per actor on a plain file, default settings)
//! and the diagnostic `roost-release` (roost calling `Database::release_memory` after the
//! workload, which the host does not do on its own).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use roost::{HostConfig, Params, Value};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::child::{self, Task};
use super::report::HostFigures;
use super::workload::{self, actor_id, actor_name, Answers};
use super::{open_host, runtime, scratch_dir, to_usize, BenchResult, StoreCaps};
use super::{MemoryArgs, MemoryEngine};
use crate::common::{
    fixed, open_files_limit, opt, verdict, write_results, AllocatorFigures, Machine, ProcMemory, Summary,
    Table, KIB, MIB,
};

/// Marginal RSS per awake actor at the largest N (10,000 by default): target and goal.
const MARGINAL_TARGET_KIB: f64 = 64.0;
const MARGINAL_GOAL_KIB: f64 = 32.0;
/// RSS of a host with no actor.
const BASE_TARGET_BYTES: f64 = 30e6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    Roost,
    RoostRelease,
    Native,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Self::Roost => "roost",
            Self::RoostRelease => "roost-release",
            Self::Native => "native",
        }
    }
}

impl From<MemoryEngine> for Engine {
    fn from(e: MemoryEngine) -> Self {
        match e {
            MemoryEngine::Roost => Self::Roost,
            MemoryEngine::Native => Self::Native,
            MemoryEngine::RoostRelease => Self::RoostRelease,
        }
    }
}

/// One child process: `actors` actors on `engine`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PointTask {
    pub engine: Engine,
    pub actors: usize,
    pub dir: PathBuf,
    pub inserts: usize,
    pub wake_sample: usize,
    pub settle_ms: u64,
    /// roost: the host's memory budget.
    pub budget_bytes: u64,
}

/// What one child measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    pub engine: Engine,
    pub actors: usize,
    /// VmRSS / VmHWM once every actor is awake and idle.
    pub memory: ProcMemory,
    /// jemalloc's figures at the same moment.
    pub allocator: AllocatorFigures,
    /// SQLite's heap before the first actor and once all are awake.
    pub sqlite_before_bytes: u64,
    pub sqlite_used_bytes: u64,
    pub sqlite_page_cache_bytes: u64,
    /// Wall time of steps 1-4 for all actors, one after another.
    pub setup_secs: f64,
    /// Step 1 (opening the database), mean per actor.
    pub open_us_per_actor: Option<f64>,
    /// Waking an asleep actor with data: its first query (`SELECT COUNT(*) FROM messages`).
    pub wake_us: Option<Summary>,
    /// Single-row autocommit inserts per second on actor 0.
    pub inserts_per_sec: Option<f64>,
    /// roost only: the same wakes as the host measures them, from its `wake_latency` histogram
    /// (request arrival to statement start; quantiles interpolated inside buckets).
    #[serde(default)]
    pub wake_inside_us: Option<WakeInside>,
    /// roost only: the host's figures once every actor is awake.
    pub host: Option<HostFigures>,
}

/// Quantiles of the host's wake histogram, microseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct WakeInside {
    pub p50: f64,
    pub p99: f64,
    pub count: u64,
}

/// The child's side.
pub fn measure_point(task: &PointTask) -> BenchResult<Point> {
    std::fs::create_dir_all(&task.dir)?;
    let rt = runtime()?;
    match task.engine {
        Engine::Roost | Engine::RoostRelease => rt.block_on(roost_point(task)),
        Engine::Native => native_point(task),
    }
}

fn progress(engine: Engine, i: usize, n: usize, start: Instant) {
    if (i + 1).is_multiple_of(5_000) && i + 1 < n {
        eprintln!("  {}: {} / {n} actors ({:.1} s)", engine.name(), i + 1, start.elapsed().as_secs_f64());
    }
}

/// Indices of up to `k` actors spread evenly over `n`.
fn sample(n: usize, k: usize) -> Vec<usize> {
    let k = k.min(n);
    (0..k).map(|j| j * n / k).collect()
}

fn count_of(rows: &[Vec<Value>]) -> i64 {
    match rows.first().and_then(|r| r.first()) {
        Some(Value::Integer(n)) => *n,
        _ => -1,
    }
}

async fn roost_point(task: &PointTask) -> BenchResult<Point> {
    let config = HostConfig {
        memory_budget_bytes: task.budget_bytes,
        idle_timeout_ms: u64::MAX / 4,
        ..HostConfig::default()
    };
    let host = open_host(&task.dir, StoreCaps::defaults(), config)?;
    let sqlite_before_bytes = roost::vfs::sqlite_memory().used_bytes;
    let release = task.engine == Engine::RoostRelease;
    let (n, start) = (task.actors, Instant::now());
    let mut open = Duration::ZERO;
    for i in 0..n {
        let id = actor_id(i)?;
        let t = Instant::now();
        host.with_db(&id, |_| Ok(())).await?;
        open += t.elapsed();
        let answers = host
            .with_db(&id, move |db| {
                let answers = workload::roost_workload(db)?;
                if release {
                    db.release_memory();
                }
                Ok(answers)
            })
            .await?;
        answers.check()?;
        progress(task.engine, i, n, start);
    }
    let setup_secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(task.settle_ms)).await;
    let memory = ProcMemory::read()?;
    let allocator = AllocatorFigures::read();
    let stats = host.stats();
    let sqlite = stats.memory.sqlite;
    if stats.actors_awake != n {
        let (awake, max) = (stats.actors_awake, stats.awake_max);
        return Err(
            format!("{awake} of {n} actors are awake (awake_max {max}): the host put some to sleep").into()
        );
    }

    let mut inserts_per_sec = None;
    let mut wake_us = None;
    if n > 0 {
        let first = actor_id(0)?;
        let t = Instant::now();
        for i in 0..task.inserts {
            host.execute(&first, workload::INSERT_EVENT, workload::event_params(i)).await?;
        }
        inserts_per_sec = Some(task.inserts as f64 / t.elapsed().as_secs_f64());
        let mut wakes = Vec::new();
        for i in sample(n, task.wake_sample) {
            let id = actor_id(i)?;
            host.sleep(&id).await?;
            let t = Instant::now();
            let result = host.with_db(&id, |db| db.execute(workload::COUNT_MESSAGES, &Params::None)).await?;
            wakes.push(t.elapsed());
            if count_of(&result.rows) != Answers::EXPECTED.count {
                return Err(format!("{id} lost messages: {:?}", result.rows).into());
            }
        }
        wake_us = Some(Summary::of(wakes.iter().map(|d| d.as_secs_f64() * 1e6).collect()));
    }
    let wake_inside = host.stats().wake_latency;
    host.shutdown().await;
    Ok(Point {
        engine: task.engine,
        actors: n,
        memory,
        allocator,
        sqlite_before_bytes,
        sqlite_used_bytes: sqlite.used_bytes,
        sqlite_page_cache_bytes: sqlite.page_cache_bytes,
        setup_secs,
        open_us_per_actor: (n > 0).then(|| open.as_secs_f64() * 1e6 / n as f64),
        wake_us,
        inserts_per_sec,
        wake_inside_us: wake_inside
            .quantile_s(0.5)
            .zip(wake_inside.quantile_s(0.99))
            .map(|(p50, p99)| WakeInside { p50: p50 * 1e6, p99: p99 * 1e6, count: wake_inside.count }),
        host: Some(stats.into()),
    })
}

fn native_point(task: &PointTask) -> BenchResult<Point> {
    let path = |i: usize| task.dir.join(format!("{}.db", actor_name(i)));
    let sqlite_before_bytes = roost::vfs::sqlite_memory().used_bytes;
    let (n, start) = (task.actors, Instant::now());
    let mut open = Duration::ZERO;
    let mut conns: Vec<Option<Connection>> = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let conn = workload::native_open(&path(i))?;
        open += t.elapsed();
        workload::native_workload(&conn)?.check()?;
        conns.push(Some(conn));
        progress(task.engine, i, n, start);
    }
    let setup_secs = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(task.settle_ms));
    let memory = ProcMemory::read()?;
    let allocator = AllocatorFigures::read();
    let sqlite = roost::vfs::sqlite_memory();

    let mut inserts_per_sec = None;
    let mut wake_us = None;
    if let Some(Some(first)) = conns.first() {
        let t = Instant::now();
        for i in 0..task.inserts {
            workload::native_event(first, i)?;
        }
        inserts_per_sec = Some(task.inserts as f64 / t.elapsed().as_secs_f64());
        let mut wakes = Vec::new();
        for i in sample(n, task.wake_sample) {
            drop(conns[i].take());
            let t = Instant::now();
            let conn = workload::native_open(&path(i))?;
            let count: i64 = conn.prepare_cached(workload::COUNT_MESSAGES)?.query_row([], |r| r.get(0))?;
            wakes.push(t.elapsed());
            if count != Answers::EXPECTED.count {
                return Err(format!("{} lost messages: {count}", actor_name(i)).into());
            }
            conns[i] = Some(conn);
        }
        wake_us = Some(Summary::of(wakes.iter().map(|d| d.as_secs_f64() * 1e6).collect()));
    }
    Ok(Point {
        engine: task.engine,
        actors: n,
        memory,
        allocator,
        sqlite_before_bytes,
        sqlite_used_bytes: sqlite.used_bytes,
        sqlite_page_cache_bytes: sqlite.page_cache_bytes,
        setup_secs,
        open_us_per_actor: (n > 0).then(|| open.as_secs_f64() * 1e6 / n as f64),
        wake_us,
        inserts_per_sec,
        wake_inside_us: None,
        host: None,
    })
}

/// One line of the table: a point and the figures derived from the engine's other points.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub engine: &'static str,
    pub actors: usize,
    pub rss_mib: f64,
    pub hwm_mib: f64,
    pub rss_per_actor_kib: Option<f64>,
    /// `(RSS(N) - RSS(1)) / (N - 1)`.
    pub marginal_rss_per_actor_kib: Option<f64>,
    pub sqlite_used_mib: f64,
    pub sqlite_page_cache_mib: f64,
    /// `(SQLite heap with N awake - SQLite heap before the first) / N`.
    pub sqlite_heap_per_actor_kib: Option<f64>,
    pub store_cache_mib: Option<f64>,
    pub store_write_buffer_mib: Option<f64>,
    pub setup_secs: f64,
    pub open_us_per_actor: Option<f64>,
    pub wake_us_p50: Option<f64>,
    pub wake_us_p99: Option<f64>,
    pub wake_inside_us_p50: Option<f64>,
    pub wake_inside_us_p99: Option<f64>,
    pub inserts_per_sec: Option<f64>,
    /// roost: actors allowed awake at once, and one actor's cost as the host measured it.
    pub awake_max: Option<usize>,
    pub actor_bytes_measured_kib: Option<f64>,
}

fn row(point: &Point, points: &[Point]) -> Row {
    let n = point.actors;
    let rss = point.memory.rss_bytes as f64;
    let one = points.iter().find(|p| p.engine == point.engine && p.actors == 1);
    let marginal = one.filter(|_| n >= 2).map(|p| (rss - p.memory.rss_bytes as f64) / (n - 1) as f64 / KIB);
    let heap = point.sqlite_used_bytes as f64 - point.sqlite_before_bytes as f64;
    Row {
        engine: point.engine.name(),
        actors: n,
        rss_mib: rss / MIB,
        hwm_mib: point.memory.hwm_bytes as f64 / MIB,
        rss_per_actor_kib: (n > 0).then(|| rss / n as f64 / KIB),
        marginal_rss_per_actor_kib: marginal,
        sqlite_used_mib: point.sqlite_used_bytes as f64 / MIB,
        sqlite_page_cache_mib: point.sqlite_page_cache_bytes as f64 / MIB,
        sqlite_heap_per_actor_kib: (n > 0).then(|| heap / n as f64 / KIB),
        store_cache_mib: point.host.as_ref().map(|h| h.store_cache_bytes as f64 / MIB),
        store_write_buffer_mib: point.host.as_ref().map(|h| h.store_write_buffer_bytes as f64 / MIB),
        setup_secs: point.setup_secs,
        open_us_per_actor: point.open_us_per_actor,
        wake_us_p50: point.wake_us.map(|s| s.p50),
        wake_us_p99: point.wake_us.map(|s| s.p99),
        wake_inside_us_p50: point.wake_inside_us.map(|w| w.p50),
        wake_inside_us_p99: point.wake_inside_us.map(|w| w.p99),
        inserts_per_sec: point.inserts_per_sec,
        awake_max: point.host.as_ref().map(|h| h.awake_max),
        actor_bytes_measured_kib: point.host.as_ref().map(|h| h.actor_bytes_measured as f64 / KIB),
    }
}

/// A target and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub value: f64,
    pub limit: f64,
    pub goal: Option<f64>,
    pub unit: &'static str,
    pub met: bool,
}

fn targets(rows: &[Row]) -> Vec<Target> {
    let mut out = Vec::new();
    let largest = rows.iter().rfind(|r| r.engine == "roost" && r.marginal_rss_per_actor_kib.is_some());
    if let Some(r) = largest {
        let value = r.marginal_rss_per_actor_kib.unwrap_or_default();
        out.push(Target {
            name: format!("roost marginal RSS per awake actor at N={}", r.actors),
            value,
            limit: MARGINAL_TARGET_KIB,
            goal: Some(MARGINAL_GOAL_KIB),
            unit: "KiB",
            met: value <= MARGINAL_TARGET_KIB,
        });
    }
    if let Some(r) = rows.iter().find(|r| r.engine == "roost" && r.actors == 0) {
        let value = r.rss_mib * MIB / 1e6;
        out.push(Target {
            name: "roost idle host base RSS (N=0)".into(),
            value,
            limit: BASE_TARGET_BYTES / 1e6,
            goal: None,
            unit: "MB",
            met: value * 1e6 <= BASE_TARGET_BYTES,
        });
    }
    out
}

#[derive(Debug, Serialize)]
struct RunParams {
    actors: Vec<usize>,
    engines: Vec<&'static str>,
    inserts: usize,
    wake_sample: usize,
    settle_ms: u64,
    host_budget_bytes: u64,
    store: StoreCaps,
}

#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    machine: Machine,
    params: RunParams,
    rows: Vec<Row>,
    targets: Vec<Target>,
    skipped: Vec<String>,
    points: Vec<Point>,
}

pub fn run(args: &MemoryArgs) -> BenchResult<()> {
    let scratch = scratch_dir(args.data.as_deref(), "memory")?;
    let mut ns = vec![0, 1];
    for n in &args.n {
        ns.push(to_usize(*n)?);
    }
    ns.sort_unstable();
    ns.dedup();
    let mut engines: Vec<Engine> = Vec::new();
    for e in &args.engines {
        if !engines.contains(&Engine::from(*e)) {
            engines.push(Engine::from(*e));
        }
    }
    let (inserts, wake_sample) = (to_usize(args.inserts)?, to_usize(args.wake_sample)?);
    let files_max = open_files_limit();
    let (mut points, mut skipped) = (Vec::new(), Vec::new());
    for &n in &ns {
        for &engine in &engines {
            if engine == Engine::Native && files_max.is_some_and(|max| n as u64 + 64 > max) {
                let why =
                    format!("native N={n}: needs {n} open files, the limit is {}", files_max.unwrap_or(0));
                eprintln!("skipped {why}");
                skipped.push(why);
                continue;
            }
            let dir = scratch.path().join(format!("{}-{n}", engine.name()));
            eprintln!("measuring {} with {n} awake actors", engine.name());
            let task = PointTask {
                engine,
                actors: n,
                dir: dir.clone(),
                inserts,
                wake_sample,
                settle_ms: args.settle_ms,
                budget_bytes: args.budget_mib << 20,
            };
            let point: Point = child::run(&Task::Memory(task))?;
            let _ = std::fs::remove_dir_all(&dir);
            points.push(point);
        }
    }
    let rows: Vec<Row> = points.iter().map(|p| row(p, &points)).collect();
    let report = Report {
        benchmark: "actors-memory",
        machine: Machine::new(scratch.path()),
        params: RunParams {
            actors: ns,
            engines: engines.iter().map(|e| e.name()).collect(),
            inserts,
            wake_sample,
            settle_ms: args.settle_ms,
            host_budget_bytes: args.budget_mib << 20,
            store: StoreCaps::defaults(),
        },
        targets: targets(&rows),
        rows,
        skipped,
        points,
    };
    print!("{}", table(&report));
    write_results(&args.json, &report)
}

fn table(report: &Report) -> String {
    let p = &report.params;
    let mut out = format!(
        "roost bench actors memory: reference workload on N awake idle actors, one child process per point\n\
         {} cpus, SQLite {}, data in {}; roost: host budget {} MiB, store cache {} MiB, write buffer {} MiB\n\n",
        report.machine.cpus,
        report.machine.sqlite_version,
        report.machine.data_dir,
        p.host_budget_bytes >> 20,
        p.store.cache_mib,
        p.store.write_buffer_mib,
    );
    let mut t = Table::new(
        &[
            "engine",
            "actors",
            "RSS MiB",
            "HWM MiB",
            "RSS/actor KiB",
            "marginal KiB",
            "SQLite MiB",
            "pcache MiB",
            "SQLite/actor KiB",
            "store cache MiB",
            "open us",
            "wake us p50",
            "wake in us p50/p99",
            "inserts/s",
            "awake max",
            "measured KiB",
        ],
        1,
    );
    let mut previous = None;
    for r in &report.rows {
        if previous.is_some_and(|n| n != r.actors) {
            t.blank();
        }
        previous = Some(r.actors);
        t.row(vec![
            r.engine.to_string(),
            r.actors.to_string(),
            fixed(r.rss_mib, 1),
            fixed(r.hwm_mib, 1),
            opt(r.rss_per_actor_kib, 1),
            opt(r.marginal_rss_per_actor_kib, 1),
            fixed(r.sqlite_used_mib, 1),
            fixed(r.sqlite_page_cache_mib, 1),
            opt(r.sqlite_heap_per_actor_kib, 1),
            opt(r.store_cache_mib, 1),
            opt(r.open_us_per_actor, 0),
            opt(r.wake_us_p50, 0),
            match (r.wake_inside_us_p50, r.wake_inside_us_p99) {
                (Some(p50), Some(p99)) => format!("{p50:.0}/{p99:.0}"),
                _ => "-".into(),
            },
            opt(r.inserts_per_sec, 0),
            r.awake_max.map_or("-".into(), |n| n.to_string()),
            opt(r.actor_bytes_measured_kib, 1),
        ]);
    }
    out.push_str(&t.render());
    out.push_str(
        "\nmarginal: (RSS(N) - RSS(1)) / (N - 1). SQLite/actor: SQLite heap growth / N. pcache: SQLite page \
         cache bytes.\nopen: step 1 per actor (sequential). wake: first query of an asleep actor with data, timed by the caller \
         (wake in: the host's own histogram, request arrival to statement start). \
         inserts/s: single-row\nautocommit inserts on actor 0 (roost: durable group commit; native: \
         journal_mode=DELETE, synchronous=FULL).\n",
    );
    for s in &report.skipped {
        out.push_str(&format!("skipped: {s}\n"));
    }
    out.push_str("\ntargets:\n");
    for target in &report.targets {
        let goal = target.goal.map_or(String::new(), |g| format!(", goal <= {g} {}", target.unit));
        out.push_str(&format!(
            "  {}: {:.1} {} (target <= {} {}{goal}): {}\n",
            target.name,
            target.value,
            target.unit,
            target.limit,
            target.unit,
            verdict(target.met)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_spread_over_the_actors() {
        assert_eq!(sample(10, 5), vec![0, 2, 4, 6, 8]);
        assert_eq!(sample(3, 100), vec![0, 1, 2]);
        assert!(sample(0, 10).is_empty());
    }
}
