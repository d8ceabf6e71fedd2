//! `roost bench cluster`: nodes on PostgreSQL beside the embedded store, in one run.
//!
//! Every figure comes from `roost serve` processes of this binary on loopback, driven over
//! HTTP: wake latency of a sleeping actor (the first point query after `POST /sleep`) and the
//! store round trips it took (from `/metrics`), by database size; durable one-row commits/s
//! over many actors with concurrent clients on the embedded store, one PostgreSQL node, and
//! three nodes (clients sending to a random node, so two requests in three are forwarded, and
//! clients sending to the node that answered last time); the latency a forward adds; the time
//! until another node serves an actor after its owner got `kill -9` or `SIGTERM` (beside the
//! time an embedded server takes to restart after `kill -9`). PostgreSQL gets a fresh database
//! per configuration, dropped afterwards.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use roost::kv::testing::TestDatabase;
use serde::Serialize;
use serde_json::{json, Value};

use crate::common::{quantile_ms, scratch_dir, write_json};

/// Arguments of `roost bench cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// PostgreSQL server to create the benchmark's databases on (its default database).
    #[arg(long, env = "ROOST_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub postgres_url: String,
    /// Database sizes of the wake benchmark, in KiB.
    #[arg(long, value_delimiter = ',', default_value = "64,1024,10240")]
    pub wake_sizes_kib: Vec<u64>,
    /// Wakes measured per size.
    #[arg(long, default_value_t = 100)]
    pub wakes: usize,
    /// Actors of the commit benchmark.
    #[arg(long, default_value_t = 1000)]
    pub actors: usize,
    /// Client threads of the commit benchmark.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Seconds per commit workload.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Lease of the nodes (failover after kill -9 waits for it).
    #[arg(long, default_value_t = 2_000)]
    pub lease_ms: u64,
    #[arg(long, default_value = "bench-cluster.json")]
    pub json: PathBuf,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    wake: Vec<WakeRow>,
    commits: Vec<CommitRow>,
    forwarding: Vec<LatencyRow>,
    failover: Vec<FailoverRow>,
}

#[derive(Debug, Serialize)]
struct WakeRow {
    store: &'static str,
    size_kib: u64,
    wakes: usize,
    wake_p50_ms: f64,
    wake_p99_ms: f64,
    awake_p50_ms: f64,
    store_calls_per_wake: f64,
}

#[derive(Debug, Serialize)]
struct CommitRow {
    setup: &'static str,
    actors: usize,
    clients: usize,
    commits: u64,
    errors: u64,
    commits_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Debug, Serialize)]
struct LatencyRow {
    path: &'static str,
    requests: usize,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Debug, Serialize)]
struct FailoverRow {
    event: &'static str,
    lease_ms: u64,
    serving_again_ms: f64,
}

/// A `roost serve` process; killed when dropped.
struct Node {
    child: Option<Child>,
    url: String,
    _data: tempfile::TempDir,
}

impl Node {
    /// A node on the embedded store, or on PostgreSQL (its shards, node id and lease).
    fn start(postgres: Option<(&[&str], &str, u64)>) -> Result<Self, String> {
        let port = crate::common::free_port()?;
        let data = scratch_dir(None, "roost-bench-cluster-").map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut command = Command::new(exe);
        command.args(["serve", "--data", &data.path().display().to_string()]).args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--memory-log-interval-s",
            "0",
        ]);
        if let Some((urls, node_id, lease_ms)) = postgres {
            command.args(["--store", "postgres", "--node-id", node_id]);
            for url in urls {
                command.args(["--postgres-url", url]);
            }
            command.args(["--lease-ms", &lease_ms.to_string(), "--postgres-connections-max", "32"]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start roost serve: {e}"))?;
        crate::common::wait_listening(port)?;
        Ok(Self { child: Some(child), url: format!("http://127.0.0.1:{port}"), _data: data })
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").args([signal, &child.id().to_string()]).status();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// POSTs JSON; answers the status and the node that served it.
fn post(agent: &ureq::Agent, url: &str, body: &Value) -> Result<(u16, Option<String>), String> {
    let mut answer = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body.to_string())
        .map_err(|e| e.to_string())?;
    let node = answer.headers().get("x-roost-node").and_then(|v| v.to_str().ok()).map(str::to_string);
    let status = answer.status().as_u16();
    let _ = answer.body_mut().read_to_vec();
    Ok((status, node))
}

fn sql(agent: &ureq::Agent, base: &str, actor: &str, sql: &str) -> Result<u16, String> {
    post(agent, &format!("{base}/v1/actors/{actor}/query"), &json!({"sql": sql})).map(|(s, _)| s)
}

fn must(agent: &ureq::Agent, base: &str, actor: &str, statement: &str) -> Result<(), String> {
    match sql(agent, base, actor, statement)? {
        200 => Ok(()),
        status => Err(format!("{actor}: {statement} answered {status}")),
    }
}

/// Store read and write calls so far, from `/metrics`.
fn store_calls(agent: &ureq::Agent, base: &str) -> Result<u64, String> {
    let text = agent
        .get(format!("{base}/metrics"))
        .call()
        .map_err(|e| e.to_string())?
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    let value =
        |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok()).unwrap_or(0);
    Ok(value("roost_store_read_calls_total ") + value("roost_store_write_calls_total "))
}

