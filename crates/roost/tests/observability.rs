//! `/debug/memory` and `/metrics` on a real server.

mod support;

use roost::server::{Auth, ServerConfig};
use roost::{HostConfig, StorageConfig};
use serde_json::json;
use support::{get, post, TestServer};

fn memory(server: &TestServer) -> serde_json::Value {
    let a = get(&format!("{}/debug/memory", server.url), None);
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body
}

#[test]
fn memory_breakdown_follows_actors_waking_and_sleeping() {
    let host = HostConfig { memory_budget_bytes: 4 << 30, ..HostConfig::default() };
    let server = TestServer::start(ServerConfig::default(), host, StorageConfig::default());
    let before = memory(&server);
    for key in ["process", "sqlite", "store", "actors", "budget", "top_actors"] {
        assert!(!before[key].is_null(), "{key} missing: {before}");
    }
    assert!(before["process"]["rss_bytes"].as_u64().unwrap() > 1 << 20);
    let pools: Vec<&str> =
        before["budget"]["pools"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(pools, ["page_cache", "connections", "store", "request_buffers"]);
    let create = json!({"statements": [{"sql": "CREATE TABLE IF NOT EXISTS t(x)"},
        {"sql": "INSERT INTO t VALUES (randomblob(2000))"}], "transaction": true});
    for i in 0..1000 {
        let a = post(&format!("{}/v1/actors/m-{i:04}/batch", server.url), None, &create.to_string());
        assert_eq!(a.status, 200);
    }
    let awake = memory(&server);
    assert_eq!(awake["actors"]["awake"], json!(1000));
    // Each of those requests woke its actor and committed once (counters are per process).
    let trips = &awake["store"]["round_trips"];
    assert!(trips["wakes"].as_u64().unwrap() >= 1000, "{trips}");
    assert!(trips["commits"].as_u64().unwrap() >= 1000, "{trips}");
    assert!(trips["per_wake"].as_f64().unwrap() >= 1.0, "{trips}");
    assert!(trips["per_commit"].as_f64().unwrap() >= 1.0, "{trips}");
    let sqlite_awake = awake["sqlite"]["used_bytes"].as_u64().unwrap();
    assert!(sqlite_awake > before["sqlite"]["used_bytes"].as_u64().unwrap() + ((1000 * 8) << 10));
    assert!(
        awake["process"]["rss_bytes"].as_u64().unwrap() > before["process"]["rss_bytes"].as_u64().unwrap()
    );
    assert_eq!(awake["top_actors"].as_array().unwrap().len(), 20);
    assert!(awake["top_actors"][0]["total_bytes"].as_u64().unwrap() > 0);
    let text = get(&format!("{}/debug/memory?format=text", server.url), None);
    assert_eq!(text.body, serde_json::Value::Null, "text is not JSON");
    for i in 0..1000 {
        post(&format!("{}/v1/actors/m-{i:04}/sleep", server.url), None, "");
    }
    let asleep = memory(&server);
    assert_eq!(asleep["actors"]["awake"], json!(0));
    assert!(asleep["sqlite"]["used_bytes"].as_u64().unwrap() < sqlite_awake / 4, "{asleep}");
    assert_eq!(get(&format!("{}/debug/memory?format=xml", server.url), None).code(), "bad_request");
}

#[test]
fn memory_text_is_a_table() {
    let server = TestServer::default_config();
    let mut response =
        support::agent().get(&format!("{}/debug/memory?format=text", server.url)).call().unwrap();
    let text = response.body_mut().read_to_string().unwrap();
    for line in ["process rss", "sqlite used", "pool page_cache", "actors", "top actors"] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
}

#[test]
fn metrics_parse_as_prometheus_text() {
    let server = TestServer::default_config();
    post(&format!("{}/v1/actors/x/query", server.url), None, &json!({"sql": "SELECT 1"}).to_string());
    post(&format!("{}/v1/actors/x/query", server.url), None, "{bad");
    let mut response = support::agent().get(&format!("{}/metrics", server.url)).call().unwrap();
    let text = response.body_mut().read_to_string().unwrap();
    let mut samples = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(rest.starts_with("HELP ") || rest.starts_with("TYPE "), "{line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        value.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {line}"));
        let name = series.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
        if let Some(labels) = series.strip_prefix(name) {
            assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')), "{line}");
        }
        samples += 1;
    }
    assert!(samples > 20);
    assert!(
        text.contains("roost_http_requests_total{route=\"/v1/actors/{id}/query\",status=\"2xx\"} 1"),
        "{text}"
    );
    assert!(text.contains("roost_http_requests_total{route=\"/v1/actors/{id}/query\",status=\"4xx\"} 1"));
    assert!(text.contains("roost_wakes_total 1"));
    assert!(text.contains("roost_wake_duration_seconds_count 1"), "{text}");
    for name in ["roost_wakes_measured_total", "roost_wake_store_calls_total", "roost_commits_total"] {
        assert!(text.contains(&format!("\n{name} ")), "{name} missing");
    }
    assert!(text.contains("roost_store_call_duration_seconds_count{op=\"read\"}"));
    let writes =
        text.lines().find(|l| l.starts_with("roost_store_call_duration_seconds_count{op=\"read\"}")).unwrap();
    assert!(writes.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap() >= 1, "{writes}");
}

#[test]
fn debug_endpoints_need_the_admin_token() {
    let auth = Auth {
        tokens: Auth::parse_tokens("useruseruseruser").unwrap(),
        admin: Some("adminadminadminadmin".into()),
    };
    let server = TestServer::with_auth(auth);
    for path in ["/debug/memory", "/metrics"] {
        assert_eq!(get(&format!("{}{path}", server.url), None).code(), "unauthorized");
        assert_eq!(get(&format!("{}{path}", server.url), Some("useruseruseruser")).code(), "unauthorized");
        assert_eq!(get(&format!("{}{path}", server.url), Some("adminadminadminadmin")).status, 200);
    }
}
