//! `roost bench actors fleet`: what a user of a large fleet sees, through the real server.
//!
//! Setup creates `--actors` actors with steps 1-4 of the reference workload (in this process,
//! 64 at once, host shut down cleanly, store compacted), in a scratch folder or in a kept
//! `--reuse-data` folder that later runs reuse. Then this binary's `roost serve` runs in a child
//! process on that data under `--memory-budget` (3 GiB), and an open loop of requests reaches it
//! over HTTP: each actor reads (the latest 10 messages) once per `--read-interval-s` and writes
//! (one message row) once per `--write-interval-s` on average, as Poisson arrivals of the
//! aggregate rates with a uniformly random actor each. The whole schedule is drawn from `--seed` before the load
//! starts; `--clients` threads, each with a kept-alive connection, take the next due request.
//!
//! Latency is measured from each request's *scheduled* time to its answer, so time spent waiting
//! for a free client (a backlog) counts: no coordinated omission. Every answer is checked;
//! anything but a plausible 200 is an error, `503 overloaded` included. Requests scheduled in the
//! first `--warmup-s` seconds are left out of the latency figures and rates, not out of the RSS
//! peak or the error target. A thread samples the server's VmRSS and its `/metrics` counters
//! (wakes, evictions, idle sleeps, commits, awake actors, the store's compactions and level-0
//! tables) every second.
//!
//! Targets: server peak RSS within the budget, request p99 <= 10 ms wakes included, 0 errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roost::HostConfig;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::workload::{self, actor_name};
use super::{create_actors, open_host, runtime, scratch_dir, to_usize, BenchResult, FleetArgs, StoreCaps};
use crate::chart::{self, Frame};
use crate::common::{
    fixed, free_port, mib, quantile, start_server, verdict, write_json, write_results, Machine, Table,
};

const SETUP_CONCURRENCY: usize = 64;
/// The setup host's budget (see [`populate`]).
const SETUP_BUDGET_BYTES: u64 = 16 << 30;
/// Marks a `--reuse-data` folder whose setup finished; holds its actor count.
const SETUP_MARKER: &str = "fleet-setup.json";
const P99_TARGET_MS: f64 = 10.0;
/// Requests still unsent this long after the last scheduled arrival are given up (`not_sent`),
/// so that a server that cannot keep up ends the run instead of draining forever.
const DRAIN_S: f64 = 30.0;
/// A client gives up on one answer after this long (an error `timeout`).
const REQUEST_TIMEOUT_S: u64 = 30;
/// How long a clean shutdown (SIGTERM) of the server may take before it is killed.
const SHUTDOWN_WAIT_S: u64 = 120;
/// Rows of the read query's answer (`LATEST_MESSAGES`).
const READ_ROWS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

/// One scheduled request: when (seconds after the load starts), to whom, what.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    at_s: f64,
    actor: u32,
    kind: Kind,
}

/// The reads and the writes, each a Poisson process over all actors, merged into one Poisson
/// process of the summed rate whose arrivals are writes with probability write rate / total.
fn schedule(
    actors: usize,
    read_interval_s: f64,
    write_interval_s: f64,
    horizon_s: f64,
    seed: u64,
) -> Vec<Arrival> {
    let read_rate = actors as f64 / read_interval_s;
    let write_rate = actors as f64 / write_interval_s;
    let total = read_rate + write_rate;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut arrivals = Vec::with_capacity((total * horizon_s * 1.01) as usize + 16);
    let mut t = 0.0;
    loop {
        // Exponential gaps; 1 - U lies in (0, 1], so the logarithm is finite.
        t += -(1.0 - rng.random::<f64>()).ln() / total;
        if t >= horizon_s {
            return arrivals;
        }
        let kind = if rng.random::<f64>() * total < write_rate { Kind::Write } else { Kind::Read };
        let actor = rng.random_range(0..actors) as u32;
        arrivals.push(Arrival { at_s: t, actor, kind });
    }
}

/// The data the server runs on: a scratch folder (removed when dropped) or a kept folder.
enum DataDir {
    Scratch(tempfile::TempDir),
    Kept(PathBuf),
}

impl DataDir {
    fn root(&self) -> &Path {
        match self {
            Self::Scratch(dir) => dir.path(),
            Self::Kept(dir) => dir,
        }
    }

