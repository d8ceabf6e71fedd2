//! Crash test: every acknowledged commit survives SIGKILL and the database stays intact.
//!
//! The test re-executes its own binary. With `ROOST_CRASH_CHILD=<data dir>` set it is the child:
//! it commits transactions forever over a fjall store (`Durability::Sync`) and prints one line
//! per commit once `Database` acknowledged it. Without it, it is the parent: each round spawns a
//! child on the same data folder, SIGKILLs it 50-600 ms after it is ready to commit (every fifth
//! round: after it was spawned, so possibly while it opens the store), then reopens the store in
//! its own process and checks that
//! - every acknowledged row exists and ids are contiguous from 1 (no holes, no torn inserts:
//!   rows beyond the last acknowledgement are exactly the in-flight insert, or none);
//! - every committed UPDATE is all there, and the in-flight one is all or nothing;
//! - every payload carries its own row id, and `PRAGMA integrity_check` says "ok";
//! - a child killed before it ran any SQL left the store's contents exactly as they were.
//!
//! SIGKILL loses what the process had not handed to the OS; it does not lose the OS page cache,
//! so this tests crash consistency of the process, not of a power cut.
//!
//! Transactions mix single-row inserts (batch-atomic path: one store batch per commit) with,
//! every tenth, a ~3 MB insert of page-sized rows and, every tenth too (offset by five), an
//! UPDATE that shrinks up to 700 of those big rows. Both dirty more pages than the 2 MiB page
//! cache holds, so they go through SQLite's rollback journal stored in the KV store; updates
//! as frequent as big inserts keep the database (and the time to verify it) from growing
//! without bound. A wrapper store counts the batches each commit wrote and how many touched
//! the journal, so the test can show that both paths ran.
//!
//! Payload layout: 8-byte big-endian stamp of the writing transaction, 8-byte big-endian row id,
//! random bytes. Stamps are random, so unique per transaction across children. A row is updated
//! at most once (updates pick rows longer than `BIG_ROW_MIN` and make them short), so the number
//! of rows carrying an update's stamp never changes afterwards.
//!
//! `ROOST_CRASH_ROUNDS` overrides the number of rounds (default 20); up to 10 more run if a
//! journaled insert or update was not acknowledged yet.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rand::{Rng, RngCore};
use roost::kv::{FjallConfig, FjallStore, KvResult, KvStats, KvStore, WriteBatch, WriteOp};
use roost::{ActorId, Database, Params, Storage, StorageConfig, Value};

const CHILD_ENV: &str = "ROOST_CRASH_CHILD";
const ROUNDS_ENV: &str = "ROOST_CRASH_ROUNDS";
/// Must match the name of the test function: the child is started with `--exact <name>`.
const TEST_NAME: &str = "acknowledged_commits_survive_sigkill";
const ACTOR: &str = "crash";
/// Store key prefix of the actor's rollback journal (storage format v1: 'a' id 0x00 'j').
const JOURNAL_PREFIX: &[u8] = b"acrash\0j";

const HEADER_BYTES: usize = 16;
/// Payloads longer than this are "big" rows; updates pick them and make them short.
const BIG_ROW_MIN: usize = 1000;
/// A big row fills one 4 KiB page (without overflow), so a ~3 MB insert of 700-800 of them
/// dirties more pages than the 2 MiB page cache holds (512).
const BIG_ROW_BYTES: usize = 4000;
const BIG_ROWS: std::ops::RangeInclusive<i64> = 700..=800;
/// Most rows (so pages) one UPDATE rewrites, and fewest it needs to be worth running (> 512).
const UPDATE_ROWS_MAX: usize = 700;
const UPDATE_ROWS_MIN: usize = 600;
const KILL_DELAY_MS: std::ops::RangeInclusive<u64> = 50..=600;
/// Rounds run beyond the requested number while a journaled kind was never acknowledged.
const EXTRA_ROUNDS_MAX: u32 = 10;
/// Longest wait for a child to open the store and its database.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn actor() -> ActorId {
    ActorId::new(ACTOR).unwrap()
}

#[test]
fn acknowledged_commits_survive_sigkill() {
    match std::env::var_os(CHILD_ENV) {
        Some(dir) => child(Path::new(&dir)),
        None => parent(),
    }
}

// ---------------------------------------------------------------------------------------------
// Child

