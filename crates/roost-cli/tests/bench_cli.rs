//! Runs the built `roost` binary: `--help` and a small `bench storage`.

use std::process::Command;

use serde_json::Value;

const ENGINES: [&str; 3] = ["roost-fjall", "sqlite-wal-full", "sqlite-wal-normal"];
const WORKLOADS: [&str; 4] = ["point_read", "range_scan", "commit_1row", "txn_100rows"];

fn roost() -> Command {
    Command::new(env!("CARGO_BIN_EXE_roost"))
}

#[test]
fn help_lists_the_bench_command() {
    let out = roost().arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("bench"));
}

fn result<'a>(results: &'a [Value], engine: &str, workload: &str) -> &'a Value {
    results
        .iter()
        .find(|r| r["engine"] == engine && r["workload"] == workload)
        .unwrap_or_else(|| panic!("no result for {engine} {workload}"))
}

#[test]
fn bench_storage_prints_a_table_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let out = roost()
        .args(["bench", "storage", "--rows", "200", "--ops", "50", "--json"])
        .arg(&json)
        .arg("--data")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("ops/s") && stdout.contains("p99 us"), "{stdout}");
    for name in ENGINES.iter().chain(&WORKLOADS) {
        assert!(stdout.contains(name), "{name} missing from:\n{stdout}");
    }

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), ENGINES.len() * WORKLOADS.len());
    for engine in ENGINES {
        for workload in WORKLOADS {
            let ops_per_sec = result(results, engine, workload)["ops_per_sec"].as_f64().unwrap();
            assert!(ops_per_sec > 0.0, "{engine} {workload}: {ops_per_sec}");
        }
    }
    // Durable commits reach the disk; CPU time is only checked for presence (10 ms ticks).
    for engine in ENGINES {
        let commit = result(results, engine, "commit_1row");
        assert!(commit["write_bytes_per_op"].as_f64().unwrap() > 0.0, "{engine}: {commit}");
        assert!(commit["cpu_us_per_op"].as_f64().unwrap() >= 0.0, "{engine}: {commit}");
    }
    let writes = result(results, "roost-fjall", "commit_1row")["store_writes_per_commit"].as_f64().unwrap();
    assert!((0.9..=1.5).contains(&writes), "store writes per commit: {writes}");
    let leftovers = std::fs::read_dir(dir.path().join("data")).unwrap().count();
    assert_eq!(leftovers, 0, "the scratch data was not removed");
}

#[test]
fn bench_load_stays_in_budget_and_every_request_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("load.json");
    let out = roost()
        .args(["bench", "load", "--requests", "3000", "--actors", "3000", "--clients", "128"])
        .args(["--memory-budget", "256MiB", "--json"])
        .arg(&json)
        .arg("--data")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("server peak RSS MiB"), "{stdout}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["completed"], 3000, "{report}");
    assert_eq!(report["other_errors"], 0, "{report}");
    assert_eq!(report["overloaded_without_retry_after"], 0, "{report}");
    assert_eq!(report["gave_up"], 0, "{report}");
    let peak = report["rss_peak_bytes"].as_u64().unwrap();
    assert!(peak > 0, "the server's RSS was sampled: {report}");
    assert!(peak <= (256u64 << 20) * 11 / 10, "peak RSS {peak} over the budget + 10%: {report}");
}
