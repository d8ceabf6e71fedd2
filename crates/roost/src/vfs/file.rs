//! The files SQLite sees, in safe Rust: the actor's main database and rollback journal stored
//! as chunks in the KV store (scratch files are in `scratch`).
//!
//! Invariants of a [`KvFile`]:
//! - the logical file is: stored chunks below `stale_from` (zeros where absent), overlaid by
//!   `dirty`, cut at `size`;
//! - `dirty` reaches the store only as whole batches that also carry the new size, so the store
//!   always holds some consistent version of the file;
//! - between `begin_atomic` and `commit_atomic` nothing is sent; the commit is one durable batch
//!   (the whole SQLite transaction), a rollback drops the buffer;
//! - outside atomic mode the buffer is flushed when it exceeds `write_buffer_bytes_max` and on
//!   `sync`, which is durable. SQLite orders journal and database syncs, so crash safety of
//!   large transactions comes from SQLite's own rollback journal, stored like any file;
//! - a main-file batch is sent only after the open journal's buffered writes (SQLite's
//!   batch-atomic fallback writes pages without syncing the journal first), so any durable
//!   state holding new pages also holds the journal records that undo them;
//! - the main file changes only while SQLite holds an EXCLUSIVE lock on it (checked in debug
//!   builds; the lock level is tracked, nothing is locked).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::actor::{ActorFiles, Failure};
use super::ffi::{FileBackend, IoError};
use super::layout::{self, chunks_for, ChunkIndex, FileMeta, FileTag, CHUNK_BYTES};
use crate::kv::WriteOp;

/// Named limits of the VFS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VfsLimits {
    /// Dirty bytes buffered per file outside atomic writes before a (non-durable) flush.
    pub write_buffer_bytes_max: u64,
    /// Largest batch-atomic commit; larger transactions go through the journal instead.
    pub batch_bytes_max: u64,
    /// Largest rollback journal, which bounds how many existing pages one transaction may
    /// change; beyond it the statement fails with `TransactionTooLarge`.
    pub journal_bytes_max: u64,
    /// All scratch files (sorts, temp tables, `VACUUM`'s copy, statement journals) together,
    /// on disk or in memory; beyond it the statement fails with `Error::ScratchFull`.
    pub scratch_bytes_max: u64,
    /// Most keys one batch deletes when a deleted actor's pages are removed: such a delete
    /// runs as many small batches, so other actors' commits interleave with it.
    pub range_delete_keys_per_batch: usize,
    /// Largest scratch file kept in memory (only without a scratch folder).
    pub memory_scratch_file_bytes_max: u64,
}

impl Default for VfsLimits {
    fn default() -> Self {
        Self {
            write_buffer_bytes_max: 1 << 20,
            batch_bytes_max: 64 << 20,
            journal_bytes_max: 1 << 30,
            scratch_bytes_max: 4 << 30,
            memory_scratch_file_bytes_max: 64 << 20,
            // 4 MiB of chunk values read per batch; a few milliseconds of committer time.
            range_delete_keys_per_batch: 1024,
        }
    }
}

/// Bytes of the SQLite database header kept in memory: SQLite re-reads its change counter at
/// every transaction start, and this answers that without a store round trip.
const HEADER_BYTES: usize = 100;

/// Most chunks one sequential read fetches ahead (256 KiB), reached by doubling from 4.
const READ_AHEAD_CHUNKS_MAX: u64 = 64;
/// Sequential chunk reads before read-ahead starts (a b-tree descent reads a few pages in
/// any order; a scan reads on and on).
const READ_AHEAD_AFTER_READS: u32 = 2;

type Chunk = Box<[u8]>;

fn zero_chunk() -> Chunk {
    vec![0u8; CHUNK_BYTES].into_boxed_slice()
}

pub(crate) struct KvFile {
    actor: Arc<ActorFiles>,
    tag: FileTag,
    limits: VfsLimits,
    size: u64,
    persisted_size: u64,
    dirty: BTreeMap<ChunkIndex, Chunk>,
    /// Stored chunks from this index on are stale (the file was truncated below them).
    stale_from: Option<ChunkIndex>,
    /// A non-durable flush happened since the last durable one.
    unsynced: bool,
    atomic: Option<Option<[u8; HEADER_BYTES]>>,
    header: Option<[u8; HEADER_BYTES]>,
    /// SQLite's lock level on this file (`SQLITE_LOCK_*`), kept to check that the main file
    /// changes only under an EXCLUSIVE lock.
    lock: std::ffi::c_int,
    /// The chunk right after the last read, and how many reads in a row started there.
    next_read: u64,
    sequential_reads: u32,
}

