//! The embedded default backend: fjall (a pure-Rust LSM tree) in one data folder.
//!
//! Writes go through one committer thread (group commit): it drains every batch waiting in the
//! bounded queue, checks each batch's fence against the store plus the batches already accepted
//! in the same group, and applies the accepted ones as one fjall batch followed by one fsync.
//! A writer that finds the queue empty and nobody committing commits its own batch on its own
//! thread instead (under [`Durability::Sync`]): a lone writer then pays no handoff to the
//! committer and back. Whoever commits holds the commit lock, so there is one writer at a time
//! and a fence check and the write it guards cannot be interleaved with another write; the
//! committer takes the lock before it gathers its group, so batches that queued behind a lone
//! writer's commit still share one fsync. Reads go straight to fjall from the caller's thread.
//!
//! Range deletes are resolved in the writer's thread, not in the committer: `write` turns each
//! `DeleteRange` into point deletes of the keys the range holds at that moment, so one big
//! range never makes the committer scan while every other writer waits. The committer only
//! applies the range to keys written earlier in the same group. A key that another batch puts
//! into the range between the two is therefore not deleted; Roost's range deletes are fenced on
//! the actor's generation and cover only that actor's keys, so such a batch would have changed
//! the fence and the range delete is refused instead.
//!
//! Fail-stop: a failed journal write or sync leaves applied data whose survival is unknown (and
//! fjall poisons itself for writes, while its reads would still show that data). The store then
//! stops: the group's writers and every later call get [`KvError::Failed`]. Reopening the folder
//! (a restart, or [`KvStore::reopen`] in place) recovers whatever reached the disk, batch by
//! batch.
//!
//! Disk full: batches that put data are refused with [`KvError::StorageFull`] (changing
//! nothing, not stopping the store) while the file system has less than the reserve free, so
//! fjall keeps room to flush and compact and writes resume once space is back (`kv::disk`).
//! A real ENOSPC past the reserve is a failed journal write or sync like any other: fail-stop.
//!
//! Memory: the block cache is capped by `cache_bytes_max` and the memtables by
//! `write_buffer_bytes_max` / `memtable_bytes_max`; both are reported in [`KvStats`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::disk::{DiskGuard, DEFAULT_RESERVE_BYTES};
use super::{
    CallCounters, Durability, Key, KvError, KvResult, KvStats, KvStore, StoreHealth, Value, WriteBatch,
    WriteOp,
};

/// Configuration of the embedded store. Every cache and queue has a cap.
#[derive(Debug, Clone)]
pub struct FjallConfig {
    /// The data folder (created if missing); the store lives in its `fjall/` subfolder.
    pub path: PathBuf,
    /// Block cache cap.
    pub cache_bytes_max: u64,
    /// Cap on all memtables together (at least 1 MiB).
    pub write_buffer_bytes_max: u64,
    /// Size at which one memtable is sealed and flushed.
    pub memtable_bytes_max: u64,
    /// Durability of acknowledged durable batches.
    pub durability: Durability,
    /// Under [`Durability::Relaxed`], how often written data is fsynced.
    pub relaxed_sync_interval_ms: u64,
    /// Batches waiting for the committer; writers block when it is full.
    pub commit_queue_max: usize,
    /// Most batches merged into one physical commit.
    pub group_batches_max: usize,
    /// Batches that put data are refused with [`KvError::StorageFull`] while the file system has
    /// less than this free (capped at a quarter of the file system; see `kv::disk`).
    pub disk_reserve_bytes: u64,
}

impl FjallConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cache_bytes_max: 16 << 20,
            write_buffer_bytes_max: 32 << 20,
            memtable_bytes_max: 8 << 20,
            durability: Durability::Sync,
            relaxed_sync_interval_ms: 100,
            commit_queue_max: 1024,
            group_batches_max: 512,
            disk_reserve_bytes: DEFAULT_RESERVE_BYTES,
        }
    }
}

