//! Per-actor state shared by an actor's open files and its `Database` handle.
//!
//! All store writes of an actor go through [`ActorFiles::write`], which fences them: the first
//! write of this owner claims the actor by bumping its generation (compare-and-set on the
//! generation key), every later write requires the generation to be unchanged. A store failure
//! marks the actor broken; its connection must be reopened, which re-reads the store (and rolls
//! back a hot journal) instead of trusting buffers that may be half written.
//!
//! Deleting an actor removes both files' metadata in one durable batch (the commit point: no
//! file exists any more), then their chunks in small batches. Chunks without metadata are
//! therefore leftovers of a delete; an actor that has a generation but no file metadata may
//! hold some, and [`ActorFiles::purge_file_keys`] removes them before the actor is used again,
//! so a re-created database never sees stale pages.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::file::KvFile;
use super::layout::{self, ChunkIndex, FileMeta, FileTag, FormatError, Generation};
use crate::actor_id::ActorId;
use crate::kv::{
    Charge, Claim, Claims, Fence, KvError, KvStore, NodeAddress, Preload, Preloaded, WriteBatch, WriteOp,
};

/// A claim reads a main database of at most this many bytes whole, in its round trip...
const PRELOAD_WHOLE_BYTES: u64 = 2 << 20;
/// ... and the first this many pages of a bigger one (the schema and the first b-tree pages).
const PRELOAD_FIRST_CHUNKS: u32 = 16;
/// Most pages of a big database an actor leaves as hints for its next wake (1 MiB): the
/// first ones it read from the store beyond the first pages.
const HINT_CHUNKS_MAX: usize = 256;
/// Most bytes of pages read ahead (at the wake or by sequential reads) one actor holds; the
/// claim's whole-database read ahead fits.
const READ_AHEAD_HELD_BYTES_MAX: u64 = PRELOAD_WHOLE_BYTES + (1 << 20);

/// Store round trips made by actors in this process (every `Storage`), for `/metrics`.
static ROUND_TRIPS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Store round trips made by actors: what a wake costs (the claim or first read, and every
/// store call of the first statement after it) and what a durable commit costs (its write
/// and the non-durable writes before it in the same transaction).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RoundTrips {
    pub wakes: u64,
    pub wake_calls: u64,
    pub commits: u64,
    pub commit_calls: u64,
}

impl RoundTrips {
    /// The counters so far.
    pub fn now() -> Self {
        let read = |i: usize| ROUND_TRIPS[i].load(Ordering::Relaxed);
        Self { wakes: read(0), wake_calls: read(1), commits: read(2), commit_calls: read(3) }
    }

    pub fn per_wake(&self) -> f64 {
        self.wake_calls as f64 / self.wakes.max(1) as f64
    }

    pub fn per_commit(&self) -> f64 {
        self.commit_calls as f64 / self.commits.max(1) as f64
    }
}

/// Why the VFS failed an I/O call: the `Database` reads it to give a typed error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    Store(KvError),
    Format(FormatError),
    TransactionTooLarge {
        bytes_max: u64,
    },
    Poisoned,
    /// Another live node owns the actor (a shared store's claim said so).
    Elsewhere(NodeAddress),
}

#[derive(Debug)]
struct Ownership {
    /// The generation stored when we last looked (or wrote).
    stored: Option<Generation>,
    /// Did this owner's first write bump it yet?
    claimed: bool,
    /// Ops that ride along with the first write (removal of a stale journal).
    cleanup: Vec<WriteOp>,
}

/// Shared state of one attached actor.
pub(crate) struct ActorFiles {
    pub id: ActorId,
    /// The random token of this attach's file names (see `backend`).
    pub file_token: String,
    pub store: Arc<dyn KvStore>,
    ownership: Mutex<Ownership>,
    /// Main database metadata read when the actor was attached.
    pub main_meta: Option<FileMeta>,
    journal_exists: AtomicBool,
    /// The open rollback journal, whose buffered writes must reach the store before any write
    /// of the main file (see [`ActorFiles::flush_journal`]).
    open_journal: Mutex<std::sync::Weak<Mutex<KvFile>>>,
    /// A generation but no file metadata: an interrupted delete may have left chunks.
    may_hold_leftovers: bool,
    /// Main-file chunks read ahead by the claim, until the first statement ends or a write.
    preloaded: Mutex<Preloaded>,
    failure: Mutex<Option<Failure>>,
    broken: AtomicBool,
    poisoned: AtomicBool,
    /// Store calls since the attach, until its first statement ends (then `u64::MAX`).
    wake_calls: AtomicU64,
    /// Writes since the last durable one (the current transaction's so far).
    pending_writes: AtomicU64,
    /// Set when the store is shared (a cluster): where hints are left at sleep.
    claims: Option<Arc<dyn Claims>>,
    /// Main-file chunks read while attached that the wake did not read ahead (at most
    /// [`HINT_CHUNKS_MAX`], first come), and whether the wake read hints at all.
    hints: Mutex<Hints>,
}

