//! The VFS proper: maps SQLite file names to actors and their files.
//!
//! Each attach of an actor gets a fresh random name, `<32 hex digits>.db` for the main database
//! and `<same>.db-journal` for its journal; a name that ends in `-journal` is therefore always a
//! journal. The name is known only to the connection that attached the actor: another
//! connection cannot guess it (128 random bits), and a name that is not attached opens nothing,
//! so even a file name that slipped past the authorizer (`ATTACH`, `VACUUM INTO`) reaches no
//! other actor's data and creates no file. Names are never stored: the store's keys use the
//! actor id.
//! Anonymous scratch files come from the storage's [`ScratchSpace`] (a capped folder or
//! memory), never from a name SQLite chooses.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::actor::{ActorFiles, Failure};
use super::ffi::{FileBackend, FileKind, IoError, VfsBackend};
use super::file::{KvFile, SharedKvFile, VfsLimits};
use super::layout::{self, FileMeta, FileTag};
use super::scratch::ScratchSpace;
use crate::actor_id::ActorId;
use crate::kv::{Claims, KvStore, WriteOp};

const MAIN_SUFFIX: &str = ".db";
const JOURNAL_SUFFIX: &str = "-journal";

/// Hex digits of an attach's random file name.
const NAME_DIGITS: usize = 32;

/// The SQLite file name of an attached actor's main database.
pub(crate) fn main_file_name(files: &ActorFiles) -> String {
    format!("{}{MAIN_SUFFIX}", files.file_token)
}

/// A fresh unguessable file token for one attach.
fn new_token() -> String {
    format!("{:0width$x}", rand::random::<u128>(), width = NAME_DIGITS)
}

/// The token and file of a name this VFS hands out; `None` for anything else.
fn parse_name(name: &str) -> Option<(&str, FileTag)> {
    let (main, tag) = match name.strip_suffix(JOURNAL_SUFFIX) {
        Some(main) => (main, FileTag::Journal),
        None => (name, FileTag::Main),
    };
    let token = main.strip_suffix(MAIN_SUFFIX)?;
    let valid = token.len() == NAME_DIGITS && token.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then_some((token, tag))
}

/// Attaching an actor failed.
#[derive(Debug)]
pub(crate) enum AttachError {
    /// The actor is attached already (open in this process).
    Busy,
    Failed(Failure),
}

pub(crate) struct KvVfs {
    store: Arc<dyn KvStore>,
    /// Set when the store is shared by several nodes: attaching claims the actor.
    claims: Option<Arc<dyn Claims>>,
    limits: VfsLimits,
    scratch: Arc<ScratchSpace>,
    attached: Mutex<Attached>,
}

/// Attached actors, by id (one attach per actor) and by file token (what SQLite names).
///
/// Every operation is O(1) under the lock, and the store is never read under it: a host with
/// 66,000 actors awake spent half its CPU sweeping this table on each close (then a scan of
/// every token), and wakes loaded their files one at a time while holding it.
#[derive(Default)]
struct Attached {
    by_id: HashMap<ActorId, Attach>,
    by_token: HashMap<String, Weak<ActorFiles>>,
}

/// One actor's entry: being loaded (outside the lock), or loaded under a token.
enum Attach {
    Loading,
    Open { token: String, files: Weak<ActorFiles> },
}

impl Attached {
    /// Is `id` being attached, or attached with its files still in use?
    fn busy(&self, id: &ActorId) -> bool {
        match self.by_id.get(id) {
            Some(Attach::Loading) => true,
            Some(Attach::Open { files, .. }) => files.strong_count() > 0,
            None => false,
        }
    }

    /// Removes `id`'s entry and its token.
    fn remove(&mut self, id: &ActorId) {
        if let Some(Attach::Open { token, .. }) = self.by_id.remove(id) {
            self.by_token.remove(&token);
        }
    }
}

/// Takes a `Loading` entry back out unless the load finished (also if it panicked).
struct LoadingGuard<'a> {
    attached: &'a Mutex<Attached>,
    id: &'a ActorId,
    done: bool,
}

impl Drop for LoadingGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.attached.lock().by_id.remove(self.id);
        }
    }
}

impl KvVfs {
    pub fn new(
        store: Arc<dyn KvStore>,
        claims: Option<Arc<dyn Claims>>,
        limits: VfsLimits,
        scratch: Arc<ScratchSpace>,
    ) -> Self {
        Self { store, claims, limits, scratch, attached: Mutex::new(Attached::default()) }
    }

    /// Makes `id` openable by SQLite; one store read. Fails if it is attached already.
    ///
    /// An actor that was deleted before (a generation without files) costs one more read, and
    /// the removal of whatever an interrupted delete left behind: that runs here, outside the
    /// attach table's lock, while the actor is attached so nothing else can write it.
    pub fn attach(&self, id: &ActorId) -> Result<Arc<ActorFiles>, AttachError> {
        let files = self.attach_loaded(id)?;
        if files.may_hold_leftovers() {
            if let Err(failure) = files.purge_file_keys(self.limits.range_delete_keys_per_batch) {
                drop(files);
                self.detach(id);
                return Err(AttachError::Failed(failure));
            }
        }
        Ok(files)
    }