struct Shared {
    db: Database,
    data: Keyspace,
    /// Shared with the store's later instances, so that counters never go back.
    counters: Arc<CallCounters>,
    /// Set once, by the first failure that makes the store's state unknown (fail-stop).
    failed: OnceLock<String>,
    /// Held by whoever commits: the committer thread, or a writer committing its batch alone.
    commit: parking_lot::Mutex<()>,
    /// Test hook: the next sync fails as if the disk had refused it.
    #[cfg(test)]
    fail_next_sync: std::sync::atomic::AtomicBool,
    /// Test hook: while a test holds it, the committer waits after taking a group's first
    /// batch, so the batches queued meanwhile deterministically join that group.
    #[cfg(test)]
    pause: parking_lot::Mutex<()>,
}

impl Shared {
    /// Errors once the store has failed.
    fn check_running(&self) -> KvResult<()> {
        match self.failed.get() {
            Some(why) => Err(KvError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Stops the store for good (the first reason is kept) and returns the error to report.
    fn fail_stop(&self, what: &str, err: impl std::fmt::Display) -> KvError {
        let why = format!("{what} failed: {err}");
        if self.failed.set(why.clone()).is_ok() {
            tracing::error!(reason = %why, "store stopped: every call fails until it is reopened");
        }
        KvError::Failed(self.failed.get().cloned().unwrap_or(why))
    }

    /// Rewrites each range delete as point deletes of the keys in the range now, followed by
    /// the range itself (which the committer applies to the group's pending keys only).
    fn expand_ranges(&self, batch: WriteBatch) -> KvResult<WriteBatch> {
        if !batch.ops.iter().any(|op| matches!(op, WriteOp::DeleteRange { .. })) {
            return Ok(batch);
        }
        let mut ops = Vec::with_capacity(batch.ops.len());
        for op in batch.ops {
            if let WriteOp::DeleteRange { start, end } = &op {
                if start < end {
                    for guard in self.data.range(start.as_slice()..end.as_slice()) {
                        ops.push(WriteOp::Delete(guard.key().map_err(io)?.to_vec()));
                    }
                }
            }
            ops.push(op);
        }
        Ok(WriteBatch { ops, ..batch })
    }
}

struct Request {
    batch: WriteBatch,
    reply: Sender<KvResult<()>>,
}

/// The fjall-backed store. Dropping it stops the committer after it drained the queue, then
/// syncs the journal.
///
/// A stopped store can be reopened in place ([`KvStore::reopen`]): the failed instance is
/// closed (releasing the folder's lock) and the folder opened again, which recovers what
/// reached the disk, exactly as a restart would. Calls hold a read lock on the instance for
/// their duration, so the swap waits for them (calls on a stopped instance return at once).
pub struct FjallStore {
    config: FjallConfig,
    counters: Arc<CallCounters>,
    /// Refuses writes below the disk reserve, before fjall could hit a full disk.
    disk: DiskGuard,
    /// `None` only after a reopen could not open the folder again.
    instance: parking_lot::RwLock<Option<Instance>>,
}

/// One open fjall database with its committer thread.
struct Instance {
    shared: Arc<Shared>,
    /// Under relaxed durability every batch goes through the committer, which owns the timer
    /// of the periodic sync.
    relaxed: bool,
    queue: Option<Sender<Request>>,
    committer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore").finish_non_exhaustive()
    }
}

fn io(err: impl std::fmt::Display) -> KvError {
    KvError::Io(err.to_string())
}

impl FjallStore {
    /// Opens (or creates) the store in `config.path`; fjall's files live in its `fjall/`.
    pub fn open(config: FjallConfig) -> KvResult<Self> {
        assert!(config.commit_queue_max > 0 && config.group_batches_max > 0);
        let counters = Arc::new(CallCounters::default());
        let instance = Instance::start(&config, counters.clone())?;
        Ok(Self {
            disk: DiskGuard::new(&config.path, config.disk_reserve_bytes),
            config,
            counters,
            instance: parking_lot::RwLock::new(Some(instance)),
        })
    }

    /// Changes the disk reserve (see [`FjallConfig::disk_reserve_bytes`]).
    pub fn set_disk_reserve_bytes(&self, reserve_bytes: u64) {
        self.disk.set_reserve_bytes(reserve_bytes);
    }

    /// Test hook: makes the next sync fail after its group was applied.
    #[cfg(test)]
    pub(crate) fn fail_next_sync(&self) {
        let _ = self.with(|i| {
            i.shared.fail_next_sync.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        });
    }

    /// Test hook: runs `body` while the committer is held before it gathers its next group
    /// (see `Shared::pause`).
    #[cfg(test)]
    pub(crate) fn with_committer_paused<T>(&self, body: impl FnOnce() -> T) -> T {
        let shared = self.with(|i| Ok(i.shared.clone())).expect("store is open");
        let _paused = shared.pause.lock();
        body()
    }

    /// Test hook: batches waiting in the commit queue.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.with(|i| Ok(i.queue.as_ref().map_or(0, Sender::len))).unwrap_or(0)
    }

    /// Runs `call` on the open instance.
    fn with<T>(&self, call: impl FnOnce(&Instance) -> KvResult<T>) -> KvResult<T> {
        match self.instance.read().as_ref() {
            Some(instance) => call(instance),
            None => Err(KvError::Failed(NOT_REOPENED.into())),
        }
    }
}

/// The failure reported after a reopen could not open the folder again.
const NOT_REOPENED: &str = "the store could not be reopened";

impl Instance {
    fn start(config: &FjallConfig, counters: Arc<CallCounters>) -> KvResult<Self> {
        let path = create_once(&config.path)?;
        #[allow(deprecated)] // the only knob that caps all memtables together
        let db = Database::builder(&path)
            .cache_size(config.cache_bytes_max)
            .max_write_buffer_size(Some(config.write_buffer_bytes_max.max(1 << 20)))
            .open()
            .map_err(open_error)?;
        let memtable = config.memtable_bytes_max;
        let data = db
            .keyspace("data", || KeyspaceCreateOptions::default().max_memtable_size(memtable))
            .map_err(io)?;
        let shared = Arc::new(Shared {
            db,
            data,
            counters,
            failed: OnceLock::new(),
            commit: parking_lot::Mutex::new(()),
            #[cfg(test)]
            fail_next_sync: Default::default(),
            #[cfg(test)]
            pause: Default::default(),
        });
        let (tx, rx) = bounded(config.commit_queue_max);
        let committer = Committer { shared: shared.clone(), config: config.clone() };
        let handle = std::thread::Builder::new()
            .name("roost-commit".into())
            .spawn(move || committer.run(rx))
            .map_err(io)?;
        let relaxed = config.durability == Durability::Relaxed;
        Ok(Self { shared, relaxed, queue: Some(tx), committer: Some(handle) })
    }

