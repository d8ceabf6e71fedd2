//! SQLite over the KV store: a Rust VFS and the [`Database`] handle built on it.
//!
//! One actor is one SQLite database. Pages are 4 KiB chunks in the store (see `layout`). A
//! write transaction that fits the page cache commits as one atomic store batch through
//! SQLite's batch-atomic write; larger ones go through SQLite's rollback journal, which lives
//! in the store too. Database files never touch the local file system; only scratch files
//! (sorts, temp tables, `VACUUM`'s copy) may, in a configured scratch folder (see `scratch`).

mod actor;
mod answer;
mod backend;
mod database;
mod error;
mod ffi;
mod file;
pub mod layout;
mod scratch;
mod upload;

pub use self::actor::RoundTrips;
pub use self::answer::{value_cost, AnswerMeter, Unmetered, ROW_OVERHEAD_BYTES};
pub use self::database::{
    ActorPage, Database, Description, InterruptHandle, Params, QueryResult, Statement, Storage,
    StorageConfig, Value, LIST_SKIPPED_MAX,
};
pub use self::error::Error;
pub use self::ffi::{set_sqlite_heap_limits, sqlite_memory, ConnectionMemory, SqliteMemory};
pub use self::file::VfsLimits;
pub use self::upload::{prepare_upload_header, UPLOAD_HEADER_BYTES};