impl KvFile {
    pub fn new(actor: Arc<ActorFiles>, tag: FileTag, meta: Option<FileMeta>, limits: VfsLimits) -> Self {
        let size = meta.map_or(0, |m| m.size_bytes);
        Self {
            actor,
            tag,
            limits,
            size,
            persisted_size: size,
            dirty: BTreeMap::new(),
            stale_from: None,
            unsynced: false,
            atomic: None,
            header: None,
            lock: LOCK_NONE,
            next_read: 0,
            sequential_reads: 0,
        }
    }

    /// How many chunks after `last` a read of `first..=last` should fetch ahead: none until
    /// reads have gone on sequentially for a while, then 4, doubling up to
    /// [`READ_AHEAD_CHUNKS_MAX`]. Only the main file reads ahead (journals are read once,
    /// at recovery).
    fn plan_read_ahead(&mut self, first: ChunkIndex, last: ChunkIndex) -> u64 {
        self.sequential_reads = match first.0 == self.next_read {
            true => self.sequential_reads.saturating_add(1),
            false => 0,
        };
        self.next_read = last.0 + 1;
        if self.tag != FileTag::Main || self.sequential_reads < READ_AHEAD_AFTER_READS {
            return 0;
        }
        let doublings = (self.sequential_reads - READ_AHEAD_AFTER_READS).min(4);
        (4u64 << doublings).min(READ_AHEAD_CHUNKS_MAX)
    }

    /// The file's invariants (module docs), checked in debug builds after each change.
    fn debug_check(&self) {
        debug_assert!(
            self.dirty.keys().all(|i| i.start_offset() < self.size),
            "{:?}: a dirty chunk lies beyond the size {}",
            self.tag,
            self.size
        );
        debug_assert!(
            self.tag == FileTag::Journal || self.lock >= LOCK_EXCLUSIVE,
            "the main file changed without an EXCLUSIVE lock (level {})",
            self.lock
        );
    }

    fn io(&self, failure: Failure, error: IoError) -> IoError {
        if let Failure::TransactionTooLarge { .. } = failure {
            self.actor.fail(failure);
            return IoError::Full;
        }
        error
    }

    /// Whether chunk `index` must come from the store (it is neither dirty nor known to be
    /// zeros).
    fn stored(&self, index: ChunkIndex) -> bool {
        !self.dirty.contains_key(&index)
            && self.stale_from.is_none_or(|s| index < s)
            && index.start_offset() < self.persisted_size
    }

    /// Loads the chunks in `wanted` that are neither dirty nor known to be zeros. When some
    /// must come from the store, the same call fetches up to `ahead` stored chunks after the
    /// last wanted one, kept for this statement (see [`ActorFiles::add_read_ahead`]) if the
    /// store has room for them.
    fn load(&self, wanted: &[ChunkIndex], ahead: u64) -> Result<BTreeMap<ChunkIndex, Chunk>, Failure> {
        let fetch: Vec<ChunkIndex> = wanted.iter().copied().filter(|i| self.stored(*i)).collect();
        if self.tag == FileTag::Main {
            fetch.iter().for_each(|i| self.actor.note_read(*i));
        }
        let mut out = BTreeMap::new();
        if fetch.is_empty() {
            return Ok(out);
        }
        let mut keys: Vec<Vec<u8>> =
            fetch.iter().map(|i| layout::chunk_key(&self.actor.id, self.tag, *i)).collect();
        let mut fetched: Vec<Option<Vec<u8>>> = vec![None; keys.len()];
        let mut missing = Vec::new();
        for (at, key) in keys.iter().enumerate() {
            match (self.tag == FileTag::Main).then(|| self.actor.preloaded(key)).flatten() {
                Some(value) => fetched[at] = Some(value),
                None => missing.push(at),
            }
        }
        if !missing.is_empty() {
            let mut wanted: Vec<Vec<u8>> = missing.iter().map(|at| std::mem::take(&mut keys[*at])).collect();
            let (extra, charge) = self.read_ahead_keys(fetch.last().copied(), ahead);
            wanted.extend(extra.iter().cloned());
            let mut values = self.actor.get_many(&wanted)?;
            let ahead_values = values.split_off(missing.len());
            for (at, value) in missing.into_iter().zip(values) {
                fetched[at] = value;
            }
            if let Some(mut charge) = charge {
                let pairs: Vec<_> =
                    extra.into_iter().zip(ahead_values).filter_map(|(k, v)| Some((k, v?))).collect();
                // Stored pages are often compressed: keep only what they take.
                charge.shrink_to(pairs.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum());
                self.actor.add_read_ahead(pairs, charge);
            }
        }
        for (index, value) in fetch.into_iter().zip(fetched) {
            let Some(value) = value else { continue };
            let chunk = layout::decode_chunk(&value).map_err(|e| self.actor.fail(Failure::Format(e)))?;
            out.insert(index, chunk);
        }
        Ok(out)
    }

