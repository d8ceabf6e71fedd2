//! Deleting actors and listing them: bounded store work per batch and per listing page, and
//! crash safety of an actor delete that runs as several batches.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use roost::kv::{
    FaultPlan, FaultyStore, Key, KvResult, KvStats, KvStore, MemoryStore, Value as KvValue, WriteBatch,
    WriteOp,
};
use roost::vfs::{layout, VfsLimits, LIST_SKIPPED_MAX};
use roost::{ActorId, Params, Storage, StorageConfig, Value};

fn id(s: &str) -> ActorId {
    ActorId::new(s).unwrap()
}

fn config(keys_per_batch: usize) -> StorageConfig {
    let limits = VfsLimits { range_delete_keys_per_batch: keys_per_batch, ..VfsLimits::default() };
    StorageConfig { limits, ..StorageConfig::default() }
}

/// Gives `name` a database of about `pages` pages.
fn fill(storage: &Storage, name: &str, pages: usize) {
    let mut db = storage.open(&id(name)).unwrap();
    db.execute_script(&format!(
        "CREATE TABLE t(x BLOB); WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < {pages}) \
         INSERT INTO t SELECT randomblob(4000) FROM s;"
    ))
    .unwrap();
}

/// Keys the actor has besides its generation.
fn file_keys(store: &MemoryStore, name: &str) -> usize {
    let (start, end) = layout::files_range(&id(name));
    store.dump().into_iter().filter(|(k, _)| *k >= start && *k < end).count()
}

/// A store that records the most keys one `write` touched, counting the keys a range delete
/// covers when it is applied: that is the committer's work for the batch.
#[derive(Default)]
struct Recording {
    inner: MemoryStore,
    recording: AtomicBool,
    keys_per_write_max: AtomicUsize,
}

impl KvStore for Recording {
    fn get_many(&self, keys: &[Key]) -> KvResult<Vec<Option<KvValue>>> {
        self.inner.get_many(keys)
    }
    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> KvResult<Vec<(Key, KvValue)>> {
        self.inner.scan(start, end, limit)
    }
    fn write(&self, batch: WriteBatch) -> KvResult<()> {
        if self.recording.load(Ordering::SeqCst) {
            let mut keys = 0;
            for op in &batch.ops {
                keys += match op {
                    WriteOp::DeleteRange { start, end } => self.inner.scan(start, end, usize::MAX)?.len(),
                    _ => 1,
                };
            }
            self.keys_per_write_max.fetch_max(keys, Ordering::SeqCst);
        }
        self.inner.write(batch)
    }
    fn stats(&self) -> KvStats {
        self.inner.stats()
    }
}

#[test]
fn deleting_a_big_actor_writes_bounded_batches() {
    let store = Arc::new(Recording::default());
    let storage = Storage::new(store.clone(), config(200)).unwrap();
    fill(&storage, "big", 3000);
    fill(&storage, "small", 1);
    assert!(file_keys(&store.inner, "big") > 3000);
    store.recording.store(true, Ordering::SeqCst);
    assert!(storage.delete(&id("big")).unwrap());
    let most = store.keys_per_write_max.load(Ordering::SeqCst);
    // 200 chunk deletes, or the commit point (two metadata keys and the generation).
    assert!(most <= 200, "one delete batch touched {most} keys");
    assert_eq!(file_keys(&store.inner, "big"), 0);
    assert_eq!(storage.size_bytes(&id("big")).unwrap(), None);
    assert!(storage.size_bytes(&id("small")).unwrap().is_some());
}

/// Lists every actor, page by page; checks each call's store reads.
fn list_all(storage: &Storage, store: &dyn KvStore, limit: usize) -> (Vec<String>, usize) {
    let (mut names, mut after, mut calls) = (Vec::new(), None, 0);
    loop {
        let before = store.stats().read_calls;
        let page = storage.list("", after.as_ref(), limit).unwrap();
        let reads = store.stats().read_calls - before;
        let bound = 2 * (limit + LIST_SKIPPED_MAX) as u64 + 1;
        assert!(reads <= bound, "one page cost {reads} store reads (bound {bound})");
        names.extend(page.actors.iter().map(|(id, _)| id.to_string()));
        calls += 1;
        match page.next_after {
            Some(next) => after = Some(next),
            None => return (names, calls),
        }
    }
}

