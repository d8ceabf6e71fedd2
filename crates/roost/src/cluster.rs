//! Several nodes on one PostgreSQL store: this node's lease, actor claims and routing.
//!
//! Invariants (the rows and the SQL are in `kv::postgres_nodes`):
//! - the node serves actors only while its lease is current *by its own clock*: a renewal
//!   sent at `t` makes the lease current until `t + lease_ms * LEASE_TRUST`, which ends before
//!   the database can consider the lease expired (it counts from when the renewal arrived,
//!   after `t`). So a node that cannot renew stops serving before another node may take its
//!   actors over. A paused node (SIGSTOP) finds its lease stale when it resumes;
//! - a lease found expired in the database is never renewed: every actor is put to sleep,
//!   then the node registers again with a new epoch and claims afresh;
//! - whatever this node still believes, a takeover by another node bumps the actor's
//!   generation in PostgreSQL, and every write is fenced on the generation its claim read: a
//!   stale node's commit is refused inside the same PostgreSQL transaction, never applied;
//! - another process registering the same node id replaces this one (its epoch is newer):
//!   this node stops for good (the server exits) instead of fighting over the id;
//! - routing knowledge is a bounded cache ([`ROUTES_MAX`] entries) of owners seen, each
//!   trusted for half a lease; a stale entry costs at most one failed forward;
//! - with several PostgreSQL shards the node registers, renews and releases on every shard
//!   (each has its own epoch), serves only while every renewal succeeds, and claims an actor
//!   on the shard it lives on ([`ShardedStore`]). An actor found on another shard (one added
//!   since it was last written) is moved on its claim, see [`Cluster::relocate`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::actor_id::ActorId;
use crate::host::Host;
use crate::kv::{
    Claim, Claims, Fence, Key, KvError, KvResult, KvStore, NodeAddress, NodeRow, PostgresStore, Preload,
    Renewal, ShardedStore, WriteBatch, WriteOp,
};
use crate::vfs::layout;

/// Share of the lease this node trusts itself to hold after sending a renewal.
const LEASE_TRUST: f64 = 0.8;
/// Renewals per lease period.
const RENEWALS_PER_LEASE: u32 = 3;
/// Remote owners remembered for routing; the cache is emptied when it is full.
pub const ROUTES_MAX: usize = 16_384;

/// How a node is named and reached, and how long its lease runs.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Unique among the nodes sharing the store.
    pub node_id: String,
    /// The URL other nodes forward requests to (`http://host:port`).
    pub advertise_url: String,
    /// Lease length; renewed every third of it.
    pub lease_ms: u64,
    /// Longest wait for the answer of a forwarded request (at least the owner's statement
    /// timeout, so a long statement is not cut by the forwarding node).
    pub forward_timeout_ms: u64,
}

/// Counters of the cluster, for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterCounters {
    pub renewals: AtomicU64,
    pub renewal_failures: AtomicU64,
    pub leases_lost: AtomicU64,
    pub forwarded: AtomicU64,
    pub forward_failures: AtomicU64,
    pub owner_lookups: AtomicU64,
    /// Actors moved to the shard they belong to (after a shard was added).
    pub actors_moved: AtomicU64,
    /// Walks of every shard for actors to move ([`Cluster::rebalance`]) that have ended: until
    /// the first one ends, a listing can miss an actor that has not moved yet.
    pub rebalances: AtomicU64,
}

/// Where a request for an actor should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Local,
    Forward(NodeAddress),
}

/// Why the lease loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEnd {
    /// Another process registered this node id.
    Replaced(String),
}

/// Most bytes of an actor read per batch while it moves between shards.
const RELOCATE_BATCH_BYTES: usize = 1 << 20;

