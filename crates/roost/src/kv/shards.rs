//! Several PostgreSQL databases (shards) as one store: every key lives on exactly one shard,
//! chosen by rendezvous hashing of the name its [`Placement`] gives it.
//!
//! Invariants:
//! - a shard is named by the random `shard_id` its database holds, not by its URL, so moving
//!   a database to another host moves no key; two URLs reaching the same database are
//!   refused;
//! - a key's shard is the one whose `score(shard_id, name)` is highest. Adding a shard moves
//!   only the names the new shard now wins (about 1/n of them), all *to* the new shard; no
//!   name moves between old shards. Removing a shard is refused where nodes register
//!   (`roost_register`), so a name's shard never goes back to one it left;
//! - keys without a name (none of the actor layout's) live on the *home* shard, the one with
//!   the lowest id;
//! - one `write` goes to one shard, so it stays one atomic transaction: a batch whose keys
//!   would span shards is refused whole (the VFS writes one actor per batch);
//! - `get_many` asks each shard involved once; `scan` goes to one shard when its range lies
//!   in one name's group, else to every shard, merged in key order.
//!
//! Moving an actor's pairs to the shard it now belongs to is the cluster's job (it has the
//! claims that fence the copy): see `cluster.rs`.

use std::sync::Arc;

use super::{Key, KvError, KvResult, KvStats, KvStore, PostgresStore, Value, WriteBatch, WriteOp};

/// Where a key lives: every key starting with `group` is placed with it, by `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed<'a> {
    pub group: &'a [u8],
    pub name: &'a [u8],
}

/// The placement of a key; `None` places it on the home shard.
pub type Placement = fn(&[u8]) -> Option<Placed<'_>>;

/// The shards of a cluster, in ascending shard id order.
pub struct ShardedStore {
    shards: Vec<Arc<PostgresStore>>,
    placement: Placement,
}

impl std::fmt::Debug for ShardedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedStore").field("shard_ids", &self.shard_ids()).finish()
    }
}

/// A 64-bit mix (splitmix64's finalizer): stable across builds and platforms, unlike std's
/// hasher, which placement must be.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a over bytes, then mixed.
fn hash_bytes(bytes: &[u8]) -> u64 {
    let fnv = bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    mix(fnv)
}

/// The rendezvous score of `name` on the shard `shard_id`.
pub fn score(shard_id: i64, name: &[u8]) -> u64 {
    mix(hash_bytes(name) ^ mix(shard_id as u64))
}

/// A number naming a set of shard ids (order does not matter); never 0, which names the
/// single shard of nodes that predate placement.
pub fn placement_id(shard_ids: &[i64]) -> i64 {
    let mut ids = shard_ids.to_vec();
    ids.sort_unstable();
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    match hash_bytes(&bytes) as i64 {
        0 => 1,
        id => id,
    }
}

