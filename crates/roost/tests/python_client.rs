//! The Python `libsql-client` (PyPI) against a real server: over sqld's HTTP API v1
//! (`http://`, `/v1/execute` and `/v1/batch`) and over Hrana over WebSocket (`ws://`, it asks
//! for `hrana2`). The client is installed in a virtual environment under the target folder;
//! when Python or pip cannot provide it the test is skipped with the reason printed, unless
//! ROOST_REQUIRE_PYTHON=1.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use roost::server::{Auth, Token};
use serde_json::{json, Value};
use support::{post, TestServer};

const TOKEN: &str = "python-test-token-0123456789";
/// The client version the test was written against.
const CLIENT: &str = "libsql-client==0.3.1";

/// A Python with `libsql_client` importable, or why there is none.
fn python() -> Result<PathBuf, String> {
    support::python_venv("python-libsql-client", CLIENT, "import libsql_client")
        .map(|venv| venv.join("bin/python"))
}

fn run_client(python: &Path, url: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client.py");
    let output = Command::new(python).arg(script).arg(url).env("ROOST_TOKEN", TOKEN).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python failed on {url}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let summary = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no JSON summary ({e})\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    eprintln!("libsql-client summary ({url}): {summary}");
    summary
}

fn check_common(summary: &Value) {
    assert_eq!(summary["insert"], json!({"rowsAffected": 1, "lastInsertRowid": 1}), "{summary}");
    assert_eq!(summary["select"]["columns"], json!(["id", "name", "qty", "price", "data"]));
    assert_eq!(summary["select"]["row"], json!([1, "apple", 3, 1.25, [1, 2, 3]]));
    assert_eq!(summary["batch"], json!({"results": 3, "updated": 1, "count": 3}), "{summary}");
    assert_eq!(summary["sqlError"]["code"], "SQLITE_ERROR", "{summary}");
    assert!(summary["sqlError"]["message"].as_str().unwrap().contains("no such table"), "{summary}");
}

#[test]
fn python_libsql_client() {
    let required = support::python_required();
    let python = match python() {
        Ok(python) => python,
        Err(why) => {
            assert!(!required, "ROOST_REQUIRE_PYTHON=1 but the Python libsql-client is unavailable: {why}");
            eprintln!("warning: skipping the Python libsql-client test: {why}");
            return;
        }
    };
    let auth =
        Auth { tokens: vec![Token { secret: TOKEN.into(), prefix: Some("team-".into()) }], admin: None };
    let server = TestServer::with_auth(auth);

    let http = run_client(&python, &format!("{}/db/team-py/", server.url));
    check_common(&http);
    // The client wraps a batch in BEGIN ... COMMIT with conditions: all or nothing.
    assert_eq!(http["failedBatch"], json!({"error": "SQLITE_CONSTRAINT", "rolledBack": true}), "{http}");
    assert_eq!(http["names"], json!(["apple", "pear", "plum"]), "{http}");

    let ws = run_client(&python, &format!("{}/db/team-py-ws", server.url.replacen("http://", "ws://", 1)));
    check_common(&ws);
    assert_eq!(ws["failedBatch"], json!({"error": "SQLITE_CONSTRAINT", "rolledBack": true}), "{ws}");
    assert_eq!(ws["transaction"], json!({"countInside": 4}), "{ws}");
    assert_eq!(ws["names"], json!(["apple", "pear", "plum", "kiwi"]), "{ws}");
    let names = post(
        &format!("{}/v1/actors/team-py-ws/query", server.url),
        Some(TOKEN),
        &json!({"sql": "SELECT count(*) FROM items"}).to_string(),
    );
    assert_eq!(names.body["rows"], json!([[4]]), "the rolled-back row is not there");
}
