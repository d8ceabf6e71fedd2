//! Seeded simulation of the host against a model: plain in-memory SQLite per actor.
//!
//! Each seed drives one host over a fault-injecting memory store with random operations: SQL
//! from a small grammar (single statements and all-or-nothing batches, values from one page to
//! several), reads compared with the model, sleeps, deletes, evictions (few actors may be awake
//! at once), concurrent callers on one actor (with commuting writes), cancelled requests, and
//! store faults on the Nth read, journal write or commit. A request that fails because of an
//! injected fault must change nothing; one that was cancelled may or may not have applied, and
//! the model follows what the host shows. At the end every actor matches its model and passes
//! `PRAGMA integrity_check`.
//!
//! The operations of a seed are a pure function of the seed, and the host makes store calls
//! only from them (memory release is inline: no background thread touches the store), so a
//! failure replays the same operations: it prints `ROOST_SIM_SEED=<seed>`. (Where concurrent
//! callers race and a cancellation lands can differ between runs; the checks hold either way.)
//! `ROOST_SIM_SEEDS` (default 200, about 30 s) and `ROOST_SIM_STEPS` (default 250) size a run;
//! `ROOST_SIM_FIRST_SEED` starts elsewhere.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roost::kv::{FaultPlan, FaultyStore, MemoryStore};
use roost::{ActorId, Host, HostConfig, HostError, Params, Statement, Storage, StorageConfig, Value};

const ACTORS: usize = 6;
const BUDGET: u64 = 1 << 30;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One write: SQL and its parameters, run the same way on the host and the model.
#[derive(Debug, Clone)]
struct Write {
    sql: &'static str,
    params: Vec<i64>,
}

impl Write {
    fn statement(&self) -> Statement {
        Statement::with_params(
            self.sql,
            Params::Positional(self.params.iter().map(|p| Value::Integer(*p)).collect()),
        )
    }
}

fn random_write(rng: &mut StdRng, next_key: &mut i64) -> Write {
    match rng.random_range(0..10) {
        0..=4 => {
            *next_key += 1;
            // Values from a few bytes to several pages, so commits span many chunks.
            let len = [8, 100, 3000, 20_000][rng.random_range(0..4)];
            Write {
                sql: "INSERT INTO t(k, v) VALUES (?1, printf('%.*c', ?2, 'x'))",
                params: vec![*next_key, len],
            }
        }
        5 => Write {
            sql: "INSERT INTO t(k, v) VALUES (?1, 'dup')",
            params: vec![rng.random_range(0..=*next_key)],
        },
        6 | 7 => Write {
            sql: "UPDATE t SET v = v || ?1 WHERE k % ?2 = 0",
            params: vec![rng.random_range(0..10), rng.random_range(2..5)],
        },
        8 => Write { sql: "DELETE FROM t WHERE k = ?1", params: vec![rng.random_range(0..=*next_key)] },
        _ => Write { sql: "DELETE FROM t WHERE k % ?1 = 1", params: vec![rng.random_range(3..9)] },
    }
}

/// The model of one actor.
fn model_db() -> rusqlite::Connection {
    let db = rusqlite::Connection::open_in_memory().unwrap();
    db.execute_batch(SCHEMA).unwrap();
    db
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, v TEXT NOT NULL)";

/// Applies writes to the model as one transaction; `false` (and nothing applied) if one fails.
fn model_apply(db: &mut rusqlite::Connection, writes: &[Write]) -> bool {
    let tx = db.transaction().unwrap();
    for w in writes {
        if tx.execute(w.sql, rusqlite::params_from_iter(w.params.iter())).is_err() {
            return false;
        }
    }
    tx.commit().unwrap();
    true
}

type Rows = Vec<(i64, String)>;

