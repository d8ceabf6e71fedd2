//! The only module with `unsafe` code: it registers a SQLite VFS whose behaviour comes from the
//! safe traits [`VfsBackend`] and [`FileBackend`], and nothing else.
//!
//! Invariants:
//! - a [`Registration`] owns its `sqlite3_vfs` and backend; it unregisters the VFS on drop, so
//!   it must outlive every connection opened through it (the `Storage` handle guarantees that);
//! - every callback runs the backend inside `catch_unwind`: a panic becomes `SQLITE_IOERR` and
//!   poisons that file only, never unwinds into C;
//! - an open file's backend is owned by the SQLite-allocated `FileHandle` from a successful
//!   `xOpen` until `xClose`.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use rusqlite::ffi;

/// Failures a backend reports; each maps to one SQLite result code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IoError {
    Read,
    Write,
    Fsync,
    Truncate,
    Delete,
    Access,
    /// Out of space: a named size limit was hit.
    Full,
    CantOpen,
}

impl IoError {
    fn code(self) -> c_int {
        match self {
            Self::Read => ffi::SQLITE_IOERR_READ,
            Self::Write => ffi::SQLITE_IOERR_WRITE,
            Self::Fsync => ffi::SQLITE_IOERR_FSYNC,
            Self::Truncate => ffi::SQLITE_IOERR_TRUNCATE,
            Self::Delete => ffi::SQLITE_IOERR_DELETE,
            Self::Access => ffi::SQLITE_IOERR_ACCESS,
            Self::Full => ffi::SQLITE_FULL,
            Self::CantOpen => ffi::SQLITE_CANTOPEN,
        }
    }
}

/// What kind of file SQLite asks for in `xOpen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    MainDb,
    MainJournal,
    /// Temporary databases, statement journals and other scratch files: never persisted.
    Scratch,
    /// WAL files and super-journals: not supported by this VFS.
    Unsupported,
}

impl FileKind {
    fn from_flags(flags: c_int) -> Self {
        if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
            Self::MainDb
        } else if flags & ffi::SQLITE_OPEN_MAIN_JOURNAL != 0 {
            Self::MainJournal
        } else if flags
            & (ffi::SQLITE_OPEN_TEMP_DB
                | ffi::SQLITE_OPEN_TEMP_JOURNAL
                | ffi::SQLITE_OPEN_TRANSIENT_DB
                | ffi::SQLITE_OPEN_SUBJOURNAL)
            != 0
        {
            Self::Scratch
        } else {
            Self::Unsupported
        }
    }
}

/// The file-system half of a VFS, in safe Rust.
pub(crate) trait VfsBackend: Send + Sync + 'static {
    /// Opens `name` (`None` for anonymous scratch files).
    fn open(&self, name: Option<&str>, kind: FileKind) -> Result<Box<dyn FileBackend>, IoError>;
    fn delete(&self, name: &str) -> Result<(), IoError>;
    fn exists(&self, name: &str) -> Result<bool, IoError>;
}

/// One open file, in safe Rust. Called by one thread at a time (SQLite serializes a connection).
pub(crate) trait FileBackend: Send {
    /// Fills `buf` from `offset`; returns `false` on a short read (the tail is zero-filled).
    fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<bool, IoError>;
    fn write(&mut self, buf: &[u8], offset: u64) -> Result<(), IoError>;
    fn truncate(&mut self, size: u64) -> Result<(), IoError>;
    fn sync(&mut self) -> Result<(), IoError>;
    fn size(&mut self) -> Result<u64, IoError>;
    /// Does this file support `SQLITE_IOCAP_BATCH_ATOMIC`?
    fn batch_atomic(&self) -> bool;
    fn begin_atomic(&mut self) -> Result<(), IoError>;
    fn commit_atomic(&mut self) -> Result<(), IoError>;
    fn rollback_atomic(&mut self);
    fn close(&mut self) -> Result<(), IoError>;
    /// A callback panicked: fail every later call on this file (and its actor).
    fn poison(&mut self);
    /// SQLite raised its lock on the file to `level` (`SQLITE_LOCK_*`). Nothing is locked (one
    /// process owns each actor); files that check invariants against the level record it.
    fn lock(&mut self, _level: c_int) {}
    /// SQLite lowered its lock on the file to `level` (`SQLITE_LOCK_SHARED` or `_NONE`).
    fn unlock(&mut self, _level: c_int) {}
}

