//! The engines compared: roost on fjall, and plain SQLite in WAL mode. Both run the same SQL from
//! [`plan`](super::plan); plain SQLite prepares each statement once per workload, roost goes
//! through its public `Database` API, which prepares per call.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roost::kv::{FjallConfig, FjallStore, KvStats};
use roost::{ActorId, Database, Params, Statement, Storage, StorageConfig, Value};
use rusqlite::{params, Connection};

use super::plan::{Plan, Row, Workload, COUNT, INSERT, POINT_READ, RANGE_SCAN, SCAN_ROWS, SCHEMA};
use super::BenchResult;

/// One engine under test.
pub trait Engine {
    fn name(&self) -> &'static str;
    /// Inserts `rows` in one transaction.
    fn load(&mut self, rows: &[Row]) -> BenchResult<()>;
    /// Runs every operation of `workload`, returning each one's latency.
    fn run(&mut self, workload: Workload, plan: &Plan) -> BenchResult<Vec<Duration>>;
    fn count_rows(&mut self) -> BenchResult<i64>;
    /// Counters of the KV store under the engine, if it has one.
    fn store_stats(&self) -> Option<KvStats>;
}

/// Runs `op` on every input, timing each call.
fn time_ops<T>(inputs: &[T], mut op: impl FnMut(&T) -> BenchResult<()>) -> BenchResult<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(inputs.len());
    for input in inputs {
        let start = Instant::now();
        op(input)?;
        latencies.push(start.elapsed());
    }
    Ok(latencies)
}

/// Fails unless a read returned between `min` and `max` rows: a benchmark of empty answers is
/// worthless.
fn expect_rows(got: usize, min: usize, max: usize) -> BenchResult<()> {
    if (min..=max).contains(&got) {
        Ok(())
    } else {
        Err(format!("a read returned {got} rows, expected {min} to {max}").into())
    }
}

/// roost: one actor's database in a fjall store (durability `Sync`).
pub struct RoostEngine {
    // Dropped before `storage`.
    db: Database,
    storage: Storage,
}

impl RoostEngine {
    pub const NAME: &'static str = "roost-fjall";

    pub fn open(dir: &Path) -> BenchResult<Self> {
        let store = FjallStore::open(FjallConfig::new(dir))?;
        let storage = Storage::new(Arc::new(store), StorageConfig::default())?;
        let mut db = storage.open(&ActorId::new("bench")?)?;
        db.execute_script(SCHEMA)?;
        Ok(Self { db, storage })
    }
}

fn int_params(id: i64) -> Params {
    Params::Positional(vec![Value::Integer(id)])
}

fn row_params(row: &Row) -> Params {
    Params::Positional(vec![Value::Integer(row.id), Value::Text(row.k.clone()), Value::Blob(row.v.clone())])
}

fn insert_statements(rows: &[Row]) -> Vec<Statement> {
    rows.iter().map(|row| Statement::with_params(INSERT, row_params(row))).collect()
}

impl Engine for RoostEngine {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn load(&mut self, rows: &[Row]) -> BenchResult<()> {
        self.db.batch(&insert_statements(rows), true)?;
        Ok(())
    }

    fn run(&mut self, workload: Workload, plan: &Plan) -> BenchResult<Vec<Duration>> {
        let db = &mut self.db;
        match workload {
            Workload::PointRead => time_ops(&plan.read_ids, |id| {
                expect_rows(db.execute(POINT_READ, &int_params(*id))?.rows.len(), 1, 1)
            }),
            Workload::RangeScan => time_ops(&plan.scan_starts, |id| {
                expect_rows(db.execute(RANGE_SCAN, &int_params(*id))?.rows.len(), 1, SCAN_ROWS)
            }),
            Workload::Commit1Row => time_ops(&plan.single_rows, |row| {
                db.execute(INSERT, &row_params(row))?;
                Ok(())
            }),
            Workload::Txn100Rows => time_ops(&plan.txns, |rows| {
                db.batch(&insert_statements(rows), true)?;
                Ok(())
            }),
        }
    }

    fn count_rows(&mut self) -> BenchResult<i64> {
        match self.db.execute(COUNT, &Params::None)?.rows.first().and_then(|r| r.first()) {
            Some(Value::Integer(n)) => Ok(*n),
            other => Err(format!("count(*) answered {other:?}").into()),
        }
    }

    fn store_stats(&self) -> Option<KvStats> {
        Some(self.storage.store().stats())
    }
}

/// Plain SQLite on a local file in WAL mode.
pub struct SqliteEngine {
    name: &'static str,
    conn: Connection,
}

impl SqliteEngine {
    pub const FULL: &'static str = "sqlite-wal-full";
    pub const NORMAL: &'static str = "sqlite-wal-normal";

    /// Opens `path` with `PRAGMA synchronous=<synchronous>` and the same page cache as roost.
    pub fn open(name: &'static str, path: &Path, synchronous: &str) -> BenchResult<Self> {
        let conn = Connection::open(path)?;
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("{name}: journal_mode is {mode}, not wal").into());
        }
        conn.pragma_update(None, "synchronous", synchronous)?;
        let cache_kib = StorageConfig::default().page_cache_bytes_max / 1024;
        conn.pragma_update(None, "cache_size", -(cache_kib as i64))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { name, conn })
    }

    /// Inserts `rows` in one `BEGIN IMMEDIATE` .. `COMMIT`, like roost's transactional batch.
    fn insert_txn(&self, insert: &mut rusqlite::Statement<'_>, rows: &[Row]) -> BenchResult<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        for row in rows {
            insert.execute(params![row.id, row.k, row.v])?;
        }
        self.conn.execute_batch("COMMIT")?;
        Ok(())
    }

    fn point_reads(&self, ids: &[i64]) -> BenchResult<Vec<Duration>> {
        let mut stmt = self.conn.prepare(POINT_READ)?;
        time_ops(ids, |id| {
            let rows = stmt.query_map([id], |r| r.get::<_, Vec<u8>>(0))?.collect::<Result<Vec<_>, _>>()?;
            expect_rows(rows.len(), 1, 1)
        })
    }

    fn range_scans(&self, starts: &[i64]) -> BenchResult<Vec<Duration>> {
        let mut stmt = self.conn.prepare(RANGE_SCAN)?;
        time_ops(starts, |id| {
            let rows = stmt
                .query_map([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            expect_rows(rows.len(), 1, SCAN_ROWS)
        })
    }
}

impl Engine for SqliteEngine {
    fn name(&self) -> &'static str {
        self.name
    }

    fn load(&mut self, rows: &[Row]) -> BenchResult<()> {
        let mut insert = self.conn.prepare(INSERT)?;
        self.insert_txn(&mut insert, rows)
    }

    fn run(&mut self, workload: Workload, plan: &Plan) -> BenchResult<Vec<Duration>> {
        match workload {
            Workload::PointRead => self.point_reads(&plan.read_ids),
            Workload::RangeScan => self.range_scans(&plan.scan_starts),
            Workload::Commit1Row => {
                let mut insert = self.conn.prepare(INSERT)?;
                time_ops(&plan.single_rows, |row| {
                    insert.execute(params![row.id, row.k, row.v])?;
                    Ok(())
                })
            }
            Workload::Txn100Rows => {
                let mut insert = self.conn.prepare(INSERT)?;
                time_ops(&plan.txns, |rows| self.insert_txn(&mut insert, rows))
            }
        }
    }

    fn count_rows(&mut self) -> BenchResult<i64> {
        Ok(self.conn.query_row(COUNT, [], |r| r.get(0))?)
    }

    fn store_stats(&self) -> Option<KvStats> {
        None
    }
}
