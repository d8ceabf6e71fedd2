//! One request can never push `roost serve` past its memory budget: a query answering 300 MB
//! and four concurrent Hrana queries answering 100 MB each, under `--memory-budget 256MiB`,
//! get clear errors (or complete answers) and the server's peak RSS stays within the budget
//! plus 10%.

use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

mod support;

use support::free_port;
const BUDGET_BYTES: u64 = 256 << 20;

fn start(data: &std::path::Path, port: u16) -> Child {
    support::serve(data, port, &["--memory-budget", "256MiB"], Stdio::null())
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into();
    let mut response =
        agent.post(url).header("content-type", "application/json").send(body.to_string()).unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().with_config().limit(1 << 30).read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Peak RSS since the last reset, from /proc (VmHWM).
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line[6..].trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024
}

#[test]
fn large_answers_stay_inside_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = start(dir.path(), port);
    let query = format!("{base}/v1/actors/big/query");
    assert_eq!(post(&query, &json!({"sql": "CREATE TABLE t(b BLOB)"})).0, 200);
    let insert = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 10) \
                  INSERT INTO t SELECT randomblob(1000000) FROM c";
    for _ in 0..30 {
        let (status, body) = post(&query, &json!({"sql": insert}));
        assert_eq!(status, 200, "{body}");
    }
    // Measure from here: the peak of the hostile answers alone.
    std::fs::write(format!("/proc/{}/clear_refs", server.id()), "5").unwrap();
    let before = peak_rss_bytes(server.id());

    let pipeline = format!("{base}/db/big/v3/pipeline");
    let hrana_query = json!({"requests": [
        {"type": "execute", "stmt": {"sql": "SELECT b FROM t LIMIT 100"}},
        {"type": "close"},
    ]});
    let whole = std::thread::spawn({
        let query = query.clone();
        move || post(&query, &json!({"sql": "SELECT b FROM t"}))
    });
    let hrana: Vec<_> = (0..4)
        .map(|_| {
            let (pipeline, body) = (pipeline.clone(), hrana_query.clone());
            std::thread::spawn(move || post(&pipeline, &body))
        })
        .collect();
    let (status, body) = whole.join().unwrap();
    assert!(
        (status == 413 && body["error"]["code"] == "response_too_large")
            || (status == 503 && body["error"]["code"] == "overloaded"),
        "{status} {body}"
    );
    for answer in hrana {
        let (status, body) = answer.join().unwrap();
        match status {
            200 => {
                let result = &body["results"][0];
                assert_eq!(result["type"], "error", "{result}");
                assert_eq!(result["error"]["code"], "RESPONSE_TOO_LARGE", "{result}");
            }
            503 => assert_eq!(body["error"]["code"], "overloaded", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let peak = peak_rss_bytes(server.id());
    eprintln!(
        "peak RSS {:.1} MiB (before the answers {:.1} MiB), budget {} MiB",
        peak as f64 / (1 << 20) as f64,
        before as f64 / (1 << 20) as f64,
        BUDGET_BYTES >> 20
    );
    assert!(peak <= BUDGET_BYTES + BUDGET_BYTES / 10, "peak RSS {peak} over budget + 10%");

    // What fits is answered whole, and the pool is empty again afterwards.
    let (status, body) = post(&query, &json!({"sql": "SELECT length(b) FROM t LIMIT 3"}));
    assert_eq!((status, body["rows"].clone()), (200, json!([[1000000], [1000000], [1000000]])));
    let (status, body) = post(&query, &json!({"sql": "SELECT b FROM t LIMIT 5"}));
    assert_eq!(status, 200);
    assert_eq!(body["rows"].as_array().unwrap().len(), 5);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let memory: Value = serde_json::from_str(
        &agent.get(format!("{base}/debug/memory")).call().unwrap().body_mut().read_to_string().unwrap(),
    )
    .unwrap();
    let pools = memory["budget"]["pools"].as_array().unwrap();
    let buffers = pools.iter().find(|p| p["name"] == "request_buffers").unwrap();
    assert!(buffers["bytes_used"].as_u64().unwrap() < 1 << 20, "{buffers}");
    assert!(memory["request_buffers"]["refused_total"].as_u64().unwrap() >= 1, "{memory}");
    let _ = server.kill();
    let _ = server.wait();
}