/// The first key after every key starting with `prefix` (`None`: there is none).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl ShardedStore {
    /// The shards given, ordered by shard id. Refuses none, and two that are one database.
    pub fn new(shards: Vec<Arc<PostgresStore>>, placement: Placement) -> KvResult<Self> {
        let mut shards = shards;
        shards.sort_by_key(|s| s.shard_id());
        if shards.is_empty() {
            return Err(KvError::Io("no PostgreSQL shard was given".into()));
        }
        if let Some(pair) = shards.windows(2).find(|w| w[0].shard_id() == w[1].shard_id()) {
            return Err(KvError::Io(format!(
                "{} and {} reach the same database (shard id {}); give each database once",
                redact(pair[0].url()),
                redact(pair[1].url()),
                pair[0].shard_id()
            )));
        }
        Ok(Self { shards, placement })
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    pub fn shards(&self) -> &[Arc<PostgresStore>] {
        &self.shards
    }

    pub fn shard_ids(&self) -> Vec<i64> {
        self.shards.iter().map(|s| s.shard_id()).collect()
    }

    /// The number naming this set of shards (see [`placement_id`]).
    pub fn placement_id(&self) -> i64 {
        placement_id(&self.shard_ids())
    }

    /// The index of the shard whose id is `shard_id`.
    pub fn index_of_id(&self, shard_id: i64) -> Option<usize> {
        self.shards.iter().position(|s| s.shard_id() == shard_id)
    }

    /// The shard `name` lives on: the highest score (ties, impossible in practice, go to the
    /// higher index, as in [`ShardedStore::ranked`]). No allocation: every placed key asks.
    fn winner(&self, name: &[u8]) -> usize {
        (0..self.shards.len())
            .max_by_key(|i| (score(self.shards[*i].shard_id(), name), *i))
            .expect("at least one shard")
    }

    /// The shards by descending score for `name`: the first is where it lives.
    pub fn ranked(&self, name: &[u8]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.shards.len()).collect();
        order.sort_by_key(|i| std::cmp::Reverse((score(self.shards[*i].shard_id(), name), *i)));
        order
    }

    /// The index of the shard `key` lives on.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        if self.shards.len() == 1 {
            return 0;
        }
        match (self.placement)(key) {
            Some(placed) => self.winner(placed.name),
            None => 0,
        }
    }

    /// The one shard every key of `[start, end)` lives on, if the range lies in one group.
    fn shard_of_range(&self, start: &[u8], end: &[u8]) -> Option<usize> {
        if self.shards.len() == 1 {
            return Some(0);
        }
        let placed = (self.placement)(start)?;
        let group_end = prefix_end(placed.group)?;
        (end <= group_end.as_slice()).then(|| self.winner(placed.name))
    }

    /// The shard a batch goes to: the one all its keys live on.
    fn shard_of_batch(&self, batch: &WriteBatch) -> KvResult<usize> {
        if self.shards.len() == 1 {
            return Ok(0);
        }
        let mut found = batch.fence.as_ref().map(|f| self.shard_of(&f.key));
        for op in &batch.ops {
            let shard = match op {
                WriteOp::Put(key, _) | WriteOp::Delete(key) => Some(self.shard_of(key)),
                WriteOp::DeleteRange { start, end } => self.shard_of_range(start, end),
            };
            match (shard, found) {
                (Some(shard), None) => found = Some(shard),
                (Some(shard), Some(first)) if shard == first => {}
                _ => {
                    return Err(KvError::Io("a write batch spans shards; it was not applied".into()));
                }
            }
        }
        Ok(found.unwrap_or(0))
    }
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(config) => {
            let hosts: Vec<String> = config
                .get_hosts()
                .iter()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(host) => host.clone(),
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .collect();
            format!("{}/{}", hosts.join(","), config.get_dbname().unwrap_or(""))
        }
        Err(_) => "a PostgreSQL URL".into(),
    }
}

impl KvStore for ShardedStore {
    fn get_many(&self, keys: &[Key]) -> KvResult<Vec<Option<Value>>> {
        if self.shards.len() == 1 {
            return self.shards[0].get_many(keys);
        }
        let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); self.shards.len()];
        for (at, key) in keys.iter().enumerate() {
            by_shard[self.shard_of(key)].push(at);
        }
        let mut out = vec![None; keys.len()];
        for (shard, ats) in by_shard.iter().enumerate().filter(|(_, ats)| !ats.is_empty()) {
            let wanted: Vec<Key> = ats.iter().map(|at| keys[*at].clone()).collect();
            for (at, value) in ats.iter().zip(self.shards[shard].get_many(&wanted)?) {
                out[*at] = value;
            }
        }
        Ok(out)
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> KvResult<Vec<(Key, Value)>> {
        if let Some(shard) = self.shard_of_range(start, end) {
            return self.shards[shard].scan(start, end, limit);
        }
        // Each shard's first `limit` pairs hold the merged first `limit`.
        let mut all = Vec::new();
        for shard in &self.shards {
            all.extend(shard.scan(start, end, limit)?);
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.truncate(limit);
        Ok(all)
    }

    fn write(&self, batch: WriteBatch) -> KvResult<()> {
        let shard = self.shard_of_batch(&batch)?;
        self.shards[shard].write(batch)
    }

    fn read_ahead_charge(&self, key: &[u8], bytes: u64) -> Option<super::Charge> {
        self.shards[self.shard_of(key)].read_ahead_charge(key, bytes)
    }

    fn stats(&self) -> KvStats {
        let mut stats = KvStats::default();
        for shard in &self.shards {
            stats.add(&shard.stats());
        }
        stats
    }
}