    /// The store (the server's `--data`), beside the setup marker.
    fn store(&self) -> PathBuf {
        self.root().join("store")
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SetupMarker {
    actors: usize,
    setup_s: f64,
}

/// The data folder, populated; and the setup's duration when it ran (not when reused).
fn prepare(args: &FleetArgs, actors: usize) -> BenchResult<(DataDir, Option<f64>)> {
    let Some(dir) = &args.reuse_data else {
        let data = DataDir::Scratch(scratch_dir(args.data.as_deref(), "fleet")?);
        let setup_s = populate(&data.store(), actors)?;
        return Ok((data, Some(setup_s)));
    };
    let data = DataDir::Kept(dir.clone());
    let marker = dir.join(SETUP_MARKER);
    if marker.exists() {
        let text = std::fs::read_to_string(&marker)?;
        let found: SetupMarker =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", marker.display()))?;
        if found.actors != actors {
            return Err(format!(
                "{} holds {} actors, not {actors}: pass --actors {} or another --reuse-data folder",
                dir.display(),
                found.actors,
                found.actors
            )
            .into());
        }
        eprintln!("reusing the {actors} actors in {} (setup took {:.1} s)", dir.display(), found.setup_s);
        return Ok((data, None));
    }
    // A folder without the marker may hold a setup that did not finish: refuse rather than
    // measure a fleet with missing actors.
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(format!(
            "{} is neither empty nor a finished fleet setup (no {SETUP_MARKER}); remove it or pick another --reuse-data folder",
            dir.display()
        )
        .into());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let setup_s = populate(&data.store(), actors)?;
    write_json(&marker, &SetupMarker { actors, setup_s })?;
    Ok((data, Some(setup_s)))
}

/// Creates actors `0..actors` with steps 1-4 of the workload and shuts the host down (actors
/// asleep, store synced), as the server will find them.
fn populate(store: &Path, actors: usize) -> BenchResult<f64> {
    eprintln!("creating {actors} actors, {SETUP_CONCURRENCY} at once, in {}", store.display());
    let start = Instant::now();
    // A budget that no setup reaches, so that nothing is evicted: under the default budget
    // (512 MiB) 64 creations at once were refused `overloaded` ("no idle actor to put to
    // sleep") after about 5,000 actors. Every actor stays awake until the shutdown, about
    // 34 KiB each (`memory` above: 3.3 GB at 100,000).
    let config = HostConfig { memory_budget_bytes: SETUP_BUDGET_BYTES, ..HostConfig::default() };
    runtime()?.block_on(async {
        let host = open_host(store, StoreCaps::defaults(), config)?;
        let created = create_actors(&host, actors, SETUP_CONCURRENCY).await;
        host.shutdown().await;
        created?;
        settle(&host)
    })?;
    let setup_s = start.elapsed().as_secs_f64();
    eprintln!("created {actors} actors in {setup_s:.1} s");
    Ok(setup_s)
}

/// Compacts the store the setup filled, so that the load meets a store in the state a server
/// reaches after serving for a while rather than the backlog of a bulk load: on a fresh setup
/// the load otherwise ran while the store merged the setup's tables (p99 27 ms where the same
/// data settled by earlier runs gave 5-6 ms; docs/benchmarks.md, Fleet).
fn settle(host: &roost::host::Host) -> BenchResult<()> {
    let start = Instant::now();
    let compacted = host.storage().store().compact().map_err(|e| format!("cannot compact the store: {e}"))?;
    if compacted {
        eprintln!("compacted the store in {:.1} s", start.elapsed().as_secs_f64());
    }
    Ok(())
}

/// What one request came to.
#[derive(Debug, Clone, Copy)]
struct Record {
    index: u32,
    /// From the scheduled time to the end of the answer; for answers that passed the check.
    latency_ms: Option<f32>,
}

/// One client thread's records and its errors by kind (with the arrival index).
#[derive(Default)]
struct ClientLog {
    records: Vec<Record>,
    errors: Vec<(u32, String)>,
}

/// `None` when the answer is a plausible one for its request, else the error kind.
fn check(kind: Kind, status: u16, body: &[u8]) -> Option<String> {
    let answer: Option<Value> = serde_json::from_slice(body).ok();
    if status != 200 {
        let error = answer.as_ref().map(|a| &a["error"]);
        let code = error.and_then(|e| e["code"].as_str()).unwrap_or("no error code");
        // A 503's message names which limit refused it (the wake queue, the memory budget...),
        // from a short fixed list; other messages may quote SQL or ids, so only their code counts.
        return Some(match error.and_then(|e| e["message"].as_str()).filter(|_| status == 503) {
            Some(message) => format!("{status} {code}: {message}"),
            None => format!("{status} {code}"),
        });
    }
    let Some(answer) = answer else { return Some("200 with a body that is not JSON".into()) };
    let plausible = match kind {
        // The latest 10 messages: setup wrote ids 1..=100 and writes only add.
        Kind::Read => {
            let rows = answer["rows"].as_array();
            rows.is_some_and(|r| r.len() == READ_ROWS)
                && answer["rows"][0][0].as_i64().is_some_and(|id| id >= 100)
        }
        Kind::Write => answer["rows_affected"].as_i64() == Some(1),
    };
    (!plausible).then(|| {
        format!("200 with an implausible {} answer", if kind == Kind::Read { "read" } else { "write" })
    })
}

fn error_kind(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Timeout(_) => format!("client timeout ({REQUEST_TIMEOUT_S} s)"),
        other => format!("transport: {}", other.to_string().chars().take(80).collect::<String>()),
    }
}

/// The body of request `index`: the read query, or one message row like step 3's (message
/// number 100 + index, so every written row differs).
fn body(arrival: &Arrival, index: usize) -> String {
    match arrival.kind {
        Kind::Read => json!({"sql": workload::LATEST_MESSAGES}).to_string(),
        Kind::Write => {
            let (session, body, created) = workload::message(workload::MESSAGES + index);
            json!({"sql": workload::INSERT_MESSAGE, "params": [session, body, created]}).to_string()
        }
    }
}

/// The open loop: `clients` threads take the next arrival in schedule order, wait for its time
/// if it is not due yet, send it and time it from its scheduled time.
fn drive(
    base: &str,
    arrivals: &Arc<Vec<Arrival>>,
    clients: usize,
    start: Instant,
    give_up: Instant,
) -> BenchResult<Vec<ClientLog>> {
    let next = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (next, arrivals, base) = (next.clone(), arrivals.clone(), base.to_string());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(REQUEST_TIMEOUT_S)))
                    .build()
                    .into();
                let mut log = ClientLog::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(arrival) = arrivals.get(i) else { return log };
                    let due = start + Duration::from_secs_f64(arrival.at_s);
                    let now = Instant::now();
                    if now < due {
                        std::thread::sleep(due - now);
                    } else if now > give_up {
                        log.errors.push((i as u32, "not_sent".into()));
                        log.records.push(Record { index: i as u32, latency_ms: None });
                        continue;
                    }
                    let url = format!("{base}/v1/actors/{}/query", actor_name(arrival.actor as usize));
                    let answer = agent
                        .post(&url)
                        .header("content-type", "application/json")
                        .send(body(arrival, i))
                        .and_then(|mut r| Ok((r.status().as_u16(), r.body_mut().read_to_vec()?)));
                    let error = match answer {
                        Ok((status, bytes)) => check(arrival.kind, status, &bytes),
                        Err(e) => Some(error_kind(&e)),
                    };
                    let latency_ms = (due.elapsed().as_secs_f64() * 1e3) as f32;
                    match error {
                        None => log.records.push(Record { index: i as u32, latency_ms: Some(latency_ms) }),
                        Some(kind) => {
                            log.errors.push((i as u32, kind));
                            log.records.push(Record { index: i as u32, latency_ms: None });
                        }
                    }
                }
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().map_err(|_| "a client thread panicked".into())).collect()
}

