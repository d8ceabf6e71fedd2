//! Actor host behaviour: single-flight wakes, serial execution, idle sleep, LRU eviction under
//! the budget, admission control, sleep/delete/list, poisoning.
//!
//! SQLite's heap limits are process-wide and every host sets them, so all hosts here use the
//! same generous budget and shape `awake_max` through `actor_bytes_estimate` (with the
//! measured cost off: the measurement reads process-wide figures).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roost::kv::{KvError, KvResult, KvStats, KvStore, MemoryStore, Value as KvValue, WriteBatch};
use roost::{ActorId, ActorState, Host, HostConfig, HostError, Params, Storage, StorageConfig, Value};

const BUDGET: u64 = 1 << 30;

fn host_with(config: HostConfig) -> Host {
    let storage = Storage::new(Arc::new(MemoryStore::new()), StorageConfig::default()).unwrap();
    Host::new(storage, HostConfig { memory_budget_bytes: BUDGET, ..config }).unwrap()
}

/// A config allowing about `awake` actors at once.
fn config_awake(awake: u64) -> HostConfig {
    let probe = HostConfig { memory_budget_bytes: BUDGET, ..HostConfig::default() };
    let storage = Storage::new(Arc::new(MemoryStore::new()), StorageConfig::default()).unwrap();
    let connections = roost::host::BudgetPlan::new(&probe, &storage).unwrap().connections_bytes;
    HostConfig { actor_bytes_estimate: connections / awake, measure_actor_bytes: false, ..probe }
}

fn id(s: &str) -> ActorId {
    ActorId::new(s).unwrap()
}

