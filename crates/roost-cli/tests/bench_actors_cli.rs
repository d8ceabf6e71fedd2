//! Runs every `roost bench actors` subcommand with tiny parameters: exit 0, an aligned table on
//! stdout, JSON with the expected keys and figures (verdicts are checked against the numbers
//! they come from), and the scratch data removed.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn roost() -> Command {
    Command::new(env!("CARGO_BIN_EXE_roost"))
}

/// Runs `roost bench actors <args> --json .. --data ..` and returns stdout and the JSON.
fn bench(dir: &Path, args: &[&str]) -> (String, Value) {
    let json = dir.join("out.json");
    let data = dir.join("data");
    let out = roost()
        .args(["bench", "actors"])
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0, "the scratch data was not removed");
    (stdout, report)
}

fn f64_at(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("no number {key} in {v}"))
}

#[test]
fn the_child_subcommand_is_hidden() {
    let out = roost().args(["bench", "actors", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for name in ["memory", "storm", "soak", "group-commit", "fleet"] {
        assert!(help.contains(name), "{name} missing from:\n{help}");
    }
    assert!(!help.lines().any(|l| l.trim_start().starts_with("child")), "{help}");
}

#[test]
fn memory_measures_every_engine_and_n() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["memory", "--n", "1,20", "--inserts", "20", "--wake-sample", "5", "--settle-ms", "50"];
    let (stdout, report) = bench(dir.path(), &args);
    assert!(stdout.contains("marginal KiB") && stdout.contains("targets:"), "{stdout}");
    assert_eq!(report["benchmark"], "actors-memory");
    let rows = report["rows"].as_array().unwrap();
    for engine in ["roost", "native"] {
        for n in [0, 1, 20] {
            let row = rows
                .iter()
                .find(|r| r["engine"] == engine && r["actors"] == n)
                .unwrap_or_else(|| panic!("no row {engine} {n}"));
            assert!(f64_at(row, "rss_mib") > 1.0, "{row}");
            for key in ["hwm_mib", "sqlite_used_mib", "sqlite_page_cache_mib", "setup_secs"] {
                f64_at(row, key);
            }
            if n == 20 {
                for key in [
                    "rss_per_actor_kib",
                    "marginal_rss_per_actor_kib",
                    "sqlite_heap_per_actor_kib",
                    "open_us_per_actor",
                    "wake_us_p50",
                    "inserts_per_sec",
                ] {
                    f64_at(row, key);
                }
            }
        }
    }
    let roost20 = rows.iter().find(|r| r["engine"] == "roost" && r["actors"] == 20).unwrap();
    f64_at(roost20, "store_cache_mib");
    let targets = report["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "{targets:?}");
    // Each target reports the row's own figure, its limit, and a verdict that follows from them.
    let marginal = f64_at(roost20, "marginal_rss_per_actor_kib");
    let base_mb =
        f64_at(rows.iter().find(|r| r["engine"] == "roost" && r["actors"] == 0).unwrap(), "rss_mib")
            * f64::from(1u32 << 20)
            / 1e6;
    for (target, value, limit) in [(&targets[0], marginal, 64.0), (&targets[1], base_mb, 30.0)] {
        assert_eq!(f64_at(target, "value"), value, "{target}");
        assert_eq!(f64_at(target, "limit"), limit, "{target}");
        assert_eq!(target["met"], value <= limit, "{target}");
    }
    let point = &report["points"].as_array().unwrap()[0];
    assert!(point["memory"]["rss_bytes"].is_u64() && point["allocator"]["allocated_bytes"].is_u64());
}

#[test]
fn storm_completes_every_client() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["storm", "--actors", "200", "--budget-mib", "128", "--after-ms", "1000"];
    let (stdout, report) = bench(dir.path(), &args);
    assert!(stdout.contains("no-retry") && stdout.contains("retry"), "{stdout}");
    assert_eq!(report["benchmark"], "actors-storm");
    assert_eq!(report["setup"]["actors"], 200);
    let passes = report["passes"].as_array().unwrap();
    assert_eq!(passes.len(), 2);
    for (pass, name) in passes.iter().zip(["no-retry", "retry"]) {
        assert_eq!(pass["pass"], name);
        assert_eq!(pass["other_errors"], 0, "{pass}");
        assert_eq!(pass["succeeded"].as_u64().unwrap() + pass["overloaded"].as_u64().unwrap(), 200);
        for key in ["p50", "p99", "max"] {
            assert!(pass["latency_ms"][key].is_number() && pass["attempts"][key].is_number());
        }
        assert!(pass["memory"]["hwm_bytes"].as_u64().unwrap() > 0);
        for key in ["evictions_total", "overloaded_total", "awake_max"] {
            assert!(pass["host"][key].is_u64(), "{key}: {pass}");
        }
        f64_at(pass, "total_secs");
        let series = pass["rss_after"].as_array().unwrap();
        assert!(series.len() >= 10 && series.iter().all(|s| s[1].as_u64().unwrap() > 0), "{series:?}");
        assert!(f64_at(pass, "rss_recovery_s") <= 1.0);
    }
    assert_eq!(passes[1]["succeeded"], 200);
    // Correctness checks must hold; the peak-RSS verdict must follow from the figures.
    let peak_max = 128.0 * f64::from(1u32 << 20) * 1.1;
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 7, "{checks:?}");
    for check in checks {
        let name = check["name"].as_str().unwrap();
        let pass = passes.iter().find(|p| name.starts_with(p["pass"].as_str().unwrap())).unwrap();
        let want = if name.contains("VmHWM") {
            pass["memory"]["hwm_bytes"].as_u64().unwrap() as f64 <= peak_max
        } else if name.contains("RSS back") {
            f64_at(pass, "rss_recovery_s") <= 5.0
        } else {
            true
        };
        assert_eq!(check["met"], want, "{check}");
    }
}