/// One sample of the server, taken every second: VmRSS and `/metrics`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Sample {
    t_s: f64,
    rss_bytes: u64,
    /// False when `/metrics` did not answer: the counters are the previous sample's.
    metrics_ok: bool,
    awake: u64,
    wakes_total: u64,
    evictions_total: u64,
    idle_sleeps_total: u64,
    commits_total: u64,
    overloaded_total: u64,
    sqlite_used_bytes: u64,
    /// The host's cap on awake actors (it follows the measured cost of an awake actor).
    awake_max: u64,
    /// The store's background work: compactions finished and running, tables in level 0.
    compactions_total: u64,
    compactions_running: u64,
    l0_tables: u64,
}

/// The `name` or `name{labels}` series of a Prometheus text exposition, with their values.
fn parse_metrics(text: &str) -> BTreeMap<&str, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(name, value)| Some((name, value.parse().ok()?)))
        .collect()
}

fn read_metrics(agent: &ureq::Agent, base: &str, sample: &mut Sample) -> bool {
    let text = agent
        .get(&format!("{base}/metrics"))
        .call()
        .ok()
        .filter(|r| r.status() == 200)
        .and_then(|mut r| r.body_mut().read_to_string().ok());
    let Some(text) = text else { return false };
    let metrics = parse_metrics(&text);
    let get = |name: &str| metrics.get(name).map(|v| *v as u64);
    let (Some(awake), Some(wakes)) = (get("roost_actors{state=\"awake\"}"), get("roost_wakes_total")) else {
        return false;
    };
    sample.awake = awake;
    sample.wakes_total = wakes;
    sample.evictions_total = get("roost_evictions_total").unwrap_or(0);
    sample.idle_sleeps_total = get("roost_idle_sleeps_total").unwrap_or(0);
    sample.commits_total = get("roost_commits_total").unwrap_or(0);
    sample.overloaded_total = get("roost_overloaded_total").unwrap_or(0);
    sample.sqlite_used_bytes = get("roost_sqlite_memory_used_bytes").unwrap_or(0);
    sample.awake_max = get("roost_awake_max").unwrap_or(0);
    sample.compactions_total = get("roost_store_compactions_total").unwrap_or(0);
    sample.compactions_running = get("roost_store_compactions_running").unwrap_or(0);
    sample.l0_tables = get("roost_store_l0_tables").unwrap_or(0);
    true
}

/// Samples the server every second from `start` until `stop`, and once more at the end.
fn spawn_sampler(
    pid: u32,
    base: String,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into();
        let mut samples: Vec<Sample> = Vec::new();
        let take = |samples: &mut Vec<Sample>| {
            let mut sample = samples.last().copied().unwrap_or_default();
            sample.t_s = start.elapsed().as_secs_f64();
            sample.rss_bytes = roost::host::process_memory_of(pid).map_or(0, |m| m.rss_bytes);
            sample.metrics_ok = read_metrics(&agent, &base, &mut sample);
            samples.push(sample);
        };
        let mut next = start;
        while !stop.load(Ordering::Relaxed) {
            take(&mut samples);
            next += Duration::from_secs(1);
            while !stop.load(Ordering::Relaxed) && Instant::now() < next {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        take(&mut samples);
        samples
    })
}

