//! Scratch files: what SQLite keeps only for the length of a statement or transaction (sorter
//! runs, temporary tables and indexes, the copy `VACUUM` builds, statement journals).
//!
//! With a scratch folder they are real files there, so a large sort or `VACUUM` costs disk, not
//! RAM (their cached pages sit in SQLite's page cache, inside the SQLite heap limit); without
//! one (library use over the memory store) they are buffers in memory, each capped.
//!
//! Invariants:
//! - [`ScratchSpace::bytes`] is the sum of the sizes of all open scratch files of one storage; a
//!   write that would take it past `scratch_bytes_max` fails with `SQLITE_FULL`, and the thread
//!   that hit the cap is marked so the caller reports *why* (see [`take_full`]);
//! - a file on disk has no name: it is created in the folder and unlinked at once, so a crash
//!   leaves nothing behind; files a crash left between the two steps (and import spools) carry
//!   [`FILE_PREFIX`] and are removed when the folder is prepared at start;
//! - a file gives its bytes back when it shrinks and when it is closed (dropped).

use std::cell::Cell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::ffi::{FileBackend, IoError};
use super::file::VfsLimits;

/// Names of every file Roost creates in the scratch folder start with this.
pub const FILE_PREFIX: &str = "roost-";

/// The name prefix of scratch files (each unlinked right after creation).
const SCRATCH_PREFIX: &str = "roost-scratch-";

thread_local! {
    /// The cap a scratch write on this thread hit last. SQLite runs a statement's file calls on
    /// the thread that steps it, so the thread that gets `SQLITE_FULL` back finds it here.
    static FULL_AT_BYTES: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Takes the note that a scratch write on this thread hit a cap: `Some(cap)` if one did since
/// the last call.
pub(crate) fn take_full() -> Option<u64> {
    FULL_AT_BYTES.with(Cell::take)
}

fn note_full(bytes_max: u64) -> IoError {
    FULL_AT_BYTES.with(|c| c.set(Some(bytes_max)));
    IoError::Full
}

/// Where scratch files go and how many bytes they hold together. One per storage.
#[derive(Debug)]
pub(crate) struct ScratchSpace {
    dir: Option<PathBuf>,
    bytes: AtomicU64,
    bytes_max: u64,
    memory_file_bytes_max: u64,
}

impl ScratchSpace {
    /// Scratch files in `dir` (created if missing, emptied of Roost's leftovers), or in memory.
    pub fn new(dir: Option<PathBuf>, limits: &VfsLimits) -> std::io::Result<Self> {
        if let Some(dir) = &dir {
            prepare_dir(dir)?;
        }
        Ok(Self {
            dir,
            bytes: AtomicU64::new(0),
            bytes_max: limits.scratch_bytes_max,
            memory_file_bytes_max: limits.memory_scratch_file_bytes_max,
        })
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Bytes held by open scratch files now.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn bytes_max(&self) -> u64 {
        self.bytes_max
    }

    /// Counts `n` more bytes, unless that would pass the cap.
    fn reserve(&self, n: u64) -> Result<(), IoError> {
        self.bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(n).filter(|total| *total <= self.bytes_max)
            })
            .map(|_| ())
            .map_err(|_| note_full(self.bytes_max))
    }

    fn release(&self, n: u64) {
        self.bytes.fetch_sub(n, Ordering::Relaxed);
    }

    /// A new, empty scratch file.
    pub fn open(self: &Arc<Self>) -> Result<ScratchFile, IoError> {
        let backing = match &self.dir {
            None => Backing::Memory(Vec::new()),
            Some(dir) => Backing::Disk(create_unlinked(dir).map_err(|e| {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot create a scratch file");
                IoError::CantOpen
            })?),
        };
        Ok(ScratchFile { space: self.clone(), backing, size: 0 })
    }
}

/// Creates `dir` if needed and removes the files Roost left in it (a crash mid-creation, an
/// interrupted import). Other files are left alone: the folder may be shared by mistake.
fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ours = entry.file_name().to_str().is_some_and(|n| n.starts_with(FILE_PREFIX));
        if ours && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// A file in `dir` that no name points to: it disappears with its last handle.
fn create_unlinked(dir: &Path) -> std::io::Result<File> {
    let named = tempfile::Builder::new().prefix(SCRATCH_PREFIX).tempfile_in(dir)?;
    let (file, path) = named.into_parts();
    path.close()?;
    Ok(file)
}

enum Backing {
    Memory(Vec<u8>),
    Disk(File),
}

/// One scratch file; its `size` bytes are counted in its space.
pub(crate) struct ScratchFile {
    space: Arc<ScratchSpace>,
    backing: Backing,
    size: u64,
}

impl ScratchFile {
    /// Makes the file `size` bytes long, counting the change.
    fn resize(&mut self, size: u64) -> Result<(), IoError> {
        if size > self.size {
            if matches!(self.backing, Backing::Memory(_)) && size > self.space.memory_file_bytes_max {
                return Err(note_full(self.space.memory_file_bytes_max));
            }
            self.space.reserve(size - self.size)?;
        }
        let resized = match &mut self.backing {
            Backing::Memory(data) => {
                data.resize(size as usize, 0);
                Ok(())
            }
            Backing::Disk(file) => file.set_len(size),
        };
        if let Err(e) = resized {
            tracing::warn!(error = %e, "cannot resize a scratch file");
            if size > self.size {
                self.space.release(size - self.size);
            }
            return Err(IoError::Write);
        }
        if size < self.size {
            self.space.release(self.size - size);
        }
        self.size = size;
        Ok(())
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        self.space.release(self.size);
    }
}

