//! Fault injection: a wrapper that fails chosen calls of an inner store.
//!
//! A failed call has no effect on the inner store (the failure happens before the call), so
//! after a failure the store still holds exactly what was written before it.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Key, KvError, KvResult, KvStats, KvStore, Value, WriteBatch};

/// Which call to fail: the Nth (1-based) of its kind, counted from the plan's installation.
/// "Reads" are `get_many` and `scan`; "writes" are non-durable batches (journal traffic);
/// "commits" are durable batches (acknowledged transactions). 0 never fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultPlan {
    pub fail_read: u64,
    pub fail_write: u64,
    pub fail_commit: u64,
}

/// Wraps a store and fails the calls a [`FaultPlan`] names.
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    plan: parking_lot::Mutex<FaultPlan>,
    reads: AtomicU64,
    writes: AtomicU64,
    commits: AtomicU64,
    injected: AtomicU64,
}

impl<S: KvStore> FaultyStore<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            plan: parking_lot::Mutex::new(FaultPlan::default()),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        }
    }

    /// Installs a plan and restarts the call counts.
    pub fn set_plan(&self, plan: FaultPlan) {
        let mut guard = self.plan.lock();
        *guard = plan;
        for counter in [&self.reads, &self.writes, &self.commits] {
            counter.store(0, Ordering::SeqCst);
        }
    }

    /// How many faults were injected since creation.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn check(&self, counter: &AtomicU64, fail_at: u64, what: &'static str) -> KvResult<()> {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        if fail_at != 0 && n == fail_at {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(KvError::Injected(what));
        }
        Ok(())
    }
}

impl<S: KvStore> KvStore for FaultyStore<S> {
    fn get_many(&self, keys: &[Key]) -> KvResult<Vec<Option<Value>>> {
        let plan = *self.plan.lock();
        self.check(&self.reads, plan.fail_read, "read")?;
        self.inner.get_many(keys)
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> KvResult<Vec<(Key, Value)>> {
        let plan = *self.plan.lock();
        self.check(&self.reads, plan.fail_read, "read")?;
        self.inner.scan(start, end, limit)
    }

    fn write(&self, batch: WriteBatch) -> KvResult<()> {
        let plan = *self.plan.lock();
        if batch.durable {
            self.check(&self.commits, plan.fail_commit, "commit")?;
        } else {
            self.check(&self.writes, plan.fail_write, "write")?;
        }
        self.inner.write(batch)
    }

    fn stats(&self) -> KvStats {
        self.inner.stats()
    }
}
