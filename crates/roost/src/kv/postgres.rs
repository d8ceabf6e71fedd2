//! The PostgreSQL backend: the generic ordered store as one table of `bytea` pairs.
//!
//! Schema (version 3, created or migrated from 1 or 2 and checked at open; a newer version is
//! refused; version 2 adds the node and owner tables of `postgres_nodes`, version 3 the
//! staging table, the placement of shards and this database's shard id):
//! - `roost_kv(key bytea primary key, value bytea not null)`: every pair. `bytea` compares
//!   bytewise with shorter prefixes first, exactly like `[u8]`, so ranges and scans are index
//!   range scans in the store's key order.
//! - `roost_commits(id bigint primary key, committed boolean, committed_at timestamptz)`: one
//!   row per write, used only to decide the outcome of a commit whose answer was lost; pruned
//!   after `commit_retention_s`.
//! - `roost_meta(name, value)`: the schema version and `shard_id`, a random number naming
//!   this database among the shards of a cluster (placement hashes it, not the URL).
//! - `roost_staged(commit_id, key, value, staged_at)`: the puts of a large write uploaded ahead
//!   of the transaction that publishes them (see Staging); rows of writes that never published
//!   are deleted after them, or pruned after `commit_retention_s` with the commit ids.
//! - `roost_placement(shard_id)`: the shard ids of the placement the live nodes use.
//! - `roost_hints(actor, keys, saved_at)`: pages an actor read while awake, saved when it
//!   went to sleep, read ahead by its next claim (see `postgres_nodes`).
//! - `roost_fence(key, expected)`: a PL/pgSQL function that raises SQLSTATE `RF001` unless the
//!   fence holds, locking the fence row (`FOR UPDATE`) until the transaction ends.
//!
//! One `write` (unless staged, below) is one PostgreSQL transaction sent as one pipeline (one
//! round trip once the connection's statements are prepared): `BEGIN`, the commit id insert,
//! the fence check, the range deletes, one `DELETE .. = ANY($1)` and `INSERT .. SELECT
//! unnest($1, $2) ON CONFLICT DO UPDATE` per chunk of puts, `COMMIT`. The batch is first
//! folded into that normal form (ranges first, then the last point op per key), which gives
//! the same result as applying the ops in order. A failed statement aborts the transaction,
//! so every later statement of the pipeline fails and `COMMIT` rolls back: a fenced batch
//! changes nothing.
//!
//! Staging: a batch whose puts carry more than `stage_bytes_min` payload bytes would not fit
//! one call's deadline over a slow link. Its puts are uploaded first into `roost_staged` under
//! the batch's commit id, in chunks of `statement_bytes_max`, each chunk its own short
//! transaction and call, committed without waiting for a WAL flush (the publish's flush covers
//! them, see `stage_chunk`). Then one publish transaction, pipelined as above, runs the same
//! statements except that the puts are one `INSERT .. SELECT` from `roost_staged` (after
//! checking under lock that every staged row is there), followed by deleting the staged rows.
//! It raises its own deadline and `statement_timeout` by the staged bytes at an assumed floor
//! rate. So the batch still applies in one transaction, in the same normal form, fenced and
//! resolved by commit id like any other. Staged rows are invisible to reads; when staging
//! fails (the batch did not apply) or the publish rolls back, they are deleted in the
//! background, and the pruner deletes any left older than the retention. A publish never
//! applies part of a batch: a missing row aborts it.
//!
//! Fences: an expected value is checked under the fence row's lock, so two writers fenced on
//! the same generation serialize and the second sees the first's bump. An expected absence is
//! checked by inserting the key (then removing it again): a concurrent inserter waits on that
//! uncommitted row, then conflicts with the committed bump, so it is fenced too.
//!
//! Unknown outcomes: when the connection fails or the call times out after the pipeline may
//! have reached the server, the batch may or may not have committed. The store never retries
//! it. It inserts the batch's commit id itself, marked "not committed", on a fresh connection:
//! that insert waits for a still-running original transaction, then either finds the
//! original's row (committed) or takes the id (the original can never commit now). Asking
//! again gives the same answer, so a resolution whose own answer is lost is simply retried.
//! Until every such id is resolved, every call answers [`KvError::Unavailable`], so nothing is
//! read while a lost commit might still land.
//!
//! Bounded time: each call has a deadline (`call_timeout_ms`; a publish's is longer, see
//! Staging) covering the pool wait, the connection and the round trip; sessions carry
//! `statement_timeout` and `idle_in_transaction_session_timeout` so an orphaned server-side
//! transaction ends too.
//! Calls on an unreachable server answer [`KvError::Unavailable`] and the pool reconnects once
//! it is back. Calls block the caller's thread on the store's own small runtime.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime as PoolRuntime};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Statement};

use super::{CallCounters, Durability, Key, KvError, KvResult, KvStats, KvStore, Value, WriteBatch, WriteOp};

/// The schema version this build creates and reads.
pub const SCHEMA_VERSION: i64 = 3;

