//! The registry of actors and the [`Host`] built on it.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{oneshot, watch, Semaphore};

use super::awake::{AwakeBudget, Reservation};
use super::buffers::{RequestBuffers, RequestMemory};
use super::config::{
    BudgetPlan, HostConfig, ACTOR_RUST_BYTES, CONNECTION_PAGE_BUFFERS_BYTES, MEASURED_ACTORS_MIN,
};
use super::idle::IdleList;
use super::pool::{BlockingPool, PoolError};
use super::HostError;
use crate::actor_id::ActorId;
use crate::kv::KvStats;
use crate::vfs::{self, Database, Params, QueryResult, SqliteMemory, Statement, Storage};

/// One page of [`Host::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActorList {
    /// Actors with data, their states and database sizes, in id order.
    pub actors: Vec<(ActorId, ActorState, u64)>,
    /// Where the next page starts; `None` once every actor was listed.
    pub next_after: Option<ActorId>,
}

/// Lifecycle state of an actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorState {
    Asleep,
    Waking,
    Awake,
    Sleeping,
    Poisoned,
}

impl ActorState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Asleep => "asleep",
            Self::Waking => "waking",
            Self::Awake => "awake",
            Self::Sleeping => "sleeping",
            Self::Poisoned => "poisoned",
        }
    }
}

struct Slot {
    id: ActorId,
    state: watch::Sender<ActorState>,
    db: Mutex<Option<Awake>>,
    /// One request (or pinned holder) at a time, in arrival order.
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Requests holding or waiting for this slot; an actor with users is never evicted.
    /// Changed only under the idle list's lock, so that the two agree.
    users: AtomicUsize,
    /// Why the wake failed, set before the state goes to `Asleep`: the answer for every
    /// request that waited on that wake.
    wake_error: Mutex<Option<HostError>>,
    /// When a request on it last ended (host clock), for the deferred memory release.
    last_used_ms: AtomicU64,
    /// The slot is in the release queue.
    release_queued: AtomicBool,
    /// The host's count of slots per state, which this slot is part of until it drops.
    counts: Arc<StateCounts>,
}

impl Slot {
    /// A slot that starts `Waking`.
    fn new(id: ActorId, counts: Arc<StateCounts>) -> Self {
        counts.add(ActorState::Waking);
        Self {
            id,
            state: watch::channel(ActorState::Waking).0,
            db: Mutex::new(None),
            turn: Arc::new(tokio::sync::Mutex::new(())),
            users: AtomicUsize::new(0),
            wake_error: Mutex::new(None),
            last_used_ms: AtomicU64::new(0),
            release_queued: false.into(),
            counts,
        }
    }

    fn state(&self) -> ActorState {
        *self.state.borrow()
    }

    /// Moves the slot to `state` (waking whoever waits for a change) and keeps the counts.
    fn set_state(&self, state: ActorState) {
        let old = self.state.send_replace(state);
        self.counts.remove(old);
        self.counts.add(state);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counts.remove(self.state());
    }
}

/// Slots per state, kept as they change, so that the stats never walk the registry under its
/// lock (with 100,000 actors known, each `/metrics` scrape held it for milliseconds).
#[derive(Default)]
struct StateCounts([AtomicUsize; 5]);

