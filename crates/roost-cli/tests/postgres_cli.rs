//! `roost serve --store postgres` end to end: SQL through the server, a restart that reads the
//! data back, and PostgreSQL refusing connections (503 `store_unavailable` in bounded time,
//! then recovery with nothing lost). Each test uses a fresh PostgreSQL database; without a
//! reachable server it prints why and returns (see `roost::kv::testing`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use roost::kv::testing::TestDatabase;
use serde_json::{json, Value};

mod support;

use support::{free_port, ROOST};

/// A `roost serve --store postgres` process, stopped with SIGTERM when dropped.
struct Server {
    child: Option<Child>,
    url: String,
}

impl Server {
    fn start(db: &TestDatabase, extra: &[&str]) -> Self {
        let port = free_port();
        let data = tempfile::tempdir().unwrap();
        let child = Command::new(ROOST)
            .args(["serve", "--store", "postgres", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--data", data.path().to_str().unwrap()])
            .args(extra)
            .env("ROOST_POSTGRES_URL", &db.url)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        support::wait_listening(port);
        Self { child: Some(child), url: format!("http://127.0.0.1:{port}") }
    }

    /// Stops with SIGTERM and checks a clean exit.
    fn stop(mut self) {
        support::stop(self.child.take().unwrap());
    }

    /// Runs one statement; answers the HTTP status and body.
    fn query(&self, actor: &str, sql: &str, params: Value) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let body = json!({"sql": sql, "params": params}).to_string();
        let url = format!("{}/v1/actors/{actor}/query", self.url);
        let mut answer = agent.post(&url).header("content-type", "application/json").send(body).unwrap();
        let status = answer.status().as_u16();
        let text = answer.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn ok(&self, actor: &str, sql: &str, params: Value) -> Value {
        let (status, body) = self.query(actor, sql, params);
        assert_eq!(status, 200, "{sql}: {body}");
        body
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn serve_on_postgres_keeps_data_across_restarts() {
    let Some(db) = TestDatabase::create("serve") else { return };
    let server = Server::start(&db, &[]);
    server.ok("notes", "CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT)", json!([]));
    for i in 0..20 {
        server.ok("notes", "INSERT INTO t(body) VALUES (?)", json!([format!("note {i}")]));
    }
    // A transaction bigger than the page cache goes through the rollback journal in the store.
    server.ok("big", "CREATE TABLE b(x BLOB)", json!([]));
    let bulk = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) \
                INSERT INTO b SELECT randomblob(4000) FROM n";
    server.ok("big", bulk, json!([]));
    server.stop();

    let server = Server::start(&db, &[]);
    let rows = server.ok("notes", "SELECT count(*), max(body) FROM t", json!([]));
    assert_eq!(rows["rows"], json!([[20, "note 9"]]));
    let rows = server.ok("big", "SELECT count(*), sum(length(x)) FROM b", json!([]));
    assert_eq!(rows["rows"], json!([[3000, 12_000_000]]));
    let check = server.ok("big", "PRAGMA integrity_check", json!([]));
    assert_eq!(check["rows"], json!([["ok"]]));
    server.stop();
}

#[test]
fn serve_on_postgres_answers_store_unavailable_when_it_is_gone_and_recovers() {
    let Some(db) = TestDatabase::create("outage") else { return };
    let server = Server::start(&db, &["--postgres-timeout-ms", "2000"]);
    server.ok("a", "CREATE TABLE t(x)", json!([]));
    server.ok("a", "INSERT INTO t VALUES (1)", json!([]));

    // PostgreSQL drops Roost's connections and refuses new ones to this database.
    let name = db.name().to_string();
    db.admin(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).unwrap();
    db.admin(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        .unwrap();
    for sql in ["INSERT INTO t VALUES (2)", "SELECT count(*) FROM t"] {
        // A new actor must be read from the store: it cannot be served from memory.
        for actor in ["a", "b"] {
            let started = Instant::now();
            let (status, body) = server.query(actor, sql, json!([]));
            assert_eq!(status, 503, "{actor} {sql}: {body}");
            assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
            assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
        }
    }

    db.admin(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let (status, body) = server.query("a", "SELECT x FROM t ORDER BY x", json!([]));
        if status == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "did not recover: {body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(rows["rows"], json!([[1]]), "the refused insert must not have applied");
    server.ok("a", "INSERT INTO t VALUES (3)", json!([]));
    assert_eq!(server.ok("a", "SELECT count(*) FROM t", json!([]))["rows"], json!([[2]]));
    server.stop();
}
