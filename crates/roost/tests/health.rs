//! Health, readiness and storage errors against a real server over a store that fails on
//! command: a disk below its reserve answers 507 `storage_full` (Hrana: `SQLITE_FULL`), reads
//! keep working and writes resume once space is back, without a restart; a stopped store makes
//! `/healthz` and `/readyz` answer 503 and is reopened in place (writes resume), or, when it
//! cannot be, ends `serve` with `StoreFailed`.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use roost::kv::{FaultPlan, FaultyStore, KvResult, KvStats, KvStore, MemoryStore, StoreHealth, WriteBatch};
use roost::server::{serve, AppState, ServeExit, ServerConfig};
use roost::{Host, HostConfig, Storage, StorageConfig};
use serde_json::json;
use support::{get, post};

/// A server over `store`; the thread's result is how `serve` ended.
fn start(store: Arc<dyn KvStore>, check_ms: u64) -> (String, std::thread::JoinHandle<ServeExit>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let thread = std::thread::spawn(move || {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let storage = Storage::new(store, StorageConfig::default()).unwrap();
            let host = Host::new(storage, HostConfig::default()).unwrap();
            let config = ServerConfig {
                store_check_interval_ms: check_ms,
                drain_timeout_ms: 2_000,
                ..Default::default()
            };
            // Ends only when the store stops (the tests never send a shutdown).
            serve(listener, AppState::new(host, config), std::future::pending()).await.unwrap()
        })
    });
    (url, thread)
}

fn query(url: &str, actor: &str, sql: &str) -> support::Answer {
    post(&format!("{url}/v1/actors/{actor}/query"), None, &json!({"sql": sql}).to_string())
}

#[test]
fn a_full_disk_refuses_writes_with_507_keeps_reads_and_recovers_without_restart() {
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let (url, _server) = start(store.clone(), 20);
    assert_eq!(query(&url, "a", "CREATE TABLE t(v TEXT)").status, 200);
    assert_eq!(query(&url, "a", "INSERT INTO t VALUES ('kept')").status, 200);

    store.set_full(true);
    let refused = query(&url, "a", "INSERT INTO t VALUES ('refused')");
    assert_eq!((refused.status, refused.code()), (507, "storage_full"), "{}", refused.body);
    let read = query(&url, "a", "SELECT v FROM t");
    assert_eq!((read.status, &read.body["rows"]), (200, &json!([["kept"]])));
    let hrana = post(
        &format!("{url}/db/a/v2/pipeline"),
        None,
        &json!({"baton": null, "requests": [{"type": "execute", "stmt": {"sql": "INSERT INTO t VALUES ('h')"}}]})
            .to_string(),
    );
    assert_eq!(hrana.status, 200);
    assert_eq!(hrana.body["results"][0]["error"]["code"], "SQLITE_FULL", "{}", hrana.body);
    let health = get(&format!("{url}/healthz"), None);
    assert_eq!(health.status, 503);
    assert!(health.body["reason"].as_str().unwrap().contains("storage full"), "{}", health.body);
    assert_eq!(get(&format!("{url}/readyz"), None).status, 200, "a full node still serves reads");

    store.set_full(false);
    assert_eq!(query(&url, "a", "INSERT INTO t VALUES ('after')").status, 200);
    assert_eq!(get(&format!("{url}/healthz"), None).status, 200);
    let rows = query(&url, "a", "SELECT v FROM t ORDER BY rowid").body["rows"].clone();
    assert_eq!(rows, json!([["kept"], ["after"]]));
}

#[test]
fn a_stopped_store_is_reopened_in_place_and_writes_resume() {
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let (url, _server) = start(store.clone(), 300);
    assert_eq!(get(&format!("{url}/readyz"), None).status, 200);
    assert_eq!(query(&url, "b", "CREATE TABLE t(v)").status, 200);
    assert_eq!(query(&url, "b", "INSERT INTO t VALUES ('acked')").status, 200);

    store.set_plan(FaultPlan { fail_after_commit: 1, ..FaultPlan::default() });
    let failed = query(&url, "b", "INSERT INTO t VALUES ('unknown')");
    assert_eq!((failed.status, failed.code()), (503, "store_unavailable"), "{}", failed.body);
    assert!(failed.retry_after.is_some());
    // Health reads the store directly: 503 at once, before the serve loop reopens it.
    let health = get(&format!("{url}/healthz"), None);
    assert_eq!(health.status, 503);
    assert!(health.body["reason"].as_str().unwrap().contains("store failed"), "{}", health.body);
    assert_eq!(get(&format!("{url}/readyz"), None).status, 503);

    let deadline = Instant::now() + Duration::from_secs(5);
    while query(&url, "b", "INSERT INTO t VALUES ('after')").status != 200 {
        assert!(Instant::now() < deadline, "writes did not resume after the reopen");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(&format!("{url}/healthz"), None).status, 200);
    assert_eq!(get(&format!("{url}/readyz"), None).status, 200);
    let rows = query(&url, "b", "SELECT v FROM t WHERE v <> 'unknown' ORDER BY rowid").body["rows"].clone();
    assert_eq!(rows, json!([["acked"], ["after"]]));
}

/// A store that stopped and cannot be reopened in place.
struct Unrevivable(FaultyStore<MemoryStore>);

impl KvStore for Unrevivable {
    fn get_many(&self, keys: &[Vec<u8>]) -> KvResult<Vec<Option<Vec<u8>>>> {
        self.0.get_many(keys)
    }
    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> KvResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.0.scan(start, end, limit)
    }
    fn write(&self, batch: WriteBatch) -> KvResult<()> {
        self.0.write(batch)
    }
    fn stats(&self) -> KvStats {
        self.0.stats()
    }
    fn health(&self) -> StoreHealth {
        self.0.health()
    }
    fn reopen(&self) -> KvResult<bool> {
        Ok(false)
    }
}

#[test]
fn a_store_that_cannot_be_reopened_ends_serve_so_the_process_exits() {
    let store = Arc::new(Unrevivable(FaultyStore::new(MemoryStore::new())));
    let (url, server) = start(store.clone(), 100);
    assert_eq!(query(&url, "c", "CREATE TABLE t(v)").status, 200);
    store.0.set_plan(FaultPlan { fail_after_commit: 1, ..FaultPlan::default() });
    assert_eq!(query(&url, "c", "INSERT INTO t VALUES (1)").code(), "store_unavailable");
    let started = Instant::now();
    let exit = server.join().unwrap();
    assert!(matches!(exit, ServeExit::StoreFailed(_)), "{exit:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "serve ended within the check interval plus drain");
}
