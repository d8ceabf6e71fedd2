//! Node leases and actor ownership on the PostgreSQL store (schema version 2).
//!
//! Tables:
//! - `roost_nodes(node_id, epoch, address, started_at, expires_at)`: one row per node id. A
//!   process registers by bumping the epoch (so a restarted node, or a second process started
//!   with the same id, invalidates the previous one at once) and renews `expires_at` by the
//!   database clock on its own connection. A node is *live* while `expires_at > now()`, and
//!   only the live epoch of a row counts.
//! - `roost_owners(actor, node_id, epoch)`: the owner of each actor that was ever claimed,
//!   keyed by the actor's generation key.
//!
//! Invariants:
//! - a renewal succeeds only while the lease is live: a node whose lease expired can never
//!   renew it, it must register again (new epoch) after dropping every actor it held;
//! - `roost_claim` hands an actor to a node only if the node's own lease is live and the
//!   recorded owner is that node and epoch, or is not live. Taking an actor over bumps its
//!   generation key in `roost_kv` in the same transaction, under the row locks the write
//!   fence (`roost_fence`) takes too: a write of the old owner either committed before the
//!   takeover (and the new owner reads it) or is fenced. Claims of one actor serialize on its
//!   owner row (`FOR UPDATE` after an insert that cannot be lost to a concurrent insert);
//! - a claim of an actor this node already owns writes nothing (it is a read), so waking an
//!   actor again costs no fsync;
//! - no advisory locks: ownership is rows and a generation checked inside every write
//!   transaction, which survive poolers and PostgreSQL failover.

use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::NoTls;

use super::postgres::{describe, finish, unavailable, PostgresStore};
use super::{Charge, Claim, Claims, Key, KvError, KvResult, NodeAddress, Preload, Preloaded};

pub(super) const SCHEMA_V2: &str = r#"
CREATE TABLE roost_nodes (
  node_id text PRIMARY KEY,
  epoch bigint NOT NULL,
  address text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL
);
CREATE TABLE roost_owners (
  actor bytea PRIMARY KEY,
  node_id text NOT NULL,
  epoch bigint NOT NULL
);
CREATE INDEX roost_owners_node ON roost_owners (node_id, epoch);
CREATE FUNCTION roost_claim(p_actor bytea, p_node text, p_epoch bigint, p_keys bytea[])
RETURNS TABLE (status text, owner_node text, owner_address text, vals bytea[], fresh boolean)
LANGUAGE plpgsql AS $$
DECLARE
  cur_node text;
  cur_epoch bigint;
  addr text;
  gen bytea;
  was_fresh boolean := false;
BEGIN
  PERFORM 1 FROM roost_nodes n WHERE n.node_id = p_node AND n.epoch = p_epoch AND n.expires_at > now();
  IF NOT FOUND THEN
    RETURN QUERY SELECT 'lease_lost'::text, NULL::text, NULL::text, NULL::bytea[], false;
    RETURN;
  END IF;
  SELECT o.node_id, o.epoch INTO cur_node, cur_epoch FROM roost_owners o WHERE o.actor = p_actor;
  IF NOT FOUND OR cur_node <> p_node OR cur_epoch <> p_epoch THEN
    INSERT INTO roost_owners (actor, node_id, epoch) VALUES (p_actor, p_node, p_epoch)
      ON CONFLICT (actor) DO NOTHING;
    IF NOT FOUND THEN
      SELECT o.node_id, o.epoch INTO cur_node, cur_epoch FROM roost_owners o
        WHERE o.actor = p_actor FOR UPDATE;
      IF cur_node <> p_node OR cur_epoch <> p_epoch THEN
        SELECT n.address INTO addr FROM roost_nodes n
          WHERE n.node_id = cur_node AND n.epoch = cur_epoch AND n.expires_at > now();
        IF FOUND THEN
          RETURN QUERY SELECT 'elsewhere'::text, cur_node, addr, NULL::bytea[], false;
          RETURN;
        END IF;
        UPDATE roost_owners SET node_id = p_node, epoch = p_epoch WHERE actor = p_actor;
      END IF;
    END IF;
    SELECT value INTO gen FROM roost_kv WHERE key = p_actor FOR UPDATE;
    was_fresh := gen IS NULL;
    IF gen IS NULL OR length(gen) <> 8 THEN
      gen := int8send(1);
    ELSE
      gen := int8send(('x' || encode(gen, 'hex'))::bit(64)::bigint + 1);
    END IF;
    INSERT INTO roost_kv (key, value) VALUES (p_actor, gen)
      ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
  END IF;
  RETURN QUERY SELECT 'mine'::text, p_node, NULL::text,
    ARRAY(SELECT (SELECT kv.value FROM roost_kv kv WHERE kv.key = k.key)
          FROM unnest(p_keys) WITH ORDINALITY AS k(key, i) ORDER BY k.i),
    was_fresh;
