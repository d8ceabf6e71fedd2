//! Fuzz-style property tests on stable Rust (CI runs them briefly; `cargo fuzz` needs nightly):
//! - actor ids: `ActorId::new` on arbitrary strings never panics and accepts exactly the
//!   documented alphabet and lengths;
//! - storage-format decoding: `FileMeta` and `Generation` decode arbitrary bytes to a value or
//!   a clear error, and a store holding arbitrary bytes under an actor's keys makes opening and
//!   querying it fail cleanly (or work), never panic;
//! - the authorizer: statements from a small grammar of ATTACH / VACUUM INTO / PRAGMA forms,
//!   with literals, parameters and expressions for file names, never attach a database and
//!   never create a file.
//!
//! `PROPTEST_CASES=N` runs more cases.

use std::sync::Arc;

use proptest::prelude::*;
use roost::kv::{KvStore, MemoryStore, WriteBatch, WriteOp};
use roost::vfs::layout::{self, FileMeta, FileTag, Generation};
use roost::{ActorId, Params, Storage, StorageConfig, Value};

fn id_is_valid(s: &str) -> bool {
    let ok_byte = |b: u8| b.is_ascii_alphanumeric() || b"._-".contains(&b);
    (1..=128).contains(&s.len()) && s.bytes().all(ok_byte) && !s.starts_with('.')
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn actor_ids_follow_the_documented_rule(s in prop_oneof![any::<String>(), "[A-Za-z0-9._\\-]{0,140}"]) {
        prop_assert_eq!(ActorId::new(s.clone()).is_ok(), id_is_valid(&s), "{:?}", s);
    }

    #[test]
    fn stored_metadata_decodes_or_errors(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
        if let Ok(meta) = FileMeta::decode(&bytes) {
            prop_assert_eq!(FileMeta::decode(&meta.encode()), Ok(meta));
            prop_assert_eq!(bytes.len(), 9);
        }
        if let Ok(generation) = Generation::decode(&bytes) {
            prop_assert_eq!(generation.encode(), bytes);
        }
    }
}

/// Which key of the actor gets the arbitrary value.
#[derive(Debug, Clone, Copy)]
enum Target {
    Generation,
    MainMeta,
    JournalMeta,
    MainChunk(u64),
    JournalChunk(u64),
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        Just(Target::Generation),
        Just(Target::MainMeta),
        Just(Target::JournalMeta),
        (0u64..4).prop_map(Target::MainChunk),
        (0u64..4).prop_map(Target::JournalChunk),
    ]
}

fn key(id: &ActorId, target: Target) -> Vec<u8> {
    match target {
        Target::Generation => layout::generation_key(id),
        Target::MainMeta => layout::meta_key(id, FileTag::Main),
        Target::JournalMeta => layout::meta_key(id, FileTag::Journal),
        Target::MainChunk(i) => layout::chunk_key(id, FileTag::Main, layout::ChunkIndex(i)),
        Target::JournalChunk(i) => layout::chunk_key(id, FileTag::Journal, layout::ChunkIndex(i)),
    }
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..20),
        // Chunk-sized values: a plausible page with random bytes, or a SQLite header prefix.
        proptest::collection::vec(any::<u8>(), 4096..=4096),
        (any::<u64>()).prop_map(|size| FileMeta { size_bytes: size % (1 << 20) }.encode()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A valid database, then arbitrary values under some of its keys: opening and querying it
    /// answers Ok or an error, never a panic.
    #[test]
    fn corrupt_stored_values_give_errors_not_panics(damage in proptest::collection::vec((target(), value()), 1..4)) {
        let store = Arc::new(MemoryStore::new());
        let storage = Storage::new(store.clone() as Arc<dyn KvStore>, StorageConfig::default()).unwrap();
        let id = ActorId::new("fuzz").unwrap();
        {
            let mut db = storage.open(&id).unwrap();
            db.execute_script("CREATE TABLE t(x); INSERT INTO t VALUES (1), (zeroblob(5000));").unwrap();
        }
        let ops = damage.iter().map(|(t, v)| WriteOp::Put(key(&id, *t), v.clone())).collect();
        store.write(WriteBatch { fence: None, ops, durable: true }).unwrap();
        let storage = Storage::new(store as Arc<dyn KvStore>, StorageConfig::default()).unwrap();
        if let Ok(mut db) = storage.open(&id) {
            for sql in ["SELECT count(*), sum(length(x)) FROM t", "PRAGMA integrity_check", "INSERT INTO t VALUES (2)"] {
                let _ = db.execute(sql, &Params::None);
            }
        }
    }
}

