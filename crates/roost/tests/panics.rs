//! A panic inside a storage callback becomes an error for that actor only.

use std::sync::Arc;

use roost::kv::{KvResult, KvStats, KvStore, MemoryStore, Value as KvValue, WriteBatch};
use roost::{ActorId, Error, Params, Storage, StorageConfig, Value};

/// Panics on any chunk read of the actor whose key prefix is `doomed`, once armed.
struct PanickyStore {
    inner: MemoryStore,
    doomed: Vec<u8>,
    armed: std::sync::atomic::AtomicBool,
}

impl KvStore for PanickyStore {
    fn get_many(&self, keys: &[Vec<u8>]) -> KvResult<Vec<Option<KvValue>>> {
        let armed = self.armed.load(std::sync::atomic::Ordering::SeqCst);
        if armed && keys.iter().any(|k| k.starts_with(&self.doomed) && k.len() > self.doomed.len() + 1) {
            panic!("injected panic in a storage read");
        }
        self.inner.get_many(keys)
    }
    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> KvResult<Vec<(Vec<u8>, KvValue)>> {
        self.inner.scan(start, end, limit)
    }
    fn write(&self, batch: WriteBatch) -> KvResult<()> {
        self.inner.write(batch)
    }
    fn stats(&self) -> KvStats {
        self.inner.stats()
    }
}

#[test]
fn a_panicking_callback_poisons_only_its_actor() {
    let store = Arc::new(PanickyStore {
        inner: MemoryStore::new(),
        doomed: b"adoomed\0m".to_vec(),
        armed: false.into(),
    });
    // A tiny cache so that reads reach the store.
    let config = StorageConfig { page_cache_bytes_max: 1024, ..StorageConfig::default() };
    let storage = Storage::new(store.clone(), config).unwrap();
    let fill =
        "CREATE TABLE t(x); WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < 500) \
                INSERT INTO t SELECT randomblob(1000) FROM s;";
    let mut doomed = storage.open(&ActorId::new("doomed").unwrap()).unwrap();
    let mut healthy = storage.open(&ActorId::new("healthy").unwrap()).unwrap();
    doomed.execute_script(fill).unwrap();
    healthy.execute_script(fill).unwrap();
    store.armed.store(true, std::sync::atomic::Ordering::SeqCst);

    let count = "SELECT count(*), sum(length(x)) FROM t";
    assert_eq!(doomed.execute(count, &Params::None).unwrap_err(), Error::Poisoned);
    assert_eq!(doomed.execute("SELECT 1", &Params::None).unwrap_err(), Error::Poisoned, "stays poisoned");
    let rows = healthy.execute(count, &Params::None).unwrap().rows;
    assert_eq!(rows, vec![vec![Value::Integer(500), Value::Integer(500_000)]]);

    // Dropping the poisoned handle frees the actor; once the fault is gone it opens again.
    drop(doomed);
    store.armed.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut again = storage.open(&ActorId::new("doomed").unwrap()).unwrap();
    assert_eq!(again.execute(count, &Params::None).unwrap().rows, rows);
}
