use std::sync::Arc;

use super::*;

fn put(k: &[u8], v: &[u8]) -> WriteOp {
    WriteOp::Put(k.to_vec(), v.to_vec())
}

fn batch(ops: Vec<WriteOp>) -> WriteBatch {
    WriteBatch { fence: None, ops, durable: true }
}

/// The contract every backend must meet.
fn contract(store: &dyn KvStore) {
    store.write(batch(vec![put(b"a1", b"x"), put(b"a2", b"y"), put(b"a3", b"z"), put(b"b", b"w")])).unwrap();
    assert_eq!(
        store.get_many(&[b"a1".to_vec(), b"nope".to_vec(), b"b".to_vec()]).unwrap(),
        vec![Some(b"x".to_vec()), None, Some(b"w".to_vec())]
    );
    let scanned = store.scan(b"a", b"b", 10).unwrap();
    assert_eq!(scanned.iter().map(|(k, _)| k.as_slice()).collect::<Vec<_>>(), vec![b"a1", b"a2", b"a3"]);
    assert_eq!(store.scan(b"a", b"b", 2).unwrap().len(), 2);
    assert!(store.scan(b"b", b"a", 10).unwrap().is_empty());

    // Ops apply in order: a put after a range delete survives it.
    let ops = vec![
        WriteOp::DeleteRange { start: b"a".to_vec(), end: b"b".to_vec() },
        put(b"a2", b"new"),
        WriteOp::Delete(b"b".to_vec()),
    ];
    store.write(batch(ops)).unwrap();
    let all = store.scan(b"", b"\xff", 100).unwrap();
    assert_eq!(all, vec![(b"a2".to_vec(), b"new".to_vec())]);

    // Fences: absent key, then a generation.
    let fence = |expected: Option<&[u8]>| {
        Some(Fence { key: b"gen".to_vec(), expected: expected.map(<[u8]>::to_vec) })
    };
    let mut b = batch(vec![put(b"gen", b"1"), put(b"c", b"1")]);
    b.fence = fence(None);
    store.write(b).unwrap();
    let mut stale = batch(vec![put(b"c", b"stale")]);
    stale.fence = fence(None);
    assert_eq!(store.write(stale), Err(KvError::Fenced));
    let mut good = batch(vec![put(b"c", b"2")]);
    good.fence = fence(Some(b"1"));
    store.write(good).unwrap();
    assert_eq!(store.get_many(&[b"c".to_vec()]).unwrap(), vec![Some(b"2".to_vec())]);
    assert!(store.stats().write_calls >= 4);
}

#[test]
fn memory_store_meets_contract() {
    contract(&MemoryStore::new());
}

#[test]
fn fjall_store_meets_contract_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = FjallStore::open(FjallConfig::new(dir.path())).unwrap();
        contract(&store);
    }
    let store = FjallStore::open(FjallConfig::new(dir.path())).unwrap();
    assert_eq!(store.get_many(&[b"c".to_vec()]).unwrap(), vec![Some(b"2".to_vec())]);
    let stats = store.stats();
    assert!(stats.cache_bytes_max >= 16 << 20);
}

#[test]
fn fjall_group_commit_shares_syncs_and_keeps_fences_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FjallStore::open(FjallConfig::new(dir.path())).unwrap());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let gen_key = format!("gen{t}").into_bytes();
                for i in 0..50u32 {
                    let expected = (i > 0).then(|| (i - 1).to_be_bytes().to_vec());
                    let b = WriteBatch {
                        fence: Some(Fence { key: gen_key.clone(), expected }),
                        ops: vec![WriteOp::Put(gen_key.clone(), i.to_be_bytes().to_vec())],
                        durable: true,
                    };
                    store.write(b).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Every batch is durable and none is fenced off: each group is one apply and one sync.
    let stats = store.stats();
    assert_eq!(stats.write_calls, 800);
    assert_eq!(stats.syncs, stats.group_commits, "{stats:?}");
    assert!(stats.group_commits <= 800, "{stats:?}");

    // Deterministic grouping: batches queued while the committer is held share one sync.
    let before = store.stats();
    let writers = store.with_committer_paused(|| {
        let writers: Vec<_> = (0..16u8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || store.write(batch(vec![put(&[b'q', t], b"v")])))
            })
            .collect();
        // The committer holds the first batch; the other 15 wait in the queue.
        while store.queued() < 15 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        writers
    });
    for w in writers {
        w.join().unwrap().unwrap();
    }
    let after = store.stats();
    assert_eq!(after.write_calls - before.write_calls, 16);
    assert_eq!(after.syncs - before.syncs, 1, "16 queued batches, one group, one sync: {after:?}");
    assert_eq!(after.group_commits - before.group_commits, 1, "{after:?}");
    // Two batches fenced on the same expected value in one group: only the first applies.
    let mk = |v: &[u8]| WriteBatch {
        fence: Some(Fence { key: b"g".to_vec(), expected: None }),
        ops: vec![WriteOp::Put(b"g".to_vec(), v.to_vec())],
        durable: true,
    };
    let s1 = store.clone();
    let s2 = store.clone();
    let a = std::thread::spawn(move || s1.write(mk(b"a")));
    let b = std::thread::spawn(move || s2.write(mk(b"b")));
    let results = [a.join().unwrap(), b.join().unwrap()];
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert_eq!(results.iter().filter(|r| **r == Err(KvError::Fenced)).count(), 1);
}

#[test]
fn faulty_store_fails_the_nth_call_without_effect() {
    let store = FaultyStore::new(MemoryStore::new());
    store.set_plan(FaultPlan { fail_commit: 2, ..FaultPlan::default() });
    store.write(batch(vec![put(b"k", b"1")])).unwrap();
    assert_eq!(store.write(batch(vec![put(b"k", b"2")])), Err(KvError::Injected("commit")));
    assert_eq!(store.get_many(&[b"k".to_vec()]).unwrap(), vec![Some(b"1".to_vec())]);
    assert_eq!(store.injected(), 1);
}