/// SQLSTATE raised by `roost_fence` when the fence does not hold.
const FENCED_STATE: &str = "RF001";

/// Configuration of the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// `postgres://user@host:port/database?options` (libpq URL or key-value form).
    pub url: String,
    /// Most connections in the pool.
    pub connections_max: usize,
    /// Longest wait for a new connection.
    pub connect_timeout_ms: u64,
    /// Longest store call: pool wait, connection and round trip. Also the session's
    /// statement and idle-in-transaction timeouts.
    pub call_timeout_ms: u64,
    /// `Relaxed` commits with `synchronous_commit = off` (as do non-durable batches).
    pub durability: Durability,
    /// How long commit ids are kept for resolving lost answers.
    pub commit_retention_s: u64,
    /// Most payload bytes in one statement of a pipeline; bigger batches use several
    /// statements in the same transaction.
    pub statement_bytes_max: usize,
    /// A batch whose puts carry more payload bytes (keys and values) than this is staged:
    /// uploaded in chunks of `statement_bytes_max`, one call each, then published by one
    /// transaction (see the module docs), so no single call has to carry it all.
    pub stage_bytes_min: usize,
    /// Pages read ahead by claims (waking actors) and not consumed yet, at most; the store's
    /// "cache" in memory reports.
    pub preload_bytes_max: u64,
}

impl PostgresConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            connections_max: 16,
            connect_timeout_ms: 5_000,
            call_timeout_ms: 10_000,
            durability: Durability::Sync,
            commit_retention_s: 3_600,
            statement_bytes_max: 8 << 20,
            stage_bytes_min: 8 << 20,
            preload_bytes_max: 32 << 20,
        }
    }
}

const SCHEMA_META: &str =
    "CREATE TABLE IF NOT EXISTS roost_meta (name text PRIMARY KEY, value bigint NOT NULL)";

