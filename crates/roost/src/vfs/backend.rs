//! The VFS proper: maps SQLite file names to actors and their files.
//!
//! A main database is named `<actor id>.db` and its journal `<actor id>.db-journal`; a name that
//! ends in `-journal` is therefore always a journal. SQLite may only open actors that were
//! attached first (see [`KvVfs::attach`]), so `ATTACH`, `VACUUM INTO` and the like cannot reach
//! another actor's data or create stray files. Anonymous scratch files come from the storage's
//! [`ScratchSpace`] (a capped folder or memory), never from a name SQLite chooses.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::actor::{ActorFiles, Failure};
use super::ffi::{FileBackend, FileKind, IoError, VfsBackend};
use super::file::{KvFile, VfsLimits};
use super::layout::{self, FileMeta, FileTag};
use super::scratch::ScratchSpace;
use crate::actor_id::ActorId;
use crate::kv::{KvStore, WriteOp};

const MAIN_SUFFIX: &str = ".db";
const JOURNAL_SUFFIX: &str = "-journal";

/// The SQLite file name of an actor's main database.
pub(crate) fn main_file_name(id: &ActorId) -> String {
    format!("{id}{MAIN_SUFFIX}")
}

fn parse_name(name: &str) -> Option<(ActorId, FileTag)> {
    let (main, tag) = match name.strip_suffix(JOURNAL_SUFFIX) {
        Some(main) => (main, FileTag::Journal),
        None => (name, FileTag::Main),
    };
    let id = main.strip_suffix(MAIN_SUFFIX)?;
    Some((ActorId::new(id).ok()?, tag))
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
    limits: VfsLimits,
    scratch: Arc<ScratchSpace>,
    attached: Mutex<HashMap<ActorId, Weak<ActorFiles>>>,
}

impl KvVfs {
    pub fn new(store: Arc<dyn KvStore>, limits: VfsLimits, scratch: Arc<ScratchSpace>) -> Self {
        Self { store, limits, scratch, attached: Mutex::new(HashMap::new()) }
    }

    /// Makes `id` openable by SQLite; one store read. Fails if it is attached already.
    pub fn attach(&self, id: &ActorId) -> Result<Arc<ActorFiles>, AttachError> {
        let mut attached = self.attached.lock();
        if attached.get(id).is_some_and(|w| w.strong_count() > 0) {
            return Err(AttachError::Busy);
        }
        let files = Arc::new(ActorFiles::load(id.clone(), self.store.clone()).map_err(AttachError::Failed)?);
        attached.insert(id.clone(), Arc::downgrade(&files));
        Ok(files)
    }

    /// Forgets `id` (its connection is closed).
    pub fn detach(&self, id: &ActorId) {
        let mut attached = self.attached.lock();
        if attached.get(id).is_some_and(|w| w.strong_count() == 0) {
            attached.remove(id);
        }
    }

    /// Number of entries in the attach table (bounded by open connections).
    pub fn attached_len(&self) -> usize {
        self.attached.lock().len()
    }

    fn lookup(&self, id: &ActorId) -> Option<Arc<ActorFiles>> {
        self.attached.lock().get(id).and_then(Weak::upgrade)
    }

    fn open_kv(&self, name: &str, tag: FileTag) -> Result<Box<dyn FileBackend>, IoError> {
        let (id, name_tag) = parse_name(name).ok_or(IoError::CantOpen)?;
        if name_tag != tag {
            return Err(IoError::CantOpen);
        }
        let actor = self.lookup(&id).ok_or(IoError::CantOpen)?;
        let meta = match tag {
            FileTag::Main => actor.main_meta,
            FileTag::Journal => {
                let meta = if actor.journal_exists() { read_meta(&actor, tag)? } else { None };
                actor.set_journal_exists(true);
                meta
            }
        };
        Ok(Box::new(KvFile::new(actor, tag, meta, self.limits)))
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
        let (id, tag) = parse_name(name).ok_or(IoError::Delete)?;
        let actor = self.lookup(&id).ok_or(IoError::Delete)?;
        let (start, end) = layout::file_range(&id, tag);
        // Deleting the journal is the commit point of a journaled transaction: durable.
        actor.write(vec![WriteOp::DeleteRange { start, end }], true).map_err(|_| IoError::Delete)?;
        if tag == FileTag::Journal {
            actor.set_journal_exists(false);
        }
        Ok(())
    }

    fn exists(&self, name: &str) -> Result<bool, IoError> {
        let Some((id, tag)) = parse_name(name) else { return Ok(false) };
        let Some(actor) = self.lookup(&id) else { return Ok(false) };
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
        let id = ActorId::new("a-journal").unwrap();
        assert_eq!(parse_name(&main_file_name(&id)), Some((id.clone(), FileTag::Main)));
        assert_eq!(parse_name("a-journal.db-journal"), Some((id, FileTag::Journal)));
        assert_eq!(parse_name("x.db.db"), Some((ActorId::new("x.db").unwrap(), FileTag::Main)));
        assert_eq!(parse_name("x"), None);
        assert_eq!(parse_name("../x.db"), None);
        assert_eq!(parse_name(".db"), None);
    }
}
