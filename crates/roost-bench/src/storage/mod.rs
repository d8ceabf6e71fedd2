//! `roost bench storage`: roost on fjall against plain SQLite in WAL mode, in one process.
//!
//! Every engine is opened in the same scratch folder, preloaded with the same rows in one
//! transaction (timed as "load"), then each workload runs on every engine in turn, so drift of a
//! noisy machine hits all engines alike. Rows and operations come from one seed.

mod engines;
mod plan;
mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use self::engines::{Engine, RoostEngine, SqliteEngine};
use self::plan::{Plan, Workload, TXN_ROWS, VALUE_BYTES};
use self::report::{fill_ratios, Load, Measurement, Report, RunInfo, StoreCalls};
use crate::at_least_one;
use crate::common::{scratch_dir, to_usize, write_results, BenchResult, ProcUsage, USAGE_SETTLE};

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

pub fn run(args: &StorageArgs) -> BenchResult<()> {
    let scratch = scratch_dir(args.data.as_deref(), "roost-bench-storage-")?;
    let plan = Plan::new(to_usize(args.rows)?, to_usize(args.ops)?, args.seed);
    let mut engines = open_engines(scratch.path())?;
    let loads = engines.iter_mut().map(|e| load(e.as_mut(), &plan)).collect::<BenchResult<Vec<_>>>()?;
    let mut results = Vec::new();
    for workload in Workload::ALL {
        for engine in &mut engines {
            results.push(measure(engine.as_mut(), workload, &plan)?);
        }
    }
    check_row_counts(&mut engines, &plan)?;
    drop(engines);
    fill_ratios(&mut results);
    let report = Report { benchmark: "storage", run: run_info(&plan, scratch.path()), loads, results };
    print!("{}", report.table());
    write_results(&args.json, &report)?;
    Ok(())
}

fn open_engines(dir: &Path) -> BenchResult<Vec<Box<dyn Engine>>> {
    let roost = RoostEngine::open(&dir.join(RoostEngine::NAME))?;
    let full = SqliteEngine::open(SqliteEngine::FULL, &dir.join("sqlite-wal-full.db"), "FULL")?;
    let normal = SqliteEngine::open(SqliteEngine::NORMAL, &dir.join("sqlite-wal-normal.db"), "NORMAL")?;
    Ok(vec![Box::new(roost), Box::new(full), Box::new(normal)])
}

fn load(engine: &mut dyn Engine, plan: &Plan) -> BenchResult<Load> {
    eprintln!("loading {} rows into {}", plan.load.len(), engine.name());
    let start = Instant::now();
    engine.load(&plan.load).map_err(|e| format!("{}: load: {e}", engine.name()))?;
    Ok(Load::new(engine.name(), plan.load.len(), start.elapsed()))
}

fn measure(engine: &mut dyn Engine, workload: Workload, plan: &Plan) -> BenchResult<Measurement> {
    eprintln!("running {} on {} ({} ops)", workload.name(), engine.name(), plan.ops(workload));
    let before = engine.store_stats();
    let usage_before = ProcUsage::read()?;
    let start = Instant::now();
    let latencies =
        engine.run(workload, plan).map_err(|e| format!("{}: {}: {e}", engine.name(), workload.name()))?;
    let wall = start.elapsed();
    // CPU and disk writes are read after a settle, so background work the phase caused counts
    // here; ops/s and latencies stop at the last operation.
    std::thread::sleep(USAGE_SETTLE);
    let usage = ProcUsage::read()?.since(&usage_before);
    let mut measurement = Measurement::new(engine.name(), workload.name(), latencies, wall, &usage);
    if let (Some(before), Some(after)) = (before, engine.store_stats()) {
        measurement.store = Some(StoreCalls::between(before, after, measurement.ops));
    }
    Ok(measurement)
}

/// Every engine must end with the same rows: otherwise they did not do the same work.
fn check_row_counts(engines: &mut [Box<dyn Engine>], plan: &Plan) -> BenchResult<()> {
    let expected = plan.final_rows() as i64;
    for engine in engines {
        let got = engine.count_rows()?;
        if got != expected {
            return Err(format!("{} holds {got} rows, expected {expected}", engine.name()).into());
        }
    }
    Ok(())
}

fn run_info(plan: &Plan, dir: &Path) -> RunInfo {
    RunInfo {
        rows: plan.load.len(),
        ops: plan.read_ids.len(),
        txn_ops: plan.txns.len(),
        txn_rows: TXN_ROWS,
        value_bytes: VALUE_BYTES,
        seed: plan.seed,
        data_dir: dir.display().to_string(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        sqlite_version: rusqlite::version(),
    }
}
