//! The key-value layer: a batch-shaped store trait and its backends.
//!
//! Invariants every backend keeps:
//! - keys and values are opaque bytes; keys sort bytewise, so big-endian numbers in keys sort
//!   numerically;
//! - [`KvStore::write`] applies a [`WriteBatch`] atomically: after a crash either every op of the
//!   batch is visible or none is;
//! - a batch with a [`Fence`] is rejected with [`KvError::Fenced`] (and changes nothing) unless
//!   the fence key holds exactly the expected value when the batch is applied;
//! - ops in a batch apply in order, so a put after a range delete survives it;
//! - with [`Durability::Sync`], `write` of a batch with `durable == true` returns only once the
//!   batch is on stable storage;
//! - fail-stop: a backend that cannot tell whether a batch survives (it was applied, then its
//!   sync failed) answers [`KvError::Failed`] to that writer and to every later call, so no
//!   caller is told "error" about a batch that a later read in this process would show.
//!
//! Remote backends pay a round trip per call, so callers batch: `get_many` reads many keys in
//! one call and a whole SQLite transaction is one `write`.

mod crash;
mod disk;
mod faulty;
mod fjall;
mod memory;
mod postgres;
mod postgres_nodes;
mod shards;
#[doc(hidden)]
pub mod testing;

pub use self::crash::{CrashPlan, CrashStore};
pub use self::disk::{DiskSpace, DEFAULT_RESERVE_BYTES};
pub use self::faulty::{FaultPlan, FaultyStore};
pub use self::fjall::{FjallConfig, FjallStore};
pub use self::memory::MemoryStore;
pub use self::postgres::{PostgresConfig, PostgresStore, SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION};
pub use self::postgres_nodes::{LeaseSession, NodeClaims, NodeRow, OwnerRow, Renewal};
pub use self::shards::{placement_id, score as placement_score, Placed, Placement, ShardedStore};

use std::sync::atomic::{AtomicU64, Ordering};

/// A key: bytes ordered bytewise.
pub type Key = Vec<u8>;
/// A value: bytes.
pub type Value = Vec<u8>;

/// The layer's error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The batch's fence key no longer holds the expected generation: another owner wrote.
    #[error("write fenced: the ownership generation changed")]
    Fenced,
    /// The backend failed (disk, network, corruption). The message is for logs, not clients.
    #[error("store I/O error: {0}")]
    Io(String),
    /// The store cannot be reached now (a remote store's server or network is down, or did
    /// not answer in time). The call changed nothing, or the batch's outcome will be resolved
    /// before any later call succeeds. Retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store is shutting down or was closed.
    #[error("store is closed")]
    Closed,
    /// The store stopped after a failure that left it in an unknown state (a failed sync of
    /// applied data): every later call fails until the process restarts and recovers from disk.
    #[error("store failed, restart to recover: {0}")]
    Failed(String),
    /// The write was refused, changing nothing: the file system has less than the reserve
    /// free. Writes succeed again once space is back.
    #[error("storage full: {free_bytes} bytes free, the write would go below the reserve of {reserve_bytes} bytes")]
    StorageFull { free_bytes: u64, reserve_bytes: u64 },
    /// The data folder is locked by another process (at open).
    #[error("the data folder is in use by another process")]
    InUse,
    /// The data folder cannot be read or written by this process (at open).
    #[error("the data folder is not accessible: {0}")]
    Inaccessible(String),
    /// The data folder holds a store format this version cannot read (at open).
    #[error("the data folder has a store format this version cannot read: {0}")]
    UnknownFormat(String),
    /// A fault injected by [`FaultyStore`].
    #[error("injected fault on {0}")]
    Injected(&'static str),
}

/// A node of a cluster sharing one store: its id and the URL other nodes reach it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    pub node_id: String,
    pub url: String,
}

/// Which pairs a claim may read ahead in the same round trip: those in `[start, end)`, all
/// of them if the file whose metadata is at `meta_key` holds at most `whole_chunks` chunks of
/// `chunk_bytes`, else the first `first_chunks` and up to `hint_chunks` of the keys the last
/// owner left as hints ([`Claims::remember_hints`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preload {
    pub meta_key: Key,
    pub start: Key,
    pub end: Key,
    pub chunk_bytes: u64,
    pub whole_chunks: u32,
    pub first_chunks: u32,
    pub hint_chunks: u32,
}