    fn write(&self, batch: WriteBatch) -> KvResult<()> {
        let batch = self.shared.expand_ranges(batch)?;
        let queue = self.queue.as_ref().ok_or(KvError::Closed)?;
        if !self.relaxed && queue.is_empty() {
            if let Some(result) = self.shared.commit_alone(&batch) {
                return result;
            }
        }
        let (reply, answer) = bounded(1);
        queue.send(Request { batch, reply }).map_err(|_| KvError::Closed)?;
        answer.recv().map_err(|_| KvError::Closed)?
    }
}

/// Translates a failure to open into what the operator must know: another process holds the
/// folder, the folder is not accessible, or its format is not one this version reads.
fn open_error(err: fjall::Error) -> KvError {
    match err {
        fjall::Error::Locked => KvError::InUse,
        fjall::Error::InvalidVersion(version) => {
            KvError::UnknownFormat(version.map_or("unrecognized version marker".into(), |v| format!("{v:?}")))
        }
        fjall::Error::Io(e) => io_open_error(e),
        other => io(other),
    }
}

fn io_open_error(err: std::io::Error) -> KvError {
    match err.kind() {
        std::io::ErrorKind::PermissionDenied
        | std::io::ErrorKind::ReadOnlyFilesystem
        | std::io::ErrorKind::NotADirectory => KvError::Inaccessible(err.to_string()),
        _ => io(err),
    }
}

/// Returns the fjall folder inside `data`, creating it atomically the first time.
///
/// fjall cannot reopen a folder whose creation was interrupted (a kill between its first files
/// and its version file leaves it refusing to open), so a new store is created under a
/// temporary name and renamed into place once complete. Leftovers of an interrupted creation
/// hold no data (nothing is written before `open` returns) and are removed.
fn create_once(data: &Path) -> KvResult<PathBuf> {
    let path = data.join("fjall");
    if path.exists() {
        return Ok(path);
    }
    let staging = data.join("fjall.creating");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io_open_error)?;
    }
    std::fs::create_dir_all(&staging).map_err(io_open_error)?;
    drop(Database::builder(&staging).open().map_err(open_error)?);
    std::fs::rename(&staging, &path).map_err(io_open_error)?;
    std::fs::File::open(data).and_then(|dir| dir.sync_all()).map_err(io_open_error)?;
    Ok(path)
}

