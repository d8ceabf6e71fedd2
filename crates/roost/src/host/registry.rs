//! The registry of actors and the [`Host`] built on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{watch, Semaphore};

use super::buffers::{RequestBuffers, RequestMemory};
use super::config::{BudgetPlan, HostConfig};
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
    db: Mutex<Option<Database>>,
    /// One request (or pinned holder) at a time, in arrival order.
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Requests holding or waiting for this slot; an actor with users is never evicted.
    users: AtomicUsize,
    last_used_ms: AtomicU64,
}

impl Slot {
    fn state(&self) -> ActorState {
        *self.state.borrow()
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
}

struct Inner {
    storage: Storage,
    config: HostConfig,
    plan: BudgetPlan,
    pool: BlockingPool,
    buffers: Arc<RequestBuffers>,
    slots: Mutex<HashMap<ActorId, Arc<Slot>>>,
    awake: AtomicUsize,
    wake_permits: Semaphore,
    wakes_queued: AtomicUsize,
    started: Instant,
    counters: Counters,
    shutting_down: std::sync::atomic::AtomicBool,
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
    pub actors_awake: usize,
    pub actors_waking: usize,
    pub actors_known: usize,
    pub actors_poisoned: usize,
    pub awake_max: usize,
    pub wakes_queued: usize,
    pub blocking_queued: usize,
    pub wakes_total: u64,
    pub sleeps_total: u64,
    pub evictions_total: u64,
    pub idle_sleeps_total: u64,
    pub overloaded_total: u64,
    pub requests_total: u64,
    pub memory: MemoryReport,
}

/// Exclusive use of an awake actor, from [`Host::pin`]: other requests wait until it drops.
pub struct Pinned {
    used: SlotUse,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Pinned {
    pub fn id(&self) -> &ActorId {
        &self.used.slot.id
    }
}

/// Holds a slot's `users` count for the duration of a request.
struct SlotUse {
    slot: Arc<Slot>,
}

impl Drop for SlotUse {
    fn drop(&mut self) {
        self.slot.users.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Host {
    /// Builds a host over `storage`, splits the budget and sets SQLite's heap limits
    /// (process-wide: run one host per process).
    pub fn new(storage: Storage, config: HostConfig) -> Result<Self, HostError> {
        if config.blocking_threads == 0 || config.wakes_in_flight_max == 0 || config.blocking_queue_max == 0 {
            return Err(HostError::Config("threads, wakes in flight and queues must be at least 1".into()));
        }
        let plan = BudgetPlan::new(&config, &storage.store().stats()).map_err(HostError::Config)?;
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
            plan,
            pool,
            slots: Mutex::new(HashMap::new()),
            awake: AtomicUsize::new(0),
            wakes_queued: AtomicUsize::new(0),
            started: Instant::now(),
            counters: Counters::default(),
            shutting_down: false.into(),
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
        self.run_pinned(&pinned, move |db| {
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
        loop {
            let used = self.inner.acquire(id).await?;
            let turn = used.slot.turn.clone().lock_owned().await;
            match used.slot.state() {
                ActorState::Awake => return Ok(Pinned { used, _turn: turn }),
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
        let slot = pinned.used.slot.clone();
        if slot.state() != ActorState::Awake {
            return Err(HostError::Poisoned);
        }
        let (started, watchdog) = self.inner.watchdog();
        let run_slot = slot.clone();
        let release = self.inner.config.release_idle_memory;
        let result = self
            .inner
            .run(move || {
                let mut db = run_slot.db.lock();
                let db = db.as_mut().expect("an awake actor has a database");
                let _ = started.send(db.interrupt_handle());
                let result = job(db);
                // Nobody else waiting: the actor goes idle, so its cached pages and statements
                // go back (an idle awake actor then costs ~32 KiB instead of ~130 KiB).
                if release && run_slot.users.load(Ordering::SeqCst) <= 1 && !db.in_transaction() {
                    db.release_memory();
                }
                result
            })
            .await;
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        slot.last_used_ms.store(self.inner.now_ms(), Ordering::Relaxed);
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(vfs::Error::Poisoned)) | Err(HostError::Poisoned) => {
                self.inner.poison(&slot).await;
                Err(HostError::Poisoned)
            }
            Ok(Err(e)) => Err(HostError::Database(e)),
            Err(e) => Err(e),
        }
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
        let _turn = used.slot.turn.lock().await;
        if !matches!(used.slot.state(), ActorState::Awake | ActorState::Poisoned) {
            return Ok(false);
        }
        self.inner.mark_sleeping(&used.slot);
        let db = self.inner.take_db(&used.slot);
        let closed = self.inner.run(move || drop(db)).await;
        self.inner.forget(&used.slot);
        closed?;
        self.inner.counters.sleeps.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Deletes all of the actor's data. Returns whether it had any.
    pub async fn delete(&self, id: &ActorId) -> Result<bool, HostError> {
        let used = self.inner.acquire(id).await?;
        let _turn = used.slot.turn.lock().await;
        self.inner.mark_sleeping(&used.slot);
        let db = self.inner.take_db(&used.slot);
        let storage = self.inner.storage.clone();
        let id = id.clone();
        let result = self
            .inner
            .run(move || match db {
                Some(db) => db.delete(),
                None => storage.delete(&id),
            })
            .await;
        self.inner.forget(&used.slot);
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
                let memory = db.as_ref()?.memory();
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
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    };
    Some(ProcessMemory { rss_bytes: field("VmRSS:")?, rss_peak_bytes: field("VmHWM:")? })
}

impl Inner {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A channel on which a job announces its start (with the connection's interrupt handle),
    /// and the task that interrupts it once the statement timeout has passed since then.
    fn watchdog(
        &self,
    ) -> (tokio::sync::oneshot::Sender<Option<vfs::InterruptHandle>>, Option<tokio::task::JoinHandle<()>>)
    {
        let (started, start) = tokio::sync::oneshot::channel::<Option<vfs::InterruptHandle>>();
        let timeout_ms = self.config.statement_timeout_ms;
        if timeout_ms == 0 {
            return (started, None);
        }
        let task = tokio::spawn(async move {
            if let Ok(Some(handle)) = start.await {
                tokio::time::sleep(Duration::from_millis(timeout_ms)).await;
                handle.interrupt();
            }
        });
        (started, Some(task))
    }

    fn overloaded(&self, reason: &'static str) -> HostError {
        self.counters.overloaded.fetch_add(1, Ordering::Relaxed);
        HostError::Overloaded { reason, retry_after_ms: self.config.retry_after_ms }
    }

    async fn run<R: Send + 'static>(&self, job: impl FnOnce() -> R + Send + 'static) -> Result<R, HostError> {
        self.pool.run(job).await.map_err(|e| match e {
            PoolError::Full => self.overloaded("blocking queue full"),
            PoolError::Panicked => HostError::Poisoned,
            PoolError::Closed => HostError::ShuttingDown,
        })
    }

    /// The slot of an actor in the registry, counted as used.
    fn existing(&self, id: &ActorId) -> Option<SlotUse> {
        let slots = self.slots.lock();
        let slot = slots.get(id)?.clone();
        slot.users.fetch_add(1, Ordering::SeqCst);
        Some(SlotUse { slot })
    }

    /// Returns the actor's slot once it is awake (or poisoned), waking it if needed. Only the
    /// first of concurrent callers wakes it.
    async fn acquire(&self, id: &ActorId) -> Result<SlotUse, HostError> {
        loop {
            let (used, waker) = {
                let mut slots = self.slots.lock();
                match slots.get(id) {
                    Some(slot) => {
                        if slot.users.fetch_add(1, Ordering::SeqCst) >= self.config.actor_queue_max {
                            slot.users.fetch_sub(1, Ordering::SeqCst);
                            return Err(self.overloaded("too many requests waiting for this actor"));
                        }
                        (SlotUse { slot: slot.clone() }, false)
                    }
                    None => {
                        if self.shutting_down.load(Ordering::SeqCst) {
                            return Err(HostError::ShuttingDown);
                        }
                        if slots.len() >= self.config.actors_known_max {
                            return Err(self.overloaded("too many known actors"));
                        }
                        let slot = Arc::new(Slot {
                            id: id.clone(),
                            state: watch::channel(ActorState::Waking).0,
                            db: Mutex::new(None),
                            turn: Arc::new(tokio::sync::Mutex::new(())),
                            users: AtomicUsize::new(1),
                            last_used_ms: AtomicU64::new(self.now_ms()),
                        });
                        slots.insert(id.clone(), slot.clone());
                        (SlotUse { slot }, true)
                    }
                }
            };
            if waker {
                return match self.wake(&used.slot).await {
                    Ok(()) => Ok(used),
                    Err(e) => {
                        self.forget(&used.slot);
                        Err(e)
                    }
                };
            }
            let mut states = used.slot.state.subscribe();
            let state =
                match states.wait_for(|s| !matches!(s, ActorState::Waking | ActorState::Sleeping)).await {
                    Ok(state) => *state,
                    Err(_) => ActorState::Asleep,
                };
            match state {
                ActorState::Awake | ActorState::Poisoned => return Ok(used),
                // The wake failed or the actor went to sleep: start over.
                _ => continue,
            }
        }
    }

    /// Admission, room, then the open on the blocking pool.
    async fn wake(&self, slot: &Arc<Slot>) -> Result<(), HostError> {
        let _permit = self.admit().await?;
        self.make_room().await?;
        let storage = self.storage.clone();
        let id = slot.id.clone();
        let db = self.run(move || storage.open(&id)).await??;
        *slot.db.lock() = Some(db);
        self.awake.fetch_add(1, Ordering::SeqCst);
        self.counters.wakes.fetch_add(1, Ordering::Relaxed);
        slot.last_used_ms.store(self.now_ms(), Ordering::Relaxed);
        slot.state.send_replace(ActorState::Awake);
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

    fn over_budget(&self) -> bool {
        self.awake.load(Ordering::SeqCst) >= self.plan.awake_max
            || vfs::sqlite_memory().used_bytes >= self.plan.sqlite_bytes
    }

    /// Puts least-recently-used idle actors to sleep while the host is over its budget.
    async fn make_room(&self) -> Result<(), HostError> {
        if !self.over_budget() {
            return Ok(());
        }
        // Evict a tenth at once so that a storm does not scan the registry per wake.
        let victims = self.idle_victims((self.plan.awake_max / 10).max(1), None);
        if victims.is_empty() {
            return if self.awake.load(Ordering::SeqCst) >= self.plan.awake_max {
                Err(self.overloaded("memory budget: no idle actor to put to sleep"))
            } else {
                Ok(())
            };
        }
        let closing: Vec<Option<Database>> = victims.iter().map(|s| self.take_db(s)).collect();
        let closed = self.run(move || drop(closing)).await;
        for slot in &victims {
            self.forget(slot);
        }
        closed?;
        self.counters.evictions.fetch_add(victims.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Marks up to `count` idle awake actors (no users; idle since `idle_before_ms` if given)
    /// as sleeping, least recently used first, and returns them.
    fn idle_victims(&self, count: usize, idle_before_ms: Option<u64>) -> Vec<Arc<Slot>> {
        let slots = self.slots.lock();
        let mut idle: Vec<&Arc<Slot>> = slots
            .values()
            .filter(|s| matches!(s.state(), ActorState::Awake | ActorState::Poisoned))
            .filter(|s| s.users.load(Ordering::SeqCst) == 0)
            .filter(|s| idle_before_ms.is_none_or(|t| s.last_used_ms.load(Ordering::Relaxed) <= t))
            .collect();
        if idle.len() > count {
            idle.select_nth_unstable_by_key(count, |s| s.last_used_ms.load(Ordering::Relaxed));
            idle.truncate(count);
        }
        let victims: Vec<Arc<Slot>> = idle.into_iter().cloned().collect();
        for slot in &victims {
            slot.state.send_replace(ActorState::Sleeping);
        }
        victims
    }

    fn mark_sleeping(&self, slot: &Slot) {
        let _slots = self.slots.lock();
        slot.state.send_replace(ActorState::Sleeping);
    }

    /// Takes the actor's database out of its slot (to be dropped on a blocking thread).
    fn take_db(&self, slot: &Slot) -> Option<Database> {
        let db = slot.db.lock().take();
        if db.is_some() {
            self.awake.fetch_sub(1, Ordering::SeqCst);
        }
        db
    }

    /// Removes a slot whose database is closed (or was never opened) from the registry.
    fn forget(&self, slot: &Arc<Slot>) {
        let mut slots = self.slots.lock();
        if slots.get(&slot.id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(&slot.id);
        }
        slot.state.send_replace(ActorState::Asleep);
    }

    async fn poison(&self, slot: &Arc<Slot>) {
        slot.state.send_replace(ActorState::Poisoned);
        let db = self.take_db(slot);
        let _ = self.run(move || drop(db)).await;
    }

    /// Puts actors idle longer than the timeout to sleep (reaper thread).
    fn reap(&self) {
        let Some(cutoff) = self.now_ms().checked_sub(self.config.idle_timeout_ms) else { return };
        let victims = self.idle_victims(usize::MAX, Some(cutoff));
        for slot in &victims {
            drop(self.take_db(slot));
            self.forget(slot);
        }
        self.counters.idle_sleeps.fetch_add(victims.len() as u64, Ordering::Relaxed);
    }

    fn stats(&self) -> HostStats {
        let (known, waking, poisoned) = {
            let slots = self.slots.lock();
            let count = |state| slots.values().filter(|s| s.state() == state).count();
            (slots.len(), count(ActorState::Waking), count(ActorState::Poisoned))
        };
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
                bytes_used: sqlite.used_bytes.saturating_sub(sqlite.page_cache_bytes),
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
            actors_awake: self.awake.load(Ordering::SeqCst),
            actors_waking: waking,
            actors_known: known,
            actors_poisoned: poisoned,
            awake_max: plan.awake_max,
            wakes_queued: self.wakes_queued.load(Ordering::SeqCst),
            blocking_queued: self.pool.queued(),
            wakes_total: c.wakes.load(Ordering::Relaxed),
            sleeps_total: c.sleeps.load(Ordering::Relaxed),
            evictions_total: c.evictions.load(Ordering::Relaxed),
            idle_sleeps_total: c.idle_sleeps.load(Ordering::Relaxed),
            overloaded_total: c.overloaded.load(Ordering::Relaxed),
            requests_total: c.requests.load(Ordering::Relaxed),
            memory: MemoryReport { budget_bytes: plan.budget_bytes, pools, sqlite, store },
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
                    inner.reap();
                    inner.config.reaper_interval_ms
                }
                None => return,
            };
            std::thread::sleep(Duration::from_millis(interval.max(10)));
        })
        .map(|_| ())
        .map_err(|e| HostError::Config(format!("cannot start the reaper thread: {e}")))
}
