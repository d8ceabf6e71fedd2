//! [`Storage`] (a store plus its registered VFS) and [`Database`] (one actor's connection).
//!
//! A `Database` owns one SQLite connection in rollback-journal mode with `synchronous=FULL`.
//! An authorizer keeps users from changing what the storage relies on (journal mode, locking,
//! page size, the size cap) or attaching other databases. After a store failure the connection
//! is dropped and reopened on the next call, so SQLite re-reads the store and rolls back any
//! half-written transaction from its journal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};

use super::actor::{ActorFiles, Failure};
use super::backend::{main_file_name, AttachError, KvVfs};
use super::error::Error;
use super::ffi::{self, FileBackend, FileKind, IoError, Registration, VfsBackend};
use super::file::VfsLimits;
use super::layout::{self, FileMeta, FileTag};
use crate::actor_id::ActorId;
use crate::kv::{KvError, KvStore};

/// Configuration of [`Storage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageConfig {
    pub limits: VfsLimits,
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
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            limits: VfsLimits::default(),
            page_cache_bytes_max: 2 << 20,
            db_bytes_max: 10 << 30,
            rows_max: 100_000,
            statement_cache_capacity: 16,
            lookaside_slot_bytes: 0,
            lookaside_slots: 0,
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
    pub rows: Vec<Vec<Value>>,
    pub rows_affected: u64,
    pub last_insert_rowid: i64,
}

struct StorageInner {
    store: Arc<dyn KvStore>,
    vfs: Arc<KvVfs>,
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
    }
}

fn attach_error(e: AttachError) -> Error {
    match e {
        AttachError::Busy => Error::ActorBusy,
        AttachError::Failed(f) => failure_error(f),
    }
}

impl Storage {
    /// Registers a VFS over `store`.
    pub fn new(store: Arc<dyn KvStore>, config: StorageConfig) -> Result<Self, Error> {
        let vfs = Arc::new(KvVfs::new(store.clone(), config.limits));
        let name = format!("roost-{}", VFS_COUNTER.fetch_add(1, Ordering::Relaxed));
        let registration = Registration::register(&name, Box::new(SharedVfs(vfs.clone())))
            .map_err(|code| Error::Sql { code, message: "cannot register the storage VFS".into() })?;
        Ok(Self { inner: Arc::new(StorageInner { store, vfs, config, registration }) })
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
    pub fn delete(&self, id: &ActorId) -> Result<bool, Error> {
        let files = self.inner.vfs.attach(id).map_err(attach_error)?;
        let result = delete_files(&files);
        drop(files);
        self.inner.vfs.detach(id);
        result
    }

    /// Actors that have a database, in id order: those whose id starts with `prefix`, after
    /// `after`, at most `limit`. Two store calls per actor listed.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&ActorId>,
        limit: usize,
    ) -> Result<Vec<(ActorId, u64)>, Error> {
        let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        if !prefix.bytes().all(ok) {
            return Ok(Vec::new());
        }
        let mut start = [b"a", prefix.as_bytes()].concat();
        let mut end = start.clone();
        *end.last_mut().expect("not empty") += 1;
        if let Some(after) = after {
            start = start.max(layout::actor_end(after));
        }
        let mut out = Vec::new();
        while out.len() < limit {
            let next = self.inner.store.scan(&start, &end, 1).map_err(Error::Store)?;
            let Some((key, _)) = next.into_iter().next() else { break };
            let id_end = key.iter().position(|b| *b == 0).unwrap_or(key.len());
            let id = std::str::from_utf8(&key[1..id_end]).ok().and_then(|s| ActorId::new(s).ok());
            let Some(id) = id else { return Err(Error::Corrupt("a key holds an invalid actor id".into())) };
            if let Some(size) = self.size_bytes(&id)? {
                out.push((id.clone(), size));
            }
            start = layout::actor_end(&id);
        }
        Ok(out)
    }

    /// Actors attached (open) in this process.
    pub fn attached_len(&self) -> usize {
        self.inner.vfs.attached_len()
    }
}