/// Counts the store batches written, and those touching the actor's journal.
struct CountingStore {
    inner: FjallStore,
    writes: AtomicU64,
    journal_writes: AtomicU64,
}

impl KvStore for CountingStore {
    fn get_many(&self, keys: &[Vec<u8>]) -> KvResult<Vec<Option<Vec<u8>>>> {
        self.inner.get_many(keys)
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> KvResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan(start, end, limit)
    }

    fn write(&self, batch: WriteBatch) -> KvResult<()> {
        let journal = batch.ops.iter().any(|op| match op {
            WriteOp::Put(k, _) | WriteOp::Delete(k) => k.starts_with(JOURNAL_PREFIX),
            WriteOp::DeleteRange { start, .. } => start.starts_with(JOURNAL_PREFIX),
        });
        self.writes.fetch_add(1, Ordering::Relaxed);
        if journal {
            self.journal_writes.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.write(batch)
    }

    fn stats(&self) -> KvStats {
        self.inner.stats()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    One,
    Big,
    Update,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::One => "one",
            Self::Big => "big",
            Self::Update => "update",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "one" => Self::One,
            "big" => Self::Big,
            "update" => Self::Update,
            other => panic!("unknown transaction kind {other:?}"),
        }
    }
}

fn payload(rng: &mut impl RngCore, stamp: u64, id: i64, random_bytes: usize) -> Value {
    let mut bytes = vec![0u8; HEADER_BYTES + random_bytes];
    bytes[..8].copy_from_slice(&stamp.to_be_bytes());
    bytes[8..16].copy_from_slice(&id.to_be_bytes());
    rng.fill_bytes(&mut bytes[HEADER_BYTES..]);
    Value::Blob(bytes)
}

