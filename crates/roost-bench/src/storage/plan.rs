//! The inputs of the storage benchmark, drawn once from a seed so that every engine does exactly
//! the same work: the same rows, the same ids read, the same rows inserted.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Bytes of random data in each row's `v`.
pub const VALUE_BYTES: usize = 100;
/// Rows inserted by one `txn_100rows` operation.
pub const TXN_ROWS: usize = 100;
/// Rows returned by one `range_scan` operation (at most).
pub const SCAN_ROWS: usize = 100;

pub const SCHEMA: &str =
    "CREATE TABLE kv(id INTEGER PRIMARY KEY, k TEXT, v BLOB); CREATE INDEX kv_k ON kv(k);";
pub const POINT_READ: &str = "SELECT v FROM kv WHERE id = ?";
pub const RANGE_SCAN: &str = "SELECT id, v FROM kv WHERE id >= ? ORDER BY id LIMIT 100";
pub const INSERT: &str = "INSERT INTO kv(id, k, v) VALUES (?, ?, ?)";
pub const COUNT: &str = "SELECT count(*) FROM kv";

/// One row of the `kv` table.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub k: String,
    pub v: Vec<u8>,
}

/// A measured workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    PointRead,
    RangeScan,
    Commit1Row,
    Txn100Rows,
}

impl Workload {
    pub const ALL: [Self; 4] = [Self::PointRead, Self::RangeScan, Self::Commit1Row, Self::Txn100Rows];

    pub fn name(self) -> &'static str {
        match self {
            Self::PointRead => "point_read",
            Self::RangeScan => "range_scan",
            Self::Commit1Row => "commit_1row",
            Self::Txn100Rows => "txn_100rows",
        }
    }
}

/// Every input of one benchmark run.
#[derive(Debug)]
pub struct Plan {
    pub seed: u64,
    pub load: Vec<Row>,
    pub read_ids: Vec<i64>,
    pub scan_starts: Vec<i64>,
    pub single_rows: Vec<Row>,
    pub txns: Vec<Vec<Row>>,
}

/// Makes rows with increasing ids and random keys and values.
struct RowMaker {
    rng: StdRng,
    next_id: i64,
}

impl RowMaker {
    fn row(&mut self) -> Row {
        let id = self.next_id;
        self.next_id += 1;
        let mut v = vec![0u8; VALUE_BYTES];
        self.rng.fill(&mut v[..]);
        Row { id, k: format!("k{:016x}", self.rng.random::<u64>()), v }
    }

    fn rows(&mut self, n: usize) -> Vec<Row> {
        (0..n).map(|_| self.row()).collect()
    }
}

impl Plan {
    /// Operations of `txn_100rows` for `ops` requested operations.
    pub fn txn_ops(ops: usize) -> usize {
        (ops / 10).max(20)
    }

    pub fn new(rows: usize, ops: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut maker = RowMaker { rng: StdRng::seed_from_u64(seed ^ 0x5eed), next_id: 1 };
        let load = maker.rows(rows);
        let mut ids = |n: usize| -> Vec<i64> { (0..n).map(|_| rng.random_range(1..=rows as i64)).collect() };
        let read_ids = ids(ops);
        let scan_starts = ids(ops);
        let single_rows = maker.rows(ops);
        let txns = (0..Self::txn_ops(ops)).map(|_| maker.rows(TXN_ROWS)).collect();
        Self { seed, load, read_ids, scan_starts, single_rows, txns }
    }

    /// Operations of `workload`.
    pub fn ops(&self, workload: Workload) -> usize {
        match workload {
            Workload::PointRead => self.read_ids.len(),
            Workload::RangeScan => self.scan_starts.len(),
            Workload::Commit1Row => self.single_rows.len(),
            Workload::Txn100Rows => self.txns.len(),
        }
    }

    /// Rows in the table once every workload ran.
    pub fn final_rows(&self) -> usize {
        self.load.len() + self.single_rows.len() + self.txns.len() * TXN_ROWS
    }
}
