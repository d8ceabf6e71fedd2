//! Corrupt stored keys and values (docs/storage-format.md): arbitrary bytes through the
//! decoders of `vfs::layout` (`FileMeta::decode`, `Generation::decode`: a value that decodes
//! encodes back to the same bytes; `decode_chunk`: a chunk that decodes survives encoding), then written over (or deleted from) a valid actor's
//! generation, metadata or chunks, or stored under a corrupt key, before the storage opens,
//! reads, writes, sizes and lists the actor. Every step answers a value or an error, never a
//! panic.
//!
//! Input: byte 0 picks the damaged key and the operation, the rest is the value (or the key).
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use roost::kv::{KvStore, MemoryStore, WriteBatch, WriteOp};
use roost::vfs::layout::{self, ChunkIndex, FileMeta, FileTag, Generation};
use roost::{ActorId, Params, Storage, StorageConfig};

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn actor() -> ActorId {
    ActorId::new("fuzz").unwrap()
}

/// Every key and value of a store holding one valid actor (two tables, an index, a row that
/// spills to overflow pages).
fn valid_store() -> &'static Pairs {
    static PAIRS: OnceLock<Pairs> = OnceLock::new();
    PAIRS.get_or_init(|| {
        let store = Arc::new(MemoryStore::new());
        let storage = Storage::new(store.clone() as Arc<dyn KvStore>, StorageConfig::default()).unwrap();
        let mut db = storage.open(&actor()).unwrap();
        db.execute_script(
            "CREATE TABLE t(x); CREATE INDEX tx ON t(x); CREATE TABLE u(a INTEGER PRIMARY KEY, b);
             INSERT INTO t VALUES (1), ('two'), (zeroblob(5000)); INSERT INTO u(b) VALUES (1), (2);",
        )
        .unwrap();
        drop(db);
        store.scan(b"", &[0xff; 8], usize::MAX).unwrap()
    })
}

fn damaged_key(selector: u8, value: &[u8]) -> Vec<u8> {
    let id = actor();
    match selector % 8 {
        0 => layout::generation_key(&id),
        1 => layout::meta_key(&id, FileTag::Main),
        2 => layout::meta_key(&id, FileTag::Journal),
        3 => layout::chunk_key(&id, FileTag::Main, ChunkIndex(u64::from(selector / 16 % 4))),
        4 => layout::chunk_key(&id, FileTag::Journal, ChunkIndex(u64::from(selector / 16 % 4))),
        5 => layout::chunk_key(&id, FileTag::Main, ChunkIndex(u64::MAX - u64::from(selector / 16))),
        // A corrupt key: the value's bytes after the actor prefix, or as a whole key.
        6 => [layout::actor_prefix(&id), value.to_vec()].concat(),
        _ => value.to_vec(),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(meta) = FileMeta::decode(data) {
        // Version 1 metadata reads as well; it is written back as the current version.
        if data[0] == layout::FORMAT_VERSION {
            assert_eq!(meta.encode(), data);
        }
    }
    if let Ok(chunk) = layout::decode_chunk(data) {
        assert_eq!(*layout::decode_chunk(&layout::encode_chunk(&chunk)).unwrap(), *chunk);
    }
    if let Ok(generation) = Generation::decode(data) {
        assert_eq!(generation.encode(), data);
    }
    let Some((&selector, value)) = data.split_first() else { return };
    let key = damaged_key(selector, value);
    if key.is_empty() {
        return;
    }
    let op = if selector & 8 != 0 && selector % 8 < 6 {
        WriteOp::Delete(key)
    } else {
        WriteOp::Put(key, value.to_vec())
    };
    let store = Arc::new(MemoryStore::new());
    let mut ops: Vec<WriteOp> =
        valid_store().iter().map(|(k, v)| WriteOp::Put(k.clone(), v.clone())).collect();
    ops.push(op);
    store.write(WriteBatch { fence: None, ops, durable: true }).unwrap();
    let storage = Storage::new(store as Arc<dyn KvStore>, StorageConfig::default()).unwrap();
    let _ = storage.size_bytes(&actor());
    let _ = storage.list("", None, 10);
    if let Ok(mut db) = storage.open(&actor()) {
        for sql in [
            "SELECT count(*), sum(length(x)) FROM t",
            "SELECT * FROM u WHERE a = 2",
            "PRAGMA quick_check",
            "INSERT INTO t VALUES (2)",
            "DELETE FROM t WHERE x = 1",
        ] {
            let _ = db.execute(sql, &Params::None);
        }
    }
});
