//! Several PostgreSQL shards: placement by rendezvous hashing, routing of every store call,
//! actors moving to an added shard on their next claim (also after a move interrupted at
//! each step), and the placement rules enforced when nodes register.

use std::sync::Arc;

use roost::cluster::{Cluster, ClusterConfig};
use roost::kv::testing::TestDatabase;
use roost::kv::{
    placement_score, Claims, KvStore, PostgresConfig, PostgresStore, ShardedStore, WriteBatch, WriteOp,
};
use roost::vfs::layout;
use roost::{ActorId, Params, Statement, Storage, StorageConfig, Value};

fn databases(tag: &str, n: usize) -> Option<Vec<TestDatabase>> {
    (0..n).map(|i| TestDatabase::create(&format!("{tag}{i}"))).collect()
}

fn open(db: &TestDatabase) -> Arc<PostgresStore> {
    Arc::new(PostgresStore::open(PostgresConfig::new(db.url.clone())).unwrap())
}

fn config(node: &str) -> ClusterConfig {
    ClusterConfig {
        node_id: node.into(),
        advertise_url: format!("http://{node}.invalid"),
        lease_ms: 60_000,
        forward_timeout_ms: 1_000,
    }
}

struct Node {
    shards: Arc<ShardedStore>,
    cluster: Arc<Cluster>,
    storage: Storage,
}

fn join(stores: &[Arc<PostgresStore>], node: &str) -> Result<Node, String> {
    let shards = Arc::new(ShardedStore::new(stores.to_vec(), layout::placement).map_err(|e| e.to_string())?);
    let cluster = Cluster::join(shards.clone(), config(node)).map_err(|e| e.to_string())?;
    let claims: Arc<dyn Claims> = cluster.clone();
    let storage = Storage::with_claims(shards.clone(), Some(claims), StorageConfig::default()).unwrap();
    Ok(Node { shards, cluster, storage })
}

impl Node {
    fn home(&self, id: &ActorId) -> usize {
        self.shards.shard_of(&layout::generation_key(id))
    }

    /// Whether the actor lives on `store` (rather than another shard).
    fn lives_on(&self, id: &ActorId, store: &PostgresStore) -> bool {
        self.shards.shards()[self.home(id)].shard_id() == store.shard_id()
    }

    fn leave(self) {
        self.cluster.release().unwrap();
    }
}

fn actor(i: usize) -> ActorId {
    ActorId::new(format!("actor-{i}")).unwrap()
}

/// A big row for some actors, so their move needs several copy batches.
fn blob_bytes(i: usize) -> usize {
    if i.is_multiple_of(7) {
        1_500_000
    } else {
        100
    }
}

fn fill(node: &Node, i: usize) {
    let mut db = node.storage.open(&actor(i)).unwrap();
    db.execute_script("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)").unwrap();
    let statements: Vec<Statement> = (0..3)
        .map(|k| {
            let blob = vec![(i + k) as u8; blob_bytes(i)];
            Statement::with_params(
                "INSERT INTO t VALUES (?, ?)",
                Params::Positional(vec![Value::Integer(k as i64), Value::Blob(blob)]),
            )
        })
        .collect();
    db.batch(&statements, true).unwrap();
}

fn check(node: &Node, i: usize) {
    let mut db = node.storage.open(&actor(i)).unwrap();
    let ok = db.execute("PRAGMA integrity_check", &Params::None).unwrap();
    assert_eq!(ok.rows, vec![vec![Value::Text("ok".into())]], "actor {i}");
    let rows = db.execute("SELECT k, v FROM t ORDER BY k", &Params::None).unwrap().rows;
    assert_eq!(rows.len(), 3, "actor {i}");
    for (k, row) in rows.iter().enumerate() {
        assert_eq!(row[1], Value::Blob(vec![(i + k) as u8; blob_bytes(i)]), "actor {i} row {k}");
    }
}

/// The keys `store` holds for the actor (its relocation key included).
fn keys_on(store: &PostgresStore, id: &ActorId) -> usize {
    let (start, end) = (layout::actor_prefix(id), layout::actor_end(id));
    let relocation = store.get_many(&[layout::relocation_key(id)]).unwrap()[0].is_some();
    store.scan(&start, &end, usize::MAX).unwrap().len() + usize::from(relocation)
}

#[test]
fn adding_a_shard_moves_names_only_to_it_and_about_a_fair_share() {
    let (old, new) = ([11_i64, 22, 33], [11_i64, 22, 33, 44]);
    let winner = |ids: &[i64], name: &[u8]| *ids.iter().max_by_key(|id| placement_score(**id, name)).unwrap();
    let mut moved = 0;
    let mut per_shard = std::collections::HashMap::new();
    for i in 0..10_000 {
        let name = format!("actor-{i}");
        let (before, after) = (winner(&old, name.as_bytes()), winner(&new, name.as_bytes()));
        *per_shard.entry(before).or_insert(0) += 1;
        if before != after {
            assert_eq!(after, 44, "{name} moved between old shards");
            moved += 1;
        }
    }
    assert!((2_000..3_000).contains(&moved), "{moved} of 10,000 names moved to the fourth shard");
    for (shard, count) in per_shard {
        assert!((3_000..3_700).contains(&count), "shard {shard} got {count} of 10,000 names");
    }
}