#[test]
fn listing_passes_over_deleted_actors_in_bounded_work() {
    let store = Arc::new(MemoryStore::new());
    let storage = Storage::new(store.clone(), StorageConfig::default()).unwrap();
    for name in ["d-00000", "m-0500", "m-1500", "z-live"] {
        fill(&storage, name, 2);
    }
    assert!(storage.delete(&id("d-00000")).unwrap());
    // What 2,000 deletes leave behind: a generation key each (checked for one real delete).
    let left: Vec<Key> = store.dump().into_iter().map(|(k, _)| k).filter(|k| k.starts_with(b"ad-")).collect();
    assert_eq!(left, vec![layout::generation_key(&id("d-00000"))]);
    let ops = (1..2000)
        .map(|i| {
            WriteOp::Put(layout::generation_key(&id(&format!("m-{i:04}x"))), 7u64.to_be_bytes().to_vec())
        })
        .collect();
    store.write(WriteBatch { fence: None, ops, durable: true }).unwrap();

    let (names, calls) = list_all(&storage, store.as_ref(), 10);
    assert_eq!(names, ["m-0500", "m-1500", "z-live"]);
    assert!(calls <= 2000 / LIST_SKIPPED_MAX + 2, "{calls} pages");
    let prefixed = storage.list("m-1", None, 10).unwrap();
    assert!(prefixed.actors.is_empty() && prefixed.next_after.is_some(), "a short page says where to go on");
}

#[test]
fn an_interrupted_delete_leaves_the_actor_or_nothing_and_recreating_works() {
    let mut outcomes = (0, 0);
    // Fail the commit point (n = 0) or the nth batch of chunk removal, then restart.
    for n in 0..6u64 {
        let memory = Arc::new(MemoryStore::new());
        let store = Arc::new(FaultyStore::new(memory.clone()));
        let storage = Storage::new(store.clone(), config(100)).unwrap();
        fill(&storage, "x", 300);
        fill(&storage, "y", 1);
        let plan = match n {
            0 => FaultPlan { fail_commit: 1, ..FaultPlan::default() },
            n => FaultPlan { fail_write: n, ..FaultPlan::default() },
        };
        store.set_plan(plan);
        let deleted = storage.delete(&id("x"));
        store.set_plan(FaultPlan::default());
        drop(storage);

        // A restart: a new storage over what the store holds.
        let storage = Storage::new(memory.clone(), config(100)).unwrap();
        let listed: Vec<String> =
            storage.list("", None, 10).unwrap().actors.iter().map(|(id, _)| id.to_string()).collect();
        let size = storage.size_bytes(&id("x")).unwrap();
        let mut db = storage.open(&id("x")).unwrap();
        let tables = db.execute("SELECT count(*) FROM sqlite_master", &Params::None).unwrap().rows;
        if deleted.is_ok() {
            outcomes.1 += 1;
            assert_eq!(listed, ["y"], "n={n}");
            assert_eq!(size, None, "n={n}");
            assert_eq!(tables, vec![vec![Value::Integer(0)]], "n={n}");
            // Opening removed what the interrupted delete left.
            assert_eq!(file_keys(&memory, "x"), 0, "n={n}");
        } else {
            outcomes.0 += 1;
            assert_eq!(listed, ["x", "y"], "n={n}");
            assert!(size.unwrap() >= 300 * 4096, "n={n}");
            assert_eq!(tables, vec![vec![Value::Integer(1)]], "n={n}");
        }
        db.execute_script("CREATE TABLE IF NOT EXISTS u(v); INSERT INTO u VALUES (1);").unwrap();
        let check = db.execute("PRAGMA integrity_check", &Params::None).unwrap().rows;
        assert_eq!(check, vec![vec![Value::Text("ok".into())]], "n={n}");
        drop(db);
        let size = storage.size_bytes(&id("x")).unwrap().unwrap();
        let (start, end) = layout::file_range(&id("x"), layout::FileTag::Main);
        let chunks = memory.dump().into_iter().filter(|(k, _)| *k > start && *k < end).count() as u64;
        assert_eq!(chunks * 4096, size, "n={n}: no chunk beyond the database");
    }
    assert_eq!(outcomes, (1, 5));
}

#[test]
fn a_deleted_actor_stays_deleted_in_a_reopened_fjall_folder() {
    use roost::kv::{FjallConfig, FjallStore};
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Arc::new(FjallStore::open(FjallConfig::new(dir.path())).unwrap());
        let storage = Storage::new(store.clone(), config(100)).unwrap();
        fill(&storage, "big", 1000);
        fill(&storage, "keep", 1);
        assert!(storage.delete(&id("big")).unwrap());
    }
    let store = Arc::new(FjallStore::open(FjallConfig::new(dir.path())).unwrap());
    let storage = Storage::new(store.clone(), config(100)).unwrap();
    let listed: Vec<String> =
        storage.list("", None, 10).unwrap().actors.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(listed, ["keep"]);
    assert_eq!(storage.size_bytes(&id("big")).unwrap(), None);
    let (start, end) = layout::files_range(&id("big"));
    assert!(store.scan(&start, &end, 1).unwrap().is_empty(), "no chunk of the deleted actor is left");
    let mut db = storage.open(&id("big")).unwrap();
    let tables = db.execute("SELECT count(*) FROM sqlite_master", &Params::None).unwrap().rows;
    assert_eq!(tables, vec![vec![Value::Integer(0)]]);
}