/// The largest pathname SQLite may hand us (actor ids are at most 128 bytes).
const PATHNAME_MAX: c_int = 512;
const SECTOR_SIZE: c_int = 4096;

struct VfsData {
    backend: Box<dyn VfsBackend>,
    /// SQLite's default VFS: randomness, time and sleep come from it.
    fallback: *mut ffi::sqlite3_vfs,
}

/// The struct SQLite allocates for each open file (`szOsFile` bytes).
#[repr(C)]
struct FileHandle {
    /// Must be first: SQLite sees a `*mut sqlite3_file`.
    base: ffi::sqlite3_file,
    backend: Option<Box<dyn FileBackend>>,
}

/// A registered VFS. Unregisters on drop.
pub(crate) struct Registration {
    raw: *mut ffi::sqlite3_vfs,
    name: CString,
}

// SAFETY: the VFS struct and its app data are immutable after registration; SQLite's own mutex
// guards its VFS list, and `VfsBackend: Sync` makes the backend safe to call from any thread.
unsafe impl Send for Registration {}
// SAFETY: as above: nothing behind `raw` is mutated through `&Registration`.
unsafe impl Sync for Registration {}

impl Registration {
    /// Registers `backend` as the VFS `name` (not the default VFS).
    pub(crate) fn register(name: &str, backend: Box<dyn VfsBackend>) -> Result<Self, c_int> {
        let name = CString::new(name).map_err(|_| ffi::SQLITE_MISUSE)?;
        // SAFETY: a null name asks for the default VFS; SQLite initializes itself if needed.
        let fallback = unsafe { ffi::sqlite3_vfs_find(ptr::null()) };
        if fallback.is_null() {
            return Err(ffi::SQLITE_ERROR);
        }
        let data = Box::into_raw(Box::new(VfsData { backend, fallback }));
        let vfs = Box::new(ffi::sqlite3_vfs {
            iVersion: 2,
            szOsFile: std::mem::size_of::<FileHandle>() as c_int,
            mxPathname: PATHNAME_MAX,
            pNext: ptr::null_mut(),
            zName: name.as_ptr(),
            pAppData: data.cast(),
            xOpen: Some(x_open),
            xDelete: Some(x_delete),
            xAccess: Some(x_access),
            xFullPathname: Some(x_full_pathname),
            xDlOpen: None,
            xDlError: None,
            xDlSym: None,
            xDlClose: None,
            xRandomness: Some(x_randomness),
            xSleep: Some(x_sleep),
            xCurrentTime: Some(x_current_time),
            xGetLastError: Some(x_get_last_error),
            xCurrentTimeInt64: Some(x_current_time_int64),
            xSetSystemCall: None,
            xGetSystemCall: None,
            xNextSystemCall: None,
        });
        let raw = Box::into_raw(vfs);
        // SAFETY: `raw` is a fully initialized VFS that stays alive until `Drop` unregisters it.
        let rc = unsafe { ffi::sqlite3_vfs_register(raw, 0) };
        if rc != ffi::SQLITE_OK {
            // SAFETY: registration failed, so SQLite holds no pointer to either allocation.
            unsafe {
                drop(Box::from_raw(raw));
                drop(Box::from_raw(data));
            }
            return Err(rc);
        }
        Ok(Self { raw, name })
    }

    pub(crate) fn name(&self) -> &str {
        self.name.to_str().expect("registered from a &str")
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: every connection using this VFS is closed before the registration drops
        // (connections hold the `Storage` that owns it), so nothing references it any more.
        unsafe {
            ffi::sqlite3_vfs_unregister(self.raw);
            let vfs = Box::from_raw(self.raw);
            drop(Box::from_raw(vfs.pAppData.cast::<VfsData>()));
        }
    }
}

