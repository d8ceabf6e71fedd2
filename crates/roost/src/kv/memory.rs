//! In-memory backend for tests and benchmarks: a `BTreeMap` behind a lock. Nothing is durable.

use std::collections::BTreeMap;
use std::ops::Bound;

use parking_lot::RwLock;

use super::{CallCounters, Key, KvError, KvResult, KvStats, KvStore, Value, WriteBatch, WriteOp};

/// A store that keeps everything in RAM. Batches apply atomically under one lock.
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: RwLock<BTreeMap<Key, Value>>,
    counters: CallCounters,
    /// Read-ahead allowed, as a remote store would (tests of the read-ahead path); 0: none.
    read_ahead_bytes_max: u64,
    read_ahead_used: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that lets the VFS read up to `bytes_max` ahead, like a remote store.
    pub fn with_read_ahead(bytes_max: u64) -> Self {
        Self { read_ahead_bytes_max: bytes_max, ..Self::default() }
    }

    /// Every pair in key order (fixtures and tests).
    pub fn dump(&self) -> Vec<(Key, Value)> {
        self.map.read().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Builds a store holding exactly `pairs`.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (Key, Value)>) -> Self {
        Self { map: RwLock::new(pairs.into_iter().collect()), ..Self::default() }
    }
}

impl KvStore for MemoryStore {
    fn get_many(&self, keys: &[Key]) -> KvResult<Vec<Option<Value>>> {
        self.counters.timed_read(|| {
            let map = self.map.read();
            Ok(keys.iter().map(|k| map.get(k).cloned()).collect())
        })
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> KvResult<Vec<(Key, Value)>> {
        self.counters.timed_read(|| Ok(scan_map(&self.map.read(), start, end, limit)))
    }

    fn write(&self, batch: WriteBatch) -> KvResult<()> {
        self.counters.timed_write(|| self.apply(batch))
    }

    fn stats(&self) -> KvStats {
        let mut stats = KvStats::default();
        self.counters.fill(&mut stats);
        stats.cache_bytes = self.read_ahead_used.load(std::sync::atomic::Ordering::SeqCst);
        stats.cache_bytes_max = self.read_ahead_bytes_max;
        stats
    }

    fn read_ahead_charge(&self, _key: &[u8], bytes: u64) -> Option<super::Charge> {
        super::Charge::take(&self.read_ahead_used, bytes, self.read_ahead_bytes_max)
    }
}

impl MemoryStore {
    /// Applies a batch under the write lock: fence check, then the ops in order.
    fn apply(&self, batch: WriteBatch) -> KvResult<()> {
        let mut map = self.map.write();
        check_fence(&map, &batch)?;
        apply_ops(&mut map, batch.ops);
        CallCounters::bump(&self.counters.group_commits);
        Ok(())
    }
}

/// `Err(Fenced)` unless the batch's fence key holds its expected value in `map`.
pub(crate) fn check_fence(map: &BTreeMap<Key, Value>, batch: &WriteBatch) -> KvResult<()> {
    match &batch.fence {
        Some(fence) if map.get(&fence.key) != fence.expected.as_ref() => Err(KvError::Fenced),
        _ => Ok(()),
    }
}

/// Applies `ops` to `map` in order (a put after a range delete survives it).
pub(crate) fn apply_ops(map: &mut BTreeMap<Key, Value>, ops: impl IntoIterator<Item = WriteOp>) {
    for op in ops {
        match op {
            WriteOp::Put(k, v) => {
                map.insert(k, v);
            }
            WriteOp::Delete(k) => {
                map.remove(&k);
            }
            WriteOp::DeleteRange { start, end } => {
                if start < end {
                    let mut tail = map.split_off(&start);
                    let mut keep = tail.split_off(&end);
                    map.append(&mut keep);
                }
            }
        }
    }
}

/// Up to `limit` pairs of `map` with `start <= key < end`, in key order.
pub(crate) fn scan_map(
    map: &BTreeMap<Key, Value>,
    start: &[u8],
    end: &[u8],
    limit: usize,
) -> Vec<(Key, Value)> {
    if start >= end {
        return Vec::new();
    }
    let range = map.range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)));
    range.take(limit).map(|(k, v)| (k.clone(), v.clone())).collect()
}