fn delete_files(files: &ActorFiles) -> Result<bool, Error> {
    if files.main_meta.is_none() && !files.journal_exists() {
        return Ok(false);
    }
    let ops = [FileTag::Main, FileTag::Journal]
        .into_iter()
        .map(|tag| {
            let (start, end) = layout::file_range(&files.id, tag);
            crate::kv::WriteOp::DeleteRange { start, end }
        })
        .collect();
    files.write(ops, true).map_err(failure_error)?;
    Ok(true)
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

/// Pragmas a user may read but not set: the storage depends on their values.
const GUARDED_PRAGMAS: &[&str] = &[
    "journal_mode",
    "locking_mode",
    "synchronous",
    "page_size",
    "max_page_count",
    "mmap_size",
    "cache_size",
    "cache_spill",
    "temp_store_directory",
    "data_store_directory",
    "writable_schema",
];

fn authorize(ctx: AuthContext<'_>) -> Authorization {
    match ctx.action {
        // VACUUM attaches an anonymous scratch database (empty name): that stays allowed.
        AuthAction::Attach { filename } if !filename.is_empty() => Authorization::Deny,
        AuthAction::Pragma { pragma_name, pragma_value: Some(_) }
            if GUARDED_PRAGMAS.iter().any(|p| p.eq_ignore_ascii_case(pragma_name)) =>
        {
            Authorization::Deny
        }
        _ => Authorization::Allow,
    }
}

impl Database {
    pub fn id(&self) -> &ActorId {
        &self.id
    }

    fn connect(&mut self) -> Result<(), Error> {
        let vfs = &self.storage.inner.vfs;
        let files = vfs.attach(&self.id).map_err(attach_error)?;
        let config = self.storage.inner.config;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let name = main_file_name(&self.id);
        let vfs_name = self.storage.inner.registration.name();
        let opened = Connection::open_with_flags_and_vfs(&name, flags, vfs_name).and_then(|mut conn| {
            ffi::set_lookaside(&conn, config.lookaside_slot_bytes, config.lookaside_slots)
                .map_err(|code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None))?;
            let pages_max = (config.db_bytes_max / layout::CHUNK_BYTES as u64).max(1);
            let cache_kib = (config.page_cache_bytes_max / 1024).max(1);
            conn.execute_batch(&format!(
                "PRAGMA synchronous=FULL; PRAGMA cache_size=-{cache_kib}; PRAGMA max_page_count={pages_max};"
            ))?;
            conn.authorizer(Some(authorize))?;
            conn.set_prepared_statement_cache_capacity(config.statement_cache_capacity);
            Ok(conn)
        });
        match opened {
            Ok(conn) => {
                self.conn = Some(Open { conn, files });
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
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if self.conn.is_none() {
            self.connect()?;
        }
        let open = self.conn.as_mut().expect("connected above");
        open.files.take_failure();
        let result = op(&mut open.conn, &open.files);
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
        let rows_max = self.storage.inner.config.rows_max;
        self.with_conn(|conn, files| run_statement(conn, files, sql, params, rows_max))
    }

    /// Runs SQL text that may hold several statements, without parameters or results.
    pub fn execute_script(&mut self, sql: &str) -> Result<(), Error> {
        self.with_conn(|conn, files| conn.execute_batch(sql).map_err(|e| translate(e, files)))
    }

    /// Runs statements in order. With `transaction`, all or nothing: on the first failure
    /// everything is rolled back (to a savepoint when a transaction is already open).
    pub fn batch(&mut self, statements: &[Statement], transaction: bool) -> Result<Vec<QueryResult>, Error> {
        let rows_max = self.storage.inner.config.rows_max;
        self.with_conn(|conn, files| {
            let nested = !conn.is_autocommit();
            if transaction {
                let begin = if nested { "SAVEPOINT roost_batch" } else { "BEGIN IMMEDIATE" };
                conn.execute_batch(begin).map_err(|e| translate(e, files))?;
            }
            let mut results = Vec::with_capacity(statements.len());
            for (index, statement) in statements.iter().enumerate() {
                match run_statement(conn, files, &statement.sql, &statement.params, rows_max) {
                    Ok(result) => results.push(result),
                    Err(source) => {
                        if transaction {
                            let undo = if nested {
                                "ROLLBACK TO roost_batch; RELEASE roost_batch"
                            } else {
                                "ROLLBACK"
                            };
                            let _ = conn.execute_batch(undo);
                        }
                        return Err(Error::InBatch { index, source: Box::new(source) });
                    }
                }
            }
            if transaction {
                let end = if nested { "RELEASE roost_batch" } else { "COMMIT" };
                if let Err(e) = conn.execute_batch(end) {
                    let error = translate(e, files);
                    if !nested && !conn.is_autocommit() {
                        let _ = conn.execute_batch("ROLLBACK");
                    }
                    return Err(error);
                }
            }
            Ok(results)
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
    /// through the storage). The file is checked first: anything that is not an intact SQLite
    /// database is refused with [`Error::Parameters`] and changes nothing.
    pub fn import_from(&mut self, path: &std::path::Path) -> Result<(), Error> {
        validate_sqlite_file(path)?;
        self.with_conn(|conn, files| {
            let source = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|e| Error::Parameters(format!("cannot open the upload: {e}")))?;
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

fn run_statement(
    conn: &Connection,
    files: &ActorFiles,
    sql: &str,
    params: &Params,
    rows_max: usize,
) -> Result<QueryResult, Error> {
    let mut stmt = conn.prepare_cached(sql).map_err(|e| translate(e, files))?;
    bind(&mut stmt, params)?;
    let columns: Vec<String> = stmt.column_names().map(str::to_string).collect();
    let readonly = stmt.readonly();
    // A writing statement that returns rows (RETURNING) runs in a savepoint so that hitting
    // the row limit applies nothing.
    let guarded = !readonly && !columns.is_empty();
    if guarded {
        conn.execute_batch("SAVEPOINT roost_rows").map_err(|e| translate(e, files))?;
    }
    let collected = collect_rows(&mut stmt, columns.len(), rows_max).map_err(|e| match e {
        RowsError::Sqlite(e) => translate(e, files),
        RowsError::TooMany => Error::TooManyRows { rows_max },
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
        rows,
        rows_affected: if readonly { 0 } else { conn.changes() },
        last_insert_rowid: conn.last_insert_rowid(),
    })
}

enum RowsError {
    Sqlite(rusqlite::Error),
    TooMany,
}

fn collect_rows(
    stmt: &mut rusqlite::Statement<'_>,
    width: usize,
    rows_max: usize,
) -> Result<Vec<Vec<Value>>, RowsError> {
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(RowsError::Sqlite)? {
        if out.len() == rows_max {
            return Err(RowsError::TooMany);
        }
        let values = (0..width).map(|i| row.get_ref(i).map(Value::from)).collect::<Result<_, _>>();
        out.push(values.map_err(RowsError::Sqlite)?);
    }
    Ok(out)
}

/// Refuses files that are not intact SQLite databases (`quick_check`).
fn validate_sqlite_file(path: &std::path::Path) -> Result<(), Error> {
    let refuse = |why: String| Error::Parameters(format!("the upload is not a valid SQLite database: {why}"));
    let mut header = [0u8; 16];
    let mut file = std::fs::File::open(path).map_err(|e| refuse(e.to_string()))?;
    std::io::Read::read_exact(&mut file, &mut header)
        .map_err(|_| refuse("it is shorter than a header".into()))?;
    if &header != b"SQLite format 3\0" {
        return Err(refuse("it does not start with the SQLite header".into()));
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| refuse(e.to_string()))?;
    let check: String =
        conn.query_row("PRAGMA quick_check", [], |row| row.get(0)).map_err(|e| refuse(e.to_string()))?;
    if check != "ok" {
        return Err(refuse(check));
    }
    Ok(())
}
