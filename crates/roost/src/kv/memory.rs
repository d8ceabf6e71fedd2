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
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every pair in key order (fixtures and tests).
    pub fn dump(&self) -> Vec<(Key, Value)> {
        self.map.read().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Builds a store holding exactly `pairs`.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (Key, Value)>) -> Self {
        Self { map: RwLock::new(pairs.into_iter().collect()), counters: CallCounters::default() }
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
        self.counters.timed_read(|| {
            if start >= end {
                return Ok(Vec::new());
            }
            let map = self.map.read();
            let range = map.range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)));
            Ok(range.take(limit).map(|(k, v)| (k.clone(), v.clone())).collect())
        })
    }

    fn write(&self, batch: WriteBatch) -> KvResult<()> {
        self.counters.timed_write(|| self.apply(batch))
    }

    fn stats(&self) -> KvStats {
        let mut stats = KvStats::default();
        self.counters.fill(&mut stats);
        stats
    }
}

impl MemoryStore {
    /// Applies a batch under the write lock: fence check, then the ops in order.
    fn apply(&self, batch: WriteBatch) -> KvResult<()> {
        let mut map = self.map.write();
        if let Some(fence) = &batch.fence {
            if map.get(&fence.key) != fence.expected.as_ref() {
                return Err(KvError::Fenced);
            }
        }
        for op in batch.ops {
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
        CallCounters::bump(&self.counters.group_commits);
        Ok(())
    }
}
