//! Several `roost serve --store postgres` nodes sharing one database: forwarding to the owner,
//! hand-back on SIGTERM, takeover after `kill -9`, and a node paused past its lease that
//! cannot commit when it resumes. Every acknowledged write is checked at the end, with
//! `PRAGMA integrity_check`. Each test uses a fresh PostgreSQL database; without a reachable
//! server it prints why and returns (see `roost::kv::testing`).

use std::collections::{BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roost::kv::testing::TestDatabase;
use serde_json::{json, Value};

mod support;

use support::{free_port, metric, ROOST};

const LEASE_MS: u64 = 1_500;

/// One node; killed when dropped.
struct Node {
    id: String,
    child: Option<Child>,
    url: String,
}

impl Node {
    fn start(db: &TestDatabase, id: &str) -> Self {
        Self::start_on(&[db], id)
    }

    /// A node storing actors on `shards` (one `--postgres-url` each).
    fn start_on(shards: &[&TestDatabase], id: &str) -> Self {
        let port = free_port();
        let child =
            serve_command(shards, id, port).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().unwrap();
        support::wait_listening(port);
        Self { id: id.to_string(), child: Some(child), url: format!("http://127.0.0.1:{port}") }
    }

    fn pid(&self) -> String {
        self.child.as_ref().unwrap().id().to_string()
    }

    fn signal(&self, signal: &str) {
        assert!(Command::new("kill").args([signal, &self.pid()]).status().unwrap().success());
    }

    fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-CONT", &child.id().to_string()]).status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn serve_command(shards: &[&TestDatabase], id: &str, port: u16) -> Command {
    let data = tempfile::tempdir().unwrap();
    let mut command = Command::new(ROOST);
    command
        .args(["serve", "--store", "postgres", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--data", data.path().to_str().unwrap(), "--node-id", id])
        .args(["--lease-ms", &LEASE_MS.to_string(), "--postgres-timeout-ms", "3000"])
        .env_remove("ROOST_POSTGRES_URL");
    for shard in shards {
        command.args(["--postgres-url", &shard.url]);
    }
    command
}

/// An answer: status, the node that served it, the body.
struct Answer {
    status: u16,
    node: Option<String>,
    body: Value,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(3)))
        .build()
        .into()
}

/// POSTs `body` to `path`; `None` when the node did not answer (down, paused, timed out).
fn post(agent: &ureq::Agent, base: &str, path: &str, body: &Value) -> Option<Answer> {
    let url = format!("{base}{path}");
    let mut answer =
        agent.post(&url).header("content-type", "application/json").send(body.to_string()).ok()?;
    let node = answer.headers().get("x-roost-node").map(|v| v.to_str().unwrap().to_string());
    let status = answer.status().as_u16();
    let text = answer.body_mut().read_to_string().ok()?;
    Some(Answer { status, node, body: serde_json::from_str(&text).unwrap_or(Value::Null) })
}

fn query(agent: &ureq::Agent, base: &str, actor: &str, sql: &str, params: Value) -> Option<Answer> {
    post(agent, base, &format!("/v1/actors/{actor}/query"), &json!({"sql": sql, "params": params}))
}

fn ok(agent: &ureq::Agent, base: &str, actor: &str, sql: &str) -> Answer {
    let answer = query(agent, base, actor, sql, json!([])).expect("the node answers");
    assert_eq!(answer.status, 200, "{actor} {sql}: {}", answer.body);
    answer
}

/// Retries `sql` on `base` until it succeeds; answers how long that took.
fn until_ok(agent: &ureq::Agent, base: &str, actor: &str, sql: &str, within: Duration) -> (Duration, Answer) {
    let started = Instant::now();
    loop {
        if let Some(answer) = query(agent, base, actor, sql, json!([])) {
            if answer.status == 200 {
                return (started.elapsed(), answer);
            }
        }
        assert!(started.elapsed() < within, "{actor} not served by {base} within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn requests_are_forwarded_to_the_owner_and_sigterm_hands_actors_back_at_once() {
    let Some(db) = TestDatabase::create("cluster_fwd") else { return };
    let a = Node::start(&db, "node-a");
    let b = Node::start(&db, "node-b");
    let agent = agent();
    let created = ok(&agent, &a.url, "doc", "CREATE TABLE t(x)");
    assert_eq!(created.node.as_deref(), Some("node-a"));
    // Through b: served by a, the owner, in one hop.
    let insert = query(&agent, &b.url, "doc", "INSERT INTO t VALUES (1)", json!([])).unwrap();
    assert_eq!((insert.status, insert.node.as_deref()), (200, Some("node-a")), "{}", insert.body);
    let shown = agent
        .get(format!("{}/v1/actors/doc", b.url))
        .call()
        .unwrap()
        .body_mut()
        .read_json::<Value>()
        .unwrap();
    assert_eq!(shown["node"], "node-a", "{shown}");

    // A Hrana stream opened through b keeps working through b: its baton lives on a.
    let pipeline = |baton: Value, sql: &str| {
        let body = json!({"baton": baton, "requests": [{"type": "execute", "stmt": {"sql": sql}}]});
        let answer = post(&agent, &b.url, "/db/doc/v2/pipeline", &body).unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.node.as_deref(), Some("node-a"));
        answer.body
    };
    let opened = pipeline(Value::Null, "BEGIN");
    let baton = opened["baton"].clone();
    assert!(baton.is_string(), "{opened}");
    let inserted = pipeline(baton, "INSERT INTO t VALUES (2)");
    let committed = pipeline(inserted["baton"].clone(), "COMMIT");
    assert_eq!(committed["results"][0]["type"], "ok", "{committed}");

    // SIGTERM: a drains, puts its actors to sleep and releases its lease; b serves at once.
    a.signal("-TERM");
    let (took, answer) = until_ok(&agent, &b.url, "doc", "SELECT count(*) FROM t", Duration::from_secs(10));
    assert_eq!(answer.node.as_deref(), Some("node-b"));
    assert_eq!(answer.body["rows"], json!([[2]]));
    eprintln!("failover after SIGTERM: {} ms", took.as_millis());
    assert!(took < Duration::from_secs(1), "took {took:?}");
    support::stop(b.into_child());
}

impl Node {
    fn into_child(mut self) -> Child {
        self.child.take().unwrap()
    }
}

/// What the writers were told was committed, per actor.
type Acked = Arc<Mutex<HashMap<String, BTreeSet<i64>>>>;

fn spawn_writers(
    nodes: Vec<String>,
    actors: usize,
    stop: Arc<AtomicBool>,
    acked: Acked,
    attempts: Arc<AtomicU64>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..6i64)
        .map(|w| {
            let (nodes, stop, acked, attempts) =
                (nodes.clone(), stop.clone(), acked.clone(), attempts.clone());
            std::thread::spawn(move || {
                let agent = agent();
                let mut seq = 0i64;
                while !stop.load(Ordering::SeqCst) {
                    seq += 1;
                    let key = w * 1_000_000 + seq;
                    let actor = format!("act-{}", rand::random_range(0..actors));
                    let node = &nodes[rand::random_range(0..nodes.len())];
                    attempts.fetch_add(1, Ordering::Relaxed);
                    let sql = "INSERT INTO t(k, v) VALUES (?, randomblob(300))";
                    if let Some(answer) = query(&agent, node, &actor, sql, json!([key])) {
                        if answer.status == 200 {
                            acked.lock().unwrap().entry(actor).or_default().insert(key);
                        } else {
                            // 503: refused, retry (nothing applied); 504: forwarded to an
                            // owner that died or paused before answering (outcome unknown).
                            assert!([503, 504].contains(&answer.status), "{}", answer.body);
                        }
                    }
                }
            })
        })
        .collect()
}

#[test]
fn three_nodes_keep_every_acknowledged_write_through_a_kill_and_a_pause() {
    let Some(db) = TestDatabase::create("cluster_chaos") else { return };
    let mut nodes: Vec<Node> = ["n0", "n1", "n2"].iter().map(|id| Node::start(&db, id)).collect();
    let agent = agent();
    let actors = 12;
    // Actor i is created through node i % 3, which claims it.
    for i in 0..actors {
        let answer = ok(
            &agent,
            &nodes[i % 3].url,
            &format!("act-{i}"),
            "CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)",
        );
        assert_eq!(answer.node.as_deref(), Some(nodes[i % 3].id.as_str()));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let attempts = Arc::new(AtomicU64::new(0));
    let urls = nodes.iter().map(|n| n.url.clone()).collect();
    let writers = spawn_writers(urls, actors, stop.clone(), acked.clone(), attempts.clone());
    std::thread::sleep(Duration::from_secs(2));

    // kill -9 n0: its actors answer from n1 within the lease + 2 s.
    nodes[0].kill();
    let (took, answer) = until_ok(
        &agent,
        &nodes[1].url,
        "act-0",
        "SELECT count(*) FROM t",
        Duration::from_millis(LEASE_MS + 5_000),
    );
    eprintln!(
        "failover after kill -9: {} ms (lease {LEASE_MS} ms), served by {:?}",
        took.as_millis(),
        answer.node
    );
    assert!(took <= Duration::from_millis(LEASE_MS + 2_000), "took {took:?}");
    std::thread::sleep(Duration::from_secs(1));

    // Pause n1 past its lease: n2 takes its actors; n1 resumes, finds its lease gone and
    // cannot commit with its old claims.
    nodes[1].signal("-STOP");
    let (took, _) = until_ok(
        &agent,
        &nodes[2].url,
        "act-1",
        "SELECT count(*) FROM t",
        Duration::from_millis(LEASE_MS + 5_000),
    );
    eprintln!("takeover from a paused node: {} ms", took.as_millis());
    std::thread::sleep(Duration::from_millis(LEASE_MS));
    nodes[1].signal("-CONT");
    // n1 serves again (registered with a new epoch), forwarding what n2 now owns.
    let (took, answer) = until_ok(
        &agent,
        &nodes[1].url,
        "act-1",
        "SELECT count(*) FROM t",
        Duration::from_secs(LEASE_MS / 100),
    );
    eprintln!("paused node serving again after {} ms, answer from {:?}", took.as_millis(), answer.node);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.join().unwrap();
    }

    // Every acknowledged write is there, and every database is intact.
    let acked = acked.lock().unwrap();
    let total: usize = acked.values().map(BTreeSet::len).sum();
    eprintln!("{total} acknowledged writes of {} attempts", attempts.load(Ordering::Relaxed));
    assert!(total > 100, "too few writes acknowledged: {total}");
    for i in 0..actors {
        let actor = format!("act-{i}");
        let base = &nodes[2 - i % 2].url;
        let rows = ok(&agent, base, &actor, "SELECT k FROM t ORDER BY k").body["rows"].clone();
        let found: BTreeSet<i64> = rows.as_array().unwrap().iter().map(|r| r[0].as_i64().unwrap()).collect();
        let missing: Vec<_> =
            acked.get(&actor).into_iter().flatten().filter(|k| !found.contains(k)).collect();
        assert!(missing.is_empty(), "{actor}: acknowledged writes lost: {missing:?}");
        let check = ok(&agent, base, &actor, "PRAGMA integrity_check");
        assert_eq!(check.body["rows"], json!([["ok"]]), "{actor}");
    }
}

#[test]
fn bench_cluster_reports_every_section() {
    let Some(db) = TestDatabase::create("cluster_bench") else { return };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    // The benchmark creates its own databases on the server of the test database.
    let out = Command::new(ROOST)
        .args(["bench", "cluster", "--wake-sizes-kib", "64", "--wakes", "5", "--actors", "10"])
        .args(["--clients", "2", "--duration-s", "1", "--lease-ms", "500"])
        .args(["--json", json.to_str().unwrap()])
        .env("ROOST_POSTGRES_URL", db.admin_url())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["wake"].as_array().unwrap().len(), 2, "{report}");
    let commits = report["commits"].as_array().unwrap();
    assert_eq!(commits.len(), 5);
    assert!(commits.iter().all(|c| c["commits"].as_u64().unwrap() > 0 && c["errors"] == 0), "{commits:?}");
    assert_eq!(report["forwarding"].as_array().unwrap().len(), 2);
    let failover = report["failover"].as_array().unwrap();
    assert_eq!(failover.len(), 3);
    // kill -9: within the lease + 2 s; SIGTERM: within 1 s.
    assert!(failover[0]["serving_again_ms"].as_f64().unwrap() <= 2_500.0, "{failover:?}");
    assert!(failover[1]["serving_again_ms"].as_f64().unwrap() <= 1_000.0, "{failover:?}");
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends one Hrana message and reads the next text answer.
async fn roundtrip(socket: &mut Socket, message: Value) -> Value {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    socket.send(Message::text(message.to_string())).await.unwrap();
    loop {
        if let Message::Text(text) = socket.next().await.unwrap().unwrap() {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[test]
fn a_hrana_websocket_to_another_node_is_tunnelled_to_the_owner() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let Some(db) = TestDatabase::create("cluster_ws") else { return };
    let a = Node::start(&db, "ws-a");
    let b = Node::start(&db, "ws-b");
    let agent = agent();
    ok(&agent, &a.url, "sock", "CREATE TABLE t(x)");
    ok(&agent, &a.url, "sock", "INSERT INTO t VALUES (41)");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        // Through b, which does not own the actor: the socket reaches a.
        let url = format!("{}/db/sock", b.url.replace("http://", "ws://"));
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("sec-websocket-protocol", "hrana3".parse().unwrap());
        let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(response.headers()["sec-websocket-protocol"], "hrana3");
        assert_eq!(response.headers()["x-roost-node"], "ws-a", "the owner answered the upgrade");
        assert_eq!(roundtrip(&mut socket, json!({"type": "hello", "jwt": null})).await["type"], "hello_ok");
        let opened = roundtrip(&mut socket, json!({"type": "request", "request_id": 1, "request": {"type": "open_stream", "stream_id": 1}})).await;
        assert_eq!(opened["type"], "response_ok", "{opened}");
        let stmt = json!({"sql": "UPDATE t SET x = x + 1 RETURNING x", "want_rows": true});
        let answer = roundtrip(&mut socket, json!({"type": "request", "request_id": 2, "request": {"type": "execute", "stream_id": 1, "stmt": stmt}})).await;
        assert_eq!(answer["response"]["result"]["rows"][0][0]["value"], "42", "{answer}");
    });
    let through_a = ok(&agent, &a.url, "sock", "SELECT x FROM t");
    assert_eq!(through_a.body["rows"], json!([[42]]));
}

#[test]
fn two_nodes_on_two_shards_serve_every_actor_and_an_added_shard_takes_its_share() {
    let (Some(a), Some(b), Some(c)) =
        (TestDatabase::create("shard_a"), TestDatabase::create("shard_b"), TestDatabase::create("shard_c"))
    else {
        return;
    };
    let agent = agent();
    let nodes = [Node::start_on(&[&a, &b], "shard-1"), Node::start_on(&[&a, &b], "shard-2")];
    let actors: Vec<String> = (0..24).map(|i| format!("sharded-{i}")).collect();
    for (i, actor) in actors.iter().enumerate() {
        let node = &nodes[i % 2];
        ok(&agent, &node.url, actor, "CREATE TABLE t(v INTEGER)");
        ok(&agent, &node.url, actor, &format!("INSERT INTO t VALUES ({i})"));
    }
    // A node given another set of shards is refused while these live.
    let refused = serve_command(&[&a, &b, &c], "shard-3", free_port()).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("another set of PostgreSQL shards"), "{stderr}");
    // Every actor answers through either node, from whichever shard holds it.
    for (i, actor) in actors.iter().enumerate() {
        let answer = ok(&agent, &nodes[(i + 1) % 2].url, actor, "SELECT v FROM t");
        assert_eq!(answer.body["rows"], json!([[i]]));
    }
    let [one, two] = nodes;
    support::stop(one.into_child());
    support::stop(two.into_child());

    // A third shard: the nodes restart with it and move the actors it now wins. Its walk over
    // the shards ends first (a listing may miss an actor until then); then every actor answers
    // (a claim finishes any move the walk left), and the moves counted match the actors the
    // added shard holds.
    let grown = Node::start_on(&[&a, &b, &c], "shard-1");
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&agent, &grown.url, "roost_cluster_rebalances_total") == 0.0 {
        assert!(Instant::now() < deadline, "the walk over the shards did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
    for (i, actor) in actors.iter().enumerate() {
        let answer = ok(&agent, &grown.url, actor, "SELECT v FROM t");
        assert_eq!(answer.body["rows"], json!([[i]]));
    }
    let moved = metric(&agent, &grown.url, "roost_cluster_actors_moved_total") as u64;
    assert!(moved > 0, "no actor moved to the added shard");
    assert_eq!(count_on(&c, "sharded-"), moved, "every actor on the added shard was counted as moved");
    eprintln!("{moved} of {} actors moved to the added shard", actors.len());
    let listing = agent
        .get(format!("{}/v1/actors?limit=100", grown.url))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let listing: Value = serde_json::from_str(&listing).unwrap();
    for actor in &actors {
        assert!(listing.to_string().contains(&format!("\"{actor}\"")), "{actor} not listed: {listing}");
    }
    support::stop(grown.into_child());
}

/// Actors with a database on the shard `db` whose id starts with `prefix`.
fn count_on(db: &TestDatabase, prefix: &str) -> u64 {
    use roost::kv::KvStore;
    use roost::vfs::layout;
    let store = roost::kv::PostgresStore::open(roost::kv::PostgresConfig::new(db.url.clone())).unwrap();
    let start = [b"a", prefix.as_bytes()].concat();
    let end = [b"a", prefix.as_bytes(), &[0xff]].concat();
    let pairs = store.scan(&start, &end, usize::MAX).unwrap();
    let is_main_meta = |key: &[u8]| {
        layout::actor_of_key(key).is_some_and(|id| key == layout::meta_key(&id, layout::FileTag::Main))
    };
    pairs.iter().filter(|(key, _)| is_main_meta(key)).count() as u64
}