fn wake_row(store: &'static str, base: &str, size_kib: u64, wakes: usize) -> Result<WakeRow, String> {
    let agent = agent();
    let actors = 10;
    // One row of ~1 KiB (900 bytes and b-tree overhead) per KiB.
    let rows = size_kib.max(1);
    for a in 0..actors {
        let actor = format!("w{size_kib}-{a}");
        must(&agent, base, &actor, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")?;
        let fill = format!(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {rows}) \
             INSERT INTO t SELECT i, randomblob(900) FROM s"
        );
        must(&agent, base, &actor, &fill)?;
    }
    let point = "SELECT length(v) FROM t WHERE id = 7";
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    let calls_before = store_calls(&agent, base)?;
    for i in 0..wakes {
        let actor = format!("w{size_kib}-{}", i % actors);
        post(&agent, &format!("{base}/v1/actors/{actor}/sleep"), &json!({}))?;
        let started = Instant::now();
        must(&agent, base, &actor, point)?;
        cold.push(started.elapsed());
    }
    // Sleep requests cost no store calls; the wakes' reads and claims are what was counted.
    let calls = store_calls(&agent, base)? - calls_before;
    for i in 0..wakes {
        let started = Instant::now();
        must(&agent, base, &format!("w{size_kib}-{}", i % actors), point)?;
        warm.push(started.elapsed());
    }
    cold.sort();
    warm.sort();
    Ok(WakeRow {
        store,
        size_kib,
        wakes,
        wake_p50_ms: quantile_ms(&cold, 0.5),
        wake_p99_ms: quantile_ms(&cold, 0.99),
        awake_p50_ms: quantile_ms(&warm, 0.5),
        store_calls_per_wake: calls as f64 / wakes as f64,
    })
}

