//! Behaviour of `Storage` and `Database` over the memory and fjall stores.

use std::sync::Arc;

use roost::kv::{FjallConfig, FjallStore, KvStore, MemoryStore};
use roost::{ActorId, Error, Params, Statement, Storage, StorageConfig, Value};

fn id(s: &str) -> ActorId {
    ActorId::new(s).unwrap()
}

fn memory() -> (Arc<MemoryStore>, Storage) {
    let store = Arc::new(MemoryStore::new());
    let storage = Storage::new(store.clone(), StorageConfig::default()).unwrap();
    (store, storage)
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

#[test]
fn sqlite_is_built_with_batch_atomic_write() {
    let (_, storage) = memory();
    let mut db = storage.open(&id("a")).unwrap();
    let options = db.execute("PRAGMA compile_options", &Params::None).unwrap();
    let has = options.rows.iter().any(|r| r[0] == Value::Text("ENABLE_BATCH_ATOMIC_WRITE".into()));
    assert!(has, "{:?}", options.rows);
}

#[test]
fn reads_on_a_new_actor_create_nothing() {
    let (store, storage) = memory();
    let mut db = storage.open(&id("fresh")).unwrap();
    let r = db.execute("SELECT count(*) FROM sqlite_master", &Params::None).unwrap();
    assert_eq!(r.rows, vec![vec![Value::Integer(0)]]);
    assert!(db.execute("SELECT * FROM missing", &Params::None).is_err());
    drop(db);
    assert!(store.dump().is_empty(), "a read wrote to the store");
    assert_eq!(store.stats().write_calls, 0);
    assert_eq!(storage.size_bytes(&id("fresh")).unwrap(), None);
}

#[test]
fn a_small_transaction_is_exactly_one_store_write() {
    let (store, storage) = memory();
    let mut db = storage.open(&id("t")).unwrap();
    db.execute_script("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)").unwrap();
    for i in 0..10 {
        let before = store.stats().write_calls;
        let params = Params::Positional(vec![Value::Integer(i), Value::Text(format!("row {i}"))]);
        db.execute("INSERT INTO t VALUES (?, ?)", &params).unwrap();
        assert_eq!(store.stats().write_calls - before, 1, "commit {i}");
    }
    let journal_keys = store.dump().into_iter().filter(|(k, _)| k.starts_with(b"at\0j")).count();
    assert_eq!(journal_keys, 0);
    let r = db.execute("SELECT count(*), max(v) FROM t", &Params::None).unwrap();
    assert_eq!(r.rows, vec![vec![Value::Integer(10), Value::Text("row 9".into())]]);
}

#[test]
fn values_params_and_results() {
    let (_, storage) = memory();
    let mut db = storage.open(&id("v")).unwrap();
    db.execute_script("CREATE TABLE t(a, b, c, d, e)").unwrap();
    let values = vec![
        Value::Null,
        Value::Integer(-7),
        Value::Real(1.5),
        Value::Text("héllo".into()),
        Value::Blob(vec![0, 1, 255]),
    ];
    let r = db.execute("INSERT INTO t VALUES (?, ?, ?, ?, ?)", &Params::Positional(values.clone())).unwrap();
    assert_eq!((r.rows_affected, r.last_insert_rowid), (1, 1));
    let named = Params::Named(vec![(":x".into(), Value::Integer(-7)), ("y".into(), Value::Real(1.5))]);
    let r = db.execute("SELECT * FROM t WHERE b = :x AND c = $y", &named).unwrap();
    assert_eq!(r.columns, vec!["a", "b", "c", "d", "e"]);
    assert_eq!(r.rows, vec![values]);
    assert_eq!(r.rows_affected, 0);

    let err = db.execute("SELECT ?", &Params::None).unwrap_err();
    assert!(matches!(err, Error::Parameters(_)), "{err:?}");
    let err = db.execute("SELECT ?", &Params::Positional(vec![Value::Null, Value::Null])).unwrap_err();
    assert!(matches!(err, Error::Parameters(_)), "{err:?}");
    let err = db.execute("SELECT :a", &Params::Named(vec![("b".into(), Value::Null)])).unwrap_err();
    assert!(matches!(err, Error::Parameters(_)), "{err:?}");
    let err = db.execute("SELEC 1", &Params::None).unwrap_err();
    assert!(matches!(err, Error::Sql { .. }), "{err:?}");
    let err = db.execute("SELECT 1; SELECT 2", &Params::None).unwrap_err();
    assert!(matches!(err, Error::Parameters(_)), "{err:?}");
    let err = db.execute("PRAGMA journal_mode=WAL", &Params::None).unwrap_err();
    assert!(matches!(err, Error::Sql { .. }), "{err:?}");
    let err = db.execute("ATTACH 'other.db' AS o", &Params::None).unwrap_err();
    assert!(matches!(err, Error::Sql { .. }), "{err:?}");
    let err = db.execute("VACUUM INTO 'x.db'", &Params::None).unwrap_err();
    assert!(matches!(err, Error::Sql { .. }), "{err:?}");
    // The database still works after every refusal.
    let r = db.execute("SELECT count(*) FROM t", &Params::None).unwrap();
    assert_eq!(r.rows, vec![vec![Value::Integer(1)]]);
}

#[test]
fn batches_are_all_or_nothing_and_transactions_roll_back() {
    let (_, storage) = memory();
    let mut db = storage.open(&id("b")).unwrap();
    db.execute_script("CREATE TABLE t(x INTEGER PRIMARY KEY)").unwrap();
    let ok = vec![Statement::new("INSERT INTO t VALUES (1)"), Statement::new("SELECT count(*) FROM t")];
    let results = db.batch(&ok, true).unwrap();
    assert_eq!(results[1].rows, vec![vec![Value::Integer(1)]]);
    let bad = vec![Statement::new("INSERT INTO t VALUES (2)"), Statement::new("INSERT INTO t VALUES (1)")];
    let err = db.batch(&bad, true).unwrap_err();
    assert!(matches!(err, Error::InBatch { index: 1, .. }), "{err:?}");
    assert!(!db.in_transaction());
    let count = |db: &mut roost::Database| {
        int(&db.execute("SELECT count(*) FROM t", &Params::None).unwrap().rows[0][0])
    };
    assert_eq!(count(&mut db), 1);
    // Without `transaction`, statements before the failure stay.
    assert!(db.batch(&bad, false).is_err());
    assert_eq!(count(&mut db), 2);

    let r: Result<(), Error> = db.transaction(|tx| {
        tx.execute("INSERT INTO t VALUES (10)", &Params::None)?;
        tx.execute("INSERT INTO t VALUES (10)", &Params::None)?;
        Ok(())
    });
    assert!(r.is_err());
    assert_eq!(count(&mut db), 2);
    db.transaction(|tx| tx.execute("INSERT INTO t VALUES (11)", &Params::None)).unwrap();
    assert_eq!(count(&mut db), 3);
    // A transactional batch inside an explicit transaction uses a savepoint.
    db.execute_script("BEGIN").unwrap();
    assert!(db.batch(&bad, true).is_err());
    db.execute_script("COMMIT").unwrap();
    assert_eq!(count(&mut db), 3);
}

/// A transactional batch cannot end its own transaction: `ROLLBACK` fails it, a `COMMIT` is
/// refused (turned into a rollback), an `OR ROLLBACK` conflict fails it with its constraint;
/// the statements after never run in autocommit and nothing is applied.
#[test]
fn transactional_batches_cannot_end_their_transaction() {
    let (_, storage) = memory();
    let mut db = storage.open(&id("ended")).unwrap();
    db.execute_script("CREATE TABLE t(x INTEGER PRIMARY KEY)").unwrap();
    let count = |db: &mut roost::Database| {
        int(&db.execute("SELECT count(*) FROM t", &Params::None).unwrap().rows[0][0])
    };
    let batch = |ender: &str| {
        let sqls = ["INSERT INTO t VALUES (1)", ender, "INSERT INTO t VALUES (2)"];
        sqls.map(Statement::new).to_vec()
    };
    for ender in ["ROLLBACK", "COMMIT", "END TRANSACTION"] {
        let err = db.batch(&batch(ender), true).unwrap_err();
        assert!(
            matches!(&err, Error::InBatch { index: 1, source } if matches!(**source, Error::TransactionClosed)),
            "{ender}: {err:?}"
        );
        assert!(!db.in_transaction());
        assert_eq!(count(&mut db), 0, "{ender}");
    }
    let err = db.batch(&batch("INSERT OR ROLLBACK INTO t VALUES (1)"), true).unwrap_err();
    assert!(
        matches!(&err, Error::InBatch { index: 1, source } if matches!(**source, Error::Sql { .. })),
        "{err:?}"
    );
    assert_eq!(count(&mut db), 0);
    // Inside a transaction opened before the batch, ending it ends the caller's transaction too:
    // the batch fails and nothing of it is kept.
    db.execute_script("BEGIN; INSERT INTO t VALUES (10)").unwrap();
    let err = db.batch(&batch("COMMIT"), true).unwrap_err();
    assert!(matches!(&err, Error::InBatch { index: 1, .. }), "{err:?}");
    assert!(!db.in_transaction());
    assert_eq!(count(&mut db), 0);
    // Commits go through again afterwards.
    db.batch(&[Statement::new("INSERT INTO t VALUES (1)")], true).unwrap();
    db.execute_script("INSERT INTO t VALUES (2)").unwrap();
    assert_eq!(count(&mut db), 2);
}

#[test]
fn data_survives_reopen_and_delete_removes_everything() {
    let (store, storage) = memory();
    let mut db = storage.open(&id("r")).unwrap();
    db.execute_script("CREATE TABLE t(x); INSERT INTO t VALUES (42);").unwrap();
    assert!(matches!(storage.open(&id("r")), Err(Error::ActorBusy)));
    assert!(matches!(storage.delete(&id("r")), Err(Error::ActorBusy)));
    drop(db);
    let mut db = storage.open(&id("r")).unwrap();
    assert_eq!(db.execute("SELECT x FROM t", &Params::None).unwrap().rows, vec![vec![Value::Integer(42)]]);
    assert!(storage.size_bytes(&id("r")).unwrap().unwrap() >= 8192);
    assert!(db.delete().unwrap());
    let left: Vec<_> = store.dump().into_iter().map(|(k, _)| k).collect();
    assert_eq!(left, vec![b"ar\0g".to_vec()], "only the generation stays");
    assert_eq!(storage.size_bytes(&id("r")).unwrap(), None);
    let mut db = storage.open(&id("r")).unwrap();
    assert_eq!(
        db.execute("SELECT count(*) FROM sqlite_master", &Params::None).unwrap().rows[0][0],
        Value::Integer(0)
    );
    assert!(!storage.delete(&id("nobody")).unwrap());
    assert_eq!(storage.attached_len(), 1);
}

#[test]
fn large_transactions_use_the_journal_and_vacuum_truncates() {
    let (store, storage) = memory();
    let mut db = storage.open(&id("big")).unwrap();
    db.execute_script("CREATE TABLE t(x BLOB)").unwrap();
    // ~8 MiB in one transaction: far beyond the 2 MiB page cache, so SQLite spills.
    db.execute_script("INSERT INTO t SELECT randomblob(4000) FROM generate_series(1, 2000)").unwrap_or_else(|_| {
        db.execute_script(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < 2000) INSERT INTO t SELECT randomblob(4000) FROM s",
        )
        .unwrap()
    });
    // Change every existing page in one transaction: journal path.
    db.execute_script("UPDATE t SET x = randomblob(4000)").unwrap();
    let size = storage.size_bytes(&id("big")).unwrap().unwrap();
    assert!(size > 7 << 20, "{size}");
    db.execute_script("DELETE FROM t; VACUUM;").unwrap();
    let small = storage.size_bytes(&id("big")).unwrap().unwrap();
    assert!(small < 64 << 10, "{small}");
    let chunks =
        store.dump().into_iter().filter(|(k, _)| k.starts_with(b"abig\0m") && k.len() > 6).count() as u64;
    assert_eq!(chunks * 4096, small, "chunks beyond the truncated size are gone");
    let journal = store.dump().into_iter().filter(|(k, _)| k.starts_with(b"abig\0j")).count();
    assert_eq!(journal, 0);
    let r = db.execute("PRAGMA integrity_check", &Params::None).unwrap();
    assert_eq!(r.rows, vec![vec![Value::Text("ok".into())]]);
}

