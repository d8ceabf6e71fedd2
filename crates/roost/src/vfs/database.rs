//! [`Storage`] (a store plus its registered VFS) and [`Database`] (one actor's connection).
//!
//! A `Database` owns one SQLite connection in rollback-journal mode with `synchronous=FULL`.
//! After a store failure the connection is dropped and reopened on the next call, so SQLite
//! re-reads the store and rolls back any half-written transaction from its journal. Scratch
//! files of all connections share one [`ScratchSpace`](super::scratch::ScratchSpace) and its cap.
//!
//! Tenancy (docs/tenancy.md): SQL reaches this actor's database and nothing else. The
//! authorizer refuses every `ATTACH`/`DETACH` (whatever form the file name takes: a literal, a
//! parameter, an expression) except the anonymous scratch database that a `VACUUM` statement
//! attaches itself, lets through only the pragmas of an allow-list ([`PRAGMAS`]), and refuses
//! functions that reach outside the database. The connection runs in SQLite's defensive mode
//! with untrusted schemas, per-connection limits (value and SQL length, one attached database,
//! no worker threads), and the library is built without URI file names or extension loading.
//!
//! A transactional batch is all or nothing: no commit hook is installed except while its
//! statements run, and then every commit is refused, so no statement of it can commit early;
//! a statement that leaves the transaction fails the batch before the next one runs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rusqlite::config::DbConfig;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};

use super::actor::{ActorFiles, Failure};
use super::answer::{value_ref_cost, AnswerMeter, Unmetered, ROW_OVERHEAD_BYTES};
use super::backend::{main_file_name, AttachError, KvVfs};
use super::error::Error;
use super::ffi::{self, ConnectionLimits, FileBackend, FileKind, IoError, Registration, VfsBackend};
use super::file::VfsLimits;
use super::layout::{self, FileMeta, FileTag};
use super::scratch::{self, ScratchSpace};
use super::upload::open_upload;
use crate::actor_id::ActorId;
use crate::kv::{Claims, KvError, KvStore};

/// Configuration of [`Storage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    pub limits: VfsLimits,
    /// Folder for scratch files (sorts, temp tables, `VACUUM`'s copy), capped together by
    /// `limits.scratch_bytes_max`. Created if missing; files named `roost-*` in it are removed
    /// when the storage starts, so give it a folder of its own (`roost serve` uses
    /// `<data>/scratch`). `None`: scratch files live in memory, each capped by
    /// `limits.memory_scratch_file_bytes_max`.
    pub scratch_dir: Option<PathBuf>,
    /// SQLite page cache per connection.
    pub page_cache_bytes_max: u64,
    /// Largest database of one actor; beyond it writes fail with SQLITE_FULL.
    pub db_bytes_max: u64,
    /// Most rows in one statement's answer.
    pub rows_max: usize,
    /// Prepared statements kept per connection (0 turns the cache off).
    pub statement_cache_capacity: usize,
    /// Per-connection lookaside allocator: `lookaside_slots` x `lookaside_slot_bytes`. Off by
    /// default: SQLite's default (1200 x 100 bytes) costs ~47 KiB per open connection.
    pub lookaside_slot_bytes: u32,
    pub lookaside_slots: u32,
    /// Largest string or blob SQLite may build or read (`SQLITE_LIMIT_LENGTH`): bounds what
    /// one expression such as `zeroblob(?)` or `replace(...)` can allocate.
    pub value_bytes_max: u32,
    /// Longest SQL text one call may prepare (`SQLITE_LIMIT_SQL_LENGTH`).
    pub sql_bytes_max: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            limits: VfsLimits::default(),
            scratch_dir: None,
            page_cache_bytes_max: 2 << 20,
            db_bytes_max: 10 << 30,
            rows_max: 100_000,
            statement_cache_capacity: 16,
            lookaside_slot_bytes: 0,
            lookaside_slots: 0,
            value_bytes_max: 32 << 20,
            sql_bytes_max: 1 << 20,
        }
    }
}

/// A SQL value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Self::Null => ValueRef::Null,
            Self::Integer(i) => ValueRef::Integer(*i),
            Self::Real(f) => ValueRef::Real(*f),
            Self::Text(s) => ValueRef::Text(s.as_bytes()),
            Self::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl From<ValueRef<'_>> for Value {
    fn from(value: ValueRef<'_>) -> Self {
        match value {
            ValueRef::Null => Self::Null,
            ValueRef::Integer(i) => Self::Integer(i),
            ValueRef::Real(f) => Self::Real(f),
            ValueRef::Text(t) => Self::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Self::Blob(b.to_vec()),
        }
    }
}

/// Statement parameters.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Params {
    #[default]
    None,
    /// `?` / `?NNN` parameters, in order.
    Positional(Vec<Value>),
    /// `:name`, `@name` or `$name` parameters; a name without prefix matches any of them.
    Named(Vec<(String, Value)>),
}

/// One statement of a batch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Statement {
    pub sql: String,
    pub params: Params,
}

impl Statement {
    pub fn new(sql: impl Into<String>) -> Self {
        Self { sql: sql.into(), params: Params::None }
    }

