//! Differential property test: random schemas and statements run on Roost (memory store) and
//! on SQLite over a plain temporary file must give the same answers and the same final
//! contents. A tiny page cache on the Roost side forces some transactions through the
//! journal path; `Reopen` crashes the store where it can lose what it did not sync (a
//! `CrashStore` drops unsynced batches) and checks that what was committed is what comes back.
//! The same cases run on the PostgreSQL store too.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use roost::kv::testing::TestDatabase;
use roost::kv::{CrashStore, KvStore, PostgresConfig, PostgresStore};
use roost::{ActorId, Params, Storage, StorageConfig, Value};

#[derive(Debug, Clone)]
struct Table {
    columns: Vec<&'static str>,
    indexed: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Insert {
        table: usize,
        values: Vec<Value>,
    },
    /// Many rows in one statement: `count` rows of `width`-byte deterministic blobs.
    Bulk {
        table: usize,
        count: u32,
        width: u32,
    },
    Update {
        table: usize,
        column: usize,
        value: Value,
        below: i64,
    },
    Delete {
        table: usize,
        below: i64,
    },
    Select {
        table: usize,
    },
    Aggregate {
        table: usize,
    },
    Begin,
    Commit,
    Rollback,
    Savepoint,
    Release,
    Vacuum,
    Reopen,
    Bad,
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Integer),
        (-1000i64..1000).prop_map(Value::Integer),
        any::<f64>().prop_filter("NaN reads back as NULL", |f| !f.is_nan()).prop_map(Value::Real),
        "[a-z ]{0,20}".prop_map(Value::Text),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Blob),
    ]
}

fn table() -> impl Strategy<Value = Table> {
    let types = prop_oneof![Just("INTEGER"), Just("TEXT"), Just("REAL"), Just("BLOB"), Just("")];
    (proptest::collection::vec(types, 1..4), any::<bool>())
        .prop_map(|(columns, indexed)| Table { columns, indexed })
}

fn op(tables: usize) -> impl Strategy<Value = Op> {
    let t = 0..tables;
    prop_oneof![
        6 => (t.clone(), proptest::collection::vec(value(), 4)).prop_map(|(table, values)| Op::Insert { table, values }),
        1 => (t.clone(), 1u32..400, prop_oneof![Just(10u32), Just(3000u32)])
            .prop_map(|(table, count, width)| Op::Bulk { table, count, width }),
        2 => (t.clone(), 0usize..4, value(), -500i64..500)
            .prop_map(|(table, column, value, below)| Op::Update { table, column, value, below }),
        2 => (t.clone(), -500i64..500).prop_map(|(table, below)| Op::Delete { table, below }),
        2 => t.clone().prop_map(|table| Op::Select { table }),
        1 => t.prop_map(|table| Op::Aggregate { table }),
        1 => Just(Op::Begin),
        1 => Just(Op::Commit),
        1 => Just(Op::Rollback),
        1 => Just(Op::Savepoint),
        1 => Just(Op::Release),
        1 => Just(Op::Vacuum),
        1 => Just(Op::Reopen),
        1 => Just(Op::Bad),
    ]
}

fn schema_sql(tables: &[Table]) -> Vec<String> {
    let mut sql = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        let cols: Vec<String> = t.columns.iter().enumerate().map(|(c, ty)| format!("c{c} {ty}")).collect();
        sql.push(format!("CREATE TABLE t{i}(id INTEGER PRIMARY KEY, {})", cols.join(", ")));
        if t.indexed {
            sql.push(format!("CREATE INDEX t{i}_c0 ON t{i}(c0)"));
        }
    }
    sql
}