#[test]
fn journal_limit_gives_a_typed_error_and_loses_nothing() {
    let store = Arc::new(MemoryStore::new());
    let mut config = StorageConfig::default();
    config.limits.journal_bytes_max = 1 << 20;
    let storage = Storage::new(store, config).unwrap();
    let mut db = storage.open(&id("lim")).unwrap();
    db.execute_script(
        "CREATE TABLE t(x BLOB); WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < 1000) INSERT INTO t SELECT randomblob(3000) FROM s;",
    )
    .unwrap();
    let before = db.execute("SELECT sum(length(x)), count(*) FROM t", &Params::None).unwrap();
    let err = db.execute("UPDATE t SET x = randomblob(3000)", &Params::None).unwrap_err();
    assert!(matches!(err, Error::TransactionTooLarge { bytes_max } if bytes_max == 1 << 20), "{err:?}");
    assert_eq!(db.execute("SELECT sum(length(x)), count(*) FROM t", &Params::None).unwrap(), before);
    let r = db.execute("PRAGMA integrity_check", &Params::None).unwrap();
    assert_eq!(r.rows, vec![vec![Value::Text("ok".into())]]);
}

#[test]
fn row_limit_applies_nothing() {
    let store = Arc::new(MemoryStore::new());
    let config = StorageConfig { rows_max: 5, ..StorageConfig::default() };
    let storage = Storage::new(store, config).unwrap();
    let mut db = storage.open(&id("rows")).unwrap();
    db.execute_script("CREATE TABLE t(x)").unwrap();
    let err = db
        .execute("INSERT INTO t SELECT value FROM generate_series(1, 10) RETURNING x", &Params::None)
        .or_else(|_| db.execute("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < 10) INSERT INTO t SELECT i FROM s RETURNING x", &Params::None))
        .unwrap_err();
    assert_eq!(err, Error::TooManyRows { rows_max: 5 });
    assert_eq!(db.execute("SELECT count(*) FROM t", &Params::None).unwrap().rows[0][0], Value::Integer(0));
}

