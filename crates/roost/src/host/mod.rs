//! The actor host: wakes actors on demand, runs their requests one at a time on a bounded pool
//! of blocking threads, puts idle actors to sleep, and keeps the process inside its memory
//! budget.
//!
//! Invariants:
//! - an actor is in the registry only while waking, awake, sleeping or poisoned; an asleep
//!   actor costs no memory here;
//! - concurrent requests for a sleeping actor share one wake (the first creates the registry
//!   entry and wakes it, the others wait for its state to change);
//! - one request per actor runs at a time (`turn`), and SQLite and store calls only ever run on
//!   the blocking pool or the reaper thread;
//! - wakes pass admission: at most `wakes_in_flight_max` run, at most `wake_queue_max` wait;
//!   beyond that a request fails at once with `Overloaded` and a retry-after hint;
//! - before a wake, least-recently-used idle actors are put to sleep while the awake count or
//!   SQLite's memory is over its pool; if none can sleep, the wake fails with `Overloaded`;
//! - answers are charged to the `request_buffers` pool row by row while they are collected
//!   (see `buffers`); a request whose bytes do not fit fails with `Overloaded` (pool busy) or
//!   `AnswerTooLarge` (over one answer's limit), never allocates them.

mod buffers;
mod config;
mod pool;
mod registry;

pub use self::buffers::{BufferError, BufferStats, RequestBuffers, RequestMemory};
pub use self::config::{BudgetPlan, HostConfig};
pub use self::registry::{
    process_memory, ActorList, ActorMemory, ActorState, Host, HostStats, MemoryPool, MemoryReport, Pinned,
    ProcessMemory,
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
