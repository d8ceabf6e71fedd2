//! Hrana-over-HTTP streams and their batons.
//!
//! A stream belongs to one actor. Between requests it is parked in a bounded map under its
//! current baton: 128 random bits, replaced by a new baton on every answer, so a baton works
//! once. A request takes the stream out of the map (a second request with the same baton finds
//! nothing), runs, and parks it again under a fresh baton.
//!
//! A stream inside a transaction keeps its actor pinned ([`Pinned`]) between requests, so
//! nothing else runs on the actor until it commits, rolls back, closes or expires. A stream in
//! autocommit releases the actor after each request. Streams idle longer than the limit are
//! expired by a periodic sweep (and lazily when their baton shows up): their transaction is
//! rolled back and the actor released. A stream dropped any other way (a cancelled request, the
//! server going away) is rolled back by its destructor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;

use super::super::error::ApiError;
use crate::actor_id::ActorId;
use crate::host::{BufferError, Host, HostError, Pinned, RequestMemory};
use crate::vfs::{self, Database};

/// The streams of one server.
pub struct Streams {
    inner: Mutex<Inner>,
    idle: Duration,
    streams_max: usize,
    retry_after_ms: u64,
    sweeper: AtomicBool,
}

struct Inner {
    parked: HashMap<String, Parked>,
    /// Streams alive: parked or serving a request.
    open: usize,
}

struct Parked {
    stream: Stream,
    expires: Instant,
}

/// One stream, owned by the request serving it or parked in [`Streams`].
pub struct Stream {
    actor: ActorId,
    host: Host,
    pinned: Option<Pinned>,
    /// SQL texts stored with `store_sql` (scope: this stream).
    pub sqls: HashMap<i32, String>,
    /// The stream's own bytes (its state and stored SQL texts) in the request pool, held
    /// while the stream lives, parked or not.
    memory: RequestMemory,
    /// Whether the actor's connection was inside a transaction after the last job.
    in_transaction: bool,
    /// A `close` request was served.
    pub closed: bool,
    _ticket: Ticket,
}

/// Counts a stream in [`Inner::open`] for as long as it lives.
struct Ticket(Weak<Streams>);

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(streams) = self.0.upgrade() {
            streams.inner.lock().open -= 1;
        }
    }
}

/// What a stream costs in the request pool besides its SQL texts: the struct, its map slot
/// and its baton.
const STREAM_BYTES: u64 = 512;

/// A stored SQL text's cost: the text and its map entry.
pub(super) fn stored_sql_bytes(sql: &str) -> u64 {
    sql.len() as u64 + 64
}

const UNKNOWN_BATON: &str = "unknown baton: the stream was closed, expired, or the baton was already used";

fn new_baton() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}