/// A file-name expression in some form, naming `file` (a path in the probe folder).
fn file_expr(file: String) -> impl Strategy<Value = (String, Vec<Value>)> {
    let quoted = file.replace('\'', "''");
    let half = quoted.len() / 2;
    let (a, b) = (quoted[..half].to_string(), quoted[half..].to_string());
    prop_oneof![
        Just((format!("'{quoted}'"), vec![])),
        Just(("?".to_string(), vec![Value::Text(file.clone())])),
        Just(("?1".to_string(), vec![Value::Text(file.clone())])),
        Just((format!("'{a}' || '{b}'"), vec![])),
        Just((format!("printf('%s', '{quoted}')"), vec![])),
        Just((format!("(SELECT '{quoted}')"), vec![])),
        Just((format!("CASE WHEN 1 THEN '{quoted}' END"), vec![])),
        Just((format!("'file:{quoted}?vfs=unix'"), vec![])),
        Just((format!("'file:{quoted}?mode=rwc'"), vec![])),
        Just(("''".to_string(), vec![])),
        Just(("':memory:'".to_string(), vec![])),
        Just((format!("x'{}'", file.bytes().map(|b| format!("{b:02x}")).collect::<String>()), vec![])),
    ]
}

fn statement(file: String) -> impl Strategy<Value = (String, Vec<Value>)> {
    let forms = prop_oneof![
        Just("ATTACH {} AS x"),
        Just("ATTACH DATABASE {} AS x"),
        Just("attach database {} as \"main2\""),
        Just("VACUUM INTO {}"),
        Just("VACUUM main INTO {}"),
        Just("/* c */ ATTACH {} AS x"),
        Just("PRAGMA temp_store_directory = {}"),
        Just("PRAGMA data_store_directory = {}"),
        Just("PRAGMA main.journal_mode = {}"),
        Just("SELECT * FROM pragma_table_info({})"),
        Just("SELECT load_extension({})"),
        Just("WITH f(n) AS (SELECT {}) SELECT n FROM f"),
    ];
    (forms, file_expr(file)).prop_map(|(form, (expr, params))| (form.replace("{}", &expr), params))
}

/// The folder the generated statements point at; it must stay empty.
fn probe_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn probe_file() -> String {
    probe_dir().join("probe.db").display().to_string()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_authorizer_never_attaches_or_creates_a_file(
        statements in proptest::collection::vec(statement(probe_file()), 1..4),
    ) {
        let storage = Storage::new(Arc::new(MemoryStore::new()), StorageConfig::default()).unwrap();
        let mut db = storage.open(&ActorId::new("tenant").unwrap()).unwrap();
        db.execute_script("CREATE TABLE mine(x)").unwrap();
        for (sql, params) in statements {
            let _ = db.execute(&sql, &Params::Positional(params));
            let list = db.execute("PRAGMA database_list", &Params::None).unwrap().rows;
            let names: Vec<&Value> = list.iter().map(|row| &row[1]).collect();
            prop_assert!(
                names.iter().all(|n| matches!(n, Value::Text(s) if s == "main" || s == "temp")),
                "{} attached {:?}", sql, list
            );
            prop_assert_eq!(std::fs::read_dir(probe_dir()).unwrap().count(), 0, "{} created a file", sql);
        }
        db.execute("INSERT INTO mine VALUES (1)", &Params::None).unwrap();
    }
}

/// Found by the `storage_format` fuzz target: a stored generation of u64::MAX made the next
/// owner's first write overflow (a panic in debug builds, generation 0 in release builds).
#[test]
fn a_generation_at_its_maximum_fails_writes_cleanly() {
    let store = Arc::new(MemoryStore::new());
    let id = ActorId::new("fuzz").unwrap();
    let ops = vec![WriteOp::Put(layout::generation_key(&id), Generation(u64::MAX).encode())];
    store.write(WriteBatch { fence: None, ops, durable: true }).unwrap();
    let storage = Storage::new(store.clone() as Arc<dyn KvStore>, StorageConfig::default()).unwrap();
    let mut db = storage.open(&id).unwrap();
    assert!(db.execute("CREATE TABLE t(x)", &Params::None).is_err());
    let stored = store.get_many(&[layout::generation_key(&id)]).unwrap();
    assert_eq!(stored, vec![Some(Generation(u64::MAX).encode())], "the generation must not wrap");
}
