//! Fault injection: the store fails the Nth read, write or commit. After each failure the
//! database (reconnected) must equal the last acknowledged state, and `integrity_check` is ok.
//! A reference SQLite database receives exactly the transactions Roost acknowledged. The same
//! sweeps run on PostgreSQL, plus real connection cuts at every moment of the workload. In
//! memory the store is a `CrashStore`, crashed (unsynced batches dropped) before the final
//! reopen, so every acknowledged transaction must have been synced.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use roost::kv::testing::{Proxy, TestDatabase};
use roost::kv::{CrashStore, FaultPlan, FaultyStore, KvStore, PostgresConfig, PostgresStore};
use roost::{ActorId, Database, Params, Storage, StorageConfig, Value};
use support::run_txn;

/// The workload: each entry is one transaction (a script run in BEGIN/COMMIT). It mixes
/// batch-atomic commits, spilled (journaled) inserts, rewrites of existing pages, deletes and
/// a VACUUM that truncates.
fn workload() -> Vec<String> {
    let mut txns =
        vec!["CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); CREATE INDEX t_v ON t(v);".to_string()];
    for i in 0..12 {
        txns.push(match i % 6 {
            0 | 1 => format!("INSERT INTO t(v) VALUES (zeroblob({}) || x'{:02x}')", 50 + i, i),
            2 => format!(
                "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < 80) \
                 INSERT INTO t(v) SELECT zeroblob(3000) || x'{i:02x}' || i FROM s"
            ),
            3 => format!("UPDATE t SET v = zeroblob(2500) || x'{i:02x}' || id WHERE id % 2 = {}", i % 2),
            4 => format!("DELETE FROM t WHERE id % 5 = {}", i % 5),
            _ => "VACUUM".to_string(),
        });
    }
    txns
}

fn roost_rows(db: &mut Database) -> Vec<Vec<Value>> {
    // As with the integrity check, the injected fault may hit this read: retry once.
    let sql = "SELECT id, hex(v) FROM t ORDER BY id";
    let rows = db.execute(sql, &Params::None).or_else(|_| db.execute(sql, &Params::None));
    rows.expect("reading back").rows
}