fn single(db: &mut Database, sql: &str) -> Value {
    let mut result = db.execute(sql, &Params::None).unwrap();
    assert_eq!(result.rows.len(), 1, "{sql}");
    result.rows.remove(0).remove(0)
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

/// Line protocol on stdout (libtest prints its own lines there too):
/// - `ready <ms to open the store> <ms to open the database>` once;
/// - `begin <kind> <stamp> <first id> <last id> <rows>` before each transaction starts;
/// - `ack <highest id> <kind> <stamp> <rows> <store batches> <journal batches> <ms>` once it
///   is committed (acknowledged by `Database`).
fn child(dir: &Path) -> ! {
    let started = Instant::now();
    let store = Arc::new(CountingStore {
        inner: FjallStore::open(FjallConfig::new(dir)).unwrap(),
        writes: AtomicU64::new(0),
        journal_writes: AtomicU64::new(0),
    });
    let store_ms = started.elapsed().as_millis();
    let storage = Storage::new(store.clone(), StorageConfig::default()).unwrap();
    let mut db = storage.open(&actor()).unwrap();
    db.execute_script("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, payload BLOB)").unwrap();
    let mut max_id = int(&single(&mut db, "SELECT ifnull(max(id), 0) FROM t"));
    let mut rng = rand::rng();
    let mut out = std::io::stdout().lock();
    // libtest printed "test <name> ... " without a line end: end it so ours start lines.
    writeln!(out).unwrap();
    writeln!(out, "ready {store_ms} {}", started.elapsed().as_millis()).unwrap();
    out.flush().unwrap();
    // Start the schedule anywhere so short-lived children also reach big transactions.
    let mut k: u64 = rng.random_range(0..30);
    loop {
        k += 1;
        let mut kind = if k.is_multiple_of(10) {
            Kind::Big
        } else if k % 10 == 5 {
            Kind::Update
        } else {
            Kind::One
        };
        let mut update_ids = Vec::new();
        if kind == Kind::Update {
            let sql = format!(
                "SELECT id FROM t WHERE length(payload) > {BIG_ROW_MIN} ORDER BY id LIMIT {UPDATE_ROWS_MAX}"
            );
            update_ids = db.execute(&sql, &Params::None).unwrap().rows.iter().map(|r| int(&r[0])).collect();
            if update_ids.len() < UPDATE_ROWS_MIN {
                kind = Kind::One;
            }
        }
        let stamp: u64 = rng.random();
        let (first, last, rows) = match kind {
            Kind::One => (max_id + 1, max_id + 1, 1),
            Kind::Big => {
                let rows = rng.random_range(BIG_ROWS);
                (max_id + 1, max_id + rows, rows)
            }
            Kind::Update => (update_ids[0], *update_ids.last().unwrap(), update_ids.len() as i64),
        };
        writeln!(out, "begin {} {stamp} {first} {last} {rows}", kind.name()).unwrap();
        out.flush().unwrap();
        let writes_before = store.writes.load(Ordering::Relaxed);
        let journal_before = store.journal_writes.load(Ordering::Relaxed);
        let started = Instant::now();
        let insert = "INSERT INTO t(id, payload) VALUES (?, ?)";
        match kind {
            Kind::One => {
                let len = rng.random_range(50..=200);
                let params =
                    Params::Positional(vec![Value::Integer(first), payload(&mut rng, stamp, first, len)]);
                db.execute(insert, &params).unwrap();
            }
            Kind::Big => {
                db.transaction(|tx| {
                    for id in first..=last {
                        let row = payload(&mut rng, stamp, id, BIG_ROW_BYTES);
                        tx.execute(insert, &Params::Positional(vec![Value::Integer(id), row]))?;
                    }
                    Ok(())
                })
                .unwrap();
            }
            Kind::Update => {
                db.transaction(|tx| {
                    for &id in &update_ids {
                        let len = rng.random_range(20..=200);
                        let row = payload(&mut rng, stamp, id, len);
                        let params = Params::Positional(vec![row, Value::Integer(id)]);
                        let result = tx.execute("UPDATE t SET payload = ? WHERE id = ?", &params)?;
                        assert_eq!(result.rows_affected, 1);
                    }
                    Ok(())
                })
                .unwrap();
            }
        }
        let ms = started.elapsed().as_millis();
        if kind != Kind::Update {
            max_id = last;
        }
        let writes = store.writes.load(Ordering::Relaxed) - writes_before;
        let journal = store.journal_writes.load(Ordering::Relaxed) - journal_before;
        writeln!(out, "ack {max_id} {} {stamp} {rows} {writes} {journal} {ms}", kind.name()).unwrap();
        out.flush().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Parent

#[derive(Debug, Clone, Copy)]
struct Begin {
    kind: Kind,
    stamp: u64,
    first: i64,
    last: i64,
    rows: u64,
}

#[derive(Debug, Default)]
struct Totals {
    acks: u64,
    by_kind: BTreeMap<&'static str, u64>,
    /// Acknowledged commits that wrote exactly one store batch and no journal.
    one_batch: u64,
    /// Acknowledged commits that went through the journal.
    journaled: u64,
    journaled_big: u64,
    journaled_update: u64,
    slowest_ms: BTreeMap<&'static str, u64>,
    hot_journals: u64,
    inflight_committed: u64,
    inflight_rolled_back: u64,
}

fn parent() {
    let rounds: u32 = std::env::var(ROUNDS_ENV).ok().map_or(20, |s| s.parse().expect("ROOST_CRASH_ROUNDS"));
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    let test_started = Instant::now();
    // Ids 1..=durable_max are known durable (acknowledged, or found after a crash).
    let mut durable_max: i64 = 0;
    // Committed updates: stamp -> rows carrying it.
    let mut updates: BTreeMap<u64, u64> = BTreeMap::new();
    let mut totals = Totals::default();
    // The store's contents after the last check, kept when the next child may die before SQL.
    let mut snapshot: Option<Snapshot> = None;

    let mut round = 0;
    // Past `rounds`, keep going (a little) until both journaled kinds were acknowledged once.
    while round < rounds
        || (round < rounds + EXTRA_ROUNDS_MAX && (totals.journaled_big == 0 || totals.journaled_update == 0))
    {
        round += 1;
        // Most rounds count the delay from when the child is ready to commit, so they kill it
        // mid-commit however long the store takes to recover; every 5th counts from the spawn, so
        // it may kill the child while it opens the store.
        let from_spawn = round.is_multiple_of(5);
        let delay = Duration::from_millis(rng.random_range(KILL_DELAY_MS));
        let spawned = Instant::now();
        let mut child = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (line_tx, line_rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.expect("child stdout");
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let is_ready = |line: &String| line.starts_with("ready ");
        if !from_spawn {
            let deadline = spawned + READY_TIMEOUT;
            while let Ok(line) = line_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                lines.push(line);
                if lines.last().is_some_and(is_ready) {
                    break;
                }
            }
        }
        if !from_spawn && !lines.iter().any(is_ready) {
            let _ = child.kill();
            let status = child.wait().unwrap();
            lines.extend(line_rx.iter());
            panic!("round {round}: the child never got ready ({status}); its stdout: {lines:#?}");
        }
        std::thread::sleep(delay);
        if let Some(status) = child.try_wait().unwrap() {
            lines.extend(line_rx.iter());
            panic!("round {round}: the child exited on its own ({status}); its stdout: {lines:#?}");
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "round {round}: child status {status}");
        lines.extend(line_rx.iter());
        reader.join().unwrap();

        // What the child acknowledged, and the transaction it was in when killed.
        let mut acked_this_round = 0u64;
        let mut last_ack = durable_max;
        let mut pending: Option<Begin> = None;
        let mut startup = "killed before ready".to_string();
        for line in &lines {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("ready") => {
                    let w: Vec<&str> = words.collect();
                    startup = format!("store open {} ms, ready {} ms", w[0], w[1]);
                }
                Some("begin") => {
                    let w: Vec<&str> = words.collect();
                    let begin = Begin {
                        kind: Kind::parse(w[0]),
                        stamp: w[1].parse().unwrap(),
                        first: w[2].parse().unwrap(),
                        last: w[3].parse().unwrap(),
                        rows: w[4].parse().unwrap(),
                    };
                    if begin.kind != Kind::Update {
                        assert_eq!(begin.first, last_ack + 1, "round {round}: ids not contiguous: {line}");
                    }
                    pending = Some(begin);
                }
                Some("ack") => {
                    let w: Vec<&str> = words.collect();
                    let id: i64 = w[0].parse().unwrap();
                    let kind = Kind::parse(w[1]);
                    let stamp: u64 = w[2].parse().unwrap();
                    let rows: u64 = w[3].parse().unwrap();
                    let (writes, journal, ms): (u64, u64, u64) =
                        (w[4].parse().unwrap(), w[5].parse().unwrap(), w[6].parse().unwrap());
                    let begin = pending.take().unwrap_or_else(|| panic!("round {round}: ack without begin"));
                    assert_eq!((begin.kind, begin.stamp, begin.rows), (kind, stamp, rows), "{line}");
                    assert!(id >= last_ack, "round {round}: acks went backwards: {line}");
                    if kind != Kind::Update {
                        assert_eq!(id, begin.last, "round {round}: {line}");
                    }
                    last_ack = id;
                    if kind == Kind::Update {
                        updates.insert(stamp, rows);
                    }
                    acked_this_round += 1;
                    totals.acks += 1;
                    *totals.by_kind.entry(kind.name()).or_default() += 1;
                    let slowest = totals.slowest_ms.entry(kind.name()).or_default();
                    *slowest = (*slowest).max(ms);
                    if writes == 1 && journal == 0 {
                        totals.one_batch += 1;
                    }
                    if journal > 0 {
                        totals.journaled += 1;
                        match kind {
                            Kind::Big => totals.journaled_big += 1,
                            Kind::Update => totals.journaled_update += 1,
                            Kind::One => {}
                        }
                    }
                }
                _ => {} // libtest's own lines
            }
        }

        let verify_started = Instant::now();
        // A child that never got ready ran no SQL: the store must hold what the last check saw.
        let unchanged = if lines.iter().any(is_ready) { None } else { snapshot.as_ref() };
        let next_from_spawn = (round + 1).is_multiple_of(5);
        let mut found =
            verify(dir.path(), round, last_ack, pending, &mut updates, unchanged, next_from_spawn);
        snapshot = found.snapshot.take();
        let verify_ms = verify_started.elapsed().as_millis();
        let outcome = match (pending, found.inflight_committed) {
            (None, _) => "none".to_string(),
            (Some(b), true) => {
                totals.inflight_committed += 1;
                format!("{} committed", b.kind.name())
            }
            (Some(b), false) => {
                totals.inflight_rolled_back += 1;
                format!("{} rolled back", b.kind.name())
            }
        };
        totals.hot_journals += u64::from(found.journal == "hot");
        eprintln!(
            "round {round:2}: {startup}, killed {:3} ms after {}, acks {acked_this_round:3}, \
             last ack {last_ack:6}, rows found {:6} (max id {:6}), in flight: {outcome}, \
             journal: {}, verify {verify_ms} ms",
            delay.as_millis(),
            if from_spawn { "spawn" } else { "ready" },
            found.rows,
            found.max_id,
            found.journal,
        );
        durable_max = found.max_id;
    }

    eprintln!(
        "{round} rounds in {:.1} s: {} acks {:?}; one-batch commits {}; journaled commits {} \
         (big {}, update {}); slowest ms {:?}; hot journals rolled back {}; in-flight committed {}, \
         rolled back {}; committed updates {}",
        test_started.elapsed().as_secs_f64(),
        totals.acks,
        totals.by_kind,
        totals.one_batch,
        totals.journaled,
        totals.journaled_big,
        totals.journaled_update,
        totals.slowest_ms,
        totals.hot_journals,
        totals.inflight_committed,
        totals.inflight_rolled_back,
        updates.len(),
    );
    assert!(totals.acks > 0, "no commit was ever acknowledged");
    assert!(totals.one_batch > 0, "no single-batch (batch-atomic) commit was acknowledged");
    assert!(totals.journaled_big > 0, "no journaled ~3 MB insert was acknowledged");
    assert!(totals.journaled_update > 0, "no journaled UPDATE was acknowledged");
}

/// Files under `dir` with their sizes, for failure messages.
fn list_files(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
                out.push((name, entry.metadata().map_or(0, |m| m.len())));
            }
        }
    }
    out.sort();
    out
}