#[test]
fn fjall_backed_database_survives_reopen_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store: Arc<dyn KvStore> = Arc::new(FjallStore::open(FjallConfig::new(dir.path())).unwrap());
        let storage = Storage::new(store, StorageConfig::default()).unwrap();
        let mut db = storage.open(&id("f")).unwrap();
        db.execute_script("CREATE TABLE t(x); INSERT INTO t VALUES ('persisted');").unwrap();
    }
    let store: Arc<dyn KvStore> = Arc::new(FjallStore::open(FjallConfig::new(dir.path())).unwrap());
    let storage = Storage::new(store, StorageConfig::default()).unwrap();
    let mut db = storage.open(&id("f")).unwrap();
    assert_eq!(
        db.execute("SELECT x FROM t", &Params::None).unwrap().rows,
        vec![vec![Value::Text("persisted".into())]]
    );
}

#[test]
fn a_second_owner_fences_the_first() {
    let store = Arc::new(MemoryStore::new());
    let node_a = Storage::new(store.clone(), StorageConfig::default()).unwrap();
    let node_b = Storage::new(store.clone(), StorageConfig::default()).unwrap();
    let mut a = node_a.open(&id("owned")).unwrap();
    a.execute_script("CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
    let mut b = node_b.open(&id("owned")).unwrap();
    b.execute("INSERT INTO t VALUES (2)", &Params::None).unwrap();
    let err = a.execute("INSERT INTO t VALUES (3)", &Params::None).unwrap_err();
    assert_eq!(err, Error::Fenced);
    drop(a);
    let rows = b.execute("SELECT x FROM t ORDER BY x", &Params::None).unwrap().rows;
    assert_eq!(rows, vec![vec![Value::Integer(1)], vec![Value::Integer(2)]]);
}

/// 4 MB of rows whose sort is as large as they are.
fn sortable(storage: &Storage) -> roost::Database {
    let mut db = storage.open(&id("sorts")).unwrap();
    db.execute_script(
        "CREATE TABLE t(k, v); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 1000) \
         INSERT INTO t SELECT random(), randomblob(4000) FROM c;",
    )
    .unwrap();
    db
}

const BIG_SORT: &str = "SELECT k, v FROM t ORDER BY k LIMIT 1 OFFSET 999";

#[test]
fn scratch_files_over_their_cap_fail_with_a_typed_error_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let limits = roost::vfs::VfsLimits { scratch_bytes_max: 1 << 20, ..Default::default() };
    let config =
        StorageConfig { scratch_dir: Some(dir.path().join("scratch")), limits, ..StorageConfig::default() };
    let storage = Storage::new(Arc::new(MemoryStore::new()), config).unwrap();
    let mut db = sortable(&storage);
    let error = db.execute(BIG_SORT, &Params::None).unwrap_err();
    assert_eq!(error, Error::ScratchFull { bytes_max: 1 << 20 });
    assert!(error.to_string().contains("temporary storage is full"), "{error}");
    assert_eq!(storage.scratch_bytes(), 0, "the failed statement's files are closed");
    let r = db.execute("SELECT count(*) FROM t", &Params::None).unwrap();
    assert_eq!(r.rows, vec![vec![Value::Integer(1000)]], "the actor works on");
    // Without a folder, scratch files are in memory, each capped.
    let limits = roost::vfs::VfsLimits { memory_scratch_file_bytes_max: 1 << 20, ..Default::default() };
    let config = StorageConfig { limits, ..StorageConfig::default() };
    let storage = Storage::new(Arc::new(MemoryStore::new()), config).unwrap();
    let mut db = sortable(&storage);
    assert_eq!(db.execute(BIG_SORT, &Params::None).unwrap_err(), Error::ScratchFull { bytes_max: 1 << 20 });
    assert_eq!(storage.scratch_bytes(), 0);
}