/// This node's membership: its lease, its claims and what it knows of other owners.
pub struct Cluster {
    shards: Arc<ShardedStore>,
    config: ClusterConfig,
    /// This node's epoch on each shard, in the shards' order.
    epochs: Vec<AtomicI64>,
    /// Until when this node may serve (by its own monotonic clock); `None`: not at all.
    current_until: Mutex<Option<Instant>>,
    /// Remote owners and until when to trust each without asking the store again.
    routes: Mutex<HashMap<ActorId, (NodeAddress, Instant)>>,
    pub counters: ClusterCounters,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node_id", &self.config.node_id).finish_non_exhaustive()
    }
}

impl Cluster {
    /// Registers this node (a new epoch on every shard) and starts its lease. Blocks on the
    /// store.
    pub fn join(shards: Arc<ShardedStore>, config: ClusterConfig) -> KvResult<Arc<Self>> {
        assert!(config.lease_ms >= 100, "a lease shorter than 100 ms cannot be renewed in time");
        let sent = Instant::now();
        let epochs = register_all(&shards, &config)?;
        let epoch = epochs[0];
        let cluster = Self {
            shards,
            config,
            epochs: epochs.into_iter().map(AtomicI64::new).collect(),
            current_until: Mutex::new(None),
            routes: Mutex::new(HashMap::new()),
            counters: ClusterCounters::default(),
        };
        cluster.trust_until(sent);
        tracing::info!(node = %cluster.config.node_id, epoch, "joined the cluster");
        Ok(Arc::new(cluster))
    }

    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// This node's epoch on its first shard.
    pub fn epoch(&self) -> i64 {
        self.epoch_on(0)
    }

    fn epoch_on(&self, shard: usize) -> i64 {
        self.epochs[shard].load(Ordering::SeqCst)
    }

    /// The shards this node stores actors on.
    pub fn shards(&self) -> &Arc<ShardedStore> {
        &self.shards
    }

    fn store_of(&self, id: &ActorId) -> &Arc<PostgresStore> {
        &self.shards.shards()[self.shards.shard_of(&layout::generation_key(id))]
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// May this node serve actors now (its lease is current by its own clock)?
    pub fn serving(&self) -> bool {
        self.current_until.lock().is_some_and(|until| Instant::now() < until)
    }

    fn trust_until(&self, renewal_sent: Instant) {
        let trusted = Duration::from_millis((self.config.lease_ms as f64 * LEASE_TRUST) as u64);
        *self.current_until.lock() = Some(renewal_sent + trusted);
    }

    fn stop_trusting(&self) {
        *self.current_until.lock() = None;
    }

    /// Renews the lease every third of it until another process takes the node id. A lease
    /// that lapses (here or in the database) puts every actor to sleep first; an expired one
    /// is replaced by a new registration.
    pub async fn run_lease(self: Arc<Self>, host: Host) -> LeaseEnd {
        let period = Duration::from_millis(self.config.lease_ms / u64::from(RENEWALS_PER_LEASE));
        let retry = period / 3;
        let mut sessions: Vec<_> = self.shards.shards().iter().map(|s| s.lease_session()).collect();
        let mut next = period;
        loop {
            tokio::time::sleep(next).await;
            let was_serving = self.serving();
            let sent = Instant::now();
            let (renewal, back) = self.renew_all(sessions).await;
            sessions = back;
            next = period;
            match renewal {
                Ok(Renewal::Renewed) => {
                    self.counters.renewals.fetch_add(1, Ordering::Relaxed);
                    if was_serving {
                        self.trust_until(sent);
                        continue;
                    }
                    // Actors were dropped when the lease went stale: serve again from scratch.
                    self.trust_until(sent);
                    tracing::info!(node = %self.config.node_id, "lease renewed in time after a lapse; serving again");
                }
                Ok(Renewal::Expired) => {
                    self.lapse(&host, "the lease expired in PostgreSQL").await;
                    if let Err(e) = self.rejoin().await {
                        tracing::warn!(error = %e, "registering again failed; retrying");
                        next = retry;
                    }
                }
                Ok(Renewal::Replaced { epoch }) => {
                    self.lapse(&host, "another process registered this node id").await;
                    return LeaseEnd::Replaced(format!(
                        "another process registered node id {:?} (epoch {epoch})",
                        self.config.node_id
                    ));
                }
                Err(e) => {
                    self.counters.renewal_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "renewing the lease failed; retrying");
                    next = retry;
                    if was_serving && !self.serving() {
                        self.lapse(&host, "the lease could not be renewed in time").await;
                    }
                }
            }
        }
    }