impl Streams {
    pub fn new(idle_ms: u64, streams_max: usize, retry_after_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner { parked: HashMap::new(), open: 0 }),
            idle: Duration::from_millis(idle_ms),
            streams_max,
            retry_after_ms,
            sweeper: AtomicBool::new(false),
        })
    }

    /// A new stream on `actor`, or `overloaded` when too many are open.
    pub fn open(self: &Arc<Self>, actor: ActorId, host: Host) -> Result<Stream, ApiError> {
        self.ensure_sweeper();
        {
            let mut inner = self.inner.lock();
            if inner.open >= self.streams_max {
                return Err(ApiError::overloaded("too many Hrana streams are open", self.retry_after_ms));
            }
            inner.open += 1;
        }
        let memory = host.request_memory();
        let ticket = Ticket(Arc::downgrade(self));
        if memory.charge(STREAM_BYTES).is_err() {
            return Err(ApiError::overloaded(
                "request memory is busy (opening a Hrana stream)",
                self.retry_after_ms,
            ));
        }
        Ok(Stream {
            actor,
            host,
            pinned: None,
            sqls: HashMap::new(),
            memory,
            in_transaction: false,
            closed: false,
            _ticket: ticket,
        })
    }

    /// Takes the stream parked under `baton` for a request on `actor`. Unknown batons, batons
    /// of another actor's stream and expired streams are refused (`bad_request`); a baton of
    /// another actor leaves that stream untouched.
    pub fn take(self: &Arc<Self>, baton: &str, actor: &ActorId) -> Result<Stream, ApiError> {
        self.ensure_sweeper();
        let parked = {
            let mut inner = self.inner.lock();
            match inner.parked.get(baton) {
                Some(parked) if parked.stream.actor == *actor => inner.parked.remove(baton),
                _ => None,
            }
        };
        let Some(parked) = parked else { return Err(ApiError::bad_request(UNKNOWN_BATON)) };
        if parked.expires <= Instant::now() {
            tokio::spawn(parked.stream.close());
            return Err(ApiError::bad_request(format!(
                "the stream expired after {} ms idle; its transaction, if any, was rolled back",
                self.idle.as_millis()
            )));
        }
        Ok(parked.stream)
    }

    /// Parks `stream` until its next request and returns its new baton. A stream outside a
    /// transaction releases its actor.
    pub fn park(&self, mut stream: Stream) -> String {
        stream.release_outside_transaction();
        let expires = Instant::now() + self.idle;
        let mut inner = self.inner.lock();
        let baton = loop {
            let baton = new_baton();
            if !inner.parked.contains_key(&baton) {
                break baton;
            }
        };
        inner.parked.insert(baton.clone(), Parked { stream, expires });
        baton
    }

    /// Removes the parked streams idle past the limit.
    fn expired(&self) -> Vec<Stream> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let batons: Vec<String> =
            inner.parked.iter().filter(|(_, p)| p.expires <= now).map(|(b, _)| b.clone()).collect();
        batons.iter().filter_map(|b| inner.parked.remove(b)).map(|p| p.stream).collect()
    }

    /// Starts the sweep of expired streams (once, from inside the runtime). It stops when the
    /// streams are dropped.
    fn ensure_sweeper(self: &Arc<Self>) {
        if self.sweeper.swap(true, Ordering::SeqCst) {
            return;
        }
        let streams = Arc::downgrade(self);
        let period = (self.idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(live) = streams.upgrade() else { return };
                let expired = live.expired();
                drop(live);
                for stream in expired {
                    tokio::spawn(stream.close());
                }
            }
        });
    }
}

impl Stream {
    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// Between requests: a stream outside a transaction lets others use its actor.
    pub fn release_outside_transaction(&mut self) {
        if !self.in_transaction {
            self.pinned = None;
        }
    }

    /// Stores a SQL text, charged to the stream's memory until it is closed.
    pub fn store_sql(&mut self, id: i32, sql: String) -> Result<(), BufferError> {
        self.memory.charge(stored_sql_bytes(&sql))?;
        self.sqls.insert(id, sql);
        Ok(())
    }

    pub fn close_sql(&mut self, id: i32) {
        if let Some(sql) = self.sqls.remove(&id) {
            self.memory.release(stored_sql_bytes(&sql));
        }
    }

    /// Runs `job` on the actor's database, pinning the actor first if the stream does not
    /// hold it. Errors the job returns are storage failures (statement errors are part of its
    /// answer); they, like host errors, end the stream.
    pub async fn run<R: Send + 'static>(
        &mut self,
        job: impl FnOnce(&mut Database) -> Result<R, vfs::Error> + Send + 'static,
    ) -> Result<R, HostError> {
        let fresh = self.pinned.is_none();
        if fresh {
            self.pinned = Some(self.host.pin(&self.actor).await?);
        }
        let pinned = self.pinned.as_ref().expect("pinned above");
        let (value, in_transaction) = self
            .host
            .run_pinned(pinned, move |db| {
                // A transaction this stream did not open is not its to continue.
                if fresh && db.in_transaction() {
                    db.execute_script("ROLLBACK")?;
                }
                let value = job(db)?;
                Ok((value, db.in_transaction()))
            })
            .await?;
        self.in_transaction = in_transaction;
        Ok(value)
    }

    /// Ends the stream: rolls back its open transaction and releases the actor.
    pub async fn close(mut self) {
        if let Some(pinned) = self.pinned.take() {
            release(self.host.clone(), pinned).await;
        }
    }
}

/// Rolls back any open transaction on a pinned actor, then unpins it.
async fn release(host: Host, pinned: Pinned) {
    let rolled_back = host
        .run_pinned(&pinned, |db| {
            if db.in_transaction() {
                db.execute_script("ROLLBACK")?;
            }
            Ok(())
        })
        .await;
    if let Err(error) = rolled_back {
        tracing::warn!(actor = %pinned.id(), %error, "cannot roll back an abandoned Hrana stream");
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(pinned) = self.pinned.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(release(self.host.clone(), pinned));
                }
                Err(_) => tracing::warn!(actor = %pinned.id(), "Hrana stream dropped outside the runtime"),
            }
        }
    }
}