    /// Marks `id` loading, loads its files without the lock (other actors attach and detach
    /// meanwhile), then enters them under a fresh token.
    fn attach_loaded(&self, id: &ActorId) -> Result<Arc<ActorFiles>, AttachError> {
        {
            let mut attached = self.attached.lock();
            if attached.busy(id) {
                return Err(AttachError::Busy);
            }
            attached.remove(id);
            attached.by_id.insert(id.clone(), Attach::Loading);
        }
        let mut loading = LoadingGuard { attached: &self.attached, id, done: false };
        let token = new_token();
        let claims = self.claims.as_ref();
        let files = ActorFiles::load(id.clone(), token.clone(), self.store.clone(), claims)
            .map_err(AttachError::Failed)?;
        let files = Arc::new(files);
        let mut attached = self.attached.lock();
        attached.by_token.insert(token.clone(), Arc::downgrade(&files));
        attached.by_id.insert(id.clone(), Attach::Open { token, files: Arc::downgrade(&files) });
        loading.done = true;
        Ok(files)
    }

    /// Batch size of leftover removal (see [`VfsLimits::range_delete_keys_per_batch`]).
    pub fn range_delete_keys_per_batch(&self) -> usize {
        self.limits.range_delete_keys_per_batch
    }

    /// Forgets `id` (its connection is closed).
    pub fn detach(&self, id: &ActorId) {
        let mut attached = self.attached.lock();
        if !attached.busy(id) {
            attached.remove(id);
        }
    }

    /// Number of entries in the attach table (bounded by open connections).
    pub fn attached_len(&self) -> usize {
        self.attached.lock().by_id.len()
    }

    fn lookup(&self, token: &str) -> Option<Arc<ActorFiles>> {
        self.attached.lock().by_token.get(token).and_then(Weak::upgrade)
    }

    fn open_kv(&self, name: &str, tag: FileTag) -> Result<Box<dyn FileBackend>, IoError> {
        let (token, name_tag) = parse_name(name).ok_or(IoError::CantOpen)?;
        if name_tag != tag {
            return Err(IoError::CantOpen);
        }
        let actor = self.lookup(token).ok_or(IoError::CantOpen)?;
        match tag {
            FileTag::Main => Ok(Box::new(KvFile::new(actor.clone(), tag, actor.main_meta, self.limits))),
            FileTag::Journal => {
                let meta = if actor.journal_exists() { read_meta(&actor, tag)? } else { None };
                actor.set_journal_exists(true);
                let journal = Arc::new(Mutex::new(KvFile::new(actor.clone(), tag, meta, self.limits)));
                actor.set_open_journal(&journal);
                Ok(Box::new(SharedKvFile(journal)))
            }
        }
    }
}

fn read_meta(actor: &ActorFiles, tag: FileTag) -> Result<Option<FileMeta>, IoError> {
    let key = layout::meta_key(&actor.id, tag);
    let value = actor.get_many(&[key]).map_err(|_| IoError::CantOpen)?.pop().flatten();
    value
        .map(|v| {
            FileMeta::decode(&v).map_err(|e| {
                actor.fail(Failure::Format(e));
                IoError::CantOpen
            })
        })
        .transpose()
}

impl VfsBackend for KvVfs {
    fn open(&self, name: Option<&str>, kind: FileKind) -> Result<Box<dyn FileBackend>, IoError> {
        match (kind, name) {
            (FileKind::Scratch, _) => Ok(Box::new(self.scratch.open()?)),
            (FileKind::MainDb, Some(name)) => self.open_kv(name, FileTag::Main),
            (FileKind::MainJournal, Some(name)) => self.open_kv(name, FileTag::Journal),
            _ => Err(IoError::CantOpen),
        }
    }

    fn delete(&self, name: &str) -> Result<(), IoError> {
        let (token, tag) = parse_name(name).ok_or(IoError::Delete)?;
        let actor = self.lookup(token).ok_or(IoError::Delete)?;
        let (start, end) = layout::file_range(&actor.id, tag);
        // Deleting the journal is the commit point of a journaled transaction: durable.
        actor.write(vec![WriteOp::DeleteRange { start, end }], true).map_err(|_| IoError::Delete)?;
        if tag == FileTag::Journal {
            actor.set_journal_exists(false);
        }
        Ok(())
    }

    fn exists(&self, name: &str) -> Result<bool, IoError> {
        let Some((token, tag)) = parse_name(name) else { return Ok(false) };
        let Some(actor) = self.lookup(token) else { return Ok(false) };
        Ok(match tag {
            FileTag::Main => true,
            FileTag::Journal => actor.journal_exists(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_unambiguously() {
        let token = new_token();
        assert_eq!(token.len(), NAME_DIGITS);
        assert_ne!(token, new_token());
        let main = format!("{token}.db");
        assert_eq!(parse_name(&main), Some((token.as_str(), FileTag::Main)));
        assert_eq!(parse_name(&format!("{main}-journal")), Some((token.as_str(), FileTag::Journal)));
        assert_eq!(parse_name("a-journal.db-journal"), None);
        assert_eq!(parse_name("victim.db"), None);
        assert_eq!(parse_name(&format!("../{main}")), None);
        assert_eq!(parse_name(&format!("file:{main}?vfs=unix")), None);
        assert_eq!(parse_name(".db"), None);
    }
}