#[derive(Debug, Default)]
struct Hints {
    /// Chunks the wake read ahead beyond the first pages (the hints it found).
    found: Vec<u64>,
    /// Chunks read since that were neither (new hints).
    read: Vec<u64>,
}

impl std::fmt::Debug for ActorFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorFiles").field("id", &self.id).finish_non_exhaustive()
    }
}

impl ActorFiles {
    /// Reads the actor's generation and file metadata in one store call. With `claims` (a
    /// store shared by several nodes) that call claims the actor for this node first: the
    /// generation read is then the claimed one, which every write is fenced on as is.
    pub fn load(
        id: ActorId,
        file_token: String,
        store: Arc<dyn KvStore>,
        claims: Option<&Arc<dyn Claims>>,
    ) -> Result<Self, Failure> {
        let gen_key = layout::generation_key(&id);
        let keys = layout::open_keys(&id);
        let (values, claimed_fresh, preloaded) = match claims {
            None => (store.get_many(&keys).map_err(Failure::Store)?, None, Preloaded::default()),
            Some(claims) => match claims.claim(&gen_key, &keys, &preload_of(&id)).map_err(Failure::Store)? {
                Claim::Mine { values, fresh, preloaded } => (values, Some(fresh), preloaded),
                Claim::Elsewhere(owner) => return Err(Failure::Elsewhere(owner)),
            },
        };
        let mut values = values.into_iter();
        let mut next = || values.next().expect("one answer per key");
        let stored = next().map(|v| Generation::decode(&v)).transpose().map_err(Failure::Format)?;
        let main_meta = next().map(|v| FileMeta::decode(&v)).transpose().map_err(Failure::Format)?;
        let journal_meta = next();
        // SQLite treats a journal whose first byte is zero as not hot and ignores it (it was
        // interrupted before its header was written). Reporting it absent saves SQLite two
        // store reads per transaction; its keys go with this owner's first write.
        // An unreadable first chunk counts as hot: SQLite then reads it and the error surfaces.
        let journal_hot = next().is_some_and(|value| {
            layout::decode_chunk(&value).map_or(true, |chunk| chunk.first().is_some_and(|b| *b != 0))
        });
        let mut cleanup = Vec::new();
        if journal_meta.is_some() && !journal_hot {
            let (start, end) = layout::file_range(&id, FileTag::Journal);
            cleanup.push(WriteOp::DeleteRange { start, end });
        }
        let had_generation = claimed_fresh.map_or(stored.is_some(), |fresh| !fresh);
        let may_hold_leftovers = had_generation && main_meta.is_none() && journal_meta.is_none();
        // A claim bumped the generation already; writes keep it (no bump of their own).
        let claimed = claimed_fresh.is_some();
        let found = hinted_chunks(&id, &preloaded);
        Ok(Self {
            id,
            file_token,
            store,
            ownership: Mutex::new(Ownership { stored, claimed, cleanup }),
            main_meta,
            journal_exists: AtomicBool::new(journal_meta.is_some() && journal_hot),
            open_journal: Mutex::new(std::sync::Weak::new()),
            may_hold_leftovers,
            preloaded: Mutex::new(preloaded),
            failure: Mutex::new(None),
            broken: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            wake_calls: AtomicU64::new(1),
            pending_writes: AtomicU64::new(0),
            hints: Mutex::new(Hints { found, read: Vec::new() }),
            claims: claims.cloned(),
        })
    }

    /// The value of `key` if the claim read it ahead. Kept (not taken) until the first
    /// statement ends: opening reads the header page, and the statement reads it again.
    pub fn preloaded(&self, key: &[u8]) -> Option<Vec<u8>> {
        let preloaded = self.preloaded.lock();
        let at = preloaded.pairs.binary_search_by(|(k, _)| k.as_slice().cmp(key)).ok()?;
        Some(preloaded.pairs[at].1.clone())
    }

    /// Notes that main-file chunk `index` was read (from the store or from what the wake read
    /// ahead), as a hint for the next wake.
    pub fn note_read(&self, index: ChunkIndex) {
        if self.claims.is_none() || index.0 < u64::from(PRELOAD_FIRST_CHUNKS) {
            return;
        }
        let mut hints = self.hints.lock();
        if hints.read.len() < HINT_CHUNKS_MAX && !hints.read.contains(&index.0) {
            hints.read.push(index.0);
        }
    }