    pub fn with_params(sql: impl Into<String>, params: Params) -> Self {
        Self { sql: sql.into(), params }
    }
}

/// The answer to one statement.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryResult {
    pub columns: Vec<String>,
    /// Each column's declared type (`INTEGER`, `TEXT`...), `None` for expressions.
    pub decltypes: Vec<Option<String>>,
    pub rows: Vec<Vec<Value>>,
    pub rows_affected: u64,
    pub last_insert_rowid: i64,
}

struct StorageInner {
    store: Arc<dyn KvStore>,
    vfs: Arc<KvVfs>,
    scratch: Arc<ScratchSpace>,
    config: StorageConfig,
    // Dropped after every connection: each `Database` holds this struct alive.
    registration: Registration,
}

/// A store with a SQLite VFS over it. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<StorageInner>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("vfs", &self.inner.registration.name()).finish_non_exhaustive()
    }
}

/// Lets the registration and `Storage` share one `KvVfs`.
struct SharedVfs(Arc<KvVfs>);

impl VfsBackend for SharedVfs {
    fn open(&self, name: Option<&str>, kind: FileKind) -> Result<Box<dyn FileBackend>, IoError> {
        self.0.open(name, kind)
    }
    fn delete(&self, name: &str) -> Result<(), IoError> {
        self.0.delete(name)
    }
    fn exists(&self, name: &str) -> Result<bool, IoError> {
        self.0.exists(name)
    }
}

static VFS_COUNTER: AtomicU64 = AtomicU64::new(0);

fn failure_error(failure: Failure) -> Error {
    match failure {
        Failure::Store(KvError::Fenced) => Error::Fenced,
        Failure::Store(e) => Error::Store(e),
        Failure::Format(e) => Error::Corrupt(e.to_string()),
        Failure::TransactionTooLarge { bytes_max } => Error::TransactionTooLarge { bytes_max },
        Failure::Poisoned => Error::Poisoned,
        Failure::Elsewhere(owner) => Error::Moved(owner),
    }
}

fn attach_error(e: AttachError) -> Error {
    match e {
        AttachError::Busy => Error::ActorBusy,
        AttachError::Failed(f) => failure_error(f),
    }
}

impl Storage {
    /// Registers a VFS over `store` and prepares the scratch folder (see [`StorageConfig`]).
    pub fn new(store: Arc<dyn KvStore>, config: StorageConfig) -> Result<Self, Error> {
        Self::with_claims(store, None, config)
    }

    /// [`Storage::new`] over a store shared by several nodes: opening an actor claims it for
    /// this node (see [`Claims`]), and fails with [`Error::Moved`] while another node owns it.
    pub fn with_claims(
        store: Arc<dyn KvStore>,
        claims: Option<Arc<dyn Claims>>,
        config: StorageConfig,
    ) -> Result<Self, Error> {
        let scratch = ScratchSpace::new(config.scratch_dir.clone(), &config.limits).map_err(|e| {
            let dir = config.scratch_dir.as_deref().unwrap_or(Path::new("")).display();
            Error::ScratchFolder(format!("{dir}: {e}"))
        })?;
        let scratch = Arc::new(scratch);
        let vfs = Arc::new(KvVfs::new(store.clone(), claims, config.limits, scratch.clone()));
        let name = format!("roost-{}", VFS_COUNTER.fetch_add(1, Ordering::Relaxed));
        let registration = Registration::register(&name, Box::new(SharedVfs(vfs.clone())))
            .map_err(|code| Error::Sql { code, message: "cannot register the storage VFS".into() })?;
        Ok(Self { inner: Arc::new(StorageInner { store, vfs, scratch, config, registration }) })
    }

    /// Bytes held by open scratch files now (on disk with a scratch folder, else in memory).
    pub fn scratch_bytes(&self) -> u64 {
        self.inner.scratch.bytes()
    }

    /// The cap of [`Storage::scratch_bytes`].
    pub fn scratch_bytes_max(&self) -> u64 {
        self.inner.scratch.bytes_max()
    }

