//! Crash-model backend for tests: an in-memory store that knows which batches are durable.
//!
//! The store keeps two layers: the durable map (what a restart recovers) and the batches
//! applied since the last sync, in order. Reads see both. [`CrashStore::crash`] drops the
//! unsynced batches, as a process or power loss would. A sync replays the pending batches onto
//! the durable map, so its cost is that of the batches, not of the store.
//!
//! Invariants:
//! - `visible` equals `durable` with every batch of `pending` applied in order;
//! - under [`Durability::Sync`] a durable batch is synced before `write` returns `Ok`, so an
//!   acknowledged durable batch survives every later crash;
//! - under [`Durability::Relaxed`] durable batches are synced every `relaxed_sync_every`
//!   durable batches (the model of fjall's periodic sync); a crash loses at most the batches
//!   since the last sync, whole batches only;
//! - fail-stop, as `FjallStore`: a batch whose sync fails (or whose error comes after its
//!   sync) leaves the store stopped; every later call answers [`KvError::Failed`] until
//!   [`KvStore::reopen`], which plays a restart (a crash, then the store runs again);
//! - a planned crash at a write stops the store the same way before that batch applies, so
//!   nothing the process does after the crash point reaches the store.

use std::collections::BTreeMap;

use parking_lot::Mutex;

use super::memory::{apply_ops, check_fence, scan_map};
use super::{
    CallCounters, Durability, Key, KvError, KvResult, KvStats, KvStore, StoreHealth, Value, WriteBatch,
};

/// Faults to inject, each counted 1-based from [`CrashStore::set_plan`]; 0 never fires.
/// "Writes" are all batches; "commits" are durable ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrashPlan {
    /// At the Nth write the process "dies": the batch is not applied, unsynced batches are
    /// lost and the store stops.
    pub crash_at_write: u64,
    /// The Nth commit is applied, then its sync fails: the writer gets `Failed`, the store
    /// stops, and a reopen finds the batch gone (it never reached stable storage).
    pub fail_before_sync: u64,
    /// The Nth commit is applied and synced, then the writer gets `Failed` anyway and the store
    /// stops: a reopen finds the batch there.
    pub fail_after_sync: u64,
}

#[derive(Debug, Default)]
struct State {
    durable: BTreeMap<Key, Value>,
    visible: BTreeMap<Key, Value>,
    pending: Vec<WriteBatch>,
    plan: CrashPlan,
    writes: u64,
    commits: u64,
    /// Durable batches applied since the last sync (relaxed mode).
    unsynced_commits: u64,
    stopped: Option<&'static str>,
}

/// An in-memory store with a durable layer and planned crashes (see the module docs).
#[derive(Debug)]
pub struct CrashStore {
    state: Mutex<State>,
    durability: Durability,
    relaxed_sync_every: u64,
    counters: CallCounters,
    injected: std::sync::atomic::AtomicU64,
    crashes: std::sync::atomic::AtomicU64,
}

impl CrashStore {
    /// A store with `Durability::Sync`.
    pub fn new() -> Self {
        Self::with_durability(Durability::Sync, 1)
    }

    /// A store of the given durability; under `Relaxed`, a sync runs after every
    /// `relaxed_sync_every` durable batches (at least 1).
    pub fn with_durability(durability: Durability, relaxed_sync_every: u64) -> Self {
        Self {
            state: Mutex::new(State::default()),
            durability,
            relaxed_sync_every: relaxed_sync_every.max(1),
            counters: CallCounters::default(),
            injected: Default::default(),
            crashes: Default::default(),
        }
    }

    /// Installs a plan and restarts its call counts.
    pub fn set_plan(&self, plan: CrashPlan) {
        let mut state = self.state.lock();
        state.plan = plan;
        state.writes = 0;
        state.commits = 0;
    }