#[test]
fn fjall_compaction_merges_level_0_and_keeps_every_latest_value() {
    let dir = tempfile::tempdir().unwrap();
    let config = FjallConfig { memtable_bytes_max: 64 << 10, ..FjallConfig::new(dir.path()) };
    let store = FjallStore::open(config.clone()).unwrap();
    let key = |i: u32| format!("k{:05}", i * 7919 % 4000).into_bytes();
    // Random-order keys over several write buffers: overlapping tables in level 0.
    for round in 0..4u8 {
        for chunk in 0..10u32 {
            let ops = (0..100).map(|i| put(&key(chunk * 100 + i), &[round; 512])).collect();
            store.write(batch(ops)).unwrap();
        }
        store.write(batch(vec![WriteOp::Delete(key(round.into()))])).unwrap();
    }
    assert_eq!(MemoryStore::new().compact(), Ok(false));
    // Background compactions may already have merged those into one table: a write buffer of
    // keys after all others (more than one buffer's worth, so it is written out) adds a
    // table of its own, until the store holds more than one.
    let late = |attempt: u32, i: u32| format!("z{attempt}-{i:03}").into_bytes();
    let mut attempts = 0;
    let before = loop {
        let ops = (0..150).map(|i| put(&late(attempts, i), &[4; 512])).collect();
        store.write(batch(ops)).unwrap();
        attempts += 1;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while store.stats().compaction.flushes_pending > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let before = store.stats().compaction;
        if before.tables > 1 || attempts == 10 {
            break before;
        }
    };
    assert!(before.tables > 1, "{before:?}");
    assert_eq!(store.compact(), Ok(true));
    let c = store.stats().compaction;
    // 2 MB of values end in one table (fjall's major compaction cuts tables at 64 MB), and no
    // write buffer sealed before the call lands in level 0 after it.
    assert_eq!((c.tables, c.l0_tables, c.flushes_pending), (1, 0, 0), "{c:?}");
    // The background compactions of the writes above were counted (a major compaction is not).
    assert!(c.completed >= 1, "{c:?}");
    let check = |store: &FjallStore| {
        for i in 0..1000u32 {
            // Each round deleted one key that later rounds put again, except the last.
            let expected = if i == 3 { None } else { Some(vec![3u8; 512]) };
            assert_eq!(store.get_many(&[key(i)]).unwrap(), vec![expected], "key {i}");
        }
        for (attempt, i) in (0..attempts).flat_map(|a| (0..150).map(move |i| (a, i))) {
            assert_eq!(store.get_many(&[late(attempt, i)]).unwrap(), vec![Some(vec![4u8; 512])]);
        }
    };
    check(&store);
    // Writes go on after a compaction, and both survive a reopen.
    store.write(batch(vec![put(b"after", b"1")])).unwrap();
    drop(store);
    let store = FjallStore::open(config).unwrap();
    check(&store);
    assert_eq!(store.get_many(&[b"after".to_vec()]).unwrap(), vec![Some(b"1".to_vec())]);
}

#[test]
fn fjall_recovers_from_an_interrupted_creation() {
    // What a kill during the very first open leaves behind: fjall's first files, no version.
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join("fjall.creating");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("lock"), b"").unwrap();
    std::fs::write(staging.join("0.jnl"), b"").unwrap();
    std::fs::write(staging.join("version"), b"").unwrap();
    let store = FjallStore::open(FjallConfig::new(dir.path())).unwrap();
    store.write(batch(vec![put(b"k", b"v")])).unwrap();
    drop(store);
    assert!(!staging.exists());
    let store = FjallStore::open(FjallConfig::new(dir.path())).unwrap();
    assert_eq!(store.get_many(&[b"k".to_vec()]).unwrap(), vec![Some(b"v".to_vec())]);
}

#[test]
fn fjall_relaxed_durability_acknowledges_before_syncing_and_syncs_periodically() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = FjallConfig::new(dir.path());
    config.durability = Durability::Relaxed;
    config.relaxed_sync_interval_ms = 20;
    {
        let store = FjallStore::open(config.clone()).unwrap();
        for i in 0..200u32 {
            store.write(batch(vec![put(&i.to_be_bytes(), b"v")])).unwrap();
        }
        let syncs = store.stats().syncs;
        assert!(syncs < 50, "relaxed mode synced {syncs} times for 200 commits");
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(store.stats().syncs > syncs, "no periodic sync happened");
    }
    let store = FjallStore::open(config).unwrap();
    assert_eq!(store.scan(b"", b"\xff", 1000).unwrap().len(), 200);
    assert_eq!("relaxed".parse::<Durability>(), Ok(Durability::Relaxed));
    assert!("fast".parse::<Durability>().is_err());
}

#[test]
fn fjall_sync_failure_after_apply_stops_the_store_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let before = batch(vec![put(b"k0", b"safe")]);
    let doomed = batch(vec![put(b"k1", b"x"), put(b"k2", b"x")]);
    {
        let store = FjallStore::open(FjallConfig::new(dir.path())).unwrap();
        store.write(before).unwrap();
        store.fail_next_sync();
        // The batch was applied to the keyspace, then its sync failed.
        assert!(matches!(store.write(doomed), Err(KvError::Failed(_))));
        // No later call may show (or build on) the applied batch.
        assert!(matches!(store.get_many(&[b"k1".to_vec()]), Err(KvError::Failed(_))));
        assert!(matches!(store.scan(b"", b"\xff", 10), Err(KvError::Failed(_))));
        assert!(matches!(store.write(batch(vec![put(b"k3", b"x")])), Err(KvError::Failed(_))));
        let mut relaxed = batch(vec![put(b"k4", b"x")]);
        relaxed.durable = false;
        assert!(matches!(store.write(relaxed), Err(KvError::Failed(_))));
    }
    // A restart recovers a consistent state: earlier commits, and the failed batch entirely
    // or not at all; nothing written after the failure.
    let store = FjallStore::open(FjallConfig::new(dir.path())).unwrap();
    let all = store.scan(b"", b"\xff", 10).unwrap();
    let keys: Vec<&[u8]> = all.iter().map(|(k, _)| k.as_slice()).collect();
    assert!(keys == [b"k0".as_slice()] || keys == [b"k0".as_slice(), b"k1", b"k2"], "{keys:?}");
    store.write(batch(vec![put(b"k5", b"x")])).unwrap();
    assert_eq!(store.get_many(&[b"k5".to_vec()]).unwrap(), vec![Some(b"x".to_vec())]);
}