    /// Renews the lease on every shard at once; the worst outcome counts (replaced, then
    /// expired, then a failure).
    async fn renew_all(
        &self,
        sessions: Vec<crate::kv::LeaseSession>,
    ) -> (KvResult<Renewal>, Vec<crate::kv::LeaseSession>) {
        let renewals = sessions.into_iter().enumerate().map(|(shard, session)| self.renew_on(shard, session));
        let answers = futures_util::future::join_all(renewals).await;
        let mut outcome = Ok(Renewal::Renewed);
        let mut sessions = Vec::with_capacity(answers.len());
        for (renewal, session) in answers {
            sessions.push(session);
            outcome = match (outcome, renewal) {
                (Ok(Renewal::Replaced { epoch }), _) | (_, Ok(Renewal::Replaced { epoch })) => {
                    Ok(Renewal::Replaced { epoch })
                }
                (Ok(Renewal::Expired), _) | (_, Ok(Renewal::Expired)) => Ok(Renewal::Expired),
                (Err(e), _) | (_, Err(e)) => Err(e),
                (Ok(Renewal::Renewed), Ok(Renewal::Renewed)) => Ok(Renewal::Renewed),
            };
        }
        (outcome, sessions)
    }

    async fn renew_on(
        &self,
        shard: usize,
        mut session: crate::kv::LeaseSession,
    ) -> (KvResult<Renewal>, crate::kv::LeaseSession) {
        let store = self.shards.shards()[shard].clone();
        let (node, epoch, lease_ms) =
            (self.config.node_id.clone(), self.epoch_on(shard), self.config.lease_ms);
        let timeout = Duration::from_millis(lease_ms / u64::from(RENEWALS_PER_LEASE + 1));
        let joined = tokio::task::spawn_blocking(move || {
            let result = store.renew_node(&mut session, &node, epoch, lease_ms, timeout);
            (result, session)
        })
        .await;
        joined.unwrap_or_else(|e| {
            let session = self.shards.shards()[shard].lease_session();
            (Err(KvError::Io(format!("the renewal panicked: {e}"))), session)
        })
    }

    /// Stops serving and drops every awake actor (their caches may be stale from now on).
    async fn lapse(&self, host: &Host, why: &str) {
        self.stop_trusting();
        self.counters.leases_lost.fetch_add(1, Ordering::Relaxed);
        self.routes.lock().clear();
        tracing::error!(node = %self.config.node_id, reason = why, "lease lost: refusing actor requests and putting every actor to sleep");
        host.sleep_all().await;
    }

    async fn rejoin(&self) -> KvResult<()> {
        let shards = self.shards.clone();
        let config = self.config.clone();
        let sent = Instant::now();
        let epochs = tokio::task::spawn_blocking(move || register_all(&shards, &config))
            .await
            .map_err(|e| KvError::Io(format!("registering panicked: {e}")))??;
        for (slot, epoch) in self.epochs.iter().zip(&epochs) {
            slot.store(*epoch, Ordering::SeqCst);
        }
        let epoch = epochs[0];
        self.trust_until(sent);
        tracing::warn!(node = %self.config.node_id, epoch, "registered again with a new epoch; serving");
        Ok(())
    }

    /// Ends this node's lease now so that other nodes take its actors at once (planned
    /// shutdown, after every actor went to sleep). Blocks on the store.
    pub fn release(&self) -> KvResult<()> {
        self.stop_trusting();
        let mut result = Ok(());
        for (shard, store) in self.shards.shards().iter().enumerate() {
            if let Err(e) = store.release_node(&self.config.node_id, self.epoch_on(shard)) {
                result = Err(e);
            }
        }
        result
    }