impl StateCounts {
    fn add(&self, state: ActorState) {
        self.0[state as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn remove(&self, state: ActorState) {
        self.0[state as usize].fetch_sub(1, Ordering::Relaxed);
    }

    fn get(&self, state: ActorState) -> usize {
        self.0[state as usize].load(Ordering::Relaxed)
    }
}

/// An open database and the share of the awake budget it holds. Fields drop in order: the
/// share goes back only once the database is closed.
struct Awake {
    db: Database,
    _reservation: Reservation,
}

/// Idle actors (awake or poisoned, no users), least recently used first, and the clock of
/// idle times. Slots enter and leave the list only under its lock, with their `users`.
struct Idle {
    list: Mutex<IdleList<ActorId, Arc<Slot>>>,
    started: Instant,
}

impl Idle {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Counts a user of `slot` (unless it has `users_max`), taking it off the idle list.
    fn take_use(self: &Arc<Self>, slot: &Arc<Slot>, users_max: usize) -> Option<SlotUse> {
        let mut list = self.list.lock();
        let users = slot.users.load(Ordering::SeqCst);
        if users >= users_max {
            return None;
        }
        slot.users.store(users + 1, Ordering::SeqCst);
        if users == 0 {
            list.remove(&slot.id);
        }
        let found_awake = slot.state() == ActorState::Awake;
        Some(SlotUse { slot: slot.clone(), idle: self.clone(), found_awake })
    }

    fn end_use(&self, slot: &Arc<Slot>) {
        let mut list = self.list.lock();
        let users = slot.users.fetch_sub(1, Ordering::SeqCst) - 1;
        if users == 0 && matches!(slot.state(), ActorState::Awake | ActorState::Poisoned) {
            list.insert(slot.id.clone(), self.now_ms(), slot.clone());
        }
    }

    /// Marks a woken slot awake; idle already if every request for it stopped waiting.
    fn set_awake(&self, slot: &Arc<Slot>) {
        let mut list = self.list.lock();
        slot.set_state(ActorState::Awake);
        if slot.users.load(Ordering::SeqCst) == 0 {
            list.insert(slot.id.clone(), self.now_ms(), slot.clone());
        }
    }

    /// Marks up to `count` idle actors (idle since `idle_before_ms` if given) as sleeping,
    /// least recently used first, and returns them. Visits only the victims.
    fn victims(&self, count: usize, idle_before_ms: Option<u64>) -> Vec<Arc<Slot>> {
        let mut list = self.list.lock();
        let mut victims = Vec::new();
        while victims.len() < count {
            let Some((_, slot)) = list.pop_oldest(idle_before_ms) else { break };
            debug_assert_eq!(slot.users.load(Ordering::SeqCst), 0);
            slot.set_state(ActorState::Sleeping);
            victims.push(slot);
        }
        victims
    }
}

/// Counters since start.
#[derive(Debug, Default)]
struct Counters {
    wakes: AtomicU64,
    sleeps: AtomicU64,
    evictions: AtomicU64,
    idle_sleeps: AtomicU64,
    overloaded: AtomicU64,
    requests: AtomicU64,
    wake_latency: crate::kv::LatencyCounters,
    actor_bytes_measured: AtomicU64,
}

struct Inner {
    storage: Storage,
    config: HostConfig,
    plan: BudgetPlan,
    pool: BlockingPool,
    buffers: Arc<RequestBuffers>,
    slots: Mutex<HashMap<ActorId, Arc<Slot>>>,
    awake: AwakeBudget,
    wake_permits: Semaphore,
    wakes_queued: AtomicUsize,
    idle: Arc<Idle>,
    state_counts: Arc<StateCounts>,
    counters: Counters,
    shutting_down: AtomicBool,
    /// Actors whose memory is released once idle for `release_delay_ms`, in queueing order.
    releases: Mutex<std::collections::VecDeque<Weak<Slot>>>,
    /// [`Inner::memory_pressure`] as the reaper last saw it: read on every request, which must
    /// not take SQLite's process-wide memory mutex on a runtime thread (a fleet profile found
    /// tokio workers asleep on it).
    under_pressure: AtomicBool,
    /// Held while an eviction runs: one at a time (see `reserve`).
    evicting: tokio::sync::Mutex<()>,
}

/// Hosts many actors over one [`Storage`]. Cheap to clone; all methods are async and never
/// block the runtime.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

/// One named share of the memory budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPool {
    pub name: &'static str,
    pub bytes_max: u64,
    pub bytes_used: u64,
}

/// Where the host's memory goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryReport {
    pub budget_bytes: u64,
    pub pools: Vec<MemoryPool>,
    pub sqlite: SqliteMemory,
    pub store: KvStats,
}

/// Actor counts, counters and memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStats {
    /// Actors awake or opening: holding a share of the awake budget.
    pub actors_awake: usize,
    /// The most actors awake or opening at once since start (never above `awake_max`).
    pub awake_peak: usize,
    pub actors_waking: usize,
    pub actors_known: usize,
    pub actors_poisoned: usize,
    /// Actors that may be awake at once: from `actor_bytes_estimate` at start, then from
    /// `actor_bytes_measured`.
    pub awake_max: usize,
    /// What one awake actor costs, as last measured: SQLite's connection memory per open
    /// actor, its two page buffers and the Rust-side state ([`super::config::ACTOR_RUST_BYTES`]);
    /// 0 until measured.
    pub actor_bytes_measured: u64,
    pub wakes_queued: usize,
    pub blocking_queued: usize,
    pub wakes_total: u64,
    pub sleeps_total: u64,
    pub evictions_total: u64,
    pub idle_sleeps_total: u64,
    pub overloaded_total: u64,
    pub requests_total: u64,
    /// From a request's arrival to its statement starting, for requests that found their
    /// actor asleep (the wake as callers see it).
    pub wake_latency: crate::kv::LatencyHistogram,
    pub memory: MemoryReport,
}

/// Exclusive use of an awake actor, from [`Host::pin`]: other requests wait until it drops
/// and its last job has ended.
pub struct Pinned {
    turn: Arc<Turn>,
}

impl Pinned {
    pub fn id(&self) -> &ActorId {
        &self.turn.used.slot.id
    }
}

/// A request's turn on an actor. Running jobs hold it too, so the turn passes on only once
/// the holder is gone and its job has ended, even if the holder stopped waiting for the job.
struct Turn {
    used: SlotUse,
    _guard: tokio::sync::OwnedMutexGuard<()>,
    /// When the request arrived, if the actor was not awake then: its first job's start
    /// ends the wake as the caller saw it (`wake_latency`).
    waited_for_wake: Mutex<Option<Instant>>,
}

/// Holds a slot's `users` count for the duration of a request.
struct SlotUse {
    slot: Arc<Slot>,
    idle: Arc<Idle>,
    /// The actor was awake when this use was taken (the request needed no wake).
    found_awake: bool,
}