END
$$;
"#;

/// Version 3: registration checks the placement of shards. A node may register only with
/// every shard of the recorded placement among its own (removing a shard would strand its
/// actors) and only while no live node of another id uses another placement (two placements
/// would put one actor on two shards). Placement 0 is a node that predates placement: it
/// knows this one shard only. The table lock serializes registrations on this shard.
pub(super) const SCHEMA_V3_NODES: &str = r#"
CREATE OR REPLACE FUNCTION roost_register(p_node text, p_address text, p_lease_ms bigint,
  p_placement bigint, p_shards bigint[])
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  missing bigint;
  other text;
  new_epoch bigint;
BEGIN
  LOCK TABLE roost_placement IN EXCLUSIVE MODE;
  SELECT p.shard_id INTO missing FROM roost_placement p WHERE p.shard_id <> ALL (p_shards) LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'shard % of the placement in use is not among this node''s PostgreSQL URLs (removing a shard is not supported)', missing
      USING ERRCODE = 'RP001';
  END IF;
  SELECT n.node_id INTO other FROM roost_nodes n
    WHERE n.node_id <> p_node AND n.expires_at > now() AND n.placement <> p_placement
      AND NOT (n.placement = 0 AND cardinality(p_shards) = 1)
    LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'live node % uses another set of PostgreSQL shards; stop every node before changing --postgres-url', other
      USING ERRCODE = 'RP001';
  END IF;
  INSERT INTO roost_placement (shard_id) SELECT unnest(p_shards) ON CONFLICT DO NOTHING;
  INSERT INTO roost_nodes (node_id, epoch, address, expires_at, placement)
    VALUES (p_node, 1, p_address, now() + p_lease_ms * interval '1 millisecond', p_placement)
    ON CONFLICT (node_id) DO UPDATE SET epoch = roost_nodes.epoch + 1, address = EXCLUDED.address,
      started_at = now(), expires_at = EXCLUDED.expires_at, placement = EXCLUDED.placement
    RETURNING epoch INTO new_epoch;
  RETURN new_epoch;
END
$$;
"#;

const REGISTER: &str = "SELECT roost_register($1, $2, $3, $4, $5)";
const RENEW: &str = "UPDATE roost_nodes SET expires_at = now() + $3::bigint * interval '1 millisecond' \
     WHERE node_id = $1 AND epoch = $2 AND expires_at > now() RETURNING epoch";
const EPOCH_OF: &str = "SELECT epoch FROM roost_nodes WHERE node_id = $1";
const RELEASE: &str = "UPDATE roost_nodes SET expires_at = now() - interval '1 millisecond' \
     WHERE node_id = $1 AND epoch = $2";
const CLAIM: &str = "SELECT status, owner_node, owner_address, vals, fresh FROM roost_claim($1, $2, $3, $4)";
/// Read-ahead, sent in the claim's pipeline: a small file whole, the first chunks of a bigger
/// one. $1 the file's metadata key (its size is the big-endian u64 after the version byte),
/// $2..$3 its chunks' range, $4 the chunk size, $5 the chunks of a file read whole at most,
/// $6 the chunks read of a bigger one.
const READ_AHEAD: &str = "SELECT key, value FROM roost_kv WHERE key >= $2 AND key < $3 ORDER BY key \
     LIMIT (SELECT CASE WHEN size IS NULL THEN 0 WHEN size <= $5::bigint * $4::bigint THEN $5::bigint \
                        ELSE $6::bigint END \
            FROM (SELECT (SELECT ('x' || encode(substring(value FROM 2 FOR 8), 'hex'))::bit(64)::bigint \
                          FROM roost_kv WHERE key = $1 AND length(value) = 9) AS size) m)";
