//! `roost bench actors soak`: does RSS stay flat while actors wake and sleep for a long time?
//!
//! A population of actors is created with the reference workload. Then, for `--duration-s`,
//! cycles start at most every `--cycle-ms`: each picks `--actors` random actors and visits them
//! with bounded concurrency; every `--spike-every-s` (first one half a period in, so that the
//! warm-up and end samples sit between spikes) a spike visits `--spike-factor` times as many, all
//! at once. A visit inserts 10 messages in one transaction, then scans the latest 100. With a
//! short idle timeout and a small budget, actors keep waking, sleeping and being evicted. A
//! thread samples VmRSS every second.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use roost::{Host, HostConfig, HostError, Params, Statement};
use serde::Serialize;

use super::report::HostFigures;
use super::storm::backoff;
use super::workload::{self, actor_id};
use super::SoakArgs;
use super::{bounded, create_actors, open_host, runtime, scratch_dir, to_usize, BenchResult, StoreCaps};
use crate::common::{
    fixed, verdict, write_results, AllocatorFigures, Machine, ProcMemory, Summary, Table, MIB,
};

/// Messages inserted per visit, in one transaction.
const INSERTS: usize = 10;
/// The scan of every visit.
const SCAN: &str = "SELECT id, body FROM messages ORDER BY id DESC LIMIT 100";
const SCAN_ROWS: usize = 100;
const SETUP_CONCURRENCY: usize = 64;
const STORE: StoreCaps = StoreCaps { cache_mib: 16, write_buffer_mib: 16 };
/// One point of the JSON time series: seconds, RSS MiB, actors awake, jemalloc allocated MiB.
type SeriesPoint = (f64, f64, usize, f64);

/// Most points of the time series kept in the JSON.
const SERIES_POINTS: usize = 120;
/// Longest window of the median-based growth figure, seconds.
const WINDOW_S: f64 = 60.0;
/// RSS at the end may exceed RSS after warm-up by this much.
const GROWTH_TARGET_PCT: f64 = 10.0;

#[derive(Debug, Clone, Copy, Serialize)]
struct Sample {
    t_s: f64,
    rss_bytes: u64,
    hwm_bytes: u64,
    awake: usize,
    /// jemalloc: bytes in live allocations and resident.
    allocated_bytes: u64,
    allocator_resident_bytes: u64,
}

/// Counters shared by the visits.
#[derive(Default)]
struct Activity {
    visits: AtomicU64,
    retries: AtomicU64,
    latencies_ms: Mutex<Vec<f32>>,
}

/// Runs `op` until it answers something other than `Overloaded`, backing off in between.
async fn with_retries<T, F, Fut>(activity: &Activity, mut op: F) -> Result<T, HostError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, HostError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match op().await {
            Err(HostError::Overloaded { retry_after_ms, .. }) => {
                activity.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff(attempt, 10, 2_000, retry_after_ms)).await;
            }
            other => return other,
        }
    }
}

async fn visit(host: Host, i: usize, activity: Arc<Activity>) -> BenchResult<()> {
    let id = actor_id(i)?;
    let start = Instant::now();
    let inserts: Vec<Statement> = (0..INSERTS)
        .map(|k| {
            Statement::with_params(workload::INSERT_MESSAGE, workload::message_params(workload::MESSAGES + k))
        })
        .collect();
    with_retries(&activity, || host.batch(&id, inserts.clone(), true)).await?;
    let scan = with_retries(&activity, || host.execute(&id, SCAN, Params::None)).await?;
    if scan.rows.len() != SCAN_ROWS {
        return Err(format!("{id}: the scan returned {} rows, expected {SCAN_ROWS}", scan.rows.len()).into());
    }
    activity.visits.fetch_add(1, Ordering::Relaxed);
    activity.latencies_ms.lock().expect("not poisoned").push((start.elapsed().as_secs_f64() * 1e3) as f32);
    Ok(())
}

