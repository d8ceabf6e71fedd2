//! Arbitrary SQL against a fresh in-memory actor, as one statement (`execute`, the `/v1` and
//! Hrana path), with every `?` bound to a file path, or as a script (`execute_script`, Hrana's
//! `sequence`). Never a panic; and the tenancy rules hold afterwards: no database besides
//! `main` and `temp` is attached and no file appears in the probe folder, the process's working
//! directory, where `ATTACH 'x.db'` or `VACUUM INTO 'x.db'` would create one (the authorizer
//! must deny both, whatever form the file name takes).
//!
//! A watchdog interrupts a statement after 200 ms (recursive CTEs run forever otherwise), and
//! the limits are small, so one run stays cheap.
//!
//! Input: byte 0 picks the mode, the rest is the SQL (UTF-8).
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use roost::kv::MemoryStore;
use roost::vfs::InterruptHandle;
use roost::{ActorId, Params, Storage, StorageConfig, Value};

const STATEMENT_TIME_MAX: Duration = Duration::from_millis(200);

/// The empty folder the SQL's file names point at: made the working directory, so relative
/// names land in it too.
fn probe_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("roost-fuzz-probe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::env::set_current_dir(&dir).unwrap();
        dir
    })
}

/// The statement running now, and since when; the watchdog interrupts it when it runs long.
fn running() -> &'static Mutex<Option<(InterruptHandle, Instant)>> {
    static RUNNING: OnceLock<Mutex<Option<(InterruptHandle, Instant)>>> = OnceLock::new();
    RUNNING.get_or_init(|| {
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_millis(20));
            if let Some((handle, since)) = running().lock().unwrap().as_ref() {
                if since.elapsed() > STATEMENT_TIME_MAX {
                    handle.interrupt();
                }
            }
        });
        Mutex::new(None)
    })
}

fn config() -> StorageConfig {
    let mut config = StorageConfig {
        page_cache_bytes_max: 1 << 20,
        db_bytes_max: 8 << 20,
        rows_max: 1_000,
        value_bytes_max: 1 << 20,
        sql_bytes_max: 64 << 10,
        ..StorageConfig::default()
    };
    config.limits.memory_scratch_file_bytes_max = 8 << 20;
    config.limits.scratch_bytes_max = 16 << 20;
    config
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, sql)) = data.split_first() else { return };
    let Ok(sql) = std::str::from_utf8(sql) else { return };
    let dir = probe_dir();
    let storage = Storage::new(Arc::new(MemoryStore::new()), config()).unwrap();
    let mut db = storage.open(&ActorId::new("tenant").unwrap()).unwrap();
    db.execute_script("CREATE TABLE mine(x)").unwrap();
    let handle = db.interrupt_handle().expect("connected");
    *running().lock().unwrap() = Some((handle, Instant::now()));
    let probe = Value::Text(dir.join("probe.db").display().to_string());
    let _ = match mode % 3 {
        0 => db.execute(sql, &Params::None).map(drop),
        1 => {
            let count = sql.matches('?').count().min(8);
            db.execute(sql, &Params::Positional(vec![probe; count])).map(drop)
        }
        _ => db.execute_script(sql),
    };
    *running().lock().unwrap() = None;
    if let Ok(list) = db.execute("PRAGMA database_list", &Params::None) {
        for row in &list.rows {
            assert!(
                matches!(&row[1], Value::Text(name) if name == "main" || name == "temp"),
                "{sql:?} attached {:?}",
                list.rows
            );
        }
    }
    let files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(files.is_empty(), "{sql:?} created {files:?}");
});
