//! `roost serve`, `roost sql` and `roost mem-monitor` as a user runs them.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::{free_port, ROOST};

fn start(data: &std::path::Path, port: u16) -> Child {
    start_with(data, port, &[])
}

fn start_with(data: &std::path::Path, port: u16, extra: &[&str]) -> Child {
    support::serve(data, port, extra, Stdio::null())
}

fn stop(child: Child) {
    support::stop(child);
}

fn sql(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(ROOST).args(["sql", "--url", url]).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn serve_sql_and_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let server = start(dir.path(), port);
    assert!(sql(&url, &["notes", "CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT)"]).0);
    assert!(sql(&url, &["notes", "INSERT INTO t(body) VALUES (?)", "--param", "\"hello\""]).0);
    let (ok, table, _) = sql(&url, &["notes", "SELECT id, body FROM t"]);
    assert!(ok);
    assert!(table.starts_with("id | body\n---+------\n1  | hello\n"), "{table}");
    let (ok, out, _) = sql(&url, &["--json", "notes", "SELECT count(*) AS n FROM t"]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["rows"], serde_json::json!([[1]]));
    let (ok, _, err) = sql(&url, &["notes", "SELEC 1"]);
    assert!(!ok && err.contains("sql_error"), "{err}");
    let (ok, _, err) = sql(&url, &["../etc", "SELECT 1"]);
    assert!(!ok && err.contains("invalid_actor_id") || err.contains("not_found"), "{err}");

    // The monitor samples, sees a spike (any rise counts here) and writes its chart.
    let out = dir.path().join("monitor");
    let monitor = Command::new(ROOST)
        .args(["mem-monitor", "--url", &url, "--interval-ms", "200", "--duration-s", "2"])
        .args(["--spike-rise-percent", "0", "--out", out.to_str().unwrap()])
        .spawn()
        .unwrap();
    for i in 0..30 {
        sql(&url, &[&format!("wake-{i}"), "CREATE TABLE t(x)"]);
    }
    assert!(monitor.wait_with_output().unwrap().status.success());
    assert!(std::fs::read_to_string(out.join("chart.svg")).unwrap().starts_with("<svg"));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert!(summary["samples"].as_u64().unwrap() >= 5);

    stop(server);
    let server = start(dir.path(), port);
    let (ok, table, _) = sql(&url, &["notes", "SELECT body FROM t"]);
    assert!(ok && table.contains("hello"), "data survives a restart: {table}");
    stop(server);
}