const SCHEMA_V1: &str = r#"
CREATE TABLE roost_kv (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE roost_commits (
  id bigint PRIMARY KEY,
  committed boolean NOT NULL DEFAULT true,
  committed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX roost_commits_committed_at ON roost_commits (committed_at);
CREATE FUNCTION roost_fence(fence_key bytea, expected bytea) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  current bytea;
BEGIN
  IF expected IS NULL THEN
    INSERT INTO roost_kv (key, value) VALUES (fence_key, '') ON CONFLICT (key) DO NOTHING;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'roost: write fenced' USING ERRCODE = 'RF001';
    END IF;
    DELETE FROM roost_kv WHERE key = fence_key;
  ELSE
    SELECT value INTO current FROM roost_kv WHERE key = fence_key FOR UPDATE;
    IF NOT FOUND OR current IS DISTINCT FROM expected THEN
      RAISE EXCEPTION 'roost: write fenced' USING ERRCODE = 'RF001';
    END IF;
  END IF;
END
$$;
"#;

/// Version 3: staging, placement, shard id (idempotent, so a half-done migration reruns).
const SCHEMA_V3: &str = r#"
CREATE TABLE IF NOT EXISTS roost_staged (
  commit_id bigint NOT NULL,
  key bytea NOT NULL,
  value bytea NOT NULL,
  staged_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (commit_id, key)
);
CREATE INDEX IF NOT EXISTS roost_staged_staged_at ON roost_staged (staged_at);
CREATE TABLE IF NOT EXISTS roost_placement (shard_id bigint PRIMARY KEY);
CREATE TABLE IF NOT EXISTS roost_hints (
  actor bytea PRIMARY KEY,
  keys bytea[] NOT NULL,
  saved_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE roost_nodes ADD COLUMN IF NOT EXISTS placement bigint NOT NULL DEFAULT 0;
INSERT INTO roost_meta (name, value)
  VALUES ('shard_id', (random() * 9.0e18)::bigint)
  ON CONFLICT (name) DO NOTHING;
"#;

const GET: &str = "SELECT key, value FROM roost_kv WHERE key = ANY($1::bytea[])";
const SCAN: &str = "SELECT key, value FROM roost_kv WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3";
const BEGIN: &str = "BEGIN";
const RELAXED: &str = "SET LOCAL synchronous_commit = off";
const COMMIT_ID: &str = "INSERT INTO roost_commits (id) VALUES ($1)";
const FENCE: &str = "SELECT roost_fence($1, $2)";
const DELETE_RANGE: &str = "DELETE FROM roost_kv WHERE key >= $1 AND key < $2";
const DELETE: &str = "DELETE FROM roost_kv WHERE key = ANY($1::bytea[])";
const UPSERT: &str = "INSERT INTO roost_kv (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                      ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value";
const COMMIT: &str = "COMMIT";
/// Resolves a lost answer: takes the id as "not committed" unless the original transaction
/// committed it, and answers which. Idempotent: asking again gives the same answer.
const TAKE_COMMIT_ID: &str = "INSERT INTO roost_commits (id, committed) VALUES ($1, false) \
                              ON CONFLICT (id) DO UPDATE SET committed = roost_commits.committed \
                              RETURNING committed";
const PRUNE: &str =
    "DELETE FROM roost_commits WHERE committed_at < now() - make_interval(secs => $1::float8)";
/// Uploads one chunk of a staged batch's puts.
const STAGE: &str = "INSERT INTO roost_staged (commit_id, key, value) \
                     SELECT $1, * FROM unnest($2::bytea[], $3::bytea[])";
/// Raises the server's bound for the statements of a publish (`statement_timeout` in ms).
const PUBLISH_TIMEOUT: &str = "SELECT set_config('statement_timeout', $1, true)";
/// Locks the staged rows of a publish and checks that none is missing (pruned): the cast of
/// the message fails, aborting the transaction, rather than publishing part of a batch.
const STAGED_CHECK: &str = "SELECT CASE WHEN count(*) = $2::bigint THEN 0 \
                            ELSE ('roost: ' || count(*) || ' staged rows, expected ' || $2::bigint)::int END \
                            FROM (SELECT 1 FROM roost_staged WHERE commit_id = $1 FOR UPDATE) AS staged";
/// Moves a staged batch's puts into place, in key order (the lock order of every writer).
const PUBLISH: &str = "INSERT INTO roost_kv (key, value) \
                       SELECT key, value FROM roost_staged WHERE commit_id = $1 ORDER BY key \
                       ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value";
const UNSTAGE: &str = "DELETE FROM roost_staged WHERE commit_id = $1";
/// Staged rows of writes that never published (their cleanup failed too).
const PRUNE_STAGED: &str =
    "DELETE FROM roost_staged WHERE staged_at < now() - make_interval(secs => $1::float8)";

/// Bytes per second a publish is assumed to move server-side at least (`INSERT .. SELECT`
/// from `roost_staged` into `roost_kv`, WAL included): its deadline is `call_timeout_ms` plus
/// the staged bytes at this rate, e.g. 10 s + 16 s for 64 MiB.
const PUBLISH_BYTES_PER_S_MIN: u64 = 4 << 20;

const STATEMENTS: [&str; 15] = [
    GET,
    SCAN,
    BEGIN,
    RELAXED,
    COMMIT_ID,
    FENCE,
    DELETE_RANGE,
    DELETE,
    UPSERT,
    COMMIT,
    STAGE,
    PUBLISH_TIMEOUT,
    STAGED_CHECK,
    PUBLISH,
    UNSTAGE,
];

/// A connection's prepared statements, in the order of [`STATEMENTS`].
struct Prepared([Statement; 15]);

impl Prepared {
    fn get(&self) -> &Statement {
        &self.0[0]
    }
    fn scan(&self) -> &Statement {
        &self.0[1]
    }
}

/// A commit whose answer was lost, waiting to be resolved.
#[derive(Debug, Clone, Copy)]
struct Lost {
    id: i64,
    since: Instant,
}

/// The PostgreSQL-backed store.
pub struct PostgresStore {
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    config: PostgresConfig,
    counters: CallCounters,
    lost: Mutex<Vec<Lost>>,
    /// Bytes of read-ahead pages handed out and not dropped yet.
    preload_used: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// This database's `shard_id` (read at open).
    shard_id: i64,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

pub(super) fn unavailable(what: impl std::fmt::Display) -> KvError {
    KvError::Unavailable(what.to_string())
}

/// Describes a client error with the server's code and message when there is one.
pub(super) fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => match std::error::Error::source(err) {
            Some(source) => format!("{err}: {source}"),
            None => err.to_string(),
        },
    }
}

/// Maps an error the server reported: a fence, a transient condition, or a real failure.
fn classify(err: &tokio_postgres::Error) -> KvError {
    let Some(code) = err.code().map(|c| c.code()) else { return unavailable(describe(err)) };
    // 08: connection, 53: resources, 57: shutdown/cancel (statement_timeout), 40: conflicts,
    // 55P03: lock timeout. All pass; the caller sees "try again later".
    let transient = ["08", "53", "57", "40"].iter().any(|class| code.starts_with(class)) || code == "55P03";
    match code {
        FENCED_STATE => KvError::Fenced,
        // Raised by `roost_register` with a sentence for the operator.
        "RP001" => {
            KvError::Io(err.as_db_error().map_or_else(|| describe(err), |db| db.message().to_string()))
        }
        _ if transient => unavailable(describe(err)),
        _ => KvError::Io(describe(err)),
    }
}

/// Why a call on a connection failed, and whether the connection must be dropped.
struct CallFailure {
    error: KvError,
    /// The connection failed or timed out: its state is unknown.
    detach: bool,
}

impl CallFailure {
    /// Detaches a broken connection from the pool (it closes), so no later call inherits its
    /// unknown state, and returns the error.
    fn settle(self, client: Object) -> KvError {
        if self.detach {
            drop(Object::take(client));
        }
        self.error
    }
}

type Timed<T> = Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>;

fn judge<T>(result: Timed<T>) -> Result<T, CallFailure> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) if err.as_db_error().is_some() => {
            Err(CallFailure { error: classify(&err), detach: false })
        }
        Ok(Err(err)) => Err(CallFailure { error: unavailable(describe(&err)), detach: true }),
        Err(_) => Err(CallFailure { error: unavailable("PostgreSQL did not answer in time"), detach: true }),
    }
}