/// Samples memory every second on its own thread until `stop`, and once more at the end.
fn spawn_sampler(
    host: Host,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<BenchResult<Vec<Sample>>> {
    std::thread::spawn(move || {
        let sample = || -> BenchResult<Sample> {
            let m = ProcMemory::read()?;
            let awake = host.stats().actors_awake;
            let t_s = start.elapsed().as_secs_f64();
            let a = AllocatorFigures::read();
            Ok(Sample {
                t_s,
                rss_bytes: m.rss_bytes,
                hwm_bytes: m.hwm_bytes,
                awake,
                allocated_bytes: a.allocated_bytes,
                allocator_resident_bytes: a.resident_bytes,
            })
        };
        let mut samples = Vec::new();
        let mut next = start;
        while !stop.load(Ordering::Relaxed) {
            samples.push(sample()?);
            next += Duration::from_secs(1);
            while !stop.load(Ordering::Relaxed) && Instant::now() < next {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let last = sample()?;
        if samples.last().is_none_or(|s: &Sample| last.t_s - s.t_s >= 0.5) {
            samples.push(last);
        }
        Ok(samples)
    })
}

#[derive(Debug, Serialize)]
struct RunParams {
    duration_s: u64,
    warmup_s: f64,
    actors_per_cycle: usize,
    population: usize,
    concurrency: usize,
    cycle_ms: u64,
    spike_every_s: u64,
    spike_actors: usize,
    budget_bytes: u64,
    idle_timeout_ms: u64,
    store: StoreCaps,
}

#[derive(Debug, Serialize)]
struct Results {
    setup_secs: f64,
    cycles: u64,
    spikes: u64,
    visits: u64,
    visits_per_sec: f64,
    retries: u64,
    visit_latency_ms: Summary,
    spike_secs: Summary,
    rss_warm_bytes: u64,
    rss_end_bytes: u64,
    rss_max_bytes: u64,
    hwm_bytes: u64,
    growth_end_pct: f64,
    growth_max_pct: f64,
    /// Median RSS of the last `window_s` against the median of the first `window_s` after warm-up:
    /// less sensitive to where single samples fall in RSS's oscillation.
    window_s: f64,
    rss_first_window_median_bytes: u64,
    rss_last_window_median_bytes: u64,
    growth_median_pct: f64,
    /// The same for jemalloc's live allocations (freed pages it still holds excluded).
    allocated_first_window_median_bytes: u64,
    allocated_last_window_median_bytes: u64,
    allocated_growth_median_pct: f64,
    growth_target_pct: f64,
    growth_met: bool,
    host: HostFigures,
}

#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    machine: Machine,
    params: RunParams,
    results: Results,
    /// `[seconds, RSS MiB, actors awake, jemalloc allocated MiB]`, at most 120 points.
    series: Vec<SeriesPoint>,
}

pub fn run(args: &SoakArgs) -> BenchResult<()> {
    let scratch = scratch_dir(args.data.as_deref(), "soak")?;
    let population = to_usize(args.population)?;
    let actors = to_usize(args.actors)?.min(population);
    let params = RunParams {
        duration_s: args.duration_s,
        warmup_s: (args.warmup_s as f64).min(args.duration_s as f64 / 2.0),
        actors_per_cycle: actors,
        population,
        concurrency: to_usize(args.concurrency)?,
        cycle_ms: args.cycle_ms,
        spike_every_s: args.spike_every_s,
        spike_actors: actors.saturating_mul(to_usize(args.spike_factor)?).min(population),
        budget_bytes: args.budget_mib << 20,
        idle_timeout_ms: args.idle_timeout_ms,
        store: STORE,
    };
    let (results, series) = runtime()?.block_on(soak(&params, scratch.path()))?;
    let report =
        Report { benchmark: "actors-soak", machine: Machine::new(scratch.path()), params, results, series };
    print!("{}", table(&report));
    write_results(&args.json, &report)
}

async fn soak(p: &RunParams, dir: &std::path::Path) -> BenchResult<(Results, Vec<SeriesPoint>)> {
    let config = HostConfig {
        memory_budget_bytes: p.budget_bytes,
        idle_timeout_ms: p.idle_timeout_ms,
        ..HostConfig::default()
    };
    let host = open_host(dir, p.store, config)?;
    eprintln!("creating {} actors", p.population);
    let setup = Instant::now();
    create_actors(&host, p.population, SETUP_CONCURRENCY).await?;
    let setup_secs = setup.elapsed().as_secs_f64();
    eprintln!("soaking for {} s", p.duration_s);

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = spawn_sampler(host.clone(), start, stop.clone());
    let activity = Arc::new(Activity::default());
    let mut rng = StdRng::seed_from_u64(42);
    let end = start + Duration::from_secs(p.duration_s);
    let spike_every = Duration::from_secs(p.spike_every_s);
    let mut next_spike = start + spike_every / 2;
    let (mut cycles, mut spike_secs, mut next_report) = (0u64, Vec::new(), start + Duration::from_secs(60));
    while Instant::now() < end {
        let cycle = Instant::now();
        let spike = cycle >= next_spike;
        let (n, concurrency) =
            if spike { (p.spike_actors, p.spike_actors) } else { (p.actors_per_cycle, p.concurrency) };
        if spike {
            next_spike += spike_every;
        }
        let picks = rand::seq::index::sample(&mut rng, p.population, n).into_vec();
        bounded(picks, concurrency, |i| visit(host.clone(), i, activity.clone())).await?;
        cycles += 1;
        if spike {
            spike_secs.push(cycle.elapsed().as_secs_f64());
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(60);
            let m = ProcMemory::read()?;
            eprintln!(
                "  {:.0} s: {} visits, RSS {:.1} MiB, {} awake",
                start.elapsed().as_secs_f64(),
                activity.visits.load(Ordering::Relaxed),
                m.rss_bytes as f64 / MIB,
                host.stats().actors_awake
            );
        }
        let next_cycle = (cycle + Duration::from_millis(p.cycle_ms)).min(end);
        tokio::time::sleep_until(next_cycle.into()).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().map_err(|_| "the sampler thread panicked")??;
    let stats = host.stats();
    host.shutdown().await;

    let warm = samples.iter().find(|s| s.t_s >= p.warmup_s).or(samples.last()).ok_or("no memory sample")?;
    let last = samples.last().ok_or("no memory sample")?;
    let max =
        samples.iter().filter(|s| s.t_s >= p.warmup_s).map(|s| s.rss_bytes).max().unwrap_or(last.rss_bytes);
    let growth = |bytes: u64| 100.0 * (bytes as f64 - warm.rss_bytes as f64) / warm.rss_bytes as f64;
    let window_s = ((last.t_s - p.warmup_s) / 2.0).clamp(1.0, WINDOW_S);
    let median = |field: fn(&Sample) -> u64, from: f64, to: f64| -> u64 {
        let mut values: Vec<u64> =
            samples.iter().filter(|s| s.t_s >= from && s.t_s < to).map(field).collect();
        values.sort_unstable();
        values.get(values.len() / 2).copied().unwrap_or(field(last))
    };
    let (first, last_from) = ((p.warmup_s, p.warmup_s + window_s), last.t_s - window_s);
    let rss = |s: &Sample| s.rss_bytes;
    let allocated = |s: &Sample| s.allocated_bytes;
    let first_median = median(rss, first.0, first.1);
    let last_median = median(rss, last_from, f64::MAX);
    let allocated_first = median(allocated, first.0, first.1);
    let allocated_last = median(allocated, last_from, f64::MAX);
    let pct = |from: u64, to: u64| 100.0 * (to as f64 - from as f64) / from.max(1) as f64;
    let visits = activity.visits.load(Ordering::Relaxed);
    let latencies = std::mem::take(&mut *activity.latencies_ms.lock().expect("not poisoned"));
    let results = Results {
        setup_secs,
        cycles,
        spikes: spike_secs.len() as u64,
        visits,
        visits_per_sec: visits as f64 / elapsed,
        retries: activity.retries.load(Ordering::Relaxed),
        visit_latency_ms: Summary::of(latencies.into_iter().map(f64::from).collect()),
        spike_secs: Summary::of(spike_secs),
        rss_warm_bytes: warm.rss_bytes,
        rss_end_bytes: last.rss_bytes,
        rss_max_bytes: max,
        hwm_bytes: last.hwm_bytes,
        growth_end_pct: growth(last.rss_bytes),
        growth_max_pct: growth(max),
        window_s,
        rss_first_window_median_bytes: first_median,
        rss_last_window_median_bytes: last_median,
        growth_median_pct: pct(first_median, last_median),
        allocated_first_window_median_bytes: allocated_first,
        allocated_last_window_median_bytes: allocated_last,
        allocated_growth_median_pct: pct(allocated_first, allocated_last),
        growth_target_pct: GROWTH_TARGET_PCT,
        growth_met: growth(last.rss_bytes) <= GROWTH_TARGET_PCT,
        host: stats.into(),
    };
    let step = samples.len().div_ceil(SERIES_POINTS).max(1);
    let round = |bytes: u64| (bytes as f64 / MIB * 10.0).round() / 10.0;
    let point =
        |s: &Sample| ((s.t_s * 10.0).round() / 10.0, round(s.rss_bytes), s.awake, round(s.allocated_bytes));
    let mut series: Vec<SeriesPoint> = samples.iter().step_by(step).map(point).collect();
    if (samples.len() - 1) % step != 0 {
        series.push(point(last));
    }
    Ok((results, series))
}

fn table(report: &Report) -> String {
    let (p, r) = (&report.params, &report.results);
    let mut out = format!(
        "roost bench actors soak: {} s of cycles over {} actors (created in {:.1} s)\n\
         {} cpus, SQLite {}, data in {}\n\
         cycle: {} actors, {} at once, every {} ms at most; spike: {} actors at once every {} s; visit: {} inserts \
         in one transaction + scan of the latest {}\n\
         host budget {} MiB, idle timeout {} ms, store cache {} MiB, write buffer {} MiB\n\n",
        p.duration_s,
        p.population,
        r.setup_secs,
        report.machine.cpus,
        report.machine.sqlite_version,
        report.machine.data_dir,
        p.actors_per_cycle,
        p.concurrency,
        p.cycle_ms,
        p.spike_actors,
        p.spike_every_s,
        INSERTS,
        SCAN_ROWS,
        p.budget_bytes >> 20,
        p.idle_timeout_ms,
        p.store.cache_mib,
        p.store.write_buffer_mib,
    );
    let mut t = Table::new(
        &[
            "cycles",
            "spikes",
            "visits",
            "visits/s",
            "visit p50 ms",
            "visit p99 ms",
            "spike p50 s",
            "retries",
            "wakes",
            "idle sleeps",
            "evictions",
            "overloaded",
        ],
        0,
    );
    let h = &r.host;
    t.row(vec![
        r.cycles.to_string(),
        r.spikes.to_string(),
        r.visits.to_string(),
        fixed(r.visits_per_sec, 0),
        fixed(r.visit_latency_ms.p50, 1),
        fixed(r.visit_latency_ms.p99, 1),
        fixed(r.spike_secs.p50, 2),
        r.retries.to_string(),
        h.wakes_total.to_string(),
        h.idle_sleeps_total.to_string(),
        h.evictions_total.to_string(),
        h.overloaded_total.to_string(),
    ]);
    out.push_str(&t.render());
    out.push('\n');
    let mut t = Table::new(
        &[
            "RSS after warm-up MiB",
            "RSS end MiB",
            "RSS max MiB",
            "HWM MiB",
            "growth end %",
            "growth max %",
            "window medians MiB",
            "growth medians %",
            "allocated medians MiB",
            "allocated growth %",
        ],
        0,
    );
    t.row(vec![
        fixed(r.rss_warm_bytes as f64 / MIB, 1),
        fixed(r.rss_end_bytes as f64 / MIB, 1),
        fixed(r.rss_max_bytes as f64 / MIB, 1),
        fixed(r.hwm_bytes as f64 / MIB, 1),
        fixed(r.growth_end_pct, 1),
        fixed(r.growth_max_pct, 1),
        format!(
            "{:.1} -> {:.1}",
            r.rss_first_window_median_bytes as f64 / MIB,
            r.rss_last_window_median_bytes as f64 / MIB
        ),
        fixed(r.growth_median_pct, 1),
        format!(
            "{:.1} -> {:.1}",
            r.allocated_first_window_median_bytes as f64 / MIB,
            r.allocated_last_window_median_bytes as f64 / MIB
        ),
        fixed(r.allocated_growth_median_pct, 1),
    ]);
    out.push_str(&t.render());
    out.push_str(&format!(
        "\nwarm-up: {:.0} s; RSS max: after warm-up. window medians: median RSS (allocated: jemalloc's \
         live bytes) of the first {:.0} s after warm-up and of the last {:.0} s.\ntarget: RSS at the end within {GROWTH_TARGET_PCT}% of RSS after \
         warm-up: {}\n\nRSS over time:\n",
        p.warmup_s,
        r.window_s,
        r.window_s,
        verdict(r.growth_met)
    ));
    let mut t = Table::new(&["t s", "RSS MiB", "allocated MiB", "awake"], 0);
    let every = (report.series.len() / 12).max(1);
    for (i, (ts, rss, awake, allocated)) in report.series.iter().enumerate() {
        if i % every == 0 || i + 1 == report.series.len() {
            t.row(vec![fixed(*ts, 0), fixed(*rss, 1), fixed(*allocated, 1), awake.to_string()]);
        }
    }
    out.push_str(&t.render());
    out
}
