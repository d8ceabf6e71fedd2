//! Crash-model test: a seeded random workload of SQL transactions over several actors runs on
//! [`CrashStore`], which crashes or fails at random points; after each crash everything is
//! reopened (a new `Storage`, as a restart) and checked against reference SQLite databases:
//! - under `Durability::Sync`, every acknowledged commit is present;
//! - under `Durability::Relaxed`, every commit acknowledged before the store's last sync is
//!   present, and the state is that after some prefix of the acknowledged commits (the loss
//!   window is a suffix, never a hole);
//! - atomicity: the one transaction whose commit failed is there entirely or not at all, and
//!   no partial transaction is ever visible (the state equals a reference state exactly);
//! - `PRAGMA integrity_check` is ok for every actor.
//!
//! Transactions: small inserts (batch-atomic, one batch), multi-page inserts, large inserts
//! and updates over the small `batch_bytes_max` (journaled: many batches, some non-durable),
//! deletes and, rarely, a VACUUM. Faults: a crash at the Nth write from now, a sync failure
//! before or after a commit's sync, or a crash between transactions.
//!
//! Seeds: `ROOST_CRASH_MODEL_SEEDS=N` runs N seeds per durability (default 8,
//! a few seconds in all; 40 seeds take ~20 s);
//! `ROOST_CRASH_MODEL_SEED=S` starts from seed S (to replay a failure, whose seed is printed).
//! Debug aids: `ROOST_CRASH_MODEL_TRACE=1` prints each failed transaction and the fault;
//! `ROOST_CRASH_MODEL_DUMP=1` writes each actor's durable files at every recovery as a plain
//! database and journal under the temporary folder and lets plain SQLite recover them, which
//! tells a torn durable state (SQLite fails too) from a VFS recovery bug.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roost::kv::{CrashPlan, CrashStore, Durability, KvStore};
use roost::{ActorId, Database, Params, Storage, StorageConfig, Value};
use support::run_txn;

const ACTORS: usize = 4;
const TXNS_PER_SEED: usize = 120;
/// Durable batches between syncs of the relaxed store (the loss window).
const RELAXED_SYNC_EVERY: u64 = 4;

/// One actor's reference: the state every acknowledged-and-kept commit produced, plus the
/// acknowledged commits since (with the store's sync count at acknowledgement), and the one
/// whose commit failed, if any.
struct Reference {
    base: rusqlite::Connection,
    tail: Vec<(String, u64)>,
    in_doubt: Option<String>,
}

impl Reference {
    fn new() -> Self {
        Self { base: rusqlite::Connection::open_in_memory().unwrap(), tail: Vec::new(), in_doubt: None }
    }

    /// `None` while the table does not exist.
    fn state(conn: &rusqlite::Connection) -> Option<Vec<Vec<Value>>> {
        let Ok(mut stmt) = conn.prepare(STATE_SQL) else { return None };
        let row = |r: &rusqlite::Row<'_>| {
            Ok(vec![Value::Integer(r.get(0)?), Value::Integer(r.get(1)?), Value::Integer(r.get(2)?)])
        };
        Some(stmt.query_map([], row).unwrap().collect::<Result<_, _>>().unwrap())
    }
}

/// What is compared: row ids, the transaction that wrote each row last, and payload lengths
/// (payloads are functions of those, see `txn_sql`).
const STATE_SQL: &str = "SELECT id, txn, length(v) FROM t ORDER BY id";

/// A random transaction for an actor (its first one creates the table).
fn txn_sql(rng: &mut StdRng, stamp: u64, created: bool) -> String {
    if !created {
        return "CREATE TABLE t(id INTEGER PRIMARY KEY, txn INTEGER, v BLOB)".into();
    }
    let rows = |n: u32, bytes: u32| {
        format!(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < {n}) \
             INSERT INTO t(txn, v) SELECT {stamp}, zeroblob({bytes}) || x'{:02x}' FROM s",
            stamp % 256
        )
    };
    match rng.random_range(0..100) {
        0..40 => rows(rng.random_range(1..4), rng.random_range(10..200)),
        40..60 => rows(rng.random_range(5..30), 3000),
        // Over `batch_bytes_max`: the rollback journal path.
        60..72 => rows(rng.random_range(40..120), 3000),
        72..84 => format!(
            "UPDATE t SET txn = {stamp}, v = zeroblob({}) WHERE id % {} = {}",
            rng.random_range(100..3500),
            rng.random_range(2..5),
            rng.random_range(0..2)
        ),
        84..98 => format!("DELETE FROM t WHERE id % {} = {}", rng.random_range(3..7), rng.random_range(0..3)),
        _ => "VACUUM".into(),
    }
}

