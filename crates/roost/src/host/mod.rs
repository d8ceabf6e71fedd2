//! The actor host: wakes actors on demand, runs their requests one at a time on a bounded pool
//! of blocking threads, puts idle actors to sleep, and keeps the process inside its memory
//! budget.
//!
//! Invariants:
//! - an actor is in the registry only while waking, awake, sleeping or poisoned; an asleep
//!   actor costs no memory here;
//! - concurrent requests for a sleeping actor share one wake (the first creates the registry
//!   entry and starts the wake on a task of its own, all of them wait for its state to change);
//!   a failed wake's error is the answer for every request that waited on it;
//! - one request per actor runs at a time (`turn`); the pool job of a request holds its turn,
//!   so a caller that stops waiting frees the actor only once its job has ended;
//! - SQLite and store calls, closing a database included, only ever run on the blocking pool
//!   or the reaper thread (`Database`'s drop asserts it in debug builds); sleep, delete,
//!   eviction and poisoning each happen inside one pool job, so a cancelled caller never
//!   leaves an actor half asleep;
//! - wakes pass admission: at most `wakes_in_flight_max` run, at most `wake_queue_max` wait;
//!   beyond that a request fails at once with `Overloaded` and a retry-after hint;
//! - a wake holds a share of the awake budget before its open starts, and the share stays with
//!   the database until it is closed: actors awake or opening never exceed `awake_max`. When
//!   no share is free (or SQLite's memory is over its pool), least-recently-used idle actors
//!   are put to sleep first; if none can sleep, the wake fails with `Overloaded`;
//! - idle actors (awake or poisoned, no request) are listed least recently used first, in the
//!   order they went idle; picking k victims visits k entries, not the registry;
//! - answers are charged to the `request_buffers` pool row by row while they are collected
//!   (see `buffers`); a request whose bytes do not fit fails with `Overloaded` (pool busy) or
//!   `AnswerTooLarge` (over one answer's limit), never allocates them.

mod awake;
mod buffers;
mod config;
mod idle;
mod pool;
mod registry;

pub use self::buffers::{BufferError, BufferStats, RequestBuffers, RequestMemory};
pub use self::config::{BudgetPlan, HostConfig, ACTOR_BYTES_MIN, ACTOR_RUST_BYTES};
pub use self::registry::{
    process_memory, process_memory_of, ActorList, ActorMemory, ActorState, Host, HostStats, MemoryPool,
    MemoryReport, Pinned, ProcessMemory,
};

use crate::vfs;

/// Errors of the host layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HostError {
    /// A limit was hit; retry after the hint (with backoff).
    #[error("overloaded ({reason}); retry after {retry_after_ms} ms")]
    Overloaded { reason: &'static str, retry_after_ms: u64 },
    /// The actor's database failed or refused the request.
    #[error(transparent)]
    Database(#[from] vfs::Error),
    /// An internal error poisoned the actor; it is unusable until it sleeps.
    #[error("actor poisoned by an internal error")]
    Poisoned,
    /// The host is shutting down.
    #[error("host is shutting down")]
    ShuttingDown,
    /// The configuration cannot work.
    #[error("invalid host configuration: {0}")]
    Config(String),
}