#[test]
fn fjall_reopens_in_place_after_a_sync_failure() {
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(FjallConfig::new(dir.path())).unwrap();
    store.write(batch(vec![put(b"k0", b"safe")])).unwrap();
    store.fail_next_sync();
    assert!(matches!(store.write(batch(vec![put(b"k1", b"x")])), Err(KvError::Failed(_))));
    assert!(matches!(store.health(), StoreHealth::Failed(_)));
    let writes_before = store.stats().write_calls;
    // Same guarantees as a restart, in the same process and through the same handle.
    assert_eq!(store.reopen(), Ok(true));
    assert_eq!(store.health(), StoreHealth::Ok);
    assert_eq!(store.get_many(&[b"k0".to_vec()]).unwrap(), vec![Some(b"safe".to_vec())]);
    store.write(batch(vec![put(b"k2", b"y")])).unwrap();
    assert_eq!(store.get_many(&[b"k2".to_vec()]).unwrap(), vec![Some(b"y".to_vec())]);
    assert!(store.stats().write_calls > writes_before, "counters survive the reopen");
    assert_eq!(store.stats().write_errors.failed, 1);
    drop(store);
    let store = FjallStore::open(FjallConfig::new(dir.path())).unwrap();
    assert_eq!(store.get_many(&[b"k2".to_vec()]).unwrap(), vec![Some(b"y".to_vec())]);
}

#[test]
fn faulty_store_models_a_sync_failure_after_apply() {
    let store = FaultyStore::new(MemoryStore::new());
    store.set_plan(FaultPlan { fail_after_commit: 1, ..FaultPlan::default() });
    assert!(matches!(store.write(batch(vec![put(b"k", b"1")])), Err(KvError::Failed(_))));
    assert!(matches!(store.get_many(&[b"k".to_vec()]), Err(KvError::Failed(_))));
    assert!(matches!(store.write(batch(vec![put(b"j", b"1")])), Err(KvError::Failed(_))));
    store.set_plan(FaultPlan::default());
    assert_eq!(store.get_many(&[b"k".to_vec(), b"j".to_vec()]).unwrap(), vec![Some(b"1".to_vec()), None]);
}

/// A PostgreSQL store in a fresh database, or `None` when no server is reachable.
fn postgres(tag: &str) -> Option<(testing::TestDatabase, PostgresConfig)> {
    let db = testing::TestDatabase::create(tag)?;
    let config = PostgresConfig::new(db.url.clone());
    Some((db, config))
}

#[test]
fn postgres_store_meets_contract_and_survives_reopen() {
    let Some((_db, config)) = postgres("contract") else { return };
    {
        let store = PostgresStore::open(config.clone()).unwrap();
        contract(&store);
        let stats = store.stats();
        assert_eq!(stats.write_calls, 5, "{stats:?}");
    }
    let store = PostgresStore::open(config).unwrap();
    assert_eq!(store.get_many(&[b"c".to_vec()]).unwrap(), vec![Some(b"2".to_vec())]);
    // Ops in order, across statement chunks: later puts and deletes win over earlier ones.
    let ops = vec![put(b"x1", b"a"), WriteOp::Delete(b"x1".to_vec()), put(b"x2", b"a"), put(b"x2", b"b")];
    store.write(batch(ops)).unwrap();
    assert_eq!(
        store.get_many(&[b"x1".to_vec(), b"x2".to_vec(), b"x2".to_vec()]).unwrap(),
        vec![None, Some(b"b".to_vec()), Some(b"b".to_vec())]
    );
}

#[test]
fn postgres_splits_big_batches_into_statements_of_one_transaction() {
    let Some((_db, mut config)) = postgres("chunks") else { return };
    config.statement_bytes_max = 10_000;
    let store = PostgresStore::open(config).unwrap();
    let ops = (0..100u32).map(|i| WriteOp::Put(i.to_be_bytes().to_vec(), vec![7; 4096])).collect();
    store.write(batch(ops)).unwrap();
    assert_eq!(store.scan(b"", b"\xff", 1000).unwrap().len(), 100);
    // A fenced big batch that fails changes nothing, whatever statement it got to.
    let mut doomed =
        batch((0..100u32).map(|i| WriteOp::Put(i.to_be_bytes().to_vec(), vec![9; 4096])).collect());
    doomed.fence = Some(Fence { key: b"gen".to_vec(), expected: Some(b"1".to_vec()) });
    assert_eq!(store.write(doomed), Err(KvError::Fenced));
    assert!(store.scan(b"", b"\xff", 1000).unwrap().iter().all(|(_, v)| v[0] == 7));
    let stats = store.stats();
    assert_eq!((stats.read_calls, stats.write_calls), (2, 2), "{stats:?}");
}

#[test]
fn postgres_fences_serialize_concurrent_writers() {
    let Some((_db, config)) = postgres("fences") else { return };
    let store = Arc::new(PostgresStore::open(config).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let gen_key = format!("gen{}", t % 2).into_bytes();
                let mut won = 0;
                for _ in 0..30 {
                    let current = store.get_many(std::slice::from_ref(&gen_key)).unwrap().pop().flatten();
                    let next =
                        current.as_ref().map_or(0, |v| u32::from_be_bytes(v[..4].try_into().unwrap()) + 1);
                    let b = WriteBatch {
                        fence: Some(Fence { key: gen_key.clone(), expected: current }),
                        ops: vec![WriteOp::Put(gen_key.clone(), next.to_be_bytes().to_vec())],
                        durable: true,
                    };
                    match store.write(b) {
                        Ok(()) => won += 1,
                        Err(KvError::Fenced) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                won
            })
        })
        .collect();
    let won: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    // Every successful bump moved a generation by exactly one: no two writers passed the same
    // fence (absent or present).
    let gens = store.get_many(&[b"gen0".to_vec(), b"gen1".to_vec()]).unwrap();
    let total: u32 =
        gens.iter().map(|v| u32::from_be_bytes(v.as_ref().unwrap()[..4].try_into().unwrap()) + 1).sum();
    assert_eq!(total, won);
}

#[test]
fn postgres_outage_answers_unavailable_in_bounded_time_and_recovers() {
    let Some((db, mut config)) = postgres("outage") else { return };
    let proxy = testing::Proxy::start(&db.url);
    config.url = proxy.url(&db.url);
    config.call_timeout_ms = 1_500;
    config.connect_timeout_ms = 500;
    let store = PostgresStore::open(config).unwrap();
    store.write(batch(vec![put(b"k", b"before")])).unwrap();

    proxy.down();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let read = store.get_many(&[b"k".to_vec()]);
        assert!(matches!(read, Err(KvError::Unavailable(_))), "{read:?}");
        let written = store.write(batch(vec![put(b"k", b"during")]));
        assert!(matches!(written, Err(KvError::Unavailable(_))), "{written:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(8), "took {:?}", started.elapsed());
    }

    proxy.up();
    // The outage's writes never reached the server: the old value stays, and writing works.
    assert_eq!(store.get_many(&[b"k".to_vec()]).unwrap(), vec![Some(b"before".to_vec())]);
    store.write(batch(vec![put(b"k", b"after")])).unwrap();
    assert_eq!(store.get_many(&[b"k".to_vec()]).unwrap(), vec![Some(b"after".to_vec())]);
}