    /// The scratch folder, if any: import and export spools belong there too.
    pub fn scratch_dir(&self) -> Option<&Path> {
        self.inner.scratch.dir()
    }

    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.inner.store
    }

    pub fn config(&self) -> &StorageConfig {
        &self.inner.config
    }

    /// Opens the actor's database (empty if it has none). Costs one store read, no write.
    pub fn open(&self, id: &ActorId) -> Result<Database, Error> {
        let mut db = Database { storage: self.clone(), id: id.clone(), conn: None, poisoned: false };
        db.connect()?;
        Ok(db)
    }

    /// Size of the actor's database, or `None` if it has none.
    pub fn size_bytes(&self, id: &ActorId) -> Result<Option<u64>, Error> {
        let key = layout::meta_key(id, FileTag::Main);
        let value = self.inner.store.get_many(&[key]).map_err(Error::Store)?.pop().flatten();
        let meta =
            value.map(|v| FileMeta::decode(&v)).transpose().map_err(|e| Error::Corrupt(e.to_string()))?;
        Ok(meta.map(|m| m.size_bytes))
    }

    /// Deletes all of the actor's data durably. Returns whether there was any. Fails with
    /// [`Error::ActorBusy`] while the actor is open.
    ///
    /// One durable batch removes both files' metadata: from then on the actor has no database
    /// (a crash after it leaves nothing visible). The chunks follow in small batches so that a
    /// big actor never holds the store's committer for long; leftovers of a crash are removed
    /// when the actor is next attached.
    pub fn delete(&self, id: &ActorId) -> Result<bool, Error> {
        let files = self.inner.vfs.attach(id).map_err(attach_error)?;
        let result = delete_files(&files, self.inner.vfs.range_delete_keys_per_batch());
        drop(files);
        self.inner.vfs.detach(id);
        result
    }

    /// Actors that have a database, in id order: those whose id starts with `prefix`, after
    /// `after`, at most `limit`. Two store calls per actor examined, and at most
    /// [`LIST_SKIPPED_MAX`] actors without a database (deleted ones) are examined besides the
    /// listed ones, so a page costs at most `2 * (limit + LIST_SKIPPED_MAX) + 1` calls however
    /// many deleted actors the range holds. `next_after` says where to continue.
    pub fn list(&self, prefix: &str, after: Option<&ActorId>, limit: usize) -> Result<ActorPage, Error> {
        let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        if !prefix.bytes().all(ok) {
            return Ok(ActorPage::default());
        }
        let mut start = [b"a", prefix.as_bytes()].concat();
        let mut end = start.clone();
        *end.last_mut().expect("not empty") += 1;
        if let Some(after) = after {
            start = start.max(layout::actor_end(after));
        }
        let mut page = ActorPage::default();
        let mut skipped = 0;
        while page.actors.len() < limit {
            let Some(id) = self.next_actor(&start, &end)? else {
                page.next_after = None;
                return Ok(page);
            };
            // Jumping to the actor's end skips its keys, tombstones of deleted chunks included.
            start = layout::actor_end(&id);
            match self.size_bytes(&id)? {
                Some(size) => page.actors.push((id.clone(), size)),
                None => skipped += 1,
            }
            page.next_after = Some(id);
            if skipped == LIST_SKIPPED_MAX {
                break;
            }
        }
        Ok(page)
    }

    /// The first actor with a key in `[start, end)`.
    fn next_actor(&self, start: &[u8], end: &[u8]) -> Result<Option<ActorId>, Error> {
        let next = self.inner.store.scan(start, end, 1).map_err(Error::Store)?;
        let Some((key, _)) = next.into_iter().next() else { return Ok(None) };
        let id = layout::actor_of_key(&key);
        id.map(Some).ok_or_else(|| Error::Corrupt("a key holds an invalid actor id".into()))
    }

    /// Actors attached (open) in this process.
    pub fn attached_len(&self) -> usize {
        self.inner.vfs.attached_len()
    }
}

fn delete_files(files: &ActorFiles, keys_per_batch: usize) -> Result<bool, Error> {
    if files.main_meta.is_none() && !files.journal_exists() {
        return Ok(false);
    }
    let ops = [FileTag::Main, FileTag::Journal]
        .into_iter()
        .map(|tag| crate::kv::WriteOp::Delete(layout::meta_key(&files.id, tag)))
        .collect();
    files.write(ops, true).map_err(failure_error)?;
    files.set_journal_exists(false);
    // The delete has happened; a failure now only postpones the removal of invisible chunks.
    if let Err(failure) = files.purge_file_keys(keys_per_batch) {
        tracing::warn!(actor = %files.id, ?failure, "leftover chunks stay until the actor is next opened");
    }
    Ok(true)
}

/// Most actors without a database (deleted ones keep their generation key) that one
/// [`Storage::list`] call passes over before it returns a shorter page and a cursor.
pub const LIST_SKIPPED_MAX: usize = 64;

/// One page of [`Storage::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActorPage {
    /// Listed actors and their database sizes, in id order.
    pub actors: Vec<(ActorId, u64)>,
    /// The last actor examined: the next page starts after it. `None` once the range is
    /// exhausted; a short page with a cursor only means the call's work bound was reached.
    pub next_after: Option<ActorId>,
}

/// What a statement is, from SQLite's prepared statement, without running it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Description {
    /// Parameter names by index - 1 (`None` for `?`).
    pub params: Vec<Option<String>>,
    /// Result columns: name and declared type.
    pub columns: Vec<(String, Option<String>)>,
    /// `EXPLAIN` or `EXPLAIN QUERY PLAN`.
    pub is_explain: bool,
    /// The statement does not write the database.
    pub is_readonly: bool,
}

/// Interrupts a connection's running statement from any thread.
pub struct InterruptHandle(rusqlite::InterruptHandle);

impl InterruptHandle {
    pub fn interrupt(&self) {
        self.0.interrupt();
    }
}

struct Open {
    conn: Connection,
    files: Arc<ActorFiles>,
    /// Read by the authorizer: a `VACUUM` statement is running.
    vacuum: Arc<AtomicBool>,
}

/// One actor's SQLite database. Not shared between threads at once (`&mut self` calls).
pub struct Database {
    storage: Storage,
    id: ActorId,
    conn: Option<Open>,
    poisoned: bool,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("id", &self.id).finish_non_exhaustive()
    }
}