/// Read-ahead of the pages the last owner used: $1 the actor's generation key, $2 the most
/// pages.
const HINTED: &str = "SELECT kv.key, kv.value FROM roost_hints h \
     CROSS JOIN LATERAL unnest(h.keys[1:$2]) AS k(key) JOIN roost_kv kv ON kv.key = k.key \
     WHERE h.actor = $1";
const SAVE_HINTS: &str = "INSERT INTO roost_hints (actor, keys) VALUES ($1, $2) \
     ON CONFLICT (actor) DO UPDATE SET keys = EXCLUDED.keys, saved_at = now()";
const OWNER: &str = "SELECT o.node_id, n.address, (n.epoch = o.epoch AND n.expires_at > now()) \
     FROM roost_owners o LEFT JOIN roost_nodes n ON n.node_id = o.node_id WHERE o.actor = $1";
const NODES: &str = "SELECT node_id, epoch, address, started_at::text, \
     (extract(epoch FROM expires_at - now()) * 1000)::bigint, \
     (SELECT count(*) FROM roost_owners o WHERE o.node_id = n.node_id AND o.epoch = n.epoch) \
     FROM roost_nodes n ORDER BY node_id";

/// How a lease renewal ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// The lease runs `lease_ms` from the database's clock at the renewal.
    Renewed,
    /// The lease had expired: this epoch is dead; register again.
    Expired,
    /// Another process registered this node id since (a newer epoch).
    Replaced { epoch: i64 },
}

/// A node row, for status pages.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeRow {
    pub node_id: String,
    pub epoch: i64,
    pub address: String,
    pub started_at: String,
    /// Milliseconds left on the lease (negative: expired).
    pub lease_left_ms: i64,
    pub actors_owned: i64,
}

/// The owner row of an actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRow {
    pub node: NodeAddress,
    /// The owner's lease is live (and its epoch is the one that claimed the actor).
    pub live: bool,
}

/// A node's own connection for renewing its lease, so renewals never wait behind commits in
/// the pool. Reconnects after a failure.
pub struct LeaseSession {
    url: String,
    client: Option<tokio_postgres::Client>,
}

impl std::fmt::Debug for LeaseSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseSession").field("connected", &self.client.is_some()).finish()
    }
}

/// A node's claims, bound to its node id and epoch.
#[derive(Debug, Clone)]
pub struct NodeClaims {
    pub store: std::sync::Arc<PostgresStore>,
    pub node_id: String,
    pub epoch: i64,
}

impl Claims for NodeClaims {
    fn claim(&self, fence_key: &[u8], keys: &[Key], preload: &Preload) -> KvResult<Claim> {
        self.store.claim(fence_key, &self.node_id, self.epoch, keys, preload)
    }

    fn remember_hints(&self, fence_key: &[u8], keys: Vec<Key>) {
        self.store.save_hints(fence_key, keys);
    }
}

impl PostgresStore {
    /// Registers this process as `node_id` at `address` with a fresh epoch and a lease of
    /// `lease_ms` from now (database clock), as a node of one shard (this one). Any earlier
    /// process of the same id is replaced.
    pub fn register_node(&self, node_id: &str, address: &str, lease_ms: u64) -> KvResult<i64> {
        self.register_sharded_node(node_id, address, lease_ms, &[self.shard_id()])
    }

    /// [`PostgresStore::register_node`] for a node whose shards are `shard_ids` (this one
    /// among them). Refused while a live node uses other shards, or when a shard of the
    /// recorded placement is missing.
    pub fn register_sharded_node(
        &self,
        node_id: &str,
        address: &str,
        lease_ms: u64,
        shard_ids: &[i64],
    ) -> KvResult<i64> {
        let lease_ms = lease_ms as i64;
        let placement = super::shards::placement_id(shard_ids);
        self.block_on(|deadline| async move {
            let client = self.connection(deadline).await?;
            let row = tokio::time::timeout_at(
                deadline,
                client.query_one(REGISTER, &[&node_id, &address, &lease_ms, &placement, &shard_ids]),
            )
            .await;
            Ok(finish(client, row)?.get::<_, i64>(0))
        })
    }

    /// Ends this epoch's lease now, so other nodes may take its actors at once.
    pub fn release_node(&self, node_id: &str, epoch: i64) -> KvResult<()> {
        self.block_on(|deadline| async move {
            let client = self.connection(deadline).await?;
            let done = tokio::time::timeout_at(deadline, client.execute(RELEASE, &[&node_id, &epoch])).await;
            finish(client, done).map(|_| ())
        })
    }