#[test]
fn soak_samples_rss() {
    let dir = tempfile::tempdir().unwrap();
    let (stdout, report) = bench(dir.path(), &["soak", "--duration-s", "3", "--population", "50"]);
    assert!(stdout.contains("growth end %"), "{stdout}");
    assert_eq!(report["benchmark"], "actors-soak");
    let results = &report["results"];
    assert!(results["visits"].as_u64().unwrap() >= 50, "{results}");
    for key in ["rss_warm_bytes", "rss_end_bytes", "rss_max_bytes", "hwm_bytes"] {
        assert!(results[key].as_u64().unwrap() > 0, "{key}");
    }
    for key in [
        "growth_end_pct",
        "growth_max_pct",
        "growth_median_pct",
        "allocated_growth_median_pct",
        "visits_per_sec",
    ] {
        f64_at(results, key);
    }
    assert_eq!(results["growth_target_pct"], 10.0);
    assert_eq!(results["growth_met"], f64_at(results, "growth_end_pct") <= 10.0, "{results}");
    let series = report["series"].as_array().unwrap();
    assert!(series.len() >= 3, "{series:?}");
    assert!(series.iter().all(|p| p.as_array().is_some_and(|p| p.len() == 4)));
}

#[test]
fn group_commit_compares_roost_with_both_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let (stdout, report) = bench(dir.path(), &["group-commit", "--actors", "20", "--duration-s", "1"]);
    assert!(stdout.contains("commits/s"), "{stdout}");
    assert_eq!(report["benchmark"], "actors-group-commit");
    let results = report["results"].as_array().unwrap();
    let engines: Vec<&str> = results.iter().map(|r| r["engine"].as_str().unwrap()).collect();
    assert_eq!(engines, ["roost", "sqlite-wal-full", "sqlite-delete-full"]);
    for r in results {
        assert!(f64_at(r, "commits_per_sec") > 0.0, "{r}");
        f64_at(&r["latency_ms"], "p99");
        f64_at(r, "vs_wal_full");
        // A second of durable commits takes CPU and reaches the disk.
        assert!(f64_at(&r["usage_per_commit"], "cpu_us_per_op") > 0.0, "{r}");
        assert!(f64_at(&r["usage_per_commit"], "write_bytes_per_op") > 0.0, "{r}");
    }
    // Each commit (one single-row INSERT) is exactly one store write; every group of writes is
    // one apply and one sync; 20 actors committing at once share syncs.
    let store = &results[0]["store_per_commit"];
    assert_eq!(f64_at(store, "writes"), 1.0, "{store}");
    let syncs = f64_at(store, "syncs");
    assert_eq!(syncs, f64_at(store, "group_commits"), "{store}");
    assert!(syncs > 0.0 && syncs < 0.9, "20 concurrent committers did not share syncs: {store}");
    let commits = results[0]["commits"].as_u64().unwrap() as f64;
    let rate = commits / f64_at(&results[0], "secs");
    assert!((f64_at(&results[0], "commits_per_sec") - rate).abs() < 1e-6 * rate, "{}", results[0]);
    let ratio = f64_at(&results[0], "vs_wal_full");
    assert_eq!(report["ratio_met"], ratio >= f64_at(&report, "ratio_target"), "{report}");
}