/// The SQL and parameters of an op (`None` for ops that are not statements).
fn op_sql(tables: &[Table], op: &Op) -> Option<(String, Vec<Value>)> {
    let width = |t: usize| tables[t].columns.len();
    Some(match op {
        Op::Insert { table, values } => {
            let n = width(*table);
            let marks = vec!["?"; n].join(", ");
            let cols: Vec<String> = (0..n).map(|c| format!("c{c}")).collect();
            (format!("INSERT INTO t{table}({}) VALUES ({marks})", cols.join(", ")), values[..n].to_vec())
        }
        Op::Bulk { table, count, width: w } => (
            format!(
                "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < {count}) \
                 INSERT INTO t{table}(c0) SELECT substr(hex(zeroblob({w})) || i, 1, {w}) FROM s"
            ),
            vec![],
        ),
        Op::Update { table, column, value, below } => {
            let c = column % width(*table);
            (
                format!("UPDATE t{table} SET c{c} = ? WHERE id < ?"),
                vec![value.clone(), Value::Integer(*below)],
            )
        }
        Op::Delete { table, below } => {
            (format!("DELETE FROM t{table} WHERE id % 7 = 0 OR id < ?"), vec![Value::Integer(*below)])
        }
        Op::Select { table } => (format!("SELECT * FROM t{table} ORDER BY id"), vec![]),
        Op::Aggregate { table } => {
            (format!("SELECT count(*), sum(length(c0)), typeof(max(c0)) FROM t{table}"), vec![])
        }
        Op::Begin => ("BEGIN".into(), vec![]),
        Op::Commit => ("COMMIT".into(), vec![]),
        Op::Rollback => ("ROLLBACK".into(), vec![]),
        Op::Savepoint => ("SAVEPOINT sp".into(), vec![]),
        Op::Release => ("RELEASE sp".into(), vec![]),
        Op::Vacuum => ("VACUUM".into(), vec![]),
        Op::Bad => ("INSERT INTO nowhere VALUES (1)".into(), vec![]),
        Op::Reopen => return None,
    })
}

type Answer = Result<Vec<Vec<Value>>, ()>;

fn plain_run(conn: &rusqlite::Connection, sql: &str, params: &[Value]) -> Answer {
    let mut stmt = conn.prepare(sql).map_err(|_| ())?;
    for (i, v) in params.iter().enumerate() {
        let v = match v {
            Value::Null => rusqlite::types::Value::Null,
            Value::Integer(i) => rusqlite::types::Value::Integer(*i),
            Value::Real(f) => rusqlite::types::Value::Real(*f),
            Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
            Value::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
        };
        stmt.raw_bind_parameter(i + 1, v).map_err(|_| ())?;
    }
    let width = stmt.column_count();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(|_| ())? {
        out.push((0..width).map(|i| Value::from_ref(row.get_ref(i).unwrap())).collect());
    }
    Ok(out)
}