/// Runs `op` and turns a panic into `None`.
fn no_unwind<T>(op: impl FnOnce() -> T) -> Option<T> {
    catch_unwind(AssertUnwindSafe(op)).ok()
}

/// # Safety
/// `vfs` must be a VFS created by [`Registration::register`].
unsafe fn vfs_data<'a>(vfs: *mut ffi::sqlite3_vfs) -> &'a VfsData {
    // SAFETY: guaranteed by the caller; the data lives as long as the registration.
    unsafe { &*(*vfs).pAppData.cast::<VfsData>() }
}

/// # Safety
/// `name` must be null or a NUL-terminated string.
unsafe fn str_arg<'a>(name: *const c_char) -> Option<&'a str> {
    if name.is_null() {
        return None;
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(name) }.to_str().ok()
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let handle = file.cast::<FileHandle>();
    // SAFETY: SQLite hands us `szOsFile` writable bytes; a null `pMethods` tells it there is
    // nothing to close if we fail, and the backend slot is initialized before any read.
    unsafe {
        ptr::addr_of_mut!((*handle).base.pMethods).write(ptr::null());
        ptr::addr_of_mut!((*handle).backend).write(None);
    }
    // SAFETY: `vfs` is ours; `name` is null or a C string from SQLite.
    let (data, name) = unsafe { (vfs_data(vfs), str_arg(name)) };
    let kind = FileKind::from_flags(flags);
    match no_unwind(|| data.backend.open(name, kind)) {
        Some(Ok(backend)) => {
            // SAFETY: `handle` was initialized above; `IO_METHODS` is a static.
            unsafe {
                (*handle).backend = Some(backend);
                (*handle).base.pMethods = &IO_METHODS;
                if !out_flags.is_null() {
                    *out_flags = flags;
                }
            }
            ffi::SQLITE_OK
        }
        Some(Err(e)) => e.code(),
        None => ffi::SQLITE_CANTOPEN,
    }
}

unsafe extern "C" fn x_delete(vfs: *mut ffi::sqlite3_vfs, name: *const c_char, _sync_dir: c_int) -> c_int {
    // SAFETY: `vfs` is ours; `name` is a C string from SQLite.
    let (data, name) = unsafe { (vfs_data(vfs), str_arg(name)) };
    let Some(name) = name else { return ffi::SQLITE_IOERR_DELETE };
    match no_unwind(|| data.backend.delete(name)) {
        Some(Ok(())) => ffi::SQLITE_OK,
        Some(Err(e)) => e.code(),
        None => ffi::SQLITE_IOERR_DELETE,
    }
}

unsafe extern "C" fn x_access(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    _flags: c_int,
    out: *mut c_int,
) -> c_int {
    // SAFETY: `vfs` is ours; `name` is a C string from SQLite.
    let (data, name) = unsafe { (vfs_data(vfs), str_arg(name)) };
    let result = match name {
        Some(name) => no_unwind(|| data.backend.exists(name)).unwrap_or(Err(IoError::Access)),
        None => Ok(false),
    };
    match result {
        Ok(exists) => {
            // SAFETY: SQLite passes a valid out-pointer.
            unsafe { *out = c_int::from(exists) };
            ffi::SQLITE_OK
        }
        Err(e) => e.code(),
    }
}

unsafe extern "C" fn x_full_pathname(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n_out: c_int,
    out: *mut c_char,
) -> c_int {
    // Names are already canonical: copy them through.
    // SAFETY: `name` is a C string; `out` has room for `n_out` bytes.
    unsafe {
        let bytes = CStr::from_ptr(name).to_bytes_with_nul();
        if bytes.len() > n_out as usize {
            return ffi::SQLITE_CANTOPEN;
        }
        ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), out, bytes.len());
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_randomness(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    // SAFETY: the fallback VFS is SQLite's own and fully implemented.
    unsafe {
        let fallback = vfs_data(vfs).fallback;
        (*fallback).xRandomness.map_or(0, |f| f(fallback, n, out))
    }
}