/// Sends SIGTERM and waits for a clean exit (actors asleep, store synced, so that a kept data
/// folder is reused as it was left); kills the server if it does not stop in time.
fn stop_server(server: &mut std::process::Child) -> String {
    let _ = std::process::Command::new("kill").args(["-TERM", &server.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(SHUTDOWN_WAIT_S);
    while Instant::now() < deadline {
        match server.try_wait() {
            Ok(Some(status)) => return status.to_string(),
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return format!("unknown ({e})"),
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    format!("killed: no exit within {SHUTDOWN_WAIT_S} s of SIGTERM")
}

/// Nearest-rank quantiles of latencies, ms.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Quantiles {
    count: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Quantiles {
    fn of(mut values: Vec<f64>) -> Self {
        values.sort_unstable_by(f64::total_cmp);
        let q = |p| quantile(&values, p);
        Self { count: values.len(), p50: q(0.5), p90: q(0.9), p99: q(0.99), p999: q(0.999), max: q(1.0) }
    }
}

/// Requests of one kind scheduled in one window.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Counts {
    scheduled: u64,
    sent: u64,
    ok: u64,
    errors: u64,
    /// Answered with a plausible 200, per second of the window.
    ok_per_s: f64,
}

#[derive(Debug, Serialize)]
struct RunParams {
    actors: usize,
    duration_s: u64,
    warmup_s: u64,
    read_interval_s: f64,
    write_interval_s: f64,
    clients: usize,
    seed: u64,
    budget_bytes: u64,
    data_reused: bool,
    setup_s: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Requests {
    /// The measured window (after the warm-up).
    reads: Counts,
    writes: Counts,
    all: Counts,
    warmup: Counts,
    /// Every error of the run, the warm-up's included, by kind (`<status> <code>`, `not_sent`...).
    errors_by_kind: BTreeMap<String, u64>,
    errors_total: u64,
    reads_per_s: f64,
    writes_per_s: f64,
}

#[derive(Debug, Serialize)]
struct Latencies {
    reads: Quantiles,
    writes: Quantiles,
    all: Quantiles,
}

#[derive(Debug, Serialize)]
struct Server {
    budget_bytes: u64,
    /// RSS before the load started.
    rss_idle_bytes: u64,
    /// Highest of the per-second samples (warm-up included).
    rss_samples_max_bytes: u64,
    /// The server's VmHWM at the end (its whole life).
    hwm_bytes: u64,
    rss_peak_bytes: u64,
    rss_end_bytes: u64,
    awake_peak: u64,
    /// The host's cap on awake actors at the end (`roost_awake_max`).
    awake_max: u64,
    /// Over the measured window, from the `/metrics` counters.
    wakes_per_s: f64,
    evictions_per_s: f64,
    idle_sleeps_per_s: f64,
    commits_per_s: f64,
    overloaded_total: u64,
    metrics_failures: usize,
    exit: String,
}

#[derive(Debug, Serialize)]
struct Target {
    name: &'static str,
    value: f64,
    limit: f64,
    met: bool,
}

/// One second of the run: server figures (counters as rates over the second before) and the
/// requests scheduled in that second.
#[derive(Debug, Serialize)]
struct SeriesPoint {
    t_s: f64,
    rss_mib: f64,
    awake: u64,
    awake_max: u64,
    wakes_per_s: f64,
    evictions_per_s: f64,
    commits_per_s: f64,
    idle_sleeps_per_s: f64,
    sqlite_mib: f64,
    /// Store compactions finished in the second before, running at the sample, and the
    /// level-0 tables then: a p99 spike next to a compaction's end is the store's install step
    /// (docs/operations.md, Compaction).
    compactions: u64,
    compactions_running: u64,
    l0_tables: u64,
    scheduled: u64,
    errors: u64,
    p99_ms: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    machine: Machine,
    params: RunParams,
    requests: Requests,
    latency_ms: Latencies,
    server: Server,
    targets: Vec<Target>,
    series: Vec<SeriesPoint>,
}

pub fn run(args: &FleetArgs) -> BenchResult<()> {
    if !(args.read_interval_s > 0.0 && args.write_interval_s > 0.0) {
        return Err("--read-interval-s and --write-interval-s must be above 0".into());
    }
    let (actors, clients) = (to_usize(args.actors)?, to_usize(args.clients)?);
    if u32::try_from(actors).is_err() {
        return Err(format!("--actors {actors} is too large").into());
    }
    let (data, setup_s) = prepare(args, actors)?;
    let horizon_s = (args.warmup_s + args.duration_s) as f64;
    let arrivals =
        Arc::new(schedule(actors, args.read_interval_s, args.write_interval_s, horizon_s, args.seed));
    eprintln!(
        "{} requests scheduled over {horizon_s} s ({:.0}/s); starting roost serve --memory-budget {:.0} MiB",
        arrivals.len(),
        arrivals.len() as f64 / horizon_s,
        mib(args.memory_budget)
    );

    let port = free_port()?;
    let mut server = start_server(&data.store(), port, args.memory_budget)?;
    let base = format!("http://127.0.0.1:{port}");
    let pid = server.id();
    let rss_idle_bytes = roost::host::process_memory_of(pid).map_or(0, |m| m.rss_bytes);
    let start = Instant::now() + Duration::from_millis(100);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = spawn_sampler(pid, base.clone(), start, stop.clone());
    let progress = spawn_progress(start, horizon_s, stop.clone());
    let give_up = start + Duration::from_secs_f64(horizon_s + DRAIN_S);
    let logs = drive(&base, &arrivals, clients, start, give_up);
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join();
    let _ = progress.join();
    let hwm_bytes = roost::host::process_memory_of(pid).map_or(0, |m| m.rss_peak_bytes);
    // Stopped before any error below is returned: a dropped Child is not killed.
    let exit = stop_server(&mut server);
    let (logs, samples) = (logs?, samples.map_err(|_| "the sampler thread panicked")?);

    let params = RunParams {
        actors,
        duration_s: args.duration_s,
        warmup_s: args.warmup_s,
        read_interval_s: args.read_interval_s,
        write_interval_s: args.write_interval_s,
        clients,
        seed: args.seed,
        budget_bytes: args.memory_budget,
        data_reused: setup_s.is_none(),
        setup_s,
    };
    let report = report(params, &data, &arrivals, &logs, &samples, rss_idle_bytes, hwm_bytes, exit);
    print!("{}", table(&report));
    std::fs::write(&args.chart, chart_svg(&report))
        .map_err(|e| format!("cannot write {}: {e}", args.chart.display()))?;
    println!("\nchart written to {}", args.chart.display());
    write_results(&args.json, &report)
}

/// A progress line every minute of the load (stderr), so that a long run shows it is alive.
fn spawn_progress(start: Instant, horizon_s: f64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut next = start + Duration::from_secs(60);
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next {
                eprintln!("  load: {:.0} of {horizon_s:.0} s", start.elapsed().as_secs_f64());
                next += Duration::from_secs(60);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn report(
    params: RunParams,
    data: &DataDir,
    arrivals: &[Arrival],
    logs: &[ClientLog],
    samples: &[Sample],
    rss_idle_bytes: u64,
    hwm_bytes: u64,
    exit: String,
) -> Report {
    let (warmup_s, end_s) = (params.warmup_s as f64, (params.warmup_s + params.duration_s) as f64);
    let measured = |a: &Arrival| a.at_s >= warmup_s;
    let mut counts = [Counts::default(); 3]; // reads, writes, warm-up
    let mut latencies: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let seconds = end_s.ceil() as usize;
    let mut per_second: Vec<(u64, u64, Vec<f64>)> = (0..seconds).map(|_| (0, 0, Vec::new())).collect();
    let mut not_sent = std::collections::HashSet::new();
    let mut errors_by_kind = BTreeMap::new();
    for log in logs {
        for (index, kind) in &log.errors {
            *errors_by_kind.entry(kind.clone()).or_insert(0u64) += 1;
            if kind == "not_sent" {
                not_sent.insert(*index);
            }
        }
    }
    for record in logs.iter().flat_map(|l| &l.records) {
        let arrival = &arrivals[record.index as usize];
        let slot = match (measured(arrival), arrival.kind) {
            (false, _) => 2,
            (true, Kind::Read) => 0,
            (true, Kind::Write) => 1,
        };
        let c = &mut counts[slot];
        c.scheduled += 1;
        c.sent += u64::from(!not_sent.contains(&record.index));
        let second = &mut per_second[(arrival.at_s as usize).min(seconds.saturating_sub(1))];
        second.0 += 1;
        match record.latency_ms {
            Some(ms) => {
                c.ok += 1;
                second.2.push(f64::from(ms));
                if slot < 2 {
                    latencies[slot].push(f64::from(ms));
                }
            }
            None => {
                c.errors += 1;
                second.1 += 1;
            }
        }
    }
    let duration_s = params.duration_s as f64;
    for (c, window_s) in counts.iter_mut().zip([duration_s, duration_s, warmup_s]) {
        c.ok_per_s = c.ok as f64 / window_s.max(1e-9);
    }
    let [reads, writes, warmup] = counts;
    let all = Counts {
        scheduled: reads.scheduled + writes.scheduled,
        sent: reads.sent + writes.sent,
        ok: reads.ok + writes.ok,
        errors: reads.errors + writes.errors,
        ok_per_s: reads.ok_per_s + writes.ok_per_s,
    };
    let [read_ms, write_ms] = latencies;
    let all_ms: Vec<f64> = read_ms.iter().chain(&write_ms).copied().collect();
    let latency_ms = Latencies {
        reads: Quantiles::of(read_ms),
        writes: Quantiles::of(write_ms),
        all: Quantiles::of(all_ms),
    };
    let errors_total = errors_by_kind.values().sum();

    let server = server_figures(&params, samples, rss_idle_bytes, hwm_bytes, exit);
    let targets = vec![
        Target {
            name: "server peak RSS (max of samples and VmHWM) <= budget, bytes",
            value: server.rss_peak_bytes as f64,
            limit: params.budget_bytes as f64,
            met: server.rss_peak_bytes <= params.budget_bytes,
        },
        Target {
            name: "request p99 from the scheduled time (reads and writes, wakes included) <= 10 ms",
            value: latency_ms.all.p99,
            limit: P99_TARGET_MS,
            met: latency_ms.all.count > 0 && latency_ms.all.p99 <= P99_TARGET_MS,
        },
        Target {
            name: "errors (warm-up included) == 0",
            value: errors_total as f64,
            limit: 0.0,
            met: errors_total == 0,
        },
    ];
    let series = series(samples, &per_second);
    Report {
        benchmark: "actors-fleet",
        machine: Machine::new(data.root()),
        requests: Requests {
            reads_per_s: reads.ok_per_s,
            writes_per_s: writes.ok_per_s,
            reads,
            writes,
            all,
            warmup,
            errors_by_kind,
            errors_total,
        },
        latency_ms,
        server,
        targets,
        series,
        params,
    }
}

fn server_figures(
    params: &RunParams,
    samples: &[Sample],
    rss_idle_bytes: u64,
    hwm_bytes: u64,
    exit: String,
) -> Server {
    let (warmup_s, end_s) = (params.warmup_s as f64, (params.warmup_s + params.duration_s) as f64);
    let rss_samples_max_bytes = samples.iter().map(|s| s.rss_bytes).max().unwrap_or(0);
    // Counter rates over the measured window: from the first sample at or after the warm-up to
    // the last one within the window (the run may drain past it).
    let with_metrics: Vec<&Sample> = samples.iter().filter(|s| s.metrics_ok).collect();
    let from = with_metrics.iter().find(|s| s.t_s >= warmup_s - 0.5).or(with_metrics.first());
    let to = with_metrics.iter().rev().find(|s| s.t_s <= end_s + 0.5).or(with_metrics.last());
    let rate = |field: fn(&Sample) -> u64| match (from, to) {
        (Some(a), Some(b)) if b.t_s > a.t_s => (field(b) - field(a).min(field(b))) as f64 / (b.t_s - a.t_s),
        _ => 0.0,
    };
    let first_overloaded = with_metrics.first().map_or(0, |s| s.overloaded_total);
    Server {
        budget_bytes: params.budget_bytes,
        rss_idle_bytes,
        rss_samples_max_bytes,
        hwm_bytes,
        rss_peak_bytes: rss_samples_max_bytes.max(hwm_bytes),
        rss_end_bytes: samples.last().map_or(0, |s| s.rss_bytes),
        awake_peak: samples.iter().map(|s| s.awake).max().unwrap_or(0),
        awake_max: with_metrics.last().map_or(0, |s| s.awake_max),
        wakes_per_s: rate(|s| s.wakes_total),
        evictions_per_s: rate(|s| s.evictions_total),
        idle_sleeps_per_s: rate(|s| s.idle_sleeps_total),
        commits_per_s: rate(|s| s.commits_total),
        overloaded_total: with_metrics
            .last()
            .map_or(0, |s| s.overloaded_total.saturating_sub(first_overloaded)),
        metrics_failures: samples.iter().filter(|s| !s.metrics_ok).count(),
        exit,
    }
}

/// One point per sample (taken about every whole second); the request figures are those of
/// the second the sample ends.
fn series(samples: &[Sample], per_second: &[(u64, u64, Vec<f64>)]) -> Vec<SeriesPoint> {
    let mut previous: Option<&Sample> = None;
    let mut points = Vec::with_capacity(samples.len());
    for s in samples {
        let per_s = |field: fn(&Sample) -> u64| match previous {
            Some(p) if s.t_s > p.t_s => field(s).saturating_sub(field(p)) as f64 / (s.t_s - p.t_s),
            _ => 0.0,
        };
        let second = (s.t_s.round() as usize).checked_sub(1).and_then(|i| per_second.get(i));
        let (scheduled, errors, p99_ms) = second.map_or((0, 0, 0.0), |(n, e, ms)| {
            let mut ms = ms.clone();
            ms.sort_unstable_by(f64::total_cmp);
            (*n, *e, quantile(&ms, 0.99))
        });
        let round = |v: f64| (v * 10.0).round() / 10.0;
        points.push(SeriesPoint {
            t_s: round(s.t_s),
            rss_mib: round(mib(s.rss_bytes)),
            awake: s.awake,
            awake_max: s.awake_max,
            wakes_per_s: round(per_s(|s| s.wakes_total)),
            evictions_per_s: round(per_s(|s| s.evictions_total)),
            commits_per_s: round(per_s(|s| s.commits_total)),
            idle_sleeps_per_s: round(per_s(|s| s.idle_sleeps_total)),
            sqlite_mib: round(mib(s.sqlite_used_bytes)),
            compactions: previous.map_or(0, |p| s.compactions_total.saturating_sub(p.compactions_total)),
            compactions_running: s.compactions_running,
            l0_tables: s.l0_tables,
            scheduled,
            errors,
            p99_ms: (p99_ms * 100.0).round() / 100.0,
        });
        previous = Some(s);
    }
    points
}

/// The count cells of a row of the requests table: kind, scheduled, sent, ok, errors, ok/s.
fn count_cells(name: &str, c: &Counts) -> Vec<String> {
    let counts = [c.scheduled, c.sent, c.ok, c.errors].map(|n| n.to_string());
    std::iter::once(name.to_string()).chain(counts).chain([fixed(c.ok_per_s, 1)]).collect()
}

fn table(r: &Report) -> String {
    let p = &r.params;
    let mut out = format!(
        "roost bench actors fleet: {} actors, {} s measured after {} s of warm-up; per actor one read every {} s and one write every {} s on average (Poisson, seed {}), {} clients\n\
         roost serve --memory-budget {:.0} MiB; {} cpus, SQLite {}, data in {} ({})\n\n",
        p.actors,
        p.duration_s,
        p.warmup_s,
        p.read_interval_s,
        p.write_interval_s,
        p.seed,
        p.clients,
        mib(p.budget_bytes),
        r.machine.cpus,
        r.machine.sqlite_version,
        r.machine.data_dir,
        p.setup_s.map_or("setup reused".to_string(), |s| format!("setup {s:.1} s")),
    );
    let mut t = Table::new(
        &[
            "requests",
            "scheduled",
            "sent",
            "ok",
            "errors",
            "ok/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
        ],
        1,
    );
    let q = &r.latency_ms;
    let rq = &r.requests;
    for (name, c, l) in
        [("read", &rq.reads, &q.reads), ("write", &rq.writes, &q.writes), ("all", &rq.all, &q.all)]
    {
        let mut row = count_cells(name, c);
        row.extend([fixed(l.p50, 2), fixed(l.p90, 2), fixed(l.p99, 2), fixed(l.p999, 2), fixed(l.max, 1)]);
        t.row(row);
    }
    t.row(count_cells("warm-up", &rq.warmup));
    out += &t.render();
    out += "\nlatency: from the scheduled time to the answer, answers that passed the check; warm-up not included\n";
    if rq.errors_by_kind.is_empty() {
        out += "errors: none\n\n";
    } else {
        let kinds: Vec<String> = rq.errors_by_kind.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        out += &format!("errors by kind (warm-up included): {}\n\n", kinds.join(", "));
    }
    let s = &r.server;
    let mut t = Table::new(
        &[
            "RSS idle MiB",
            "RSS max MiB",
            "VmHWM MiB",
            "budget MiB",
            "RSS end MiB",
            "awake peak",
            "awake max",
            "wakes/s",
            "evictions/s",
            "idle sleeps/s",
            "commits/s",
            "overloaded",
        ],
        0,
    );
    t.row(vec![
        fixed(mib(s.rss_idle_bytes), 1),
        fixed(mib(s.rss_samples_max_bytes), 1),
        fixed(mib(s.hwm_bytes), 1),
        fixed(mib(s.budget_bytes), 0),
        fixed(mib(s.rss_end_bytes), 1),
        s.awake_peak.to_string(),
        s.awake_max.to_string(),
        fixed(s.wakes_per_s, 1),
        fixed(s.evictions_per_s, 1),
        fixed(s.idle_sleeps_per_s, 1),
        fixed(s.commits_per_s, 1),
        s.overloaded_total.to_string(),
    ]);
    out += &t.render();
    out += &format!(
        "\nserver: RSS sampled every second during the load (warm-up included), rates over the measured window; server exit: {}{}\n\ntargets:\n",
        s.exit,
        if s.metrics_failures > 0 { format!("; /metrics failed {} times", s.metrics_failures) } else { String::new() }
    );
    let [rss, p99, errors] = &r.targets[..] else { unreachable!("three targets") };
    out += &format!(
        "  server peak RSS {:.1} MiB (limit: the budget, {:.0} MiB): {}\n",
        mib(rss.value as u64),
        mib(rss.limit as u64),
        verdict(rss.met)
    );
    out += &format!(
        "  request p99 {:.2} ms (limit {P99_TARGET_MS} ms, wakes and queueing included): {}\n",
        p99.value,
        verdict(p99.met)
    );
    out += &format!("  errors {} (limit 0): {}\n\nover time:\n", errors.value, verdict(errors.met));
    let mut t = Table::new(
        &["t s", "RSS MiB", "awake", "wakes/s", "evictions/s", "commits/s", "scheduled", "errors", "p99 ms"],
        0,
    );
    let every = (r.series.len() / 15).max(1);
    for (i, point) in r.series.iter().enumerate() {
        if i % every == 0 || i + 1 == r.series.len() {
            t.row(vec![
                fixed(point.t_s, 0),
                fixed(point.rss_mib, 1),
                point.awake.to_string(),
                fixed(point.wakes_per_s, 0),
                fixed(point.evictions_per_s, 0),
                fixed(point.commits_per_s, 0),
                point.scheduled.to_string(),
                point.errors.to_string(),
                fixed(point.p99_ms, 2),
            ]);
        }
    }
    out += &t.render();
    out
}

const RSS_COLOR: &str = "#1f77b4";
const AWAKE_COLOR: &str = "#2ca02c";

/// RSS over time against the budget (left axis, MiB) and awake actors (right axis), with the
/// end of the warm-up marked.
fn chart_svg(r: &Report) -> String {
    let (w, h) = (1000.0_f64, 420.0_f64);
    let budget = r.params.budget_bytes;
    let rss_max = r.series.iter().map(|p| (p.rss_mib * 1024.0 * 1024.0) as u64).max().unwrap_or(0);
    let awake_max = r.series.iter().map(|p| p.awake).max().unwrap_or(0).max(1) as f64 * 1.05;
    let t_max = r.series.last().map_or(1.0, |p| p.t_s.max(1.0)) * 1000.0;
    let f = Frame {
        left: 80.0,
        right: w - 220.0,
        top: 20.0,
        bottom: h - 50.0,
        t_max,
        y_max: rss_max.max(budget).max(1 << 20) as f64 * 1.05,
    };
    let ms = |t_s: f64| (t_s * 1000.0) as u64;
    let mut svg = chart::open(w, h);
    svg += &chart::axes(&f);
    svg += &chart::right_axis(&f, awake_max, "awake actors");
    svg += &chart::budget_line(&f, budget);
    let x = f.x(ms(r.params.warmup_s as f64));
    svg += &format!(
        "<line class=\"warmup\" x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#888\" stroke-dasharray=\"2 3\"/>\n",
        f.top, f.bottom
    );
    svg += &chart::polyline(
        "rss",
        RSS_COLOR,
        r.series.iter().map(|p| (f.x(ms(p.t_s)), f.y((p.rss_mib * 1024.0 * 1024.0) as u64))),
    );
    svg += &chart::polyline(
        "awake",
        AWAKE_COLOR,
        r.series.iter().map(|p| (f.x(ms(p.t_s)), f.y_scaled(p.awake as f64, awake_max))),
    );
    let legend = [
        ("server RSS", RSS_COLOR),
        ("budget", "#d62728"),
        ("awake actors (right)", AWAKE_COLOR),
        ("end of warm-up", "#888"),
    ];
    svg + &chart::legend(f.right + 95.0, f.top + 10.0, &legend) + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_has_the_asked_rates_and_is_fixed_by_the_seed() {
        let arrivals = schedule(1000, 10.0, 100.0, 200.0, 7);
        // 100 reads/s and 10 writes/s for 200 s: 22,000 arrivals, within a few standard deviations.
        let writes = arrivals.iter().filter(|a| a.kind == Kind::Write).count() as f64;
        let reads = arrivals.len() as f64 - writes;
        assert!((reads - 20_000.0).abs() < 600.0, "{reads}");
        assert!((writes - 2_000.0).abs() < 200.0, "{writes}");
        assert!(arrivals.windows(2).all(|w| w[0].at_s <= w[1].at_s));
        assert!(arrivals.iter().all(|a| a.at_s < 200.0 && (a.actor as usize) < 1000));
        let again = schedule(1000, 10.0, 100.0, 200.0, 7);
        assert_eq!(again.len(), arrivals.len());
        assert!(again
            .iter()
            .zip(&arrivals)
            .all(|(a, b)| a.at_s == b.at_s && a.actor == b.actor && a.kind == b.kind));
        let other = schedule(1000, 10.0, 100.0, 200.0, 8);
        assert!(
            other.iter().zip(&arrivals).take(10).any(|(a, b)| a.at_s != b.at_s),
            "another seed, another schedule"
        );
    }

    #[test]
    fn answers_are_checked() {
        let read = br#"{"columns":["id"],"rows":[[110,1,2],[109,1,2],[108,1,2],[107,1,2],[106,1,2],[105,1,2],[104,1,2],[103,1,2],[102,1,2],[101,1,2]]}"#;
        assert_eq!(check(Kind::Read, 200, read), None);
        assert!(check(Kind::Read, 200, br#"{"rows":[]}"#).is_some());
        assert_eq!(check(Kind::Write, 200, br#"{"rows":[],"rows_affected":1}"#), None);
        assert!(check(Kind::Write, 200, br#"{"rows":[],"rows_affected":0}"#).is_some());
        let overloaded = br#"{"error":{"code":"overloaded","message":"busy"}}"#;
        assert_eq!(check(Kind::Read, 503, overloaded).as_deref(), Some("503 overloaded: busy"));
        let bad = br#"{"error":{"code":"sql_error","message":"no such table: x"}}"#;
        assert_eq!(check(Kind::Read, 400, bad).as_deref(), Some("400 sql_error"));
        assert_eq!(check(Kind::Write, 500, b"oops").as_deref(), Some("500 no error code"));
    }

    #[test]
    fn metrics_are_parsed() {
        let text = "# HELP x\nroost_actors{state=\"awake\"} 12\nroost_wakes_total 340\n";
        let m = parse_metrics(text);
        assert_eq!(m["roost_actors{state=\"awake\"}"], 12.0);
        assert_eq!(m["roost_wakes_total"], 340.0);
    }
}
