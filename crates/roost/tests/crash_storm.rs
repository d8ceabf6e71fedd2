//! Crash test of the host under wake storms, imports and deletes: SIGKILL loses nothing that
//! was acknowledged, and every database stays intact.
//!
//! With `ROOST_STORM_CHILD=<data dir>` the test binary is the child: a host over a fjall store
//! (`Durability::Sync`) that lets few actors be awake at once, driven in waves. Each wave sends
//! one insert to every one of [`ACTORS`] actors at once (a wake storm: most are asleep, so they
//! wake and evict each other); every third wave also imports a prepared SQLite file into one of
//! the import actors, and every seventh deletes one storm actor. It prints a line when each is
//! acknowledged. Without it, it is the parent: each round spawns a child on the same data
//! folder, kills it 100-1200 ms after it is ready, then opens the store and checks that
//! - every acknowledged insert of a storm actor since its last acknowledged delete is there (a
//!   delete in flight at the kill may have happened or not: all rows, or none);
//! - an import actor holds exactly the last acknowledged import, or the one in flight, whole;
//! - `PRAGMA integrity_check` is ok for every actor.
//!
//! `ROOST_STORM_ROUNDS` sets the rounds (default 4; the long run uses 100).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use roost::kv::{FjallConfig, FjallStore};
use roost::{ActorId, Host, HostConfig, Params, Statement, Storage, StorageConfig, Value};

const CHILD_ENV: &str = "ROOST_STORM_CHILD";
const ROUNDS_ENV: &str = "ROOST_STORM_ROUNDS";
const TEST_NAME: &str = "acknowledged_writes_survive_sigkill_during_storms_and_imports";
const ACTORS: usize = 40;
const IMPORT_ACTORS: usize = 3;

fn storm_actor(i: usize) -> ActorId {
    ActorId::new(format!("storm-{i}")).unwrap()
}

fn import_actor(i: usize) -> ActorId {
    ActorId::new(format!("import-{i}")).unwrap()
}

#[test]
fn acknowledged_writes_survive_sigkill_during_storms_and_imports() {
    match std::env::var_os(CHILD_ENV) {
        Some(dir) => child(Path::new(&dir)),
        None => parent(),
    }
}

/// A SQLite file with `rows` rows and the import's stamp, in `dir`.
fn import_file(dir: &Path, stamp: u64, rows: i64) -> std::path::PathBuf {
    let path = dir.join(format!("import-{stamp}.db"));
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(&format!(
        "CREATE TABLE stamp(s INTEGER); INSERT INTO stamp VALUES ({stamp}); \
         CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); \
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {rows}) \
         INSERT INTO t SELECT i, zeroblob(500) FROM s;"
    ))
    .unwrap();
    drop(db);
    path
}