/// Ends the last call on `client`, detaching it if it broke.
pub(super) fn finish<T>(client: Object, result: Timed<T>) -> KvResult<T> {
    judge(result).map_err(|failure| failure.settle(client))
}

type Call<'a> = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>;

/// Drives `calls` to completion, always polling in order: each request is sent on its first
/// poll, so the server receives them in this order, back to back (a pipeline).
async fn in_order<T>(mut calls: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>) -> Vec<T> {
    let mut done: Vec<Option<T>> = calls.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (call, slot) in calls.iter_mut().zip(done.iter_mut()) {
            if slot.is_none() {
                match call.as_mut().poll(cx) {
                    Poll::Ready(value) => *slot = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    done.into_iter().map(|value| value.expect("every call completed")).collect()
}

/// The keys and values of one upsert statement.
type PutChunk<'a> = (Vec<&'a [u8]>, Vec<&'a [u8]>);

/// A batch in normal form: ranges, then the last point op of each key (sorted, so concurrent
/// writers lock rows in one order).
struct Plan<'a> {
    ranges: Vec<(&'a [u8], &'a [u8])>,
    deletes: Vec<&'a [u8]>,
    puts: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> Plan<'a> {
    fn of(batch: &'a WriteBatch) -> Self {
        let mut ranges = Vec::new();
        let mut last: BTreeMap<&'a [u8], Option<&'a [u8]>> = BTreeMap::new();
        for op in &batch.ops {
            match op {
                WriteOp::Put(k, v) => {
                    last.insert(k, Some(v));
                }
                WriteOp::Delete(k) => {
                    last.insert(k, None);
                }
                WriteOp::DeleteRange { start, end } if start < end => {
                    // The range runs first in the plan, so point ops it covers are moot.
                    last.retain(|k, _| *k < start.as_slice() || *k >= end.as_slice());
                    ranges.push((start.as_slice(), end.as_slice()));
                }
                WriteOp::DeleteRange { .. } => {}
            }
        }
        let (puts, deletes): (Vec<_>, Vec<_>) = last.into_iter().partition(|(_, v)| v.is_some());
        Self {
            ranges,
            deletes: deletes.into_iter().map(|(k, _)| k).collect(),
            puts: puts.into_iter().map(|(k, v)| (k, v.expect("a put"))).collect(),
        }
    }

    /// Payload bytes (keys and values) of the puts.
    fn put_bytes(&self) -> usize {
        self.puts.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// The puts cut into statements of at most `bytes_max` payload bytes.
    fn put_chunks(&self, bytes_max: usize) -> Vec<PutChunk<'a>> {
        let mut chunks = Vec::new();
        let (mut keys, mut values, mut bytes) = (Vec::new(), Vec::new(), 0);
        for (k, v) in &self.puts {
            if !keys.is_empty() && bytes + k.len() + v.len() > bytes_max {
                chunks.push((std::mem::take(&mut keys), std::mem::take(&mut values)));
                bytes = 0;
            }
            bytes += k.len() + v.len();
            keys.push(*k);
            values.push(*v);
        }
        if !keys.is_empty() {
            chunks.push((keys, values));
        }
        chunks
    }
}

/// A batch whose puts wait in `roost_staged` under its commit id, to be published.
#[derive(Debug, Clone, Copy)]
struct Staged {
    rows: i64,
    /// The publish's deadline, client and server side (see [`PUBLISH_BYTES_PER_S_MIN`]).
    timeout: Duration,
}

/// How a pipelined commit ended.
enum Outcome {
    /// The server answered: committed (`Ok`) or rolled back with this error.
    Known(KvResult<()>),
    /// The answer was lost; the transaction may have committed.
    Unknown(String),
}

impl PostgresStore {
    /// Connects, creates or checks the schema, and starts the commit-id pruner.
    pub fn open(config: PostgresConfig) -> KvResult<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("roost-pg")
            .enable_all()
            .build()
            .map_err(|e| KvError::Io(format!("cannot start the PostgreSQL runtime: {e}")))?;
        let pool = build_pool(&config)?;
        let mut store = Self {
            runtime: Some(runtime),
            pool,
            config,
            counters: CallCounters::default(),
            lost: Mutex::new(Vec::new()),
            preload_used: Default::default(),
            shard_id: 0,
        };
        store.shard_id = store.block_on(|deadline| store.ensure_schema(deadline))?;
        store.spawn_pruner();
        Ok(store)
    }

    pub(super) fn counters(&self) -> &CallCounters {
        &self.counters
    }

    /// The read-ahead cap and the counter of bytes taken from it.
    pub(super) fn preload_budget(&self) -> (u64, &std::sync::Arc<std::sync::atomic::AtomicU64>) {
        (self.config.preload_bytes_max, &self.preload_used)
    }

    pub(super) fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(super) fn call_timeout_ms(&self) -> u64 {
        self.config.call_timeout_ms.max(1)
    }

    /// The random id naming this database among a cluster's shards.
    pub fn shard_id(&self) -> i64 {
        self.shard_id
    }

    pub(super) fn url(&self) -> &str {
        &self.config.url
    }

    pub(super) fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.as_ref().expect("the runtime lives until drop").handle()
    }

    fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.config.call_timeout_ms.max(1))
    }

    /// Runs a call on the store's runtime with its deadline.
    pub(super) fn block_on<'a, T, F>(&'a self, call: impl FnOnce(Instant) -> F) -> T
    where
        F: Future<Output = T> + 'a,
    {
        self.block_on_for(self.call_timeout(), call)
    }

    /// Runs a call on the store's runtime with a deadline `timeout` from now.
    fn block_on_for<'a, T, F>(&'a self, timeout: Duration, call: impl FnOnce(Instant) -> F) -> T
    where
        F: Future<Output = T> + 'a,
    {
        let deadline = Instant::now() + timeout;
        self.handle().block_on(call(deadline))
    }

    /// A pooled connection and its prepared statements (prepared once per connection, all in
    /// one round trip).
    async fn checkout(&self, deadline: Instant) -> KvResult<(Object, Prepared)> {
        let client = self.connection(deadline).await?;
        let prepared = {
            let calls =
                STATEMENTS.iter().map(|sql| Box::pin(client.prepare_cached(sql)) as Pin<Box<_>>).collect();
            tokio::time::timeout_at(deadline, in_order(calls)).await.map(|all| all.into_iter().collect())
        };
        match judge::<Vec<Statement>>(prepared) {
            Ok(statements) => {
                let statements = statements.try_into().unwrap_or_else(|_| unreachable!("one per statement"));
                Ok((client, Prepared(statements)))
            }
            Err(failure) => Err(failure.settle(client)),
        }
    }

    /// Creates or migrates the schema; answers the database's shard id.
    async fn ensure_schema(&self, deadline: Instant) -> KvResult<i64> {
        let client = self.connection(deadline).await?;
        let result = tokio::time::timeout_at(deadline, migrate(&client)).await;
        match result {
            Ok(Err(SchemaError::Version(message))) => Err(KvError::Io(message)),
            Ok(Err(SchemaError::Client(e))) => finish(client, Ok(Err(e))),
            Ok(Ok(shard_id)) => Ok(shard_id),
            Err(elapsed) => finish(client, Err(elapsed)),
        }
    }

    fn spawn_pruner(&self) {
        let pool = self.pool.clone();
        let retention_s = self.config.commit_retention_s as f64;
        let every = Duration::from_secs((self.config.commit_retention_s / 10).clamp(1, 60));
        self.handle().spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Ok(client) = pool.get().await else { continue };
                if let Err(e) = client.execute(PRUNE, &[&retention_s]).await {
                    tracing::debug!(error = %describe(&e), "pruning commit ids failed; retrying later");
                }
                // Rows of writes that never published and whose own cleanup failed. A publish
                // still running has them locked, and one starting later finds some missing and
                // rolls back (`STAGED_CHECK`): pruning never publishes part of a batch.
                if let Err(e) = client.execute(PRUNE_STAGED, &[&retention_s]).await {
                    tracing::debug!(error = %describe(&e), "pruning staged rows failed; retrying later");
                }
            }
        });
    }

    /// Sends the whole transaction as one pipeline and reads its outcome. A staged batch's
    /// puts are moved from `roost_staged` instead of sent.
    async fn commit(
        &self,
        batch: &WriteBatch,
        plan: &Plan<'_>,
        id: i64,
        staged: Option<Staged>,
        deadline: Instant,
    ) -> KvResult<Outcome> {
        let (client, st) = self.checkout(deadline).await?;
        let relaxed = !batch.durable || self.config.durability == Durability::Relaxed;
        let [_, _, begin, set_relaxed, commit_id, fence, delete_range, delete, upsert, commit, ..] = &st.0;
        let [.., publish_timeout, staged_check, publish, unstage] = &st.0;
        let mut calls: Vec<Call<'_>> = vec![Box::pin(client.execute_raw(begin, Vec::<i64>::new()))];
        if relaxed {
            calls.push(Box::pin(client.execute_raw(set_relaxed, Vec::<i64>::new())));
        }
        if let Some(staged) = staged {
            let ms = staged.timeout.as_millis().to_string();
            calls.push(Box::pin(client.execute_raw(publish_timeout, [ms])));
        }
        calls.push(Box::pin(client.execute_raw(commit_id, [id])));
        if let Some(f) = &batch.fence {
            calls.push(Box::pin(client.execute_raw(fence, [Some(f.key.as_slice()), f.expected.as_deref()])));
        }
        for (start, end) in &plan.ranges {
            calls.push(Box::pin(client.execute_raw(delete_range, [*start, *end])));
        }
        for keys in plan.deletes.chunks(8192) {
            calls.push(Box::pin(client.execute_raw(delete, [keys.to_vec()])));
        }
        // Puts last, as in the plan. The plan keeps one op per key, so no key is both put and
        // deleted here, staged or not.
        match staged {
            None => {
                for (keys, values) in plan.put_chunks(self.config.statement_bytes_max.max(1)) {
                    calls.push(Box::pin(client.execute_raw(upsert, [keys, values])));
                }
            }
            Some(staged) => {
                calls.push(Box::pin(client.execute_raw(staged_check, [id, staged.rows])));
                calls.push(Box::pin(client.execute_raw(publish, [id])));
                calls.push(Box::pin(client.execute_raw(unstage, [id])));
            }
        }
        calls.push(Box::pin(client.execute_raw(commit, Vec::<i64>::new())));
        let results = tokio::time::timeout_at(deadline, in_order(calls)).await;
        let outcome = match &results {
            Ok(results) => read_outcome(results),
            Err(_) => Outcome::Unknown("PostgreSQL did not answer in time".into()),
        };
        match outcome {
            Outcome::Unknown(_) => drop(Object::take(client)),
            Outcome::Known(Ok(())) => {
                CallCounters::bump(&self.counters.group_commits);
                if !relaxed {
                    CallCounters::bump(&self.counters.syncs);
                }
            }
            Outcome::Known(Err(_)) => {}
        }
        Ok(outcome)
    }

    /// Stages the plan's puts when they are more than one call should carry.
    fn stage_if_big(&self, plan: &Plan<'_>, id: i64) -> KvResult<Option<Staged>> {
        let bytes = plan.put_bytes();
        if bytes <= self.config.stage_bytes_min {
            return Ok(None);
        }
        for (keys, values) in plan.put_chunks(self.config.statement_bytes_max.max(1)) {
            if let Err(e) = self.block_on(|deadline| self.stage_chunk(id, &keys, &values, deadline)) {
                // Nothing is published without its publish: the batch did not apply.
                self.unstage_later(id);
                return Err(e);
            }
            CallCounters::bump(&self.counters.staged_uploads);
        }
        CallCounters::bump(&self.counters.staged_writes);
        let extra = Duration::from_secs_f64(bytes as f64 / PUBLISH_BYTES_PER_S_MIN as f64);
        Ok(Some(Staged { rows: plan.puts.len() as i64, timeout: self.call_timeout() + extra }))
    }

    /// Uploads one chunk of a staged batch in its own short transaction (one pipeline).
    async fn stage_chunk(
        &self,
        id: i64,
        keys: &[&[u8]],
        values: &[&[u8]],
        deadline: Instant,
    ) -> KvResult<()> {
        let (client, st) = self.checkout(deadline).await?;
        let [_, _, begin, set_relaxed, _, _, _, _, _, commit, stage, ..] = &st.0;
        let params: [&(dyn ToSql + Sync); 3] = [&id, &keys, &values];
        let calls: Vec<Call<'_>> = vec![
            Box::pin(client.execute_raw(begin, Vec::<i64>::new())),
            // No flush of its own: staged rows matter only once a publish commits, and a
            // durable publish flushes the WAL up to its own commit record, which covers every
            // record written before it (WAL is one sequence, flushed in order); the published
            // pairs are also logged again by the publish's own inserts. A crash losing this
            // commit loses every later one, the publish included.
            Box::pin(client.execute_raw(set_relaxed, Vec::<i64>::new())),
            Box::pin(client.execute_raw(stage, params)),
            Box::pin(client.execute_raw(commit, Vec::<i64>::new())),
        ];
        let results = tokio::time::timeout_at(deadline, in_order(calls)).await;
        match results.map(|results| read_outcome(&results)) {
            Ok(Outcome::Known(result)) => result,
            Ok(Outcome::Unknown(why)) => {
                Err(CallFailure { error: unavailable(why), detach: true }.settle(client))
            }
            Err(_) => {
                let failure =
                    CallFailure { error: unavailable("PostgreSQL did not answer in time"), detach: true };
                Err(failure.settle(client))
            }
        }
    }

    /// Deletes the staged rows of a batch that will never publish, in the background: best
    /// effort (the server may be gone), the pruner removes what this misses.
    fn unstage_later(&self, id: i64) {
        let pool = self.pool.clone();
        let timeout = self.call_timeout();
        self.handle().spawn(async move {
            let deleted = tokio::time::timeout(timeout, async {
                let client = pool.get().await.map_err(|e| e.to_string())?;
                client.execute(UNSTAGE, &[&id]).await.map_err(|e| describe(&e))
            })
            .await;
            if !matches!(deleted, Ok(Ok(_))) {
                tracing::debug!(commit = id, "deleting staged rows failed; the pruner will");
            }
        });
    }

    /// Decides a lost commit: `true` if it committed. Waits for a still-running original.
    async fn resolve(&self, id: i64, deadline: Instant) -> KvResult<bool> {
        let client = self.connection(deadline).await?;
        let row = tokio::time::timeout_at(deadline, client.query_one(TAKE_COMMIT_ID, &[&id])).await;
        Ok(finish(client, row)?.get(0))
    }

    pub(super) async fn connection(&self, deadline: Instant) -> KvResult<Object> {
        match tokio::time::timeout_at(deadline, self.pool.get()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(unavailable(format!("cannot connect to PostgreSQL: {e}"))),
            Err(_) => Err(unavailable("no PostgreSQL connection in time")),
        }
    }

    /// Resolves lost commits first; until they are, every call is refused (see module docs).
    fn settle(&self) -> KvResult<()> {
        if self.lost.lock().is_empty() {
            return Ok(());
        }
        // One thread resolves at a time; the others answer at once instead of queueing behind
        // it for a call timeout each.
        let Some(mut lost) = self.lost.try_lock() else {
            return Err(unavailable("an earlier commit's outcome is being resolved"));
        };
        while let Some(commit) = lost.last().copied() {
            if commit.since.elapsed() > Duration::from_secs(self.config.commit_retention_s / 2) {
                // Its id may be pruned soon: it could never be decided. Stop (fail-stop).
                return Err(KvError::Failed(format!("the outcome of commit {} stayed unknown", commit.id)));
            }
            match self.block_on(|deadline| self.resolve(commit.id, deadline)) {
                Ok(committed) => {
                    tracing::warn!(commit = commit.id, committed, "resolved a commit whose answer was lost");
                    lost.pop();
                }
                Err(e) => {
                    return Err(unavailable(format!("an earlier commit's outcome is not known yet: {e}")))
                }
            }
        }
        Ok(())
    }

    fn write_once(&self, batch: &WriteBatch) -> KvResult<()> {
        let id: i64 = rand::random();
        let plan = Plan::of(batch);
        let staged = self.stage_if_big(&plan, id)?;
        let timeout = staged.map_or(self.call_timeout(), |s| s.timeout);
        let (result, decided) =
            match self.block_on_for(timeout, |deadline| self.commit(batch, &plan, id, staged, deadline)) {
                Ok(Outcome::Known(result)) => (result, true),
                Ok(Outcome::Unknown(why)) => self.read_back(id, &why),
                Err(e) => (Err(e), true),
            };
        if staged.is_some() && result.is_err() && decided {
            // The publish rolled back or never ran: its staged rows are garbage. An undecided
            // one keeps them (it may still commit) until the pruner.
            self.unstage_later(id);
        }
        result
    }

    /// Reads back the outcome of a commit whose answer was lost, by its id (see the module
    /// docs); `false` with the result when it cannot be decided yet.
    fn read_back(&self, id: i64, why: &str) -> (KvResult<()>, bool) {
        tracing::warn!(commit = id, reason = %why, "lost the answer to a commit; reading it back");
        CallCounters::bump(&self.counters.lost_answers);
        match self.block_on(|deadline| self.resolve(id, deadline)) {
            Ok(true) => {
                CallCounters::bump(&self.counters.group_commits);
                (Ok(()), true)
            }
            Ok(false) => (Err(unavailable(format!("the commit did not apply: {why}"))), true),
            Err(e) => {
                self.lost.lock().push(Lost { id, since: Instant::now() });
                (Err(unavailable(format!("the commit's outcome is not known yet ({why}): {e}"))), false)
            }
        }
    }
}