impl Drop for SlotUse {
    fn drop(&mut self) {
        self.idle.end_use(&self.slot);
    }
}

/// A job's side of its statement watchdog (see [`Inner::watchdog`]).
struct Watchdog {
    handle: Arc<Mutex<Option<vfs::InterruptHandle>>>,
    started: Option<oneshot::Sender<()>>,
    /// Dropped with the job: the watchdog task stops waiting.
    _ended: oneshot::Sender<()>,
}

impl Watchdog {
    fn arm(&mut self, handle: Option<vfs::InterruptHandle>) {
        *self.handle.lock() = handle;
        if let Some(started) = self.started.take() {
            let _ = started.send(());
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Disarmed before the connection serves anyone else: a late watchdog cannot
        // interrupt the next job.
        self.handle.lock().take();
    }
}

impl Host {
    /// Builds a host over `storage`, splits the budget and sets SQLite's heap limits
    /// (process-wide: run one host per process).
    pub fn new(storage: Storage, config: HostConfig) -> Result<Self, HostError> {
        if config.blocking_threads == 0 || config.wakes_in_flight_max == 0 || config.blocking_queue_max == 0 {
            return Err(HostError::Config("threads, wakes in flight and queues must be at least 1".into()));
        }
        let plan = BudgetPlan::new(&config, &storage).map_err(HostError::Config)?;
        vfs::set_sqlite_heap_limits(plan.sqlite_bytes, plan.sqlite_bytes + plan.sqlite_bytes / 8);
        let pool = BlockingPool::new(config.blocking_threads, config.blocking_queue_max)
            .map_err(|e| HostError::Config(format!("cannot start blocking threads: {e}")))?;
        let buffers =
            RequestBuffers::new(plan.request_buffers_bytes, config.answer_bytes_max, config.retry_after_ms);
        let inner = Arc::new(Inner {
            storage,
            buffers,
            wake_permits: Semaphore::new(config.wakes_in_flight_max),
            config,
            awake: AwakeBudget::new(plan.awake_max),
            plan,
            pool,
            slots: Mutex::new(HashMap::new()),
            wakes_queued: AtomicUsize::new(0),
            idle: Arc::new(Idle { list: Mutex::new(IdleList::new()), started: Instant::now() }),
            state_counts: Arc::default(),
            counters: Counters::default(),
            shutting_down: false.into(),
            releases: Mutex::new(std::collections::VecDeque::new()),
            under_pressure: AtomicBool::new(false),
            evicting: tokio::sync::Mutex::new(()),
        });
        spawn_reaper(Arc::downgrade(&inner))?;
        Ok(Self { inner })
    }

    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    pub fn plan(&self) -> &BudgetPlan {
        &self.inner.plan
    }

    /// The `request_buffers` pool.
    pub fn buffers(&self) -> &Arc<RequestBuffers> {
        &self.inner.buffers
    }

    /// A new account in the `request_buffers` pool, for one request's bodies and answers.
    pub fn request_memory(&self) -> RequestMemory {
        self.inner.buffers.memory()
    }

    /// Runs `job` with exclusive access to the actor's database, waking it if needed. A
    /// transaction the job leaves open is rolled back: requests do not share transactions
    /// (use [`Host::pin`] for that).
    pub async fn with_db<R: Send + 'static>(
        &self,
        id: &ActorId,
        job: impl FnOnce(&mut Database) -> Result<R, vfs::Error> + Send + 'static,
    ) -> Result<R, HostError> {
        let pinned = self.pin(id).await?;
        // The job owns the turn: a caller that stops waiting frees the actor only when the
        // job has ended.
        self.run_turn(pinned.turn, move |db| {
            // A holder of a `Pinned` dropped mid-transaction must not make this job's writes
            // part of its transaction (and then lost with it).
            if db.in_transaction() {
                let _ = db.execute_script("ROLLBACK");
            }
            let result = job(db);
            if db.in_transaction() {
                let _ = db.execute_script("ROLLBACK");
            }
            result
        })
        .await
    }

    /// Takes exclusive use of the actor (waking it if needed) until the [`Pinned`] is dropped:
    /// no other request runs on it and it is not put to sleep. For transactions that span
    /// several requests.
    pub async fn pin(&self, id: &ActorId) -> Result<Pinned, HostError> {
        self.inner.counters.requests.fetch_add(1, Ordering::Relaxed);
        let arrived = Instant::now();
        let mut woke = None;
        loop {
            let used = self.inner.acquire(id).await?;
            // Whether the request found its actor asleep: decided by its first attempt.
            let woke = *woke.get_or_insert(!used.found_awake);
            let turn = used.slot.turn.clone().lock_owned().await;
            match used.slot.state() {
                ActorState::Awake => {
                    let waited_for_wake = Mutex::new(woke.then_some(arrived));
                    return Ok(Pinned { turn: Arc::new(Turn { used, _guard: turn, waited_for_wake }) });
                }
                ActorState::Poisoned => return Err(HostError::Poisoned),
                // Put to sleep (or deleted) while we waited for our turn: wake it again.
                _ => continue,
            }
        }
    }