/// Every key of the actor with a hash of its value.
type Snapshot = BTreeMap<Vec<u8>, u64>;

fn snapshot(store: &dyn KvStore) -> Snapshot {
    let end = b"acrash\x01".to_vec();
    let mut start = b"acrash\0".to_vec();
    let mut out = Snapshot::new();
    loop {
        let page = store.scan(&start, &end, 4096).unwrap();
        let Some((last, _)) = page.last() else { break };
        start = last.clone();
        start.push(0);
        for (key, value) in page {
            let mut hasher = DefaultHasher::new();
            value.hash(&mut hasher);
            out.insert(key, hasher.finish());
        }
    }
    out
}

fn diff(before: &Snapshot, after: &Snapshot) -> String {
    let mut lines = Vec::new();
    for (key, value) in before {
        match after.get(key) {
            None => lines.push(format!("removed {}", key.escape_ascii())),
            Some(v) if v != value => lines.push(format!("changed {}", key.escape_ascii())),
            Some(_) => {}
        }
    }
    for key in after.keys().filter(|k| !before.contains_key(*k)) {
        lines.push(format!("added {}", key.escape_ascii()));
    }
    let shown = lines.iter().take(20).cloned().collect::<Vec<_>>().join(", ");
    format!("{} keys before, {} after, {} differ: {shown}", before.len(), after.len(), lines.len())
}

