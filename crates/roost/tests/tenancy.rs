//! Tenancy: SQL sent to an actor reaches that actor's database and nothing else, whatever form
//! a hostile tenant gives it (literals, parameters, expressions, URIs, pragma functions).

mod support;

use std::sync::Arc;

use roost::kv::MemoryStore;
use roost::server::{Auth, Token};
use roost::{ActorId, Database, Error, Params, Storage, StorageConfig, Value};
use serde_json::json;
use support::{post, TestServer};

fn storage() -> Storage {
    Storage::new(Arc::new(MemoryStore::new()), StorageConfig::default()).unwrap()
}

fn open(storage: &Storage, id: &str) -> Database {
    storage.open(&ActorId::new(id).unwrap()).unwrap()
}

fn text(s: &str) -> Params {
    Params::Positional(vec![Value::Text(s.into())])
}

fn refused(result: Result<roost::QueryResult, Error>, what: &str) {
    match result {
        Err(Error::Sql { message, .. }) => {
            let denied = message.contains("not authorized") || message.contains("authorization denied");
            assert!(denied, "{what}: unexpected message {message:?}")
        }
        other => panic!("{what}: expected 'not authorized', got {other:?}"),
    }
}

#[test]
fn attach_is_refused_in_every_form() {
    let storage = storage();
    let mut victim = open(&storage, "victim");
    victim.execute("CREATE TABLE secret(x)", &Params::None).unwrap();
    victim.execute("INSERT INTO secret VALUES ('gold')", &Params::None).unwrap();
    let mut db = open(&storage, "attacker");
    let host_file = std::env::temp_dir().join(format!("roost-attach-{}.db", std::process::id()));
    let uri = format!("file:{}?vfs=unix", host_file.display());
    let none = Params::None;
    let cases: Vec<(String, Params)> = vec![
        ("ATTACH DATABASE 'victim.db' AS v".into(), none.clone()),
        ("ATTACH DATABASE ? AS v".into(), text("victim.db")),
        ("ATTACH DATABASE ? AS p".into(), text(&uri)),
        (format!("ATTACH '{uri}' AS p"), none.clone()),
        ("ATTACH 'vic' || 'tim.db' AS v".into(), none.clone()),
        ("ATTACH printf('%s.db', 'victim') AS v".into(), none.clone()),
        ("ATTACH :f AS v".into(), Params::Named(vec![(":f".into(), Value::Text("victim.db".into()))])),
        ("ATTACH '' AS scratch".into(), none.clone()),
        ("ATTACH ':memory:' AS m".into(), none.clone()),
        ("ATTACH ? AS m".into(), text("")),
        ("VACUUM INTO ?".into(), text(&host_file.display().to_string())),
        (format!("VACUUM INTO '{}'", host_file.display()), none.clone()),
        ("DETACH DATABASE temp".into(), none.clone()),
    ];
    for (sql, params) in cases {
        refused(db.execute(&sql, &params), &sql);
    }
    assert!(!host_file.exists(), "a host file was created at {}", host_file.display());
    // The victim is untouched and still works; the attacker's own database too.
    let rows = victim.execute("SELECT x FROM secret", &Params::None).unwrap().rows;
    assert_eq!(rows, vec![vec![Value::Text("gold".into())]]);
    db.execute("CREATE TABLE mine(x)", &Params::None).unwrap();
}

#[test]
fn vacuum_still_works() {
    let storage = storage();
    let mut db = open(&storage, "vac");
    db.execute_script(
        "CREATE TABLE t(x); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<2000) \
         INSERT INTO t SELECT randomblob(300) FROM c; DELETE FROM t WHERE rowid % 2 = 0;",
    )
    .unwrap();
    db.execute("VACUUM", &Params::None).unwrap();
    db.execute(" /* maintenance */ -- comment\n vacuum", &Params::None).unwrap();
    let count = db.execute("SELECT count(*) FROM t", &Params::None).unwrap().rows;
    assert_eq!(count, vec![vec![Value::Integer(1000)]]);
    let check = db.execute("PRAGMA integrity_check", &Params::None).unwrap().rows;
    assert_eq!(check, vec![vec![Value::Text("ok".into())]]);
    // The flag that lets VACUUM attach its scratch copy ends with the statement.
    refused(db.execute("ATTACH '' AS x", &Params::None), "ATTACH after VACUUM");
}