#[test]
fn postgres_resolves_a_lost_commit_answer_by_its_commit_id() {
    let Some((db, mut config)) = postgres("lost") else { return };
    let proxy = testing::Proxy::start(&db.url);
    config.url = proxy.url(&db.url);
    let store = PostgresStore::open(config).unwrap();
    store.write(batch(vec![put(b"k", b"1")])).unwrap();

    // The server commits, its answer is lost with the connection: the store must find out
    // that the batch committed (not retry it, not report a failure).
    proxy.swallow_next_answer();
    store.write(batch(vec![put(b"k", b"2"), put(b"j", b"2")])).unwrap();
    assert_eq!(
        store.get_many(&[b"k".to_vec(), b"j".to_vec()]).unwrap(),
        vec![Some(b"2".to_vec()), Some(b"2".to_vec())]
    );

    // A fenced batch whose answer is lost: it rolled back, and the store says so.
    proxy.swallow_next_answer();
    let mut stale = batch(vec![put(b"k", b"stale")]);
    stale.fence = Some(Fence { key: b"gen".to_vec(), expected: Some(b"9".to_vec()) });
    let result = store.write(stale);
    assert!(matches!(result, Err(KvError::Unavailable(_))), "{result:?}");
    assert_eq!(store.get_many(&[b"k".to_vec()]).unwrap(), vec![Some(b"2".to_vec())]);
    assert_eq!(store.stats().lost_answers, 2);
}

#[test]
fn postgres_refuses_a_newer_schema_version() {
    let Some((_db, config)) = postgres("schema") else { return };
    drop(PostgresStore::open(config.clone()).unwrap());
    // Opening again keeps the schema (and its data) as it is.
    let store = PostgresStore::open(config.clone()).unwrap();
    store.write(batch(vec![put(b"k", b"v")])).unwrap();
    drop(store);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&config.url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
            .execute("UPDATE roost_meta SET value = value + 1 WHERE name = 'schema_version'", &[])
            .await
            .unwrap();
    });
    let refused = PostgresStore::open(config).unwrap_err();
    assert!(refused.to_string().contains("schema version 4"), "{refused}");
}

#[test]
fn postgres_calls_take_one_network_round_trip_each() {
    let Some((db, mut config)) = postgres("round_trips") else { return };
    let proxy = testing::Proxy::start(&db.url);
    config.url = proxy.url(&db.url);
    config.connections_max = 1;
    let store = PostgresStore::open(config).unwrap();
    // Warm the one connection: its statements are prepared on first use (one round trip).
    store.write(batch(vec![put(b"a0", b"x")])).unwrap();
    store.get_many(&[b"a0".to_vec()]).unwrap();
    // Round trips per call = (time with a 50 ms answer delay - time without) / 50 ms.
    let rtt = std::time::Duration::from_millis(50);
    let (writes_fast, reads_fast) = timed_calls(&store);
    proxy.delay_answers(rtt);
    let (writes_slow, reads_slow) = timed_calls(&store);
    let writes = (writes_slow - writes_fast) / rtt.as_secs_f64();
    let reads = (reads_slow - reads_fast) / rtt.as_secs_f64();
    eprintln!("round trips: {writes:.2} per 50-page commit, {reads:.2} per read");
    assert!(writes < 1.8 && reads < 1.8, "{writes:.2} per commit, {reads:.2} per read");
}

/// Average seconds of 10 fenced 50-page commits and of 20 reads (half `get_many`, half `scan`).
fn timed_calls(store: &PostgresStore) -> (f64, f64) {
    let first = store.get_many(&[b"gen".to_vec()]).unwrap().pop().flatten().map_or(0, |v| v[0]);
    let started = std::time::Instant::now();
    for generation in first..first + 10 {
        // A fenced commit of 50 pages with a range delete and a delete: one pipeline.
        let mut ops = vec![WriteOp::DeleteRange { start: b"b".to_vec(), end: b"c".to_vec() }];
        ops.extend((0..50u8).map(|p| WriteOp::Put(vec![b'b', p], vec![generation; 4096])));
        ops.push(WriteOp::Delete(b"a0".to_vec()));
        ops.push(put(b"gen", &[generation + 1]));
        let mut b = batch(ops);
        b.fence = Some(Fence { key: b"gen".to_vec(), expected: (generation > 0).then(|| vec![generation]) });
        store.write(b).unwrap();
    }
    let writes = started.elapsed().as_secs_f64() / 10.0;
    let started = std::time::Instant::now();
    for _ in 0..10 {
        let keys: Vec<Key> = (0..50u8).map(|p| vec![b'b', p]).collect();
        assert_eq!(store.get_many(&keys).unwrap().len(), 50);
        assert_eq!(store.scan(b"b", b"c", 100).unwrap().len(), 50);
    }
    (writes, started.elapsed().as_secs_f64() / 20.0)
}

#[test]
fn postgres_blocks_every_call_until_a_lost_commit_is_resolved() {
    let Some((db, mut config)) = postgres("unresolved") else { return };
    let proxy = Arc::new(testing::Proxy::start(&db.url));
    config.url = proxy.url(&db.url);
    config.call_timeout_ms = 1_000;
    config.connect_timeout_ms = 300;
    let store = PostgresStore::open(config).unwrap();
    store.write(batch(vec![put(b"k", b"1")])).unwrap();

    // The answer is lost (the proxy cuts the connection 300 ms after the server answered) and
    // by then PostgreSQL is unreachable: the outcome cannot be read back yet.
    proxy.swallow_next_answer();
    let outage = {
        let proxy = proxy.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            proxy.down();
        })
    };
    let result = store.write(batch(vec![put(b"k", b"2")]));
    outage.join().unwrap();
    assert!(matches!(&result, Err(KvError::Unavailable(m)) if m.contains("not known")), "{result:?}");
    // Nothing is read or written while a lost commit might still change what a read shows.
    assert!(matches!(store.get_many(&[b"k".to_vec()]), Err(KvError::Unavailable(_))));
    proxy.up();
    // Back: the commit is resolved first (it had committed), then calls go through.
    assert_eq!(store.get_many(&[b"k".to_vec()]).unwrap(), vec![Some(b"2".to_vec())]);
    store.write(batch(vec![put(b"k", b"3")])).unwrap();
    assert_eq!(store.stats().lost_answers, 1);
}