    /// A connection of its own for [`PostgresStore::renew_node`].
    pub fn lease_session(&self) -> LeaseSession {
        LeaseSession { url: self.url().to_string(), client: None }
    }

    /// Renews the lease of `node_id` at `epoch` for `lease_ms`, on `session`, within `timeout`.
    pub fn renew_node(
        &self,
        session: &mut LeaseSession,
        node_id: &str,
        epoch: i64,
        lease_ms: u64,
        timeout: Duration,
    ) -> KvResult<Renewal> {
        let deadline = Instant::now() + timeout;
        let handle = self.handle().clone();
        let result = handle.block_on(async {
            tokio::time::timeout_at(deadline, renew(&handle, session, node_id, epoch, lease_ms as i64)).await
        });
        let outcome = match result {
            Ok(Ok(renewal)) => return Ok(renewal),
            Ok(Err(e)) => unavailable(format!("renewing the lease failed: {}", describe(&e))),
            Err(_) => unavailable("renewing the lease took too long"),
        };
        // The connection's state is unknown: the next renewal connects again.
        session.client = None;
        Err(outcome)
    }

    /// Claims an actor for `node_id` at `epoch` (see the module docs); reads `keys` after,
    /// and reads ahead what `preload` allows and the read-ahead cap has room for.
    pub fn claim(
        &self,
        fence_key: &[u8],
        node_id: &str,
        epoch: i64,
        keys: &[Key],
        preload: &Preload,
    ) -> KvResult<Claim> {
        self.counters().timed_read(|| {
            let (mut charge, whole, first, hinted) = self.preload_charge(preload);
            let chunk_bytes = preload.chunk_bytes as i64;
            let (meta, from, to) = (&preload.meta_key, &preload.start, &preload.end);
            let (whole, first, hinted) =
                (i64::from(whole), i64::from(first), i32::try_from(hinted).unwrap_or(0));
            let (row, ahead) = self.block_on(|deadline| async move {
                let client = self.connection(deadline).await?;
                // Both statements go out back to back (one round trip); they are prepared once
                // per connection, as an unprepared query costs a round trip of its own.
                let answers = tokio::time::timeout_at(deadline, async {
                    let (claim, read_ahead, hints) = tokio::try_join!(
                        client.prepare_cached(CLAIM),
                        client.prepare_cached(READ_AHEAD),
                        client.prepare_cached(HINTED)
                    )?;
                    let claim_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                        [&fence_key, &node_id, &epoch, &keys];
                    let claim = client.query_one(&claim, &claim_params);
                    let read_ahead = async {
                        match whole {
                            0 => Ok(Vec::new()),
                            _ => {
                                client
                                    .query(&read_ahead, &[meta, from, to, &chunk_bytes, &whole, &first])
                                    .await
                            }
                        }
                    };
                    let hints = async {
                        match hinted {
                            0 => Ok(Vec::new()),
                            _ => client.query(&hints, &[&fence_key, &hinted]).await,
                        }
                    };
                    let (claim, mut ahead, hints) = tokio::try_join!(claim, read_ahead, hints)?;
                    ahead.extend(hints);
                    Ok((claim, ahead))
                })
                .await;
                finish(client, answers)
            })?;
            let status: String = row.get(0);
            match status.as_str() {
                "mine" => {
                    let values: Vec<Option<Vec<u8>>> = row.get(3);
                    if values.len() != keys.len() {
                        return Err(KvError::Io("a claim answered the wrong number of values".into()));
                    }
                    let mut pairs: Vec<(Key, Vec<u8>)> =
                        ahead.into_iter().map(|r| (r.get(0), r.get(1))).collect();
                    pairs.sort_by(|a, b| a.0.cmp(&b.0));
                    pairs.dedup_by(|later, earlier| later.0 == earlier.0);
                    let bytes: u64 = pairs.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
                    if let Some(charge) = &mut charge {
                        charge.shrink_to(bytes);
                    }
                    Ok(Claim::Mine { values, fresh: row.get(4), preloaded: Preloaded::new(pairs, charge) })
                }
                "elsewhere" => Ok(Claim::Elsewhere(NodeAddress { node_id: row.get(1), url: row.get(2) })),
                "lease_lost" => Err(unavailable("this node's lease is not live; it is re-registering")),
                other => Err(KvError::Io(format!("a claim answered an unknown status {other:?}"))),
            }
        })
    }