/// Pairs read ahead (by a claim, or by a scan), charged to the store's read-ahead cap until
/// dropped. `pairs` are sorted by key.
#[derive(Debug, Default)]
pub struct Preloaded {
    pub pairs: Vec<(Key, Value)>,
    charges: Vec<Charge>,
}

impl PartialEq for Preloaded {
    fn eq(&self, other: &Self) -> bool {
        self.pairs == other.pairs
    }
}

impl Eq for Preloaded {}

impl Preloaded {
    pub fn new(pairs: Vec<(Key, Value)>, charge: Option<Charge>) -> Self {
        Self { pairs, charges: charge.into_iter().collect() }
    }

    /// Bytes charged for these pairs.
    pub fn charged_bytes(&self) -> u64 {
        self.charges.iter().map(|c| c.bytes).sum()
    }

    /// Adds `pairs` (charged by `charge`), keeping the pairs sorted; a key already here keeps
    /// its value.
    pub fn extend(&mut self, pairs: Vec<(Key, Value)>, charge: Charge) {
        self.pairs.extend(pairs);
        self.pairs.sort_by(|a, b| a.0.cmp(&b.0));
        self.pairs.dedup_by(|later, earlier| later.0 == earlier.0);
        self.charges.push(charge);
    }
}

/// Bytes taken from a shared counter, given back when dropped.
#[derive(Debug)]
pub struct Charge {
    counter: std::sync::Arc<AtomicU64>,
    bytes: u64,
}

impl Charge {
    /// Takes `bytes` from `counter` if it stays at or under `bytes_max`.
    pub fn take(counter: &std::sync::Arc<AtomicU64>, bytes: u64, bytes_max: u64) -> Option<Self> {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|total| *total <= bytes_max)
            })
            .ok()?;
        Some(Self { counter: counter.clone(), bytes })
    }

    /// Bytes this charge holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Gives back what is not needed of the charge, keeping `bytes`.
    pub fn shrink_to(&mut self, bytes: u64) {
        let freed = self.bytes.saturating_sub(bytes);
        let before = self.counter.fetch_sub(freed, Ordering::SeqCst);
        debug_assert!(before >= freed, "a charge gave back more than its counter held");
        self.bytes -= freed;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let before = self.counter.fetch_sub(self.bytes, Ordering::SeqCst);
        debug_assert!(before >= self.bytes, "a charge gave back more than its counter held");
    }
}

/// The outcome of claiming an actor for this node (see [`Claims`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// This node owns the actor: `values` answer the keys asked for, read after the claim
    /// (the fence key holds the generation this node's writes must be fenced on); `fresh`
    /// says the actor had no generation before this claim; `preloaded` are the pairs read
    /// ahead.
    Mine { values: Vec<Option<Value>>, fresh: bool, preloaded: Preloaded },
    /// Another live node owns the actor.
    Elsewhere(NodeAddress),
}

/// Ownership of actors among nodes that share a store. A node may write an actor only after
/// claiming it; a claim that takes an actor over from another (dead) node bumps the actor's
/// generation in the same transaction, so the old owner's writes, fenced on the old
/// generation, fail.
pub trait Claims: Send + Sync {
    /// Claims the actor whose generation lives at `fence_key` and reads `keys`, and what
    /// `preload` allows, in the same round trip. Fails with [`KvError::Unavailable`] while this
    /// node's lease is not live.
    fn claim(&self, fence_key: &[u8], keys: &[Key], preload: &Preload) -> KvResult<Claim>;

    /// Leaves `keys` (pages the actor read while awake here) as hints for the actor's next
    /// claim to read ahead, when it goes to sleep. Best effort and without waiting: a hint
    /// lost costs the next wake some round trips, nothing else.
    fn remember_hints(&self, _fence_key: &[u8], _keys: Vec<Key>) {}
}

/// Whether a store can take writes now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreHealth {
    #[default]
    Ok,
    /// Writes are refused until space is back (see [`KvError::StorageFull`]).
    Full { free_bytes: u64, reserve_bytes: u64 },
    /// The store stopped (see [`KvError::Failed`]); only reopening it recovers.
    Failed(String),
}

impl StoreHealth {
    /// A sentence for operators (health answers, logs).
    pub fn reason(&self) -> Option<String> {
        match self {
            Self::Ok => None,
            Self::Full { free_bytes, reserve_bytes } => Some(format!(
                "storage full: {free_bytes} bytes free on the data folder's file system, at the reserve of {reserve_bytes} bytes; writes are refused until space is freed"
            )),
            Self::Failed(why) => Some(format!("store failed ({why}); it must be reopened")),
        }
    }
}