    /// Counts a store call for the wake's round trips while its first statement runs.
    fn count_call(&self) {
        let _ = self.wake_calls.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1));
    }

    /// Ends a statement: what was read ahead is dropped, and the first one's store calls are
    /// what the wake cost.
    pub fn statement_done(&self) {
        self.drop_preloaded();
        let calls = self.wake_calls.swap(u64::MAX, Ordering::Relaxed);
        if calls != u64::MAX {
            ROUND_TRIPS[0].fetch_add(1, Ordering::Relaxed);
            ROUND_TRIPS[1].fetch_add(calls, Ordering::Relaxed);
        }
    }

    /// Keeps chunks a sequential read fetched ahead (charged by `charge`) for this statement.
    /// Past [`READ_AHEAD_HELD_BYTES_MAX`] the older ones go first: a scan has passed them.
    pub fn add_read_ahead(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>, charge: Charge) {
        let mut preloaded = self.preloaded.lock();
        if preloaded.charged_bytes() + charge.bytes() > READ_AHEAD_HELD_BYTES_MAX {
            *preloaded = Preloaded::default();
        }
        preloaded.extend(pairs, charge);
    }

    /// Forgets what was read ahead (and gives its bytes back to the store's cap).
    pub fn drop_preloaded(&self) {
        let mut preloaded = self.preloaded.lock();
        if !preloaded.pairs.is_empty() || preloaded.charged_bytes() > 0 {
            *preloaded = Preloaded::default();
        }
    }

    /// Applies `ops` as one fenced batch.
    pub fn write(&self, mut ops: Vec<WriteOp>, durable: bool) -> Result<(), Failure> {
        self.check_usable()?;
        // Pages read ahead may be older than what this write stores.
        self.drop_preloaded();
        let mut ownership = self.ownership.lock();
        let gen_key = layout::generation_key(&self.id);
        let expected = ownership.stored.map(Generation::encode);
        ops.splice(0..0, ownership.cleanup.iter().cloned());
        let next = if ownership.claimed {
            ownership.stored
        } else {
            // A stored generation at u64::MAX (only a corrupt store holds one) has no successor:
            // wrapping to 0 would undo the fencing.
            let next = match ownership.stored {
                None => Generation(1),
                Some(g) => Generation(
                    g.0.checked_add(1)
                        .ok_or(Failure::Format(FormatError("the ownership generation is at its maximum")))?,
                ),
            };
            ops.push(WriteOp::Put(gen_key.clone(), next.encode()));
            Some(next)
        };
        let batch = WriteBatch { fence: Some(Fence { key: gen_key, expected }), ops, durable };
        self.count_call();
        let pending = self.pending_writes.fetch_add(1, Ordering::Relaxed) + 1;
        if durable {
            self.pending_writes.store(0, Ordering::Relaxed);
            ROUND_TRIPS[2].fetch_add(1, Ordering::Relaxed);
            ROUND_TRIPS[3].fetch_add(pending, Ordering::Relaxed);
        }
        match self.store.write(batch) {
            Ok(()) => {
                ownership.stored = next;
                ownership.claimed = true;
                ownership.cleanup.clear();
                Ok(())
            }
            Err(e) => Err(self.fail(Failure::Store(e))),
        }
    }

    /// Might chunks of deleted files remain (see the module docs)?
    pub fn may_hold_leftovers(&self) -> bool {
        self.may_hold_leftovers
    }

    /// Removes every key of both files in batches of at most `keys_per_batch` point deletes,
    /// each fenced like any write of this owner. Only for an actor whose files' metadata is
    /// gone: the keys are leftovers nobody reads, so the batches need not be atomic together,
    /// nor durable (a crash leaves leftovers, which the next attach removes). Returns how many
    /// keys were removed.
    pub fn purge_file_keys(&self, keys_per_batch: usize) -> Result<u64, Failure> {
        let (mut from, end) = layout::files_range(&self.id);
        let mut removed = 0;
        loop {
            self.check_usable()?;
            self.count_call();
            let found = self.store.scan(&from, &end, keys_per_batch.max(1));
            let found = found.map_err(|e| self.fail(Failure::Store(e)))?;
            let Some((last, _)) = found.last() else { return Ok(removed) };
            // Continue after the last key instead of rescanning the fresh tombstones.
            from = [last.as_slice(), &[0]].concat();
            removed += found.len() as u64;
            let ops = found.into_iter().map(|(key, _)| WriteOp::Delete(key)).collect();
            self.write(ops, false)?;
        }
    }

    /// Reads values through the store, recording a failure.
    pub fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, Failure> {
        self.check_usable()?;
        self.count_call();
        self.store.get_many(keys).map_err(|e| self.fail(Failure::Store(e)))
    }

    fn check_usable(&self) -> Result<(), Failure> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(Failure::Poisoned);
        }
        if self.broken.load(Ordering::SeqCst) {
            let failure = self.failure.lock().clone();
            return Err(failure.unwrap_or(Failure::Store(KvError::Closed)));
        }
        Ok(())
    }

    /// Records `failure` (store failures also break the actor) and hands it back.
    pub fn fail(&self, failure: Failure) -> Failure {
        if matches!(failure, Failure::Store(_) | Failure::Format(_)) {
            self.broken.store(true, Ordering::SeqCst);
        }
        if failure == Failure::Poisoned {
            self.poisoned.store(true, Ordering::SeqCst);
        }
        *self.failure.lock() = Some(failure.clone());
        failure
    }

    /// The failure behind the most recent I/O error, cleared by reading it.
    pub fn take_failure(&self) -> Option<Failure> {
        self.failure.lock().take()
    }

    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    pub fn journal_exists(&self) -> bool {
        self.journal_exists.load(Ordering::SeqCst)
    }

    /// Remembers the journal file just opened (see [`ActorFiles::flush_journal`]).
    pub fn set_open_journal(&self, journal: &Arc<Mutex<KvFile>>) {
        *self.open_journal.lock() = Arc::downgrade(journal);
    }

    /// Sends the open journal's buffered writes to the store, ahead of a main-file write.
    ///
    /// Why: when a batch-atomic commit falls back to the journal (the transaction outgrew
    /// `batch_bytes_max`), SQLite copies its in-memory journal to the journal file and then
    /// writes the database pages without syncing the journal first. A store applies batches
    /// in order and a sync covers every earlier batch, so putting the journal's bytes in the
    /// store before the main file's makes any durable point that holds new pages hold the
    /// journal that can undo them too. Left in the journal's buffer, they could be missing
    /// after a crash that kept the pages: a torn database.
    pub fn flush_journal(&self) -> Result<(), Failure> {
        let journal = self.open_journal.lock().upgrade();
        match journal {
            Some(journal) => journal.lock().flush_buffer(),
            None => Ok(()),
        }
    }

    pub fn set_journal_exists(&self, exists: bool) {
        self.journal_exists.store(exists, Ordering::SeqCst);
    }
}