    /// Where a request for `id` should run, from what this node knows without asking the
    /// store: a remote owner seen lately, else here (opening the actor claims it, and a claim
    /// that finds another live owner sends the request there).
    pub fn known_route(&self, id: &ActorId) -> Route {
        match self.routes.lock().get(id) {
            Some((owner, until)) if Instant::now() < *until => Route::Forward(owner.clone()),
            _ => Route::Local,
        }
    }

    /// Where a request for `id` should run: here when no other live node owns it. Blocks on
    /// the store when the owner is not known yet.
    pub fn route(&self, id: &ActorId) -> KvResult<Route> {
        if let Route::Forward(owner) = self.known_route(id) {
            return Ok(Route::Forward(owner));
        }
        self.counters.owner_lookups.fetch_add(1, Ordering::Relaxed);
        match self.store_of(id).owner_of(&layout::generation_key(id))? {
            Some(row) if row.live && row.node.node_id != self.config.node_id => {
                self.remember(id, row.node.clone());
                Ok(Route::Forward(row.node))
            }
            _ => Ok(Route::Local),
        }
    }

    /// Records that `owner` serves `id` (learned from a claim or a lookup).
    pub fn remember(&self, id: &ActorId, owner: NodeAddress) {
        if owner.node_id == self.config.node_id {
            return;
        }
        let mut routes = self.routes.lock();
        if routes.len() >= ROUTES_MAX {
            routes.clear();
        }
        // Trusted for half a lease: an owner that died is looked up again (and its actors
        // taken over) soon after its lease ran out.
        let until = Instant::now() + Duration::from_millis(self.config.lease_ms / 2);
        routes.insert(id.clone(), (owner, until));
    }

    /// Forgets the owner of `id` (a forward to it failed, or it answered that it moved).
    pub fn forget(&self, id: &ActorId) {
        self.routes.lock().remove(id);
    }

    /// The live owner of `id`, if any. Blocks on the store.
    pub fn owner(&self, id: &ActorId) -> KvResult<Option<String>> {
        let row = self.store_of(id).owner_of(&layout::generation_key(id))?;
        Ok(row.filter(|r| r.live).map(|r| r.node.node_id))
    }

    /// Every node row (as the first shard has it), with the actors each owns on every
    /// shard. Blocks on the store.
    pub fn nodes(&self) -> KvResult<Vec<NodeRow>> {
        let mut rows = self.shards.shards()[0].nodes()?;
        for shard in &self.shards.shards()[1..] {
            for other in shard.nodes()? {
                if let Some(row) = rows.iter_mut().find(|r| r.node_id == other.node_id) {
                    row.actors_owned += other.actors_owned;
                }
            }
        }
        Ok(rows)
    }

    /// Remote owners remembered now.
    pub fn routes_len(&self) -> usize {
        self.routes.lock().len()
    }
}

/// Registers `config`'s node on every shard, in shard id order (so two nodes starting with
/// different shard sets meet first on the same shard); answers the epochs.
/// A registration refused on one shard is released on those that accepted it.
fn register_all(shards: &ShardedStore, config: &ClusterConfig) -> KvResult<Vec<i64>> {
    let ids = shards.shard_ids();
    let mut epochs = Vec::with_capacity(ids.len());
    for store in shards.shards() {
        match store.register_sharded_node(&config.node_id, &config.advertise_url, config.lease_ms, &ids) {
            Ok(epoch) => epochs.push(epoch),
            Err(e) => {
                for (store, epoch) in shards.shards().iter().zip(&epochs) {
                    let _ = store.release_node(&config.node_id, *epoch);
                }
                return Err(e);
            }
        }
    }
    Ok(epochs)
}

impl Cluster {
    fn claim_on(&self, shard: usize, fence_key: &[u8], keys: &[Key], preload: &Preload) -> KvResult<Claim> {
        let store = &self.shards.shards()[shard];
        store.claim(fence_key, &self.config.node_id, self.epoch_on(shard), keys, preload)
    }

