//! The error type of the storage layer (`vfs`), translated from SQLite and store failures.

use crate::actor_id::InvalidActorId;
use crate::kv::{KvError, NodeAddress};

/// Errors of [`Database`](super::Database) and [`Storage`](super::Storage).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("invalid actor id: {0}")]
    InvalidActorId(#[from] InvalidActorId),
    /// SQLite refused the statement: syntax, constraint, type, missing table, full database...
    /// `code` is SQLite's extended result code.
    #[error("{message}")]
    Sql { code: i32, message: String },
    /// Parameters do not match the statement.
    #[error("{0}")]
    Parameters(String),
    /// The transaction changed more existing data than the journal limit allows; it was
    /// rolled back.
    #[error("transaction too large: its rollback journal would exceed {bytes_max} bytes")]
    TransactionTooLarge { bytes_max: u64 },
    /// An answer would hold more rows than allowed; nothing was applied.
    #[error("the statement returns more than {rows_max} rows")]
    TooManyRows { rows_max: usize },
    /// An answer would take more bytes than one answer may (`bytes_max`, values plus their
    /// encoding); nothing was applied.
    #[error(
        "the answer would take more than {bytes_max} bytes of memory; select fewer rows or smaller values"
    )]
    AnswerTooLarge { bytes_max: u64 },
    /// The memory pool that answers are built in is taken by other requests; nothing was
    /// applied. Retry after the hint.
    #[error("answer memory is exhausted by other requests; retry after {retry_after_ms} ms")]
    AnswerMemoryFull { retry_after_ms: u64 },
    /// Another owner claimed the actor; this handle may no longer write.
    #[error("the actor was claimed by another owner")]
    Fenced,
    /// Another live node owns the actor (a store shared by several nodes); ask it.
    #[error("the actor is served by node {}", .0.node_id)]
    Moved(NodeAddress),
    /// The store failed; any open transaction was rolled back and the next call reconnects.
    #[error("storage failure: {0}")]
    Store(KvError),
    /// Stored data is not in a format this version reads.
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// Scratch files (sorts, temp tables, `VACUUM`'s copy) of running statements would pass
    /// their cap; the statement was rolled back. Retrying may work once others finish.
    #[error(
        "temporary storage is full: sorts, temporary tables and VACUUM copies would pass the \
         {bytes_max}-byte scratch limit"
    )]
    ScratchFull { bytes_max: u64 },
    /// The scratch folder cannot be prepared.
    #[error("cannot prepare the scratch folder: {0}")]
    ScratchFolder(String),
    /// The actor is open in this process already.
    #[error("actor is already open")]
    ActorBusy,
    /// A storage callback panicked; the handle is unusable and must be dropped.
    #[error("actor poisoned by an internal error")]
    Poisoned,
    /// The statement was interrupted.
    #[error("statement interrupted")]
    Interrupted,
    /// A statement of a transactional batch ended the batch's transaction (`ROLLBACK`, or a
    /// `COMMIT`, which is refused): the batch was rolled back, nothing was applied.
    #[error("the statement ended the batch's transaction (a batch with `transaction` must not run COMMIT or ROLLBACK); nothing was applied")]
    TransactionClosed,
    /// Statement `index` of a batch failed; with a transactional batch nothing was applied.
    #[error("statement {index} failed: {source}")]
    InBatch { index: usize, source: Box<Error> },
}