#[test]
fn crash_store_meets_contract() {
    contract(&CrashStore::new());
    contract(&CrashStore::with_durability(Durability::Relaxed, 3));
}

fn journal(ops: Vec<WriteOp>) -> WriteBatch {
    WriteBatch { fence: None, ops, durable: false }
}

fn keys_of(store: &dyn KvStore) -> Vec<Vec<u8>> {
    store.scan(b"", b"\xff", 100).unwrap().into_iter().map(|(k, _)| k).collect()
}

#[test]
fn crash_store_loses_exactly_the_unsynced_batches() {
    let store = CrashStore::new();
    store.write(journal(vec![put(b"j1", b"x")])).unwrap();
    store.write(batch(vec![put(b"c1", b"x")])).unwrap();
    store.write(journal(vec![put(b"j2", b"x")])).unwrap();
    assert_eq!(keys_of(&store), [b"c1".to_vec(), b"j1".to_vec(), b"j2".to_vec()]);
    store.crash();
    // The commit's sync covered the journal batch before it, not the one after.
    assert_eq!(keys_of(&store), [b"c1".to_vec(), b"j1".to_vec()]);
    assert_eq!(store.syncs(), 1);

    let relaxed = CrashStore::with_durability(Durability::Relaxed, 2);
    for k in [b"a", b"b", b"c"] {
        relaxed.write(batch(vec![put(k, b"x")])).unwrap();
    }
    relaxed.crash();
    assert_eq!(keys_of(&relaxed), [b"a".to_vec(), b"b".to_vec()], "the window is one batch");
}

#[test]
fn crash_store_faults_stop_the_store_until_reopened() {
    let store = CrashStore::new();
    store.write(batch(vec![put(b"k0", b"x")])).unwrap();
    store.set_plan(CrashPlan { fail_before_sync: 1, ..CrashPlan::default() });
    assert!(matches!(store.write(batch(vec![put(b"k1", b"x")])), Err(KvError::Failed(_))));
    assert!(matches!(store.get_many(&[b"k1".to_vec()]), Err(KvError::Failed(_))));
    assert!(matches!(store.health(), StoreHealth::Failed(_)));
    assert_eq!(store.reopen(), Ok(true));
    assert_eq!(keys_of(&store), [b"k0".to_vec()]);

    store.set_plan(CrashPlan { fail_after_sync: 1, ..CrashPlan::default() });
    assert!(matches!(store.write(batch(vec![put(b"k2", b"x")])), Err(KvError::Failed(_))));
    assert!(matches!(store.scan(b"", b"\xff", 10), Err(KvError::Failed(_))));
    store.reopen().unwrap();
    assert_eq!(keys_of(&store), [b"k0".to_vec(), b"k2".to_vec()]);

    store.write(journal(vec![put(b"j", b"x")])).unwrap();
    store.set_plan(CrashPlan { crash_at_write: 2, ..CrashPlan::default() });
    store.write(journal(vec![put(b"j2", b"x")])).unwrap();
    assert!(matches!(store.write(batch(vec![put(b"k3", b"x")])), Err(KvError::Failed(_))));
    store.reopen().unwrap();
    assert_eq!(keys_of(&store), [b"k0".to_vec(), b"k2".to_vec()]);
    assert_eq!(store.injected(), 3);
}

#[test]
fn postgres_claims_take_over_only_expired_leases_and_fence_the_old_owner() {
    use crate::kv::{Claim, Renewal};
    let Some((_db, config)) = postgres("claims") else { return };
    let store = PostgresStore::open(config).unwrap();
    let gen_key = b"ax\0g".to_vec();
    let keys = vec![gen_key.clone(), b"ax\0m".to_vec()];
    let lease_ms = 400;
    let a = store.register_node("a", "http://a", lease_ms).unwrap();
    let b = store.register_node("b", "http://b", 60_000).unwrap();
    // First claim: fresh, generation 1; a write fenced on it applies.
    let Claim::Mine { values, fresh: true, .. } =
        store.claim(&gen_key, "a", a, &keys, &no_preload()).unwrap()
    else {
        panic!("a claims a new actor")
    };
    let gen_a = values[0].clone().unwrap();
    assert_eq!(gen_a, 1u64.to_be_bytes().to_vec());
    let fenced_on = |expected: &[u8]| WriteBatch {
        fence: Some(Fence { key: gen_key.clone(), expected: Some(expected.to_vec()) }),
        ops: vec![put(b"ax\0m", b"meta")],
        durable: true,
    };
    store.write(fenced_on(&gen_a)).unwrap();
    // While a's lease is live, b is sent to a; a claims again without a bump (no write).
    let elsewhere = store.claim(&gen_key, "b", b, &keys, &no_preload()).unwrap();
    assert!(
        matches!(&elsewhere, Claim::Elsewhere(n) if n.node_id == "a" && n.url == "http://a"),
        "{elsewhere:?}"
    );
    let Claim::Mine { values, fresh: false, .. } =
        store.claim(&gen_key, "a", a, &keys, &no_preload()).unwrap()
    else {
        panic!()
    };
    assert_eq!(values, vec![Some(gen_a.clone()), Some(b"meta".to_vec())]);
    // a's lease runs out: b takes over with a bumped generation, and a's writes are fenced.
    std::thread::sleep(std::time::Duration::from_millis(lease_ms + 200));
    let Claim::Mine { values, fresh: false, .. } =
        store.claim(&gen_key, "b", b, &keys, &no_preload()).unwrap()
    else {
        panic!("b takes the actor over")
    };
    assert_eq!(values[0], Some(2u64.to_be_bytes().to_vec()));
    assert_eq!(store.write(fenced_on(&gen_a)), Err(KvError::Fenced));
    store.write(fenced_on(&2u64.to_be_bytes())).unwrap();
    // a cannot claim (its lease is dead) nor renew it; registering again gives a new epoch,
    // and the old epoch is then replaced, not expired.
    assert!(matches!(store.claim(&gen_key, "a", a, &keys, &no_preload()), Err(KvError::Unavailable(_))));
    let mut session = store.lease_session();
    let renew = |session: &mut _, epoch| {
        store.renew_node(session, "a", epoch, lease_ms, std::time::Duration::from_secs(5)).unwrap()
    };
    assert_eq!(renew(&mut session, a), Renewal::Expired);
    let a2 = store.register_node("a", "http://a", lease_ms).unwrap();
    assert_eq!(a2, a + 1);
    assert_eq!(renew(&mut session, a), Renewal::Replaced { epoch: a2 });
    assert_eq!(renew(&mut session, a2), Renewal::Renewed);
    // b still owns it: a (new epoch) is sent to b.
    assert!(
        matches!(store.claim(&gen_key, "a", a2, &keys, &no_preload()).unwrap(), Claim::Elsewhere(n) if n.node_id == "b")
    );
    // b hands its actors back: a takes over at once.
    store.release_node("b", b).unwrap();
    let Claim::Mine { values, .. } = store.claim(&gen_key, "a", a2, &keys, &no_preload()).unwrap() else {
        panic!()
    };
    assert_eq!(values[0], Some(3u64.to_be_bytes().to_vec()));
    let nodes = store.nodes().unwrap();
    assert_eq!(
        nodes.iter().map(|n| (n.node_id.as_str(), n.actors_owned)).collect::<Vec<_>>(),
        [("a", 1), ("b", 0)]
    );
}