/// How tenants may use an allowed pragma.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PragmaUse {
    /// Read only: `PRAGMA name`, never `PRAGMA name = value`.
    Read,
    /// With or without an argument or a value: it names an object, bounds a check, or sets
    /// something that only this actor's database or connection sees.
    Any,
}

/// The pragmas tenants may run (docs/tenancy.md). Everything else is "not authorized":
/// process-wide settings (`hard_heap_limit`, `soft_heap_limit`, `threads`, `mmap_size`,
/// `temp_store_directory`, ...) and settings the storage relies on (`journal_mode`,
/// `locking_mode`, `synchronous`, `page_size`, `max_page_count`, `cache_size`,
/// `writable_schema`, ...), which stay readable where listed.
const PRAGMAS: &[(&str, PragmaUse)] = &[
    // The schema and the database, read.
    ("table_info", PragmaUse::Any),
    ("table_xinfo", PragmaUse::Any),
    ("table_list", PragmaUse::Any),
    ("index_info", PragmaUse::Any),
    ("index_xinfo", PragmaUse::Any),
    ("index_list", PragmaUse::Any),
    ("foreign_key_list", PragmaUse::Any),
    ("foreign_key_check", PragmaUse::Any),
    ("integrity_check", PragmaUse::Any),
    ("quick_check", PragmaUse::Any),
    ("database_list", PragmaUse::Read),
    ("collation_list", PragmaUse::Read),
    ("function_list", PragmaUse::Read),
    ("module_list", PragmaUse::Read),
    ("pragma_list", PragmaUse::Read),
    ("compile_options", PragmaUse::Read),
    ("page_count", PragmaUse::Read),
    ("freelist_count", PragmaUse::Read),
    ("data_version", PragmaUse::Read),
    ("schema_version", PragmaUse::Read),
    ("encoding", PragmaUse::Read),
    // Settings the storage relies on: readable, never set.
    ("page_size", PragmaUse::Read),
    ("journal_mode", PragmaUse::Read),
    ("locking_mode", PragmaUse::Read),
    ("synchronous", PragmaUse::Read),
    ("cache_size", PragmaUse::Read),
    ("max_page_count", PragmaUse::Read),
    ("temp_store", PragmaUse::Read),
    ("trusted_schema", PragmaUse::Read),
    // This database's own settings and maintenance.
    ("user_version", PragmaUse::Any),
    ("application_id", PragmaUse::Any),
    ("auto_vacuum", PragmaUse::Any),
    ("incremental_vacuum", PragmaUse::Any),
    ("optimize", PragmaUse::Any),
    ("analysis_limit", PragmaUse::Any),
    ("shrink_memory", PragmaUse::Read),
    // Settings of this actor's connection only.
    ("foreign_keys", PragmaUse::Any),
    ("defer_foreign_keys", PragmaUse::Any),
    ("recursive_triggers", PragmaUse::Any),
    ("automatic_index", PragmaUse::Any),
    ("reverse_unordered_selects", PragmaUse::Any),
    ("secure_delete", PragmaUse::Any),
    ("cell_size_check", PragmaUse::Any),
    ("legacy_alter_table", PragmaUse::Any),
];

/// Functions that reach outside the database (or leak process addresses).
const DENIED_FUNCTIONS: &[&str] = &["load_extension", "fts3_tokenizer"];

fn pragma_allowed(name: &str, value: Option<&str>) -> bool {
    PRAGMAS
        .iter()
        .find(|(allowed, _)| allowed.eq_ignore_ascii_case(name))
        .is_some_and(|(_, usage)| *usage == PragmaUse::Any || value.is_none())
}

/// The authorizer of every connection. `vacuum` is set while a `VACUUM` statement runs: its
/// scratch copy is the one database that may be attached (an empty file name is a private
/// temporary database).
fn authorize(ctx: AuthContext<'_>, vacuum: &AtomicBool) -> Authorization {
    let allowed = match ctx.action {
        AuthAction::Attach { filename } => filename.is_empty() && vacuum.load(Ordering::Relaxed),
        AuthAction::Detach { .. } => false,
        AuthAction::Pragma { pragma_name, pragma_value } => pragma_allowed(pragma_name, pragma_value),
        AuthAction::Function { function_name } => {
            !DENIED_FUNCTIONS.iter().any(|f| f.eq_ignore_ascii_case(function_name))
        }
        // A file name that is not a literal (a parameter, an expression) reaches the authorizer
        // as no name at all, which rusqlite reports as an unknown action.
        AuthAction::Unknown { code, .. } => !matches!(
            code,
            rusqlite::ffi::SQLITE_ATTACH
                | rusqlite::ffi::SQLITE_DETACH
                | rusqlite::ffi::SQLITE_PRAGMA
                | rusqlite::ffi::SQLITE_FUNCTION
        ),
        _ => true,
    };
    if allowed {
        Authorization::Allow
    } else {
        Authorization::Deny
    }
}

/// Sets the connection's `vacuum` flag for the duration of one call.
struct VacuumScope<'a>(&'a AtomicBool);