fn model_rows(db: &rusqlite::Connection) -> Rows {
    let mut stmt = db.prepare("SELECT k, v FROM t ORDER BY k").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

async fn host_rows(host: &Host, id: &ActorId) -> Result<Rows, HostError> {
    let result = host.execute(id, "SELECT k, v FROM t ORDER BY k", Params::None).await?;
    Ok(result
        .rows
        .into_iter()
        .map(|row| match (&row[0], &row[1]) {
            (Value::Integer(k), Value::Text(v)) => (*k, v.clone()),
            other => panic!("unexpected row {other:?}"),
        })
        .collect())
}

/// Did the host fail because of the store (an injected fault) rather than the SQL?
fn is_store_failure(error: &HostError) -> bool {
    match error {
        HostError::Database(roost::Error::Sql { .. }) => false,
        HostError::Database(roost::Error::InBatch { source, .. }) => {
            !matches!(**source, roost::Error::Sql { .. })
        }
        _ => true,
    }
}

struct Sim {
    seed: u64,
    rng: StdRng,
    store: Arc<FaultyStore<MemoryStore>>,
    host: Host,
    models: HashMap<usize, rusqlite::Connection>,
    next_key: i64,
    faults: bool,
    log: Vec<String>,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let store = Arc::new(FaultyStore::new(MemoryStore::new()));
        let storage = Storage::new(store.clone(), StorageConfig::default()).unwrap();
        // Few actors awake at once, so wakes evict; memory released inline (or never).
        let probe = HostConfig { memory_budget_bytes: BUDGET, ..HostConfig::default() };
        let connections = roost::host::BudgetPlan::new(&probe, &storage).unwrap().connections_bytes;
        let awake = rng.random_range(2..=ACTORS as u64);
        let config = HostConfig {
            actor_bytes_estimate: connections / awake,
            measure_actor_bytes: false,
            release_idle_memory: rng.random_bool(0.5),
            release_delay_ms: 0,
            idle_timeout_ms: 3_600_000,
            ..probe
        };
        let host = Host::new(storage, config).unwrap();
        Self { seed, rng, store, host, models: HashMap::new(), next_key: 0, faults: false, log: Vec::new() }
    }

    fn id(actor: usize) -> ActorId {
        ActorId::new(format!("sim-{actor}")).unwrap()
    }

    fn fail(&self, step: usize, what: String) -> ! {
        let recent = self.log.iter().rev().take(12).rev().cloned().collect::<Vec<_>>().join("\n  ");
        panic!(
            "seed {} step {step}: {what}\n  last operations:\n  {recent}\nreplay: ROOST_SIM_SEED={} cargo test -p roost --test simulation",
            self.seed, self.seed
        );
    }

    fn model(&mut self, actor: usize) -> &mut rusqlite::Connection {
        self.models.entry(actor).or_insert_with(model_db)
    }

    /// Runs writes (one, or a transactional batch) on the host and, if it succeeded, on the
    /// model; a host error must be the model's (SQL) or an injected fault.
    async fn write(&mut self, step: usize, actor: usize, writes: Vec<Write>) {
        let id = Self::id(actor);
        let mut statements = vec![Statement::new(SCHEMA)];
        statements.extend(writes.iter().map(Write::statement));
        let host = self.host.batch(&id, statements, true).await;
        let mut all = vec![Write { sql: SCHEMA, params: vec![] }];
        all.extend(writes.iter().cloned());
        let model_ok = {
            let mut probe = rusqlite::Connection::open_in_memory().unwrap();
            let rows = self.models.get(&actor).map(model_rows).unwrap_or_default();
            probe.execute_batch(SCHEMA).unwrap();
            for (k, v) in rows {
                probe.execute("INSERT INTO t VALUES (?1, ?2)", rusqlite::params![k, v]).unwrap();
            }
            model_apply(&mut probe, &all)
        };
        match host {
            Ok(_) if model_ok => {
                model_apply(self.model(actor), &all);
            }
            Ok(_) => self.fail(step, format!("the host applied {writes:?}, the model refused it")),
            Err(e) if is_store_failure(&e) => {
                if !self.faults {
                    self.fail(step, format!("a store failure without a fault: {e}"));
                }
            }
            Err(e) if model_ok => {
                self.fail(step, format!("the host refused {writes:?} ({e}), the model applied it"))
            }
            Err(_) => {}
        }
    }

    async fn compare(&mut self, step: usize, actor: usize) {
        let id = Self::id(actor);
        if !self.models.contains_key(&actor) {
            return;
        }
        match host_rows(&self.host, &id).await {
            Ok(rows) => {
                let expected = model_rows(self.model(actor));
                if rows != expected {
                    let (h, m) = (rows.len(), expected.len());
                    self.fail(
                        step,
                        format!(
                            "actor {actor}: host has {h} rows, the model {m}; first difference at {:?}",
                            rows.iter().zip(&expected).position(|(a, b)| a != b)
                        ),
                    );
                }
            }
            Err(e) if self.faults && is_store_failure(&e) => {}
            Err(e) => self.fail(step, format!("reading actor {actor}: {e}")),
        }
    }

    /// Concurrent callers on one actor: inserts of distinct keys commute, so any order the
    /// host picks gives the model's result.
    async fn concurrent(&mut self, step: usize, actor: usize) {
        let id = Self::id(actor);
        let n = self.rng.random_range(2..5);
        let keys: Vec<i64> = (0..n)
            .map(|_| {
                self.next_key += 1;
                self.next_key
            })
            .collect();
        let calls = keys.iter().map(|k| {
            let statements = vec![
                Statement::new(SCHEMA),
                Write { sql: "INSERT INTO t(k, v) VALUES (?1, 'c')", params: vec![*k] }.statement(),
            ];
            self.host.batch(&id, statements, true)
        });
        let results = futures_util::future::join_all(calls).await;
        for (k, result) in keys.iter().zip(results) {
            match result {
                Ok(_) => {
                    model_apply(
                        self.model(actor),
                        &[
                            Write { sql: SCHEMA, params: vec![] },
                            Write { sql: "INSERT INTO t(k, v) VALUES (?1, 'c')", params: vec![*k] },
                        ],
                    );
                }
                Err(e) if self.faults && is_store_failure(&e) => {}
                Err(HostError::Overloaded { .. }) => {}
                Err(e) => self.fail(step, format!("a concurrent insert failed: {e}")),
            }
        }
    }

    /// A request dropped after a random short time: it may or may not have applied; the model
    /// follows what the host shows for its key.
    async fn cancelled(&mut self, step: usize, actor: usize) {
        let id = Self::id(actor);
        self.next_key += 1;
        let key = self.next_key;
        let insert = Write { sql: "INSERT INTO t(k, v) VALUES (?1, 'cancelled')", params: vec![key] };
        let statements = vec![Statement::new(SCHEMA), insert.statement()];
        let wait = Duration::from_micros(self.rng.random_range(0..3000));
        let _ = tokio::time::timeout(wait, self.host.batch(&id, statements, true)).await;
        // The probe queues behind a job that outlived its caller, so it sees its outcome.
        let mut shown = self.probe(&id, key).await;
        if matches!(&shown, Err(e) if self.faults && is_store_failure(e)) {
            // Cannot tell with faults on: look again without them.
            self.log.push(format!("step {step}: cancelled insert {key}: probing without faults"));
            self.store.set_plan(FaultPlan::default());
            self.faults = false;
            shown = self.probe(&id, key).await;
        }
        match shown {
            Ok(true) => {
                model_apply(self.model(actor), &[Write { sql: SCHEMA, params: vec![] }, insert]);
            }
            Ok(false) => {}
            Err(e) => self.fail(step, format!("probing a cancelled insert: {e}")),
        }
    }

    /// Does the actor hold `key`? (Creates the table if a cancelled request did not.)
    async fn probe(&self, id: &ActorId, key: i64) -> Result<bool, HostError> {
        let count = Statement::with_params(
            "SELECT count(*) FROM t WHERE k = ?1",
            Params::Positional(vec![Value::Integer(key)]),
        );
        let results = self.host.batch(id, vec![Statement::new(SCHEMA), count], true).await?;
        Ok(results[1].rows[0][0] == Value::Integer(1))
    }

    async fn step(&mut self, step: usize) {
        let actor = self.rng.random_range(0..ACTORS);
        let id = Self::id(actor);
        match self.rng.random_range(0..100) {
            0..=39 => {
                let w = random_write(&mut self.rng, &mut self.next_key);
                self.log.push(format!("step {step}: actor {actor} write {w:?}"));
                self.write(step, actor, vec![w]).await;
            }
            40..=52 => {
                let n = self.rng.random_range(2..6);
                let ws: Vec<Write> =
                    (0..n).map(|_| random_write(&mut self.rng, &mut self.next_key)).collect();
                self.log.push(format!("step {step}: actor {actor} batch of {n}"));
                self.write(step, actor, ws).await;
            }
            53..=66 => {
                self.log.push(format!("step {step}: actor {actor} read"));
                self.compare(step, actor).await;
            }
            67..=74 => {
                self.log.push(format!("step {step}: actor {actor} sleep"));
                let _ = self.host.sleep(&id).await;
            }
            75..=76 => {
                self.log.push(format!("step {step}: actor {actor} delete"));
                match self.host.delete(&id).await {
                    Ok(_) => {
                        self.models.remove(&actor);
                    }
                    Err(e) if self.faults && is_store_failure(&e) => {
                        // A delete whose commit point failed left everything; one that failed
                        // after it (removing chunks) left no database: look.
                        self.store.set_plan(FaultPlan::default());
                        self.faults = false;
                        if self
                            .host
                            .execute(&id, "SELECT 1 FROM sqlite_schema LIMIT 1", Params::None)
                            .await
                            .is_ok_and(|r| r.rows.is_empty())
                        {
                            self.models.remove(&actor);
                        }
                    }
                    Err(e) => self.fail(step, format!("delete failed: {e}")),
                }
            }
            77..=84 => {
                self.log.push(format!("step {step}: actor {actor} concurrent inserts"));
                self.concurrent(step, actor).await;
            }
            85..=90 => {
                self.log.push(format!("step {step}: actor {actor} cancelled insert"));
                self.cancelled(step, actor).await;
            }
            _ => self.toggle_faults(step),
        }
    }

    fn toggle_faults(&mut self, step: usize) {
        let plan = if self.faults {
            FaultPlan::default()
        } else {
            let mut plan = FaultPlan::default();
            match self.rng.random_range(0..3) {
                0 => plan.fail_read = self.rng.random_range(1..6),
                1 => plan.fail_write = self.rng.random_range(1..4),
                _ => plan.fail_commit = self.rng.random_range(1..4),
            }
            plan
        };
        self.log.push(format!("step {step}: faults {plan:?}"));
        self.faults = plan != FaultPlan::default();
        self.store.set_plan(plan);
    }

    async fn finish(&mut self, steps: usize) {
        self.store.set_plan(FaultPlan::default());
        self.faults = false;
        for actor in 0..ACTORS {
            self.compare(steps, actor).await;
            if self.models.contains_key(&actor) {
                let check = self.host.execute(&Self::id(actor), "PRAGMA integrity_check", Params::None).await;
                match check {
                    Ok(r) if r.rows == vec![vec![Value::Text("ok".into())]] => {}
                    other => self.fail(steps, format!("actor {actor}: integrity_check {other:?}")),
                }
            }
        }
        self.host.shutdown().await;
    }
}

async fn run_seed(seed: u64, steps: usize) {
    let mut sim = Sim::new(seed);
    for step in 0..steps {
        sim.step(step).await;
    }
    sim.finish(steps).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_simulation_matches_the_model() {
    let steps = env_u64("ROOST_SIM_STEPS", 250) as usize;
    if let Ok(seed) = std::env::var("ROOST_SIM_SEED") {
        let seed = seed.parse().expect("ROOST_SIM_SEED is a number");
        return run_seed(seed, steps).await;
    }
    let first = env_u64("ROOST_SIM_FIRST_SEED", 0);
    let seeds = env_u64("ROOST_SIM_SEEDS", 200);
    let started = std::time::Instant::now();
    for seed in first..first + seeds {
        run_seed(seed, steps).await;
    }
    eprintln!("{seeds} seeds x {steps} steps in {:.1} s", started.elapsed().as_secs_f64());
}
