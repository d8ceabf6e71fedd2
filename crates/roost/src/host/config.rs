//! Host configuration and the memory budget plan derived from it.

use crate::vfs::Storage;

/// Configuration of a [`Host`](super::Host). Every queue and map has a limit here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// The whole process's memory budget.
    pub memory_budget_bytes: u64,
    /// Reserved for the process itself: code, runtime, thread stacks, allocator slack.
    pub base_bytes: u64,
    /// Reserved for request and response buffers: bodies, answers being built and sent, Hrana
    /// stream state. Beyond it requests fail with `Overloaded`.
    pub request_buffers_bytes_max: u64,
    /// Most bytes one request's answers may take in that pool (rows held plus their encoding);
    /// beyond it the statement fails with `AnswerTooLarge`.
    pub answer_bytes_max: u64,
    /// Share of the SQLite pool meant for cached pages (the rest is for connections); 0: a
    /// quarter of the pool, but no more than every blocking thread's connection may cache at
    /// once (see [`BudgetPlan::new`]).
    pub page_cache_bytes_max: u64,
    /// Expected memory of one awake idle actor: sets how many may be awake at once until enough
    /// actors are awake to measure it (then the measured cost decides, see
    /// [`BudgetPlan::awake_max_for`]).
    pub actor_bytes_estimate: u64,
    /// Replace `actor_bytes_estimate` by the measured cost once enough actors are awake. The
    /// measurement reads SQLite's process-wide heap figures, so it assumes one host per process
    /// (tests that run several hosts in one process and shape `awake_max` turn it off).
    pub measure_actor_bytes: bool,
    /// Threads that run SQLite and store calls.
    pub blocking_threads: usize,
    /// Jobs waiting for a blocking thread.
    pub blocking_queue_max: usize,
    /// Wakes (database opens) running at once.
    pub wakes_in_flight_max: usize,
    /// Wakes waiting for admission; beyond it requests fail with `Overloaded`.
    pub wake_queue_max: usize,
    /// Actors known to the registry at once (awake, waking, queued, sleeping).
    pub actors_known_max: usize,
    /// Requests running or waiting on one actor; beyond it requests fail with `Overloaded`.
    pub actor_queue_max: usize,
    /// An actor idle this long is put to sleep.
    pub idle_timeout_ms: u64,
    /// How often idle actors are looked for.
    pub reaper_interval_ms: u64,
    /// Release an actor's cached pages and prepared statements once it has been idle for
    /// `release_delay_ms` (at once while SQLite's connection memory is above three quarters of
    /// its pool, as the reaper last measured it): idle actors then cost their connection and
    /// schema only, at the price of re-reading pages (from the store's block cache) on their
    /// next request.
    pub release_idle_memory: bool,
    /// How long an actor must be idle before its memory is released (see
    /// `release_idle_memory`); 0 releases when each request ends. Actors busier than this
    /// keep their pages and statements.
    pub release_delay_ms: u64,
    /// A statement running longer is interrupted (its transaction rolled back); 0: no limit.
    pub statement_timeout_ms: u64,
    /// The retry-after hint of `Overloaded` errors.
    pub retry_after_ms: u64,
}

impl Default for HostConfig {
    fn default() -> Self {
        // Most of a durable commit is waiting for the store's group fsync, so many more threads
        // than cores let commits of many actors share one fsync (group commit).
        let threads = 64;
        Self {
            memory_budget_bytes: 512 << 20,
            base_bytes: 24 << 20,
            request_buffers_bytes_max: 32 << 20,
            answer_bytes_max: 16 << 20,
            page_cache_bytes_max: 0,
            actor_bytes_estimate: 64 << 10,
            measure_actor_bytes: true,
            blocking_threads: threads,
            blocking_queue_max: 16_384,
            wakes_in_flight_max: 2 * threads,
            wake_queue_max: 10_000,
            actors_known_max: 1_000_000,
            actor_queue_max: 1_024,
            idle_timeout_ms: 60_000,
            reaper_interval_ms: 1_000,
            release_idle_memory: true,
            release_delay_ms: 1_000,
            statement_timeout_ms: 30_000,
            retry_after_ms: 250,
        }
    }
}

/// Rust-side state of one awake actor, outside SQLite's heap: its registry slot and state
/// channel, VFS file handles, statement-cache entries, map entries. A heap profile of 1,000
/// awake reference actors (valgrind massif, 2026-12-06) requested 2.6 KiB each; this rounds it
/// up for the allocator's size classes.
pub const ACTOR_RUST_BYTES: u64 = 4 << 10;
/// Two page-sized buffers every open connection keeps (the pager's and the b-tree's temporary
/// space). SQLite allocates them as page-cache memory, so its figures count them in the page
/// cache (`SQLITE_STATUS_PAGECACHE_OVERFLOW`), not in the connection: the measured cost adds
/// them back.
pub const CONNECTION_PAGE_BUFFERS_BYTES: u64 = 2 * crate::vfs::layout::CHUNK_BYTES as u64;
/// The least one awake actor is taken to cost, however little it measures: an empty
/// connection's pager and b-tree buffers alone take 8 KiB.
pub const ACTOR_BYTES_MIN: u64 = 16 << 10;
/// Actors open (not waking) before their measured cost replaces the estimate (fewer when the
/// estimate allows fewer than twice this many).
pub const MEASURED_ACTORS_MIN: usize = 32;

