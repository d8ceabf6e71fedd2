//! `roost bench http`: requests/s, latency and CPU of single-row reads and writes through the
//! HTTP API, on one actor and spread over many, with a closed-loop load generator on loopback.
//!
//! One server per `--release-delays-ms` entry runs in this process, all at once, on its own
//! embedded store (default configuration). The servers take turns: each workload runs
//! `--rounds` rounds, and in every round each server gets one slice of `--slice-ms` of load, in
//! an order shuffled every round (`--seed`). Only the part of a slice after `--warmup-ms` is
//! measured, so connection set-up and whatever the previous idle gap left behind (a server that
//! releases idle memory after 1 s has released it by the time its turn comes again) are not
//! counted: the figures are those of a busy server. Comparing servers slice by slice within a
//! round cancels most of a shared, noisy machine's drift, which back-to-back runs of 10 s each
//! could not (they differed 1.7x between two runs of one configuration). A second server with
//! the same setting (the default list has two `off`) measures what is left of that noise.
//!
//! Client threads each keep one HTTP connection alive and send requests back to back. Client
//! and servers share the machine's cores, so the rates are a floor.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use roost::kv::{FjallConfig, FjallStore};
use roost::server::{serve, AppState, ServerConfig};
use roost::{Host, HostConfig, Storage, StorageConfig};
use serde::Serialize;
use serde_json::json;

use crate::common::{fixed, quantile_ms, scratch_dir, write_results, ProcUsage, Table};

/// Arguments of `roost bench http`.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Client threads (concurrent requests).
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Rounds per workload; every server gets one slice per round.
    #[arg(long, default_value_t = 20, value_parser = crate::at_least_one())]
    pub rounds: u64,
    /// Seed of the order in which servers take their slices in each round.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Length of one server's slice of load, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = crate::at_least_one())]
    pub slice_ms: u64,
    /// The first part of each slice that is not measured, in milliseconds (must be shorter than
    /// the slice).
    #[arg(long, default_value_t = 250)]
    pub warmup_ms: u64,
    /// Actors of the "many actors" workloads.
    #[arg(long, default_value_t = 1000)]
    pub actors: usize,
    #[arg(long, default_value = "bench-http.json")]
    pub json: PathBuf,
    /// Folder for the scratch data folders [default: system temp dir].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Idle-memory release delays to compare, one server each (0: release when each request
    /// ends, what hot actors paid before the delay existed; `off`: never release, what the
    /// others are compared with: the first `off` is the reference, a second one measures the
    /// benchmark's own noise).
    #[arg(long, value_delimiter = ',', default_value = "off,1000,0,off")]
    pub release_delays_ms: Vec<ReleaseDelay>,
}

/// When a server releases an idle actor's memory: after a delay, or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseDelay {
    AfterMs(u64),
    Off,
}

impl std::str::FromStr for ReleaseDelay {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" => Ok(Self::Off),
            ms => ms.parse().map(Self::AfterMs).map_err(|_| format!("{ms:?}: a delay in ms, or off")),
        }
    }
}

impl std::fmt::Display for ReleaseDelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AfterMs(ms) => write!(f, "{ms}ms"),
            Self::Off => f.write_str("off"),
        }
    }
}

impl ReleaseDelay {
    fn host_config(self) -> HostConfig {
        match self {
            Self::AfterMs(release_delay_ms) => HostConfig { release_delay_ms, ..HostConfig::default() },
            Self::Off => HostConfig { release_idle_memory: false, ..HostConfig::default() },
        }
    }

    /// The delay in the JSON: `null` for never.
    fn delay_ms(self) -> Option<u64> {
        match self {
            Self::AfterMs(ms) => Some(ms),
            Self::Off => None,
        }
    }
}