    /// Claims an actor on its shard when there are several: the claim also reads the
    /// relocation key, finishes a move that left a copy behind, and moves an actor that has
    /// no files here but has them on another shard (see [`Cluster::relocate`]).
    fn claim_sharded(&self, fence_key: &[u8], keys: &[Key], preload: &Preload) -> KvResult<Claim> {
        let id = layout::actor_of_key(fence_key).expect("claims are made with an actor's generation key");
        let home = self.shards.shard_of(fence_key);
        let mut asked = keys.to_vec();
        asked.push(layout::relocation_key(&id));
        let (mut values, fresh, preloaded) = match self.claim_on(home, fence_key, &asked, preload)? {
            Claim::Mine { values, fresh, preloaded } => (values, fresh, preloaded),
            elsewhere => return Ok(elsewhere),
        };
        let moved_from = values.pop().flatten();
        let generation = generation_in(fence_key, keys, &values)?;
        if let Some(from) = moved_from {
            self.finish_move(&id, home, &from, fence_key, generation);
            return Ok(Claim::Mine { values, fresh, preloaded });
        }
        let has_files = keys.iter().zip(&values).any(|(k, v)| k.as_slice() != fence_key && v.is_some());
        if has_files {
            return Ok(Claim::Mine { values, fresh, preloaded });
        }
        let Some(from) = self.find_elsewhere(&id, fence_key, keys, home)? else {
            return Ok(Claim::Mine { values, fresh, preloaded });
        };
        drop(preloaded);
        self.relocate(&id, from, home, fence_key, keys, generation)?;
        match self.claim_on(home, fence_key, keys, preload)? {
            Claim::Mine { values, preloaded, .. } => Ok(Claim::Mine { values, fresh: false, preloaded }),
            elsewhere => Ok(elsewhere),
        }
    }

    /// The first other shard (by rank) holding any of `keys` but the generation.
    fn find_elsewhere(
        &self,
        id: &ActorId,
        fence_key: &[u8],
        keys: &[Key],
        home: usize,
    ) -> KvResult<Option<usize>> {
        let files: Vec<Key> = keys.iter().filter(|k| k.as_slice() != fence_key).cloned().collect();
        for shard in self.shards.ranked(id.as_str().as_bytes()).into_iter().filter(|s| *s != home) {
            if self.shards.shards()[shard].get_many(&files)?.iter().any(Option::is_some) {
                return Ok(Some(shard));
            }
        }
        Ok(None)
    }

    /// Moves the actor's pairs from shard `from` to `home`, where this node just claimed it
    /// (at `generation`) and found no files. Safe against crashes and other nodes at every
    /// step:
    /// 1. claim the actor on `from` too (fencing any older owner's writes there);
    /// 2. copy every pair but the files' metadata (`keys`) to `home` in bounded batches,
    ///    fenced on `home`'s generation: until step 3 the actor still has no files on `home`,
    ///    so a crash here makes the next claim start the move again;
    /// 3. write the metadata and the relocation key (naming `from`) in one batch: from now on
    ///    the actor lives on `home`;
    /// 4. delete the copy on `from` (fenced there) and then the relocation key
    ///    ([`Cluster::finish_move`]); a crash before leaves the key, and the next claim
    ///    finishes the move before the actor serves, so no stale copy can outlive it.
    fn relocate(
        &self,
        id: &ActorId,
        from: usize,
        home: usize,
        fence_key: &[u8],
        keys: &[Key],
        generation: Vec<u8>,
    ) -> KvResult<()> {
        let source = &self.shards.shards()[from];
        let source_generation = self.claim_copy(from, fence_key)?.map_err(|owner| {
            KvError::Unavailable(format!(
                "actor {id} is moving between shards and node {} still holds it",
                owner.node_id
            ))
        })?;
        tracing::debug!(actor = %id, from = source.shard_id(), to = self.shards.shards()[home].shard_id(), "moving an actor to the shard it belongs to");
        let target = &self.shards.shards()[home];
        let fence = Fence { key: fence_key.to_vec(), expected: Some(generation) };
        // A batch in flight is held in memory: charged to the store's read-ahead cap (part of
        // the memory budget) like pages read ahead, so concurrent moves cannot outgrow it.
        let batch_bytes = (RELOCATE_BATCH_BYTES + RELOCATE_BATCH_BYTES / layout::CHUNK_BYTES * 128) as u64;
        let _held = target.read_ahead_charge(fence_key, batch_bytes).ok_or_else(|| {
            KvError::Unavailable(format!("no memory to move actor {id} between shards now; retry"))
        })?;
        let (mut start, end) = (layout::actor_prefix(id), layout::actor_end(id));
        let mut metadata = Vec::new();
        loop {
            let pairs = source.scan(&start, &end, RELOCATE_BATCH_BYTES / layout::CHUNK_BYTES)?;
            let Some((last, _)) = pairs.last() else { break };
            start = [last.as_slice(), &[0]].concat();
            let mut ops = Vec::with_capacity(pairs.len());
            for (key, value) in pairs {
                if key.as_slice() == fence_key {
                    continue;
                }
                if keys.contains(&key) {
                    metadata.push(WriteOp::Put(key, value));
                } else {
                    ops.push(WriteOp::Put(key, value));
                }
            }
            if !ops.is_empty() {
                target.write(WriteBatch { ops, fence: Some(fence.clone()), durable: false })?;
            }
        }
        metadata.push(WriteOp::Put(layout::relocation_key(id), source.shard_id().to_be_bytes().to_vec()));
        target.write(WriteBatch { ops: metadata, fence: Some(fence.clone()), durable: true })?;
        self.finish_move_on(id, home, from, fence_key, &fence, source_generation);
        Ok(())
    }