#[test]
fn fleet_serves_an_open_loop_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("fleet.svg");
    let args = [
        "fleet",
        "--actors",
        "200",
        "--duration-s",
        "3",
        "--warmup-s",
        "1",
        "--read-interval-s",
        "1",
        "--write-interval-s",
        "5",
        "--clients",
        "16",
        "--memory-budget",
        "256MiB",
        "--chart",
        chart.to_str().unwrap(),
    ];
    let (stdout, report) = bench(dir.path(), &args);
    assert!(stdout.contains("p99 ms") && stdout.contains("targets:"), "{stdout}");
    assert_eq!(report["benchmark"], "actors-fleet");
    assert_eq!(report["params"]["actors"], 200);
    let requests = &report["requests"];
    // 200 reads/s and 40 writes/s for 3 s measured: about 600 and 120.
    let (reads, writes) = (&requests["reads"], &requests["writes"]);
    assert!(reads["ok"].as_u64().unwrap() > 300, "{requests}");
    assert!(writes["ok"].as_u64().unwrap() > 40, "{requests}");
    assert!(requests["warmup"]["ok"].as_u64().unwrap() > 0, "{requests}");
    assert_eq!(requests["errors_total"], 0, "{requests}");
    for window in [reads, writes, &requests["all"]] {
        assert_eq!(window["errors"], 0, "{window}");
        assert_eq!(window["ok"], window["scheduled"], "{window}");
    }
    f64_at(requests, "reads_per_s");
    f64_at(requests, "writes_per_s");
    for kind in ["reads", "writes", "all"] {
        let q = &report["latency_ms"][kind];
        let (p50, p99, max) = (f64_at(q, "p50"), f64_at(q, "p99"), f64_at(q, "max"));
        assert!(0.0 < p50 && p50 <= f64_at(q, "p90") && p99 <= f64_at(q, "p999") && p99 <= max, "{q}");
    }
    let server = &report["server"];
    let (peak, hwm) = (server["rss_peak_bytes"].as_u64().unwrap(), server["hwm_bytes"].as_u64().unwrap());
    assert!(hwm > 1 << 20 && peak >= hwm, "{server}");
    let awake_peak = server["awake_peak"].as_u64().unwrap();
    assert!(awake_peak > 0 && awake_peak <= server["awake_max"].as_u64().unwrap(), "{server}");
    for key in ["wakes_per_s", "evictions_per_s", "idle_sleeps_per_s", "commits_per_s"] {
        f64_at(server, key);
    }
    // Setup committed 200 actors before the server started: every commit counted here is a write.
    assert!(f64_at(server, "wakes_per_s") > 0.0 && f64_at(server, "commits_per_s") > 0.0, "{server}");
    assert_eq!(server["exit"], "exit status: 0", "the server did not shut down cleanly: {server}");
    let targets = report["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 3, "{targets:?}");
    assert_eq!(targets[0]["met"], peak <= 256 << 20, "{targets:?}");
    assert_eq!(targets[1]["met"], f64_at(&report["latency_ms"]["all"], "p99") <= 10.0, "{targets:?}");
    assert_eq!(targets[2]["met"], true, "{targets:?}");
    let series = report["series"].as_array().unwrap();
    assert!(series.len() >= 4, "{series:?}");
    assert!(series.iter().all(|p| p["rss_mib"].as_f64().unwrap() > 1.0 && p["awake"].is_u64()), "{series:?}");
    assert!(series.iter().all(|p| p["compactions"].is_u64() && p["l0_tables"].is_u64()), "{series:?}");
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.contains("data-series=\"rss\"") && svg.contains("data-series=\"awake\""), "{svg}");
    assert!(svg.contains("class=\"budget\""), "{svg}");
}

#[test]
fn fleet_reuses_its_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("keep");
    let run = |actors: &str| {
        roost()
            .args(["bench", "actors", "fleet", "--actors", actors, "--duration-s", "1", "--warmup-s", "0"])
            .args(["--read-interval-s", "1", "--write-interval-s", "5", "--reuse-data"])
            .arg(&keep)
            .arg("--json")
            .arg(dir.path().join("out.json"))
            .arg("--chart")
            .arg(dir.path().join("out.svg"))
            .output()
            .unwrap()
    };
    let first = run("50");
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(keep.join("fleet-setup.json").is_file());
    let second = run("50");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success() && stderr.contains("reusing the 50 actors"), "{stderr}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out.json")).unwrap()).unwrap();
    assert_eq!(report["params"]["data_reused"], true);
    assert_eq!(report["requests"]["errors_total"], 0, "{report}");
    let other = run("60");
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("holds 50 actors"));
}