    /// Runs `job` on a pinned actor, interrupting it after the statement timeout.
    pub async fn run_pinned<R: Send + 'static>(
        &self,
        pinned: &Pinned,
        job: impl FnOnce(&mut Database) -> Result<R, vfs::Error> + Send + 'static,
    ) -> Result<R, HostError> {
        self.run_turn(pinned.turn.clone(), job).await
    }

    /// Runs `job` on the actor whose `turn` it is. All of it (poisoning included) happens in
    /// the pool's job, which holds the turn: a caller that stops waiting changes nothing.
    async fn run_turn<R: Send + 'static>(
        &self,
        turn: Arc<Turn>,
        job: impl FnOnce(&mut Database) -> Result<R, vfs::Error> + Send + 'static,
    ) -> Result<R, HostError> {
        if turn.used.slot.state() != ActorState::Awake {
            return Err(HostError::Poisoned);
        }
        let watchdog = self.inner.watchdog();
        let config = &self.inner.config;
        let release = config.release_idle_memory;
        let release_now =
            release && (config.release_delay_ms == 0 || self.inner.under_pressure.load(Ordering::Relaxed));
        let inner = self.inner.clone();
        self.inner
            .run(move || {
                if let Some(arrived) = turn.waited_for_wake.lock().take() {
                    inner.counters.wake_latency.observe(arrived.elapsed());
                }
                let slot = &turn.used.slot;
                let result = run_job(slot, watchdog, release_now, job);
                if release && !release_now {
                    inner.queue_release(slot);
                }
                result
            })
            .await?
    }

    /// Runs one statement on the actor.
    pub async fn execute(
        &self,
        id: &ActorId,
        sql: impl Into<String>,
        params: Params,
    ) -> Result<QueryResult, HostError> {
        let sql = sql.into();
        let memory = self.request_memory();
        self.with_db(id, move |db| db.execute_metered(&sql, &params, &memory)).await
    }

    /// Runs statements on the actor; all or nothing with `transaction`.
    pub async fn batch(
        &self,
        id: &ActorId,
        statements: Vec<Statement>,
        transaction: bool,
    ) -> Result<Vec<QueryResult>, HostError> {
        let memory = self.request_memory();
        self.with_db(id, move |db| db.batch_metered(&statements, transaction, &memory)).await
    }

    /// Puts the actor to sleep after its running and queued requests. Returns whether it was
    /// awake (or poisoned).
    pub async fn sleep(&self, id: &ActorId) -> Result<bool, HostError> {
        let Some(used) = self.inner.existing(id) else { return Ok(false) };
        let turn = used.slot.turn.clone().lock_owned().await;
        if !matches!(used.slot.state(), ActorState::Awake | ActorState::Poisoned) {
            return Ok(false);
        }
        // The job holds the turn and does the whole sleep: a caller that stops waiting does not
        // leave the actor half asleep.
        let inner = self.inner.clone();
        self.inner
            .run(move || {
                inner.close(&used.slot);
                inner.counters.sleeps.fetch_add(1, Ordering::Relaxed);
                drop((used, turn));
            })
            .await?;
        Ok(true)
    }

    /// Deletes all of the actor's data. Returns whether it had any.
    pub async fn delete(&self, id: &ActorId) -> Result<bool, HostError> {
        let used = self.inner.acquire(id).await?;
        let turn = used.slot.turn.clone().lock_owned().await;
        let inner = self.inner.clone();
        let id = id.clone();
        // As for `sleep`, the job holds the turn and does it all.
        let result = self
            .inner
            .run(move || {
                inner.mark_sleeping(&used.slot);
                let deleted = match used.slot.db.lock().take() {
                    Some(awake) => awake.db.delete(),
                    None => inner.storage.delete(&id),
                };
                inner.forget(&used.slot);
                drop((used, turn));
                deleted
            })
            .await;
        Ok(result??)
    }

    /// Size of the actor's database, `None` when it has no data (read on the blocking pool).
    pub async fn size_bytes(&self, id: &ActorId) -> Result<Option<u64>, HostError> {
        let storage = self.inner.storage.clone();
        let id = id.clone();
        Ok(self.inner.run(move || storage.size_bytes(&id)).await??)
    }

    /// The actor's state (asleep when not in the registry).
    pub fn state(&self, id: &ActorId) -> ActorState {
        self.inner.slots.lock().get(id).map_or(ActorState::Asleep, |s| s.state())
    }

    /// Actors with data, in id order, starting after `after`, with their states. A page may
    /// be short while more actors follow (see [`Storage::list`]): continue from `next_after`.
    pub async fn list(
        &self,
        prefix: &str,
        after: Option<ActorId>,
        limit: usize,
    ) -> Result<ActorList, HostError> {
        let storage = self.inner.storage.clone();
        let prefix = prefix.to_string();
        let page = self.inner.run(move || storage.list(&prefix, after.as_ref(), limit)).await??;
        let actors = page.actors.into_iter().map(|(id, size)| (self.state(&id), id, size));
        Ok(ActorList {
            actors: actors.map(|(state, id, size)| (id, state, size)).collect(),
            next_after: page.next_after,
        })
    }

    /// Puts every awake actor to sleep (in-flight requests finish first) without refusing later
    /// wakes: used before the store is reopened, so that no cache built on it survives.
    pub async fn sleep_all(&self) {
        let ids: Vec<ActorId> = self.inner.slots.lock().keys().cloned().collect();
        for id in ids {
            let _ = self.sleep(&id).await;
        }
    }

    /// Puts every actor to sleep (in-flight requests finish first) and refuses new wakes.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let ids: Vec<ActorId> = self.inner.slots.lock().keys().cloned().collect();
        for id in ids {
            let _ = self.sleep(&id).await;
        }
    }

    pub fn stats(&self) -> HostStats {
        self.inner.stats()
    }

    /// The `n` awake actors holding the most SQLite memory. Actors busy with a request are
    /// skipped (their connection cannot be inspected meanwhile).
    pub fn top_actors(&self, n: usize) -> Vec<ActorMemory> {
        let slots: Vec<Arc<Slot>> = self.inner.slots.lock().values().cloned().collect();
        let mut actors: Vec<ActorMemory> = slots
            .iter()
            .filter_map(|slot| {
                let db = slot.db.try_lock()?;
                let memory = db.as_ref()?.db.memory();
                Some(ActorMemory { id: slot.id.clone(), memory })
            })
            .collect();
        actors.sort_by_key(|a| std::cmp::Reverse(a.total_bytes()));
        actors.truncate(n);
        actors
    }
}