/// A workload: what each request is, and over how many actors.
#[derive(Debug, Clone, Copy)]
struct Workload {
    kind: Kind,
    actors: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `SELECT v FROM kv WHERE id = ?`
    Read,
    /// One-row `INSERT`: one durable commit.
    Write,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

impl Workload {
    /// Client `client`'s `i`-th request against the server at `url`: its URL and JSON body.
    fn request(self, url: &str, client: usize, i: usize) -> (String, String) {
        let actor = (client * 7919 + i) % self.actors;
        let body = match self.kind {
            Kind::Read => json!({"sql": "SELECT v FROM kv WHERE id = ?", "params": [(i % 100) as i64 + 1]}),
            Kind::Write => {
                json!({"sql": "INSERT INTO kv(v) VALUES (?)", "params": [format!("c{client}-{i}")]})
            }
        };
        (format!("{url}/v1/actors/a-{actor:05}/query"), body.to_string())
    }
}

/// What one slice measured (after its warm-up).
#[derive(Debug, Default)]
struct Slice {
    latencies: Vec<Duration>,
    errors: usize,
    secs: f64,
    cpu_us: u64,
}

impl Slice {
    fn requests_per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.secs.max(1e-9)
    }

    fn cpu_us_per_request(&self) -> f64 {
        self.cpu_us as f64 / self.latencies.len().max(1) as f64
    }
}

/// Runs `args.clients` threads against `url` for one slice; measures the part after the warm-up.
fn slice(args: &HttpArgs, url: &Arc<str>, workload: Workload) -> Slice {
    let started = Instant::now();
    let measure_from = started + Duration::from_millis(args.warmup_ms);
    let end = started + Duration::from_millis(args.slice_ms);
    let threads: Vec<_> = (0..args.clients)
        .map(|client| {
            let url = url.clone();
            std::thread::spawn(move || {
                let agent: ureq::Agent =
                    ureq::Agent::config_builder().http_status_as_error(false).build().into();
                let (mut latencies, mut errors) = (Vec::new(), 0usize);
                let mut i = 0;
                while Instant::now() < end {
                    let (url, body) = workload.request(&url, client, i);
                    let t = Instant::now();
                    let ok = agent
                        .post(&url)
                        .header("content-type", "application/json")
                        .send(body)
                        .map(|mut r| r.status() == 200 && r.body_mut().read_to_vec().is_ok())
                        .unwrap_or(false);
                    let done = Instant::now();
                    if t >= measure_from && done <= end {
                        latencies.push(done - t);
                        errors += usize::from(!ok);
                    }
                    i += 1;
                }
                (latencies, errors)
            })
        })
        .collect();
    std::thread::sleep(measure_from.saturating_duration_since(Instant::now()));
    let (usage_from, measured_from) = (ProcUsage::read().ok(), Instant::now());
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    let usage_to = ProcUsage::read().ok();
    let secs = measured_from.elapsed().as_secs_f64();
    let mut out = Slice { secs, ..Slice::default() };
    if let (Some(from), Some(to)) = (usage_from, usage_to) {
        let used = to.since(&from);
        out.cpu_us = used.user_us + used.system_us;
    }
    for t in threads {
        let (latencies, errors) = t.join().expect("client thread");
        out.latencies.extend(latencies);
        out.errors += errors;
    }
    out
}

/// One server of the comparison, running on its own thread and runtime.
struct Server {
    label: String,
    release: ReleaseDelay,
    url: Arc<str>,
    thread: std::thread::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(args: &HttpArgs, release: ReleaseDelay, label: String) -> Result<Self, String> {
        let dir = scratch_dir(args.data.as_deref(), "roost-bench-http-").map_err(|e| e.to_string())?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let url = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
        let store = FjallStore::open(FjallConfig::new(dir.path())).map_err(|e| e.to_string())?;
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let storage = Storage::new(Arc::new(store), StorageConfig::default()).expect("storage");
                let host = Host::new(storage, release.host_config()).expect("host");
                let config = ServerConfig { memory_log_interval_s: 0, ..ServerConfig::default() };
                let _ = serve(listener, AppState::new(host, config), async move {
                    let _ = rx.await;
                })
                .await;
            });
        });
        let server = Self { label, release, url: url.into(), thread, stop, _dir: dir };
        setup(&server.url, args.actors.max(1))?;
        Ok(server)
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

