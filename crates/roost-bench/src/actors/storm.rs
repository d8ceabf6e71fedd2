//! `roost bench actors storm`: every actor of a population requested at once.
//!
//! Child A creates the actors (the whole reference workload) and shuts its host down, so every
//! actor is asleep. Then each pass runs in a fresh child (its VmHWM is the storm's alone): a host
//! with a small budget and small store caches, one tokio task per actor, all released at once,
//! each running the step-4 queries as one `with_db` call. Pass "no-retry": each client tries
//! once. Pass "retry": clients retry `Overloaded` with exponential backoff and full jitter,
//! never sooner than the error's retry-after hint.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use roost::{ActorId, Host, HostConfig, HostError};
use serde::{Deserialize, Serialize};

use super::child::{self, Task};
use super::report::HostFigures;
use super::workload::{self, actor_id};
use super::StormArgs;
use super::{create_actors, open_host, runtime, scratch_dir, to_usize, BenchResult, StoreCaps};
use crate::common::{
    fixed, verdict, write_results, AllocatorFigures, Machine, ProcMemory, Summary, Table, MIB,
};

/// Actors created at once during setup.
const SETUP_CONCURRENCY: usize = 64;
/// Peak RSS may exceed the budget by this share.
const BUDGET_SLACK: f64 = 0.10;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetupTask {
    pub dir: PathBuf,
    pub actors: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetupResult {
    pub actors: usize,
    pub secs: f64,
    pub memory: ProcMemory,
}

/// Child A: creates the actors, then puts them all to sleep.
pub fn setup(task: &SetupTask) -> BenchResult<SetupResult> {
    runtime()?.block_on(async {
        let host = open_host(&task.dir, StoreCaps::defaults(), HostConfig::default())?;
        let start = Instant::now();
        create_actors(&host, task.actors, SETUP_CONCURRENCY).await?;
        host.shutdown().await;
        let secs = start.elapsed().as_secs_f64();
        Ok(SetupResult { actors: task.actors, secs, memory: ProcMemory::read()? })
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PassTask {
    pub dir: PathBuf,
    pub actors: usize,
    pub budget_bytes: u64,
    pub store: StoreCaps,
    pub retry: bool,
    pub wake_queue_max: usize,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    /// How long RSS is watched after the storm, ms.
    #[serde(default = "default_after_ms")]
    pub after_ms: u64,
}

fn default_after_ms() -> u64 {
    AFTER_MS
}

/// RSS is watched this long after a storm, every [`AFTER_SAMPLE_MS`]; its last sample is the
/// settled figure the recovery is measured against.
const AFTER_MS: u64 = 15_000;
const AFTER_SAMPLE_MS: u64 = 100;
/// After a burst RSS should be back within this share of the settled figure within
/// [`RECOVERY_S_MAX`] (issue 10).
const RECOVERY_SLACK: f64 = 0.10;
const RECOVERY_S_MAX: f64 = 5.0;

/// What one storm pass measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PassResult {
    pub pass: String,
    pub actors: usize,
    pub succeeded: usize,
    pub overloaded: usize,
    pub other_errors: usize,
    pub first_other_error: Option<String>,
    pub completion_pct: f64,
    /// Requests per client (1 without retries).
    pub attempts: Summary,
    /// From the common start to the last client's end.
    pub total_secs: f64,
    /// Per client, from the common start to its end (its last attempt included), ms.
    pub latency_ms: Summary,
    /// Of the clients that succeeded, ms.
    pub success_latency_ms: Summary,
    /// Before the storm (host built) and after it.
    pub memory_before: ProcMemory,
    pub memory: ProcMemory,
    /// jemalloc's figures after the storm.
    pub allocator: AllocatorFigures,
    /// Most actors awake at once, sampled every 5 ms.
    pub awake_peak: usize,
    pub host: HostFigures,
    /// RSS after the last client ended: `(ms since then, bytes)` every 100 ms.
    #[serde(default)]
    pub rss_after: Vec<(u64, u64)>,
    /// Seconds until RSS stayed within 10% of its last sample (the settled figure).
    #[serde(default)]
    pub rss_recovery_s: f64,
}

/// Seconds from the first sample until every later one is within `slack` of the last.
fn recovery_s(series: &[(u64, u64)], slack: f64) -> f64 {
    let Some(&(_, settled)) = series.last() else { return 0.0 };
    let limit = settled as f64 * (1.0 + slack);
    let first = series.first().map_or(0, |s| s.0);
    let last_over = series.iter().rev().find(|(_, rss)| *rss as f64 > limit);
    // The first sample at or under the limit after the last one over it.
    let back = last_over.map_or(first, |(t, _)| t + AFTER_SAMPLE_MS);
    back.saturating_sub(first) as f64 / 1000.0
}

/// Samples RSS every [`AFTER_SAMPLE_MS`] for `after_ms`.
async fn watch_rss(after_ms: u64) -> BenchResult<Vec<(u64, u64)>> {
    let start = Instant::now();
    let mut series = Vec::new();
    loop {
        let t = start.elapsed().as_millis() as u64;
        series.push((t, ProcMemory::read()?.rss_bytes));
        if t >= after_ms {
            return Ok(series);
        }
        tokio::time::sleep(Duration::from_millis(AFTER_SAMPLE_MS)).await;
    }
}

enum Outcome {
    Done,
    Overloaded,
    Failed(String),
}

struct Client {
    outcome: Outcome,
    attempts: u32,
    elapsed: Duration,
}

/// Full jitter: uniform in `0..=min(cap, base * 2^(attempt-1))`, at least `floor_ms`.
pub fn backoff(attempt: u32, base_ms: u64, cap_ms: u64, floor_ms: u64) -> Duration {
    let ceiling = cap_ms.min(base_ms.saturating_mul(1u64 << (attempt.saturating_sub(1)).min(32)));
    let jitter = rand::rng().random_range(0..=ceiling);
    Duration::from_millis(jitter.max(floor_ms))
}

async fn client(host: Host, id: ActorId, task: Arc<PassTask>, start: Instant) -> Client {
    let mut attempts = 0;
    let outcome = loop {
        attempts += 1;
        match host.with_db(&id, workload::roost_queries).await {
            Ok(answers) => match answers.check() {
                Ok(()) => break Outcome::Done,
                Err(e) => break Outcome::Failed(format!("{id}: {e}")),
            },
            Err(HostError::Overloaded { retry_after_ms, .. }) if task.retry => {
                let delay = backoff(attempts, task.backoff_base_ms, task.backoff_cap_ms, retry_after_ms);
                tokio::time::sleep(delay).await;
            }
            Err(HostError::Overloaded { .. }) => break Outcome::Overloaded,
            Err(e) => break Outcome::Failed(format!("{id}: {e}")),
        }
    };
    Client { outcome, attempts, elapsed: start.elapsed() }
}

/// Child B: one storm pass over asleep actors.
pub fn pass(task: &PassTask) -> BenchResult<PassResult> {
    runtime()?.block_on(run_pass(Arc::new(task.clone())))
}

async fn run_pass(task: Arc<PassTask>) -> BenchResult<PassResult> {
    let config = HostConfig {
        memory_budget_bytes: task.budget_bytes,
        wake_queue_max: task.wake_queue_max,
        ..HostConfig::default()
    };
    let host = open_host(&task.dir, task.store, config)?;
    let memory_before = ProcMemory::read()?;
    let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let sampler = {
        let (host, stop, peak) = (host.clone(), stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(host.stats().actors_awake, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let (gate, _) = tokio::sync::watch::channel(false);
    let mut clients = tokio::task::JoinSet::new();
    let start = Instant::now() + Duration::from_millis(50);
    for i in 0..task.actors {
        let (host, id, task, mut open) = (host.clone(), actor_id(i)?, task.clone(), gate.subscribe());
        clients.spawn(async move {
            let _ = open.wait_for(|open| *open).await;
            client(host, id, task, start).await
        });
    }
    tokio::time::sleep_until(start.into()).await;
    gate.send_replace(true);
    let mut done = Vec::with_capacity(task.actors);
    while let Some(c) = clients.join_next().await {
        done.push(c?);
    }
    let total_secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    sampler.await?;
    let memory = ProcMemory::read()?;
    let allocator = AllocatorFigures::read();
    let stats = host.stats();
    // The actors stay awake (the idle timeout is longer): what goes away is the storm's own
    // memory (wakes in flight, answers, allocator retention).
    let rss_after = watch_rss(task.after_ms).await?;
    host.shutdown().await;

    let count = |f: fn(&Outcome) -> bool| done.iter().filter(|c| f(&c.outcome)).count();
    let succeeded = count(|o| matches!(o, Outcome::Done));
    let ms = |c: &Client| c.elapsed.as_secs_f64() * 1e3;
    Ok(PassResult {
        pass: if task.retry { "retry" } else { "no-retry" }.into(),
        actors: task.actors,
        succeeded,
        overloaded: count(|o| matches!(o, Outcome::Overloaded)),
        other_errors: count(|o| matches!(o, Outcome::Failed(_))),
        first_other_error: done.iter().find_map(|c| match &c.outcome {
            Outcome::Failed(e) => Some(e.clone()),
            _ => None,
        }),
        completion_pct: 100.0 * succeeded as f64 / task.actors.max(1) as f64,
        attempts: Summary::of(done.iter().map(|c| f64::from(c.attempts)).collect()),
        total_secs,
        latency_ms: Summary::of(done.iter().map(ms).collect()),
        success_latency_ms: Summary::of(
            done.iter().filter(|c| matches!(c.outcome, Outcome::Done)).map(ms).collect(),
        ),
        memory_before,
        memory,
        allocator,
        awake_peak: peak.load(Ordering::Relaxed).max(stats.actors_awake),
        host: stats.into(),
        rss_recovery_s: recovery_s(&rss_after, RECOVERY_SLACK),
        rss_after,
    })
}

#[derive(Debug, Serialize)]
struct RunParams {
    actors: usize,
    budget_bytes: u64,
    store: StoreCaps,
    wake_queue_max: usize,
    wakes_in_flight_max: usize,
    backoff_base_ms: u64,
    backoff_cap_ms: u64,
}

#[derive(Debug, Serialize)]
struct Check {
    name: String,
    met: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    machine: Machine,
    params: RunParams,
    setup: SetupResult,
    passes: Vec<PassResult>,
    checks: Vec<Check>,
}

pub fn run(args: &StormArgs) -> BenchResult<()> {
    let scratch = scratch_dir(args.data.as_deref(), "storm")?;
    let dir = scratch.path().join("store");
    let actors = to_usize(args.actors)?;
    eprintln!("creating {actors} actors (child process)");
    let setup: SetupResult = child::run(&Task::StormSetup(SetupTask { dir: dir.clone(), actors }))?;
    let store = StoreCaps { cache_mib: args.cache_mib, write_buffer_mib: args.write_buffer_mib };
    let wake_queue_max = match args.wake_queue_max {
        Some(n) => to_usize(n)?,
        None => HostConfig::default().wake_queue_max,
    };
    let mut passes = Vec::new();
    for retry in [false, true] {
        eprintln!(
            "storm over {actors} asleep actors, {} (child process)",
            if retry { "retrying" } else { "no retry" }
        );
        let task = PassTask {
            dir: dir.clone(),
            actors,
            budget_bytes: args.budget_mib << 20,
            store,
            retry,
            wake_queue_max,
            backoff_base_ms: args.backoff_base_ms,
            backoff_cap_ms: args.backoff_cap_ms,
            after_ms: args.after_ms,
        };
        passes.push(child::run::<PassResult>(&Task::StormPass(task))?);
    }
    let budget_bytes = args.budget_mib << 20;
    let peak_max = budget_bytes as f64 * (1.0 + BUDGET_SLACK);
    let mut checks = Vec::new();
    for p in &passes {
        checks.push(Check {
            name: format!("{}: no error other than overloaded", p.pass),
            met: p.other_errors == 0,
        });
        checks.push(Check {
            name: format!("{}: peak RSS (VmHWM) <= budget + 10%", p.pass),
            met: p.memory.hwm_bytes as f64 <= peak_max,
        });
        checks.push(Check {
            name: format!("{}: RSS back within 10% of settled in <= 5 s", p.pass),
            met: p.rss_recovery_s <= RECOVERY_S_MAX,
        });
        if p.pass == "retry" {
            checks.push(Check { name: "retry: every client completes".into(), met: p.succeeded == p.actors });
        }
    }
    let report = Report {
        benchmark: "actors-storm",
        machine: Machine::new(scratch.path()),
        params: RunParams {
            actors,
            budget_bytes,
            store,
            wake_queue_max,
            wakes_in_flight_max: HostConfig::default().wakes_in_flight_max,
            backoff_base_ms: args.backoff_base_ms,
            backoff_cap_ms: args.backoff_cap_ms,
        },
        setup,
        passes,
        checks,
    };
    print!("{}", table(&report));
    write_results(&args.json, &report)?;
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| !c.met && !c.name.contains("VmHWM") && !c.name.contains("RSS back"))
        .map(|c| c.name.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("correctness checks failed: {}", failed.join("; ")).into())
    }
}

fn table(report: &Report) -> String {
    let p = &report.params;
    let budget_mib = p.budget_bytes as f64 / MIB;
    let mut out = format!(
        "roost bench actors storm: {} asleep actors requested at once (step-4 queries, one with_db each)\n\
         {} cpus, SQLite {}, data in {}\n\
         host budget {budget_mib:.0} MiB, wakes in flight {} / queued {}, store cache {} MiB, write buffer {} MiB; \
         setup: {} actors in {:.1} s\n\
         retrying clients: backoff {} ms doubling to {} ms, full jitter, retry-after hint as the floor\n\n",
        p.actors,
        report.machine.cpus,
        report.machine.sqlite_version,
        report.machine.data_dir,
        p.wakes_in_flight_max,
        p.wake_queue_max,
        p.store.cache_mib,
        p.store.write_buffer_mib,
        report.setup.actors,
        report.setup.secs,
        p.backoff_base_ms,
        p.backoff_cap_ms,
    );
    let mut t = Table::new(
        &[
            "pass",
            "ok",
            "overloaded",
            "other err",
            "done %",
            "attempts p50/p99/max",
            "total s",
            "lat p50 ms",
            "lat p99 ms",
            "lat max ms",
            "HWM MiB",
            "evictions",
            "overloaded_total",
            "awake peak/max",
            "settled MiB",
            "back in 10% s",
        ],
        1,
    );
    for r in &report.passes {
        t.row(vec![
            r.pass.clone(),
            r.succeeded.to_string(),
            r.overloaded.to_string(),
            r.other_errors.to_string(),
            fixed(r.completion_pct, 1),
            format!("{:.0}/{:.0}/{:.0}", r.attempts.p50, r.attempts.p99, r.attempts.max),
            fixed(r.total_secs, 2),
            fixed(r.latency_ms.p50, 1),
            fixed(r.latency_ms.p99, 1),
            fixed(r.latency_ms.max, 1),
            fixed(r.memory.hwm_bytes as f64 / MIB, 1),
            r.host.evictions_total.to_string(),
            r.host.overloaded_total.to_string(),
            format!("{}/{}", r.awake_peak, r.host.awake_max),
            r.rss_after.last().map_or("-".into(), |(_, rss)| fixed(*rss as f64 / MIB, 1)),
            fixed(r.rss_recovery_s, 1),
        ]);
    }
    out.push_str(&t.render());
    out.push_str(&format!(
        "\nlatency: per client, from the common start to its end (retries included). HWM: the pass's peak RSS \
         (its own process). settled: RSS 15 s after the storm;\nback in 10%: seconds after the storm until RSS \
         stays within 10% of settled. peak RSS limit: budget + 10% = {:.1} MiB. RSS before the storm: {}.\n\nchecks:\n",
        budget_mib * (1.0 + BUDGET_SLACK),
        report
            .passes
            .iter()
            .map(|r| format!("{} {:.1} MiB", r.pass, r.memory_before.rss_bytes as f64 / MIB))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    for c in &report.checks {
        out.push_str(&format!("  {}: {}\n", c.name, verdict(c.met)));
    }
    for r in &report.passes {
        if let Some(e) = &r.first_other_error {
            out.push_str(&format!("  {}: first other error: {e}\n", r.pass));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_is_when_rss_stays_within_the_slack_of_the_last_sample() {
        let series = [(0, 300), (100, 200), (200, 115), (300, 100), (400, 100)];
        assert_eq!(recovery_s(&series, 0.10), 0.3);
        assert_eq!(recovery_s(&[(0, 100), (100, 105)], 0.10), 0.0);
        assert_eq!(recovery_s(&[], 0.10), 0.0);
    }

    #[test]
    fn backoff_is_capped_and_floored() {
        for attempt in 1..40 {
            let d = backoff(attempt, 10, 2_000, 0).as_millis() as u64;
            assert!(d <= 2_000.min(10 << (attempt - 1).min(20)), "{attempt}: {d}");
            assert!(backoff(attempt, 10, 2_000, 250).as_millis() >= 250);
        }
    }
}