fn reference_rows(conn: &rusqlite::Connection) -> Vec<Vec<Value>> {
    let Ok(mut stmt) = conn.prepare("SELECT id, hex(v) FROM t ORDER BY id") else { return Vec::new() };
    stmt.query_map([], |r| Ok(vec![Value::Integer(r.get(0)?), Value::Text(r.get(1)?)]))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn assert_same(db: &mut Database, reference: &rusqlite::Connection, context: &str) {
    // The one injected fault may hit this check itself: then it fails and a retry succeeds.
    let check = db.execute("PRAGMA integrity_check", &Params::None);
    let check = check.or_else(|_| db.execute("PRAGMA integrity_check", &Params::None)).unwrap();
    assert_eq!(check.rows, vec![vec![Value::Text("ok".into())]], "{context}");
    assert_eq!(roost_rows(db), reference_rows(reference), "{context}: state differs from acknowledged");
}

/// Runs the workload with `plan` installed (it fails one call). After the fault the same
/// handle goes on (it reconnects) and every later transaction must succeed. Returns whether a
/// fault was injected.
/// What a crash does to a store: a `CrashStore` drops its unsynced batches; PostgreSQL syncs
/// every commit, so it loses nothing.
trait Crash {
    fn crash_now(&self);
}

impl Crash for CrashStore {
    fn crash_now(&self) {
        self.crash();
    }
}

impl Crash for PostgresStore {
    fn crash_now(&self) {}
}

fn run_with_fault<S: KvStore + Crash>(store: Arc<FaultyStore<S>>, actor: &str, plan: FaultPlan) -> bool {
    let storage = Storage::new(store.clone() as Arc<dyn KvStore>, small_buffers()).unwrap();
    let reference = rusqlite::Connection::open_in_memory().unwrap();
    let id = ActorId::new(actor).unwrap();
    store.set_plan(plan);
    let mut db = storage.open(&id).or_else(|_| storage.open(&id)).expect("open");
    let mut checked = false;
    for (step, sql) in workload().iter().enumerate() {
        let before = store.injected();
        let mut outcome = run_txn(&mut db, sql);
        if outcome.is_err() {
            assert!(store.injected() > before, "{plan:?}: step {step} failed without a fault: {outcome:?}");
            // The fault was one call: a client's retry must go through.
            outcome = run_txn(&mut db, sql);
            assert!(outcome.is_ok(), "{plan:?}: step {step} retry failed: {outcome:?}");
        }
        reference.execute_batch(sql).unwrap();
        if store.injected() > 0 && !checked {
            checked = true;
            assert_same(&mut db, &reference, &format!("{plan:?} right after the fault at step {step}"));
        }
    }
    assert_same(&mut db, &reference, &format!("{plan:?} at the end"));
    drop(db);
    // A crash loses every unsynced batch: what was acknowledged must all have been synced.
    // The fault under test belongs to the workload, not to this restart: clear the plan.
    drop(storage);
    store.set_plan(FaultPlan::default());
    store.inner().crash_now();
    let storage = Storage::new(store.clone() as Arc<dyn KvStore>, small_buffers()).unwrap();
    let mut db = storage.open(&id).expect("reopen");
    assert_same(&mut db, &reference, &format!("{plan:?} after a crash and reopening"));
    store.injected() > 0
}

/// Small buffers so that larger transactions spill through the journal and flushes
/// (non-durable writes) happen inside transactions too.
fn small_buffers() -> StorageConfig {
    let mut config = StorageConfig { page_cache_bytes_max: 128 << 10, ..StorageConfig::default() };
    config.limits.write_buffer_bytes_max = 32 << 10;
    config
}

/// Fails call n = 1, 1+stride, ... until a run finishes without reaching the Nth call.
fn sweep(kind: &str, make: impl Fn(u64) -> FaultPlan, stride: u64) -> u64 {
    let mut injected = 0;
    let mut n = 1;
    while run_with_fault(Arc::new(FaultyStore::new(CrashStore::new())), "faulty", make(n)) {
        injected += 1;
        n += stride;
        assert!(n < 100_000, "{kind}: the workload never completes");
    }
    eprintln!("{kind}: {injected} runs with an injected fault (stride {stride})");
    assert!(injected > 3, "{kind}: too few fault positions exercised");
    injected
}

#[test]
fn every_commit_failure_loses_nothing_acknowledged() {
    sweep("commit", |n| FaultPlan { fail_commit: n, ..FaultPlan::default() }, 1);
}

#[test]
fn every_write_failure_loses_nothing_acknowledged() {
    sweep("write", |n| FaultPlan { fail_write: n, ..FaultPlan::default() }, 1);
}

#[test]
fn read_failures_lose_nothing_acknowledged() {
    sweep("read", |n| FaultPlan { fail_read: n, ..FaultPlan::default() }, 37);
}

/// The fault sweeps on PostgreSQL: one database, a fresh actor per run.
#[test]
fn fault_sweeps_on_postgres_lose_nothing_acknowledged() {
    let Some(db) = TestDatabase::create("faults") else { return };
    let store = Arc::new(FaultyStore::new(PostgresStore::open(PostgresConfig::new(db.url.clone())).unwrap()));
    let runs = AtomicU32::new(0);
    let run = |plan| {
        run_with_fault(store.clone(), &format!("faulty-{}", runs.fetch_add(1, Ordering::SeqCst)), plan)
    };
    // A few positions through every phase of the workload (a run takes seconds on PostgreSQL;
    // the memory sweeps above try every position).
    let commits = [1, 2, 5, 20, 60, 100].map(|n| run(FaultPlan { fail_commit: n, ..FaultPlan::default() }));
    let writes = [1, 3, 30, 100, 200].map(|n| run(FaultPlan { fail_write: n, ..FaultPlan::default() }));
    let reads = [1, 50, 500, 2000].map(|n| run(FaultPlan { fail_read: n, ..FaultPlan::default() }));
    for (kind, injected) in [("commit", &commits[..]), ("write", &writes[..]), ("read", &reads[..])] {
        assert!(
            injected.iter().filter(|i| **i).count() >= 3,
            "{kind}: too few faults injected: {injected:?}"
        );
    }
}

/// Runs the workload while every PostgreSQL connection is cut once, `cut_after` from the
/// start; a failed transaction is retried. Answers how long the workload took.
fn run_with_cut(storage: &Storage, proxy: &Proxy, actor: &str, cut_after: Option<Duration>) -> Duration {
    let reference = rusqlite::Connection::open_in_memory().unwrap();
    let id = ActorId::new(actor).unwrap();
    let started = Instant::now();
    let cutter = cut_after.map(|after| {
        let cut = proxy.cutter();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            cut();
        })
    });
    let mut db = storage.open(&id).or_else(|_| storage.open(&id)).expect("open");
    let mut failures = 0;
    for (step, sql) in workload().iter().enumerate() {
        while let Err(e) = run_txn(&mut db, sql) {
            // A cut fails the calls in flight; the reconnected handle must then go through.
            failures += 1;
            assert!(failures <= 3, "{actor}: step {step} keeps failing: {e}");
        }
        reference.execute_batch(sql).unwrap();
    }
    let elapsed = started.elapsed();
    if let Some(cutter) = cutter {
        cutter.join().unwrap();
    }
    assert_same(&mut db, &reference, &format!("{actor} (cut after {cut_after:?}, {failures} failures)"));
    drop(db);
    let mut db = storage.open(&id).expect("reopen");
    assert_same(&mut db, &reference, &format!("{actor} reopened"));
    elapsed
}

/// Real connection losses at every moment of the workload, lost commit answers included: what
/// was acknowledged is there, what failed is not.
#[test]
fn connection_cuts_on_postgres_lose_nothing_acknowledged() {
    let Some(db) = TestDatabase::create("cuts") else { return };
    let proxy = Proxy::start(&db.url);
    let store = Arc::new(PostgresStore::open(PostgresConfig::new(proxy.url(&db.url))).unwrap());
    let storage = Storage::new(store.clone() as Arc<dyn KvStore>, small_buffers()).unwrap();
    let total = run_with_cut(&storage, &proxy, "cut-none", None);
    let points = 10;
    for i in 0..points {
        let after = total * i / points;
        run_with_cut(&storage, &proxy, &format!("cut-{i}"), Some(after));
    }
    eprintln!("workload {total:?}; store {:?}", store.stats());
}