struct Found {
    snapshot: Option<Snapshot>,
    rows: i64,
    max_id: i64,
    /// The journal the store held before the check: "none", "stale" (header not yet valid,
    /// which SQLite ignores and leaves) or "hot" (SQLite rolls it back).
    journal: &'static str,
    inflight_committed: bool,
}

/// Reopens the store and checks it against what was acknowledged. `updates` gains the
/// in-flight update if it turns out committed.
///
/// `unchanged`: what the store held when the previous check ended, if the child died before it
/// ran any SQL, so the store must still hold exactly that. `snapshot_after`: take a snapshot
/// once done, for the next round.
fn verify(
    dir: &Path,
    round: u32,
    last_ack: i64,
    pending: Option<Begin>,
    updates: &mut BTreeMap<u64, u64>,
    unchanged: Option<&Snapshot>,
    snapshot_after: bool,
) -> Found {
    let store = Arc::new(FjallStore::open(FjallConfig::new(dir)).unwrap_or_else(|e| {
        panic!("round {round}: cannot reopen the store: {e}; its folder holds {:?}", list_files(dir))
    }));
    if let Some(before) = unchanged {
        let now = snapshot(&*store);
        assert!(
            &now == before,
            "round {round}: the child died before running any SQL, yet the store changed: {}; \
             its folder holds {:?}",
            diff(before, &now),
            list_files(dir)
        );
    }
    let first_chunk = [JOURNAL_PREFIX, &0u64.to_be_bytes()].concat();
    let journal = match &store.get_many(&[JOURNAL_PREFIX.to_vec(), first_chunk]).unwrap()[..] {
        [None, _] => "none",
        [Some(_), Some(chunk)] if chunk[0] != 0 => "hot",
        _ => "stale",
    };
    // Checking sorts the whole table, which outgrows the in-memory scratch limit over a long
    // run (ROOST_CRASH_ROUNDS=100): sorts spill to a scratch folder on disk, as in the server.
    let scratch = tempfile::tempdir().unwrap();
    let config =
        StorageConfig { scratch_dir: Some(scratch.path().to_path_buf()), ..StorageConfig::default() };
    let storage = Storage::new(store.clone(), config).unwrap();
    let mut db = storage.open(&actor()).unwrap();
    let ctx = format!("round {round} (last ack {last_ack}, in flight {pending:?})");
    let mut query = |sql: &str, params: Vec<Value>| {
        let params = if params.is_empty() { Params::None } else { Params::Positional(params) };
        db.execute(sql, &params).unwrap_or_else(|e| panic!("{ctx}: {sql}: {e}")).rows
    };

    let has_table =
        int(&query("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 't'", vec![])[0][0]);
    let mut found = Found { snapshot: None, rows: 0, max_id: 0, journal, inflight_committed: false };
    if has_table == 0 {
        assert_eq!(last_ack, 0, "{ctx}: the table is gone");
        assert!(updates.is_empty(), "{ctx}: the table is gone");
    } else {
        // One pass over the table: per stamp, its rows, their highest id, how many are
        // acknowledged ids, and how many payloads do not carry their own id.
        let groups = query(
            "SELECT substr(payload, 1, 8), count(*), max(id), sum(id <= ?), \
             sum(length(payload) < 16 OR hex(substr(payload, 9, 8)) <> printf('%016X', id)) \
             FROM t GROUP BY 1",
            vec![Value::Integer(last_ack)],
        );
        let (mut rows, mut max_id, mut acked_rows, mut bad) = (0, 0, 0, 0);
        let mut stamps: BTreeMap<u64, u64> = BTreeMap::new();
        for g in &groups {
            rows += int(&g[1]);
            max_id = max_id.max(int(&g[2]));
            acked_rows += int(&g[3]);
            bad += int(&g[4]);
            if let Value::Blob(b) = &g[0] {
                if let Ok(stamp) = <[u8; 8]>::try_from(b.as_slice()) {
                    stamps.insert(u64::from_be_bytes(stamp), int(&g[1]) as u64);
                }
            }
        }
        found.rows = rows;
        found.max_id = max_id;
        assert_eq!(bad, 0, "{ctx}: rows whose payload does not carry their id");
        assert_eq!(acked_rows, last_ack, "{ctx}: acknowledged rows lost ({rows} rows, max id {max_id})");
        assert_eq!(rows, max_id, "{ctx}: ids are not contiguous from 1");
        if max_id > last_ack {
            match pending {
                Some(b) if b.kind != Kind::Update && b.first == last_ack + 1 && b.last == max_id => {
                    found.inflight_committed = true;
                }
                _ => panic!("{ctx}: rows {}..={max_id} are not one whole in-flight insert", last_ack + 1),
            }
        }
        if let Some(b) = pending.filter(|b| b.kind == Kind::Update) {
            match stamps.get(&b.stamp).copied().unwrap_or(0) {
                0 => {}
                n if n == b.rows => {
                    found.inflight_committed = true;
                    updates.insert(b.stamp, b.rows);
                }
                n => panic!("{ctx}: torn update: {n} of {} rows carry its stamp", b.rows),
            }
        }
        for (&stamp, &rows) in updates.iter() {
            let n = stamps.get(&stamp).copied().unwrap_or(0);
            assert_eq!(n, rows, "{ctx}: committed update {stamp} lost rows");
        }
    }
    let r = query("PRAGMA integrity_check", vec![]);
    assert_eq!(r, vec![vec![Value::Text("ok".into())]], "{ctx}: integrity check");
    drop(db);
    drop(storage);
    found.snapshot = snapshot_after.then(|| snapshot(&*store));
    // The store syncs and stops when its last reference goes.
    assert_eq!(Arc::strong_count(&store), 1);
    drop(store);
    found
}