/// Reads from `file` at `offset` until `buf` is full or the file ends; returns bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

impl FileBackend for ScratchFile {
    fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<bool, IoError> {
        buf.fill(0);
        let available = self.size.saturating_sub(offset).min(buf.len() as u64) as usize;
        match &self.backing {
            Backing::Memory(data) if available > 0 => {
                let start = offset as usize;
                buf[..available].copy_from_slice(&data[start..start + available]);
            }
            Backing::Memory(_) => {}
            Backing::Disk(file) => {
                // Past what was read the buffer stays zeroed: a sparse tail reads as zeros.
                read_full_at(file, &mut buf[..available], offset).map_err(|_| IoError::Read)?;
            }
        }
        Ok(available == buf.len())
    }

    fn write(&mut self, buf: &[u8], offset: u64) -> Result<(), IoError> {
        let end = offset + buf.len() as u64;
        if end > self.size {
            self.resize(end)?;
        }
        match &mut self.backing {
            Backing::Memory(data) => {
                data[offset as usize..end as usize].copy_from_slice(buf);
                Ok(())
            }
            Backing::Disk(file) => file.write_all_at(buf, offset).map_err(|e| {
                tracing::warn!(error = %e, "cannot write a scratch file");
                if e.kind() == std::io::ErrorKind::StorageFull {
                    IoError::Full
                } else {
                    IoError::Write
                }
            }),
        }
    }

    fn truncate(&mut self, size: u64) -> Result<(), IoError> {
        self.resize(size)
    }

    fn sync(&mut self) -> Result<(), IoError> {
        // Scratch data does not outlive the process: nothing to make durable.
        Ok(())
    }

    fn size(&mut self) -> Result<u64, IoError> {
        Ok(self.size)
    }

    fn batch_atomic(&self) -> bool {
        false
    }

    fn begin_atomic(&mut self) -> Result<(), IoError> {
        Err(IoError::Write)
    }

    fn commit_atomic(&mut self) -> Result<(), IoError> {
        Err(IoError::Write)
    }

    fn rollback_atomic(&mut self) {}

    fn close(&mut self) -> Result<(), IoError> {
        Ok(())
    }

    fn poison(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(dir: Option<PathBuf>, bytes_max: u64) -> Arc<ScratchSpace> {
        let limits = VfsLimits {
            scratch_bytes_max: bytes_max,
            memory_scratch_file_bytes_max: 1 << 20,
            ..VfsLimits::default()
        };
        Arc::new(ScratchSpace::new(dir, &limits).unwrap())
    }

    fn round_trip(space: &Arc<ScratchSpace>) {
        let mut file = space.open().unwrap();
        file.write(&[7u8; 100], 4096).unwrap();
        assert_eq!(file.size().unwrap(), 4196);
        assert_eq!(space.bytes(), 4196);
        let mut buf = [1u8; 200];
        assert!(!file.read(&mut buf, 4096).unwrap(), "a read past the end is short");
        assert_eq!(&buf[..100], &[7u8; 100]);
        assert!(buf[100..].iter().all(|b| *b == 0));
        let mut head = [1u8; 64];
        assert!(file.read(&mut head, 0).unwrap());
        assert!(head.iter().all(|b| *b == 0), "the hole reads as zeros");
        file.truncate(1000).unwrap();
        assert_eq!(space.bytes(), 1000);
        drop(file);
        assert_eq!(space.bytes(), 0, "closing gives the bytes back");
    }

    #[test]
    fn files_round_trip_and_count_their_bytes() {
        round_trip(&space(None, 1 << 20));
        let dir = tempfile::tempdir().unwrap();
        round_trip(&space(Some(dir.path().to_path_buf()), 1 << 20));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "scratch files have no name");
    }

    #[test]
    fn the_cap_covers_all_files_and_is_reported_on_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let space = space(Some(dir.path().to_path_buf()), 10_000);
        let mut a = space.open().unwrap();
        let mut b = space.open().unwrap();
        a.write(&[1u8; 6000], 0).unwrap();
        assert!(take_full().is_none());
        assert_eq!(b.write(&[1u8; 6000], 0), Err(IoError::Full));
        assert_eq!(take_full(), Some(10_000));
        assert_eq!(take_full(), None, "taking clears the note");
        drop(a);
        b.write(&[1u8; 6000], 0).unwrap();
    }

    #[test]
    fn memory_files_have_their_own_cap() {
        let space = space(None, 1 << 30);
        let mut file = space.open().unwrap();
        assert_eq!(file.write(&[0u8; 10], 1 << 20), Err(IoError::Full));
        assert_eq!(take_full(), Some(1 << 20));
        assert_eq!(space.bytes(), 0);
    }

    #[test]
    fn preparing_the_folder_removes_only_roost_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("roost-spool-abc"), b"x").unwrap();
        std::fs::write(dir.path().join("roost-scratch-abc"), b"x").unwrap();
        std::fs::write(dir.path().join("keep.txt"), b"x").unwrap();
        let sub = dir.path().join("sub");
        space(Some(sub.clone()), 1);
        assert!(sub.is_dir(), "a missing folder is created");
        space(Some(dir.path().to_path_buf()), 1);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let mut left = left;
        left.sort();
        assert_eq!(left, ["keep.txt", "sub"]);
    }
}
