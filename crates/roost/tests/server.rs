//! The `/v1` HTTP API over a real server on loopback: every endpoint, its error codes, bad
//! input, auth and limits.

mod support;

use roost::server::{Auth, ServerConfig};
use roost::{HostConfig, StorageConfig};
use serde_json::json;
use support::{delete, get, post, TestServer};

fn query(server: &TestServer, id: &str, body: serde_json::Value) -> support::Answer {
    post(&format!("{}/v1/actors/{id}/query", server.url), None, &body.to_string())
}

#[test]
fn query_round_trips_every_value_type() {
    let server = TestServer::default_config();
    assert_eq!(get(&format!("{}/healthz", server.url), None).body, json!({"status": "ok"}));
    let a = query(&server, "vals", json!({"sql": "CREATE TABLE t(a, b, c, d, e)"}));
    assert_eq!(a.status, 200, "{:?}", a.body);
    let insert = json!({"sql": "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
        "params": [null, 9007199254740993i64, 1.5, "héllo", {"base64": "AAH/"}]});
    let a = query(&server, "vals", insert);
    assert_eq!((a.body["rows_affected"].clone(), a.body["last_insert_rowid"].clone()), (json!(1), json!(1)));
    let a = query(&server, "vals", json!({"sql": "SELECT * FROM t WHERE c = :c", "params": {":c": 1.5}}));
    assert_eq!(a.status, 200);
    assert_eq!(a.body["columns"], json!(["a", "b", "c", "d", "e"]));
    assert_eq!(a.body["rows"], json!([[null, 9007199254740993i64, 1.5, "héllo", {"base64": "AAH/"}]]));
}

#[test]
fn batches_are_all_or_nothing() {
    let server = TestServer::default_config();
    let url = format!("{}/v1/actors/b/batch", server.url);
    let ok = json!({"statements": [{"sql": "CREATE TABLE t(x INTEGER PRIMARY KEY)"},
        {"sql": "INSERT INTO t VALUES (?)", "params": [1]}], "transaction": true});
    let a = post(&url, None, &ok.to_string());
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["results"].as_array().unwrap().len(), 2);
    let bad = json!({"statements": [{"sql": "INSERT INTO t VALUES (2)"}, {"sql": "INSERT INTO t VALUES (1)"}],
        "transaction": true});
    let a = post(&url, None, &bad.to_string());
    assert_eq!((a.status, a.code()), (400, "sql_error"));
    assert!(a.body["error"]["message"].as_str().unwrap().starts_with("statement 1:"));
    let a = query(&server, "b", json!({"sql": "SELECT count(*) FROM t"}));
    assert_eq!(a.body["rows"], json!([[1]]));
}