/// Result alias of the layer.
pub type KvResult<T> = Result<T, KvError>;

/// Whether acknowledged writes are on stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// A durable batch is acknowledged only after an fsync that covers it (grouped).
    #[default]
    Sync,
    /// Batches are acknowledged once applied; an fsync runs periodically.
    Relaxed,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sync" => Ok(Self::Sync),
            "relaxed" => Ok(Self::Relaxed),
            other => Err(format!("unknown durability {other:?} (expected sync or relaxed)")),
        }
    }
}

/// One mutation in a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Set `key` to `value`.
    Put(Key, Value),
    /// Remove `key` if present.
    Delete(Key),
    /// Remove every key in `[start, end)`.
    DeleteRange { start: Key, end: Key },
}

/// Guards a batch with compare-and-set on one key: the batch applies only if `key` holds
/// `expected` (`None`: absent). Used for actor ownership generations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub key: Key,
    pub expected: Option<Value>,
}

/// An atomic group of mutations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub fence: Option<Fence>,
    pub ops: Vec<WriteOp>,
    /// Must this batch be durable before `write` returns (under [`Durability::Sync`])?
    pub durable: bool,
}

impl WriteBatch {
    /// Payload bytes (keys and values) carried by the batch.
    pub fn payload_bytes(&self) -> u64 {
        self.ops
            .iter()
            .map(|op| match op {
                WriteOp::Put(k, v) => k.len() + v.len(),
                WriteOp::Delete(k) => k.len(),
                WriteOp::DeleteRange { start, end } => start.len() + end.len(),
            })
            .sum::<usize>() as u64
    }
}

/// Counters and memory figures of a store, for metrics and memory reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvStats {
    /// Calls to `get_many` and `scan` (each one round trip for a remote backend).
    pub read_calls: u64,
    /// Calls to `write` (each one round trip for a remote backend).
    pub write_calls: u64,
    /// Physical commits: with group commit, several `write` calls share one.
    pub group_commits: u64,
    /// fsyncs issued (PostgreSQL: commits made with `synchronous_commit` on).
    pub syncs: u64,
    /// Commits whose answer was lost (connection gone at COMMIT) and whose outcome was then
    /// read back by commit id (remote backends only).
    pub lost_answers: u64,
    /// Writes too big for one call, whose puts were uploaded ahead of the transaction that
    /// publishes them (PostgreSQL staging); each also took `staged_uploads` round trips.
    pub staged_writes: u64,
    /// Upload round trips of staged writes (one per chunk of puts), on top of `write_calls`.
    pub staged_uploads: u64,
    /// Block cache bytes in use, and its cap.
    pub cache_bytes: u64,
    pub cache_bytes_max: u64,
    /// Memtable (write buffer) bytes in use, and its cap.
    pub write_buffer_bytes: u64,
    pub write_buffer_bytes_max: u64,
    /// Round-trip latency of reads and writes as seen by callers: cumulative counts per
    /// bucket of [`LATENCY_BUCKETS_S`], and the sum in microseconds.
    pub read_latency: LatencyHistogram,
    pub write_latency: LatencyHistogram,
    /// Bytes the store takes on disk (0 when it has no local files).
    pub disk_bytes: u64,
    /// The file system holding the store: free bytes, size and the write reserve (all 0 when
    /// the store has no local files).
    pub disk: DiskSpace,
    /// Failed `write` calls by kind.
    pub write_errors: WriteErrorCounts,
    /// Background compaction of a log-structured store (all 0 for other backends).
    pub compaction: CompactionStats,
}

/// What a log-structured store's background work is doing: compaction debt shows as tables
/// piling up in level 0 and compactions running back to back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CompactionStats {
    /// Background compactions running now, and finished since the store opened (a
    /// [`KvStore::compact`] call is not counted).
    pub running: u64,
    pub completed: u64,
    /// Time spent compacting since the store opened.
    pub time_ms: u64,
    /// Sealed write buffers waiting to be written out as tables.
    pub flushes_pending: u64,
    /// Tables on disk, and those in level 0 (written out, not yet merged).
    pub tables: u64,
    pub l0_tables: u64,
}