fn setup(url: &str, actors: usize) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    for a in 0..actors {
        let body = json!({"statements": [
            {"sql": "CREATE TABLE kv(id INTEGER PRIMARY KEY, v TEXT)"},
            {"sql": "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < 100) INSERT INTO kv SELECT i, 'value-' || i FROM s"}
        ], "transaction": true});
        let status = agent
            .post(&format!("{url}/v1/actors/a-{a:05}/batch"))
            .send_json(body)
            .map_err(|e| e.to_string())?
            .status();
        if status != 200 {
            return Err(format!("setup of actor {a} answered {status}"));
        }
    }
    Ok(())
}

/// One server's figures on one workload, over all its slices.
#[derive(Debug, Clone, Serialize)]
struct Row {
    release_delay_ms: Option<u64>,
    release: String,
    workload: &'static str,
    actors: usize,
    requests: usize,
    errors: usize,
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_request: f64,
    /// Each round's requests/s of this server over the reference (`off`) server's in the same
    /// round, summarized. `None` without an `off` server.
    vs_off: Option<Ratio>,
    /// The same for CPU time per request (below 1 is cheaper).
    cpu_vs_off: Option<Ratio>,
    slice_requests_per_sec: Vec<f64>,
    slice_cpu_us_per_request: Vec<f64>,
}

/// Per-round ratios of one server against the reference: their geometric mean and its 95%
/// confidence interval (normal approximation on the logarithms; rough below ~10 rounds).
#[derive(Debug, Clone, Copy, Serialize)]
struct Ratio {
    geo_mean: f64,
    ci95_low: f64,
    ci95_high: f64,
}

impl Ratio {
    fn of(mine: &[f64], reference: &[f64]) -> Option<Self> {
        let logs: Vec<f64> = mine
            .iter()
            .zip(reference)
            .filter(|(m, r)| **m > 0.0 && **r > 0.0)
            .map(|(m, r)| (m / r).ln())
            .collect();
        let n = logs.len() as f64;
        if logs.is_empty() {
            return None;
        }
        let mean = logs.iter().sum::<f64>() / n;
        let variance = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        let half_width = 1.96 * (variance / n).sqrt();
        Some(Self {
            geo_mean: mean.exp(),
            ci95_low: (mean - half_width).exp(),
            ci95_high: (mean + half_width).exp(),
        })
    }

    fn cell(ratio: Option<Self>) -> String {
        ratio.map_or("-".into(), |r| format!("{:.3}x ({:.3}-{:.3})", r.geo_mean, r.ci95_low, r.ci95_high))
    }
}

pub fn run(args: &HttpArgs) -> Result<(), String> {
    if args.warmup_ms >= args.slice_ms {
        return Err(format!(
            "--warmup-ms {} must be shorter than --slice-ms {}",
            args.warmup_ms, args.slice_ms
        ));
    }
    if args.release_delays_ms.is_empty() {
        return Err("--release-delays-ms: at least one server".into());
    }
    let servers = start_servers(args)?;
    let many = args.actors.max(1);
    let workloads = [
        Workload { kind: Kind::Read, actors: 1 },
        Workload { kind: Kind::Write, actors: 1 },
        Workload { kind: Kind::Read, actors: many },
        Workload { kind: Kind::Write, actors: many },
    ];
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut rows = Vec::new();
    for workload in workloads {
        rows.extend(run_workload(args, &servers, workload, &mut rng));
    }
    for server in servers {
        server.stop();
    }
    print_rows(args, &rows);
    let report = json!({
        "clients": args.clients, "rounds": args.rounds, "slice_ms": args.slice_ms, "seed": args.seed,
        "warmup_ms": args.warmup_ms, "results": rows,
    });
    write_results(&args.json, &report).map_err(|e| e.to_string())?;
    Ok(())
}

/// One server per delay, labelled by its delay (and its place, when a delay repeats).
fn start_servers(args: &HttpArgs) -> Result<Vec<Server>, String> {
    let mut servers: Vec<Server> = Vec::new();
    for &release in &args.release_delays_ms {
        let same = servers.iter().filter(|s| s.release == release).count();
        let label = if same == 0 { release.to_string() } else { format!("{release}#{}", same + 1) };
        servers.push(Server::start(args, release, label)?);
    }
    Ok(servers)
}