impl<'a> VacuumScope<'a> {
    fn enter(flag: &'a AtomicBool, vacuum: bool) -> Self {
        flag.store(vacuum, Ordering::Relaxed);
        Self(flag)
    }
}

impl Drop for VacuumScope<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Applies the tenancy settings to a fresh connection (before any user SQL).
fn harden(conn: &mut Connection, config: &StorageConfig, vacuum: Arc<AtomicBool>) -> rusqlite::Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, false)?;
    ffi::set_limits(
        conn,
        ConnectionLimits {
            value_bytes_max: config.value_bytes_max,
            sql_bytes_max: config.sql_bytes_max,
            attached_max: 1,
        },
    );
    conn.authorizer(Some(move |ctx: AuthContext<'_>| authorize(ctx, &vacuum)))
}

impl Database {
    pub fn id(&self) -> &ActorId {
        &self.id
    }

    fn connect(&mut self) -> Result<(), Error> {
        let vfs = &self.storage.inner.vfs;
        let files = vfs.attach(&self.id).map_err(attach_error)?;
        let config = &self.storage.inner.config;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let name = main_file_name(&files);
        let vfs_name = self.storage.inner.registration.name();
        let vacuum = Arc::new(AtomicBool::new(false));
        let authorizer_vacuum = vacuum.clone();
        let opened = Connection::open_with_flags_and_vfs(&name, flags, vfs_name).and_then(|mut conn| {
            ffi::set_lookaside(&conn, config.lookaside_slot_bytes, config.lookaside_slots)
                .map_err(|code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None))?;
            let pages_max = (config.db_bytes_max / layout::CHUNK_BYTES as u64).max(1);
            let cache_kib = (config.page_cache_bytes_max / 1024).max(1);
            conn.execute_batch(&format!(
                "PRAGMA synchronous=FULL; PRAGMA cache_size=-{cache_kib}; PRAGMA max_page_count={pages_max};"
            ))?;
            harden(&mut conn, config, authorizer_vacuum)?;
            conn.set_prepared_statement_cache_capacity(config.statement_cache_capacity);
            Ok(conn)
        });
        match opened {
            Ok(conn) => {
                self.conn = Some(Open { conn, files, vacuum });
                Ok(())
            }
            Err(e) => {
                let error = translate(e, &files);
                drop(files);
                vfs.detach(&self.id);
                Err(error)
            }
        }
    }

    fn disconnect(&mut self) {
        if let Some(open) = self.conn.take() {
            drop(open);
            self.storage.inner.vfs.detach(&self.id);
        }
    }

    /// Runs `op` on the connection, reconnecting first if a store failure broke it.
    fn with_conn<T>(
        &mut self,
        op: impl FnOnce(&mut Connection, &ActorFiles) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.with_open(|conn, files, _| op(conn, files))
    }

    /// [`Self::with_conn`], also handing over the connection's `vacuum` flag.
    fn with_open<T>(
        &mut self,
        op: impl FnOnce(&mut Connection, &ActorFiles, &AtomicBool) -> Result<T, Error>,
    ) -> Result<T, Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if self.conn.is_none() {
            self.connect()?;
        }
        let open = self.conn.as_mut().expect("connected above");
        open.files.take_failure();
        scratch::take_full();
        let result = op(&mut open.conn, &open.files, &open.vacuum);
        // Pages read ahead at the wake serve its first statement; later ones read the store.
        open.files.statement_done();
        if open.files.is_poisoned() {
            self.poisoned = true;
            self.disconnect();
            return Err(Error::Poisoned);
        }
        if open.files.is_broken() {
            // SQLite turns some I/O errors into answers (integrity_check reports unreadable
            // pages as text): a statement during which the store failed never succeeds.
            let failure = open.files.take_failure();
            self.disconnect();
            if result.is_ok() {
                return Err(failure.map_or(Error::Store(KvError::Closed), failure_error));
            }
        }
        result
    }

    /// Runs one statement.
    pub fn execute(&mut self, sql: &str, params: &Params) -> Result<QueryResult, Error> {
        self.execute_metered(sql, params, &Unmetered)
    }

    /// Runs one statement, charging its answer to `meter` row by row.
    pub fn execute_metered(
        &mut self,
        sql: &str,
        params: &Params,
        meter: &dyn AnswerMeter,
    ) -> Result<QueryResult, Error> {
        let rows_max = self.storage.inner.config.rows_max;
        self.with_open(|conn, files, vacuum| {
            let run = Run { conn, files, vacuum, rows_max, meter };
            run.statement(sql, params)
        })
    }

    /// Describes one statement (parameters, columns with declared types, explain, read-only)
    /// from SQLite's prepared statement, without running it.
    pub fn describe(&mut self, sql: &str) -> Result<Description, Error> {
        self.with_conn(|conn, files| {
            let stmt = conn.prepare(sql).map_err(|e| translate(e, files))?;
            let params =
                (1..=stmt.parameter_count()).map(|i| stmt.parameter_name(i).map(str::to_string)).collect();
            let columns =
                stmt.columns().map(|c| (c.name().to_string(), c.decl_type().map(str::to_string))).collect();
            Ok(Description {
                params,
                columns,
                is_explain: stmt.is_explain() != 0,
                is_readonly: stmt.readonly(),
            })
        })
    }

    /// Runs SQL text that may hold several statements, without parameters or results.
    pub fn execute_script(&mut self, sql: &str) -> Result<(), Error> {
        use rusqlite::fallible_iterator::FallibleIterator;
        self.with_open(|conn, files, vacuum| {
            // One statement at a time, as `execute_batch` does (each stepped once), so that
            // only a `VACUUM` statement runs with the flag that lets it attach its scratch
            // copy; statements are prepared (and any `ATTACH` in them authorized) without it.
            let mut statements = rusqlite::Batch::new(conn, sql);
            while let Some(mut stmt) = statements.next().map_err(|e| translate(e, files))? {
                let is_vacuum = stmt.expanded_sql().is_some_and(|text| crate::sql::scan(&text).is_vacuum());
                let _scope = VacuumScope::enter(vacuum, is_vacuum);
                stmt.raw_query().next().map_err(|e| translate(e, files))?;
            }
            Ok(())
        })
    }

    /// Runs statements in order. With `transaction`, all or nothing: on the first failure
    /// everything is rolled back (to a savepoint when a transaction is already open), and a
    /// statement that would end the batch's transaction (`COMMIT`, `ROLLBACK`, an
    /// `OR ROLLBACK` conflict) fails the batch instead of letting the rest run in autocommit.
    pub fn batch(&mut self, statements: &[Statement], transaction: bool) -> Result<Vec<QueryResult>, Error> {
        self.batch_metered(statements, transaction, &Unmetered)
    }

    /// [`Self::batch`], charging the answers to `meter` row by row.
    pub fn batch_metered(
        &mut self,
        statements: &[Statement],
        transaction: bool,
        meter: &dyn AnswerMeter,
    ) -> Result<Vec<QueryResult>, Error> {
        let rows_max = self.storage.inner.config.rows_max;
        self.with_open(|conn, files, vacuum| {
            if transaction {
                atomic(conn, files, |conn| {
                    Run { conn, files, vacuum, rows_max, meter }.inside_transaction(statements)
                })
            } else {
                let run = Run { conn, files, vacuum, rows_max, meter };
                let each = |(index, s): (usize, &Statement)| {
                    run.statement(&s.sql, &s.params).map_err(|source| in_batch(index, source))
                };
                statements.iter().enumerate().map(each).collect()
            }
        })
    }

    /// Runs `body` in a write transaction: committed if it returns `Ok`, rolled back otherwise.
    pub fn transaction<T>(&mut self, body: impl FnOnce(&mut Self) -> Result<T, Error>) -> Result<T, Error> {
        self.execute_script("BEGIN IMMEDIATE")?;
        match body(self) {
            Ok(value) => match self.execute_script("COMMIT") {
                Ok(()) => Ok(value),
                Err(e) => {
                    self.rollback_quietly();
                    Err(e)
                }
            },
            Err(e) => {
                self.rollback_quietly();
                Err(e)
            }
        }
    }

    fn rollback_quietly(&mut self) {
        if let Some(open) = &self.conn {
            if !open.conn.is_autocommit() {
                let _ = open.conn.execute_batch("ROLLBACK");
            }
        }
    }

    /// Frees what an idle connection need not hold: cached statements and unused cached pages.
    pub fn release_memory(&mut self) {
        if let Some(open) = &self.conn {
            open.conn.flush_prepared_statement_cache();
            ffi::release_memory(&open.conn);
        }
    }

    /// Writes a consistent copy of the database to a plain SQLite file at `path` (SQLite's
    /// backup API, so the copy is a normal single-file database in rollback-journal mode).
    pub fn export_to(&mut self, path: &std::path::Path) -> Result<(), Error> {
        self.with_conn(|conn, files| {
            conn.backup(rusqlite::MAIN_DB, path, None::<fn(_)>).map_err(|e| translate(e, files))
        })
    }

    /// Replaces the database with the SQLite file at `path`, atomically (one SQLite transaction
    /// through the storage). The file is checked first, and read without creating any file
    /// beside it: anything that is not an intact SQLite database with 4096-byte pages in
    /// rollback-journal mode is refused with [`Error::Parameters`] and changes nothing (convert
    /// a WAL-mode copy with [`prepare_upload_header`](super::prepare_upload_header)). The file
    /// is opened as immutable: it must not change until this returns.
    pub fn import_from(&mut self, path: &std::path::Path) -> Result<(), Error> {
        let source = open_upload(path)?;
        self.with_conn(|conn, files| {
            let backup =
                rusqlite::backup::Backup::new_with_names(&source, rusqlite::MAIN_DB, conn, rusqlite::MAIN_DB)
                    .map_err(|e| translate(e, files))?;
            backup.run_to_completion(256, std::time::Duration::ZERO, None).map_err(|e| translate(e, files))
        })
    }

    /// Memory the connection holds (zero while disconnected).
    pub fn memory(&self) -> ffi::ConnectionMemory {
        self.conn.as_ref().map(|o| ffi::connection_memory(&o.conn)).unwrap_or_default()
    }

    /// A handle that interrupts the statement running on this connection from another thread
    /// (the statement fails with [`Error::Interrupted`]). `None` while disconnected.
    pub fn interrupt_handle(&self) -> Option<InterruptHandle> {
        self.conn.as_ref().map(|o| InterruptHandle(o.conn.get_interrupt_handle()))
    }

    /// Is a transaction open on this connection?
    pub fn in_transaction(&self) -> bool {
        self.conn.as_ref().is_some_and(|o| !o.conn.is_autocommit())
    }

    /// Closes the connection and deletes all of the actor's data.
    pub fn delete(mut self) -> Result<bool, Error> {
        self.disconnect();
        self.storage.delete(&self.id)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // Closing blocks (SQLite's close, the store): never on an async runtime's thread.
        debug_assert!(
            std::thread::panicking() || tokio::runtime::Handle::try_current().is_err(),
            "a Database was closed on an async runtime thread"
        );
        self.disconnect();
    }
}

