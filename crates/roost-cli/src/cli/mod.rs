//! Command line parsing and dispatch. Each subcommand's work lives in its own module.

mod compact;
mod mem_monitor;
mod serve;
mod sql;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Serve the HTTP API (JSON and Hrana) on the embedded store or PostgreSQL.
    Serve(Box<serve::ServeArgs>),
    /// Merge the embedded store's tables offline (after a bulk load; the folder must not be in use).
    Compact(compact::CompactArgs),
    /// Run one SQL statement on an actor of a running server and print the rows.
    Sql(sql::SqlArgs),
    /// Sample a server's memory, capture heap profiles on spikes and chart RSS over time.
    MemMonitor(mem_monitor::MemMonitorArgs),
    /// Run a benchmark.
    Bench {
        #[command(subcommand)]
        which: roost_bench::BenchCmd,
    },
}

/// Parses the command line, runs the command and maps failure to a non-zero exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Serve(args) => return serve::main(args),
        Command::Compact(args) => return compact::main(args),
        Command::Sql(args) => sql::run(args).map_err(Into::into),
        Command::MemMonitor(args) => mem_monitor::run(args).map_err(Into::into),
        Command::Bench { which } => {
            roost_bench::common::set_allocator_stats(crate::alloc::stats);
            roost_bench::run(which)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