fn roost_state(db: &mut Database) -> Option<Vec<Vec<Value>>> {
    match db.execute(STATE_SQL, &Params::None) {
        Ok(answer) => Some(answer.rows),
        Err(roost::Error::Sql { message, .. }) if message.contains("no such table") => None,
        Err(other) => panic!("reading the state: {other:?}"),
    }
}

struct Run {
    seed: u64,
    durability: Durability,
    rng: StdRng,
    store: Arc<CrashStore>,
    storage: Storage,
    dbs: BTreeMap<usize, Database>,
    refs: Vec<Reference>,
    created: Vec<bool>,
    recoveries: u64,
    journaled: u64,
    /// The last fault planned (for failure messages).
    plan: CrashPlan,
}

fn storage(store: &Arc<CrashStore>) -> Storage {
    let mut config = StorageConfig { page_cache_bytes_max: 256 << 10, ..StorageConfig::default() };
    config.limits.batch_bytes_max = 96 << 10;
    config.limits.write_buffer_bytes_max = 32 << 10;
    Storage::new(store.clone() as Arc<dyn KvStore>, config).unwrap()
}

fn actor(n: usize) -> ActorId {
    ActorId::new(format!("crash-model-{n}")).unwrap()
}

impl Run {
    fn new(seed: u64, durability: Durability) -> Self {
        let store = Arc::new(CrashStore::with_durability(durability, RELAXED_SYNC_EVERY));
        Self {
            seed,
            durability,
            rng: StdRng::seed_from_u64(seed),
            storage: storage(&store),
            store,
            dbs: BTreeMap::new(),
            refs: (0..ACTORS).map(|_| Reference::new()).collect(),
            created: vec![false; ACTORS],
            recoveries: 0,
            journaled: 0,
            plan: CrashPlan::default(),
        }
    }

    fn context(&self, what: &str) -> String {
        format!("seed {} ({:?}): {what}; last plan {:?}", self.seed, self.durability, self.plan)
    }

    fn plan_fault(&mut self) {
        let plan = match self.rng.random_range(0..100) {
            0..8 => CrashPlan { crash_at_write: self.rng.random_range(1..40), ..CrashPlan::default() },
            8..11 => CrashPlan { fail_before_sync: self.rng.random_range(1..6), ..CrashPlan::default() },
            11..14 => CrashPlan { fail_after_sync: self.rng.random_range(1..6), ..CrashPlan::default() },
            _ => return,
        };
        self.store.set_plan(plan);
        self.plan = plan;
    }

    fn step(&mut self, stamp: u64) {
        if self.rng.random_range(0..100) < 4 {
            self.recover("a crash between transactions");
            return;
        }
        if !self.store.is_stopped() {
            self.plan_fault();
        }
        let n = self.rng.random_range(0..ACTORS);
        let sql = txn_sql(&mut self.rng, stamp, self.created[n]);
        let injected = self.store.injected();
        let writes = self.store.stats().write_calls;
        let outcome = self.db(n).and_then(|db| run_txn(db, &sql));
        match outcome {
            Ok(()) => {
                assert_eq!(
                    self.store.injected(),
                    injected,
                    "{}",
                    self.context("a commit acknowledged after a fault")
                );
                self.created[n] = true;
                self.journaled += u64::from(self.store.stats().write_calls - writes > 1);
                self.refs[n].tail.push((sql, self.store.syncs()));
            }
            Err(e) => {
                assert!(
                    self.store.injected() > injected,
                    "{}",
                    self.context(&format!("{sql}: {e:?} with no fault"))
                );
                if std::env::var_os("ROOST_CRASH_MODEL_TRACE").is_some() {
                    eprintln!("in doubt on actor {n} ({e}) under {:?}: {sql}", self.plan);
                }
                self.refs[n].in_doubt = Some(sql);
                self.recover("a fault during a transaction");
            }
        }
    }

    /// The actor's open connection (opening may write, so it may meet a planned fault too).
    fn db(&mut self, n: usize) -> Result<&mut Database, roost::Error> {
        if !self.dbs.contains_key(&n) {
            let db = self.storage.open(&actor(n))?;
            self.dbs.insert(n, db);
        }
        Ok(self.dbs.get_mut(&n).expect("inserted"))
    }

    /// A restart: drops every connection and the storage, crashes the store and reopens it.
    fn recover(&mut self, why: &str) {
        self.dbs.clear();
        let syncs_at_crash = self.store.syncs();
        self.store.reopen().unwrap();
        self.storage = storage(&self.store);
        self.recoveries += 1;
        for n in 0..ACTORS {
            let context = self.context(&format!("actor {n} after {why} (recovery {})", self.recoveries));
            self.check_actor(n, syncs_at_crash, &context);
        }
    }

