//! SQLite over the KV store: a Rust VFS and the [`Database`] handle built on it.
//!
//! One actor is one SQLite database. Pages are 4 KiB chunks in the store (see `layout`). A
//! write transaction that fits the page cache commits as one atomic store batch through
//! SQLite's batch-atomic write; larger ones go through SQLite's rollback journal, which lives
//! in the store too. Nothing touches the local file system.

mod actor;
mod answer;
mod backend;
mod database;
mod error;
mod ffi;
mod file;
pub mod layout;

pub use self::answer::{value_cost, AnswerMeter, Unmetered, ROW_OVERHEAD_BYTES};
pub use self::database::{
    ActorPage, Database, InterruptHandle, Params, QueryResult, Statement, Storage, StorageConfig, Value,
    LIST_SKIPPED_MAX,
};
pub use self::error::Error;
pub use self::ffi::{set_sqlite_heap_limits, sqlite_memory, ConnectionMemory, SqliteMemory};
pub use self::file::VfsLimits;