    /// Step 4 of [`Cluster::relocate`] for a move found unfinished by a claim. Best effort:
    /// a failure leaves the relocation key for the next claim.
    fn finish_move(&self, id: &ActorId, home: usize, from: &[u8], fence_key: &[u8], generation: Vec<u8>) {
        let fence = Fence { key: fence_key.to_vec(), expected: Some(generation) };
        let shard_id = from.try_into().map(i64::from_be_bytes).ok();
        let Some(source) = shard_id.and_then(|s| self.shards.index_of_id(s)) else {
            tracing::error!(actor = %id, "a relocation key names a shard this node does not have; keeping it");
            return;
        };
        match self.claim_copy(source, fence_key) {
            Ok(Ok(source_generation)) => {
                self.finish_move_on(id, home, source, fence_key, &fence, source_generation);
            }
            Ok(Err(owner)) => {
                tracing::warn!(actor = %id, owner = %owner.node_id, "the old copy of a moved actor is held by another node; deleting it later");
            }
            Err(e) => {
                tracing::warn!(actor = %id, error = %e, "could not claim the old copy of a moved actor; deleting it later")
            }
        }
    }

    /// Claims the actor's copy on shard `from` (steps 1 and 4 of [`Cluster::relocate`]):
    /// its generation there, or the live node that holds it.
    fn claim_copy(&self, from: usize, fence_key: &[u8]) -> KvResult<Result<Option<Vec<u8>>, NodeAddress>> {
        Ok(match self.claim_on(from, fence_key, &[fence_key.to_vec()], &no_preload(fence_key))? {
            Claim::Mine { mut values, .. } => Ok(values.pop().flatten()),
            Claim::Elsewhere(owner) => Err(owner),
        })
    }

