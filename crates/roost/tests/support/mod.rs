//! A real server on a loopback port, for integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread::JoinHandle;

use roost::kv::MemoryStore;
use roost::server::{serve, AppState, Auth, ServerConfig};
use roost::{Host, HostConfig, Storage, StorageConfig};
use serde_json::Value;

pub struct TestServer {
    pub url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start(config: ServerConfig, host: HostConfig, storage: StorageConfig) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let storage = Storage::new(Arc::new(MemoryStore::new()), storage).unwrap();
                let host = Host::new(storage, host).unwrap();
                serve(listener, AppState::new(host, config), async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            });
        });
        Self { url, shutdown: Some(tx), thread: Some(thread) }
    }

    pub fn default_config() -> Self {
        Self::start(ServerConfig::default(), HostConfig::default(), StorageConfig::default())
    }

    /// A server with default limits and these tokens.
    pub fn with_auth(auth: Auth) -> Self {
        Self::start(
            ServerConfig { auth, ..ServerConfig::default() },
            HostConfig::default(),
            StorageConfig::default(),
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// Status, `Retry-After` and JSON body (`Value::Null` when the body is not JSON).
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

fn answer(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    let mut response = response.expect("transport error");
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer { status, retry_after, body }
}

pub fn post(url: &str, token: Option<&str>, body: &str) -> Answer {
    let mut request = agent().post(url).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    answer(request.send(body))
}

pub fn get(url: &str, token: Option<&str>) -> Answer {
    let mut request = agent().get(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    answer(request.call())
}

pub fn delete(url: &str, token: Option<&str>) -> Answer {
    let mut request = agent().delete(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    answer(request.call())
}

/// Runs `sql` in a transaction of its own (`VACUUM` alone), rolling back on failure.
pub fn run_txn(db: &mut roost::Database, sql: &str) -> Result<(), roost::Error> {
    if sql == "VACUUM" {
        return db.execute_script(sql);
    }
    db.execute_script(&format!("BEGIN; {sql}; COMMIT;")).inspect_err(|_| {
        if db.in_transaction() {
            let _ = db.execute_script("ROLLBACK");
        }
    })
}

/// Runs `program` with `args`; its stderr when it fails.
fn run_checked(program: &Path, args: &[&str]) -> Result<(), String> {
    let output =
        Command::new(program).args(args).output().map_err(|e| format!("{}: {e}", program.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{} {args:?} failed: {}", program.display(), String::from_utf8_lossy(&output.stderr)))
    }
}

/// A Python virtual environment under the target folder (`name`) with `requirement`
/// pip-installed, ready once `python -c check` succeeds; its folder, or why there is none
/// (no python3, no venv module, no network). Made once, reused by later runs.
pub fn python_venv(name: &str, requirement: &str, check: &str) -> Result<PathBuf, String> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    // Tests of one binary (threads) and of several (processes) may ask for the same venv at
    // once; whoever holds the lock builds it, the others wait and then find it ready.
    let lock_path = venv.with_extension("lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock().map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    let python = venv.join("bin/python");
    let ready = || Command::new(&python).args(["-c", check]).output().is_ok_and(|o| o.status.success());
    if ready() {
        return Ok(venv);
    }
    // `--clear`: a venv left half-built by an interrupted run is rebuilt, not reused.
    run_checked(Path::new("python3"), &["-m", "venv", "--clear", venv.to_str().expect("UTF-8 path")])?;
    run_checked(&venv.join("bin/pip"), &["install", "--quiet", "--disable-pip-version-check", requirement])?;
    if ready() {
        Ok(venv)
    } else {
        Err(format!("`python -c {check:?}` still fails after pip install {requirement}"))
    }
}

/// Whether a missing Python tool must fail the test instead of skipping it (CI sets it).
pub fn python_required() -> bool {
    std::env::var("ROOST_REQUIRE_PYTHON").is_ok_and(|v| v == "1")
}

/// The Hrana batch `@libsql/client` sends for `client.batch(stmts, "write")`: `BEGIN
/// IMMEDIATE`, then each statement and the `COMMIT` only if the step before succeeded (and,
/// with `v3`, the transaction is still open: `not is_autocommit`), then a `ROLLBACK` unless
/// the `COMMIT` succeeded. Steps: 0 is `BEGIN`, 1..=n the statements, n+1 `COMMIT`, n+2
/// `ROLLBACK`.
pub fn client_batch(stmts: &[&str], v3: bool) -> Value {
    use serde_json::json;
    let guard = |previous: usize| {
        let ok = json!({"type": "ok", "step": previous});
        let open = json!({"type": "not", "cond": {"type": "is_autocommit"}});
        if v3 {
            json!({"type": "and", "conds": [ok, open]})
        } else {
            ok
        }
    };
    let mut steps = vec![json!({"stmt": {"sql": "BEGIN IMMEDIATE"}})];
    for (previous, sql) in stmts.iter().chain(&["COMMIT"]).enumerate() {
        steps.push(json!({"condition": guard(previous), "stmt": {"sql": sql}}));
    }
    let commit = steps.len() - 1;
    let not_committed = json!({"type": "not", "cond": {"type": "ok", "step": commit}});
    steps.push(json!({"condition": not_committed, "stmt": {"sql": "ROLLBACK"}}));
    json!({"steps": steps})
}

/// Which steps of a `BatchResult` ran to their end, and which failed.
pub fn ran_and_failed(result: &Value) -> (Vec<bool>, Vec<bool>) {
    let flags = |key: &str| result[key].as_array().expect(key).iter().map(|v| !v.is_null()).collect();
    (flags("step_results"), flags("step_errors"))
}
