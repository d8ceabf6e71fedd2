//! Sequential reads fetch the pages after them in the same store call on stores that allow
//! read-ahead (remote ones), hold them only for the statement, and answer exactly what reads
//! without read-ahead answer.

use std::sync::Arc;

use roost::kv::{KvStore, MemoryStore};
use roost::{ActorId, Params, Storage, StorageConfig, Value};

const ROWS: i64 = 3_000;

/// Builds the same database on `store`, then answers the store reads of a full scan made by
/// a fresh open (a wake), and the scan's answer.
fn scan_reads(store: Arc<MemoryStore>) -> (u64, Vec<Vec<Value>>) {
    let storage = Storage::new(store.clone(), StorageConfig::default()).unwrap();
    let id = ActorId::new("scanned").unwrap();
    {
        let mut db = storage.open(&id).unwrap();
        db.execute_script(&format!(
            "CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
             INSERT INTO t SELECT i, randomblob(900) FROM n;"
        ))
        .unwrap();
    }
    let mut db = storage.open(&id).unwrap();
    let before = store.stats().read_calls;
    let sql = "SELECT count(*), sum(length(v)), sum(k) FROM t";
    let rows = db.execute(sql, &Params::None).unwrap().rows;
    let reads = store.stats().read_calls - before;
    // What was read ahead is given back when the statement ends.
    assert_eq!(store.stats().cache_bytes, 0);
    let check = db.execute("PRAGMA integrity_check", &Params::None).unwrap().rows;
    assert_eq!(check, vec![vec![Value::Text("ok".into())]]);
    (reads, rows)
}

#[test]
fn a_scan_reads_ahead_in_batches_and_answers_the_same() {
    let (plain_reads, plain) = scan_reads(Arc::new(MemoryStore::new()));
    let (ahead_reads, ahead) = scan_reads(Arc::new(MemoryStore::with_read_ahead(32 << 20)));
    assert_eq!(plain, ahead);
    assert_eq!(plain[0][0], Value::Integer(ROWS));
    eprintln!("full scan store reads: {plain_reads} without read-ahead, {ahead_reads} with");
    assert!(plain_reads > 500, "{plain_reads}");
    assert!(ahead_reads * 10 < plain_reads, "{ahead_reads} reads with read-ahead vs {plain_reads}");
}

#[test]
fn no_room_for_read_ahead_means_plain_reads() {
    let (plain_reads, plain) = scan_reads(Arc::new(MemoryStore::new()));
    let (tiny_reads, tiny) = scan_reads(Arc::new(MemoryStore::with_read_ahead(1_000)));
    assert_eq!(plain, tiny);
    assert_eq!(plain_reads, tiny_reads);
}
