//! Command line parsing and dispatch. Each subcommand's work lives in its own module.

mod bench_storage;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Roost: very many actors, each owning a private SQLite database stored in a KV store.
#[derive(Debug, Parser)]
#[command(name = "roost", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a benchmark.
    Bench {
        #[command(subcommand)]
        which: BenchCmd,
    },
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Compare roost (SQLite over fjall) with plain SQLite in WAL mode on this machine.
    ///
    /// Every engine gets the same schema, the same preloaded rows and the same operations
    /// (drawn from --seed). Workloads run one after another, each on every engine in turn.
    Storage(StorageArgs),
}

/// Arguments of `roost bench storage`.
#[derive(Debug, Args)]
pub struct StorageArgs {
    /// Folder in which to create (and afterwards remove) the scratch data [default: system temp dir].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Rows preloaded into each engine before measuring.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = at_least_one())]
    pub rows: u64,
    /// Operations per workload (txn_100rows runs max(N/10, 20) transactions).
    #[arg(long, value_name = "N", default_value_t = 2_000, value_parser = at_least_one())]
    pub ops: u64,
    /// Where to write the results as JSON.
    #[arg(long, value_name = "PATH", default_value = "bench-storage.json")]
    pub json: PathBuf,
    /// Seed of the generated rows and operations.
    #[arg(long, value_name = "N", default_value_t = 42)]
    pub seed: u64,
}

fn at_least_one() -> clap::builder::RangedU64ValueParser {
    clap::value_parser!(u64).range(1..)
}

/// Parses the command line, runs the command and maps failure to a non-zero exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Bench { which: BenchCmd::Storage(args) } => bench_storage::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
