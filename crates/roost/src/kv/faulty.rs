//! Fault injection: a wrapper that fails chosen calls of an inner store.
//!
//! A failed call has no effect on the inner store (the failure happens before the call), so
//! after a failure the store still holds exactly what was written before it. The exception is
//! [`FaultPlan::fail_after_commit`], which models a sync that fails after its batch was
//! applied: the batch is written, the writer gets [`KvError::Failed`], and the store fails
//! every later call (fail-stop) until the next [`FaultyStore::set_plan`], which plays the part
//! of a restart.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Key, KvError, KvResult, KvStats, KvStore, StoreHealth, Value, WriteBatch, WriteOp};

/// Which call to fail: the Nth (1-based) of its kind, counted from the plan's installation.
/// "Reads" are `get_many` and `scan`; "writes" are non-durable batches (journal traffic);
/// "commits" are durable batches (acknowledged transactions). 0 never fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultPlan {
    pub fail_read: u64,
    pub fail_write: u64,
    pub fail_commit: u64,
    /// The Nth commit is applied, then fails as a failed sync does, and the store stops.
    pub fail_after_commit: u64,
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
    stopped: std::sync::atomic::AtomicBool,
    /// While set, batches that put anything are refused as a full disk refuses them.
    full: std::sync::atomic::AtomicBool,
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
            stopped: std::sync::atomic::AtomicBool::new(false),
            full: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Installs a plan and restarts the call counts (and a stopped store: a restart).
    pub fn set_plan(&self, plan: FaultPlan) {
        let mut guard = self.plan.lock();
        *guard = plan;
        self.stopped.store(false, Ordering::SeqCst);
        for counter in [&self.reads, &self.writes, &self.commits] {
            counter.store(0, Ordering::SeqCst);
        }
    }

    /// Plays a disk below its reserve: while `full`, batches that put anything answer
    /// [`KvError::StorageFull`] and change nothing; health says `Full`.
    pub fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }

    /// How many faults were injected since creation.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Counts a call and fails it if the plan says so; returns its 1-based number.
    fn check(&self, counter: &AtomicU64, fail_at: u64, what: &'static str) -> KvResult<u64> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(KvError::Failed(format!("injected sync failure stopped the store ({what})")));
        }
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        if fail_at != 0 && n == fail_at {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(KvError::Injected(what));
        }
        Ok(n)
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
        if self.full.load(Ordering::SeqCst) && batch.ops.iter().any(|op| matches!(op, WriteOp::Put(..))) {
            return Err(KvError::StorageFull { free_bytes: 0, reserve_bytes: FULL_RESERVE_BYTES });
        }
        if !batch.durable {
            self.check(&self.writes, plan.fail_write, "write")?;
            return self.inner.write(batch);
        }
        let n = self.check(&self.commits, plan.fail_commit, "commit")?;
        if plan.fail_after_commit == 0 || n != plan.fail_after_commit {
            return self.inner.write(batch);
        }
        self.inner.write(batch)?;
        self.injected.fetch_add(1, Ordering::SeqCst);
        self.stopped.store(true, Ordering::SeqCst);
        Err(KvError::Failed("injected sync failure after the commit was applied".into()))
    }

    fn stats(&self) -> KvStats {
        self.inner.stats()
    }

    fn sync(&self) -> KvResult<()> {
        self.inner.sync()
    }

    fn compact(&self) -> KvResult<bool> {
        self.inner.compact()
    }

    /// Plays a restart in place: a store stopped by the plan runs again.
    fn reopen(&self) -> KvResult<bool> {
        self.stopped.store(false, Ordering::SeqCst);
        self.inner.reopen().map(|_| true)
    }

    fn health(&self) -> StoreHealth {
        if self.stopped.load(Ordering::SeqCst) {
            return StoreHealth::Failed("injected sync failure stopped the store".into());
        }
        if self.full.load(Ordering::SeqCst) {
            return StoreHealth::Full { free_bytes: 0, reserve_bytes: FULL_RESERVE_BYTES };
        }
        self.inner.health()
    }
    fn read_ahead_charge(&self, key: &[u8], bytes: u64) -> Option<super::Charge> {
        self.inner.read_ahead_charge(key, bytes)
    }
}

/// The reserve a store played full by [`FaultyStore::set_full`] reports.
const FULL_RESERVE_BYTES: u64 = 1 << 20;
