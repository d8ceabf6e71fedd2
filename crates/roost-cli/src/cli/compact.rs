//! `roost compact`: merges the embedded store's tables offline, after a bulk load, so that a
//! server started on the folder does not spend its first minutes merging them while it serves
//! (docs/operations.md, Compaction). The folder must not be in use by a running server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use roost::kv::{CompactionStats, FjallConfig, FjallStore, KvStore};

use super::serve::{open_failure, Failure};

#[derive(Debug, clap::Args)]
pub struct CompactArgs {
    /// Data folder of the embedded store (the one `roost serve --data` uses).
    #[arg(long, env = "ROOST_DATA", default_value = "./roost-data")]
    pub data: PathBuf,
}

/// Runs `roost compact`: exit 2 when the folder cannot be opened (in use, not accessible,
/// unknown format), as `roost serve` does.
pub fn main(args: &CompactArgs) -> ExitCode {
    Failure::exit_code(run(args))
}

fn run(args: &CompactArgs) -> Result<(), Failure> {
    if !args.data.join("fjall").is_dir() {
        return Err(Failure {
            code: 2,
            message: format!("{} holds no roost store: nothing to compact", args.data.display()),
        });
    }
    let store = FjallStore::open(FjallConfig::new(&args.data)).map_err(|e| open_failure(&args.data, e))?;
    let before = store.stats();
    // The merge writes every table anew before it deletes the old ones.
    if before.disk.total_bytes > 0 && before.disk.free_bytes < before.disk_bytes {
        return Err(format!(
            "compacting {} needs up to {:.0} MiB free on its file system (the tables are written anew before the old ones go) and {:.0} MiB are free; free space first",
            args.data.display(),
            mib(before.disk_bytes),
            mib(before.disk.free_bytes)
        )
        .into());
    }
    let start = Instant::now();
    store.compact().map_err(|e| format!("cannot compact {}: {e}", args.data.display()))?;
    let after = store.stats();
    println!(
        "compacted {} in {:.1} s: {} -> {}",
        args.data.display(),
        start.elapsed().as_secs_f64(),
        describe(before.disk_bytes, &before.compaction),
        describe(after.disk_bytes, &after.compaction),
    );
    Ok(())
}

fn describe(disk_bytes: u64, c: &CompactionStats) -> String {
    format!("{:.1} MiB in {} tables ({} in level 0)", mib(disk_bytes), c.tables, c.l0_tables)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}