    /// Finds the reference state the actor is in, or fails; then makes it the new base.
    fn check_actor(&mut self, n: usize, syncs_at_crash: u64, context: &str) {
        if std::env::var_os("ROOST_CRASH_MODEL_DUMP").is_some() {
            dump_plain(&self.store, n);
        }
        let mut db = self.storage.open(&actor(n)).unwrap();
        let check = db.execute("PRAGMA integrity_check", &Params::None).unwrap();
        assert_eq!(check.rows, vec![vec![Value::Text("ok".into())]], "{context}");
        let got = roost_state(&mut db);
        let reference = &mut self.refs[n];
        let tail = std::mem::take(&mut reference.tail);
        // Commits that must have survived: all of them under Sync; under Relaxed those a
        // later sync covered.
        let kept = match self.durability {
            Durability::Sync => tail.len(),
            Durability::Relaxed => tail.iter().take_while(|(_, syncs)| *syncs < syncs_at_crash).count(),
        };
        for (sql, _) in &tail[..kept] {
            reference.base.execute_batch(sql).unwrap();
        }
        let mut candidates = tail[kept..].iter().map(|(sql, _)| sql.clone()).chain(reference.in_doubt.take());
        loop {
            let want = Reference::state(&reference.base);
            if got == want {
                break;
            }
            let next = candidates.next();
            let Some(sql) = next else {
                panic!("{context}: the state is no prefix of the acknowledged commits ({kept} must be kept)\n got {:?} rows, want {:?} rows", got.map(|g| g.len()), want.map(|w| w.len()));
            };
            reference.base.execute_batch(&sql).unwrap();
        }
        // A created table that was lost must be created again by the next transaction.
        self.created[n] = reference.base.prepare("SELECT 1 FROM t").is_ok();
    }
}

fn seeds() -> (u64, u64) {
    let count = std::env::var("ROOST_CRASH_MODEL_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let first = std::env::var("ROOST_CRASH_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random_range(0..1_000_000));
    (first, count)
}

fn run_seeds(durability: Durability) {
    let (first, count) = seeds();
    let (mut recoveries, mut journaled) = (0, 0);
    for seed in first..first + count {
        eprintln!("crash model: seed {seed} ({durability:?}); replay with ROOST_CRASH_MODEL_SEED={seed} ROOST_CRASH_MODEL_SEEDS=1");
        let mut run = Run::new(seed, durability);
        for stamp in 1..=TXNS_PER_SEED as u64 {
            run.step(stamp);
        }
        run.recover("the final crash");
        recoveries += run.recoveries;
        journaled += run.journaled;
    }
    eprintln!("crash model ({durability:?}): {count} seeds, {recoveries} recoveries, {journaled} multi-batch commits");
    assert!(recoveries > count, "too few crashes exercised");
    assert!(journaled > 0, "no transaction went through the journal");
}

#[test]
fn sync_durability_keeps_every_acknowledged_commit_across_crashes() {
    run_seeds(Durability::Sync);
}

#[test]
fn relaxed_durability_loses_at_most_the_window_and_never_atomicity() {
    run_seeds(Durability::Relaxed);
}

/// Debug aid: writes the actor's durable files as a plain database and journal and lets plain
/// SQLite recover them.
fn dump_plain(store: &CrashStore, n: usize) {
    let prefix = format!("acrash-model-{n}\0");
    let dir = std::env::temp_dir().join(format!("crash-model-dump-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut files: BTreeMap<u8, (u64, BTreeMap<u64, Vec<u8>>)> = BTreeMap::new();
    for (k, v) in store.durable_dump() {
        let Some(rest) = k.strip_prefix(prefix.as_bytes()) else { continue };
        let tag = rest[0];
        if tag == b'g' {
            continue;
        }
        let entry = files.entry(tag).or_default();
        if rest.len() == 1 {
            entry.0 = u64::from_be_bytes(v[1..9].try_into().unwrap());
        } else {
            entry.1.insert(u64::from_be_bytes(rest[1..9].try_into().unwrap()), v);
        }
    }
    for (tag, (size, chunks)) in &files {
        let mut bytes = vec![0u8; *size as usize];
        for (i, chunk) in chunks {
            let start = *i as usize * 4096;
            if start < bytes.len() {
                let end = (start + 4096).min(bytes.len());
                bytes[start..end].copy_from_slice(&chunk[..end - start]);
            }
        }
        let name = if *tag == b'm' { "db" } else { "db-journal" };
        std::fs::write(dir.join(format!("{name}.orig")), &bytes).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    if !files.contains_key(&b'm') {
        return;
    }
    let conn = rusqlite::Connection::open(dir.join("db")).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    eprintln!("plain SQLite on actor {n}'s durable files (journal: {}): {check}", files.contains_key(&b'j'));
}
