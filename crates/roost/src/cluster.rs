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
//!   trusted for half a lease; a stale entry costs at most one failed forward.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::actor_id::ActorId;
use crate::host::Host;
use crate::kv::{
    Claim, Claims, Key, KvError, KvResult, NodeAddress, NodeRow, PostgresStore, Preload, Renewal,
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

/// This node's membership: its lease, its claims and what it knows of other owners.
pub struct Cluster {
    store: Arc<PostgresStore>,
    config: ClusterConfig,
    epoch: AtomicI64,
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
    /// Registers this node (a new epoch) and starts its lease. Blocks on the store.
    pub fn join(store: Arc<PostgresStore>, config: ClusterConfig) -> KvResult<Arc<Self>> {
        assert!(config.lease_ms >= 100, "a lease shorter than 100 ms cannot be renewed in time");
        let sent = Instant::now();
        let epoch = store.register_node(&config.node_id, &config.advertise_url, config.lease_ms)?;
        let cluster = Self {
            store,
            config,
            epoch: AtomicI64::new(epoch),
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

    pub fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::SeqCst)
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
        let mut session = self.store.lease_session();
        let mut next = period;
        loop {
            tokio::time::sleep(next).await;
            let was_serving = self.serving();
            let sent = Instant::now();
            let (renewal, back) = self.renew_blocking(session).await;
            session = back;
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

    async fn renew_blocking(
        &self,
        mut session: crate::kv::LeaseSession,
    ) -> (KvResult<Renewal>, crate::kv::LeaseSession) {
        let store = self.store.clone();
        let (node, epoch, lease_ms) = (self.config.node_id.clone(), self.epoch(), self.config.lease_ms);
        let timeout = Duration::from_millis(lease_ms / u64::from(RENEWALS_PER_LEASE + 1));
        let joined = tokio::task::spawn_blocking(move || {
            let result = store.renew_node(&mut session, &node, epoch, lease_ms, timeout);
            (result, session)
        })
        .await;
        joined.unwrap_or_else(|e| {
            (Err(KvError::Io(format!("the renewal panicked: {e}"))), self.store.lease_session())
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
        let store = self.store.clone();
        let config = self.config.clone();
        let sent = Instant::now();
        let epoch = tokio::task::spawn_blocking(move || {
            store.register_node(&config.node_id, &config.advertise_url, config.lease_ms)
        })
        .await
        .map_err(|e| KvError::Io(format!("registering panicked: {e}")))??;
        self.epoch.store(epoch, Ordering::SeqCst);
        self.trust_until(sent);
        tracing::warn!(node = %self.config.node_id, epoch, "registered again with a new epoch; serving");
        Ok(())
    }

    /// Ends this node's lease now so that other nodes take its actors at once (planned
    /// shutdown, after every actor went to sleep). Blocks on the store.
    pub fn release(&self) -> KvResult<()> {
        self.stop_trusting();
        self.store.release_node(&self.config.node_id, self.epoch())
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
        match self.store.owner_of(&layout::generation_key(id))? {
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
        let row = self.store.owner_of(&layout::generation_key(id))?;
        Ok(row.filter(|r| r.live).map(|r| r.node.node_id))
    }

    /// Every node row. Blocks on the store.
    pub fn nodes(&self) -> KvResult<Vec<NodeRow>> {
        self.store.nodes()
    }

    /// Remote owners remembered now.
    pub fn routes_len(&self) -> usize {
        self.routes.lock().len()
    }
}

impl Claims for Cluster {
    fn claim(&self, fence_key: &[u8], keys: &[Key], preload: &Preload) -> KvResult<Claim> {
        if !self.serving() {
            return Err(KvError::Unavailable("this node's lease is not current".into()));
        }
        self.store.claim(fence_key, &self.config.node_id, self.epoch(), keys, preload)
    }
}
