//! `roost bench load`: many requests across many actors, sent as fast as the clients can, at
//! `roost serve` under a small memory budget. Every request must either succeed or be answered
//! `overloaded` with `Retry-After`; clients that honour it (sleeping a jittered Retry-After, then
//! retrying) must all finish; the server's RSS, sampled from outside, must stay within the
//! budget plus 10%.
//!
//! The server is this binary's `serve` in a child process (so its RSS is its own), on a scratch
//! data folder. Each request is a one-row write batch (`CREATE TABLE IF NOT EXISTS` plus an
//! `INSERT`) to actor `load-<n>`: with as many actors as requests, every request wakes a new
//! actor and creates its database.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rand::Rng;
use serde::Serialize;
use serde_json::json;

use crate::bytes::parse_bytes;
use crate::common::{free_port, mib, scratch_dir, start_server, write_results};

/// Arguments of `roost bench load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Requests to send in all.
    #[arg(long, default_value_t = 100_000)]
    pub requests: usize,
    /// Actors they are spread over (request i goes to actor i mod N).
    #[arg(long, default_value_t = 100_000)]
    pub actors: usize,
    /// Client threads, each sending its next request as soon as the last one was answered.
    #[arg(long, default_value_t = 256)]
    pub clients: usize,
    /// The server's --memory-budget.
    #[arg(long, default_value = "256MiB", value_parser = parse_bytes)]
    pub memory_budget: u64,
    /// Attempts per request before the client gives up (each `overloaded` costs one).
    #[arg(long, default_value_t = 1_000)]
    pub attempts_max: u32,
    #[arg(long, default_value = "bench-load.json")]
    pub json: PathBuf,
    /// Folder for the scratch data folder [default: system temp dir].
    #[arg(long)]
    pub data: Option<PathBuf>,
}

/// What the run measured (also the JSON report).
#[derive(Debug, Default, Serialize)]
struct Report {
    requests: usize,
    actors: usize,
    clients: usize,
    budget_bytes: u64,
    completed: usize,
    overloaded_answers: u64,
    overloaded_without_retry_after: u64,
    other_errors: u64,
    gave_up: u64,
    attempts_max_seen: u64,
    duration_s: f64,
    completed_per_sec: f64,
    rss_peak_bytes: u64,
    rss_peak_to_budget: f64,
    within_budget_plus_10_percent: bool,
}

#[derive(Default)]
struct Counters {
    completed: AtomicUsize,
    overloaded: AtomicU64,
    no_retry_after: AtomicU64,
    other_errors: AtomicU64,
    gave_up: AtomicU64,
    attempts_max_seen: AtomicU64,
}

/// Samples the server's RSS every 20 ms until `done`; returns the highest sample.
fn sample_rss(pid: u32, done: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !done.load(Ordering::Relaxed) {
            peak = peak.max(roost::host::process_memory_of(pid).map_or(0, |m| m.rss_bytes));
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    })
}

/// Sends request `i` until it succeeds, waiting between one and two times `Retry-After` after
/// each `overloaded`.
fn send(agent: &ureq::Agent, url: &str, i: usize, attempts_max: u32, counters: &Counters) {
    let body = json!({"statements": [
        {"sql": "CREATE TABLE IF NOT EXISTS t(i INTEGER)"},
        {"sql": "INSERT INTO t VALUES (?)", "params": [i as i64]},
    ], "transaction": true});
    for attempt in 1..=attempts_max {
        counters.attempts_max_seen.fetch_max(u64::from(attempt), Ordering::Relaxed);
        let answer = agent.post(url).send_json(&body);
        let retry_after_s = match answer {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let retry_after: Option<u64> =
                    response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
                let _ = response.body_mut().read_to_vec();
                match (status, retry_after) {
                    (200, _) => {
                        counters.completed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    (503, Some(seconds)) => {
                        counters.overloaded.fetch_add(1, Ordering::Relaxed);
                        seconds
                    }
                    (503, None) => {
                        counters.no_retry_after.fetch_add(1, Ordering::Relaxed);
                        1u64
                    }
                    _ => {
                        counters.other_errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
            Err(_) => {
                counters.other_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        // Honour the hint, with jitter on top so that refused clients do not return together.
        let hint_ms = retry_after_s.max(1) * 1000;
        let wait_ms = hint_ms + rand::rng().random_range(0..=hint_ms);
        std::thread::sleep(Duration::from_millis(wait_ms));
    }
    counters.gave_up.fetch_add(1, Ordering::Relaxed);
}

fn drive(args: &LoadArgs, base: &str, counters: &Arc<Counters>) {
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..args.clients.max(1))
        .map(|_| {
            let (next, counters, base) = (next.clone(), counters.clone(), base.to_string());
            let (requests, actors, attempts_max) = (args.requests, args.actors.max(1), args.attempts_max);
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(120)))
                    .build()
                    .into();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        return;
                    }
                    let url = format!("{base}/v1/actors/load-{}/batch", i % actors);
                    send(&agent, &url, i, attempts_max, &counters);
                }
            })
        })
        .collect();
    for client in clients {
        let _ = client.join();
    }
}