#[test]
fn bad_input_gets_clear_errors() {
    let config =
        ServerConfig { body_bytes_max: 64 << 10, statement_bytes_max: 1000, ..ServerConfig::default() };
    let storage = StorageConfig { rows_max: 10, ..StorageConfig::default() };
    let server = TestServer::start(config, HostConfig::default(), storage);
    let url = |id: &str| format!("{}/v1/actors/{id}/query", server.url);
    let cases: Vec<(String, String, u16, &str)> = vec![
        (url("x"), "{not json".into(), 400, "bad_request"),
        (url("x"), json!({"sql": 5}).to_string(), 400, "bad_request"),
        (url("x"), json!({"sql": "SELECT 1", "extra": 1}).to_string(), 400, "bad_request"),
        (url("x"), json!({"sql": "SELECT ?", "params": [[1]]}).to_string(), 400, "bad_request"),
        (url("x"), json!({"sql": "SELECT ?", "params": [{"base64": "!!"}]}).to_string(), 400, "bad_request"),
        (url("x"), json!({"sql": "SELECT ?"}).to_string(), 400, "bad_request"),
        (url("x"), json!({"sql": "SELEC 1"}).to_string(), 400, "sql_error"),
        (url("x"), json!({"sql": "SELECT * FROM missing"}).to_string(), 400, "sql_error"),
        (url("x"), json!({"sql": format!("SELECT '{}'", "a".repeat(2000))}).to_string(), 400, "bad_request"),
        (
            url("x"),
            json!({"sql": format!("SELECT '{}'", "a".repeat(100_000))}).to_string(),
            413,
            "payload_too_large",
        ),
        (url("%2E%2E"), json!({"sql": "SELECT 1"}).to_string(), 400, "invalid_actor_id"),
        (url(".hidden"), json!({"sql": "SELECT 1"}).to_string(), 400, "invalid_actor_id"),
        (url("a%2Fb"), json!({"sql": "SELECT 1"}).to_string(), 400, "invalid_actor_id"),
        (url(&"x".repeat(129)), json!({"sql": "SELECT 1"}).to_string(), 400, "invalid_actor_id"),
        (url("sp%20ace"), json!({"sql": "SELECT 1"}).to_string(), 400, "invalid_actor_id"),
        (format!("{}/v1/actors/a/b/query", server.url), "{}".into(), 404, "not_found"),
        (format!("{}/nope", server.url), "{}".into(), 404, "not_found"),
    ];
    for (url, body, status, code) in cases {
        let a = post(&url, None, &body);
        assert_eq!((a.status, a.code()), (status, code), "{url} {body:.80}: {:?}", a.body);
        assert!(a.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // The row limit (10 here): refused whole.
    let many = "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < 100) SELECT i FROM s";
    let a = post(&url("x"), None, &json!({"sql": many}).to_string());
    assert_eq!((a.status, a.code()), (400, "bad_request"), "{:?}", a.body);
    // Nothing was created by all that.
    assert_eq!(get(&format!("{}/v1/actors/x", server.url), None).status, 404);
}

#[test]
fn actor_endpoints() {
    let server = TestServer::default_config();
    let actor = |id: &str| format!("{}/v1/actors/{id}", server.url);
    assert_eq!(get(&actor("team-a"), None).code(), "not_found");
    query(&server, "team-a", json!({"sql": "SELECT 1"}));
    assert_eq!(get(&actor("team-a"), None).status, 404, "a read creates nothing");
    for id in ["team-a", "team-b", "solo"] {
        assert_eq!(query(&server, id, json!({"sql": "CREATE TABLE t(x)"})).status, 200);
    }
    let a = get(&actor("team-a"), None);
    assert_eq!((a.status, a.body["state"].clone()), (200, json!("awake")));
    assert!(a.body["size_bytes"].as_u64().unwrap() >= 4096);
    let a = get(&format!("{}/v1/actors?prefix=team-&limit=1", server.url), None);
    assert_eq!(a.body["actors"][0]["id"], json!("team-a"));
    assert_eq!(a.body["next_cursor"], json!("team-a"));
    let a = get(&format!("{}/v1/actors?prefix=team-&limit=1&cursor=team-a", server.url), None);
    assert_eq!(a.body["actors"][0]["id"], json!("team-b"));
    let a = get(&format!("{}/v1/actors?limit=0", server.url), None);
    assert_eq!(a.code(), "bad_request");
    let a = get(&format!("{}/v1/actors?limit=abc", server.url), None);
    assert_eq!(a.code(), "bad_request");
    assert_eq!(post(&format!("{}/sleep", actor("team-a")), None, "").body, json!({}));
    assert_eq!(get(&actor("team-a"), None).body["state"], json!("asleep"));
    assert_eq!(delete(&actor("team-a"), None).body, json!({}));
    assert_eq!(get(&actor("team-a"), None).status, 404);
    let a = query(&server, "team-a", json!({"sql": "SELECT * FROM t"}));
    assert_eq!(a.code(), "sql_error", "deleted data is gone");
}

#[test]
fn tokens_guard_actors_and_admin() {
    let tokens = Auth::parse_tokens("scopedscopedscoped:team-1-\nglobalglobalglobal").unwrap();
    let auth = Auth { tokens, admin: Some("adminadminadminadmin".into()) };
    let server = TestServer::with_auth(auth);
    let url = |id: &str| format!("{}/v1/actors/{id}/query", server.url);
    let body = json!({"sql": "SELECT 1"}).to_string();
    assert_eq!(post(&url("team-1-a"), None, &body).code(), "unauthorized");
    assert_eq!(post(&url("team-1-a"), Some("wrongwrongwrongwrong"), &body).code(), "unauthorized");
    assert_eq!(post(&url("team-2-a"), Some("scopedscopedscoped"), &body).code(), "unauthorized");
    assert_eq!(post(&url("team-1-a"), Some("scopedscopedscoped"), &body).status, 200);
    assert_eq!(post(&url("team-2-a"), Some("globalglobalglobal"), &body).status, 200);
    assert_eq!(post(&url("team-2-a"), Some("adminadminadminadmin"), &body).status, 200);
    let list = |prefix: &str, token| get(&format!("{}/v1/actors?prefix={prefix}", server.url), token);
    assert_eq!(list("", Some("scopedscopedscoped")).code(), "unauthorized");
    assert_eq!(list("team-1-", Some("scopedscopedscoped")).status, 200);
    assert_eq!(get(&format!("{}/healthz", server.url), None).status, 200);
}

#[test]
fn refuses_open_non_loopback() {
    let config = ServerConfig { listen: "0.0.0.0:8080".parse().unwrap(), ..ServerConfig::default() };
    assert!(config.validate().is_err());
    assert!(ServerConfig::default().validate().is_ok());
}

#[test]
fn limits_answer_timeout_and_overloaded() {
    let config = ServerConfig { requests_in_flight_max: 1, retry_after_ms: 2000, ..ServerConfig::default() };
    let host = HostConfig { statement_timeout_ms: 500, ..HostConfig::default() };
    let server = TestServer::start(config, host, StorageConfig::default());
    let endless = json!({"sql": "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s) SELECT count(*) FROM s"});
    let url = format!("{}/v1/actors/slow/query", server.url);
    let slow = {
        let (url, body) = (url.clone(), endless.to_string());
        std::thread::spawn(move || post(&url, None, &body))
    };
    std::thread::sleep(std::time::Duration::from_millis(150));
    let shed =
        post(&format!("{}/v1/actors/other/query", server.url), None, &json!({"sql": "SELECT 1"}).to_string());
    assert_eq!((shed.status, shed.code()), (503, "overloaded"));
    assert_eq!(shed.retry_after.as_deref(), Some("2"));
    let slow = slow.join().unwrap();
    assert_eq!((slow.status, slow.code()), (408, "timeout"), "{:?}", slow.body);
}

fn put(url: &str, body: Vec<u8>) -> support::Answer {
    let mut response = support::agent().put(url).send(&body[..]).unwrap();
    let status = response.status().as_u16();
    let body =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap_or_default()).unwrap_or_default();
    support::Answer { status, retry_after: None, body }
}

#[test]
fn export_and_import_whole_databases() {
    let config = ServerConfig { import_bytes_max: 1 << 20, ..ServerConfig::default() };
    let server = TestServer::start(config, HostConfig::default(), StorageConfig::default());
    let actor = |id: &str| format!("{}/v1/actors/{id}", server.url);
    assert_eq!(get(&format!("{}/export", actor("nobody")), None).code(), "not_found");
    query(&server, "src", json!({"sql": "CREATE TABLE t(x, y BLOB)"}));
    for i in 0..50 {
        query(&server, "src", json!({"sql": "INSERT INTO t VALUES (?, randomblob(3000))", "params": [i]}));
    }
    let mut response = support::agent().get(&format!("{}/export", actor("src"))).call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/vnd.sqlite3");
    let bytes = response.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap();
    assert!(bytes.starts_with(b"SQLite format 3\0"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.sqlite3");
    std::fs::write(&path, &bytes).unwrap();
    let plain = rusqlite::Connection::open(&path).unwrap();
    let check: String = plain.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let n: i64 = plain.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 50);
    sqlite3_shell_reads(&path, "SELECT count(*) FROM t", "50");

    // Import it into another actor that has data of its own.
    query(&server, "dst", json!({"sql": "CREATE TABLE old(z)"}));
    assert_eq!(put(&format!("{}/import", actor("dst")), bytes.clone()).body, json!({}));
    let a = query(&server, "dst", json!({"sql": "SELECT count(*), sum(length(y)) FROM t"}));
    assert_eq!(a.body["rows"], json!([[50, 150000]]));
    assert_eq!(
        query(&server, "dst", json!({"sql": "SELECT * FROM old"})).code(),
        "sql_error",
        "replaced whole"
    );

    // Garbage and oversized uploads are refused and change nothing.
    let garbage = put(&format!("{}/import", actor("dst")), b"this is not a database at all".repeat(100));
    assert_eq!((garbage.status, garbage.code()), (400, "bad_request"));
    let mut corrupt = bytes.clone();
    corrupt[5000..9000].fill(0xAB);
    assert_eq!(put(&format!("{}/import", actor("dst")), corrupt).code(), "bad_request");
    let huge = put(&format!("{}/import", actor("dst")), vec![0u8; 2 << 20]);
    assert_eq!((huge.status, huge.code()), (413, "payload_too_large"));
    let a = query(&server, "dst", json!({"sql": "SELECT count(*) FROM t"}));
    assert_eq!(a.body["rows"], json!([[50]]));
}

#[test]
fn database_size_limit_is_a_sql_error_and_keeps_earlier_data() {
    let storage = StorageConfig { db_bytes_max: 64 << 10, ..StorageConfig::default() };
    let server = TestServer::start(ServerConfig::default(), HostConfig::default(), storage);
    assert_eq!(query(&server, "full", json!({"sql": "CREATE TABLE t(x)"})).status, 200);
    let mut last = None;
    for _ in 0..40 {
        let a = query(&server, "full", json!({"sql": "INSERT INTO t VALUES (randomblob(4000))"}));
        if a.status != 200 {
            last = Some(a);
            break;
        }
    }
    let a = last.expect("the size limit was never hit");
    assert_eq!((a.status, a.code()), (400, "sql_error"));
    assert!(a.body["error"]["message"].as_str().unwrap().contains("full"), "{:?}", a.body);
    let a = query(&server, "full", json!({"sql": "SELECT count(*) FROM t"}));
    assert!(a.body["rows"][0][0].as_i64().unwrap() >= 5);
}

/// A SQLite file built by `setup` with rusqlite, as bytes.
fn sqlite_file(setup: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upload.sqlite3");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(setup).unwrap();
    drop(conn);
    std::fs::read(path).unwrap()
}

/// Spool and SQLite side files (`-wal`, `-shm`) of uploads in the system's temporary folder
/// (other test processes may leave some: compare before and after).
fn temp_leftovers() -> Vec<String> {
    let names = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok());
    names.filter(|n| n.starts_with("roost-spool-") && (n.ends_with("-wal") || n.ends_with("-shm"))).collect()
}

#[test]
fn import_converts_wal_files_and_refuses_foreign_page_sizes_leaving_no_files() {
    let scratch = tempfile::tempdir().unwrap();
    let storage =
        StorageConfig { scratch_dir: Some(scratch.path().to_path_buf()), ..StorageConfig::default() };
    let server = TestServer::start(ServerConfig::default(), HostConfig::default(), storage);
    let actor = |id: &str| format!("{}/v1/actors/{id}", server.url);
    let temp_before = temp_leftovers();

    // A WAL-mode file, checkpointed and closed: its header still says WAL (versions 2).
    let wal = sqlite_file(
        "PRAGMA journal_mode=WAL; CREATE TABLE t(x); \
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300) \
         INSERT INTO t SELECT randomblob(500) FROM c; PRAGMA wal_checkpoint(TRUNCATE);",
    );
    assert_eq!(&wal[18..20], &[2, 2]);
    let a = put(&format!("{}/import", actor("walled")), wal);
    assert_eq!((a.status, &a.body), (200, &json!({})), "a WAL-mode upload is converted");
    for round in 0..2 {
        let a = query(&server, "walled", json!({"sql": "INSERT INTO t VALUES (1)"}));
        assert_eq!(a.status, 200, "round {round}: {:?}", a.body);
        let a = query(&server, "walled", json!({"sql": "SELECT count(*) FROM t"}));
        assert_eq!(a.body["rows"], json!([[301 + round]]));
        // The next round reopens the actor from the store.
        assert_eq!(post(&format!("{}/sleep", actor("walled")), None, "").status, 200);
    }
    let a = query(&server, "walled", json!({"sql": "PRAGMA integrity_check"}));
    assert_eq!(a.body["rows"], json!([["ok"]]));
    let mut response = support::agent().get(&format!("{}/export", actor("walled"))).call().unwrap();
    let exported = response.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap();
    assert_eq!(&exported[18..20], &[1, 1], "the actor is in rollback-journal format");

    // 8 KiB pages: refused with how to convert, and the actor keeps its data.
    let big_pages =
        sqlite_file("PRAGMA page_size=8192; CREATE TABLE other(y); INSERT INTO other VALUES (1);");
    let a = put(&format!("{}/import", actor("walled")), big_pages);
    assert_eq!((a.status, a.code()), (400, "bad_request"));
    let message = a.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("8192-byte pages") && message.contains("PRAGMA page_size=4096; VACUUM;"),
        "{message}"
    );
    let a = query(&server, "walled", json!({"sql": "SELECT count(*) FROM t"}));
    assert_eq!(a.body["rows"], json!([[302]]));

    let left: Vec<_> = std::fs::read_dir(scratch.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "the scratch folder keeps nothing: {left:?}");
    let temp_new: Vec<_> = temp_leftovers().into_iter().filter(|n| !temp_before.contains(n)).collect();
    assert!(temp_new.is_empty(), "nothing is left in the temporary folder: {temp_new:?}");
}