/// Maps a SQLite error to the layer's error, preferring the storage failure behind it.
fn translate(error: rusqlite::Error, files: &ActorFiles) -> Error {
    if let Some(failure) = files.take_failure() {
        return failure_error(failure);
    }
    match error {
        rusqlite::Error::SqliteFailure(e, message) => {
            if e.code == rusqlite::ErrorCode::OperationInterrupted {
                return Error::Interrupted;
            }
            if e.code == rusqlite::ErrorCode::DiskFull {
                if let Some(bytes_max) = scratch::take_full() {
                    return Error::ScratchFull { bytes_max };
                }
            }
            let message = message.unwrap_or_else(|| e.to_string());
            Error::Sql { code: e.extended_code, message }
        }
        rusqlite::Error::MultipleStatement => {
            Error::Parameters("one statement expected, found several (use a batch)".into())
        }
        rusqlite::Error::InvalidParameterCount(given, expected) => {
            Error::Parameters(format!("the statement takes {expected} parameters, {given} given"))
        }
        rusqlite::Error::InvalidParameterName(name) => Error::Parameters(format!("unknown parameter {name}")),
        other => Error::Sql { code: rusqlite::ffi::SQLITE_ERROR, message: other.to_string() },
    }
}

fn bind(stmt: &mut rusqlite::Statement<'_>, params: &Params) -> Result<(), Error> {
    let expected = stmt.parameter_count();
    match params {
        Params::None if expected == 0 => Ok(()),
        Params::None => {
            Err(Error::Parameters(format!("the statement takes {expected} parameters, none given")))
        }
        Params::Positional(values) => {
            if values.len() != expected {
                let given = values.len();
                return Err(Error::Parameters(format!(
                    "the statement takes {expected} parameters, {given} given"
                )));
            }
            for (i, value) in values.iter().enumerate() {
                stmt.raw_bind_parameter(i + 1, value).map_err(|e| Error::Parameters(e.to_string()))?;
            }
            Ok(())
        }
        Params::Named(pairs) => {
            let mut bound = vec![false; expected];
            for (name, value) in pairs {
                let index = named_index(stmt, name)?;
                stmt.raw_bind_parameter(index, value).map_err(|e| Error::Parameters(e.to_string()))?;
                bound[index - 1] = true;
            }
            match bound.iter().position(|b| !b) {
                None => Ok(()),
                Some(i) => {
                    let name = stmt.parameter_name(i + 1).unwrap_or("?").to_string();
                    Err(Error::Parameters(format!("parameter {name} has no value")))
                }
            }
        }
    }
}

