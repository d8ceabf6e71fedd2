//! Freezes storage formats 1 and 2: checked-in store dumps that every later version must
//! read (version 2 compresses chunks; version 1 wrote them raw).
//!
//! `tests/fixtures/storage-v{1,2}.kv` hold three actors: `fixture` (a clean database with every
//! value type, an index, a view and overflow pages) and `hot-journal` (a large UPDATE that
//! was interrupted after its journal was durable and some pages were overwritten: opening it
//! must roll the UPDATE back) and `stale-journal` (interrupted before its journal header). Only
//! the current version's fixture can be regenerated, and only when the format version
//! changes: `ROOST_WRITE_FIXTURE=1 cargo test -p roost --test format_fixture`.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use roost::kv::{FaultPlan, FaultyStore, KvStore, MemoryStore};
use roost::vfs::layout;
use roost::{ActorId, Database, Params, Storage, StorageConfig, Value};

const MAGIC: &[u8] = b"ROOSTKV1\n";
const ROWS: i64 = 300;

fn fixture_path(version: u8) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/storage-v{version}.kv"))
}

fn encode(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (k, v) in pairs {
        for part in [k, v] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

fn decode(bytes: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    assert!(bytes.starts_with(MAGIC), "not a fixture file");
    let mut rest = &bytes[MAGIC.len()..];
    let mut parts = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        parts.push(rest[4..4 + len].to_vec());
        rest = &rest[4 + len..];
    }
    assert!(parts.len() % 2 == 0, "truncated fixture");
    parts.chunks(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect()
}

fn id(s: &str) -> ActorId {
    ActorId::new(s).unwrap()
}

const SCHEMA: &str = "CREATE TABLE items(id INTEGER PRIMARY KEY, n INTEGER, r REAL, t TEXT, b BLOB, z);
    CREATE INDEX items_t ON items(t);
    CREATE VIEW big AS SELECT id FROM items WHERE length(b) > 4000;";

/// Row `i` of the `items` table, as an INSERT.
fn insert_row(db: &mut Database, i: i64) {
    let blob_len = if i % 50 == 0 { 10_000 } else { (i % 40) as usize };
    let params = Params::Positional(vec![
        Value::Integer(i),
        Value::Integer(i * i - 1000),
        Value::Real(i as f64 * 1.5),
        Value::Text(format!("text-{i:04}")),
        Value::Blob((0..blob_len).map(|j| (i as usize + j) as u8).collect()),
        if i % 3 == 0 { Value::Null } else { Value::Text("z".into()) },
    ]);
    db.execute("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)", &params).unwrap();
}

fn build() -> Vec<(Vec<u8>, Vec<u8>)> {
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let config = StorageConfig { page_cache_bytes_max: 64 << 10, ..StorageConfig::default() };
    let storage = Storage::new(store.clone() as Arc<dyn KvStore>, config).unwrap();
    for name in ["fixture", "stale-journal", "hot-journal"] {
        let mut db = storage.open(&id(name)).unwrap();
        db.execute_script(SCHEMA).unwrap();
        db.transaction(|tx| {
            (1..=ROWS).for_each(|i| insert_row(tx, i));
            Ok(())
        })
        .unwrap();
    }
    interrupt_update(&storage, &store, "stale-journal", false);
    interrupt_update(&storage, &store, "hot-journal", true);
    store.inner().dump()
}

/// Fails a large UPDATE of `name` at successive durable writes until it leaves a journal in
/// the wanted state: hot (its header written: opening must roll the UPDATE back) or stale
/// (interrupted before its header: SQLite ignores it).
fn interrupt_update(storage: &Storage, store: &FaultyStore<MemoryStore>, name: &str, hot: bool) {
    let journal_head = layout::chunk_key(&id(name), layout::FileTag::Journal, layout::ChunkIndex(0));
    for n in 1.. {
        store.set_plan(FaultPlan { fail_commit: n, ..FaultPlan::default() });
        let mut db = storage.open(&id(name)).unwrap();
        let failed = db.execute_script("UPDATE items SET t = 'updated', b = zeroblob(3000)").is_err();
        drop(db);
        store.set_plan(FaultPlan::default());
        assert!(failed, "no commit position of the UPDATE leaves the wanted journal");
        let head = store.inner().get_many(std::slice::from_ref(&journal_head)).unwrap().pop().flatten();
        let head = head.map(|h| layout::decode_chunk(&h).unwrap());
        if head.is_some_and(|h| (h[0] != 0) == hot) {
            return;
        }
        // Not the wanted state: the next open rolls the failed UPDATE back; try the next one.
    }
}

/// A fixture's bytes; the current version's is written first (once per process) when
/// regeneration was asked for.
fn fixture_bytes(version: u8) -> &'static [u8] {
    static BYTES: [OnceLock<Vec<u8>>; 2] = [OnceLock::new(), OnceLock::new()];
    BYTES[usize::from(version) - 1].get_or_init(|| {
        let path = fixture_path(version);
        if version == layout::FORMAT_VERSION && std::env::var_os("ROOST_WRITE_FIXTURE").is_some() {
            std::fs::write(&path, encode(&build())).unwrap();
        }
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; regenerate with ROOST_WRITE_FIXTURE=1", path.display()))
    })
}

fn load(version: u8) -> Storage {
    let store = Arc::new(MemoryStore::from_pairs(decode(fixture_bytes(version))));
    Storage::new(store, StorageConfig::default()).unwrap()
}

const VERSIONS: [u8; 2] = [1, 2];

fn query(db: &mut Database, sql: &str) -> Vec<Vec<Value>> {
    db.execute(sql, &Params::None).unwrap().rows
}

fn check_items(db: &mut Database) {
    assert_eq!(query(db, "PRAGMA integrity_check"), vec![vec![Value::Text("ok".into())]]);
    let sums = query(db, "SELECT count(*), sum(n), sum(r), sum(length(b)), count(z) FROM items");
    let blob_total: i64 = (1..=ROWS).map(|i| if i % 50 == 0 { 10_000 } else { i % 40 }).sum();
    let n_total: i64 = (1..=ROWS).map(|i| i * i - 1000).sum();
    let r_total: f64 = (1..=ROWS).map(|i| i as f64 * 1.5).sum();
    let z_total = (1..=ROWS).filter(|i| i % 3 != 0).count() as i64;
    assert_eq!(
        sums,
        vec![vec![
            Value::Integer(ROWS),
            Value::Integer(n_total),
            Value::Real(r_total),
            Value::Integer(blob_total),
            Value::Integer(z_total)
        ]]
    );
    let row = query(db, "SELECT t, hex(b) FROM items WHERE id = 7");
    assert_eq!(row, vec![vec![Value::Text("text-0007".into()), Value::Text("0708090A0B0C0D".into())]]);
    let big = query(db, "SELECT count(*) FROM big");
    assert_eq!(big, vec![vec![Value::Integer(ROWS / 50)]]);
    let by_index = query(db, "SELECT id FROM items INDEXED BY items_t WHERE t = 'text-0123'");
    assert_eq!(by_index, vec![vec![Value::Integer(123)]]);
}

#[test]
fn every_fixture_reads_back() {
    for version in VERSIONS {
        let storage = load(version);
        let mut db = storage.open(&id("fixture")).unwrap();
        check_items(&mut db);
    }
}

fn journal_keys(storage: &Storage, name: &str) -> usize {
    let (start, end) = layout::file_range(&id(name), layout::FileTag::Journal);
    storage.store().scan(&start, &end, usize::MAX).unwrap().len()
}

#[test]
fn every_hot_journal_rolls_back_on_open() {
    VERSIONS.into_iter().for_each(hot_journal_rolls_back_on_open);
}

fn hot_journal_rolls_back_on_open(version: u8) {
    let storage = load(version);
    assert!(journal_keys(&storage, "hot-journal") > 0, "the fixture holds a hot journal");
    let mut db = storage.open(&id("hot-journal")).unwrap();
    check_items(&mut db);
    assert_eq!(
        query(&mut db, "SELECT count(*) FROM items WHERE t = 'updated'"),
        vec![vec![Value::Integer(0)]]
    );
    drop(db);
    assert_eq!(journal_keys(&storage, "hot-journal"), 0, "the rolled-back journal is deleted");
}

#[test]
fn every_stale_journal_is_ignored_then_removed() {
    VERSIONS.into_iter().for_each(stale_journal_is_ignored_then_removed);
}

fn stale_journal_is_ignored_then_removed(version: u8) {
    let storage = load(version);
    assert!(journal_keys(&storage, "stale-journal") > 0, "the fixture holds a stale journal");
    let mut db = storage.open(&id("stale-journal")).unwrap();
    check_items(&mut db);
    let reads = storage.store().stats().read_calls;
    query(&mut db, "SELECT count(*) FROM items WHERE id = 1");
    assert_eq!(storage.store().stats().read_calls, reads, "no journal look-ups per transaction");
    db.execute("INSERT INTO items(id) VALUES (1000)", &Params::None).unwrap();
    assert_eq!(journal_keys(&storage, "stale-journal"), 0, "the first write removes the stale journal");
}

#[test]
fn every_key_and_value_layout() {
    VERSIONS.into_iter().for_each(key_and_value_layout);
}

fn key_and_value_layout(version: u8) {
    let pairs = decode(fixture_bytes(version));
    let mut compressed = 0;
    for (key, value) in &pairs {
        let actor_end = key.iter().position(|b| *b == 0).expect("actor prefix ends with 0x00");
        assert_eq!(key[0], b'a');
        let id = std::str::from_utf8(&key[1..actor_end]).unwrap();
        assert!(["fixture", "stale-journal", "hot-journal"].contains(&id), "{id}");
        let rest = &key[actor_end + 1..];
        match rest {
            [b'g'] => assert_eq!(value.len(), 8, "generation is a u64"),
            [b'm' | b'j'] => {
                assert_eq!(value.len(), 9);
                assert_eq!(value[0], version);
            }
            [b'm' | b'j', index @ ..] => {
                assert_eq!(index.len(), 8, "chunk index is a u64");
                if value.len() != layout::CHUNK_BYTES {
                    assert!(version >= 2, "version 1 stores chunks raw");
                    assert_eq!(value[0], 1, "a compressed chunk starts with 0x01");
                    compressed += 1;
                }
                assert_eq!(layout::decode_chunk(value).unwrap().len(), layout::CHUNK_BYTES);
            }
            other => panic!("unexpected key suffix {other:?}"),
        }
    }
    // The main file's size in its metadata matches its chunks.
    let meta =
        pairs.iter().find(|(k, _)| k == &layout::meta_key(&id("fixture"), layout::FileTag::Main)).unwrap();
    let size = u64::from_be_bytes(meta.1[1..9].try_into().unwrap());
    let prefix = layout::meta_key(&id("fixture"), layout::FileTag::Main);
    let chunks = pairs.iter().filter(|(k, _)| k.len() == prefix.len() + 8 && k.starts_with(&prefix)).count();
    assert_eq!(size, chunks as u64 * layout::CHUNK_BYTES as u64);
    assert_eq!(compressed > 0, version >= 2, "{compressed} compressed chunks in version {version}");
}