/// SQLite memory of one awake actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorMemory {
    pub id: ActorId,
    pub memory: vfs::ConnectionMemory,
}

impl ActorMemory {
    pub fn total_bytes(&self) -> u64 {
        self.memory.cache_bytes + self.memory.schema_bytes + self.memory.statement_bytes
    }
}

/// The process's resident memory, from `/proc/self/status` (Linux).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessMemory {
    pub rss_bytes: u64,
    pub rss_peak_bytes: u64,
}

pub fn process_memory() -> Option<ProcessMemory> {
    process_memory_at("/proc/self/status")
}

/// [`process_memory`] of another process (a server a benchmark started, say).
pub fn process_memory_of(pid: u32) -> Option<ProcessMemory> {
    process_memory_at(&format!("/proc/{pid}/status"))
}

fn process_memory_at(status_path: &str) -> Option<ProcessMemory> {
    let status = std::fs::read_to_string(status_path).ok()?;
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    };
    Some(ProcessMemory { rss_bytes: field("VmRSS:")?, rss_peak_bytes: field("VmHWM:")? })
}

/// How many times a wake evicts and retries before it gives up with `Overloaded` (other wakes
/// may take the shares its evictions freed).
const RESERVE_ATTEMPTS: usize = 4;

/// How many idle actors the reaper marks sleeping at once (see [`Inner::reap`]).
const REAP_BATCH: usize = 16;

/// Releases an idle actor's cached pages and statements unless a request holds it now.
fn release_if_idle(slot: &Slot) -> bool {
    let Some(mut awake) = slot.db.try_lock() else { return false };
    match awake.as_mut() {
        Some(awake) if !awake.db.in_transaction() => {
            awake.db.release_memory();
            true
        }
        Some(_) => false,
        None => true,
    }
}

/// Runs `job` on the slot's database, on the pool. A panic or a poisoned database poisons the
/// actor here, so that its database is closed on this thread.
fn run_job<R>(
    slot: &Slot,
    mut watchdog: Option<Watchdog>,
    release: bool,
    job: impl FnOnce(&mut Database) -> Result<R, vfs::Error>,
) -> Result<R, HostError> {
    let mut awake = slot.db.lock();
    let Some(db) = awake.as_mut().map(|a| &mut a.db) else { return Err(HostError::Poisoned) };
    if let Some(watchdog) = &mut watchdog {
        watchdog.arm(db.interrupt_handle());
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| job(db)));
    drop(watchdog);
    match outcome {
        Ok(Err(vfs::Error::Poisoned)) | Err(_) => {
            slot.set_state(ActorState::Poisoned);
            let closing = awake.take();
            drop(awake);
            drop(closing);
            Err(HostError::Poisoned)
        }
        Ok(result) => {
            // Nobody else waiting: the actor goes idle, so its cached pages and statements
            // go back (an idle awake actor then costs ~32 KiB instead of ~130 KiB).
            if release && slot.users.load(Ordering::SeqCst) <= 1 && !db.in_transaction() {
                db.release_memory();
            }
            Ok(result?)
        }
    }
}

impl Inner {
    fn now_ms(&self) -> u64 {
        self.idle.now_ms()
    }

    /// A statement watchdog: a task that interrupts the job's statement once the timeout has
    /// passed since the job started, unless the job ended first. `None` without a timeout.
    fn watchdog(&self) -> Option<Watchdog> {
        let timeout_ms = self.config.statement_timeout_ms;
        if timeout_ms == 0 {
            return None;
        }
        let handle = Arc::new(Mutex::new(None::<vfs::InterruptHandle>));
        let (started, start) = oneshot::channel();
        let (ended, end) = oneshot::channel::<()>();
        let armed = handle.clone();
        tokio::spawn(async move {
            if start.await.is_err() {
                return;
            }
            if tokio::time::timeout(Duration::from_millis(timeout_ms), end).await.is_err() {
                if let Some(handle) = armed.lock().as_ref() {
                    handle.interrupt();
                }
            }
        });
        Some(Watchdog { handle, started: Some(started), _ended: ended })
    }