/// Yields `first`, waits for `go`, then yields `rest`.
struct PausedBody {
    first: std::io::Cursor<Vec<u8>>,
    go: Option<std::sync::mpsc::Receiver<()>>,
    rest: std::io::Cursor<Vec<u8>>,
}

impl std::io::Read for PausedBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.first.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        if let Some(go) = self.go.take() {
            let _ = go.recv();
        }
        self.rest.read(buf)
    }
}

fn spool_bytes(server: &TestServer) -> u64 {
    let mut response = support::agent().get(&format!("{}/metrics", server.url)).call().unwrap();
    let text = response.body_mut().read_to_string().unwrap();
    let line =
        text.lines().find(|l| l.starts_with("roost_spool_bytes ")).expect("roost_spool_bytes is reported");
    line["roost_spool_bytes ".len()..].parse().unwrap()
}

#[test]
fn concurrent_imports_beyond_the_spool_limit_are_overloaded() {
    let scratch = tempfile::tempdir().unwrap();
    let storage =
        StorageConfig { scratch_dir: Some(scratch.path().to_path_buf()), ..StorageConfig::default() };
    let config =
        ServerConfig { import_bytes_max: 1 << 20, spool_bytes_max: 1 << 20, ..ServerConfig::default() };
    let server = TestServer::start(config, HostConfig::default(), storage);
    let file = sqlite_file(
        "CREATE TABLE t(x); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 150) \
         INSERT INTO t SELECT randomblob(4000) FROM c;",
    );
    assert!(file.len() > 600 << 10 && file.len() < 1 << 20, "{} bytes", file.len());
    let url = format!("{}/v1/actors/slow/import", server.url);

    // The first upload stops after 512 KiB; its spool holds them.
    let (go, wait) = std::sync::mpsc::channel();
    let body = PausedBody {
        first: std::io::Cursor::new(file[..512 << 10].to_vec()),
        go: Some(wait),
        rest: std::io::Cursor::new(file[512 << 10..].to_vec()),
    };
    let slow = std::thread::spawn(move || {
        let mut response = support::agent().put(&url).send(ureq::SendBody::from_owned_reader(body)).unwrap();
        (response.status().as_u16(), response.body_mut().read_to_string().unwrap())
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while spool_bytes(&server) < 512 << 10 {
        assert!(std::time::Instant::now() < deadline, "the first upload never reached the spool");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // A second upload does not fit beside it: overloaded, retry later.
    let mut response =
        support::agent().put(&format!("{}/v1/actors/fast/import", server.url)).send(&file[..]).unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().get("retry-after").is_some());
    let body: serde_json::Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{body}");

    go.send(()).unwrap();
    let (status, body) = slow.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(spool_bytes(&server), 0, "a finished import gives its spool bytes back");
    assert_eq!(put(&format!("{}/v1/actors/fast/import", server.url), file).status, 200, "the retry fits");
    let a = query(&server, "fast", json!({"sql": "SELECT count(*) FROM t"}));
    assert_eq!(a.body["rows"], json!([[150]]));
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
}

/// The `sqlite3` shell opens `path` and answers `want` to `sql`. Without the shell the check
/// is skipped (with a note), unless `ROOST_REQUIRE_SQLITE3=1` (CI installs the shell): then a
/// missing shell fails the test instead of passing it silently.
fn sqlite3_shell_reads(path: &std::path::Path, sql: &str, want: &str) {
    let required = std::env::var("ROOST_REQUIRE_SQLITE3").is_ok_and(|v| v == "1");
    match std::process::Command::new("sqlite3").arg(path).arg(sql).output() {
        Ok(out) => {
            assert!(out.status.success(), "sqlite3 failed: {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                want,
                "the sqlite3 shell reads the export"
            );
        }
        Err(e) if required => panic!("ROOST_REQUIRE_SQLITE3=1 but the sqlite3 shell cannot run: {e}"),
        Err(e) => {
            eprintln!("note: sqlite3 shell check skipped ({e}); set ROOST_REQUIRE_SQLITE3=1 to require it")
        }
    }
}