impl Drop for Instance {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(handle) = self.committer.take() {
            let _ = handle.join();
        }
        // After a failure the state on disk is whatever recovery will find; syncing more of it
        // now could make a batch durable whose writer was told it failed.
        if self.shared.failed.get().is_some() {
            return;
        }
        if let Err(e) = self.shared.db.persist(PersistMode::SyncAll) {
            tracing::error!(error = %e, "final sync of the store failed");
        }
    }
}

impl KvStore for FjallStore {
    fn get_many(&self, keys: &[Key]) -> KvResult<Vec<Option<Value>>> {
        self.counters.timed_read(|| {
            self.with(|i| {
                i.shared.check_running()?;
                keys.iter().map(|k| i.shared.data.get(k).map(|v| v.map(|s| s.to_vec())).map_err(io)).collect()
            })
        })
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> KvResult<Vec<(Key, Value)>> {
        self.counters.timed_read(|| {
            self.with(|i| {
                i.shared.check_running()?;
                if start >= end {
                    return Ok(Vec::new());
                }
                let mut out = Vec::new();
                for guard in i.shared.data.range(start..end).take(limit) {
                    let (k, v) = guard.into_inner().map_err(io)?;
                    out.push((k.to_vec(), v.to_vec()));
                }
                Ok(out)
            })
        })
    }

    fn write(&self, batch: WriteBatch) -> KvResult<()> {
        let result = self.counters.timed_write(|| {
            self.with(|i| {
                i.shared.check_running()?;
                // Batches that only delete pass: they are how an operator frees space.
                if batch.ops.iter().any(|op| matches!(op, WriteOp::Put(..))) {
                    self.disk.admit(batch.payload_bytes())?;
                }
                i.write(batch)
            })
        });
        if let Err(e) = &result {
            self.counters.count_write_error(e);
        }
        result
    }

    fn sync(&self) -> KvResult<()> {
        self.with(|i| {
            i.shared.check_running()?;
            i.shared.db.persist(PersistMode::SyncAll).map_err(|e| i.shared.fail_stop("sync", e))
        })
    }

    fn health(&self) -> StoreHealth {
        let failed = self.with(|i| i.shared.check_running());
        if let Err(e) = failed {
            return StoreHealth::Failed(match e {
                KvError::Failed(why) => why,
                other => other.to_string(),
            });
        }
        if self.disk.is_full() {
            let space = self.disk.space();
            return StoreHealth::Full { free_bytes: space.free_bytes, reserve_bytes: space.reserve_bytes };
        }
        StoreHealth::Ok
    }

    /// Seals the write buffer, waits for every sealed one to be written out, then merges every
    /// table into the last level (fjall's major compaction). Writes go on meanwhile; reads pause
    /// only while each merge's result is installed.
    fn compact(&self) -> KvResult<bool> {
        self.with(|i| {
            i.shared.check_running()?;
            i.shared.data.rotate_memtable_and_wait().map_err(io)?;
            // `rotate_memtable_and_wait` waits only when the active buffer held writes: buffers
            // sealed earlier (by size) may still be flushing, and would land in level 0 after
            // the merge.
            while i.shared.data.sealed_memtable_count() > 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
            i.shared.data.major_compact().map_err(io)?;
            Ok(true)
        })
    }

    /// Closes a stopped instance and opens the folder again (a restart in place).
    fn reopen(&self) -> KvResult<bool> {
        let mut instance = self.instance.write();
        if instance.as_ref().is_some_and(|i| i.shared.failed.get().is_none()) {
            return Ok(true);
        }
        // The old instance must be gone (its lock released) before the folder is opened again.
        drop(instance.take());
        *instance = Some(Instance::start(&self.config, self.counters.clone())?);
        tracing::info!("store reopened: recovered what reached the disk");
        Ok(true)
    }

    fn stats(&self) -> KvStats {
        let mut stats = KvStats {
            write_buffer_bytes_max: self.config.write_buffer_bytes_max.max(1 << 20),
            disk: self.disk.space(),
            ..KvStats::default()
        };
        let _ = self.with(|i| {
            stats.cache_bytes = i.shared.db.cache_size();
            stats.cache_bytes_max = i.shared.db.cache_capacity();
            stats.write_buffer_bytes = i.shared.db.write_buffer_size();
            stats.disk_bytes = i.shared.db.disk_space().unwrap_or(0);
            stats.compaction = i.shared.compaction_stats();
            Ok(())
        });
        self.counters.fill(&mut stats);
        stats
    }
}

/// The single writer thread.
struct Committer {
    shared: Arc<Shared>,
    config: FjallConfig,
}

/// Keys changed by the batches accepted so far in one group: `None` is a deletion.
type Overlay = BTreeMap<Key, Option<Value>>;

impl Committer {
    fn run(self, queue: Receiver<Request>) {
        let relaxed = self.config.durability == Durability::Relaxed;
        let interval = Duration::from_millis(self.config.relaxed_sync_interval_ms.max(1));
        let mut unsynced_since: Option<Instant> = None;
        loop {
            let first = match unsynced_since {
                Some(since) => {
                    let wait = interval.saturating_sub(since.elapsed());
                    match queue.recv_timeout(wait) {
                        Ok(request) => Some(request),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                None => match queue.recv() {
                    Ok(request) => Some(request),
                    Err(_) => return,
                },
            };
            if let Some(first) = first {
                #[cfg(test)]
                drop(self.shared.pause.lock());
                let committing = self.shared.commit.lock();
                let mut group = vec![first];
                while group.len() < self.config.group_batches_max {
                    match queue.try_recv() {
                        Ok(request) => group.push(request),
                        Err(_) => break,
                    }
                }
                let batches = group.iter().map(|request| &request.batch);
                let results = self.shared.commit_group(batches, relaxed);
                drop(committing);
                for (request, result) in group.iter().zip(results) {
                    let _ = request.reply.send(result);
                }
                if relaxed && unsynced_since.is_none() {
                    unsynced_since = Some(Instant::now());
                }
            }
            if unsynced_since.is_some_and(|since| since.elapsed() >= interval) {
                // A failure stops the store (logged by `sync`): acknowledged relaxed batches
                // may be lost, and later reads must not show them as if they were safe.
                let _committing = self.shared.commit.lock();
                let _ = self.shared.sync();
                unsynced_since = None;
            }
        }
    }
}

impl Shared {
    fn compaction_stats(&self) -> super::CompactionStats {
        super::CompactionStats {
            running: self.db.active_compactions() as u64,
            completed: self.db.compactions_completed() as u64,
            time_ms: self.db.time_compacting().as_millis() as u64,
            flushes_pending: self.db.outstanding_flushes() as u64,
            tables: self.data.table_count() as u64,
            l0_tables: self.data.l0_table_count() as u64,
        }
    }
}

/// Committing, by whoever holds the commit lock.
impl Shared {
    /// Commits `batch` on this thread if nobody else is committing (`None` otherwise). The
    /// caller saw the queue empty: a batch that queued meanwhile waits for one commit.
    fn commit_alone(&self, batch: &WriteBatch) -> Option<KvResult<()>> {
        #[cfg(test)]
        let _not_paused = self.pause.try_lock()?;
        let _committing = self.commit.try_lock()?;
        let mut results = self.commit_group(std::iter::once(batch), false);
        Some(results.pop().expect("one outcome per batch"))
    }

    /// Syncs the journal; a failure stops the store (the data it covers is applied already).
    fn sync(&self) -> KvResult<()> {
        self.check_running()?;
        CallCounters::bump(&self.counters.syncs);
        #[cfg(test)]
        if self.fail_next_sync.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(self.fail_stop("sync", "injected by a test"));
        }
        self.db.persist(PersistMode::SyncData).map_err(|e| self.fail_stop("sync", e))
    }

    /// Applies the batches whose fence holds as one fjall batch (synced if one of them is
    /// durable and durability is not relaxed); returns each batch's outcome, in order. The
    /// caller holds the commit lock.
    fn commit_group<'a>(
        &self,
        batches: impl ExactSizeIterator<Item = &'a WriteBatch>,
        relaxed: bool,
    ) -> Vec<KvResult<()>> {
        if let Err(e) = self.check_running() {
            return batches.map(|_| Err(e.clone())).collect();
        }
        let mut overlay = Overlay::new();
        let mut results = Vec::with_capacity(batches.len());
        let mut needs_sync = false;
        for batch in batches {
            let resolved = self.resolve(batch, &mut overlay);
            needs_sync |= resolved.is_ok() && batch.durable && !relaxed;
            results.push(resolved);
        }
        let applied = self.apply(overlay, needs_sync);
        for result in results.iter_mut().filter(|r| r.is_ok()) {
            *result = applied.clone();
        }
        results
    }