/// Closed-loop one-row commits over the actors for the duration, each client sending to a
/// random node, or with `owner_aware` to the node that answered for the actor last time.
fn commit_row(
    args: &ClusterArgs,
    setup: &'static str,
    nodes: &[String],
    owner_aware: bool,
) -> Result<CommitRow, String> {
    let client = agent();
    for a in 0..args.actors {
        let base = &nodes[a % nodes.len()];
        must(
            &client,
            base,
            &format!("c-{a}"),
            "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)",
        )?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (commits, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let owners: Arc<Mutex<HashMap<usize, String>>> = Arc::default();
    let names: Vec<String> = (0..nodes.len()).map(|i| format!("n{i}")).collect();
    let threads: Vec<_> = (0..args.clients)
        .map(|c| {
            let (stop, commits, errors, latencies) =
                (stop.clone(), commits.clone(), errors.clone(), latencies.clone());
            let (nodes, owners, names, actors) = (nodes.to_vec(), owners.clone(), names.clone(), args.actors);
            std::thread::spawn(move || {
                let agent = agent();
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let a = rand::random_range(0..actors);
                    let known = owner_aware.then(|| owners.lock().unwrap().get(&a).cloned()).flatten();
                    let index = known.and_then(|n| names.iter().position(|x| *x == n));
                    let base = &nodes[index.unwrap_or_else(|| rand::random_range(0..nodes.len()))];
                    let body =
                        json!({"sql": "INSERT INTO t(v) VALUES (?)", "params": [format!("client {c}")]});
                    let started = Instant::now();
                    match post(&agent, &format!("{base}/v1/actors/c-{a}/query"), &body) {
                        Ok((200, node)) => {
                            mine.push(started.elapsed());
                            commits.fetch_add(1, Ordering::Relaxed);
                            if let (true, Some(node)) = (owner_aware, node) {
                                owners.lock().unwrap().insert(a, node);
                            }
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                latencies.lock().unwrap().extend(mine);
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(args.duration_s));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
    latencies.sort();
    let commits = commits.load(Ordering::Relaxed);
    Ok(CommitRow {
        setup,
        actors: args.actors,
        clients: args.clients,
        commits,
        errors: errors.load(Ordering::Relaxed),
        commits_per_sec: commits as f64 / elapsed,
        p50_ms: quantile_ms(&latencies, 0.5),
        p99_ms: quantile_ms(&latencies, 0.99),
    })
}

/// Point reads of one awake actor owned by `nodes[0]`, sent to it and through `nodes[1]`.
fn forwarding_rows(nodes: &[String]) -> Result<Vec<LatencyRow>, String> {
    let agent = agent();
    must(&agent, &nodes[0], "fwd", "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")?;
    must(&agent, &nodes[0], "fwd", "INSERT OR REPLACE INTO t VALUES (1, 'x')")?;
    let mut rows = Vec::new();
    for (path, base) in [("to the owner", &nodes[0]), ("forwarded by another node", &nodes[1])] {
        let mut times = Vec::new();
        for _ in 0..1000 {
            let started = Instant::now();
            must(&agent, base, "fwd", "SELECT v FROM t WHERE id = 1")?;
            times.push(started.elapsed());
        }
        times.sort();
        rows.push(LatencyRow {
            path,
            requests: times.len(),
            p50_ms: quantile_ms(&times, 0.5),
            p99_ms: quantile_ms(&times, 0.99),
        });
    }
    Ok(rows)
}

/// Retries a point read on `base` until it succeeds; how long that took.
fn until_served(base: &str, actor: &str, since: Instant) -> Result<f64, String> {
    let agent = agent();
    loop {
        if sql(&agent, base, actor, "SELECT count(*) FROM t").is_ok_and(|s| s == 200) {
            return Ok(since.elapsed().as_secs_f64() * 1e3);
        }
        if since.elapsed() > Duration::from_secs(60) {
            return Err(format!("{actor} was not served again within 60 s"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn failover_rows(args: &ClusterArgs) -> Result<Vec<FailoverRow>, String> {
    let db = TestDatabase::create_on(&args.postgres_url, "bench_failover")?;
    let agent = agent();
    let mut rows = Vec::new();
    for (event, signal) in [("kill -9 of the owner", "-KILL"), ("SIGTERM of the owner", "-TERM")] {
        let owner = Node::start(Some((&[db.url.as_str()], "owner", args.lease_ms)))?;
        let other = Node::start(Some((&[db.url.as_str()], "other", args.lease_ms)))?;
        let actor = format!("f{}", signal.trim_start_matches('-').to_lowercase());
        must(&agent, &owner.url, &actor, "CREATE TABLE t(x)")?;
        let since = Instant::now();
        owner.signal(signal);
        rows.push(FailoverRow {
            event,
            lease_ms: args.lease_ms,
            serving_again_ms: until_served(&other.url, &actor, since)?,
        });
        drop((owner, other));
    }
    // The embedded store has one node: after kill -9 it serves again once restarted.
    let mut node = Node::start(None)?;
    must(&agent, &node.url, "e", "CREATE TABLE t(x)")?;
    let since = Instant::now();
    if let Some(mut child) = node.child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    node.child = Some(restart_embedded(&node)?);
    let serving_again_ms = until_served(&node.url, "e", since)?;
    rows.push(FailoverRow { event: "embedded: kill -9, then restart", lease_ms: 0, serving_again_ms });
    Ok(rows)
}

/// Starts `roost serve` again on the data folder and address of `old`.
fn restart_embedded(old: &Node) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let listen = old.url.trim_start_matches("http://");
    Command::new(exe)
        .args(["serve", "--data", &old._data.path().display().to_string(), "--listen", listen])
        .args(["--memory-log-interval-s", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start roost serve: {e}"))
}

pub fn run(args: &ClusterArgs) -> Result<(), String> {
    let mut report = Report::default();
    // Wakes, by size, embedded then PostgreSQL.
    {
        let embedded = Node::start(None)?;
        let db = TestDatabase::create_on(&args.postgres_url, "bench_wake")?;
        let pg = Node::start(Some((&[db.url.as_str()], "n0", args.lease_ms)))?;
        for size in &args.wake_sizes_kib {
            report.wake.push(wake_row("embedded", &embedded.url, *size, args.wakes)?);
            report.wake.push(wake_row("postgres", &pg.url, *size, args.wakes)?);
        }
    }
    // Commits: embedded, one PostgreSQL node, three nodes (random node; node that answered).
    {
        let embedded = Node::start(None)?;
        report.commits.push(commit_row(
            args,
            "embedded, 1 node",
            std::slice::from_ref(&embedded.url),
            false,
        )?);
    }
    {
        let db = TestDatabase::create_on(&args.postgres_url, "bench_commit1")?;
        let node = Node::start(Some((&[db.url.as_str()], "n0", args.lease_ms)))?;
        report.commits.push(commit_row(args, "postgres, 1 node", std::slice::from_ref(&node.url), false)?);
    }
    {
        let db = TestDatabase::create_on(&args.postgres_url, "bench_commit3")?;
        let nodes: Vec<Node> = (0..3)
            .map(|i| Node::start(Some((&[db.url.as_str()], &format!("n{i}"), args.lease_ms))))
            .collect::<Result<_, _>>()?;
        let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
        report.commits.push(commit_row(args, "postgres, 3 nodes, random node", &urls, false)?);
        report.commits.push(commit_row(args, "postgres, 3 nodes, owner-aware client", &urls, true)?);
        report.forwarding = forwarding_rows(&urls)?;
    }
    // Two shards (two databases of the same server): what placement and claims on the right
    // shard cost, not what a second server adds.
    {
        let shards = [
            TestDatabase::create_on(&args.postgres_url, "bench_shard_a")?,
            TestDatabase::create_on(&args.postgres_url, "bench_shard_b")?,
        ];
        let urls: Vec<&str> = shards.iter().map(|db| db.url.as_str()).collect();
        let nodes: Vec<Node> = (0..3)
            .map(|i| Node::start(Some((&urls, &format!("n{i}"), args.lease_ms))))
            .collect::<Result<_, _>>()?;
        let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
        report.commits.push(commit_row(args, "postgres, 3 nodes, 2 shards, owner-aware", &urls, true)?);
    }
    report.failover = failover_rows(args)?;
    print(&report);
    write_json(&args.json, &report).map_err(|e| e.to_string())?;
    println!("\nwrote {}", args.json.display());
    Ok(())
}

fn print(r: &Report) {
    println!("\nwake of a sleeping actor (first point query after POST /sleep)");
    println!(
        "{:<10} {:>9} {:>7} {:>10} {:>10} {:>11} {:>12}",
        "store", "size KiB", "wakes", "p50 ms", "p99 ms", "awake p50", "calls/wake"
    );
    for w in &r.wake {
        println!(
            "{:<10} {:>9} {:>7} {:>10.3} {:>10.3} {:>11.3} {:>12.1}",
            w.store,
            w.size_kib,
            w.wakes,
            w.wake_p50_ms,
            w.wake_p99_ms,
            w.awake_p50_ms,
            w.store_calls_per_wake
        );
    }
    println!("\ndurable one-row commits");
    println!(
        "{:<42} {:>7} {:>8} {:>9} {:>7} {:>10} {:>8} {:>8}",
        "setup", "actors", "clients", "commits", "errors", "commits/s", "p50 ms", "p99 ms"
    );
    for c in &r.commits {
        println!(
            "{:<42} {:>7} {:>8} {:>9} {:>7} {:>10.0} {:>8.2} {:>8.2}",
            c.setup, c.actors, c.clients, c.commits, c.errors, c.commits_per_sec, c.p50_ms, c.p99_ms
        );
    }
    println!("\npoint read of an awake actor");
    for f in &r.forwarding {
        println!(
            "{:<28} {:>6} requests  p50 {:>7.3} ms  p99 {:>7.3} ms",
            f.path, f.requests, f.p50_ms, f.p99_ms
        );
    }
    println!("\nfailover (until another node serves the actor)");
    for f in &r.failover {
        println!(
            "{:<34} lease {:>6} ms  serving again after {:>8.0} ms",
            f.event, f.lease_ms, f.serving_again_ms
        );
    }
}
