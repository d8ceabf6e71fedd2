//! The benchmarks of `roost bench ...`: each one's command line arguments (clap) and its run,
//! with the helpers they share in [`common`]. The `roost` binary parses [`BenchCmd`] and calls
//! [`run`]; benchmarks that need a server or a clean process re-execute that binary
//! (`roost serve`, `roost bench actors child`).
//!
//! - [`storage`]: roost on fjall against plain SQLite in WAL mode;
//! - [`http`]: requests/s and latency through the HTTP API, on loopback;
//! - [`load`]: `roost serve` under a small budget, flooded with requests;
//! - [`cluster`]: nodes on PostgreSQL beside the embedded store;
//! - [`actors`]: the reference actor workload on many actors.

#![deny(unsafe_code)]

pub mod actors;
pub mod bytes;
pub mod chart;
pub mod cluster;
pub mod common;
pub mod http;
pub mod load;
pub mod storage;

use clap::Subcommand;

pub use common::BenchResult;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Compare roost (SQLite over fjall) with plain SQLite in WAL mode on this machine.
    ///
    /// Every engine gets the same schema, the same preloaded rows and the same operations
    /// (drawn from --seed). Workloads run one after another, each on every engine in turn.
    Storage(storage::StorageArgs),
    /// Requests/s and latency of single-row reads and writes through the HTTP API, on one
    /// actor and on many, with a load generator on loopback.
    Http(http::HttpArgs),
    /// Many requests over many actors as fast as clients can send them, against `roost serve`
    /// under a small budget: every request succeeds or is answered `overloaded` with
    /// `Retry-After`, clients that honour it all finish, and the server's RSS stays in budget.
    Load(load::LoadArgs),
    /// Nodes on PostgreSQL beside the embedded store: wake latency by database size, durable
    /// commits/s on one and three nodes, forwarding overhead, failover after kill -9 and SIGTERM.
    Cluster(cluster::ClusterArgs),
    /// The reference actor workload on many actors: memory, wake storms, soak, group commit.
    ///
    /// Every measurement point that needs clean memory figures runs in a fresh child process.
    Actors {
        #[command(subcommand)]
        which: actors::ActorsCmd,
    },
}

/// Runs one benchmark.
pub fn run(cmd: &BenchCmd) -> BenchResult<()> {
    match cmd {
        BenchCmd::Storage(args) => storage::run(args),
        BenchCmd::Http(args) => http::run(args).map_err(Into::into),
        BenchCmd::Load(args) => load::run(args).map_err(Into::into),
        BenchCmd::Cluster(args) => cluster::run(args).map_err(Into::into),
        BenchCmd::Actors { which } => actors::run(which),
    }
}

/// `u64` arguments of at least 1.
fn at_least_one() -> clap::builder::RangedU64ValueParser {
    clap::value_parser!(u64).range(1..)
}