#[test]
fn postgres_concurrent_takeovers_leave_one_owner() {
    use crate::kv::Claim;
    let Some((_db, config)) = postgres("takeovers") else { return };
    let store = Arc::new(PostgresStore::open(config).unwrap());
    let epochs: Vec<i64> =
        (0..6).map(|n| store.register_node(&format!("n{n}"), "http://x", 60_000).unwrap()).collect();
    for actor in 0..20u8 {
        let gen_key = vec![b'a', actor, 0, b'g'];
        let winners: Vec<bool> = std::thread::scope(|scope| {
            let handles: Vec<_> = epochs
                .iter()
                .enumerate()
                .map(|(n, epoch)| {
                    let (store, gen_key) = (store.clone(), gen_key.clone());
                    scope.spawn(move || {
                        let claim = store.claim(
                            &gen_key,
                            &format!("n{n}"),
                            *epoch,
                            std::slice::from_ref(&gen_key),
                            &no_preload(),
                        );
                        matches!(claim.unwrap(), Claim::Mine { .. })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(winners.iter().filter(|w| **w).count(), 1, "actor {actor}: {winners:?}");
    }
}

#[test]
fn postgres_migrates_a_version_1_database_in_place() {
    let Some((db, config)) = postgres("migrate") else { return };
    {
        let store = PostgresStore::open(config.clone()).unwrap();
        store.write(batch(vec![put(b"k", b"v")])).unwrap();
    }
    // Back to what version 1 had: no node tables, no claim function.
    let url = db.url.clone();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(
                "DROP FUNCTION roost_claim; DROP TABLE roost_nodes; DROP TABLE roost_owners; \
                 DROP TABLE roost_staged; DROP TABLE roost_placement; \
                 DELETE FROM roost_meta WHERE name = 'shard_id'; \
                 UPDATE roost_meta SET value = 1 WHERE name = 'schema_version'",
            )
            .await
            .unwrap();
    });
    let store = PostgresStore::open(config).unwrap();
    assert_eq!(store.get_many(&[b"k".to_vec()]).unwrap(), vec![Some(b"v".to_vec())]);
    let epoch = store.register_node("n", "http://n", 60_000).unwrap();
    let claim = store.claim(b"g", "n", epoch, &[b"k".to_vec()], &no_preload()).unwrap();
    let expected = vec![Some(b"v".to_vec())];
    assert!(matches!(claim, crate::kv::Claim::Mine { values, fresh: true, .. } if values == expected));
}

fn no_preload() -> crate::kv::Preload {
    crate::kv::Preload {
        meta_key: b"none".to_vec(),
        start: b"none".to_vec(),
        end: b"none".to_vec(),
        chunk_bytes: 4096,
        whole_chunks: 0,
        first_chunks: 0,
        hint_chunks: 0,
    }
}

#[test]
fn postgres_claims_read_small_files_whole_and_the_start_of_big_ones_within_the_cap() {
    use crate::kv::{Claim, Preload};
    let Some((_db, mut config)) = postgres("preload") else { return };
    config.preload_bytes_max = 64 * (4096 + 64);
    let store = PostgresStore::open(config).unwrap();
    let epoch = store.register_node("n", "http://n", 60_000).unwrap();
    let meta = |chunks: u64| [vec![1u8], (chunks * 4096).to_be_bytes().to_vec()].concat();
    let file = |actor: u8, chunks: u64| {
        let mut ops = vec![WriteOp::Put(vec![b'a', actor, 0, b'm'], meta(chunks))];
        ops.extend((0..chunks).map(|i| {
            WriteOp::Put([vec![b'a', actor, 0, b'm'], i.to_be_bytes().to_vec()].concat(), vec![7; 4096])
        }));
        store.write(batch(ops)).unwrap();
    };
    let preload = |actor: u8| Preload {
        meta_key: vec![b'a', actor, 0, b'm'],
        start: [vec![b'a', actor, 0, b'm'], 0u64.to_be_bytes().to_vec()].concat(),
        end: vec![b'a', actor, 0, b'n'],
        chunk_bytes: 4096,
        whole_chunks: 8,
        first_chunks: 2,
        hint_chunks: 0,
    };
    let claim =
        |actor: u8| match store.claim(&[b'a', actor, 0, b'g'], "n", epoch, &[], &preload(actor)).unwrap() {
            Claim::Mine { preloaded, .. } => preloaded,
            other => panic!("{other:?}"),
        };
    file(1, 5);
    file(2, 40);
    let small = claim(1);
    assert_eq!(small.pairs.len(), 5, "a small file comes whole");
    assert!(
        small.pairs.windows(2).all(|w| w[0].0 < w[1].0) && small.pairs.iter().all(|(_, v)| v.len() == 4096)
    );
    let big = claim(2);
    assert_eq!(big.pairs.len(), 2, "a big file: its first chunks");
    // What is held is charged to the store's cache; the cap limits what later claims read.
    assert_eq!(store.stats().cache_bytes, small.charged_bytes() + big.charged_bytes());
    let held: Vec<_> = (0..12).map(|_| claim(1)).collect();
    assert!(held.iter().any(|p| p.pairs.len() < 5), "the cap must stop read-ahead");
    assert!(store.stats().cache_bytes <= 64 * (4096 + 64));
    drop((small, big, held));
    assert_eq!(store.stats().cache_bytes, 0);
}

/// The first column of the one row `sql` answers on the database at `url`.
fn query_i64(url: &str, sql: &str) -> i64 {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.query_one(sql, &[]).await.unwrap().get(0)
    })
}

/// Runs `sql` (several statements) on the database at `url`.
fn run_sql(url: &str, sql: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
    })
}