    /// Deletes the copy on `from` (fenced on its generation there), then the relocation key
    /// on `home`. Best effort (see [`Cluster::finish_move`]).
    fn finish_move_on(
        &self,
        id: &ActorId,
        home: usize,
        from: usize,
        fence_key: &[u8],
        home_fence: &Fence,
        source_generation: Option<Vec<u8>>,
    ) {
        let source = &self.shards.shards()[from];
        let delete = WriteBatch {
            ops: vec![
                WriteOp::DeleteRange { start: layout::actor_prefix(id), end: layout::actor_end(id) },
                // A move *to* the old shard that never finished leaves its key there too.
                WriteOp::Delete(layout::relocation_key(id)),
            ],
            fence: Some(Fence { key: fence_key.to_vec(), expected: source_generation }),
            durable: true,
        };
        let relocation = layout::relocation_key(id);
        let result = source.write(delete).and_then(|()| {
            let done = WriteBatch {
                ops: vec![WriteOp::Delete(relocation)],
                fence: Some(home_fence.clone()),
                durable: true,
            };
            self.shards.shards()[home].write(done)
        });
        match result {
            Ok(()) => {
                self.counters.actors_moved.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(actor = %id, from = source.shard_id(), "moved an actor between shards");
            }
            Err(e) => {
                tracing::warn!(actor = %id, error = %e, "could not delete the old copy of a moved actor; the next claim retries")
            }
        }
    }
}

impl Cluster {
    /// Moves every actor held by a shard it does not belong to (after a shard was added), so
    /// that actors nobody wakes move too and listings find them where they live. Claims each
    /// such actor as a wake would; actors another node holds are left to it. Runs once after
    /// the node joins, on a blocking thread; answers how many actors it moved.
    pub fn rebalance(&self) -> u64 {
        let before = self.counters.actors_moved.load(Ordering::Relaxed);
        if self.shards.len() > 1 {
            for shard in 0..self.shards.len() {
                if let Err(e) = self.rebalance_shard(shard) {
                    tracing::warn!(error = %e, "moving actors to their shards stopped; they move when next woken");
                }
            }
        }
        self.counters.rebalances.fetch_add(1, Ordering::Relaxed);
        self.counters.actors_moved.load(Ordering::Relaxed) - before
    }

    fn rebalance_shard(&self, shard: usize) -> KvResult<()> {
        let store = &self.shards.shards()[shard];
        let (mut start, end) = (b"a".to_vec(), b"b".to_vec());
        while let Some((key, _)) = store.scan(&start, &end, 1)?.pop() {
            let Some(id) = layout::actor_of_key(&key) else {
                start = [key.as_slice(), &[0]].concat();
                continue;
            };
            start = layout::actor_end(&id);
            let keys = layout::open_keys(&id);
            if self.shards.shard_of(&keys[0]) == shard
                || store.get_many(&keys[1..])?.iter().all(Option::is_none)
            {
                continue;
            }
            if let Err(e) = self.claim(&keys[0], &keys, &no_preload(&keys[0])) {
                tracing::warn!(actor = %id, error = %e, "could not move an actor to its shard; it moves when next woken");
            }
        }
        Ok(())
    }
}

/// The generation a claim read (the fence key is among the keys asked).
fn generation_in(fence_key: &[u8], keys: &[Key], values: &[Option<Vec<u8>>]) -> KvResult<Vec<u8>> {
    keys.iter()
        .zip(values)
        .find(|(k, _)| k.as_slice() == fence_key)
        .and_then(|(_, v)| v.clone())
        .ok_or_else(|| KvError::Io("a claim did not read the actor's generation".into()))
}

/// A [`Preload`] that reads nothing ahead.
fn no_preload(fence_key: &[u8]) -> Preload {
    Preload {
        meta_key: fence_key.to_vec(),
        start: fence_key.to_vec(),
        end: fence_key.to_vec(),
        chunk_bytes: layout::CHUNK_BYTES as u64,
        whole_chunks: 0,
        first_chunks: 0,
        hint_chunks: 0,
    }
}

impl Claims for Cluster {
    fn claim(&self, fence_key: &[u8], keys: &[Key], preload: &Preload) -> KvResult<Claim> {
        if !self.serving() {
            return Err(KvError::Unavailable("this node's lease is not current".into()));
        }
        if self.shards.len() > 1 {
            return self.claim_sharded(fence_key, keys, preload);
        }
        self.claim_on(0, fence_key, keys, preload)
    }

    fn remember_hints(&self, fence_key: &[u8], keys: Vec<Key>) {
        self.shards.shards()[self.shards.shard_of(fence_key)].save_hints(fence_key, keys);
    }
}