    fn apply(&self, overlay: Overlay, sync: bool) -> KvResult<()> {
        if !overlay.is_empty() {
            let mut batch = self.db.batch();
            for (key, value) in overlay {
                match value {
                    Some(v) => batch.insert(&self.data, key, v),
                    None => batch.remove(&self.data, key),
                }
            }
            // fjall may have written part of the group to its journal: its fate is unknown.
            batch.commit().map_err(|e| self.fail_stop("journal write", e))?;
            CallCounters::bump(&self.counters.group_commits);
        }
        if sync {
            self.sync()?;
        }
        Ok(())
    }

    /// Checks the fence and folds the batch's ops into `overlay`. A rejected batch leaves
    /// `overlay` untouched.
    fn resolve(&self, batch: &WriteBatch, overlay: &mut Overlay) -> KvResult<()> {
        if let Some(fence) = &batch.fence {
            let current = match overlay.get(&fence.key) {
                Some(pending) => pending.clone(),
                None => self.data.get(&fence.key).map_err(io)?.map(|s| s.to_vec()),
            };
            if current != fence.expected {
                return Err(KvError::Fenced);
            }
        }
        let mut local = Overlay::new();
        for op in &batch.ops {
            match op {
                WriteOp::Put(k, v) => {
                    local.insert(k.clone(), Some(v.clone()));
                }
                WriteOp::Delete(k) => {
                    local.insert(k.clone(), None);
                }
                WriteOp::DeleteRange { start, end } if start < end => {
                    Self::delete_range(start, end, overlay, &mut local);
                }
                WriteOp::DeleteRange { .. } => {}
            }
        }
        overlay.extend(local);
        Ok(())
    }

    /// Marks the keys in `[start, end)` written earlier in this group or batch deleted. The
    /// keys already in the store were turned into point deletes by the writer's thread
    /// ([`Shared::expand_ranges`]), so this work is bounded by the group, not by the range.
    fn delete_range(start: &[u8], end: &[u8], overlay: &Overlay, local: &mut Overlay) {
        let range = start.to_vec()..end.to_vec();
        let mut doomed: Vec<Key> = overlay.range(range.clone()).map(|(k, _)| k.clone()).collect();
        doomed.extend(local.range(range).map(|(k, _)| k.clone()));
        for key in doomed {
            local.insert(key, None);
        }
    }
}
