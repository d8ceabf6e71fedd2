//! `roost bench http`: requests/s and latency of single-row reads and writes through the HTTP
//! API, on one actor and spread over many, with a closed-loop load generator on loopback.
//!
//! The server runs in this process on the embedded store (default configuration); client
//! threads each keep one HTTP connection alive and send requests back to back for a fixed
//! time. Client and server share the machine's cores, so the figures are a floor.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use roost::kv::{FjallConfig, FjallStore};
use roost::server::{serve, AppState, ServerConfig};
use roost::{Host, HostConfig, Storage, StorageConfig};
use serde::Serialize;
use serde_json::json;

use crate::common::{quantile_ms, scratch_dir, write_results};

/// Arguments of `roost bench http`.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Client threads (concurrent requests).
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Seconds per workload.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Actors of the "many actors" workloads.
    #[arg(long, default_value_t = 1000)]
    pub actors: usize,
    #[arg(long, default_value = "bench-http.json")]
    pub json: PathBuf,
    /// Folder for the scratch data folder [default: system temp dir].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Idle-memory release delays to compare, one server each (0: release when each request
    /// ends, what hot actors paid before the delay existed; `off`: never release, what the
    /// others are compared with).
    #[arg(long, value_delimiter = ',', default_value = "1000,0,off")]
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

#[derive(Debug, Clone, Serialize)]
struct Row {
    release_delay_ms: Option<u64>,
    #[serde(skip)]
    release: String,
    workload: String,
    actors: usize,
    requests: usize,
    errors: usize,
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Requests/s over the same workload's on the server that never releases (see [`vs_off`]).
    vs_off: Option<f64>,
}

/// Runs `clients` threads for `duration`, each sending `body(client, i)` to `url(client, i)`.
fn load(
    args: &HttpArgs,
    name: &str,
    actors: usize,
    request: Arc<dyn Fn(usize, usize) -> (String, String) + Send + Sync>,
) -> Row {
    let deadline = Instant::now() + Duration::from_secs(args.duration_s);
    let started = Instant::now();
    let threads: Vec<_> = (0..args.clients)
        .map(|client| {
            let request = request.clone();
            std::thread::spawn(move || {
                let agent: ureq::Agent =
                    ureq::Agent::config_builder().http_status_as_error(false).build().into();
                let (mut latencies, mut errors) = (Vec::new(), 0usize);
                let mut i = 0;
                while Instant::now() < deadline {
                    let (url, body) = request(client, i);
                    let t = Instant::now();
                    let ok = agent
                        .post(&url)
                        .header("content-type", "application/json")
                        .send(body)
                        .map(|mut r| r.status() == 200 && r.body_mut().read_to_vec().is_ok())
                        .unwrap_or(false);
                    latencies.push(t.elapsed());
                    errors += usize::from(!ok);
                    i += 1;
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for t in threads {
        let (l, e) = t.join().expect("client thread");
        latencies.extend(l);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Row {
        release_delay_ms: None,
        release: String::new(),
        workload: name.to_string(),
        actors,
        requests: latencies.len(),
        errors,
        requests_per_sec: latencies.len() as f64 / secs,
        p50_ms: quantile_ms(&latencies, 0.5),
        p99_ms: quantile_ms(&latencies, 0.99),
        vs_off: None,
    }
}

fn start_server(
    dir: &std::path::Path,
    release: ReleaseDelay,
) -> Result<(String, std::thread::JoinHandle<()>, tokio::sync::oneshot::Sender<()>), String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let url = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    let store = FjallStore::open(FjallConfig::new(dir)).map_err(|e| e.to_string())?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
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
    Ok((url, thread, tx))
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

pub fn run(args: &HttpArgs) -> Result<(), String> {
    let mut rows = Vec::new();
    for delay in &args.release_delays_ms {
        rows.extend(run_server(args, *delay)?);
    }
    let ratios: Vec<_> = rows.iter().map(|r| vs_off(&rows, r)).collect();
    for (row, ratio) in rows.iter_mut().zip(ratios) {
        row.vs_off = ratio;
    }
    print_rows(args, &rows);
    let report = json!({"clients": args.clients, "duration_s": args.duration_s, "results": rows});
    write_results(&args.json, &report).map_err(|e| e.to_string())?;
    Ok(())
}

/// The four workloads against one server that releases idle memory per `release`.
fn run_server(args: &HttpArgs, release: ReleaseDelay) -> Result<Vec<Row>, String> {
    let dir = scratch_dir(args.data.as_deref(), "roost-bench-http-").map_err(|e| e.to_string())?;
    let (url, server, stop) = start_server(dir.path(), release)?;
    setup(&url, args.actors.max(1))?;
    let many = args.actors.max(1);
    let read = |actors: usize| {
        let url = url.clone();
        Arc::new(move |client: usize, i: usize| {
            let actor = (client * 7919 + i) % actors;
            let body =
                json!({"sql": "SELECT v FROM kv WHERE id = ?", "params": [(i % 100) as i64 + 1]}).to_string();
            (format!("{url}/v1/actors/a-{actor:05}/query"), body)
        }) as Arc<dyn Fn(usize, usize) -> (String, String) + Send + Sync>
    };
    let write = |actors: usize| {
        let url = url.clone();
        Arc::new(move |client: usize, i: usize| {
            let actor = (client * 7919 + i) % actors;
            let body = json!({"sql": "INSERT INTO kv(v) VALUES (?)", "params": [format!("c{client}-{i}")]})
                .to_string();
            (format!("{url}/v1/actors/a-{actor:05}/query"), body)
        }) as Arc<dyn Fn(usize, usize) -> (String, String) + Send + Sync>
    };
    let mut rows = vec![
        load(args, "read", 1, read(1)),
        load(args, "write", 1, write(1)),
        load(args, "read", many, read(many)),
        load(args, "write", many, write(many)),
    ];
    for row in &mut rows {
        row.release_delay_ms = release.delay_ms();
        row.release = release.to_string();
    }
    let _ = stop.send(());
    let _ = server.join();
    Ok(rows)
}

fn print_rows(args: &HttpArgs, rows: &[Row]) {
    println!(
        "roost bench http: {} client threads, {} s per workload, loopback, embedded store (sync durability)\n",
        args.clients, args.duration_s
    );
    println!(
        "{:>9} {:<8} {:>7} {:>10} {:>7} {:>12} {:>9} {:>9} {:>7}",
        "release", "workload", "actors", "requests", "errors", "requests/s", "p50 ms", "p99 ms", "vs off"
    );
    for r in rows {
        println!(
            "{:>9} {:<8} {:>7} {:>10} {:>7} {:>12.0} {:>9.2} {:>9.2} {:>7}",
            r.release,
            r.workload,
            r.actors,
            r.requests,
            r.errors,
            r.requests_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.vs_off.map_or("-".to_string(), |ratio| format!("{ratio:.3}x"))
        );
    }
    println!("\nvs off: requests/s against the same workload on the server that never releases");
}

/// `row`'s requests/s over the same workload's on the server that never releases idle memory.
fn vs_off(rows: &[Row], row: &Row) -> Option<f64> {
    let off = rows
        .iter()
        .find(|o| o.release_delay_ms.is_none() && o.workload == row.workload && o.actors == row.actors)?;
    (off.requests_per_sec > 0.0).then(|| row.requests_per_sec / off.requests_per_sec)
}