    /// Drops every batch applied since the last sync, as a crash does. The store keeps
    /// running (or stays stopped): a caller simulating a restart also drops every cache.
    pub fn crash(&self) {
        Self::crash_locked(&mut self.state.lock());
        self.crashes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn crash_locked(state: &mut State) {
        state.pending.clear();
        state.unsynced_commits = 0;
        state.visible = state.durable.clone();
    }

    /// How many planned faults (crash points and failed syncs) fired.
    pub fn injected(&self) -> u64 {
        self.injected.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Crashes and reopens so far.
    pub fn crashes(&self) -> u64 {
        self.crashes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the store is stopped (a fault fired and no reopen happened since).
    pub fn is_stopped(&self) -> bool {
        self.state.lock().stopped.is_some()
    }

    /// Syncs done so far (each one makes everything applied before it durable).
    pub fn syncs(&self) -> u64 {
        self.counters.syncs.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every durable pair in key order.
    pub fn durable_dump(&self) -> Vec<(Key, Value)> {
        self.state.lock().durable.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn sync_locked(&self, state: &mut State) {
        for batch in std::mem::take(&mut state.pending) {
            apply_ops(&mut state.durable, batch.ops);
        }
        state.unsynced_commits = 0;
        CallCounters::bump(&self.counters.syncs);
        // Cheap form of `durable == visible` (a full compare per sync would dominate test time).
        debug_assert_eq!(state.durable.len(), state.visible.len(), "a sync makes the visible state durable");
    }

    fn stop(&self, state: &mut State, why: &'static str) -> KvError {
        self.injected.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        state.stopped = Some(why);
        KvError::Failed(why.to_string())
    }

    fn check_running(state: &State) -> KvResult<()> {
        match state.stopped {
            Some(why) => Err(KvError::Failed(why.to_string())),
            None => Ok(()),
        }
    }

    fn apply(&self, batch: WriteBatch) -> KvResult<()> {
        let mut state = self.state.lock();
        Self::check_running(&state)?;
        state.writes += 1;
        if state.writes == state.plan.crash_at_write {
            Self::crash_locked(&mut state);
            return Err(self.stop(&mut state, "planned crash"));
        }
        check_fence(&state.visible, &batch)?;
        let durable = batch.durable;
        apply_ops(&mut state.visible, batch.ops.iter().cloned());
        state.pending.push(batch);
        CallCounters::bump(&self.counters.group_commits);
        if !durable {
            return Ok(());
        }
        state.commits += 1;
        let n = state.commits;
        if n == state.plan.fail_before_sync {
            return Err(self.stop(&mut state, "planned sync failure (batch not synced)"));
        }
        state.unsynced_commits += 1;
        let sync_now = match self.durability {
            Durability::Sync => true,
            Durability::Relaxed => state.unsynced_commits >= self.relaxed_sync_every,
        };
        if sync_now || n == state.plan.fail_after_sync {
            self.sync_locked(&mut state);
        }
        if n == state.plan.fail_after_sync {
            return Err(self.stop(&mut state, "planned failure after a sync"));
        }
        Ok(())
    }
}

impl Default for CrashStore {
    fn default() -> Self {
        Self::new()
    }
}

impl KvStore for CrashStore {
    fn get_many(&self, keys: &[Key]) -> KvResult<Vec<Option<Value>>> {
        self.counters.timed_read(|| {
            let state = self.state.lock();
            Self::check_running(&state)?;
            Ok(keys.iter().map(|k| state.visible.get(k).cloned()).collect())
        })
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> KvResult<Vec<(Key, Value)>> {
        self.counters.timed_read(|| {
            let state = self.state.lock();
            Self::check_running(&state)?;
            Ok(scan_map(&state.visible, start, end, limit))
        })
    }

    fn write(&self, batch: WriteBatch) -> KvResult<()> {
        let result = self.counters.timed_write(|| self.apply(batch));
        if let Err(e) = &result {
            self.counters.count_write_error(e);
        }
        result
    }

    fn stats(&self) -> KvStats {
        let mut stats = KvStats::default();
        self.counters.fill(&mut stats);
        stats
    }

    fn health(&self) -> StoreHealth {
        match self.state.lock().stopped {
            Some(why) => StoreHealth::Failed(why.to_string()),
            None => StoreHealth::Ok,
        }
    }

    fn sync(&self) -> KvResult<()> {
        let mut state = self.state.lock();
        Self::check_running(&state)?;
        self.sync_locked(&mut state);
        Ok(())
    }

    /// A restart: what was not synced is lost, the store runs again, the plan is cleared.
    fn reopen(&self) -> KvResult<bool> {
        let mut state = self.state.lock();
        Self::crash_locked(&mut state);
        state.stopped = None;
        state.plan = CrashPlan::default();
        self.crashes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(true)
    }
}