    /// The keys of up to `ahead` stored chunks after `last`, and the store's charge for them
    /// (none, and no keys, when the store has no room or reads nothing ahead).
    fn read_ahead_keys(
        &self,
        last: Option<ChunkIndex>,
        ahead: u64,
    ) -> (Vec<Vec<u8>>, Option<crate::kv::Charge>) {
        let Some(last) = last.filter(|_| ahead > 0) else { return (Vec::new(), None) };
        let keys: Vec<Vec<u8>> = (last.0 + 1..=last.0 + ahead)
            .map(ChunkIndex)
            .take_while(|i| self.stored(*i))
            .map(|i| layout::chunk_key(&self.actor.id, self.tag, i))
            .filter(|key| self.actor.preloaded(key).is_none())
            .collect();
        let Some(first) = keys.first() else { return (Vec::new(), None) };
        let bytes = keys.iter().map(|k| (k.len() + CHUNK_BYTES) as u64).sum();
        match self.actor.store.read_ahead_charge(first, bytes) {
            Some(charge) => (keys, Some(charge)),
            None => (Vec::new(), None),
        }
    }

    fn remember_header(&mut self, index: ChunkIndex, chunk: &[u8]) {
        if self.tag == FileTag::Main && index.0 == 0 && self.size >= HEADER_BYTES as u64 {
            self.header = Some(chunk[..HEADER_BYTES].try_into().expect("chunk holds the header"));
        }
    }

    fn pending(&self) -> bool {
        !self.dirty.is_empty() || self.stale_from.is_some() || self.size != self.persisted_size
    }

    /// Sends the buffer (non-durably), as [`ActorFiles::flush_journal`] needs.
    pub fn flush_buffer(&mut self) -> Result<(), Failure> {
        self.flush(false)
    }

    /// Sends the buffer (and the size) as one batch; a main-file batch goes after the
    /// journal's buffered writes (see [`ActorFiles::flush_journal`]).
    fn flush(&mut self, durable: bool) -> Result<(), Failure> {
        if !(self.pending() || durable && self.unsynced) {
            return Ok(());
        }
        if self.tag == FileTag::Main {
            self.actor.flush_journal()?;
        }
        let id = &self.actor.id;
        let mut ops = Vec::with_capacity(self.dirty.len() + 2);
        if let Some(from) = self.stale_from.take() {
            let (start, end) = layout::chunk_range(id, self.tag, from);
            ops.push(WriteOp::DeleteRange { start, end });
        }
        for (index, chunk) in std::mem::take(&mut self.dirty) {
            ops.push(WriteOp::Put(layout::chunk_key(id, self.tag, index), layout::encode_chunk(&chunk)));
        }
        if self.size != self.persisted_size || !ops.is_empty() {
            ops.push(WriteOp::Put(
                layout::meta_key(id, self.tag),
                FileMeta { size_bytes: self.size }.encode(),
            ));
        }
        debug_assert!(self.atomic.is_none(), "nothing is sent inside a batch-atomic write");
        self.actor.write(ops, durable)?;
        self.persisted_size = self.size;
        self.unsynced = !durable;
        debug_assert!(!self.pending(), "a flush leaves nothing buffered");
        Ok(())
    }

    fn dirty_bytes(&self) -> u64 {
        (self.dirty.len() * CHUNK_BYTES) as u64
    }
}