/// How the budget is split into named pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetPlan {
    pub budget_bytes: u64,
    pub base_bytes: u64,
    pub request_buffers_bytes: u64,
    /// The store's block cache and write buffers (their caps).
    pub store_bytes: u64,
    /// Everything SQLite may allocate: the soft heap limit.
    pub sqlite_bytes: u64,
    /// Of `sqlite_bytes`: cached pages (shared by all actors) ...
    pub page_cache_bytes: u64,
    /// ... and connections (per-actor overhead).
    pub connections_bytes: u64,
    /// Actors that may be awake at once.
    pub awake_max: usize,
}

impl BudgetPlan {
    /// Splits the budget. `storage` gives the store's cache caps and what one connection may
    /// cache.
    ///
    /// The pages share of the SQLite pool is a reservation only for what must stay cached:
    /// pages are recycled under the soft heap limit and an idle actor's are released, so the
    /// pages in use at once are those of the connections running on the blocking threads. By
    /// default it is a quarter of the pool up to that need; a larger budget gives the rest to
    /// connections (at 3 GiB a quarter was 730 MiB, while the 100,000-actor fleet peaked at
    /// 1.66 GiB RSS with its working set of ~70,000 actors above `awake_max`).
    pub fn new(config: &HostConfig, storage: &Storage) -> Result<Self, String> {
        let kv = storage.store().stats();
        let store_bytes = kv.cache_bytes_max + kv.write_buffer_bytes_max;
        let reserved = config.base_bytes + config.request_buffers_bytes_max + store_bytes;
        let sqlite_bytes =
            config.memory_budget_bytes.checked_sub(reserved).filter(|b| *b >= 4 << 20).ok_or_else(|| {
                format!(
                    "memory budget {} bytes is too small: base {} + request buffers {} + store caches {} \
                     leave less than 4 MiB for SQLite",
                    config.memory_budget_bytes,
                    config.base_bytes,
                    config.request_buffers_bytes_max,
                    store_bytes
                )
            })?;
        let running_pages_bytes = config.blocking_threads as u64 * storage.config().page_cache_bytes_max;
        let page_cache_bytes = match config.page_cache_bytes_max {
            0 => (sqlite_bytes / 4).min(running_pages_bytes.max(4 << 20)),
            n => n.min(sqlite_bytes / 2),
        };
        let connections_bytes = sqlite_bytes - page_cache_bytes;
        let awake_max = (connections_bytes / config.actor_bytes_estimate.max(1)).max(1) as usize;
        Ok(Self {
            budget_bytes: config.memory_budget_bytes,
            base_bytes: config.base_bytes,
            request_buffers_bytes: config.request_buffers_bytes_max,
            store_bytes,
            sqlite_bytes,
            page_cache_bytes,
            connections_bytes,
            awake_max,
        })
    }

    /// How many actors fit the connections pool when one costs `actor_bytes` (SQLite heap plus
    /// Rust-side state), with a quarter of headroom for actors that grow after the measurement
    /// (a request's statements and temporary memory).
    pub fn awake_max_for(&self, actor_bytes: u64) -> usize {
        let with_headroom = actor_bytes.max(ACTOR_BYTES_MIN) / 4 * 5;
        (self.connections_bytes / with_headroom).max(1) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(connections_bytes: u64) -> BudgetPlan {
        BudgetPlan {
            budget_bytes: 0,
            base_bytes: 0,
            request_buffers_bytes: 0,
            store_bytes: 0,
            sqlite_bytes: connections_bytes,
            page_cache_bytes: 0,
            connections_bytes,
            awake_max: 1,
        }
    }

    #[test]
    fn pages_get_a_quarter_of_the_sqlite_pool_up_to_what_running_connections_cache() {
        let store = std::sync::Arc::new(crate::kv::MemoryStore::new());
        let storage = Storage::new(store, crate::StorageConfig::default()).unwrap();
        let per_connection = storage.config().page_cache_bytes_max;
        let split = |config: HostConfig| {
            let plan = BudgetPlan::new(&config, &storage).unwrap();
            assert_eq!(plan.page_cache_bytes + plan.connections_bytes, plan.sqlite_bytes);
            plan
        };
        let small = split(HostConfig::default());
        assert_eq!(
            small.page_cache_bytes,
            small.sqlite_bytes / 4,
            "512 MiB: a quarter is less than the need"
        );
        let big = split(HostConfig { memory_budget_bytes: 3 << 30, ..HostConfig::default() });
        assert_eq!(big.page_cache_bytes, 64 * per_connection, "3 GiB: 64 threads' connections");
        assert!(big.awake_max_for(26 << 10) > 85_000, "a reference actor measures ~26 KiB: {big:?}");
        let few_threads =
            split(HostConfig { memory_budget_bytes: 3 << 30, blocking_threads: 1, ..HostConfig::default() });
        assert_eq!(few_threads.page_cache_bytes, 4 << 20, "a floor of 4 MiB");
        let set = split(HostConfig {
            memory_budget_bytes: 3 << 30,
            page_cache_bytes_max: 1 << 30,
            ..HostConfig::default()
        });
        assert_eq!(set.page_cache_bytes, 1 << 30, "a configured share is kept");
    }

    #[test]
    fn the_measured_cost_gets_a_quarter_of_headroom_and_a_floor() {
        let plan = plan(100 << 20);
        assert_eq!(plan.awake_max_for(32 << 10), (100 << 20) / (40 << 10));
        assert_eq!(plan.awake_max_for(1), (100 << 20) / (20 << 10), "never below ACTOR_BYTES_MIN");
        assert_eq!(plan.awake_max_for(1 << 40), 1, "at least one actor");
    }
}