/// What a claim of `id` reads ahead: the main database's chunks (see [`PRELOAD_WHOLE_BYTES`]).
/// The chunks past the first pages that a claim read ahead: the hints it found.
fn hinted_chunks(id: &ActorId, preloaded: &Preloaded) -> Vec<u64> {
    let (start, end) = layout::chunk_range(id, FileTag::Main, ChunkIndex(u64::from(PRELOAD_FIRST_CHUNKS)));
    preloaded
        .pairs
        .iter()
        .filter(|(k, _)| *k >= start && *k < end)
        .filter_map(|(k, _)| Some(u64::from_be_bytes(k[k.len().checked_sub(8)?..].try_into().ok()?)))
        .collect()
}

impl Drop for ActorFiles {
    /// Leaves the chunks this attach read as hints for the next wake, unless they are what
    /// the wake found already (or the database is small enough to be read whole).
    fn drop(&mut self) {
        let Some(claims) = &self.claims else { return };
        let big = self.main_meta.is_some_and(|m| m.size_bytes > PRELOAD_WHOLE_BYTES);
        let hints = std::mem::take(&mut *self.hints.lock());
        let mut read = hints.read.clone();
        read.sort_unstable();
        let mut found = hints.found;
        found.sort_unstable();
        if !big || hints.read.is_empty() || read == found {
            return;
        }
        let keys =
            hints.read.iter().map(|i| layout::chunk_key(&self.id, FileTag::Main, ChunkIndex(*i))).collect();
        claims.remember_hints(&layout::generation_key(&self.id), keys);
    }
}

fn preload_of(id: &ActorId) -> Preload {
    let (start, end) = layout::chunk_range(id, FileTag::Main, ChunkIndex(0));
    let chunk_bytes = layout::CHUNK_BYTES as u64;
    Preload {
        meta_key: layout::meta_key(id, FileTag::Main),
        start,
        end,
        chunk_bytes,
        whole_chunks: (PRELOAD_WHOLE_BYTES / chunk_bytes) as u32,
        first_chunks: PRELOAD_FIRST_CHUNKS,
        hint_chunks: HINT_CHUNKS_MAX as u32,
    }
}