pub fn run(args: &LoadArgs) -> Result<(), String> {
    let dir = scratch_dir(args.data.as_deref(), "roost-bench-load-").map_err(|e| e.to_string())?;
    let port = free_port()?;
    let mut server = start_server(&dir.path().join("data"), port, args.memory_budget)?;
    let done = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(server.id(), done.clone());
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    drive(args, &format!("http://127.0.0.1:{port}"), &counters);
    let duration_s = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let rss_peak_bytes = sampler.join().unwrap_or(0);
    let _ = server.kill();
    let _ = server.wait();
    let report = report(args, &counters, duration_s, rss_peak_bytes);
    print(&report);
    write_results(&args.json, &report).map_err(|e| e.to_string())?;
    Ok(())
}

fn report(args: &LoadArgs, c: &Counters, duration_s: f64, rss_peak_bytes: u64) -> Report {
    let completed = c.completed.load(Ordering::Relaxed);
    let ratio = rss_peak_bytes as f64 / args.memory_budget as f64;
    Report {
        requests: args.requests,
        actors: args.actors,
        clients: args.clients,
        budget_bytes: args.memory_budget,
        completed,
        overloaded_answers: c.overloaded.load(Ordering::Relaxed),
        overloaded_without_retry_after: c.no_retry_after.load(Ordering::Relaxed),
        other_errors: c.other_errors.load(Ordering::Relaxed),
        gave_up: c.gave_up.load(Ordering::Relaxed),
        attempts_max_seen: c.attempts_max_seen.load(Ordering::Relaxed),
        duration_s,
        completed_per_sec: completed as f64 / duration_s.max(1e-9),
        rss_peak_bytes,
        rss_peak_to_budget: ratio,
        within_budget_plus_10_percent: ratio <= 1.1,
    }
}

fn print(r: &Report) {
    println!(
        "roost bench load: {} requests over {} actors from {} clients, --memory-budget {:.0} MiB\n",
        r.requests,
        r.actors,
        r.clients,
        mib(r.budget_bytes)
    );
    println!("{:<34} {:>14}", "figure", "value");
    let rows: [(&str, String); 10] = [
        ("completed", r.completed.to_string()),
        ("overloaded answers (Retry-After)", r.overloaded_answers.to_string()),
        ("503 without Retry-After", r.overloaded_without_retry_after.to_string()),
        ("other errors", r.other_errors.to_string()),
        ("gave up", r.gave_up.to_string()),
        ("most attempts for one request", r.attempts_max_seen.to_string()),
        ("duration s", format!("{:.1}", r.duration_s)),
        ("completed/s", format!("{:.0}", r.completed_per_sec)),
        ("server peak RSS MiB", format!("{:.1}", mib(r.rss_peak_bytes))),
        ("peak RSS / budget", format!("{:.3}", r.rss_peak_to_budget)),
    ];
    for (name, value) in rows {
        println!("{name:<34} {value:>14}");
    }
}