#[test]
fn every_actor_lives_on_exactly_one_shard_and_listing_merges_them() {
    let Some(dbs) = databases("spread", 3) else { return };
    let stores: Vec<_> = dbs.iter().map(open).collect();
    let node = join(&stores, "n1").unwrap();
    let actors = 45;
    let mut per_shard = [0; 3];
    for i in 0..actors {
        fill(&node, i);
        let home = node.home(&actor(i));
        per_shard[home] += 1;
        for (shard, store) in node.shards.shards().iter().enumerate() {
            let held = keys_on(store, &actor(i));
            assert_eq!(held > 0, shard == home, "actor {i}: shard {shard} holds {held} keys, home is {home}");
        }
    }
    assert!(per_shard.iter().all(|n| *n >= 5), "actors per shard: {per_shard:?}");
    let listed = node.storage.list("actor-", None, 100).unwrap();
    let mut expected: Vec<String> = (0..actors).map(|i| actor(i).as_str().to_string()).collect();
    expected.sort();
    let names: Vec<String> = listed.actors.iter().map(|(id, _)| id.as_str().to_string()).collect();
    assert_eq!(names, expected);
    for i in 0..actors {
        check(&node, i);
    }
    let stats = node.shards.stats();
    let sum: u64 = node.shards.shards().iter().map(|s| s.stats().write_calls).sum();
    assert_eq!(stats.write_calls, sum);
    node.leave();
}

#[test]
fn a_batch_spanning_shards_is_refused_whole() {
    let Some(dbs) = databases("span", 2) else { return };
    let shards = ShardedStore::new(dbs.iter().map(open).collect(), layout::placement).unwrap();
    let (a, b) = (0..100).map(actor).fold((None, None), |(a, b), id| {
        match shards.shard_of(&layout::generation_key(&id)) {
            0 => (a.or(Some(id)), b),
            _ => (a, b.or(Some(id))),
        }
    });
    let (a, b) = (a.unwrap(), b.unwrap());
    let ops = vec![
        WriteOp::Put(layout::generation_key(&a), b"x".to_vec()),
        WriteOp::Put(layout::generation_key(&b), b"y".to_vec()),
    ];
    let refused = shards.write(WriteBatch { ops, fence: None, durable: true }).unwrap_err();
    assert!(refused.to_string().contains("spans shards"), "{refused}");
    let keys = [layout::generation_key(&a), layout::generation_key(&b)];
    assert_eq!(shards.get_many(&keys).unwrap(), vec![None, None]);
    let same = ShardedStore::new(vec![open(&dbs[0]), open(&dbs[0])], layout::placement).unwrap_err();
    assert!(same.to_string().contains("same database"), "{same}");
}

#[test]
fn an_added_shard_takes_its_actors_on_their_next_claim() {
    let Some(dbs) = databases("grow", 2) else { return };
    let stores: Vec<_> = dbs.iter().map(open).collect();
    let actors = 24;
    let first = join(&stores[..1], "n1").unwrap();
    for i in 0..actors {
        fill(&first, i);
    }
    first.leave();
    let node = join(&stores, "n1").unwrap();
    let mut moved = 0;
    for i in 0..actors {
        check(&node, i);
        let on_added_shard = node.lives_on(&actor(i), &stores[1]);
        moved += usize::from(on_added_shard);
        let (on_first, on_added) = (keys_on(&stores[0], &actor(i)), keys_on(&stores[1], &actor(i)));
        match on_added_shard {
            true => assert!(
                on_first == 0 && on_added > 0,
                "actor {i} moved: {on_first} keys left, {on_added} there"
            ),
            false => assert!(
                on_first > 0 && on_added == 0,
                "actor {i} stays: {on_first} keys, {on_added} on the added shard"
            ),
        }
        // Writes after the move land on the new shard and read back.
        let mut db = node.storage.open(&actor(i)).unwrap();
        db.execute_script("UPDATE t SET v = v WHERE k = 0").unwrap();
    }
    assert!(moved >= 4, "only {moved} of {actors} actors belong to the added shard");
    for i in 0..actors {
        check(&node, i);
    }
    node.leave();
}