fn named_index(stmt: &rusqlite::Statement<'_>, name: &str) -> Result<usize, Error> {
    let unknown = || Error::Parameters(format!("unknown parameter {name}"));
    if name.starts_with([':', '@', '$']) {
        return stmt.parameter_index(name).map_err(|_| unknown())?.ok_or_else(unknown);
    }
    for prefix in [':', '@', '$'] {
        if let Ok(Some(index)) = stmt.parameter_index(&format!("{prefix}{name}")) {
            return Ok(index);
        }
    }
    Err(unknown())
}

/// What running a statement needs.
fn in_batch(index: usize, source: Error) -> Error {
    Error::InBatch { index, source: Box::new(source) }
}

/// SQLite's extended code for a commit that the commit hook turned into a rollback.
const COMMIT_REFUSED: i32 = rusqlite::ffi::SQLITE_CONSTRAINT_COMMITHOOK;

/// Why a statement left its batch's transaction: its own failure when it has a better
/// account (an `OR ROLLBACK` conflict names the constraint), else that it ended the
/// transaction (`ROLLBACK`, or a `COMMIT` refused by [`atomic`]).
fn transaction_ended_by(ran: Result<QueryResult, Error>) -> Error {
    match ran {
        Err(error) if !matches!(error, Error::Sql { code: COMMIT_REFUSED, .. }) => error,
        _ => Error::TransactionClosed,
    }
}