    /// The recorded owner of the actor whose generation lives at `fence_key`, if any.
    pub fn owner_of(&self, fence_key: &[u8]) -> KvResult<Option<OwnerRow>> {
        let rows = self.block_on(|deadline| async move {
            let client = self.connection(deadline).await?;
            let rows = tokio::time::timeout_at(deadline, async {
                let statement = client.prepare_cached(OWNER).await?;
                client.query(&statement, &[&fence_key]).await
            })
            .await;
            finish(client, rows)
        })?;
        Ok(rows.into_iter().next().map(|row| OwnerRow {
            node: NodeAddress {
                node_id: row.get(0),
                url: row.get::<_, Option<String>>(1).unwrap_or_default(),
            },
            live: row.get::<_, Option<bool>>(2).unwrap_or(false),
        }))
    }

    /// Every node row (live or not), with how many actors each live epoch owns.
    pub fn nodes(&self) -> KvResult<Vec<NodeRow>> {
        let rows = self.block_on(|deadline| async move {
            let client = self.connection(deadline).await?;
            let rows = tokio::time::timeout_at(deadline, client.query(NODES, &[])).await;
            finish(client, rows)
        })?;
        Ok(rows
            .into_iter()
            .map(|row| NodeRow {
                node_id: row.get(0),
                epoch: row.get(1),
                address: row.get(2),
                started_at: row.get(3),
                lease_left_ms: row.get(4),
                actors_owned: row.get(5),
            })
            .collect())
    }
}

impl PostgresStore {
    /// Takes room for the most a claim may read ahead from the read-ahead cap; with less
    /// room, reads ahead less (or nothing). Answers the charge and the chunk counts to ask
    /// (whole file, first chunks, hinted chunks).
    fn preload_charge(&self, preload: &Preload) -> (Option<Charge>, u32, u32, u32) {
        let chunk = preload.chunk_bytes.max(1) + 64;
        let (cap, used) = self.preload_budget();
        let room = cap.saturating_sub(used.load(std::sync::atomic::Ordering::SeqCst)) / chunk;
        let whole = u64::from(preload.whole_chunks).min(room);
        let first = u64::from(preload.first_chunks).min(whole);
        let hinted = u64::from(preload.hint_chunks).min(room - whole);
        if whole + hinted == 0 {
            return (None, 0, 0, 0);
        }
        match Charge::take(used, (whole + hinted) * chunk, cap) {
            Some(charge) => (Some(charge), whole as u32, first as u32, hinted as u32),
            None => (None, 0, 0, 0),
        }
    }

    /// Saves `keys` as the read-ahead hints of the actor whose generation is at `fence_key`,
    /// in the background (see [`Claims::remember_hints`]); a failure is logged at debug.
    pub fn save_hints(&self, fence_key: &[u8], keys: Vec<Key>) {
        let pool = self.pool().clone();
        let actor = fence_key.to_vec();
        let timeout = std::time::Duration::from_millis(self.call_timeout_ms());
        self.handle().spawn(async move {
            let save = async {
                let client = pool.get().await.map_err(|e| e.to_string())?;
                client.execute(SAVE_HINTS, &[&actor, &keys]).await.map_err(|e| describe(&e))
            };
            match tokio::time::timeout(timeout, save).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "saving read-ahead hints failed"),
                Err(_) => tracing::debug!("saving read-ahead hints timed out"),
            }
        });
    }
}

async fn renew(
    handle: &tokio::runtime::Handle,
    session: &mut LeaseSession,
    node_id: &str,
    epoch: i64,
    lease_ms: i64,
) -> Result<Renewal, tokio_postgres::Error> {
    if session.client.is_none() {
        let (client, connection) = tokio_postgres::connect(&session.url, NoTls).await?;
        handle.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "the lease connection closed");
            }
        });
        session.client = Some(client);
    }
    let client = session.client.as_ref().expect("connected above");
    if client.query_opt(RENEW, &[&node_id, &epoch, &lease_ms]).await?.is_some() {
        return Ok(Renewal::Renewed);
    }
    let current = client.query_opt(EPOCH_OF, &[&node_id]).await?.map(|row| row.get::<_, i64>(0));
    Ok(match current {
        Some(newer) if newer != epoch => Renewal::Replaced { epoch: newer },
        _ => Renewal::Expired,
    })
}
