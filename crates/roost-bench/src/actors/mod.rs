//! `roost bench actors`: the reference actor workload (`workload`) on many actors.
//!
//! - `memory`: RSS of N awake idle actors, roost and native SQLite files side by side;
//! - `storm`: every actor of a population requested at once under a small budget;
//! - `soak`: cycles of inserts and scans with spikes, RSS sampled every second;
//! - `group-commit`: many actors committing at once against one SQLite file per actor;
//! - `fleet`: many actors behind `roost serve` under its budget, an open loop of reads and writes.
//!
//! Measurement points that need clean memory figures (each N of `memory`, each pass of `storm`)
//! run in a fresh child process: this binary re-executed as the hidden `roost bench actors child
//! --task JSON`, which prints its result as one JSON line. Async work runs on a tokio runtime
//! with 2 worker threads built here; SQLite and store calls run on the host's own threads.

mod args;
mod child;
mod fleet;
mod group_commit;
mod memory;
mod report;
mod soak;
mod storm;
mod workload;

use std::path::Path;
use std::sync::Arc;

use roost::kv::{FjallConfig, FjallStore};
use roost::{Host, HostConfig, Storage, StorageConfig};

pub use self::args::{
    ActorsCmd, ChildArgs, FleetArgs, GroupCommitArgs, MemoryArgs, MemoryEngine, SoakArgs, StormArgs,
};
use crate::common::{self, to_usize, BenchResult};

pub fn run(cmd: &ActorsCmd) -> BenchResult<()> {
    match cmd {
        ActorsCmd::Memory(args) => memory::run(args),
        ActorsCmd::Storm(args) => storm::run(args),
        ActorsCmd::Soak(args) => soak::run(args),
        ActorsCmd::GroupCommit(args) => group_commit::run(args),
        ActorsCmd::Fleet(args) => fleet::run(args),
        ActorsCmd::Child(args) => child::serve(&args.task),
    }
}

/// The runtime of every command: multi-thread, 2 workers.
pub fn runtime() -> BenchResult<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// A fresh scratch folder `roost-bench-actors-<name>-*` (see [`common::scratch_dir`]).
pub fn scratch_dir(data: Option<&Path>, name: &str) -> BenchResult<tempfile::TempDir> {
    common::scratch_dir(data, &format!("roost-bench-actors-{name}-"))
}

/// The store's cache caps, MiB.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct StoreCaps {
    pub cache_mib: u64,
    pub write_buffer_mib: u64,
}

impl StoreCaps {
    /// `FjallConfig::new`'s defaults.
    pub fn defaults() -> Self {
        let c = FjallConfig::new("");
        Self { cache_mib: c.cache_bytes_max >> 20, write_buffer_mib: c.write_buffer_bytes_max >> 20 }
    }
}

/// A host over a fjall store in `dir` (durability `Sync`), with `StorageConfig::default()`.
pub fn open_host(dir: &Path, caps: StoreCaps, config: HostConfig) -> BenchResult<Host> {
    let store = FjallStore::open(FjallConfig {
        cache_bytes_max: caps.cache_mib << 20,
        write_buffer_bytes_max: caps.write_buffer_mib << 20,
        ..FjallConfig::new(dir)
    })?;
    let storage = Storage::new(Arc::new(store), StorageConfig::default())?;
    Ok(Host::new(storage, config)?)
}

/// Runs `job(i)` for every `i` in `items`, at most `concurrency` at once; the first error wins.
pub async fn bounded<F, Fut>(
    items: impl IntoIterator<Item = usize>,
    concurrency: usize,
    job: F,
) -> BenchResult<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = BenchResult<()>> + Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut running = tokio::task::JoinSet::new();
    for i in items {
        let permit = permits.clone().acquire_owned().await?;
        let work = job(i);
        running.spawn(async move {
            let result = work.await;
            drop(permit);
            result
        });
        while let Some(done) = running.try_join_next() {
            done??;
        }
    }
    while let Some(done) = running.join_next().await {
        done??;
    }
    Ok(())
}

/// Creates actors `0..n` with steps 1-4 of the workload, `concurrency` at once.
pub async fn create_actors(host: &Host, n: usize, concurrency: usize) -> BenchResult<()> {
    let start = std::time::Instant::now();
    bounded(0..n, concurrency, |i| {
        let host = host.clone();
        async move {
            let answers = host.with_db(&workload::actor_id(i)?, workload::roost_workload).await?;
            if (i + 1).is_multiple_of(5_000) {
                eprintln!("  created {} actors ({:.1} s)", i + 1, start.elapsed().as_secs_f64());
            }
            answers.check()
        }
    })
    .await
}

#[cfg(test)]
mod heap_probe {
    use super::*;

    /// Not a check: a fixture for a heap profile of awake actors (`scripts/actor-heap.sh` runs it
    /// under valgrind's massif for two N and attributes the difference per call site). It
    /// creates `ROOST_PROBE_ACTORS` reference actors, waits for their idle release and exits
    /// without dropping anything, so massif's last snapshot is the awake population.
    #[test]
    #[ignore = "run by scripts/actor-heap.sh under valgrind"]
    fn awake_actor_heap_probe() {
        let n = std::env::var("ROOST_PROBE_ACTORS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
        let dir = tempfile::tempdir().expect("scratch folder");
        let config = HostConfig {
            memory_budget_bytes: 4 << 30,
            idle_timeout_ms: 3_600_000,
            release_delay_ms: 100,
            ..HostConfig::default()
        };
        let host =
            open_host(dir.path(), StoreCaps { cache_mib: 4, write_buffer_mib: 8 }, config).expect("host");
        runtime().expect("runtime").block_on(async {
            create_actors(&host, n, 8).await.expect("actors");
            tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
            let stats = host.stats();
            let sqlite = roost::vfs::sqlite_memory().used_bytes;
            eprintln!("probe: {} awake, SQLite heap {sqlite} bytes", stats.actors_awake);
            std::process::exit(0);
        });
    }
}