/// The databases attached to `db`'s connection, by schema name.
fn attached(db: &mut Database) -> Vec<Value> {
    let rows = db.execute("PRAGMA database_list", &Params::None).unwrap().rows;
    rows.into_iter().map(|row| row[1].clone()).collect()
}

#[test]
fn a_script_that_mentions_vacuum_cannot_attach() {
    // A script (Hrana's `sequence`) used to run with VACUUM's permission to attach a scratch
    // database whenever its text held the word VACUUM anywhere: `ATTACH '' AS x` then stayed
    // attached (DETACH is refused) and the connection's next VACUUM failed.
    let storage = storage();
    let mut db = open(&storage, "script");
    db.execute_script("CREATE TABLE t(x); INSERT INTO t VALUES (1)").unwrap();
    for script in [
        "ATTACH '' AS x; SELECT 'vacuum'",
        "ATTACH '' AS x -- VACUUM",
        "SELECT 1; ATTACH DATABASE '' AS vacuum_db",
        "VACUUM; ATTACH '' AS x",
    ] {
        match db.execute_script(script) {
            Err(Error::Sql { message, .. }) => {
                assert!(message.contains("not authorized"), "{script}: {message}")
            }
            other => panic!("{script}: expected 'not authorized', got {other:?}"),
        }
        assert_eq!(attached(&mut db), vec![Value::Text("main".into())], "{script}");
    }
    // VACUUM itself still runs inside a script, and leaves nothing attached.
    db.execute_script("INSERT INTO t VALUES (2); VACUUM; SELECT 1").unwrap();
    db.execute("VACUUM", &Params::None).unwrap();
    assert_eq!(attached(&mut db), vec![Value::Text("main".into())]);
    let rows = db.execute("SELECT count(*) FROM t", &Params::None).unwrap().rows;
    assert_eq!(rows, vec![vec![Value::Integer(2)]]);
}

#[test]
fn pragmas_pass_an_allow_list() {
    let storage = storage();
    let mut db = open(&storage, "prag");
    db.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT)", &Params::None).unwrap();
    for sql in [
        "PRAGMA hard_heap_limit=65536",
        "PRAGMA hard_heap_limit",
        "PRAGMA soft_heap_limit=1",
        "PRAGMA threads=8",
        "PRAGMA mmap_size=1000000",
        "PRAGMA temp_store_directory='/tmp'",
        "PRAGMA data_store_directory='/tmp'",
        "PRAGMA journal_mode=WAL",
        "PRAGMA main.journal_mode=OFF",
        "PRAGMA locking_mode=EXCLUSIVE",
        "PRAGMA synchronous=OFF",
        "PRAGMA page_size=8192",
        "PRAGMA max_page_count=1",
        "PRAGMA cache_size=-1000000",
        "PRAGMA cache_spill=0",
        "PRAGMA writable_schema=ON",
        "PRAGMA trusted_schema=ON",
        "PRAGMA query_only=1",
        "PRAGMA wal_checkpoint",
        "SELECT * FROM pragma_hard_heap_limit",
        "SELECT * FROM pragma_soft_heap_limit",
        "SELECT * FROM pragma_threads",
    ] {
        refused(db.execute(sql, &Params::None), sql);
    }
    // Extension loading is not even compiled in.
    assert!(db.execute("SELECT load_extension('/tmp/x.so')", &Params::None).is_err());
    for sql in [
        "PRAGMA table_info(t)",
        "SELECT name FROM pragma_table_info('t')",
        "PRAGMA index_list(t)",
        "PRAGMA integrity_check",
        "PRAGMA quick_check",
        "PRAGMA foreign_key_check",
        "PRAGMA journal_mode",
        "PRAGMA page_size",
        "PRAGMA page_count",
        "PRAGMA user_version=7",
        "PRAGMA application_id=42",
        "PRAGMA foreign_keys=ON",
        "PRAGMA optimize",
        "PRAGMA table_list",
        "PRAGMA compile_options",
    ] {
        db.execute(sql, &Params::None).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let version = db.execute("PRAGMA user_version", &Params::None).unwrap().rows;
    assert_eq!(version, vec![vec![Value::Integer(7)]]);
    let mode = db.execute("PRAGMA journal_mode", &Params::None).unwrap().rows;
    assert_eq!(mode, vec![vec![Value::Text("delete".into())]]);
}