trait FromRef {
    fn from_ref(v: rusqlite::types::ValueRef<'_>) -> Self;
}

impl FromRef for Value {
    fn from_ref(v: rusqlite::types::ValueRef<'_>) -> Self {
        use rusqlite::types::ValueRef as R;
        match v {
            R::Null => Value::Null,
            R::Integer(i) => Value::Integer(i),
            R::Real(f) => Value::Real(f),
            R::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            R::Blob(b) => Value::Blob(b.to_vec()),
        }
    }
}

fn contents(tables: usize, mut query: impl FnMut(&str) -> Answer) -> Vec<Answer> {
    (0..tables).map(|t| query(&format!("SELECT * FROM t{t} ORDER BY id"))).collect()
}

/// Runs one case on `store`; `crash` runs wherever the store may lose what it did not sync
/// (a `CrashStore` drops it; PostgreSQL syncs every commit, so nothing to do there).
fn check(
    store: Arc<dyn KvStore>,
    crash: &dyn Fn(),
    actor: &str,
    tables: Vec<Table>,
    ops: Vec<Op>,
    cache_bytes: u64,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let plain = rusqlite::Connection::open(dir.path().join("plain.db")).unwrap();
    let config = StorageConfig { page_cache_bytes_max: cache_bytes, ..StorageConfig::default() };
    let new_storage = || Storage::new(store.clone(), config.clone()).unwrap();
    let mut storage = new_storage();
    let id = ActorId::new(actor).unwrap();
    let mut db = storage.open(&id).unwrap();
    let roost_run = |db: &mut roost::Database, sql: &str, params: &[Value]| -> Answer {
        db.execute(sql, &Params::Positional(params.to_vec())).map(|r| r.rows).map_err(|_| ())
    };
    for sql in schema_sql(&tables) {
        plain.execute_batch(&sql).unwrap();
        db.execute_script(&sql).unwrap();
    }
    for (step, op) in ops.iter().enumerate() {
        let Some((sql, params)) = op_sql(&tables, op) else {
            // Reopen after a crash: an open transaction is lost on both sides, every commit
            // stays (the store drops what was not synced).
            if !plain.is_autocommit() {
                plain.execute_batch("ROLLBACK").unwrap();
            }
            drop(db);
            crash();
            storage = new_storage();
            db = storage.open(&id).unwrap();
            continue;
        };
        let expected = plain_run(&plain, &sql, &params);
        let got = roost_run(&mut db, &sql, &params);
        prop_assert_eq!(&got, &expected, "step {} {:?}", step, op);
    }
    if !plain.is_autocommit() {
        plain.execute_batch("COMMIT").unwrap();
        db.execute_script("COMMIT").unwrap();
    }
    let want = contents(tables.len(), |sql| plain_run(&plain, sql, &[]));
    let got = contents(tables.len(), |sql| roost_run(&mut db, sql, &[]));
    prop_assert_eq!(got, want);
    drop(db);
    crash();
    let storage = new_storage();
    let mut db = storage.open(&id).unwrap();
    let check = roost_run(&mut db, "PRAGMA integrity_check", &[]);
    prop_assert_eq!(check, Ok(vec![vec![Value::Text("ok".into())]]));
    let again = contents(tables.len(), |sql| roost_run(&mut db, sql, &[]));
    let want = contents(tables.len(), |sql| plain_run(&plain, sql, &[]));
    prop_assert_eq!(again, want);
    Ok(())
}

fn case() -> impl Strategy<Value = (Vec<Table>, Vec<Op>, u64)> {
    proptest::collection::vec(table(), 1..4).prop_flat_map(|tables| {
        let n = tables.len();
        (
            Just(tables),
            proptest::collection::vec(op(n), 1..60),
            prop_oneof![Just(64u64 << 10), Just(2u64 << 20)],
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn roost_matches_sqlite_on_a_plain_file((tables, ops, cache) in case()) {
        let store = Arc::new(CrashStore::new());
        check(store.clone(), &|| store.crash(), "diff", tables, ops, cache)?;
    }
}

/// The same comparison on the PostgreSQL store: one fresh database for the run, one actor per
/// case (skipped without a reachable server, see `roost::kv::testing`).
#[test]
fn roost_on_postgres_matches_sqlite_on_a_plain_file() {
    on_postgres("differential", |_| {});
}

/// The same with commits above 16 KiB staged (uploaded in 8 KiB calls, then published).
#[test]
fn roost_on_postgres_with_staged_commits_matches_sqlite_on_a_plain_file() {
    let stats = on_postgres("differential_staged", |config| {
        config.stage_bytes_min = 16 << 10;
        config.statement_bytes_max = 8 << 10;
    });
    assert!(stats.is_none_or(|s| s.staged_writes > 0), "{stats:?}");
}

fn on_postgres(tag: &str, configure: impl Fn(&mut PostgresConfig)) -> Option<roost::kv::KvStats> {
    let db = TestDatabase::create(tag)?;
    let mut config = PostgresConfig::new(db.url.clone());
    configure(&mut config);
    let store: Arc<dyn KvStore> = Arc::new(PostgresStore::open(config).unwrap());
    let cases = AtomicU32::new(0);
    let mut runner = TestRunner::new(ProptestConfig { cases: 64, ..ProptestConfig::default() });
    let result = runner.run(&case(), |(tables, ops, cache)| {
        let actor = format!("diff-{}", cases.fetch_add(1, Ordering::SeqCst));
        check(store.clone(), &|| {}, &actor, tables, ops, cache)
    });
    let stats = store.stats();
    eprintln!("postgres differential ({tag}): {stats:?}");
    result.unwrap();
    Some(stats)
}