/// `workload` on every server, in rounds of one slice each, in an order shuffled every round:
/// what a slice leaves behind (a store's flushes, a server's releases) then falls on a different
/// server's slice each time instead of always on the same one's.
fn run_workload(args: &HttpArgs, servers: &[Server], workload: Workload, rng: &mut StdRng) -> Vec<Row> {
    let mut slices: Vec<Vec<Slice>> = servers.iter().map(|_| Vec::new()).collect();
    let mut order: Vec<usize> = (0..servers.len()).collect();
    for _ in 0..args.rounds {
        order.shuffle(rng);
        for &s in &order {
            slices[s].push(slice(args, &servers[s].url, workload));
        }
    }
    let rates: Vec<Vec<f64>> =
        slices.iter().map(|s| s.iter().map(Slice::requests_per_sec).collect()).collect();
    let cpus: Vec<Vec<f64>> =
        slices.iter().map(|s| s.iter().map(Slice::cpu_us_per_request).collect()).collect();
    let reference = servers.iter().position(|s| s.release == ReleaseDelay::Off);
    servers
        .iter()
        .zip(slices)
        .enumerate()
        .map(|(i, (server, slices))| {
            let mut latencies: Vec<Duration> =
                slices.iter().flat_map(|s| s.latencies.iter().copied()).collect();
            latencies.sort_unstable();
            let secs: f64 = slices.iter().map(|s| s.secs).sum();
            let cpu_us: u64 = slices.iter().map(|s| s.cpu_us).sum();
            Row {
                release_delay_ms: server.release.delay_ms(),
                release: server.label.clone(),
                workload: workload.kind.name(),
                actors: workload.actors,
                requests: latencies.len(),
                errors: slices.iter().map(|s| s.errors).sum(),
                requests_per_sec: latencies.len() as f64 / secs.max(1e-9),
                p50_ms: quantile_ms(&latencies, 0.5),
                p99_ms: quantile_ms(&latencies, 0.99),
                cpu_us_per_request: cpu_us as f64 / latencies.len().max(1) as f64,
                vs_off: reference.and_then(|r| Ratio::of(&rates[i], &rates[r])),
                cpu_vs_off: reference.and_then(|r| Ratio::of(&cpus[i], &cpus[r])),
                slice_requests_per_sec: rates[i].clone(),
                slice_cpu_us_per_request: cpus[i].clone(),
            }
        })
        .collect()
}

fn print_rows(args: &HttpArgs, rows: &[Row]) {
    println!(
        "roost bench http: {} client threads, {} rounds of {} ms per server and workload ({} ms warm-up), \
         loopback, embedded store (sync durability)\n",
        args.clients, args.rounds, args.slice_ms, args.warmup_ms
    );
    let mut table = Table::new(
        &[
            "release",
            "workload",
            "actors",
            "requests",
            "errors",
            "requests/s",
            "p50 ms",
            "p99 ms",
            "cpu us/req",
            "vs off (95% CI)",
            "cpu vs off (95% CI)",
        ],
        2,
    );
    for (i, r) in rows.iter().enumerate() {
        if i > 0 && (rows[i - 1].workload, rows[i - 1].actors) != (r.workload, r.actors) {
            table.blank();
        }
        table.row(vec![
            r.release.clone(),
            r.workload.to_string(),
            r.actors.to_string(),
            r.requests.to_string(),
            r.errors.to_string(),
            fixed(r.requests_per_sec, 0),
            fixed(r.p50_ms, 2),
            fixed(r.p99_ms, 2),
            fixed(r.cpu_us_per_request, 1),
            Ratio::cell(r.vs_off),
            Ratio::cell(r.cpu_vs_off),
        ]);
    }
    print!("{}", table.render());
    println!(
        "\nvs off: a server's requests/s (cpu: CPU time per request of the whole process) over the first \
         `off` server's in the same round, geometric mean over the rounds and its 95% confidence interval"
    );
}