/// Lines: `ready`, `ack <actor> <id>`, `begin-delete <actor>`, `deleted <actor>`,
/// `begin-import <actor> <stamp> <rows>`, `imported <actor> <stamp>`.
fn child(dir: &Path) -> ! {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let store = Arc::new(FjallStore::open(FjallConfig::new(dir.join("store"))).unwrap());
        let storage = Storage::new(store, StorageConfig::default()).unwrap();
        let probe = HostConfig { memory_budget_bytes: 1 << 30, ..HostConfig::default() };
        let connections = roost::host::BudgetPlan::new(&probe, &storage).unwrap().connections_bytes;
        // Eight awake at once: a wave of 40 wakes evicts most of the others.
        let config =
            HostConfig { actor_bytes_estimate: connections / 8, measure_actor_bytes: false, ..probe };
        let host = Host::new(storage, config).unwrap();
        let files = tempfile::tempdir().unwrap();
        let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
        let say = |line: String| {
            let mut out = out.lock().unwrap();
            writeln!(out, "{line}").unwrap();
            out.flush().unwrap();
        };
        say(String::new());
        say("ready".into());
        let mut next_id: i64 = rand::rng().random_range(0..1_000_000) * 1_000;
        for wave in 0u64.. {
            let inserts = (0..ACTORS).map(|i| {
                next_id += 1;
                let (host, id, say) = (host.clone(), next_id, &say);
                async move {
                    let statements = vec![
                        Statement::new("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY)"),
                        Statement::with_params(
                            "INSERT INTO t VALUES (?1)",
                            Params::Positional(vec![Value::Integer(id)]),
                        ),
                    ];
                    if host.batch(&storm_actor(i), statements, true).await.is_ok() {
                        say(format!("ack storm-{i} {id}"));
                    }
                }
            });
            let import = async {
                if wave % 3 == 0 {
                    let actor = (wave as usize / 3) % IMPORT_ACTORS;
                    let stamp: u64 = rand::rng().random_range(1..u64::MAX / 2);
                    let rows = rand::rng().random_range(1..3000);
                    let path = import_file(files.path(), stamp, rows);
                    say(format!("begin-import import-{actor} {stamp} {rows}"));
                    let imported = host.with_db(&import_actor(actor), move |db| db.import_from(&path)).await;
                    if imported.is_ok() {
                        say(format!("imported import-{actor} {stamp}"));
                    }
                }
            };
            let delete = async {
                if wave % 7 == 6 {
                    let i = rand::rng().random_range(0..ACTORS);
                    say(format!("begin-delete storm-{i}"));
                    if host.delete(&storm_actor(i)).await.is_ok() {
                        say(format!("deleted storm-{i}"));
                    }
                }
            };
            tokio::join!(futures_util::future::join_all(inserts), import);
            // After the wave's inserts were acknowledged (and said so): a delete never races
            // an acknowledgement line of its own actor.
            delete.await;
        }
        unreachable!()
    })
}

/// What the parent knows from the child's lines.
#[derive(Default)]
struct Known {
    /// Acknowledged ids per storm actor since its last acknowledged delete.
    rows: BTreeMap<String, BTreeSet<i64>>,
    /// Storm actors whose delete was in flight at the kill.
    deleting: BTreeSet<String>,
    /// Import actor -> (stamp, rows) of the last acknowledged import.
    imported: BTreeMap<String, (u64, i64)>,
    /// Import actor -> (stamp, rows) in flight at the kill.
    importing: BTreeMap<String, (u64, i64)>,
}

impl Known {
    fn read(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["ack", actor, id] => {
                self.rows.entry(actor.to_string()).or_default().insert(id.parse().unwrap());
            }
            ["begin-delete", actor] => {
                self.deleting.insert(actor.to_string());
            }
            ["deleted", actor] => {
                self.deleting.remove(*actor);
                self.rows.remove(*actor);
            }
            ["begin-import", actor, stamp, rows] => {
                self.importing.insert(actor.to_string(), (stamp.parse().unwrap(), rows.parse().unwrap()));
            }
            ["imported", actor, stamp] => {
                let started = self.importing.remove(*actor).unwrap();
                assert_eq!(started.0, stamp.parse::<u64>().unwrap());
                self.imported.insert(actor.to_string(), started);
            }
            _ => {}
        }
    }
}

fn parent() {
    let rounds: u32 = std::env::var(ROUNDS_ENV).ok().map_or(4, |s| s.parse().expect(ROUNDS_ENV));
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut known = Known::default();
    let (mut acks, mut imports, mut deletes) = (0usize, 0usize, 0usize);
    let started = Instant::now();
    for round in 1..=rounds {
        let mut child = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        // libtest prints its own lines first.
        while rx.recv_timeout(Duration::from_secs(60)).expect("the child starts") != "ready" {}
        let delay = Duration::from_millis(rand::rng().random_range(100..1200));
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        for line in rx.try_iter() {
            acks += usize::from(line.starts_with("ack "));
            imports += usize::from(line.starts_with("imported "));
            deletes += usize::from(line.starts_with("deleted "));
            known.read(&line);
        }
        verify(dir.path(), &mut known, round);
        eprintln!(
            "round {round}: killed {} ms after ready; {acks} acks, {imports} imports, {deletes} deletes so far",
            delay.as_millis()
        );
    }
    eprintln!("{rounds} rounds in {:.1} s: {acks} acknowledged inserts, {imports} imports, {deletes} deletes checked", started.elapsed().as_secs_f64());
    assert!(acks > 0, "no insert was acknowledged");
}