/// Reads the pipeline's answers (see the module docs for why this order decides).
fn read_outcome(results: &[Result<u64, tokio_postgres::Error>]) -> Outcome {
    // A server-side error aborted the transaction: the first one is the cause, the rest are
    // "transaction aborted" follow-ups, and COMMIT rolled back.
    if let Some(err) = results.iter().filter_map(|r| r.as_ref().err()).find(|e| e.as_db_error().is_some()) {
        return Outcome::Known(Err(classify(err)));
    }
    match results.last() {
        Some(Ok(_)) => Outcome::Known(Ok(())),
        Some(Err(err)) => Outcome::Unknown(describe(err)),
        None => Outcome::Unknown("no answer".into()),
    }
}

enum SchemaError {
    Version(String),
    Client(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for SchemaError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Client(e)
    }
}

/// Creates the schema or checks its version, serialized against other starting nodes by a
/// table lock held for the transaction. Answers the shard id.
async fn migrate(client: &Object) -> Result<i64, SchemaError> {
    // Two nodes creating the table at once can collide in the catalog: the loser retries and
    // then finds it.
    if let Err(e) = client.batch_execute(SCHEMA_META).await {
        if e.as_db_error().is_none() {
            return Err(e.into());
        }
        client.batch_execute(SCHEMA_META).await?;
    }
    client.batch_execute("BEGIN; LOCK TABLE roost_meta IN SHARE ROW EXCLUSIVE MODE").await?;
    let result = migrate_locked(client).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    client.batch_execute(end).await?;
    result?;
    let row = client.query_one("SELECT value FROM roost_meta WHERE name = 'shard_id'", &[]).await?;
    Ok(row.get(0))
}