#[test]
fn the_build_and_the_connection_are_hardened() {
    let storage = storage();
    let mut db = open(&storage, "hard");
    let options: Vec<Value> = db
        .execute("PRAGMA compile_options", &Params::None)
        .unwrap()
        .rows
        .into_iter()
        .map(|mut r| r.remove(0))
        .collect();
    let has = |o: &str| options.contains(&Value::Text(o.into()));
    assert!(has("OMIT_LOAD_EXTENSION"), "{options:?}");
    assert!(has("MAX_WORKER_THREADS=0"), "{options:?}");
    // Defensive mode: the schema cannot be written directly, even through a trick.
    db.execute("CREATE TABLE t(x)", &Params::None).unwrap();
    assert!(db.execute("UPDATE sqlite_schema SET sql = 'x'", &Params::None).is_err());
    // Value length limit: an expression cannot make SQLite allocate a huge value.
    let big = db.execute("SELECT length(zeroblob(100000000))", &Params::None);
    assert!(matches!(&big, Err(Error::Sql { message, .. }) if message.contains("too big")), "{big:?}");
    let small = db.execute("SELECT length(zeroblob(1000000))", &Params::None).unwrap().rows;
    assert_eq!(small, vec![vec![Value::Integer(1_000_000)]]);
}

#[test]
fn scoped_tokens_cannot_reach_other_tenants() {
    let token = |secret: &str, prefix: &str| Token { secret: secret.into(), prefix: Some(prefix.into()) };
    let auth = Auth {
        tokens: vec![token("tenant-one-secret-aaaa", "team-1"), token("tenant-two-secret-bbbb", "team-2")],
        admin: None,
    };
    let server = TestServer::with_auth(auth);
    let q = |id: &str, token: &str, body: serde_json::Value| {
        post(&format!("{}/v1/actors/{id}/query", server.url), Some(token), &body.to_string())
    };
    let one = "tenant-one-secret-aaaa";
    let two = "tenant-two-secret-bbbb";
    assert_eq!(q("team-2", two, json!({"sql": "CREATE TABLE secret(x)"})).status, 200);
    assert_eq!(q("team-2", two, json!({"sql": "INSERT INTO secret VALUES ('gold')"})).status, 200);
    // team-1 covers team-1 and team-1-x, never team-10.
    assert_eq!(q("team-1-x", one, json!({"sql": "SELECT 1"})).status, 200);
    assert_eq!(q("team-10-x", one, json!({"sql": "SELECT 1"})).status, 401);
    // While team-2 is awake, team-1 tries to attach it in every form.
    for (sql, params) in [
        ("ATTACH ? AS v", json!(["team-2.db"])),
        ("ATTACH 'team-2.db' AS v", json!([])),
        ("ATTACH 'team-' || '2.db' AS v", json!([])),
        ("ATTACH ? AS v", json!(["file:team-2.db?vfs=unix"])),
    ] {
        let a = q("team-1", one, json!({"sql": sql, "params": params}));
        assert_eq!((a.status, a.code()), (400, "sql_error"), "{sql}: {:?}", a.body);
        assert!(a.body["error"]["message"].as_str().unwrap().contains("not authorized"), "{:?}", a.body);
    }
    let a = q("team-1", one, json!({"sql": "PRAGMA hard_heap_limit=65536"}));
    assert_eq!((a.status, a.code()), (400, "sql_error"));
    // The victim still wakes and answers.
    let a = q("team-2", two, json!({"sql": "SELECT x FROM secret"}));
    assert_eq!((a.status, a.body["rows"].clone()), (200, json!([["gold"]])), "{:?}", a.body);
}