#[test]
fn interrupted_moves_restart_or_finish_and_never_resurrect_a_deleted_actor() {
    let Some(dbs) = databases("resume", 2) else { return };
    let stores: Vec<_> = dbs.iter().map(open).collect();
    let first = join(&stores[..1], "n1").unwrap();
    for i in 0..30 {
        fill(&first, i);
    }
    first.leave();
    let node = join(&stores, "n1").unwrap();
    let mut movers = (0..30).filter(|i| node.lives_on(&actor(*i), &stores[1]));
    let (copied, published) = (movers.next().unwrap(), movers.next().unwrap());
    let source = &stores[0];
    let pairs = |i: usize| {
        let id = actor(i);
        let all = source.scan(&layout::actor_prefix(&id), &layout::actor_end(&id), usize::MAX).unwrap();
        all.into_iter().filter(move |(k, _)| *k != layout::generation_key(&id))
    };
    // Stopped in step 2: some pages copied, no file metadata yet.
    let metas = [
        layout::meta_key(&actor(copied), layout::FileTag::Main),
        layout::meta_key(&actor(copied), layout::FileTag::Journal),
    ];
    let ops =
        pairs(copied).filter(|(k, _)| !metas.contains(k)).take(2).map(|(k, v)| WriteOp::Put(k, v)).collect();
    stores[1].write(WriteBatch { ops, fence: None, durable: true }).unwrap();
    // Stopped before step 4: everything copied and the relocation key written, the old copy
    // still there.
    let mut ops: Vec<WriteOp> = pairs(published).map(|(k, v)| WriteOp::Put(k, v)).collect();
    ops.push(WriteOp::Put(
        layout::relocation_key(&actor(published)),
        source.shard_id().to_be_bytes().to_vec(),
    ));
    stores[1].write(WriteBatch { ops, fence: None, durable: true }).unwrap();
    for i in [copied, published] {
        check(&node, i);
        assert_eq!(keys_on(&stores[0], &actor(i)), 0, "actor {i}: the old copy is gone");
        assert!(stores[1].get_many(&[layout::relocation_key(&actor(i))]).unwrap()[0].is_none());
    }
    // A deleted actor stays deleted: no copy on another shard can bring it back.
    assert!(node.storage.delete(&actor(published)).unwrap());
    let mut db = node.storage.open(&actor(published)).unwrap();
    let tables = db.execute("SELECT count(*) FROM sqlite_schema", &Params::None).unwrap();
    assert_eq!(tables.rows, vec![vec![Value::Integer(0)]]);
    node.leave();
}

#[test]
fn live_nodes_share_one_placement_and_no_shard_is_ever_dropped() {
    let Some(dbs) = databases("placement", 3) else { return };
    let stores: Vec<_> = dbs.iter().map(open).collect();
    let two = join(&stores[..2], "n1").unwrap();
    let fewer = join(&stores[..1], "n2").err().expect("a node without shard 2 is refused");
    assert!(fewer.contains("not among"), "{fewer}");
    let more = join(&stores, "n3").err().expect("another placement is refused while n1 is live");
    assert!(more.contains("live node n1"), "{more}");
    let same = join(&stores[..2], "n4").unwrap();
    two.leave();
    same.leave();
    let grown = join(&stores, "n3").unwrap();
    grown.leave();
    let shrunk = join(&stores[..2], "n1").err().expect("dropping the third shard is refused");
    assert!(shrunk.contains("not among"), "{shrunk}");
}

#[test]
fn hints_left_at_sleep_let_the_next_wake_read_its_pages_in_its_first_round_trip() {
    let Some(dbs) = databases("hints", 1) else { return };
    let stores: Vec<_> = dbs.iter().map(open).collect();
    let node = join(&stores, "n1").unwrap();
    let id = ActorId::new("hinted").unwrap();
    node.storage
        .open(&id)
        .unwrap()
        .execute_script(
            "CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000)
             INSERT INTO t SELECT i, randomblob(900) FROM n;",
        )
        .unwrap();
    let sql = "SELECT sum(length(v)) FROM t WHERE k IN (7, 311, 650, 999, 1333, 1700, 2101, 2500, 2877, 3301, 3650, 3999)";
    let reads = |store: &PostgresStore| {
        let before = store.stats().read_calls;
        let mut db = node.storage.open(&id).unwrap();
        let rows = db.execute(sql, &Params::None).unwrap().rows;
        assert_eq!(rows, vec![vec![Value::Integer(12 * 900)]]);
        store.stats().read_calls - before
    };
    let cold = reads(&stores[0]);
    // The hints are saved in the background when the actor goes to sleep.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let hinted = loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let hinted = reads(&stores[0]);
        if hinted * 4 <= cold || std::time::Instant::now() > deadline {
            break hinted;
        }
    };
    eprintln!("store reads of a wake and its query: {cold} cold, {hinted} with hints");
    assert!(cold >= 8, "{cold}");
    assert!(hinted * 4 <= cold, "{hinted} reads with hints vs {cold} without");
    node.leave();
}