unsafe extern "C" fn x_sleep(vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    // SAFETY: as in `x_randomness`.
    unsafe {
        let fallback = vfs_data(vfs).fallback;
        (*fallback).xSleep.map_or(0, |f| f(fallback, micros))
    }
}

unsafe extern "C" fn x_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    // SAFETY: as in `x_randomness`.
    unsafe {
        let fallback = vfs_data(vfs).fallback;
        (*fallback).xCurrentTime.map_or(ffi::SQLITE_ERROR, |f| f(fallback, out))
    }
}

unsafe extern "C" fn x_current_time_int64(vfs: *mut ffi::sqlite3_vfs, out: *mut ffi::sqlite3_int64) -> c_int {
    // SAFETY: as in `x_randomness`.
    unsafe {
        let fallback = vfs_data(vfs).fallback;
        (*fallback).xCurrentTimeInt64.map_or(ffi::SQLITE_ERROR, |f| f(fallback, out))
    }
}

unsafe extern "C" fn x_get_last_error(_vfs: *mut ffi::sqlite3_vfs, _n: c_int, _out: *mut c_char) -> c_int {
    0
}

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

/// Runs `op` on the file's backend; a panic poisons the file and answers `on_panic`.
///
/// # Safety
/// `file` must be a handle opened by `x_open` and not yet closed.
unsafe fn with_backend(
    file: *mut ffi::sqlite3_file,
    on_panic: c_int,
    op: impl FnOnce(&mut dyn FileBackend) -> Result<(), IoError>,
) -> c_int {
    // SAFETY: guaranteed by the caller; SQLite never calls one file from two threads at once.
    let handle = unsafe { &mut *file.cast::<FileHandle>() };
    let Some(backend) = handle.backend.as_mut() else { return on_panic };
    match catch_unwind(AssertUnwindSafe(|| op(backend.as_mut()))) {
        Ok(Ok(())) => ffi::SQLITE_OK,
        Ok(Err(e)) => e.code(),
        Err(_) => {
            let _ = no_unwind(|| backend.poison());
            on_panic
        }
    }
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes a file it opened through `x_open`, exactly once.
    let rc = unsafe { with_backend(file, ffi::SQLITE_IOERR_CLOSE, |b| b.close()) };
    // SAFETY: as above; after this the handle holds no backend.
    let backend = unsafe { (*file.cast::<FileHandle>()).backend.take() };
    let _ = no_unwind(move || drop(backend));
    rc
}

unsafe extern "C" fn x_read(file: *mut ffi::sqlite3_file, buf: *mut c_void, n: c_int, offset: i64) -> c_int {
    // SAFETY: SQLite passes a writable buffer of `n` bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), n.max(0) as usize) };
    let mut full = true;
    // SAFETY: `file` is open.
    let rc = unsafe {
        with_backend(file, ffi::SQLITE_IOERR_READ, |b| {
            full = b.read(buf, offset.max(0) as u64)?;
            Ok(())
        })
    };
    if rc == ffi::SQLITE_OK && !full {
        return ffi::SQLITE_IOERR_SHORT_READ;
    }
    rc
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    n: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite passes a readable buffer of `n` bytes.
    let buf = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), n.max(0) as usize) };
    // SAFETY: `file` is open.
    unsafe { with_backend(file, ffi::SQLITE_IOERR_WRITE, |b| b.write(buf, offset.max(0) as u64)) }
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: `file` is open.
    unsafe { with_backend(file, ffi::SQLITE_IOERR_TRUNCATE, |b| b.truncate(size.max(0) as u64)) }
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    // SAFETY: `file` is open.
    unsafe { with_backend(file, ffi::SQLITE_IOERR_FSYNC, |b| b.sync()) }
}

unsafe extern "C" fn x_file_size(file: *mut ffi::sqlite3_file, out: *mut i64) -> c_int {
    let mut size = 0u64;
    // SAFETY: `file` is open.
    let rc = unsafe {
        with_backend(file, ffi::SQLITE_IOERR_FSTAT, |b| {
            size = b.size()?;
            Ok(())
        })
    };
    // SAFETY: SQLite passes a valid out-pointer.
    unsafe { *out = size as i64 };
    rc
}