fn staged_rows(url: &str) -> i64 {
    query_i64(url, "SELECT count(*) FROM roost_staged")
}

/// Waits up to 10 s for `roost_staged` to be empty (cleanups run in the background).
fn wait_unstaged(url: &str) -> i64 {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let rows = staged_rows(url);
        if rows == 0 || std::time::Instant::now() > until {
            return rows;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn page(i: u32) -> Key {
    [b"p".as_slice(), &i.to_be_bytes()].concat()
}

/// A batch of `pages` 4 KiB pages filled with `fill`: 160 KiB for 40 pages.
fn pages(pages: u32, fill: u8) -> Vec<WriteOp> {
    (0..pages).map(|i| WriteOp::Put(page(i), vec![fill; 4096])).collect()
}

/// A store that stages batches above 64 KiB, uploading 16 KiB (3 pages) per call.
fn staging(config: &mut PostgresConfig) {
    config.stage_bytes_min = 64 << 10;
    config.statement_bytes_max = 16 << 10;
}

#[test]
fn postgres_stages_big_batches_and_publishes_them_in_one_transaction() {
    let Some((db, mut config)) = postgres("staged") else { return };
    staging(&mut config);
    let store = PostgresStore::open(config).unwrap();
    let oracle = MemoryStore::new();
    let both = |b: WriteBatch| {
        oracle.write(b.clone()).unwrap();
        store.write(b).unwrap();
    };
    both(batch(vec![put(b"old1", b"x"), put(b"old2", b"x"), put(b"q", b"keep"), put(&page(5), b"small")]));
    assert_eq!(store.stats().staged_writes, 0, "a small batch goes in one call");
    // Ranges, deletes and puts in one staged batch, with later ops on the same keys winning.
    let mut ops =
        vec![WriteOp::DeleteRange { start: b"old".to_vec(), end: b"olf".to_vec() }, put(b"old2", b"new")];
    ops.extend(pages(40, 7));
    ops.extend([WriteOp::Delete(page(3)), WriteOp::Delete(page(4)), WriteOp::Put(page(4), vec![8; 10])]);
    both(batch(ops));
    let stats = store.stats();
    assert_eq!(stats.staged_writes, 1, "{stats:?}");
    // 39 pages (page 3 is deleted) and two small puts, 3 pages per upload.
    assert_eq!(stats.staged_uploads, 13, "{stats:?}");
    assert_eq!(store.scan(b"", b"\xff", 1000).unwrap(), oracle.scan(b"", b"\xff", 1000).unwrap());
    assert_eq!(store.get_many(&[page(3), page(4)]).unwrap(), vec![None, Some(vec![8; 10])]);
    // The publish moved the rows out of the staging table in the same transaction.
    assert_eq!(staged_rows(&db.url), 0);
}

#[test]
fn postgres_fenced_staged_batch_changes_nothing_and_leaves_no_staged_rows() {
    let Some((db, mut config)) = postgres("staged_fenced") else { return };
    staging(&mut config);
    let store = PostgresStore::open(config).unwrap();
    store.write(batch([pages(40, 7), vec![put(b"gen", b"1")]].concat())).unwrap();
    let mut doomed = batch(
        [vec![WriteOp::DeleteRange { start: b"".to_vec(), end: b"\xff".to_vec() }], pages(40, 9)].concat(),
    );
    doomed.fence = Some(Fence { key: b"gen".to_vec(), expected: Some(b"2".to_vec()) });
    assert_eq!(store.write(doomed), Err(KvError::Fenced));
    let all = store.scan(b"", b"\xff", 1000).unwrap();
    assert_eq!(all.len(), 41);
    assert!(all.iter().filter(|(k, _)| k[0] == b'p').all(|(_, v)| *v == vec![7; 4096]));
    assert_eq!(store.stats().staged_writes, 2);
    // Its uploads had committed; the follow-up delete removes them.
    assert_eq!(wait_unstaged(&db.url), 0);
}

#[test]
fn postgres_staging_cut_midway_answers_unavailable_and_its_rows_are_pruned() {
    let Some((db, mut config)) = postgres("staged_outage") else { return };
    let proxy = Arc::new(testing::Proxy::start(&db.url));
    config.url = proxy.url(&db.url);
    staging(&mut config);
    config.statement_bytes_max = 8 << 10; // one page per upload
    config.call_timeout_ms = 1_000;
    config.connect_timeout_ms = 300;
    config.commit_retention_s = 2;
    let store = PostgresStore::open(config).unwrap();
    store.write(batch(vec![put(b"k", b"before")])).unwrap();
    // Rows an earlier process left behind: only the pruner can remove them.
    let orphan = "INSERT INTO roost_staged (commit_id, key, value, staged_at) \
                  VALUES (42, 'x', 'y', now() - interval '1 hour') RETURNING commit_id";
    assert_eq!(query_i64(&db.url, orphan), 42);

    // 80 uploads of 100 ms each; the link goes down after about 5 of them.
    proxy.delay_answers(std::time::Duration::from_millis(100));
    let outage = {
        let proxy = proxy.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(600));
            proxy.down();
        })
    };
    let started = std::time::Instant::now();
    let result = store.write(batch([pages(80, 9), vec![put(b"k", b"during")]].concat()));
    outage.join().unwrap();
    assert!(matches!(&result, Err(KvError::Unavailable(_))), "{result:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(4), "took {:?}", started.elapsed());
    assert!(staged_rows(&db.url) > 0, "some uploads committed before the cut");
    assert_eq!(store.stats().staged_writes, 0);
    assert!(store.stats().staged_uploads > 0);

    proxy.delay_answers(std::time::Duration::ZERO);
    proxy.up();
    // Nothing of the batch is visible, and its rows and the orphan's go.
    assert_eq!(store.get_many(&[b"k".to_vec(), page(0)]).unwrap(), vec![Some(b"before".to_vec()), None]);
    assert_eq!(wait_unstaged(&db.url), 0);
    // Staged again, in well under the 2 s retention (the pruner would roll it back).
    store.write(batch([pages(20, 9), vec![put(b"k", b"after")]].concat())).unwrap();
    assert_eq!(
        store.get_many(&[b"k".to_vec(), page(19)]).unwrap(),
        vec![Some(b"after".to_vec()), Some(vec![9; 4096])]
    );
}

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }

    fn key(&mut self) -> Key {
        vec![b'k', self.below(24) as u8]
    }
}