impl KvStats {
    /// Adds `other`'s counters and sizes to these (several shards reported as one store).
    pub fn add(&mut self, other: &KvStats) {
        self.read_calls += other.read_calls;
        self.write_calls += other.write_calls;
        self.group_commits += other.group_commits;
        self.syncs += other.syncs;
        self.lost_answers += other.lost_answers;
        self.staged_writes += other.staged_writes;
        self.staged_uploads += other.staged_uploads;
        self.cache_bytes += other.cache_bytes;
        self.cache_bytes_max += other.cache_bytes_max;
        self.write_buffer_bytes += other.write_buffer_bytes;
        self.write_buffer_bytes_max += other.write_buffer_bytes_max;
        for (mine, theirs) in
            [(&mut self.read_latency, &other.read_latency), (&mut self.write_latency, &other.write_latency)]
        {
            for (a, b) in mine.buckets.iter_mut().zip(theirs.buckets) {
                *a += b;
            }
            mine.count += theirs.count;
            mine.sum_micros += theirs.sum_micros;
        }
        self.disk_bytes += other.disk_bytes;
        let (c, o) = (&mut self.compaction, &other.compaction);
        c.running += o.running;
        c.completed += o.completed;
        c.time_ms += o.time_ms;
        c.flushes_pending += o.flushes_pending;
        c.tables += o.tables;
        c.l0_tables += o.l0_tables;
        self.write_errors.storage_full += other.write_errors.storage_full;
        self.write_errors.failed += other.write_errors.failed;
        self.write_errors.fenced += other.write_errors.fenced;
        self.write_errors.other += other.write_errors.other;
    }
}

/// Failed writes by kind, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteErrorCounts {
    /// Refused below the disk reserve ([`KvError::StorageFull`]).
    pub storage_full: u64,
    /// Refused by a stopped store ([`KvError::Failed`]).
    pub failed: u64,
    /// Fenced off by another owner.
    pub fenced: u64,
    /// Any other failure (I/O, closed, injected).
    pub other: u64,
}

impl WriteErrorCounts {
    /// `(kind, count)` pairs, for labelled metrics.
    pub fn by_kind(&self) -> [(&'static str, u64); 4] {
        [
            ("storage_full", self.storage_full),
            ("failed", self.failed),
            ("fenced", self.fenced),
            ("other", self.other),
        ]
    }
}

/// Upper bounds (seconds) of the latency buckets of the store's calls and of wakes (fine below
/// a millisecond, where an embedded read or a wake lands).
pub const LATENCY_BUCKETS_S: [f64; 14] =
    [0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// A cumulative latency histogram snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    pub buckets: [u64; LATENCY_BUCKETS_S.len()],
    pub count: u64,
    pub sum_micros: u64,
}

impl LatencyHistogram {
    /// The `p` quantile (0..=1) in seconds, interpolated linearly inside its bucket as
    /// Prometheus's `histogram_quantile` does; `None` without observations. Beyond the last
    /// bound it answers that bound (the histogram knows no more).
    pub fn quantile_s(&self, p: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = p.clamp(0.0, 1.0) * self.count as f64;
        let mut below = (0.0, 0u64);
        for (&bound, &cumulative) in LATENCY_BUCKETS_S.iter().zip(&self.buckets) {
            if cumulative as f64 >= rank {
                let (lower, count_below) = below;
                let inside = (cumulative - count_below).max(1) as f64;
                return Some(lower + (bound - lower) * (rank - count_below as f64) / inside);
            }
            below = (bound, cumulative);
        }
        Some(below.0)
    }
}

/// A batch-shaped, ordered key-value store.
///
/// Calls block; callers run them on blocking threads, never on async runtime workers.
pub trait KvStore: Send + Sync + 'static {
    /// Reads many keys in one call; the answer has one entry per key, in order.
    fn get_many(&self, keys: &[Key]) -> KvResult<Vec<Option<Value>>>;
    /// Returns up to `limit` pairs with `start <= key < end`, in key order.
    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> KvResult<Vec<(Key, Value)>>;
    /// Applies `batch` atomically (see the module invariants).
    fn write(&self, batch: WriteBatch) -> KvResult<()>;
    /// Counters and memory figures.
    fn stats(&self) -> KvStats;
    /// Whether writes can succeed now. Backends without local state are always `Ok`.
    fn health(&self) -> StoreHealth {
        StoreHealth::Ok
    }
    /// Makes everything written so far durable (for shutdown; a no-op where every write is).
    fn sync(&self) -> KvResult<()> {
        Ok(())
    }
    /// Room for `bytes` of read-ahead near `key` (pages fetched before SQLite asks for them),
    /// held until the charge drops. `None`: no room now, or this store reads ahead nothing
    /// (local stores answer a page read cheaply; only remote ones gain from it).
    fn read_ahead_charge(&self, _key: &[u8], _bytes: u64) -> Option<Charge> {
        None
    }
    /// Revives a stopped store in place, as a restart would (recovering what reached the
    /// disk). `Ok(false)`: this backend cannot; the process must restart. Callers put every
    /// actor to sleep first: caches built on the stopped store may hold writes it lost.
    fn reopen(&self) -> KvResult<bool> {
        Ok(false)
    }
    /// Writes out buffered writes and merges the store's files into their final layout, so
    /// that the compaction a bulk load left behind is not paid while serving. Blocks until
    /// done (seconds per GB). `Ok(false)`: this backend has nothing to compact.
    fn compact(&self) -> KvResult<bool> {
        Ok(false)
    }
}

