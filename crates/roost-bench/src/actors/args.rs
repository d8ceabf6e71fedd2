//! The command line of `roost bench actors`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::at_least_one;
use crate::bytes::parse_bytes;

/// `roost bench actors` benchmarks.
#[derive(Debug, Subcommand)]
pub enum ActorsCmd {
    /// RSS of N awake idle actors (roost and native SQLite files side by side), wake time per
    /// actor and single-row inserts/s on one actor.
    Memory(MemoryArgs),
    /// Wake every actor of a population at once under a small memory budget, without and with
    /// retrying clients.
    Storm(StormArgs),
    /// Cycles of inserts and scans over a population, with periodic spikes; RSS sampled every
    /// second must stay flat.
    Soak(SoakArgs),
    /// Many actors each committing single-row durable transactions at once: roost's group
    /// commit against one plain SQLite file per actor.
    GroupCommit(GroupCommitArgs),
    /// N actors with the reference workload behind `roost serve` under its memory budget, then
    /// an open loop of reads and writes (Poisson arrivals, uniformly random actors) for a
    /// fixed time: latency from each request's scheduled time, errors, the server's RSS.
    Fleet(FleetArgs),
    /// Runs one measurement point in this process and prints it as one JSON line (internal).
    #[command(hide = true)]
    Child(ChildArgs),
}

/// Engines of `roost bench actors memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MemoryEngine {
    /// Actors in a `Host` over the fjall store.
    Roost,
    /// One rusqlite connection per actor on a plain file, default settings.
    Native,
    /// Diagnostic: roost, calling `Database::release_memory` after the workload.
    RoostRelease,
}

/// Arguments of `roost bench actors memory`.
#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// Folder in which to create (and afterwards remove) the scratch data [default: system temp dir].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Where to write the results as JSON.
    #[arg(long, value_name = "PATH", default_value = "bench-actors-memory.json")]
    pub json: PathBuf,
    /// Awake actor counts to measure (0 and 1 are always measured too).
    #[arg(long, value_name = "N,..", value_delimiter = ',', default_value = "1,1000,10000")]
    pub n: Vec<u64>,
    /// Engines to measure, each N in its own child process.
    #[arg(long, value_name = "E,..", value_delimiter = ',', default_value = "roost,native")]
    pub engines: Vec<MemoryEngine>,
    /// Single-row autocommit inserts timed on actor 0.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    pub inserts: u64,
    /// Actors put to sleep and woken again (one at a time) to time a wake.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub wake_sample: u64,
    /// Pause before memory is read, letting background work (store flushes) settle, ms.
    #[arg(long, value_name = "MS", default_value_t = 2_000)]
    pub settle_ms: u64,
    /// roost's host memory budget, MiB: 512 (the server's default) checks that every actor fits
    /// the awake budget the host sizes from their measured cost; the point fails if any sleeps.
    #[arg(long, value_name = "MIB", default_value_t = 16 << 10)]
    pub budget_mib: u64,
}

/// Arguments of `roost bench actors storm`.
#[derive(Debug, Args)]
pub struct StormArgs {
    /// Folder in which to create (and afterwards remove) the scratch data [default: system temp dir].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Where to write the results as JSON.
    #[arg(long, value_name = "PATH", default_value = "bench-actors-storm.json")]
    pub json: PathBuf,
    /// Actors created, then all requested at once.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = at_least_one())]
    pub actors: u64,
    /// The host's memory budget during the storm, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256, value_parser = at_least_one())]
    pub budget_mib: u64,
    /// The store's block cache cap during the storm, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    pub cache_mib: u64,
    /// The store's write buffer cap during the storm, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    pub write_buffer_mib: u64,
    /// The host's wake queue (HostConfig::wake_queue_max) during the storm [default: the host's default].
    #[arg(long, value_name = "N")]
    pub wake_queue_max: Option<u64>,
    /// Retrying clients: first backoff, ms (doubles per attempt, full jitter).
    #[arg(long, value_name = "MS", default_value_t = 10)]
    pub backoff_base_ms: u64,
    /// Retrying clients: largest backoff, ms.
    #[arg(long, value_name = "MS", default_value_t = 2_000)]
    pub backoff_cap_ms: u64,
    /// How long RSS is watched after each storm pass, ms (its last sample is the settled figure).
    #[arg(long, value_name = "MS", default_value_t = 15_000)]
    pub after_ms: u64,
}