    /// An `Overloaded` error, not counted: see [`Inner::counted`].
    fn overloaded(&self, reason: &'static str) -> HostError {
        HostError::Overloaded { reason, retry_after_ms: self.config.retry_after_ms }
    }

    /// Counts `error` if it is `Overloaded`: once per request answered with it.
    fn counted(&self, error: HostError) -> HostError {
        if matches!(error, HostError::Overloaded { .. }) {
            self.counters.overloaded.fetch_add(1, Ordering::Relaxed);
        }
        error
    }

    fn pool_error(&self, error: PoolError) -> HostError {
        match error {
            PoolError::Full => self.overloaded("blocking queue full"),
            PoolError::Panicked => HostError::Poisoned,
            PoolError::Closed => HostError::ShuttingDown,
        }
    }

    /// Runs a request's `job` on the pool (its `Overloaded` counted).
    async fn run<R: Send + 'static>(&self, job: impl FnOnce() -> R + Send + 'static) -> Result<R, HostError> {
        self.pool.run(job).await.map_err(|e| self.counted(self.pool_error(e)))
    }

    /// The slot of an actor in the registry, counted as used.
    fn existing(&self, id: &ActorId) -> Option<SlotUse> {
        let slots = self.slots.lock();
        self.idle.take_use(slots.get(id)?, usize::MAX)
    }

    /// Returns the actor's slot once it is awake (or poisoned), waking it if needed. Only the
    /// first of concurrent callers starts the wake; all of them get its outcome.
    async fn acquire(self: &Arc<Self>, id: &ActorId) -> Result<SlotUse, HostError> {
        loop {
            let (used, waker) = {
                let mut slots = self.slots.lock();
                match slots.get(id) {
                    Some(slot) => match self.idle.take_use(slot, self.config.actor_queue_max) {
                        Some(used) => (used, false),
                        None => {
                            return Err(
                                self.counted(self.overloaded("too many requests waiting for this actor"))
                            )
                        }
                    },
                    None => {
                        if self.shutting_down.load(Ordering::SeqCst) {
                            return Err(HostError::ShuttingDown);
                        }
                        if slots.len() >= self.config.actors_known_max {
                            return Err(self.counted(self.overloaded("too many known actors")));
                        }
                        let slot = Arc::new(Slot::new(id.clone(), self.state_counts.clone()));
                        slots.insert(id.clone(), slot.clone());
                        (self.idle.take_use(&slot, usize::MAX).expect("a new slot has no users"), true)
                    }
                }
            };
            if waker {
                self.spawn_wake(used.slot.clone());
            }
            let mut states = used.slot.state.subscribe();
            let state =
                match states.wait_for(|s| !matches!(s, ActorState::Waking | ActorState::Sleeping)).await {
                    Ok(state) => *state,
                    Err(_) => ActorState::Asleep,
                };
            if matches!(state, ActorState::Awake | ActorState::Poisoned) {
                return Ok(used);
            }
            // The wake failed: its error answers everyone who waited on it.
            let failed = used.slot.wake_error.lock().clone();
            if let Some(error) = failed {
                return Err(self.counted(error));
            }
            // The actor went to sleep: start over.
        }
    }

    /// Wakes the slot's actor on a task of its own, so that the wake completes (and answers
    /// every waiter) even if the request that started it stops waiting.
    fn spawn_wake(self: &Arc<Self>, slot: Arc<Slot>) {
        let inner = self.clone();
        tokio::spawn(async move {
            if let Err(error) = inner.wake(&slot).await {
                *slot.wake_error.lock() = Some(error);
                inner.forget(&slot);
            }
        });
    }

    /// Admission, a share of the awake budget, then the open on the blocking pool, which
    /// installs the database.
    async fn wake(self: &Arc<Self>, slot: &Arc<Slot>) -> Result<(), HostError> {
        let _permit = self.admit().await?;
        let reservation = self.reserve().await?;
        let (inner, slot) = (self.clone(), slot.clone());
        let open = move || -> Result<(), vfs::Error> {
            let db = inner.storage.open(&slot.id)?;
            *slot.db.lock() = Some(Awake { db, _reservation: reservation });
            // Counted before anyone can see the actor awake, so that the counter never lags
            // behind what callers observe.
            inner.counters.wakes.fetch_add(1, Ordering::Relaxed);
            inner.idle.set_awake(&slot);
            Ok(())
        };
        self.pool.run(open).await.map_err(|e| self.pool_error(e))??;
        Ok(())
    }

    async fn admit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, HostError> {
        if let Ok(permit) = self.wake_permits.try_acquire() {
            return Ok(permit);
        }
        if self.wakes_queued.fetch_add(1, Ordering::SeqCst) >= self.config.wake_queue_max {
            self.wakes_queued.fetch_sub(1, Ordering::SeqCst);
            return Err(self.overloaded("wake queue full"));
        }
        let permit = self.wake_permits.acquire().await;
        self.wakes_queued.fetch_sub(1, Ordering::SeqCst);
        permit.map_err(|_| HostError::ShuttingDown)
    }

    /// A share of the awake budget, taken before the open starts. While the budget (awake
    /// count or SQLite's memory) is full, least-recently-used idle actors are put to sleep;
    /// if none can sleep, the wake fails with `Overloaded`.
    ///
    /// One eviction runs at a time, sized for every wake that may be in flight, and a wake that
    /// waited for it first looks whether it made room: with one batch per waiting wake, a storm
    /// put far more actors to sleep than it needed (the fleet benchmark saw 32,000 evictions in
    /// one second at 35,000 awake), kept the pool busy closing them, and wakes that found the
    /// idle list emptied by the others failed with `Overloaded`.
    async fn reserve(self: &Arc<Self>) -> Result<Reservation, HostError> {
        let batch = self.config.wakes_in_flight_max.min(self.awake.max() / 10).max(1);
        let sqlite_full = || vfs::sqlite_memory().used_bytes >= self.plan.sqlite_bytes;
        if sqlite_full() {
            let _one = self.evicting.lock().await;
            if sqlite_full() {
                self.evict(batch).await?;
            }
        }
        for _ in 0..RESERVE_ATTEMPTS {
            if let Some(reservation) = self.awake.try_reserve() {
                return Ok(reservation);
            }
            let _one = self.evicting.lock().await;
            if let Some(reservation) = self.awake.try_reserve() {
                return Ok(reservation);
            }
            if self.evict(batch).await? == 0 {
                break;
            }
        }
        Err(self.overloaded("memory budget: no idle actor to put to sleep"))
    }

    /// Puts up to `count` idle actors to sleep, least recently used first, and returns how
    /// many. One pool job picks and closes them: a caller that stops waiting leaves none half
    /// asleep, and no database closes on the runtime.
    async fn evict(self: &Arc<Self>, count: usize) -> Result<usize, HostError> {
        if self.idle.list.lock().len() == 0 {
            return Ok(0);
        }
        let inner = self.clone();
        let evict = move || {
            let victims = inner.idle.victims(count, None);
            for slot in &victims {
                inner.close(slot);
            }
            inner.counters.evictions.fetch_add(victims.len() as u64, Ordering::Relaxed);
            victims.len()
        };
        self.pool.run(evict).await.map_err(|e| self.pool_error(e))
    }

    fn mark_sleeping(&self, slot: &Slot) {
        let _slots = self.slots.lock();
        slot.set_state(ActorState::Sleeping);
    }

    /// Closes the actor's database and removes it from the registry (on a blocking thread).
    fn close(&self, slot: &Arc<Slot>) {
        self.mark_sleeping(slot);
        drop(slot.db.lock().take());
        self.forget(slot);
    }

    /// Removes a slot whose database is closed (or was never opened) from the registry.
    fn forget(&self, slot: &Arc<Slot>) {
        let mut slots = self.slots.lock();
        if slots.get(&slot.id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(&slot.id);
        }
        slot.set_state(ActorState::Asleep);
    }

    /// Is SQLite's connection memory (all but cached pages) above three quarters of its pool?
    /// Then idle actors give their memory back at once instead of after the delay. Asked by
    /// the reaper each pass; requests read its answer from `under_pressure`.
    fn memory_pressure(&self) -> bool {
        vfs::sqlite_memory().connection_bytes() > self.plan.connections_bytes / 4 * 3
    }

    /// Notes that a request on `slot` ended; queues the slot for release unless it is queued.
    fn queue_release(&self, slot: &Arc<Slot>) {
        slot.last_used_ms.store(self.now_ms(), Ordering::SeqCst);
        if !slot.release_queued.swap(true, Ordering::SeqCst) {
            self.releases.lock().push_back(Arc::downgrade(slot));
        }
    }

    /// Releases the memory of actors idle for the release delay (reaper thread). A slot used
    /// again since it was queued goes to the back; a busy one is tried at the next pass.
    fn release_idle(&self) {
        let now = self.now_ms();
        let delay = self.config.release_delay_ms;
        let pending = self.releases.lock().len();
        for _ in 0..pending {
            let Some(weak) = self.releases.lock().pop_front() else { return };
            let Some(slot) = weak.upgrade() else { continue };
            let idle_long_enough = now.saturating_sub(slot.last_used_ms.load(Ordering::SeqCst)) >= delay;
            let idle = slot.users.load(Ordering::SeqCst) == 0 && slot.state() == ActorState::Awake;
            let released = idle_long_enough && idle && release_if_idle(&slot);
            if released || slot.state() != ActorState::Awake {
                slot.release_queued.store(false, Ordering::SeqCst);
            } else {
                self.releases.lock().push_back(weak);
            }
        }
    }

    /// Sizes the awake budget from what the actors open now cost (reaper thread), so that
    /// `awake_max` follows the tenants' real schemas and statements rather than a guess: light
    /// actors let more stay awake, heavy ones fewer (a lower maximum puts idle actors to sleep
    /// as wakes need room). Wakes in flight are left out: they hold a reservation but not yet
    /// their memory. Changes under 5% are ignored so the figure does not flap.
    fn size_awake_budget(&self) {
        if !self.config.measure_actor_bytes {
            return;
        }
        let in_flight = self.config.wakes_in_flight_max.saturating_sub(self.wake_permits.available_permits());
        let open = self.awake.count().saturating_sub(in_flight);
        if open < MEASURED_ACTORS_MIN.min(self.plan.awake_max / 2).max(1) {
            return;
        }
        let connections = vfs::sqlite_memory().connection_bytes();
        let actor_bytes = connections / open as u64 + CONNECTION_PAGE_BUFFERS_BYTES + ACTOR_RUST_BYTES;
        self.counters.actor_bytes_measured.store(actor_bytes, Ordering::Relaxed);
        let (now, max) = (self.awake.max(), self.plan.awake_max_for(actor_bytes));
        if max.abs_diff(now) * 20 > now {
            self.awake.set_max(max);
        }
    }

    /// Puts actors idle longer than the timeout to sleep (reaper thread), a few at a time: a
    /// victim is marked sleeping only just before it closes, so a request for it waits for one
    /// close, not for the whole pass (the fleet benchmark saw passes of 2,400-7,500 actors
    /// taken at once, and requests for any of them waiting seconds until the pass ended).
    fn reap(&self) {
        let Some(cutoff) = self.now_ms().checked_sub(self.config.idle_timeout_ms) else { return };
        loop {
            let victims = self.idle.victims(REAP_BATCH, Some(cutoff));
            for slot in &victims {
                self.close(slot);
            }
            self.counters.idle_sleeps.fetch_add(victims.len() as u64, Ordering::Relaxed);
            if victims.len() < REAP_BATCH {
                return;
            }
        }
    }

    fn stats(&self) -> HostStats {
        let known = self.slots.lock().len();
        let counts = &self.state_counts;
        let (waking, poisoned) = (counts.get(ActorState::Waking), counts.get(ActorState::Poisoned));
        let sqlite = vfs::sqlite_memory();
        let store = self.storage.store().stats();
        let plan = &self.plan;
        let pools = vec![
            MemoryPool {
                name: "page_cache",
                bytes_max: plan.page_cache_bytes,
                bytes_used: sqlite.page_cache_bytes,
            },
            MemoryPool {
                name: "connections",
                bytes_max: plan.connections_bytes,
                bytes_used: sqlite.connection_bytes(),
            },
            MemoryPool {
                name: "store",
                bytes_max: plan.store_bytes,
                bytes_used: store.cache_bytes + store.write_buffer_bytes,
            },
            MemoryPool {
                name: "request_buffers",
                bytes_max: plan.request_buffers_bytes,
                bytes_used: self.buffers.stats().bytes_used,
            },
        ];
        let c = &self.counters;
        HostStats {
            actors_awake: self.awake.count(),
            awake_peak: self.awake.peak(),
            actors_waking: waking,
            actors_known: known,
            actors_poisoned: poisoned,
            awake_max: self.awake.max(),
            actor_bytes_measured: c.actor_bytes_measured.load(Ordering::Relaxed),
            wakes_queued: self.wakes_queued.load(Ordering::SeqCst),
            blocking_queued: self.pool.queued(),
            wakes_total: c.wakes.load(Ordering::Relaxed),
            sleeps_total: c.sleeps.load(Ordering::Relaxed),
            evictions_total: c.evictions.load(Ordering::Relaxed),
            idle_sleeps_total: c.idle_sleeps.load(Ordering::Relaxed),
            overloaded_total: c.overloaded.load(Ordering::Relaxed),
            requests_total: c.requests.load(Ordering::Relaxed),
            wake_latency: c.wake_latency.snapshot(),
            memory: MemoryReport { budget_bytes: plan.budget_bytes, pools, sqlite, store },
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle may go on a runtime thread: the databases still open close on the
        // pool (or a thread of their own).
        let open: Vec<Awake> =
            self.slots.get_mut().values().filter_map(|slot| slot.db.lock().take()).collect();
        if !open.is_empty() {
            self.pool.spawn(move || drop(open));
        }
    }
}

/// The reaper thread: puts idle actors to sleep; exits when the host is dropped.
fn spawn_reaper(host: Weak<Inner>) -> Result<(), HostError> {
    std::thread::Builder::new()
        .name("roost-reaper".into())
        .spawn(move || loop {
            let interval = match host.upgrade() {
                Some(inner) => {
                    inner.under_pressure.store(inner.memory_pressure(), Ordering::Relaxed);
                    inner.release_idle();
                    inner.reap();
                    inner.size_awake_budget();
                    inner.config.reaper_interval_ms
                }
                None => return,
            };
            std::thread::sleep(Duration::from_millis(interval.max(10)));
        })
        .map(|_| ())
        .map_err(|e| HostError::Config(format!("cannot start the reaper thread: {e}")))
}