async fn migrate_locked(client: &Object) -> Result<(), SchemaError> {
    let row = client.query_opt("SELECT value FROM roost_meta WHERE name = 'schema_version'", &[]).await?;
    match row.map(|r| r.get::<_, i64>(0)) {
        None => {
            client.batch_execute(SCHEMA_V1).await?;
            client.batch_execute(super::postgres_nodes::SCHEMA_V2).await?;
            client.batch_execute(SCHEMA_V3).await?;
            client.batch_execute(super::postgres_nodes::SCHEMA_V3_NODES).await?;
            client
                .execute(
                    "INSERT INTO roost_meta (name, value) VALUES ('schema_version', $1)",
                    &[&SCHEMA_VERSION],
                )
                .await?;
            Ok(())
        }
        Some(version @ (1 | 2)) => {
            // Version 2 adds node leases and actor owners, version 3 staging and placement;
            // pairs are unchanged.
            if version == 1 {
                client.batch_execute(super::postgres_nodes::SCHEMA_V2).await?;
            }
            client.batch_execute(SCHEMA_V3).await?;
            client.batch_execute(super::postgres_nodes::SCHEMA_V3_NODES).await?;
            client
                .execute("UPDATE roost_meta SET value = $1 WHERE name = 'schema_version'", &[&SCHEMA_VERSION])
                .await?;
            Ok(())
        }
        Some(SCHEMA_VERSION) => Ok(()),
        Some(found) => Err(SchemaError::Version(format!(
            "the PostgreSQL database holds Roost schema version {found}; this build reads version \
             {SCHEMA_VERSION} only (upgrade Roost, or use another database)"
        ))),
    }
}