/// Arguments of `roost bench actors soak`.
#[derive(Debug, Args)]
pub struct SoakArgs {
    /// Folder in which to create (and afterwards remove) the scratch data [default: system temp dir].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Where to write the results as JSON.
    #[arg(long, value_name = "PATH", default_value = "bench-actors-soak.json")]
    pub json: PathBuf,
    /// How long the cycles run, seconds (after the population is created).
    #[arg(long, value_name = "S", default_value_t = 600, value_parser = at_least_one())]
    pub duration_s: u64,
    /// RSS growth is measured from this point on (at most half the duration).
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub warmup_s: u64,
    /// Actors visited per cycle.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = at_least_one())]
    pub actors: u64,
    /// Actors created before the cycles start; each cycle draws from them.
    #[arg(long, value_name = "N", default_value_t = 2_000, value_parser = at_least_one())]
    pub population: u64,
    /// Visits running at once in a normal cycle.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = at_least_one())]
    pub concurrency: u64,
    /// A cycle starts at most this often, ms.
    #[arg(long, value_name = "MS", default_value_t = 1_000)]
    pub cycle_ms: u64,
    /// Every this many seconds, a spike: --spike-factor times --actors visited all at once.
    #[arg(long, value_name = "S", default_value_t = 30, value_parser = at_least_one())]
    pub spike_every_s: u64,
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = at_least_one())]
    pub spike_factor: u64,
    /// The host's memory budget, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256, value_parser = at_least_one())]
    pub budget_mib: u64,
    /// Actors idle this long are put to sleep, ms.
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    pub idle_timeout_ms: u64,
}

/// Arguments of `roost bench actors group-commit`.
#[derive(Debug, Args)]
pub struct GroupCommitArgs {
    /// Folder in which to create (and afterwards remove) the scratch data [default: system temp dir].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Where to write the results as JSON.
    #[arg(long, value_name = "PATH", default_value = "bench-actors-group-commit.json")]
    pub json: PathBuf,
    /// Actors (and, for the baselines, database files) committing at once.
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = at_least_one())]
    pub actors: u64,
    /// How long each engine commits, seconds.
    #[arg(long, value_name = "S", default_value_t = 10, value_parser = at_least_one())]
    pub duration_s: u64,
    /// roost: the host's blocking threads (HostConfig::blocking_threads).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = at_least_one())]
    pub blocking_threads: u64,
    /// Baselines: OS threads sharing the connections.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = at_least_one())]
    pub baseline_threads: u64,
}

/// Arguments of `roost bench actors fleet`.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Folder in which to create (and afterwards remove) the scratch data [default: system temp
    /// dir]; unused with --reuse-data.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Keep the populated data in DIR and reuse it on the next run (setup is skipped when DIR
    /// holds a finished setup of the same --actors; an empty or absent DIR is populated). The
    /// writes of each run stay in it.
    #[arg(long, value_name = "DIR")]
    pub reuse_data: Option<PathBuf>,
    /// Where to write the results as JSON.
    #[arg(long, value_name = "PATH", default_value = "bench-actors-fleet.json")]
    pub json: PathBuf,
    /// Where to write the chart of RSS and awake actors over time (SVG).
    #[arg(long, value_name = "PATH", default_value = "bench-actors-fleet.svg")]
    pub chart: PathBuf,
    /// Actors created with the reference workload (steps 1-4), then addressed by the load.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = at_least_one())]
    pub actors: u64,
    /// The server's --memory-budget.
    #[arg(long, value_name = "BYTES", default_value = "3GiB", value_parser = parse_bytes)]
    pub memory_budget: u64,
    /// Each actor reads once per this many seconds on average.
    #[arg(long, value_name = "S", default_value_t = 60.0)]
    pub read_interval_s: f64,
    /// Each actor writes once per this many seconds on average.
    #[arg(long, value_name = "S", default_value_t = 600.0)]
    pub write_interval_s: f64,
    /// Client threads, each with its own kept-alive connection, sending the next due request.
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = at_least_one())]
    pub clients: u64,
    /// Measured time, seconds (after the warm-up).
    #[arg(long, value_name = "S", default_value_t = 600, value_parser = at_least_one())]
    pub duration_s: u64,
    /// Load before the measured time: not in the latency figures, in the RSS peak.
    #[arg(long, value_name = "S", default_value_t = 30)]
    pub warmup_s: u64,
    /// Seed of the request schedule (arrival times, actors, kinds).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
}

/// Arguments of the hidden `roost bench actors child`.
#[derive(Debug, Args)]
pub struct ChildArgs {
    /// The measurement point, as JSON.
    #[arg(long, value_name = "JSON")]
    pub task: String,
}
