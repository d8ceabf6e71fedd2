//! A 50 MiB database built through large transactions on the embedded store reads back
//! byte for byte, before and after the store is reopened.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use roost::kv::{FjallConfig, FjallStore, KvStore};
use roost::{ActorId, Database, Params, Statement, Storage, StorageConfig, Value};

const ROWS: u64 = 3200;
const ROW_BYTES: usize = 16 << 10;
const ROWS_PER_TXN: u64 = 640;

fn payload(row: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; ROW_BYTES];
    StdRng::seed_from_u64(row).fill_bytes(&mut bytes);
    bytes
}

fn open(dir: &std::path::Path) -> (Storage, Database) {
    let store: Arc<dyn KvStore> = Arc::new(FjallStore::open(FjallConfig::new(dir)).unwrap());
    let storage = Storage::new(store, StorageConfig::default()).unwrap();
    let db = storage.open(&ActorId::new("large").unwrap()).unwrap();
    (storage, db)
}

fn verify(db: &mut Database) {
    let check = db.execute("PRAGMA integrity_check", &Params::None).unwrap();
    assert_eq!(check.rows, vec![vec![Value::Text("ok".into())]]);
    for start in (0..ROWS).step_by(400) {
        let params =
            Params::Positional(vec![Value::Integer(start as i64), Value::Integer(start as i64 + 400)]);
        let rows =
            db.execute("SELECT id, v FROM t WHERE id >= ? AND id < ? ORDER BY id", &params).unwrap().rows;
        assert_eq!(rows.len(), 400);
        for row in rows {
            let (Value::Integer(id), Value::Blob(v)) = (&row[0], &row[1]) else { panic!("bad row types") };
            assert!(*v == payload(*id as u64), "row {id} differs");
        }
    }
}

#[test]
fn fifty_mib_through_large_transactions_reads_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, mut db) = open(dir.path());
    db.execute_script("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB NOT NULL)").unwrap();
    let writes_before = storage.store().stats().write_calls;
    for first in (0..ROWS).step_by(ROWS_PER_TXN as usize) {
        let statements: Vec<Statement> = (first..first + ROWS_PER_TXN)
            .map(|row| {
                let params = Params::Positional(vec![Value::Integer(row as i64), Value::Blob(payload(row))]);
                Statement::with_params("INSERT INTO t VALUES (?, ?)", params)
            })
            .collect();
        db.batch(&statements, true).unwrap();
    }
    let writes = storage.store().stats().write_calls - writes_before;
    let size = storage.size_bytes(db.id()).unwrap().unwrap();
    assert!(size >= 50 << 20, "database is {size} bytes");
    eprintln!("{} MiB in {} store writes", size >> 20, writes);
    verify(&mut db);
    drop(db);
    drop(storage);
    let (_storage, mut db) = open(dir.path());
    verify(&mut db);
}