/// A transactional batch: `statements` run in a transaction opened here (a savepoint inside
/// a transaction already open), committed or released here, rolled back on any failure.
/// While they run every commit is refused (SQLite's commit hook turns it into a rollback),
/// so that a `COMMIT` among them cannot make the earlier ones durable.
fn atomic(
    conn: &mut Connection,
    files: &ActorFiles,
    statements: impl FnOnce(&Connection) -> Result<Vec<QueryResult>, Error>,
) -> Result<Vec<QueryResult>, Error> {
    let nested = !conn.is_autocommit();
    conn.commit_hook(Some(|| true)).map_err(|e| translate(e, files))?;
    let begin = if nested { "SAVEPOINT roost_batch" } else { "BEGIN IMMEDIATE" };
    let ran = conn.execute_batch(begin).map_err(|e| translate(e, files)).and_then(|()| statements(conn));
    // Should letting commits through fail (out of memory), the batch is rolled back rather
    // than committed with the hook still refusing.
    let released = conn.commit_hook(None::<fn() -> bool>).map_err(|e| translate(e, files));
    let ran = released.and(ran);
    let results = match ran {
        Ok(results) => results,
        Err(error) => {
            // Errors are ignored: when a statement ended the transaction nothing is left
            // to undo.
            let undo = if nested { "ROLLBACK TO roost_batch; RELEASE roost_batch" } else { "ROLLBACK" };
            let _ = conn.execute_batch(undo);
            return Err(error);
        }
    };
    let end = if nested { "RELEASE roost_batch" } else { "COMMIT" };
    if let Err(e) = conn.execute_batch(end) {
        let error = translate(e, files);
        if !nested && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        return Err(error);
    }
    Ok(results)
}

struct Run<'a> {
    conn: &'a Connection,
    files: &'a ActorFiles,
    vacuum: &'a AtomicBool,
    rows_max: usize,
    meter: &'a dyn AnswerMeter,
}

impl Run<'_> {
    /// The statements of a transactional batch (see [`atomic`]); the first that fails, or
    /// that leaves the connection in autocommit, stops the batch.
    fn inside_transaction(&self, statements: &[Statement]) -> Result<Vec<QueryResult>, Error> {
        let mut results = Vec::with_capacity(statements.len());
        for (index, statement) in statements.iter().enumerate() {
            let ran = self.statement(&statement.sql, &statement.params);
            match (ran, self.conn.is_autocommit()) {
                (Ok(result), false) => results.push(result),
                (Err(source), false) => return Err(in_batch(index, source)),
                (ran, true) => return Err(in_batch(index, transaction_ended_by(ran))),
            }
        }
        Ok(results)
    }

    fn statement(&self, sql: &str, params: &Params) -> Result<QueryResult, Error> {
        let (conn, files) = (self.conn, self.files);
        let _scope = VacuumScope::enter(self.vacuum, crate::sql::scan(sql).is_vacuum());
        let mut stmt = conn.prepare_cached(sql).map_err(|e| translate(e, files))?;
        bind(&mut stmt, params)?;
        let (columns, decltypes): (Vec<String>, Vec<Option<String>>) =
            stmt.columns().map(|c| (c.name().to_string(), c.decl_type().map(str::to_string))).unzip();
        let header_bytes: u64 = columns.iter().map(|c| c.len() as u64 * 2 + ROW_OVERHEAD_BYTES).sum::<u64>()
            + decltypes.iter().flatten().map(|d| d.len() as u64 * 2).sum::<u64>();
        self.meter.charge(header_bytes)?;
        let readonly = stmt.readonly();
        // A writing statement that returns rows (RETURNING) runs in a savepoint so that hitting
        // the row or answer limit applies nothing.
        let guarded = !readonly && !columns.is_empty();
        if guarded {
            conn.execute_batch("SAVEPOINT roost_rows").map_err(|e| translate(e, files))?;
        }
        let collected = self.collect_rows(&mut stmt, columns.len()).map_err(|e| match e {
            RowsError::Sqlite(e) => translate(e, files),
            RowsError::TooMany => Error::TooManyRows { rows_max: self.rows_max },
            RowsError::Meter(e) => e,
        });
        drop(stmt);
        if guarded {
            let end = if collected.is_ok() {
                "RELEASE roost_rows"
            } else {
                "ROLLBACK TO roost_rows; RELEASE roost_rows"
            };
            conn.execute_batch(end).map_err(|e| translate(e, files))?;
        }
        let rows = collected?;
        Ok(QueryResult {
            columns,
            decltypes,
            rows,
            rows_affected: if readonly { 0 } else { conn.changes() },
            last_insert_rowid: conn.last_insert_rowid(),
        })
    }

    /// Reads every row, charging each value to the meter before copying it out of SQLite.
    fn collect_rows(
        &self,
        stmt: &mut rusqlite::Statement<'_>,
        width: usize,
    ) -> Result<Vec<Vec<Value>>, RowsError> {
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(RowsError::Sqlite)? {
            if out.len() == self.rows_max {
                return Err(RowsError::TooMany);
            }
            self.meter.charge(ROW_OVERHEAD_BYTES).map_err(RowsError::Meter)?;
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                let value = row.get_ref(i).map_err(RowsError::Sqlite)?;
                self.meter.charge(value_ref_cost(value)).map_err(RowsError::Meter)?;
                values.push(Value::from(value));
            }
            out.push(values);
        }
        Ok(out)
    }
}

enum RowsError {
    Sqlite(rusqlite::Error),
    TooMany,
    Meter(Error),
}