impl FileBackend for KvFile {
    fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<bool, IoError> {
        let end = offset + buf.len() as u64;
        if let Some(header) = &self.header {
            if end <= HEADER_BYTES as u64 {
                buf.copy_from_slice(&header[offset as usize..end as usize]);
                return Ok(true);
            }
        }
        buf.fill(0);
        let avail_end = end.min(self.size);
        if avail_end <= offset {
            return Ok(buf.is_empty());
        }
        let first = ChunkIndex::of_offset(offset);
        let last = ChunkIndex::of_offset(avail_end - 1);
        let wanted: Vec<ChunkIndex> = (first.0..=last.0).map(ChunkIndex).collect();
        let ahead = self.plan_read_ahead(first, last);
        let loaded = self.load(&wanted, ahead).map_err(|f| self.io(f, IoError::Read))?;
        for index in wanted {
            let chunk = self.dirty.get(&index).or_else(|| loaded.get(&index));
            let Some(chunk) = chunk else { continue };
            let chunk_start = index.start_offset();
            let from = offset.max(chunk_start);
            let to = avail_end.min(chunk_start + CHUNK_BYTES as u64);
            let src = &chunk[(from - chunk_start) as usize..(to - chunk_start) as usize];
            buf[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
        }
        if let Some(chunk) = loaded.get(&ChunkIndex(0)) {
            let chunk = chunk.clone();
            self.remember_header(ChunkIndex(0), &chunk);
        }
        Ok(end <= self.size)
    }

    fn write(&mut self, buf: &[u8], offset: u64) -> Result<(), IoError> {
        let end = offset + buf.len() as u64;
        if self.tag == FileTag::Journal && end > self.limits.journal_bytes_max {
            let failure = Failure::TransactionTooLarge { bytes_max: self.limits.journal_bytes_max };
            return Err(self.io(failure, IoError::Full));
        }
        if buf.is_empty() {
            return Ok(());
        }
        let first = ChunkIndex::of_offset(offset);
        let last = ChunkIndex::of_offset(end - 1);
        let partial: Vec<ChunkIndex> = [first, last]
            .into_iter()
            .filter(|i| offset > i.start_offset() || end < i.start_offset() + CHUNK_BYTES as u64)
            .collect();
        let mut loaded = self.load(&partial, 0).map_err(|f| self.io(f, IoError::Write))?;
        for index in (first.0..=last.0).map(ChunkIndex) {
            let mut chunk = match self.dirty.remove(&index) {
                Some(chunk) => chunk,
                None => loaded.remove(&index).unwrap_or_else(zero_chunk),
            };
            let chunk_start = index.start_offset();
            let from = offset.max(chunk_start);
            let to = end.min(chunk_start + CHUNK_BYTES as u64);
            chunk[(from - chunk_start) as usize..(to - chunk_start) as usize]
                .copy_from_slice(&buf[(from - offset) as usize..(to - offset) as usize]);
            self.dirty.insert(index, chunk);
        }
        self.size = self.size.max(end);
        if offset < HEADER_BYTES as u64 {
            let chunk = self.dirty[&ChunkIndex(0)].clone();
            self.remember_header(ChunkIndex(0), &chunk);
        }
        self.debug_check();
        if self.atomic.is_some() {
            if self.dirty_bytes() > self.limits.batch_bytes_max {
                // SQLite answers an I/O error here by retrying the commit through the journal.
                return Err(IoError::Write);
            }
        } else if self.dirty_bytes() > self.limits.write_buffer_bytes_max {
            self.flush(false).map_err(|f| self.io(f, IoError::Write))?;
        }
        Ok(())
    }

    fn truncate(&mut self, size: u64) -> Result<(), IoError> {
        if size >= self.size {
            self.size = size;
            return Ok(());
        }
        let keep = ChunkIndex(chunks_for(size));
        self.dirty.retain(|i, _| *i < keep);
        self.stale_from = Some(self.stale_from.map_or(keep, |s| s.min(keep)));
        let tail = (size % CHUNK_BYTES as u64) as usize;
        if tail != 0 {
            // Keep the partial last chunk as dirty, its tail zeroed, so stale bytes never return.
            let last = ChunkIndex(keep.0 - 1);
            let mut loaded = self.load(&[last], 0).map_err(|f| self.io(f, IoError::Truncate))?;
            let mut chunk =
                self.dirty.remove(&last).or_else(|| loaded.remove(&last)).unwrap_or_else(zero_chunk);
            chunk[tail..].fill(0);
            self.dirty.insert(last, chunk);
        }
        self.size = size;
        if size < HEADER_BYTES as u64 {
            self.header = None;
        }
        self.debug_check();
        // SQLite shrinks the database after a commit and does not sync again: send the cut now
        // so stored chunks and the reported size follow (durability comes with the next sync).
        if self.atomic.is_none() {
            self.flush(false).map_err(|f| self.io(f, IoError::Truncate))?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), IoError> {
        self.flush(true).map_err(|f| self.io(f, IoError::Fsync))
    }

    fn size(&mut self) -> Result<u64, IoError> {
        Ok(self.size)
    }

    fn batch_atomic(&self) -> bool {
        self.tag == FileTag::Main
    }

    fn begin_atomic(&mut self) -> Result<(), IoError> {
        self.flush(false).map_err(|f| self.io(f, IoError::Write))?;
        self.atomic = Some(self.header);
        Ok(())
    }

    fn commit_atomic(&mut self) -> Result<(), IoError> {
        self.atomic = None;
        self.flush(true).map_err(|f| self.io(f, IoError::Write))
    }

    fn rollback_atomic(&mut self) {
        if let Some(header) = self.atomic.take() {
            self.header = header;
        }
        self.dirty.clear();
        self.stale_from = None;
        self.size = self.persisted_size;
    }

    fn close(&mut self) -> Result<(), IoError> {
        if self.actor.is_broken() || self.actor.is_poisoned() {
            return Ok(());
        }
        self.flush(true).map_err(|f| self.io(f, IoError::Fsync))
    }

    fn poison(&mut self) {
        self.actor.fail(Failure::Poisoned);
    }

    fn lock(&mut self, level: std::ffi::c_int) {
        self.lock = self.lock.max(level);
    }

    fn unlock(&mut self, level: std::ffi::c_int) {
        debug_assert!(level <= LOCK_SHARED, "SQLite unlocks to SHARED or NONE, not {level}");
        debug_assert!(self.atomic.is_none(), "no lock is dropped inside a batch-atomic write");
        self.lock = self.lock.min(level);
    }
}

const LOCK_NONE: std::ffi::c_int = rusqlite::ffi::SQLITE_LOCK_NONE;
const LOCK_SHARED: std::ffi::c_int = rusqlite::ffi::SQLITE_LOCK_SHARED;
const LOCK_EXCLUSIVE: std::ffi::c_int = rusqlite::ffi::SQLITE_LOCK_EXCLUSIVE;

/// A journal [`KvFile`] that its actor can also reach (to flush it ahead of main-file writes).
pub(crate) struct SharedKvFile(pub Arc<parking_lot::Mutex<KvFile>>);

impl FileBackend for SharedKvFile {
    fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<bool, IoError> {
        self.0.lock().read(buf, offset)
    }
    fn write(&mut self, buf: &[u8], offset: u64) -> Result<(), IoError> {
        self.0.lock().write(buf, offset)
    }
    fn truncate(&mut self, size: u64) -> Result<(), IoError> {
        self.0.lock().truncate(size)
    }
    fn sync(&mut self) -> Result<(), IoError> {
        self.0.lock().sync()
    }
    fn size(&mut self) -> Result<u64, IoError> {
        self.0.lock().size()
    }
    fn batch_atomic(&self) -> bool {
        self.0.lock().batch_atomic()
    }
    fn begin_atomic(&mut self) -> Result<(), IoError> {
        self.0.lock().begin_atomic()
    }
    fn commit_atomic(&mut self) -> Result<(), IoError> {
        self.0.lock().commit_atomic()
    }
    fn rollback_atomic(&mut self) {
        self.0.lock().rollback_atomic()
    }
    fn close(&mut self) -> Result<(), IoError> {
        self.0.lock().close()
    }
    fn poison(&mut self) {
        self.0.lock().poison()
    }
    fn lock(&mut self, level: std::ffi::c_int) {
        self.0.lock().lock(level)
    }
    fn unlock(&mut self, level: std::ffi::c_int) {
        self.0.lock().unlock(level)
    }
}