pub(super) fn build_pool(config: &PostgresConfig) -> KvResult<Pool> {
    let mut pg: tokio_postgres::Config =
        config.url.parse().map_err(|e| KvError::Io(format!("invalid PostgreSQL URL: {e}")))?;
    let connect = Duration::from_millis(config.connect_timeout_ms.max(1));
    let call_ms = config.call_timeout_ms.max(1);
    // Server-side bounds, so a transaction whose client vanished ends by itself.
    let options = format!(
        "{} -c statement_timeout={call_ms} -c idle_in_transaction_session_timeout={call_ms} \
         -c client_min_messages=warning",
        pg.get_options().unwrap_or_default()
    );
    pg.options(options.trim())
        .connect_timeout(connect)
        .keepalives_idle(Duration::from_secs(10))
        .application_name("roost");
    let manager = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(config.connections_max.max(1))
        .runtime(PoolRuntime::Tokio1)
        .create_timeout(Some(connect))
        .recycle_timeout(Some(connect))
        .build()
        .map_err(|e| KvError::Io(format!("cannot build the PostgreSQL pool: {e}")))
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.pool.close();
        // Dropping may happen on an async thread, where a blocking shutdown would panic.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl KvStore for PostgresStore {
    fn get_many(&self, keys: &[Key]) -> KvResult<Vec<Option<Value>>> {
        self.counters.timed_read(|| {
            self.settle()?;
            let rows = self.block_on(|deadline| async move {
                let (client, st) = self.checkout(deadline).await?;
                let rows = tokio::time::timeout_at(deadline, client.query(st.get(), &[&keys])).await;
                finish(client, rows)
            })?;
            let found: std::collections::HashMap<Vec<u8>, Vec<u8>> =
                rows.into_iter().map(|row| (row.get(0), row.get(1))).collect();
            Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
        })
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> KvResult<Vec<(Key, Value)>> {
        self.counters.timed_read(|| {
            self.settle()?;
            if start >= end || limit == 0 {
                return Ok(Vec::new());
            }
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = self.block_on(|deadline| async move {
                let (client, st) = self.checkout(deadline).await?;
                let rows =
                    tokio::time::timeout_at(deadline, client.query(st.scan(), &[&start, &end, &limit])).await;
                finish(client, rows)
            })?;
            Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
        })
    }

    fn write(&self, batch: WriteBatch) -> KvResult<()> {
        self.counters.timed_write(|| {
            self.settle()?;
            self.write_once(&batch)
        })
    }

    fn read_ahead_charge(&self, _key: &[u8], bytes: u64) -> Option<super::Charge> {
        super::Charge::take(&self.preload_used, bytes, self.config.preload_bytes_max)
    }

    fn stats(&self) -> KvStats {
        let mut stats = KvStats::default();
        self.counters.fill(&mut stats);
        stats.cache_bytes = self.preload_used.load(std::sync::atomic::Ordering::SeqCst);
        stats.cache_bytes_max = self.config.preload_bytes_max;
        stats
    }
}