/// A random batch over a few keys: puts of various sizes, deletes, ranges, the same keys
/// again, sometimes a fence that holds (`current` of the key `gen`) and sometimes not.
fn random_batch(rng: &mut Rng, current: Option<Value>) -> WriteBatch {
    let mut ops = Vec::new();
    for _ in 0..rng.below(12) + 1 {
        let op = match rng.below(10) {
            0..=5 => WriteOp::Put(rng.key(), vec![rng.below(256) as u8; rng.below(300) as usize]),
            6 | 7 => WriteOp::Delete(rng.key()),
            _ => {
                let (a, b) = (rng.key(), rng.key());
                WriteOp::DeleteRange { start: a.clone().min(b.clone()), end: a.max(b) }
            }
        };
        ops.push(op);
    }
    let fence = match rng.below(4) {
        0 => Some(Fence { key: b"gen".to_vec(), expected: current }),
        1 => Some(Fence { key: b"gen".to_vec(), expected: Some(vec![rng.below(3) as u8]) }),
        _ => None,
    };
    if fence.is_some() {
        ops.push(WriteOp::Put(b"gen".to_vec(), vec![rng.below(3) as u8]));
    }
    WriteBatch { fence, ops, durable: rng.below(2) == 0 }
}

#[test]
fn postgres_staged_and_unstaged_writes_give_identical_stores() {
    let Some((_staged_db, mut config)) = postgres("staged_diff") else { return };
    let Some((_plain_db, plain_config)) = postgres("plain_diff") else { return };
    // Every batch with a put is staged, in uploads of a few pairs.
    config.stage_bytes_min = 0;
    config.statement_bytes_max = 400;
    let staged = PostgresStore::open(config).unwrap();
    let plain = PostgresStore::open(plain_config).unwrap();
    let oracle = MemoryStore::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut fenced = 0;
    for round in 0..80 {
        let current = oracle.get_many(&[b"gen".to_vec()]).unwrap().pop().flatten();
        let b = random_batch(&mut rng, current);
        let expected = oracle.write(b.clone());
        fenced += usize::from(expected.is_err());
        assert_eq!(staged.write(b.clone()), expected, "round {round}: {b:?}");
        assert_eq!(plain.write(b.clone()), expected, "round {round}: {b:?}");
        let want = oracle.scan(b"", b"\xff", 1000).unwrap();
        assert_eq!(staged.scan(b"", b"\xff", 1000).unwrap(), want, "round {round}: {b:?}");
        assert_eq!(plain.scan(b"", b"\xff", 1000).unwrap(), want, "round {round}: {b:?}");
    }
    assert!(fenced > 0 && staged.stats().staged_writes > 40, "{fenced} fenced, {:?}", staged.stats());
    assert_eq!(plain.stats().staged_writes, 0);
}

#[test]
fn postgres_never_publishes_a_staged_batch_with_rows_missing() {
    let Some((db, mut config)) = postgres("staged_missing") else { return };
    staging(&mut config);
    let store = PostgresStore::open(config).unwrap();
    store.write(batch(pages(40, 7))).unwrap();
    // What a pruner racing a slow batch would do: one staged row vanishes before the publish.
    let lose_one = "CREATE FUNCTION lose_page_5() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                      IF NEW.key = '\\x7000000005' THEN RETURN NULL; END IF; RETURN NEW; END $$; \
                    CREATE TRIGGER lose_page_5 BEFORE INSERT ON roost_staged \
                      FOR EACH ROW EXECUTE FUNCTION lose_page_5()";
    run_sql(&db.url, lose_one);
    let result = store.write(batch(pages(40, 9)));
    assert!(
        matches!(&result, Err(KvError::Io(m)) if m.contains("39 staged rows, expected 40")),
        "{result:?}"
    );
    assert!(store.scan(b"", b"\xff", 1000).unwrap().iter().all(|(_, v)| *v == vec![7; 4096]));
    assert_eq!(wait_unstaged(&db.url), 0);
}

#[test]
fn postgres_publish_deadline_grows_with_the_staged_bytes_on_both_sides() {
    let Some((db, mut config)) = postgres("staged_slow") else { return };
    config.call_timeout_ms = 1_000;
    config.stage_bytes_min = 1 << 20;
    config.statement_bytes_max = 1 << 20;
    let store = PostgresStore::open(config).unwrap();
    // Writing page 0 takes 1.5 s on the server: more than a call, less than a publish of 8 MiB
    // (1 s + 8 MiB at 4 MiB/s = 3 s).
    run_sql(
        &db.url,
        "CREATE FUNCTION slow_page_0() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.key = '\\x7000000000' THEN PERFORM pg_sleep(1.5); END IF; RETURN NEW; END $$; \
         CREATE TRIGGER slow_page_0 BEFORE INSERT ON roost_kv \
           FOR EACH ROW EXECUTE FUNCTION slow_page_0()",
    );
    let big = (0..128u32).map(|i| WriteOp::Put(page(i), vec![5; 64 << 10])).collect();
    store.write(batch(big)).unwrap();
    let stats = store.stats();
    assert_eq!((stats.staged_writes, stats.lost_answers), (1, 0), "{stats:?}");
    assert_eq!(store.get_many(&[page(127)]).unwrap(), vec![Some(vec![5; 64 << 10])]);
    // A small write of page 0 has one call's time, on the server too: it does not apply.
    let small = store.write(batch(vec![WriteOp::Put(page(0), vec![1])]));
    assert!(matches!(&small, Err(KvError::Unavailable(_))), "{small:?}");
    assert_eq!(store.get_many(&[page(0)]).unwrap(), vec![Some(vec![5; 64 << 10])]);
}

#[test]
fn latency_quantiles_interpolate_inside_their_bucket() {
    let counters = LatencyCounters::default();
    assert_eq!(counters.snapshot().quantile_s(0.5), None);
    // 100 observations: 50 at 150 us (the 100..200 us bucket), 50 at 300 us (200..500 us).
    for _ in 0..50 {
        counters.observe(std::time::Duration::from_micros(150));
        counters.observe(std::time::Duration::from_micros(300));
    }
    let h = counters.snapshot();
    let p50 = h.quantile_s(0.5).unwrap();
    assert!((p50 - 0.0002).abs() < 1e-9, "the median is the top of the first half's bucket: {p50}");
    let p75 = h.quantile_s(0.75).unwrap();
    assert!((p75 - 0.00035).abs() < 1e-9, "halfway through 200..500 us: {p75}");
    counters.observe(std::time::Duration::from_secs(5));
    assert_eq!(counters.snapshot().quantile_s(1.0), Some(1.0), "beyond the last bound: that bound");
}