/// One process owns each actor (fenced in the store), so SQLite's file locks are not needed;
/// the level is still handed to the file, which keeps it as state to check its invariants.
unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: `file` is open.
    unsafe {
        with_backend(file, ffi::SQLITE_IOERR_LOCK, |b| {
            b.lock(level);
            Ok(())
        })
    }
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: `file` is open.
    unsafe {
        with_backend(file, ffi::SQLITE_IOERR_UNLOCK, |b| {
            b.unlock(level);
            Ok(())
        })
    }
}

unsafe extern "C" fn x_check_reserved_lock(_file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: SQLite passes a valid out-pointer.
    unsafe { *out = 0 };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_file_control(file: *mut ffi::sqlite3_file, op: c_int, _arg: *mut c_void) -> c_int {
    // SAFETY (all three): `file` is open.
    match op {
        ffi::SQLITE_FCNTL_BEGIN_ATOMIC_WRITE => unsafe {
            with_backend(file, ffi::SQLITE_IOERR_BEGIN_ATOMIC, |b| b.begin_atomic())
        },
        ffi::SQLITE_FCNTL_COMMIT_ATOMIC_WRITE => unsafe {
            with_backend(file, ffi::SQLITE_IOERR_COMMIT_ATOMIC, |b| b.commit_atomic())
        },
        ffi::SQLITE_FCNTL_ROLLBACK_ATOMIC_WRITE => unsafe {
            with_backend(file, ffi::SQLITE_IOERR_ROLLBACK_ATOMIC, |b| {
                b.rollback_atomic();
                Ok(())
            })
        },
        _ => ffi::SQLITE_NOTFOUND,
    }
}

unsafe extern "C" fn x_sector_size(_file: *mut ffi::sqlite3_file) -> c_int {
    SECTOR_SIZE
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // Not SEQUENTIAL: buffered writes of two files may reach the store out of call order, so
    // SQLite must keep its journal syncs.
    let mut batch = false;
    // SAFETY: `file` is open.
    unsafe {
        with_backend(file, 0, |b| {
            batch = b.batch_atomic();
            Ok(())
        })
    };
    let mut caps = ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE;
    if batch {
        caps |= ffi::SQLITE_IOCAP_BATCH_ATOMIC;
    }
    caps
}

/// Process-wide SQLite memory figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SqliteMemory {
    /// Bytes SQLite has allocated now, and the most it ever had.
    pub used_bytes: u64,
    pub highwater_bytes: u64,
    /// Of `used_bytes`, bytes held by page caches.
    pub page_cache_bytes: u64,
}

impl SqliteMemory {
    /// Of `used_bytes`, what the connections hold besides cached pages (schemas, statements):
    /// the `connections` pool's use.
    pub fn connection_bytes(&self) -> u64 {
        self.used_bytes.saturating_sub(self.page_cache_bytes)
    }
}

/// Reads SQLite's allocator statistics.
pub fn sqlite_memory() -> SqliteMemory {
    let (mut current, mut highwater) = (0i64, 0i64);
    // SAFETY: plain status call with valid out-pointers; SQLite synchronizes it internally.
    let rc = unsafe {
        ffi::sqlite3_status64(ffi::SQLITE_STATUS_PAGECACHE_OVERFLOW, &mut current, &mut highwater, 0)
    };
    let page_cache_bytes = if rc == ffi::SQLITE_OK { current.max(0) as u64 } else { 0 };
    // SAFETY: both calls only read global counters.
    let (used, high) = unsafe { (ffi::sqlite3_memory_used(), ffi::sqlite3_memory_highwater(0)) };
    SqliteMemory { used_bytes: used.max(0) as u64, highwater_bytes: high.max(0) as u64, page_cache_bytes }
}

