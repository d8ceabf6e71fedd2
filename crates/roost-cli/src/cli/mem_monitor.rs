//! `roost mem-monitor`: samples a server's `/debug/memory`, detects spikes, saves a heap
//! profile and the memory snapshot on each spike (rate-limited), prints a line per sample and,
//! on exit, writes a summary and an SVG chart of RSS and its parts against the budget, with
//! every detected spike marked (captured or not).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde::Serialize;
use serde_json::{json, Value};

use roost_bench::bytes::parse_bytes;
use roost_bench::chart::{self, Frame};
use roost_bench::common::mib;

#[derive(Debug, Args)]
pub struct MemMonitorArgs {
    /// Server URL.
    #[arg(long, env = "ROOST_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Admin token (debug endpoints need it when the server has tokens).
    #[arg(long, env = "ROOST_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Time between samples.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// A spike: RSS above this (e.g. 1GiB).
    #[arg(long, value_parser = parse_bytes)]
    pub spike_rss: Option<u64>,
    /// A spike: RSS rising more than this percentage within `--spike-window-ms`.
    #[arg(long, default_value_t = 50.0)]
    pub spike_rise_percent: f64,
    #[arg(long, default_value_t = 10_000)]
    pub spike_window_ms: u64,
    /// Fewest milliseconds between two captures.
    #[arg(long, default_value_t = 30_000)]
    pub capture_interval_ms: u64,
    /// Folder for captures, the summary and the chart.
    #[arg(long, default_value = "roost-mem-monitor")]
    pub out: PathBuf,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration_s: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
struct Sample {
    t_ms: u64,
    rss: u64,
    sqlite: u64,
    page_cache: u64,
    store: u64,
    allocator_resident: u64,
    awake: u64,
    budget: u64,
    /// What the budget's pools hold: RSS above it is memory no pool explains.
    pools: u64,
}

impl Sample {
    fn from_memory(t_ms: u64, m: &Value) -> Self {
        let u = |v: &Value| v.as_u64().unwrap_or(0);
        Self {
            t_ms,
            rss: u(&m["process"]["rss_bytes"]),
            sqlite: u(&m["sqlite"]["used_bytes"]),
            page_cache: u(&m["sqlite"]["page_cache_bytes"]),
            store: u(&m["store"]["cache_bytes"]) + u(&m["store"]["write_buffer_bytes"]),
            allocator_resident: u(&m["allocator"]["resident_bytes"]),
            awake: u(&m["actors"]["awake"]),
            budget: u(&m["budget"]["budget_bytes"]),
            pools: m["budget"]["pools"].as_array().into_iter().flatten().map(|p| u(&p["bytes_used"])).sum(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Spike {
    t_ms: u64,
    rss: u64,
    reason: String,
    /// False when the spike came too soon after the last capture: it is still charted.
    captured: bool,
    profile: Option<String>,
    snapshot: Option<String>,
}

struct Monitor<'a> {
    args: &'a MemMonitorArgs,
    agent: ureq::Agent,
    samples: Vec<Sample>,
    spikes: Vec<Spike>,
    last_capture: Option<Instant>,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Monitor<'_> {
    fn fetch(&self, path: &str) -> Result<(u16, Vec<u8>), String> {
        let url = format!("{}{path}", self.args.url.trim_end_matches('/'));
        let mut request = self.agent.get(&url);
        if let Some(token) = &self.args.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let mut response = request.call().map_err(|e| format!("cannot reach {url}: {e}"))?;
        let status = response.status().as_u16();
        let body =
            response.body_mut().with_config().limit(256 << 20).read_to_vec().map_err(|e| e.to_string())?;
        Ok((status, body))
    }

    fn spike_reason(&self, sample: &Sample) -> Option<String> {
        if let Some(limit) = self.args.spike_rss.filter(|l| sample.rss > *l) {
            return Some(format!("rss {:.1} MiB above {:.1} MiB", mib(sample.rss), mib(limit)));
        }
        let window_start = sample.t_ms.saturating_sub(self.args.spike_window_ms);
        let low = self.samples.iter().filter(|s| s.t_ms >= window_start).map(|s| s.rss).min()?;
        let rise = (sample.rss as f64 - low as f64) / low.max(1) as f64 * 100.0;
        (rise > self.args.spike_rise_percent)
            .then(|| format!("rss rose {rise:.0}% within {} ms", self.args.spike_window_ms))
    }

    fn capture(&mut self, sample: &Sample, reason: String, memory: &Value) -> Result<(), String> {
        let stamp = unix_ms();
        let snapshot = format!("memory-{stamp}.json");
        std::fs::write(self.args.out.join(&snapshot), serde_json::to_vec_pretty(memory).expect("JSON"))
            .map_err(|e| e.to_string())?;
        let profile = match self.fetch("/debug/pprof/heap")? {
            (200, bytes) => {
                let name = format!("heap-{stamp}.pb.gz");
                std::fs::write(self.args.out.join(&name), bytes).map_err(|e| e.to_string())?;
                Some(name)
            }
            (status, body) => {
                eprintln!("heap profile unavailable ({status}): {}", String::from_utf8_lossy(&body));
                None
            }
        };
        println!(
            "SPIKE at {} ms: {reason}; saved {snapshot} {}",
            sample.t_ms,
            profile.as_deref().unwrap_or("(no profile)")
        );
        let snapshot = Some(snapshot);
        self.spikes.push(Spike {
            t_ms: sample.t_ms,
            rss: sample.rss,
            reason,
            captured: true,
            profile,
            snapshot,
        });
        self.last_capture = Some(Instant::now());
        Ok(())
    }

    fn step(&mut self, t_ms: u64) -> Result<(), String> {
        let (status, body) = self.fetch("/debug/memory")?;
        if status != 200 {
            return Err(format!("/debug/memory answered {status}: {}", String::from_utf8_lossy(&body)));
        }
        let memory: Value =
            serde_json::from_slice(&body).map_err(|e| format!("/debug/memory is not JSON: {e}"))?;
        let sample = Sample::from_memory(t_ms, &memory);
        println!(
            "{:>8} ms  rss {:>8.1} MiB  sqlite {:>7.1} MiB  page cache {:>7.1} MiB  store {:>6.1} MiB  awake {}",
            t_ms, mib(sample.rss), mib(sample.sqlite), mib(sample.page_cache), mib(sample.store), sample.awake
        );
        let reason = self.spike_reason(&sample);
        let allowed = self
            .last_capture
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(self.args.capture_interval_ms));
        match (reason, allowed) {
            (Some(reason), true) => self.capture(&sample, reason, &memory)?,
            (Some(reason), false) => {
                println!(
                    "SPIKE at {} ms: {reason}; not captured (too soon after the last capture)",
                    sample.t_ms
                );
                let (t_ms, rss) = (sample.t_ms, sample.rss);
                self.spikes.push(Spike { t_ms, rss, reason, captured: false, profile: None, snapshot: None });
            }
            (None, _) => {}
        }
        self.samples.push(sample);
        Ok(())
    }
}

pub fn run(args: &MemMonitorArgs) -> Result<(), String> {
    std::fs::create_dir_all(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc_flag(flag);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut monitor = Monitor { args, agent, samples: Vec::new(), spikes: Vec::new(), last_capture: None };
    let started = Instant::now();
    let deadline = args.duration_s.map(|s| started + Duration::from_secs(s));
    while !stop.load(Ordering::SeqCst) && deadline.is_none_or(|d| Instant::now() < d) {
        let tick = Instant::now();
        if let Err(e) = monitor.step(started.elapsed().as_millis() as u64) {
            eprintln!("sample failed: {e}");
        }
        std::thread::sleep(Duration::from_millis(args.interval_ms).saturating_sub(tick.elapsed()));
    }
    finish(&monitor, &args.out)
}

/// Sets `flag` on Ctrl-C (SIGINT) by polling a tokio signal on a helper thread.
fn ctrlc_flag(flag: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        runtime.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
        flag.store(true, Ordering::SeqCst);
    });
}

fn finish(monitor: &Monitor<'_>, out: &Path) -> Result<(), String> {
    let max_rss = monitor.samples.iter().map(|s| s.rss).max().unwrap_or(0);
    let summary = json!({
        "samples": monitor.samples.len(),
        "rss_max_bytes": max_rss,
        "rss_first_bytes": monitor.samples.first().map(|s| s.rss),
        "rss_last_bytes": monitor.samples.last().map(|s| s.rss),
        "spikes": monitor.spikes,
        "series": monitor.samples,
    });
    let write = |name: &str, bytes: Vec<u8>| {
        std::fs::write(out.join(name), bytes).map_err(|e| format!("cannot write {name}: {e}"))
    };
    write("summary.json", serde_json::to_vec_pretty(&summary).expect("JSON"))?;
    write("chart.svg", chart(&monitor.samples, &monitor.spikes).into_bytes())?;
    println!(
        "{} samples, max rss {:.1} MiB, {} spikes; summary.json and chart.svg in {}",
        monitor.samples.len(),
        mib(max_rss),
        monitor.spikes.len(),
        out.display()
    );
    Ok(())
}

/// A chart line: its name, colour and value.
type Series = (&'static str, &'static str, fn(&Sample) -> u64);

/// RSS above the pools (what no pool explains) as a grey band between the two.
fn unexplained_band(f: &Frame, samples: &[Sample]) -> String {
    let top = samples.iter().map(|s| format!("{:.1},{:.1}", f.x(s.t_ms), f.y(s.rss)));
    let floor = samples.iter().rev().map(|s| format!("{:.1},{:.1}", f.x(s.t_ms), f.y(s.pools.min(s.rss))));
    let points: Vec<String> = top.chain(floor).collect();
    format!(
        "<polygon class=\"unexplained\" fill=\"#bbb\" fill-opacity=\"0.6\" points=\"{}\"/>\n",
        points.join(" ")
    )
}

/// A vertical line on every detected spike: red when captured, dashed light red when not.
fn spike_marks(f: &Frame, spikes: &[Spike]) -> String {
    let mut svg = String::new();
    for spike in spikes {
        let (x, (color, dash)) =
            (f.x(spike.t_ms), if spike.captured { ("red", "none") } else { ("#f08080", "4 3") });
        svg += &format!(
            "<line class=\"spike\" data-captured=\"{}\" x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" \
             stroke=\"{color}\" stroke-dasharray=\"{dash}\"/>\n",
            spike.captured, f.top, f.bottom
        );
    }
    svg
}

/// An SVG chart of RSS and its parts over time against the budget, with the memory no pool
/// explains as a band and every spike marked.
fn chart(samples: &[Sample], spikes: &[Spike]) -> String {
    let (w, h) = (900.0_f64, 420.0_f64);
    let budget = samples.last().map_or(0, |s| s.budget);
    let y_max =
        samples.iter().map(|s| s.rss.max(s.sqlite).max(s.pools)).max().unwrap_or(0).max(budget).max(1 << 20);
    let t_max = samples.last().map_or(1, |s| s.t_ms.max(1)) as f64;
    let f = Frame {
        left: 80.0,
        right: w - 150.0,
        top: 20.0,
        bottom: h - 50.0,
        t_max,
        y_max: y_max as f64 * 1.05,
    };
    let mut svg = chart::open(w, h);
    svg += &chart::axes(&f);
    svg += &unexplained_band(&f, samples);
    svg += &chart::budget_line(&f, budget);
    svg += &spike_marks(&f, spikes);
    let series: [Series; 4] = [
        ("rss", "#1f77b4", |s| s.rss),
        ("sqlite", "#2ca02c", |s| s.sqlite),
        ("page cache", "#9467bd", |s| s.page_cache),
        ("store", "#ff7f0e", |s| s.store),
    ];
    for (name, color, value) in series {
        svg += &chart::polyline(name, color, samples.iter().map(|s| (f.x(s.t_ms), f.y(value(s)))));
    }
    svg + &chart::legend(f.right + 10.0, f.top, &LEGEND) + "</svg>\n"
}

const LEGEND: [(&str, &str); 8] = [
    ("rss", "#1f77b4"),
    ("sqlite", "#2ca02c"),
    ("page cache", "#9467bd"),
    ("store", "#ff7f0e"),
    ("unexplained", "#bbb"),
    ("budget", "#d62728"),
    ("spike, captured", "red"),
    ("spike, not captured", "#f08080"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_ms: u64, rss: u64) -> Sample {
        let (page_cache, store, allocator_resident, awake) = (0, 0, 0, 0);
        Sample {
            t_ms,
            rss,
            sqlite: rss / 2,
            page_cache,
            store,
            allocator_resident,
            awake,
            budget: 100 << 20,
            pools: 5 << 20,
        }
    }

    fn spike(t_ms: u64, captured: bool) -> Spike {
        let snapshot = captured.then(|| "s".to_string());
        Spike { t_ms, rss: 80 << 20, reason: "x".into(), captured, profile: None, snapshot }
    }

    #[test]
    fn chart_has_axes_budget_band_and_every_spike() {
        let samples =
            vec![sample(0, 10 << 20), sample(1000, 80 << 20), sample(2000, 90 << 20), sample(3000, 20 << 20)];
        let spikes = vec![spike(1000, true), spike(2000, false), spike(3000, false)];
        let svg = chart(&samples, &spikes);
        assert!(svg.starts_with("<svg") && svg.contains("data-series=\"rss\""));
        assert_eq!(svg.matches("class=\"spike\"").count(), 3, "one mark per spike");
        assert_eq!(svg.matches("data-captured=\"false\"").count(), 2);
        assert_eq!(svg.matches("class=\"budget\"").count(), 1);
        let budget_y = Frame {
            left: 80.0,
            right: 750.0,
            top: 20.0,
            bottom: 370.0,
            t_max: 3000.0,
            y_max: (100u64 << 20) as f64 * 1.05,
        }
        .y(100 << 20);
        assert!(svg.contains(&format!("class=\"budget\" x1=\"80\" y1=\"{budget_y:.1}\"")), "{svg}");
        assert!(svg.contains("class=\"unexplained\""));
        assert!(svg.contains(">100 MiB</text>") && svg.contains(">0 MiB</text>"), "MiB ticks: {svg}");
        assert!(svg.contains(">3 s</text>") && svg.contains(">0 s</text>"), "time ticks: {svg}");
        assert!(svg.matches("class=\"tick\"").count() >= 8);
        assert!(svg.contains("memory (MiB)") && svg.contains("time (s)"));
    }
}