fn rows_of(db: &mut roost::Database, sql: &str) -> Result<Vec<Vec<Value>>, roost::Error> {
    db.execute(sql, &Params::None).map(|r| r.rows)
}

/// Checks every actor against what was acknowledged; settles what was in flight.
fn verify(dir: &Path, known: &mut Known, round: u32) {
    let store = Arc::new(FjallStore::open(FjallConfig::new(dir.join("store"))).unwrap());
    let scratch = tempfile::tempdir().unwrap();
    let config =
        StorageConfig { scratch_dir: Some(scratch.path().to_path_buf()), ..StorageConfig::default() };
    let storage = Storage::new(store, config).unwrap();
    for i in 0..ACTORS {
        let name = format!("storm-{i}");
        let mut db = storage.open(&storm_actor(i)).unwrap();
        let found: BTreeSet<i64> = match rows_of(&mut db, "SELECT id FROM t") {
            Ok(rows) => {
                rows.iter().map(|r| if let Value::Integer(v) = r[0] { v } else { panic!() }).collect()
            }
            Err(roost::Error::Sql { message, .. }) if message.contains("no such table") => BTreeSet::new(),
            Err(e) => panic!("round {round}: {name}: {e}"),
        };
        let acked = known.rows.get(&name).cloned().unwrap_or_default();
        let missing: Vec<_> = acked.difference(&found).collect();
        if known.deleting.remove(&name) && found.is_empty() {
            // The delete in flight happened: nothing acknowledged before it is expected.
            known.rows.remove(&name);
        } else {
            assert!(missing.is_empty(), "round {round}: {name} lost acknowledged inserts {missing:?}");
        }
        // Rows beyond the acknowledged ones were in flight: they are durable now.
        known.rows.insert(name.clone(), found);
        check(&mut db, round, &name);
    }
    for i in 0..IMPORT_ACTORS {
        let name = format!("import-{i}");
        let mut db = storage.open(&import_actor(i)).unwrap();
        let stamp = match rows_of(&mut db, "SELECT s FROM stamp") {
            Ok(rows) => rows.first().map(|r| if let Value::Integer(v) = r[0] { v as u64 } else { panic!() }),
            Err(roost::Error::Sql { message, .. }) if message.contains("no such table") => None,
            Err(e) => panic!("round {round}: {name}: {e}"),
        };
        let acked = known.imported.get(&name).copied();
        let in_flight = known.importing.remove(&name);
        let expected = match stamp {
            None => {
                assert!(acked.is_none(), "round {round}: {name} lost its acknowledged import");
                continue;
            }
            Some(s) if acked.is_some_and(|(a, _)| a == s) => acked.unwrap(),
            Some(s) if in_flight.is_some_and(|(f, _)| f == s) => in_flight.unwrap(),
            Some(s) => panic!(
                "round {round}: {name} holds import {s}, acknowledged {acked:?}, in flight {in_flight:?}"
            ),
        };
        let count = rows_of(&mut db, "SELECT count(*) FROM t").unwrap();
        assert_eq!(
            count,
            vec![vec![Value::Integer(expected.1)]],
            "round {round}: {name} import {} torn",
            expected.0
        );
        known.imported.insert(name.clone(), expected);
        check(&mut db, round, &name);
    }
}

fn check(db: &mut roost::Database, round: u32, name: &str) {
    let ok = rows_of(db, "PRAGMA integrity_check").unwrap();
    assert_eq!(ok, vec![vec![Value::Text("ok".into())]], "round {round}: {name}");
}