#[test]
fn serve_refuses_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(ROOST)
        .args(["serve", "--data", dir.path().to_str().unwrap(), "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("without tokens"));
    let out = Command::new(ROOST).args(["serve", "--memory-budget", "12 parsecs"]).output().unwrap();
    assert!(!out.status.success());
    let out = Command::new(ROOST)
        .args(["serve", "--memory-budget", "8MiB", "--data", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("too small"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fetch(url: &str) -> (u16, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut response = agent.get(url).call().unwrap();
    (response.status().as_u16(), response.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap())
}

#[test]
fn heap_profiles_and_the_monitor_catch_a_wake_storm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let server = start_with(dir.path(), port, &["--heap-profile"]);
    let (status, profile) = fetch(&format!("{url}/debug/pprof/heap"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&profile));
    assert_eq!(&profile[..2], &[0x1f, 0x8b], "gzip");
    let path = dir.path().join("heap.pb.gz");
    std::fs::write(&path, &profile).unwrap();
    let unzipped = Command::new("gzip").args(["-dc", path.to_str().unwrap()]).output().unwrap();
    assert!(unzipped.status.success());
    assert!(unzipped.stdout.windows(11).any(|w| w == b"inuse_space"), "a pprof heap profile");
    let memory: serde_json::Value = serde_json::from_slice(&fetch(&format!("{url}/debug/memory")).1).unwrap();
    assert!(memory["allocator"]["resident_bytes"].as_u64().unwrap() > 1 << 20, "{memory}");

    let out = dir.path().join("monitor");
    let monitor = Command::new(ROOST)
        .args(["mem-monitor", "--url", &url, "--interval-ms", "100", "--duration-s", "4"])
        .args(["--spike-rise-percent", "20", "--spike-window-ms", "3000", "--out", out.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let storm: Vec<_> = (0..4)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                for i in 0..150 {
                    sql(&url, &[&format!("storm-{t}-{i}"), "CREATE TABLE t(x BLOB)"]);
                    sql(&url, &[&format!("storm-{t}-{i}"), "INSERT INTO t VALUES (randomblob(100000))"]);
                }
            })
        })
        .collect();
    for t in storm {
        t.join().unwrap();
    }
    assert!(monitor.wait_with_output().unwrap().status.success());
    let files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.iter().any(|f| f.starts_with("heap-") && f.ends_with(".pb.gz")), "{files:?}");
    assert!(files.iter().any(|f| f.starts_with("memory-")), "{files:?}");
    assert!(files.contains(&"chart.svg".to_string()));
    stop(server);
}

#[test]
fn bench_http_interleaves_its_servers_on_four_workloads() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = Command::new(ROOST)
        .args(["bench", "http", "--clients", "2", "--rounds", "2", "--slice-ms", "300", "--warmup-ms", "100"])
        .args(["--actors", "5", "--json", json.to_str().unwrap(), "--data", dir.path().to_str().unwrap()])
        .args(["--release-delays-ms", "off,1000,0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 12, "every server on each of the four workloads");
    let delays: Vec<_> = results.iter().map(|r| r["release_delay_ms"].as_u64()).collect();
    assert_eq!(delays, [None, Some(1000), Some(0)].repeat(4));
    for r in results {
        assert_eq!(r["errors"], serde_json::json!(0), "{r}");
        assert!(r["requests_per_sec"].as_f64().unwrap() > 0.0);
        assert_eq!(r["slice_requests_per_sec"].as_array().unwrap().len(), 2, "one slice per round: {r}");
        let ratio = &r["vs_off"];
        let (low, mean, high) =
            (ratio["ci95_low"].as_f64(), ratio["geo_mean"].as_f64(), ratio["ci95_high"].as_f64());
        assert!(low.unwrap() <= mean.unwrap() && mean.unwrap() <= high.unwrap() && low.unwrap() > 0.0, "{r}");
    }
    let reference = &results[0];
    assert_eq!(reference["vs_off"]["geo_mean"], serde_json::json!(1.0), "the reference against itself");

    let bad = Command::new(ROOST)
        .args(["bench", "http", "--slice-ms", "100", "--warmup-ms", "100"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--warmup-ms"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// The server's RSS and jemalloc's live bytes.
fn rss(url: &str) -> (u64, u64) {
    let memory: serde_json::Value = serde_json::from_slice(&fetch(&format!("{url}/debug/memory")).1).unwrap();
    (
        memory["process"]["rss_bytes"].as_u64().unwrap(),
        memory["allocator"]["allocated_bytes"].as_u64().unwrap(),
    )
}

#[test]
fn rss_grows_when_a_thousand_actors_wake_and_falls_when_they_sleep() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    // Short decay so that jemalloc returns freed pages within the test, not after 10 s.
    let child = Command::new(ROOST)
        .args(["serve", "--data", dir.path().to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .env("MALLOC_CONF", "dirty_decay_ms:50,muzzy_decay_ms:50")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = KillOnDrop(Some(child));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let base = rss(&url);
    let body = serde_json::json!({"statements": [{"sql": "CREATE TABLE t(x)"},
        {"sql": "INSERT INTO t VALUES (randomblob(100))"}], "transaction": true});
    for i in 0..1000 {
        let status =
            agent.post(&format!("{url}/v1/actors/r-{i:04}/batch")).send_json(&body).unwrap().status();
        assert_eq!(status, 200);
    }
    let awake = rss(&url);
    assert!(awake.0 > base.0 + (8 << 20), "rss {base:?} -> {awake:?} after 1,000 wakes");
    for i in 0..1000 {
        agent.post(&format!("{url}/v1/actors/r-{i:04}/sleep")).send_empty().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut asleep = rss(&url);
    // SQLite frees every connection, so the live bytes fall by at least half of what the wakes
    // added; the store's memtables (the 1,000 new databases) stay. RSS falls less, and by an
    // amount that depends on the machine's load: pages that still hold a live allocation (a
    // memtable entry beside a freed connection) cannot go back (measured under load in CI:
    // 24 -> 62.5 -> 58 MiB), so RSS only has to fall.
    let fallen = |now: (u64, u64)| now.1 <= awake.1 - (awake.1 - base.1) / 2 && now.0 < awake.0;
    while !fallen(asleep) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        asleep = rss(&url);
    }
    assert!(fallen(asleep), "(rss, live) {base:?} -> {awake:?} -> {asleep:?}: did not fall after sleeping");
    stop(child.take());
}

/// Kills the server if the test fails before stopping it.
struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    fn take(mut self) -> Child {
        self.0.take().expect("running")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