/// Sets SQLite's process-wide heap limits: above `soft_bytes` SQLite recycles cached pages
/// (shared LRU across connections); above `hard_bytes` allocations fail with SQLITE_NOMEM.
/// 0 removes a limit.
pub fn set_sqlite_heap_limits(soft_bytes: u64, hard_bytes: u64) {
    // SAFETY: both calls take plain integers and are thread-safe.
    unsafe {
        ffi::sqlite3_hard_heap_limit64(hard_bytes.min(i64::MAX as u64) as i64);
        ffi::sqlite3_soft_heap_limit64(soft_bytes.min(i64::MAX as u64) as i64);
    }
}

/// Sets the connection's lookaside allocator (`slots` x `slot_bytes`; 0 turns it off). Must run
/// before the connection allocates lookaside memory (right after opening).
pub(crate) fn set_lookaside(conn: &rusqlite::Connection, slot_bytes: u32, slots: u32) -> Result<(), c_int> {
    // SAFETY: the handle is valid while `conn` lives and is used on this thread only; a null
    // buffer asks SQLite to allocate the slots itself.
    let rc = unsafe {
        ffi::sqlite3_db_config(
            conn.handle(),
            ffi::SQLITE_DBCONFIG_LOOKASIDE,
            ptr::null_mut::<c_void>(),
            slot_bytes as c_int,
            slots as c_int,
        )
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rc)
    }
}

/// Per-connection SQLite limits (`sqlite3_limit`) that keep one tenant's SQL small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionLimits {
    /// Largest string or blob value (`SQLITE_LIMIT_LENGTH`).
    pub value_bytes_max: u32,
    /// Longest SQL text (`SQLITE_LIMIT_SQL_LENGTH`).
    pub sql_bytes_max: u32,
    /// Attached databases (`SQLITE_LIMIT_ATTACHED`): 1 leaves room for VACUUM's scratch copy
    /// only; the authorizer refuses every other ATTACH.
    pub attached_max: u32,
}

/// Applies `limits` and turns off SQLite's worker threads for the connection.
pub(crate) fn set_limits(conn: &rusqlite::Connection, limits: ConnectionLimits) {
    let settings = [
        (ffi::SQLITE_LIMIT_LENGTH, limits.value_bytes_max),
        (ffi::SQLITE_LIMIT_SQL_LENGTH, limits.sql_bytes_max),
        (ffi::SQLITE_LIMIT_ATTACHED, limits.attached_max),
        (ffi::SQLITE_LIMIT_WORKER_THREADS, 0),
    ];
    for (limit, value) in settings {
        // SAFETY: the handle is valid while `conn` lives and is used on this thread only;
        // sqlite3_limit clamps values to the compile-time maxima.
        unsafe {
            ffi::sqlite3_limit(conn.handle(), limit, value.min(i32::MAX as u32) as c_int);
        }
    }
}

/// Frees the connection's unused cached pages.
pub(crate) fn release_memory(conn: &rusqlite::Connection) {
    // SAFETY: the handle is valid while `conn` lives and is used on this thread only.
    unsafe {
        ffi::sqlite3_db_release_memory(conn.handle());
    }
}

/// Memory held by one connection, from `sqlite3_db_status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionMemory {
    pub cache_bytes: u64,
    pub schema_bytes: u64,
    pub statement_bytes: u64,
}

pub(crate) fn connection_memory(conn: &rusqlite::Connection) -> ConnectionMemory {
    let status = |op: c_int| {
        let (mut current, mut highwater) = (0 as c_int, 0 as c_int);
        // SAFETY: the handle is valid while `conn` lives and is used on this thread only;
        // the out-pointers are valid.
        let rc = unsafe { ffi::sqlite3_db_status(conn.handle(), op, &mut current, &mut highwater, 0) };
        if rc == ffi::SQLITE_OK {
            current.max(0) as u64
        } else {
            0
        }
    };
    ConnectionMemory {
        cache_bytes: status(ffi::SQLITE_DBSTATUS_CACHE_USED),
        schema_bytes: status(ffi::SQLITE_DBSTATUS_SCHEMA_USED),
        statement_bytes: status(ffi::SQLITE_DBSTATUS_STMT_USED),
    }
}