/// Call counters shared by the backends.
#[derive(Debug, Default)]
pub(crate) struct CallCounters {
    pub read_calls: AtomicU64,
    pub write_calls: AtomicU64,
    pub group_commits: AtomicU64,
    pub syncs: AtomicU64,
    pub lost_answers: AtomicU64,
    pub staged_writes: AtomicU64,
    pub staged_uploads: AtomicU64,
    read_latency: LatencyCounters,
    write_latency: LatencyCounters,
    write_errors: [AtomicU64; 4],
}

/// A latency histogram being filled (see [`LatencyHistogram`] for its snapshots).
#[derive(Debug, Default)]
pub struct LatencyCounters {
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl LatencyCounters {
    pub fn observe(&self, elapsed: std::time::Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(LATENCY_BUCKETS_S) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencyHistogram {
        LatencyHistogram {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            count: self.count.load(Ordering::Relaxed),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

impl CallCounters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a read and times it.
    pub fn timed_read<T>(&self, call: impl FnOnce() -> T) -> T {
        Self::bump(&self.read_calls);
        let started = std::time::Instant::now();
        let result = call();
        self.read_latency.observe(started.elapsed());
        result
    }

    /// Counts a write and times it.
    pub fn timed_write<T>(&self, call: impl FnOnce() -> T) -> T {
        Self::bump(&self.write_calls);
        let started = std::time::Instant::now();
        let result = call();
        self.write_latency.observe(started.elapsed());
        result
    }

    /// Counts a failed write by kind (in the order of [`WriteErrorCounts::by_kind`]).
    pub fn count_write_error(&self, error: &KvError) {
        let kind = match error {
            KvError::StorageFull { .. } => 0,
            KvError::Failed(_) => 1,
            KvError::Fenced => 2,
            _ => 3,
        };
        Self::bump(&self.write_errors[kind]);
    }

    pub fn fill(&self, stats: &mut KvStats) {
        let errors = |i: usize| self.write_errors[i].load(Ordering::Relaxed);
        stats.write_errors = WriteErrorCounts {
            storage_full: errors(0),
            failed: errors(1),
            fenced: errors(2),
            other: errors(3),
        };
        stats.read_latency = self.read_latency.snapshot();
        stats.write_latency = self.write_latency.snapshot();
        stats.read_calls = self.read_calls.load(Ordering::Relaxed);
        stats.write_calls = self.write_calls.load(Ordering::Relaxed);
        stats.group_commits = self.group_commits.load(Ordering::Relaxed);
        stats.syncs = self.syncs.load(Ordering::Relaxed);
        stats.lost_answers = self.lost_answers.load(Ordering::Relaxed);
        stats.staged_writes = self.staged_writes.load(Ordering::Relaxed);
        stats.staged_uploads = self.staged_uploads.load(Ordering::Relaxed);
    }
}

impl<S: KvStore + ?Sized> KvStore for std::sync::Arc<S> {
    fn get_many(&self, keys: &[Key]) -> KvResult<Vec<Option<Value>>> {
        (**self).get_many(keys)
    }
    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> KvResult<Vec<(Key, Value)>> {
        (**self).scan(start, end, limit)
    }
    fn write(&self, batch: WriteBatch) -> KvResult<()> {
        (**self).write(batch)
    }
    fn stats(&self) -> KvStats {
        (**self).stats()
    }
    fn health(&self) -> StoreHealth {
        (**self).health()
    }
    fn sync(&self) -> KvResult<()> {
        (**self).sync()
    }
    fn reopen(&self) -> KvResult<bool> {
        (**self).reopen()
    }
    fn read_ahead_charge(&self, key: &[u8], bytes: u64) -> Option<Charge> {
        (**self).read_ahead_charge(key, bytes)
    }
    fn compact(&self) -> KvResult<bool> {
        (**self).compact()
    }
}

#[cfg(test)]
mod tests;
