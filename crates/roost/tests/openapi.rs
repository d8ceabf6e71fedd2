//! The OpenAPI document of the `/v1` API: the server serves the checked-in `docs/openapi.json`,
//! and schemathesis (PyPI, pip-installed into a venv under the target folder) fuzzes a live
//! server against it: no 5xx, and every answer (status, headers, body) as documented. Without
//! Python, venv or the network the schemathesis test is skipped with the reason printed, unless
//! ROOST_REQUIRE_PYTHON=1.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use roost::server::{Auth, ServerConfig, Token};
use roost::{HostConfig, StorageConfig};
use support::{agent, TestServer};

/// The schemathesis version the run was written against (its CLI flags and checks change).
const SCHEMATHESIS: &str = "4.32.5";
const TOKEN: &str = "openapi-test-token-0123456789";
/// Same seed, same requests: a failure can be replayed (`ROOST_SCHEMATHESIS_SEED` overrides).
const SEED: &str = "20261202";
/// Test cases per operation and phase; keeps both runs (in parallel) around a minute
/// (`ROOST_SCHEMATHESIS_EXAMPLES` overrides, for longer runs).
const MAX_EXAMPLES: &str = "200";
/// The same for the run at tight limits.
const TIGHT_EXAMPLES: &str = "100";

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn checked_in() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn served_document_is_the_checked_in_file() {
    let server = TestServer::with_auth(auth());
    let mut response = agent().get(format!("{}/v1/openapi.json", server.url)).call().unwrap();
    assert_eq!(response.status(), 200, "served without a token");
    assert_eq!(response.headers()["content-type"], "application/json");
    let served = response.body_mut().read_to_vec().unwrap();
    assert!(served == checked_in(), "GET /v1/openapi.json differs from docs/openapi.json");
    let document: serde_json::Value = serde_json::from_slice(&served).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
}

/// The `st` command of a venv with the pinned schemathesis, or why there is none.
fn schemathesis() -> Result<PathBuf, String> {
    let requirement = format!("schemathesis=={SCHEMATHESIS}");
    let check = format!(
        "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '{SCHEMATHESIS}')"
    );
    support::python_venv("python-schemathesis", &requirement, &check).map(|venv| venv.join("bin/st"))
}

/// The token every schemathesis run's server accepts (so that the 401 answers are exercised
/// too, by the `ignored_auth` check).
fn auth() -> Auth {
    Auth { tokens: vec![Token { secret: TOKEN.into(), prefix: None }], admin: None }
}

/// Runs schemathesis against `server` with every check and `extra` arguments; panics with its
/// report when it finds anything. Skips (returns) when schemathesis is unavailable.
fn run_schemathesis(server: &TestServer, run: &str, examples: &str, extra: &[&str]) {
    let st = match schemathesis() {
        Ok(st) => st,
        Err(why) => {
            assert!(
                !support::python_required(),
                "ROOST_REQUIRE_PYTHON=1 but schemathesis is unavailable: {why}"
            );
            eprintln!("warning: skipping the schemathesis run: {why}");
            return;
        }
    };
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi/schemathesis.toml");
    let report = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("schemathesis-report-{run}"));
    let schema = format!("{}/v1/openapi.json", server.url);
    let authorization = format!("Authorization: Bearer {TOKEN}");
    let (seed, examples) =
        (setting("ROOST_SCHEMATHESIS_SEED", SEED), setting("ROOST_SCHEMATHESIS_EXAMPLES", examples));
    #[rustfmt::skip]
    let mut args = vec![
        "--config-file", config.to_str().expect("UTF-8 path"),
        "run", &schema,
        "--checks", "all",
        "--header", &authorization,
        "--max-examples", &examples,
        "--seed", &seed,
        "--workers", "1",
        "--generation-database", "none",
        // Every request and answer, for a failure's post-mortem.
        "--report", "har",
        "--report-dir", report.to_str().expect("UTF-8 path"),
        "--no-color",
    ];
    args.extend_from_slice(extra);
    eprintln!("running: {} {}", st.display(), args.join(" "));
    let started = std::time::Instant::now();
    // Its caches go beside the report, not into the source tree.
    let output =
        Command::new(&st).args(&args).current_dir(env!("CARGO_TARGET_TMPDIR")).output().expect("st runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("schemathesis ({run}) took {:?}:\n{stdout}", started.elapsed());
    assert!(
        output.status.success(),
        "schemathesis found problems ({run})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

#[test]
fn schemathesis_finds_nothing() {
    let server = TestServer::with_auth(auth());
    run_schemathesis(&server, "default-limits", MAX_EXAMPLES, &[]);
}

/// Limits small enough for generated requests to hit them, so the error answers of the limits
/// (400 too many rows or SQL too long, 408, 413 for bodies, uploads and answers, SQLITE_FULL)
/// are checked against the document too. Valid requests may then be refused, so the
/// positive-data check is off for this run.
#[test]
fn schemathesis_finds_nothing_at_tight_limits() {
    const DB_BYTES_MAX: u64 = 64 << 10;
    let config = ServerConfig {
        auth: auth(),
        body_bytes_max: 512,
        statement_bytes_max: 160,
        // As `roost serve` sets them: the import limit is the database size limit, and the
        // spools hold one import or export of the largest size (a smaller spool cap would
        // answer such an export `overloaded` forever).
        import_bytes_max: DB_BYTES_MAX,
        spool_bytes_max: 2 * DB_BYTES_MAX,
        ..ServerConfig::default()
    };
    // The document's examples hit these: three rows of noise pass 256 bytes, counting to
    // 200,000 takes longer than 2 ms.
    let host = HostConfig { answer_bytes_max: 256, statement_timeout_ms: 2, ..HostConfig::default() };
    let storage = StorageConfig {
        rows_max: 3,
        db_bytes_max: DB_BYTES_MAX,
        value_bytes_max: 4096,
        ..StorageConfig::default()
    };
    let server = TestServer::start(config, host, storage);
    run_schemathesis(
        &server,
        "tight-limits",
        TIGHT_EXAMPLES,
        &["--exclude-checks", "positive_data_acceptance"],
    );
}

/// Inputs the fuzzer does not generate: a path segment that is not UTF-8 once percent-decoded
/// (axum's own rejection answered it in plain text) gets the documented error body.
#[test]
fn undecodable_actor_ids_get_the_error_body() {
    let server = TestServer::default_config();
    let base = format!("{}/v1/actors/%FF", server.url);
    let answers = [
        support::post(&format!("{base}/query"), None, r#"{"sql": "SELECT 1"}"#),
        support::post(&format!("{base}/batch"), None, r#"{"statements": []}"#),
        support::post(&format!("{base}/sleep"), None, ""),
        support::get(&base, None),
        support::delete(&base, None),
        support::get(&format!("{base}/export"), None),
    ];
    for answer in answers {
        assert_eq!((answer.status, answer.code()), (400, "invalid_actor_id"), "{}", answer.body);
    }
    let import = agent().put(format!("{base}/import")).send(&b"SQLite format 3\0"[..]).unwrap();
    assert_eq!(import.status(), 400);
    assert_eq!(import.headers()["content-type"], "application/json");
}