async fn count(host: &Host, actor: &ActorId) -> i64 {
    let r = host.execute(actor, "SELECT count(*) FROM t", Params::None).await.unwrap();
    match r.rows[0][0] {
        Value::Integer(n) => n,
        ref other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_wake_and_run_one_at_a_time() {
    let host = host_with(HostConfig::default());
    let a = id("counter");
    host.with_db(&a, |db| db.execute_script("CREATE TABLE c(n INTEGER); INSERT INTO c VALUES (0);"))
        .await
        .unwrap();
    assert!(host.sleep(&a).await.unwrap());
    assert_eq!(host.state(&a), ActorState::Asleep);
    let wakes = host.stats().wakes_total;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (host, a) = (host.clone(), a.clone());
            tokio::spawn(async move {
                // Read-modify-write in two statements: only correct if requests never interleave.
                host.with_db(&a, |db| {
                    let n = db.execute("SELECT n FROM c", &Params::None)?.rows[0][0].clone();
                    db.execute("UPDATE c SET n = ? + 1", &Params::Positional(vec![n]))?;
                    Ok(())
                })
                .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(host.stats().wakes_total - wakes, 1, "one wake for 64 concurrent requests");
    let n = host.execute(&a, "SELECT n FROM c", Params::None).await.unwrap().rows;
    assert_eq!(n, vec![vec![Value::Integer(64)]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actors_fall_asleep() {
    let host =
        host_with(HostConfig { idle_timeout_ms: 100, reaper_interval_ms: 20, ..HostConfig::default() });
    let a = id("sleepy");
    host.execute(&a, "CREATE TABLE t(x)", Params::None).await.unwrap();
    assert_eq!(host.state(&a), ActorState::Awake);
    assert_eq!(host.stats().actors_awake, 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(host.state(&a), ActorState::Asleep);
    let stats = host.stats();
    assert_eq!((stats.actors_awake, stats.actors_known), (0, 0));
    assert!(stats.idle_sleeps_total >= 1);
    assert_eq!(count(&host, &a).await, 0, "wakes again with its data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_recently_used_idle_actors_sleep_when_over_budget() {
    let host = host_with(config_awake(10));
    assert_eq!(host.plan().awake_max, 10);
    for i in 0..30 {
        let a = id(&format!("lru-{i:02}"));
        host.with_db(&a, move |db| {
            db.execute_script("CREATE TABLE t(x)")?;
            db.execute("INSERT INTO t VALUES (?)", &Params::Positional(vec![Value::Integer(i)]))?;
            Ok(())
        })
        .await
        .unwrap();
        assert!(host.stats().actors_awake <= 10);
    }
    let stats = host.stats();
    assert!(stats.evictions_total >= 20, "{stats:?}");
    assert_eq!(host.state(&id("lru-29")), ActorState::Awake, "the most recent stays awake");
    assert_eq!(host.state(&id("lru-00")), ActorState::Asleep, "the oldest went first");
    for i in 0..30 {
        assert_eq!(count(&host, &id(&format!("lru-{i:02}"))).await, 1, "evicted actors keep their data");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_control_answers_overloaded_and_nothing_else() {
    let config = HostConfig { wakes_in_flight_max: 1, wake_queue_max: 3, ..HostConfig::default() };
    let host = host_with(config);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let host = host.clone();
            tokio::spawn(
                async move { host.execute(&id(&format!("storm-{i}")), "SELECT 1", Params::None).await },
            )
        })
        .collect();
    let (mut ok, mut overloaded) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(HostError::Overloaded { retry_after_ms, .. }) => {
                assert!(retry_after_ms > 0);
                overloaded += 1;
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert!(ok >= 1 && overloaded >= 1, "ok {ok}, overloaded {overloaded}");
    assert_eq!(host.stats().overloaded_total, overloaded);
    assert_eq!(host.stats().wakes_queued, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_idle_actor_to_evict_is_overloaded_not_oom() {
    let host = host_with(config_awake(2));
    let hold = |name: &'static str| {
        let host = host.clone();
        tokio::spawn(async move {
            host.with_db(&id(name), |_| {
                std::thread::sleep(Duration::from_millis(300));
                Ok(())
            })
            .await
        })
    };
    let (a, b) = (hold("busy-a"), hold("busy-b"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = host.execute(&id("third"), "SELECT 1", Params::None).await.unwrap_err();
    assert!(matches!(err, HostError::Overloaded { .. }), "{err:?}");
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    host.execute(&id("third"), "SELECT 1", Params::None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleep_delete_and_list() {
    let host = host_with(HostConfig::default());
    for name in ["list-a", "list-b", "other"] {
        host.execute(&id(name), "CREATE TABLE t(x)", Params::None).await.unwrap();
    }
    host.execute(&id("list-empty"), "SELECT 1", Params::None).await.unwrap();
    let listed = host.list("list-", None, 10).await.unwrap().actors;
    let names: Vec<_> = listed.iter().map(|(id, st, _)| (id.as_str().to_string(), *st)).collect();
    assert_eq!(names, vec![("list-a".into(), ActorState::Awake), ("list-b".into(), ActorState::Awake)]);
    assert!(host.sleep(&id("list-a")).await.unwrap());
    assert!(!host.sleep(&id("list-a")).await.unwrap());
    let page = host.list("", Some(id("list-a")), 1).await.unwrap().actors;
    assert_eq!(page[0].0, id("list-b"));
    assert_eq!(host.list("list-", None, 10).await.unwrap().actors[0].1, ActorState::Asleep);
    assert!(host.delete(&id("list-b")).await.unwrap());
    assert!(!host.delete(&id("never")).await.unwrap());
    assert_eq!(host.list("list-", None, 10).await.unwrap().actors.len(), 1);
    let gone = host.execute(&id("list-b"), "SELECT count(*) FROM t", Params::None).await.unwrap_err();
    assert!(matches!(gone, HostError::Database(roost::Error::Sql { .. })), "deleted: no table t: {gone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_job_poisons_only_its_actor() {
    let host = host_with(HostConfig::default());
    host.execute(&id("fine"), "CREATE TABLE t(x)", Params::None).await.unwrap();
    let err =
        host.with_db(&id("broken"), |_| -> Result<(), roost::Error> { panic!("bug") }).await.unwrap_err();
    assert_eq!(err, HostError::Poisoned);
    assert_eq!(host.state(&id("broken")), ActorState::Poisoned);
    assert_eq!(host.execute(&id("broken"), "SELECT 1", Params::None).await.unwrap_err(), HostError::Poisoned);
    assert_eq!(count(&host, &id("fine")).await, 0);
    let stats = host.stats();
    assert_eq!((stats.actors_poisoned, stats.actors_waking, stats.actors_known), (1, 0, 2));
    assert!(host.sleep(&id("broken")).await.unwrap());
    assert_eq!((host.stats().actors_poisoned, host.stats().actors_known), (0, 1));
    host.execute(&id("broken"), "SELECT 1", Params::None).await.unwrap();
    assert_eq!((host.stats().actors_poisoned, host.stats().actors_awake), (0, 2));
}

#[test]
fn a_budget_too_small_is_a_config_error() {
    let storage = Storage::new(Arc::new(MemoryStore::new()), StorageConfig::default()).unwrap();
    let config = HostConfig { memory_budget_bytes: 8 << 20, ..HostConfig::default() };
    assert!(matches!(Host::new(storage, config), Err(HostError::Config(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_queued_on_one_actor_are_bounded() {
    let host = host_with(HostConfig { actor_queue_max: 4, ..HostConfig::default() });
    let a = id("hot");
    host.execute(&a, "SELECT 1", Params::None).await.unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (host, a) = (host.clone(), a.clone());
            tokio::spawn(async move {
                host.with_db(&a, |_| {
                    std::thread::sleep(Duration::from_millis(20));
                    Ok(())
                })
                .await
            })
        })
        .collect();
    let mut overloaded = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => {}
            Err(HostError::Overloaded { .. }) => overloaded += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(overloaded > 0 && overloaded < 40, "{overloaded}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_statements_are_interrupted_and_transactions_do_not_leak() {
    let host = host_with(HostConfig { statement_timeout_ms: 200, ..HostConfig::default() });
    let a = id("slow");
    host.execute(&a, "CREATE TABLE t(x)", Params::None).await.unwrap();
    let endless = "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s) SELECT count(*) FROM s";
    let started = std::time::Instant::now();
    let err = host.execute(&a, endless, Params::None).await.unwrap_err();
    assert_eq!(err, HostError::Database(roost::Error::Interrupted));
    assert!(started.elapsed() < Duration::from_secs(5));
    // A request that leaves a transaction open has it rolled back.
    host.execute(&a, "BEGIN", Params::None).await.unwrap();
    host.execute(&a, "INSERT INTO t VALUES (1)", Params::None).await.unwrap();
    let in_txn = host.with_db(&a, |db| Ok(db.in_transaction())).await.unwrap();
    assert!(!in_txn);
    assert_eq!(count(&host, &a).await, 1, "the INSERT autocommitted outside the abandoned BEGIN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_actor_keeps_its_transaction_across_jobs() {
    let host = host_with(HostConfig::default());
    let a = id("pinned");
    host.execute(&a, "CREATE TABLE t(x)", Params::None).await.unwrap();
    let pinned = host.pin(&a).await.unwrap();
    host.run_pinned(&pinned, |db| db.execute_script("BEGIN; INSERT INTO t VALUES (1);")).await.unwrap();
    // Another request waits for the pin to go.
    let other = {
        let (host, a) = (host.clone(), a.clone());
        tokio::spawn(async move { count(&host, &a).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!other.is_finished());
    host.run_pinned(&pinned, |db| db.execute_script("INSERT INTO t VALUES (2); COMMIT;")).await.unwrap();
    drop(pinned);
    assert_eq!(other.await.unwrap(), 2);
}

// Registry races (issue 8, point 7).

/// Fails the first read once armed, after holding it until the gate opens: a slow, failing
/// open that concurrent callers can pile up on.
struct GatedStore {
    inner: MemoryStore,
    armed: AtomicBool,
    gate: (std::sync::Mutex<bool>, std::sync::Condvar),
    reads: AtomicU64,
}

impl GatedStore {
    fn read(&self) -> KvResult<()> {
        if !self.armed.load(Ordering::SeqCst) {
            return Ok(());
        }
        if self.reads.fetch_add(1, Ordering::SeqCst) > 0 {
            return Ok(());
        }
        let (open, changed) = &self.gate;
        let _open = changed.wait_while(open.lock().unwrap(), |open| !*open).unwrap();
        Err(KvError::Injected("read"))
    }

    fn open_gate(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

impl KvStore for GatedStore {
    fn get_many(&self, keys: &[Vec<u8>]) -> KvResult<Vec<Option<KvValue>>> {
        self.read()?;
        self.inner.get_many(keys)
    }
    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> KvResult<Vec<(Vec<u8>, KvValue)>> {
        self.read()?;
        self.inner.scan(start, end, limit)
    }
    fn write(&self, batch: WriteBatch) -> KvResult<()> {
        self.inner.write(batch)
    }
    fn stats(&self) -> KvStats {
        self.inner.stats()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_awake_count_never_exceeds_awake_max_in_a_wake_storm() {
    let host = host_with(config_awake(8));
    assert_eq!(host.plan().awake_max, 8);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (host, stop) = (host.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::SeqCst) {
                peak = peak.max(host.stats().actors_awake);
                std::thread::yield_now();
            }
            peak
        })
    };
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let host = host.clone();
            tokio::spawn(
                async move { host.execute(&id(&format!("wave-{i}")), "SELECT 1", Params::None).await },
            )
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(HostError::Overloaded { .. }) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    stop.store(true, Ordering::SeqCst);
    let sampled = sampler.join().unwrap();
    let stats = host.stats();
    assert!(ok >= 1, "{stats:?}");
    assert!(sampled <= 8, "sampled {sampled} awake actors, awake_max 8");
    assert!(stats.actors_awake <= 8 && stats.awake_peak <= 8, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_wake_is_answered_to_every_waiter() {
    let store = Arc::new(GatedStore {
        inner: MemoryStore::new(),
        armed: AtomicBool::new(false),
        gate: Default::default(),
        reads: AtomicU64::new(0),
    });
    let storage = Storage::new(store.clone() as Arc<dyn KvStore>, StorageConfig::default()).unwrap();
    let host =
        Host::new(storage, HostConfig { memory_budget_bytes: BUDGET, ..HostConfig::default() }).unwrap();
    store.armed.store(true, Ordering::SeqCst);
    let a = id("doomed-wake");
    let callers = 16;
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (host, a) = (host.clone(), a.clone());
            tokio::spawn(async move { host.execute(&a, "SELECT 1", Params::None).await })
        })
        .collect();
    // Every caller is registered (waiting on the one wake) and the open is stuck in its read.
    while host.stats().requests_total < callers || store.reads.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    store.open_gate();
    let mut errors = Vec::new();
    for t in tasks {
        errors.push(t.await.unwrap().expect_err("the wake failed"));
    }
    assert_eq!(store.reads.load(Ordering::SeqCst), 1, "one open attempt for {callers} callers");
    assert!(matches!(errors[0], HostError::Database(_)), "{:?}", errors[0]);
    assert!(errors.iter().all(|e| *e == errors[0]), "{errors:?}");
    assert_eq!(host.state(&a), ActorState::Asleep);
    host.execute(&a, "SELECT 1", Params::None).await.expect("a later request wakes it again");
}

/// A job that holds an actor's turn for `ms` and records when it ended.
fn hold_for(
    host: &Host,
    a: &ActorId,
    ms: u64,
) -> (impl std::future::Future<Output = ()>, Arc<Mutex<Option<Instant>>>) {
    let ended = Arc::new(Mutex::new(None));
    let (host, a, end) = (host.clone(), a.clone(), ended.clone());
    let run = async move {
        let _ = host
            .with_db(&a, move |_| {
                std::thread::sleep(Duration::from_millis(ms));
                *end.lock().unwrap() = Some(Instant::now());
                Ok(())
            })
            .await;
    };
    (run, ended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_request_keeps_the_turn_until_its_job_ends() {
    let host = host_with(HostConfig::default());
    let a = id("cancelled");
    host.execute(&a, "CREATE TABLE t(x)", Params::None).await.unwrap();
    let (first, first_ended) = hold_for(&host, &a, 600);
    assert!(tokio::time::timeout(Duration::from_millis(100), first).await.is_err(), "cancelled");
    // The job still runs: the actor is not free, neither for a sleep nor for a request.
    let sleep = tokio::time::timeout(Duration::from_millis(200), host.sleep(&a)).await;
    assert!(sleep.is_err(), "the sleep waits for the cancelled request's job: {sleep:?}");
    let started = host
        .with_db(&a, |db| {
            let started = Instant::now();
            db.execute("SELECT count(*) FROM t", &Params::None)?;
            Ok(started)
        })
        .await
        .unwrap();
    let ended = first_ended.lock().unwrap().expect("the cancelled job ran to its end");
    assert!(started >= ended, "the next request started before the cancelled job ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_requests_watchdog_does_not_interrupt_the_next_request() {
    let host = host_with(HostConfig { statement_timeout_ms: 1_500, ..HostConfig::default() });
    let a = id("watched");
    host.execute(&a, "SELECT 1", Params::None).await.unwrap();
    // The first job ends by itself after 300 ms; its caller gave up after 50 ms.
    let started = Instant::now();
    let (first, _) = hold_for(&host, &a, 300);
    assert!(tokio::time::timeout(Duration::from_millis(50), first).await.is_err());
    // The next request runs short statements from ~300 ms to 1,650 ms: past the moment the
    // first job's watchdog would fire (1,500 ms), within its own timeout (~1,800 ms).
    let short = "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < 20000) SELECT count(*) FROM s";
    let outcome = host
        .with_db(&a, move |db| {
            while started.elapsed() < Duration::from_millis(1_650) {
                db.execute(short, &Params::None)?;
            }
            Ok(())
        })
        .await;
    assert_eq!(outcome, Ok(()), "interrupted by the watchdog of a request that had ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_wake_sleep_or_delete_does_not_strand_the_actor() {
    let host = host_with(HostConfig { blocking_threads: 1, ..HostConfig::default() });
    let (busy, asleep, awake, doomed) = (id("busy"), id("asleep"), id("awake"), id("doomed"));
    for a in [&busy, &awake, &doomed] {
        host.execute(a, "CREATE TABLE t(x)", Params::None).await.unwrap();
    }
    // The only blocking thread is busy, so the open, the close and the delete below wait in
    // its queue when their callers give up.
    let (hold, _) = hold_for(&host, &busy, 1_000);
    let hold = tokio::spawn(hold);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let short = Duration::from_millis(50);
    assert!(tokio::time::timeout(short, host.execute(&asleep, "SELECT 1", Params::None)).await.is_err());
    assert!(tokio::time::timeout(short, host.sleep(&awake)).await.is_err());
    assert!(tokio::time::timeout(short, host.delete(&doomed)).await.is_err());
    hold.await.unwrap();
    let long = Duration::from_secs(5);
    for a in [&asleep, &awake, &doomed] {
        let answer = tokio::time::timeout(long, host.execute(a, "SELECT 1", Params::None)).await;
        assert!(matches!(answer, Ok(Ok(_))), "{a}: {answer:?}");
    }
    let tables = host.execute(&doomed, "SELECT count(*) FROM sqlite_schema", Params::None).await.unwrap();
    assert_eq!(tables.rows, vec![vec![Value::Integer(0)]], "the cancelled delete still happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_are_closed_off_the_runtime_even_when_the_pool_is_full() {
    let config = HostConfig { blocking_threads: 1, blocking_queue_max: 1, ..HostConfig::default() };
    let host = host_with(config);
    let (busy, queued, a) = (id("busy"), id("queued"), id("closing"));
    for actor in [&busy, &queued, &a] {
        host.execute(actor, "CREATE TABLE t(x)", Params::None).await.unwrap();
    }
    let (hold, _) = hold_for(&host, &busy, 1_000);
    let hold = tokio::spawn(hold);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (wait, _) = hold_for(&host, &queued, 0);
    let wait = tokio::spawn(wait);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The pool's queue is full: the close must still not happen here (a debug assertion in
    // `Database`'s drop catches a close on a runtime thread).
    let slept = host.sleep(&a).await;
    assert!(matches!(slept, Ok(true) | Err(HostError::Overloaded { .. })), "{slept:?}");
    hold.await.unwrap();
    wait.await.unwrap();
    drop(host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_follows_the_exact_order_of_last_use() {
    let host = host_with(config_awake(10));
    let first: Vec<ActorId> = (0..10).map(|i| id(&format!("order-{i}"))).collect();
    for a in &first {
        host.execute(a, "SELECT 1", Params::None).await.unwrap();
    }
    // Used again in this order (all within a few milliseconds): the eviction order.
    let order = [5, 3, 9, 0, 1, 2, 4, 6, 7, 8];
    for i in order {
        host.execute(&first[i], "SELECT 1", Params::None).await.unwrap();
    }
    for (n, i) in order.into_iter().enumerate() {
        host.execute(&id(&format!("newcomer-{n}")), "SELECT 1", Params::None).await.unwrap();
        assert_eq!(host.state(&first[i]), ActorState::Asleep, "newcomer {n} evicts order-{i}");
        for &j in &order[n + 1..] {
            assert_eq!(host.state(&first[j]), ActorState::Awake, "newcomer {n} keeps order-{j}");
        }
    }
}

/// Cache and statement bytes of `actor` (awake), as `/debug/memory` reports them.
fn actor_bytes(host: &Host, actor: &ActorId) -> u64 {
    let top = host.top_actors(usize::MAX);
    let memory = &top.iter().find(|a| a.id == *actor).expect("the actor is awake").memory;
    memory.cache_bytes + memory.statement_bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actors_release_memory_after_the_delay_and_busy_ones_keep_it() {
    let config = HostConfig { release_delay_ms: 300, reaper_interval_ms: 50, ..HostConfig::default() };
    let host = host_with(config);
    let actor = id("release-later");
    host.execute(&actor, "CREATE TABLE t(x)", Params::None).await.unwrap();
    let fill = "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 2000) \
                INSERT INTO t SELECT randomblob(100) FROM s";
    host.execute(&actor, fill, Params::None).await.unwrap();
    count(&host, &actor).await;
    // Right after a request the pages and statements stay: the next request reuses them.
    let busy = actor_bytes(&host, &actor);
    assert!(busy > 64 << 10, "a busy actor keeps its cache: {busy} bytes");
    // Requests more often than the delay keep it.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        count(&host, &actor).await;
    }
    assert!(actor_bytes(&host, &actor) > 64 << 10, "released while in use");
    // Idle past the delay (and a reaper pass): released.
    let deadline = Instant::now() + Duration::from_secs(5);
    while actor_bytes(&host, &actor) > busy / 4 {
        assert!(
            Instant::now() < deadline,
            "not released after the delay: {} bytes",
            actor_bytes(&host, &actor)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count(&host, &actor).await, 2000, "a released actor reads its pages again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_release_delay_releases_when_each_request_ends() {
    let host = host_with(HostConfig { release_delay_ms: 0, ..HostConfig::default() });
    let actor = id("release-now");
    host.execute(&actor, "CREATE TABLE t(x)", Params::None).await.unwrap();
    host.execute(&actor, "INSERT INTO t SELECT randomblob(100) FROM (SELECT 1 UNION SELECT 2)", Params::None)
        .await
        .unwrap();
    count(&host, &actor).await;
    assert!(actor_bytes(&host, &actor) < 16 << 10, "{} bytes", actor_bytes(&host, &actor));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_latency_counts_requests_that_found_their_actor_asleep() {
    let host = host_with(HostConfig::default());
    let actor = id("wake-latency");
    host.execute(&actor, "CREATE TABLE t(x)", Params::None).await.unwrap();
    let woke = host.stats().wake_latency.count;
    assert_eq!(woke, 1, "the first request woke the actor");
    count(&host, &actor).await;
    assert_eq!(host.stats().wake_latency.count, 1, "an awake actor is no wake");
    host.sleep(&actor).await.unwrap();
    count(&host, &actor).await;
    let stats = host.stats().wake_latency;
    assert_eq!(stats.count, 2);
    assert!(stats.sum_micros > 0 && stats.buckets.last().copied() == Some(2), "{stats:?}");
}

/// With the measured cost on, `awake_max` follows what awake actors really cost instead of the
/// estimate: an estimate ten times too high no longer keeps actors asleep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awake_max_follows_the_measured_cost_of_awake_actors() {
    let config = HostConfig { measure_actor_bytes: true, reaper_interval_ms: 20, ..config_awake(10) };
    let host = host_with(config);
    assert_eq!(host.stats().awake_max, 10);
    let open = |i: usize| {
        let host = host.clone();
        async move {
            host.with_db(&id(&format!("measured-{i:03}")), |db| {
                db.execute_script("CREATE TABLE IF NOT EXISTS t(x); INSERT INTO t VALUES (1)")
            })
            .await
            .unwrap()
        }
    };
    for i in 0..10 {
        open(i).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while host.stats().awake_max <= 100 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = host.stats();
    assert!(stats.awake_max > 100, "{stats:?}");
    assert!(stats.actor_bytes_measured >= roost::host::ACTOR_RUST_BYTES + (8 << 10), "{stats:?}");
    assert_eq!(host.plan().awake_max, 10, "the plan keeps the estimate's figure");
    for i in 10..100 {
        open(i).await;
    }
    let stats = host.stats();
    assert_eq!((stats.actors_awake, stats.evictions_total), (100, 0), "{stats:?}");
}

/// A wake storm over a full awake budget puts to sleep about as many actors as it wakes: one
/// eviction runs at a time and the wakes waiting for it use the room it made, instead of each
/// evicting a batch of its own (and the last ones finding no idle actor left: `Overloaded`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_storm_evicts_about_what_it_wakes() {
    let host = host_with(HostConfig { wakes_in_flight_max: 64, ..config_awake(200) });
    let wake = |name: String| {
        let host = host.clone();
        tokio::spawn(async move { host.execute(&id(&name), "SELECT 1", Params::None).await })
    };
    for i in 0..200 {
        wake(format!("resident-{i}")).await.unwrap().unwrap();
    }
    let storm: Vec<_> = (0..300).map(|i| wake(format!("storm-{i}"))).collect();
    for task in storm {
        task.await.unwrap().unwrap();
    }
    let stats = host.stats();
    assert!(stats.actors_awake <= 200, "{stats:?}");
    // 300 wakes into a full budget need 300 evictions; one batch (20) of slack.
    assert!(stats.evictions_total <= 320, "{} evictions for 300 wakes", stats.evictions_total);
    assert_eq!(stats.overloaded_total, 0, "{stats:?}");
}