#[test]
fn import_refuses_wal_mode_files_and_leaves_no_side_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.sqlite3");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
    drop(conn);
    let (_, storage) = memory();
    let mut db = storage.open(&id("dst")).unwrap();
    db.execute_script("CREATE TABLE kept(y)").unwrap();
    let error = db.import_from(&path).unwrap_err();
    assert!(matches!(&error, Error::Parameters(m) if m.contains("WAL mode")), "{error}");
    db.execute("SELECT * FROM kept", &Params::None).unwrap();
    // Converted as the server does for its spooled copy, it imports; reading it creates nothing.
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(roost::vfs::prepare_upload_header(&mut bytes[..100]).unwrap());
    std::fs::write(&path, &bytes).unwrap();
    db.import_from(&path).unwrap();
    assert_eq!(db.execute("SELECT x FROM t", &Params::None).unwrap().rows, vec![vec![Value::Integer(1)]]);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("wal.sqlite3")]);
}

#[test]
fn attach_table_holds_only_open_actors_and_one_attach_per_actor() {
    use roost::kv::{FaultPlan, FaultyStore};
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let storage = Storage::new(store.clone(), StorageConfig::default()).unwrap();
    // Open and close many actors: the table forgets each on close.
    let mut open: Vec<_> = (0..200).map(|i| storage.open(&id(&format!("a{i}"))).unwrap()).collect();
    for db in &mut open {
        db.execute_script("CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
    }
    assert_eq!(storage.attached_len(), 200);
    drop(open.split_off(100));
    assert_eq!(storage.attached_len(), 100);
    drop(open);
    assert_eq!(storage.attached_len(), 0);

    // A load that fails leaves nothing behind: the next open of the actor is not "busy".
    store.set_plan(FaultPlan { fail_read: 1, ..FaultPlan::default() });
    assert!(storage.open(&id("a7")).is_err());
    assert_eq!(storage.attached_len(), 0);
    store.set_plan(FaultPlan::default());
    let mut db = storage.open(&id("a7")).unwrap();
    assert_eq!(db.execute("SELECT x FROM t", &Params::None).unwrap().rows, vec![vec![Value::Integer(1)]]);
    drop(db);

    // Racing opens of one actor (loads run outside the table's lock): exactly one wins, the
    // others are told it is busy, and the winner sees its data.
    let storage = Arc::new(storage);
    for round in 0..20 {
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let (storage, barrier) = (storage.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    storage.open(&id("a3"))
                })
            })
            .collect();
        let outcomes: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        // Every outcome is held until here, so a second open cannot follow a first's close.
        let winners = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: exactly one opens it");
        assert!(
            outcomes.iter().all(|o| matches!(o, Ok(_) | Err(Error::ActorBusy))),
            "round {round}: the others are busy"
        );
        assert_eq!(storage.attached_len(), 1);
        drop(outcomes);
        assert_eq!(storage.attached_len(), 0);
    }
}
