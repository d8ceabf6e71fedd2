//! Hrana over WebSocket (raw protocol, through tokio-tungstenite; JSON and `hrana3-protobuf`)
//! and sqld's HTTP API v1 (`/v1/execute`, `/v1/batch`) against a real server on loopback.

#[path = "support/hrana_pb.rs"]
mod pb;
mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use roost::server::{Auth, ServerConfig, Token};
use roost::{HostConfig, StorageConfig};
use serde_json::{json, Value};
use support::{client_batch, post, ran_and_failed, TestServer};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const TOKEN: &str = "hrana-ws-test-token-0123456789";

fn ws_url(server: &TestServer, path: &str) -> String {
    format!("{}{path}", server.url.replacen("http://", "ws://", 1))
}

/// Connects with `protocol` (none when empty); the protocol the server chose.
async fn connect(server: &TestServer, path: &str, protocol: &str) -> (Socket, Option<String>) {
    let mut request = ws_url(server, path).into_client_request().unwrap();
    if !protocol.is_empty() {
        request.headers_mut().insert("sec-websocket-protocol", protocol.parse().unwrap());
    }
    let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    let chosen = response.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap().to_string());
    (socket, chosen)
}

async fn send(socket: &mut Socket, message: Value) {
    socket.send(Message::text(message.to_string())).await.unwrap();
}

/// The next text message, as JSON; panics on a close.
async fn recv(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap();
        match message.expect("socket open").unwrap() {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Waits for the server's close frame: its code and reason.
async fn closed(socket: &mut Socket) -> (CloseCode, String) {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap();
        match message {
            Some(Ok(Message::Close(Some(frame)))) => return (frame.code, frame.reason.to_string()),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => panic!("closed without a close frame"),
            Some(Ok(_)) => continue,
        }
    }
}

async fn request(socket: &mut Socket, id: i32, request: Value) -> Value {
    send(socket, json!({"type": "request", "request_id": id, "request": request})).await;
    let answer = recv(socket).await;
    assert_eq!(answer["request_id"], id, "{answer}");
    answer
}

/// A request that must succeed: its `response`.
async fn ok(socket: &mut Socket, id: i32, body: Value) -> Value {
    let answer = request(socket, id, body).await;
    assert_eq!(answer["type"], "response_ok", "{answer}");
    answer["response"].clone()
}

async fn hello(socket: &mut Socket, jwt: Option<&str>) -> Value {
    send(socket, json!({"type": "hello", "jwt": jwt})).await;
    recv(socket).await
}

fn execute(stream: i32, sql: &str) -> Value {
    json!({"type": "execute", "stream_id": stream, "stmt": {"sql": sql}})
}

fn int(i: i64) -> Value {
    json!({"type": "integer", "value": i.to_string()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hrana3_session_serves_every_request() {
    let server = TestServer::default_config();
    let (mut ws, chosen) = connect(&server, "/db/ws-a", "hrana3, hrana2, hrana1").await;
    assert_eq!(chosen.as_deref(), Some("hrana3"));
    assert_eq!(hello(&mut ws, None).await, json!({"type": "hello_ok"}));
    assert_eq!(
        ok(&mut ws, 1, json!({"type": "open_stream", "stream_id": 7})).await,
        json!({"type": "open_stream"})
    );
    ok(&mut ws, 2, execute(7, "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL)")).await;
    let insert = ok(
        &mut ws,
        3,
        json!({"type": "execute", "stream_id": 7, "stmt": {"sql": "INSERT INTO t(name) VALUES (?)",
            "args": [{"type": "text", "value": "a"}]}}),
    )
    .await;
    assert_eq!(insert["type"], "execute");
    assert_eq!(
        (insert["result"]["affected_row_count"].clone(), insert["result"]["last_insert_rowid"].clone()),
        (json!(1), json!("1"))
    );
    // A statement error is a response error; the stream goes on.
    let failed = request(&mut ws, 4, execute(7, "INSERT INTO t(name) VALUES (NULL)")).await;
    assert_eq!(failed["type"], "response_error");
    assert_eq!(failed["error"]["code"], "SQLITE_CONSTRAINT");
    // Stored SQL belongs to the session.
    ok(&mut ws, 5, json!({"type": "store_sql", "sql_id": 1, "sql": "SELECT count(*) AS n FROM t"})).await;
    let counted = ok(&mut ws, 6, json!({"type": "execute", "stream_id": 7, "stmt": {"sql_id": 1}})).await;
    assert_eq!(counted["result"]["rows"], json!([[int(1)]]));
    assert_eq!(counted["result"]["cols"], json!([{"name": "n", "decltype": null}]));
    let batch = ok(
        &mut ws,
        8,
        json!({"type": "batch", "stream_id": 7, "batch": {"steps": [
            {"stmt": {"sql": "INSERT INTO t(name) VALUES ('b')"}},
            {"stmt": {"sql": "INSERT INTO t(name) VALUES (NULL)"}},
            {"condition": {"type": "error", "step": 1}, "stmt": {"sql_id": 1}},
            {"condition": {"type": "ok", "step": 1}, "stmt": {"sql": "SELECT 1"}},
        ]}}),
    )
    .await;
    let result = &batch["result"];
    assert_eq!(result["step_results"][2]["rows"], json!([[int(2)]]));
    assert_eq!(result["step_results"][3], Value::Null);
    assert_eq!(result["step_errors"][1]["code"], "SQLITE_CONSTRAINT");
    ok(
        &mut ws,
        9,
        json!({"type": "sequence", "stream_id": 7, "sql": "BEGIN; INSERT INTO t(name) VALUES ('c');"}),
    )
    .await;
    let auto = ok(&mut ws, 10, json!({"type": "get_autocommit", "stream_id": 7})).await;
    assert_eq!(auto, json!({"type": "get_autocommit", "is_autocommit": false}));
    ok(&mut ws, 11, execute(7, "COMMIT")).await;
    let described = ok(
        &mut ws,
        12,
        json!({"type": "describe", "stream_id": 7, "sql": "SELECT name FROM t WHERE id = :id"}),
    )
    .await;
    assert_eq!(described["result"]["params"], json!([{"name": ":id"}]));
    assert_eq!(described["result"]["is_readonly"], true);
    // A cursor, fetched two entries at a time.
    ok(
        &mut ws,
        13,
        json!({"type": "open_cursor", "stream_id": 7, "cursor_id": 3, "batch": {"steps": [
            {"stmt": {"sql": "SELECT name FROM t ORDER BY id"}}]}}),
    )
    .await;
    let mut entries = Vec::new();
    for id in 14.. {
        let fetched = ok(&mut ws, id, json!({"type": "fetch_cursor", "cursor_id": 3, "max_count": 2})).await;
        entries.extend(fetched["entries"].as_array().unwrap().iter().cloned());
        if fetched["done"] == true {
            break;
        }
    }
    let kinds: Vec<&str> = entries.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["step_begin", "row", "row", "row", "step_end"]);
    assert_eq!(entries[3]["row"], json!([{"type": "text", "value": "c"}]));
    ok(&mut ws, 30, json!({"type": "close_cursor", "cursor_id": 3})).await;
    ok(&mut ws, 31, json!({"type": "close_sql", "sql_id": 1})).await;
    assert_eq!(
        ok(&mut ws, 32, json!({"type": "close_stream", "stream_id": 7})).await,
        json!({"type": "close_stream"})
    );
    // A request on a closed stream breaks the protocol.
    send(&mut ws, json!({"type": "request", "request_id": 33, "request": execute(7, "SELECT 1")})).await;
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("stream 7 does not exist"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_run_side_by_side_and_transactions_roll_back_on_close() {
    let server = TestServer::default_config();
    let (mut ws, _) = connect(&server, "/db/ws-tx/", "hrana2").await;
    hello(&mut ws, None).await;
    ok(&mut ws, 1, json!({"type": "open_stream", "stream_id": 1})).await;
    ok(&mut ws, 2, execute(1, "CREATE TABLE t(x)")).await;
    ok(&mut ws, 3, execute(1, "BEGIN")).await;
    ok(&mut ws, 4, execute(1, "INSERT INTO t VALUES (1)")).await;
    // A second stream waits for the actor while the first holds its transaction, and the
    // first goes on meanwhile: its COMMIT is answered before the second stream's SELECT.
    ok(&mut ws, 5, json!({"type": "open_stream", "stream_id": 2})).await;
    send(
        &mut ws,
        json!({"type": "request", "request_id": 6, "request": execute(2, "SELECT count(*) FROM t")}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(&mut ws, json!({"type": "request", "request_id": 7, "request": execute(1, "COMMIT")})).await;
    let (first, second) = (recv(&mut ws).await, recv(&mut ws).await);
    assert_eq!((first["request_id"].clone(), second["request_id"].clone()), (json!(7), json!(6)));
    assert_eq!(second["response"]["result"]["rows"], json!([[int(1)]]), "the commit is visible");
    ok(&mut ws, 8, execute(1, "BEGIN")).await;
    ok(&mut ws, 9, execute(1, "INSERT INTO t VALUES (2)")).await;
    drop(ws);
    // The socket went away inside the transaction: it was rolled back.
    let query = json!({"sql": "SELECT count(*) FROM t"}).to_string();
    let mut rows = Value::Null;
    for _ in 0..50 {
        rows = post(&format!("{}/v1/actors/ws-tx/query", server.url), None, &query).body["rows"].clone();
        if rows == json!([[1]]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows, json!([[1]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_close_the_socket() {
    let server = TestServer::default_config();
    // A request before hello.
    let (mut ws, chosen) = connect(&server, "/db/ws-p", "").await;
    assert_eq!(chosen, None, "no subprotocol asked: Hrana 1");
    send(
        &mut ws,
        json!({"type": "request", "request_id": 1, "request": {"type": "open_stream", "stream_id": 1}}),
    )
    .await;
    assert_eq!(closed(&mut ws).await.0, CloseCode::Policy);
    // Hrana 1 has no `sequence`.
    let (mut ws, chosen) = connect(&server, "/db/ws-p", "hrana1").await;
    assert_eq!(chosen.as_deref(), Some("hrana1"));
    hello(&mut ws, None).await;
    ok(&mut ws, 1, json!({"type": "open_stream", "stream_id": 1})).await;
    send(&mut ws, json!({"type": "request", "request_id": 2, "request": {"type": "sequence", "stream_id": 1, "sql": "SELECT 1"}})).await;
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("hrana2"), "{reason}");
    // Not JSON; binary messages.
    let (mut ws, _) = connect(&server, "/db/ws-p", "hrana3").await;
    ws.send(Message::text("{nope")).await.unwrap();
    assert_eq!(closed(&mut ws).await.0, CloseCode::Invalid);
    let (mut ws, _) = connect(&server, "/db/ws-p", "hrana3").await;
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(closed(&mut ws).await.0, CloseCode::Unsupported);
    // An unknown subprotocol only: refused before the upgrade; a bad id too.
    let mut request = ws_url(&server, "/db/ws-p").into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "hrana4".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_err());
    assert!(tokio_tungstenite::connect_async(ws_url(&server, "/db/.bad")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_checks_the_token_and_namespace_routes() {
    let auth =
        Auth { tokens: vec![Token { secret: TOKEN.into(), prefix: Some("team-".into()) }], admin: None };
    let server = TestServer::with_auth(auth);
    let (mut ws, _) = connect(&server, "/db/team-a", "hrana3").await;
    let refused = hello(&mut ws, Some("wrong-token-wrong-token")).await;
    assert_eq!(refused["type"], "hello_error", "{refused}");
    assert!(refused["error"]["message"].is_string());
    let (mut ws, _) = connect(&server, "/db/other", "hrana3").await;
    assert_eq!(hello(&mut ws, Some(TOKEN)).await["type"], "hello_error", "token scoped to team-");
    let (mut ws, _) = connect(&server, "/db/team-a", "hrana3").await;
    assert_eq!(hello(&mut ws, Some(TOKEN)).await, json!({"type": "hello_ok"}));
    ok(&mut ws, 1, json!({"type": "open_stream", "stream_id": 1})).await;
    ok(&mut ws, 2, execute(1, "CREATE TABLE t(x)")).await;
    // `GET /` with x-namespace reaches the same actor.
    let mut request = ws_url(&server, "/").into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "hrana2".parse().unwrap());
    request.headers_mut().insert("x-namespace", "team-a".parse().unwrap());
    request.headers_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (mut ns, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(hello(&mut ns, None).await, json!({"type": "hello_ok"}), "the upgrade's token serves");
    ok(&mut ns, 1, json!({"type": "open_stream", "stream_id": 1})).await;
    ok(&mut ns, 2, execute(1, "SELECT * FROM t")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_close_and_sockets_are_bounded() {
    let config = ServerConfig { hrana_ws_idle_ms: 300, hrana_ws_sockets_max: 1, ..ServerConfig::default() };
    let server = TestServer::start(config, HostConfig::default(), StorageConfig::default());
    let (mut ws, _) = connect(&server, "/db/ws-i", "hrana3").await;
    hello(&mut ws, None).await;
    // One socket at most: the second upgrade is refused (503).
    match tokio_tungstenite::connect_async(ws_url(&server, "/db/ws-i")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected a 503, got {other:?}"),
    }
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, CloseCode::Normal);
    assert!(reason.contains("idle"), "{reason}");
    drop(ws);
    // Its permit is back.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut ws, _) = connect(&server, "/db/ws-i", "hrana3").await;
    assert_eq!(hello(&mut ws, None).await, json!({"type": "hello_ok"}));
}

/// The request pool's bytes in use, from `/debug/memory`.
async fn pool_used_bytes(server: &TestServer, admin: &str) -> u64 {
    let url = format!("{}/debug/memory", server.url);
    let admin = admin.to_string();
    let memory = tokio::task::spawn_blocking(move || support::get(&url, Some(&admin))).await.unwrap();
    assert_eq!(memory.status, 200, "{}", memory.body);
    memory.body["request_buffers"]["bytes_used"].as_u64().unwrap()
}

/// The bytes a client sends are charged to the request pool as they arrive, not once a whole
/// message is in: a message the pool cannot hold closes its socket (1009 when it could never
/// fit, 1013 when the pool is busy) instead of being buffered outside the budget, and the frame
/// buffer a socket grew stays charged until the socket closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_bytes_are_charged_as_they_arrive() {
    const ADMIN: &str = "hrana-ws-admin-token-0123456789";
    const POOL_BYTES: u64 = 256 << 10;
    let auth = Auth { tokens: vec![Token { secret: TOKEN.into(), prefix: None }], admin: Some(ADMIN.into()) };
    // Messages may be larger than the pool: the limit alone would let them in.
    let config = ServerConfig { auth, body_bytes_max: 1 << 20, ..ServerConfig::default() };
    let host = HostConfig { request_buffers_bytes_max: POOL_BYTES, ..HostConfig::default() };
    let server = TestServer::start(config, host, StorageConfig::default());
    let length_of = |id: i32, bytes: usize| {
        let text = "x".repeat(bytes);
        json!({"type": "request", "request_id": id, "request": {"type": "execute", "stream_id": 1,
            "stmt": {"sql": "SELECT length(?)", "args": [{"type": "text", "value": text}], "want_rows": true}}})
    };

    // A message over the message limit: refused from its frame header, 1009.
    let (mut ws, _) = connect(&server, "/db/ws-meter", "hrana3").await;
    let _ = ws.send(Message::text(length_of(2, 1100 << 10).to_string())).await;
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, CloseCode::Size, "{reason}");
    assert!(reason.contains("too long"), "{reason}");
    drop(ws);
    // Within the limit but more than the whole pool: refused as it arrives, 1009 as well. (The
    // server may close before the whole message is written.)
    let (mut ws, _) = connect(&server, "/db/ws-meter", "hrana3").await;
    let _ = ws.send(Message::text(length_of(2, 300 << 10).to_string())).await;
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, CloseCode::Size, "{reason}");
    assert!(reason.contains("request memory"), "{reason}");
    drop(ws);

    // A 100 KiB message is answered, and the socket keeps its frame buffer charged.
    let (mut first, _) = connect(&server, "/db/ws-meter", "hrana3").await;
    hello(&mut first, Some(TOKEN)).await;
    ok(&mut first, 1, json!({"type": "open_stream", "stream_id": 1})).await;
    send(&mut first, length_of(2, 100 << 10)).await;
    let answer = recv(&mut first).await;
    assert_eq!(answer["response"]["result"]["rows"][0][0]["value"], (100 << 10).to_string(), "{answer}");
    let held = pool_used_bytes(&server, ADMIN).await;
    assert!(held >= 100 << 10, "an open socket holds the frame buffer it grew: {held}");

    // Another socket's 150 KiB message does not fit beside it: 1013, try again later.
    let (mut second, _) = connect(&server, "/db/ws-meter", "hrana3").await;
    hello(&mut second, Some(TOKEN)).await;
    ok(&mut second, 1, json!({"type": "open_stream", "stream_id": 1})).await;
    let _ = second.send(Message::text(length_of(2, 150 << 10).to_string())).await;
    let (code, reason) = closed(&mut second).await;
    assert_eq!(code, CloseCode::Again, "{reason}");
    assert!(reason.starts_with("overloaded"), "{reason}");
    drop(second);

    // Once the first socket is gone the pool is empty again, and the message goes through (its
    // bytes are held twice while it is parsed: as read, and as the parsed request).
    first.close(None).await.unwrap();
    drop(first);
    let mut used = u64::MAX;
    for _ in 0..50 {
        used = pool_used_bytes(&server, ADMIN).await;
        if used == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(used, 0, "closed sockets give their bytes back");
    let (mut third, _) = connect(&server, "/db/ws-meter", "hrana3").await;
    hello(&mut third, Some(TOKEN)).await;
    ok(&mut third, 1, json!({"type": "open_stream", "stream_id": 1})).await;
    send(&mut third, length_of(2, 110 << 10)).await;
    let answer = recv(&mut third).await;
    assert_eq!(answer["type"], "response_ok", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_pings_close_the_socket() {
    let config = ServerConfig { hrana_ws_ping_ms: 200, ..ServerConfig::default() };
    let server = TestServer::start(config, HostConfig::default(), StorageConfig::default());
    let (mut ws, _) = connect(&server, "/db/ws-ping", "hrana3").await;
    hello(&mut ws, None).await;
    // A client that reads answers pongs (tungstenite does while it is polled): kept open.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ping = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(ping, Message::Ping(_)), "{ping:?}");
    ws.flush().await.unwrap();
    // Not polled any more: the pong never goes out and the server closes the socket.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("ping"), "{reason}");
}

/// Over WebSocket (Hrana 3), the batch `@libsql/client` sends skips what follows a `ROLLBACK` or
/// an `OR ROLLBACK` conflict: nothing runs in autocommit, nothing is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_steps_after_their_transaction_ended() {
    let server = TestServer::default_config();
    let (mut ws, _) = connect(&server, "/db/ws-ended", "hrana3").await;
    assert_eq!(hello(&mut ws, None).await, json!({"type": "hello_ok"}));
    ok(&mut ws, 1, json!({"type": "open_stream", "stream_id": 1})).await;
    ok(&mut ws, 2, execute(1, "CREATE TABLE t(x INTEGER PRIMARY KEY)")).await;
    let (first, second) = ("INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)");
    let cases = [
        ("ROLLBACK", [false, false, false, false, false, true]),
        ("INSERT OR ROLLBACK INTO t VALUES (1)", [false, false, true, false, false, true]),
    ];
    for (id, (ender, failed)) in (3..).step_by(2).zip(cases) {
        let batch = client_batch(&[first, ender, second], true);
        let answer = ok(&mut ws, id, json!({"type": "batch", "stream_id": 1, "batch": batch})).await;
        let (ran, errors) = ran_and_failed(&answer["result"]);
        let ended = ender == "ROLLBACK";
        assert_eq!(ran, [true, true, ended, false, false, false], "{ender}: {answer}");
        assert_eq!(errors, failed, "{ender}: {answer}");
        let count = ok(&mut ws, id + 1, execute(1, "SELECT count(*) FROM t")).await;
        assert_eq!(count["result"]["rows"], json!([[int(0)]]), "{ender}");
    }
}

/// sqld's `/v1/batch` (Hrana 1, no `is_autocommit`): an `OR ROLLBACK` conflict fails its step
/// and the client's `ok` conditions skip the rest; nothing is committed.
#[test]
fn sqld_v1_batch_after_or_rollback() {
    let server = TestServer::default_config();
    let url = |path: &str| format!("{}{path}", server.url);
    let stmt = |sql: &str| json!({"stmt": {"sql": sql}}).to_string();
    assert_eq!(
        post(&url("/db/v1-ended/v1/execute"), None, &stmt("CREATE TABLE t(x INTEGER PRIMARY KEY)")).status,
        200
    );
    let stmts =
        ["INSERT INTO t VALUES (1)", "INSERT OR ROLLBACK INTO t VALUES (1)", "INSERT INTO t VALUES (2)"];
    let body = json!({"batch": client_batch(&stmts, false)}).to_string();
    let batch = post(&url("/db/v1-ended/v1/batch"), None, &body);
    assert_eq!(batch.status, 200, "{}", batch.body);
    let (ran, failed) = ran_and_failed(&batch.body["result"]);
    assert_eq!(ran, [true, true, false, false, false, false], "{}", batch.body);
    assert_eq!(failed, [false, false, true, false, false, true], "{}", batch.body);
    let count = post(&url("/db/v1-ended/v1/execute"), None, &stmt("SELECT count(*) FROM t"));
    assert_eq!(count.body["result"]["rows"], json!([[int(0)]]));
}

#[test]
fn sqld_v1_execute_and_batch() {
    let server = TestServer::default_config();
    let url = |path: &str| format!("{}{path}", server.url);
    let created = post(
        &url("/db/v1-a/v1/execute"),
        None,
        &json!({"stmt": {"sql": "CREATE TABLE t(x TEXT NOT NULL)"}}).to_string(),
    );
    assert_eq!(created.status, 200, "{}", created.body);
    assert!(created.body["result"]["cols"].is_array());
    let batch = post(
        &url("/db/v1-a/v1/batch"),
        None,
        &json!({"batch": {"steps": [
            {"stmt": {"sql": "INSERT INTO t VALUES (?)", "args": [{"type": "text", "value": "a"}]}},
            {"stmt": {"sql": "INSERT INTO t VALUES (NULL)"}},
            {"condition": {"type": "error", "step": 1}, "stmt": {"sql": "SELECT count(*) FROM t"}},
        ]}})
        .to_string(),
    );
    assert_eq!(batch.status, 200, "{}", batch.body);
    assert_eq!(batch.body["result"]["step_errors"][1]["code"], "SQLITE_CONSTRAINT");
    assert_eq!(batch.body["result"]["step_results"][2]["rows"], json!([[int(1)]]));
    // x-namespace routes `/v1/execute`.
    let answer = support::agent()
        .post(&url("/v1/execute"))
        .header("x-namespace", "v1-a")
        .header("content-type", "application/json")
        .send(json!({"stmt": {"sql": "SELECT x FROM t"}}).to_string())
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["result"]["rows"], json!([[{"type": "text", "value": "a"}]]));
    // A failing statement: 400 with the Hrana error at the top level.
    let failed = post(
        &url("/db/v1-a/v1/execute"),
        None,
        &json!({"stmt": {"sql": "SELECT * FROM missing"}}).to_string(),
    );
    assert_eq!((failed.status, failed.body["code"].as_str()), (400, Some("SQLITE_ERROR")), "{}", failed.body);
    assert!(failed.body["message"].as_str().unwrap().contains("no such table"));
    // A transaction left open by a batch is rolled back when the request ends.
    post(
        &url("/db/v1-a/v1/batch"),
        None,
        &json!({"batch": {"steps": [{"stmt": {"sql": "BEGIN"}}, {"stmt": {"sql": "DELETE FROM t"}}]}})
            .to_string(),
    );
    let count = post(
        &url("/db/v1-a/v1/execute"),
        None,
        &json!({"stmt": {"sql": "SELECT count(*) FROM t"}}).to_string(),
    );
    assert_eq!(count.body["result"]["rows"], json!([[int(1)]]));
    assert_eq!(support::get(&url("/db/v1-a/v1"), None).status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_closes_sockets_going_away() {
    let server = TestServer::default_config();
    let (mut ws, _) = connect(&server, "/db/ws-drain", "hrana3").await;
    hello(&mut ws, None).await;
    ok(&mut ws, 1, json!({"type": "open_stream", "stream_id": 1})).await;
    ok(&mut ws, 2, execute(1, "BEGIN")).await;
    // Shutting down (the drop waits for the server to finish) closes the socket with 1001,
    // and the open transaction does not hold the drain.
    let stopping = std::thread::spawn(move || drop(server));
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, CloseCode::Away);
    assert!(reason.contains("shutting down"), "{reason}");
    tokio::task::spawn_blocking(move || stopping.join().unwrap()).await.unwrap();
}

// ---- hrana3-protobuf ---------------------------------------------------------------------

async fn send_pb(socket: &mut Socket, message: pb::Client) {
    let bytes = pb::ClientMsg { msg: Some(message) }.encode_to_vec();
    socket.send(Message::binary(bytes)).await.unwrap();
}

/// The next binary message, decoded; panics on a close or a text message.
async fn recv_pb(socket: &mut Socket) -> pb::Server {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap();
        match message.expect("socket open").unwrap() {
            Message::Binary(bytes) => {
                return pb::ServerMsg::decode(&bytes[..]).unwrap().msg.expect("a message type")
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Sends request `id`; the answer, which must be for it.
async fn request_pb(socket: &mut Socket, id: i32, request: pb::WsReq) -> pb::Server {
    send_pb(socket, pb::Client::Request(pb::RequestMsg { request_id: id, request: Some(request) })).await;
    let answer = recv_pb(socket).await;
    match &answer {
        pb::Server::ResponseOk(ok) => assert_eq!(ok.request_id, id),
        pb::Server::ResponseError(error) => assert_eq!(error.request_id, id),
        other => panic!("not an answer: {other:?}"),
    }
    answer
}

/// A request that must succeed: its response.
async fn ok_pb(socket: &mut Socket, id: i32, request: pb::WsReq) -> pb::WsResp {
    match request_pb(socket, id, request).await {
        pb::Server::ResponseOk(ok) => ok.response.expect("a response type"),
        other => panic!("request {id} failed: {other:?}"),
    }
}

async fn result_pb(socket: &mut Socket, id: i32, stream_id: i32, stmt: pb::Stmt) -> pb::StmtResult {
    let request = pb::WsReq::Execute(pb::WsExecute { stream_id, stmt: Some(stmt) });
    match ok_pb(socket, id, request).await {
        pb::WsResp::Execute(pb::ExecuteResp { result: Some(result) }) => result,
        other => panic!("request {id}: {other:?}"),
    }
}

fn pb_error_code(answer: &pb::Server) -> &str {
    match answer {
        pb::Server::ResponseError(error) => &error.error.as_ref().expect("an error").code,
        other => panic!("not an error: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hrana3_protobuf_session() {
    let auth =
        Auth { tokens: vec![Token { secret: TOKEN.into(), prefix: Some("team-".into()) }], admin: None };
    let server = TestServer::with_auth(auth);
    // sqld prefers protobuf when it is offered.
    let (mut ws, chosen) = connect(&server, "/db/team-pb", "hrana3, hrana3-protobuf, hrana2").await;
    assert_eq!(chosen.as_deref(), Some("hrana3-protobuf"));
    send_pb(&mut ws, pb::Client::Hello(pb::HelloMsg { jwt: Some("wrong-token-wrong-token".into()) })).await;
    let pb::Server::HelloError(refused) = recv_pb(&mut ws).await else { panic!("hello was not refused") };
    assert_eq!(refused.error.unwrap().code, "AUTH_JWT_INVALID");

    let (mut ws, _) = connect(&server, "/db/team-pb", "hrana3-protobuf").await;
    send_pb(&mut ws, pb::Client::Hello(pb::HelloMsg { jwt: Some(TOKEN.into()) })).await;
    assert_eq!(recv_pb(&mut ws).await, pb::Server::HelloOk(pb::Empty {}));
    let open = pb::WsReq::OpenStream(pb::StreamId { stream_id: 3 });
    assert_eq!(ok_pb(&mut ws, 1, open).await, pb::WsResp::OpenStream(pb::Empty {}));
    result_pb(&mut ws, 2, 3, pb::stmt("CREATE TABLE t(a, b)", vec![])).await;
    let values = vec![pb::int(i64::MIN), pb::blob(&[9, 0]), pb::null(), pb::float(0.25), pb::text("x")];
    let insert = pb::stmt("INSERT INTO t VALUES (?, ?), (?, ?), (?, NULL)", values.clone());
    let inserted = result_pb(&mut ws, 3, 3, insert).await;
    assert_eq!((inserted.affected_row_count, inserted.last_insert_rowid), (3, Some(3)));
    let selected = result_pb(&mut ws, 4, 3, pb::stmt("SELECT a, b FROM t ORDER BY rowid", vec![])).await;
    let flat: Vec<_> = selected.rows.iter().flat_map(|r| r.values.clone()).collect();
    assert_eq!(flat, [values, vec![pb::null()]].concat());
    let failed = request_pb(
        &mut ws,
        5,
        pb::WsReq::Execute(pb::WsExecute { stream_id: 3, stmt: Some(pb::stmt("SELEC", vec![])) }),
    )
    .await;
    assert_eq!(pb_error_code(&failed), "SQLITE_ERROR");

    // Stored SQL, named arguments, describe, autocommit, a batch.
    let store = pb::WsReq::StoreSql(pb::StoreSqlReq {
        sql_id: 9,
        sql: "SELECT count(*) FROM t WHERE a IS :a".into(),
    });
    assert_eq!(ok_pb(&mut ws, 6, store).await, pb::WsResp::StoreSql(pb::Empty {}));
    let named = pb::Stmt {
        sql_id: Some(9),
        named_args: vec![pb::NamedArg { name: ":a".into(), value: Some(pb::null()) }],
        ..pb::Stmt::default()
    };
    assert_eq!(result_pb(&mut ws, 7, 3, named).await.rows[0].values, [pb::int(1)]);
    let describe = pb::WsReq::Describe(pb::WsSql { stream_id: 3, sql: None, sql_id: Some(9) });
    let pb::WsResp::Describe(pb::DescribeResp { result: Some(description) }) =
        ok_pb(&mut ws, 8, describe).await
    else {
        panic!("no description")
    };
    assert_eq!(description.params[0].name.as_deref(), Some(":a"));
    assert!(description.is_readonly);
    result_pb(&mut ws, 9, 3, pb::stmt("BEGIN", vec![])).await;
    let autocommit = pb::WsReq::GetAutocommit(pb::StreamId { stream_id: 3 });
    assert_eq!(
        ok_pb(&mut ws, 10, autocommit).await,
        pb::WsResp::GetAutocommit(pb::GetAutocommitResp { is_autocommit: false })
    );
    let steps = vec![
        pb::step(None, "INSERT INTO t VALUES (1, 1)"),
        pb::step(Some(pb::cond(pb::C::Ok(0))), "COMMIT"),
        pb::step(Some(pb::cond(pb::C::Not(Box::new(pb::cond(pb::C::Ok(1)))))), "ROLLBACK"),
    ];
    let batch = pb::WsReq::Batch(pb::WsBatch { stream_id: 3, batch: Some(pb::Batch { steps }) });
    let pb::WsResp::Batch(pb::BatchResp { result: Some(result) }) = ok_pb(&mut ws, 11, batch).await else {
        panic!("no batch result")
    };
    assert_eq!(result.step_results.keys().copied().collect::<Vec<_>>(), [0, 1]);
    assert!(result.step_errors.is_empty());

    // A cursor, fetched two entries at a time.
    let steps = vec![pb::step(None, "SELECT a FROM t WHERE a IS NOT NULL ORDER BY a")];
    let cursor = pb::WsReq::OpenCursor(pb::WsOpenCursor {
        stream_id: 3,
        cursor_id: 4,
        batch: Some(pb::Batch { steps }),
    });
    assert_eq!(ok_pb(&mut ws, 12, cursor).await, pb::WsResp::OpenCursor(pb::Empty {}));
    let mut entries = Vec::new();
    for id in 13.. {
        let fetch = pb::WsReq::FetchCursor(pb::WsFetchCursor { cursor_id: 4, max_count: 2 });
        let pb::WsResp::FetchCursor(fetched) = ok_pb(&mut ws, id, fetch).await else { panic!("no entries") };
        assert!(fetched.entries.len() <= 2);
        entries.extend(fetched.entries.into_iter().map(|e| e.entry.unwrap()));
        if fetched.done {
            break;
        }
    }
    let rows: Vec<_> = entries
        .iter()
        .filter_map(|e| match e {
            pb::Entry::Row(row) => Some(row.values.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(rows, [vec![pb::int(i64::MIN)], vec![pb::int(1)], vec![pb::text("x")]]);
    assert!(
        matches!(entries.first(), Some(pb::Entry::StepBegin(_)))
            && matches!(entries.last(), Some(pb::Entry::StepEnd(_)))
    );
    let close = pb::WsReq::CloseCursor(pb::CursorId { cursor_id: 4 });
    assert_eq!(ok_pb(&mut ws, 100, close).await, pb::WsResp::CloseCursor(pb::Empty {}));
    let close = pb::WsReq::CloseStream(pb::StreamId { stream_id: 3 });
    assert_eq!(ok_pb(&mut ws, 101, close).await, pb::WsResp::CloseStream(pb::Empty {}));
    let sql = pb::WsReq::CloseSql(pb::CloseSqlReq { sql_id: 9 });
    assert_eq!(ok_pb(&mut ws, 102, sql).await, pb::WsResp::CloseSql(pb::Empty {}));

    // A text message on a protobuf socket; a binary one that does not decode.
    send(&mut ws, json!({"type": "hello"})).await;
    assert_eq!(closed(&mut ws).await.0, CloseCode::Unsupported);
    let (mut ws, _) = connect(&server, "/db/team-pb", "hrana3-protobuf").await;
    ws.send(Message::binary(vec![0x12, 0x05, 0x08])).await.unwrap();
    assert_eq!(closed(&mut ws).await.0, CloseCode::Invalid);
    // A request before hello breaks the protocol.
    let (mut ws, _) = connect(&server, "/db/team-pb", "hrana3-protobuf").await;
    send_pb(
        &mut ws,
        pb::Client::Request(pb::RequestMsg {
            request_id: 1,
            request: Some(pb::WsReq::OpenStream(pb::StreamId { stream_id: 1 })),
        }),
    )
    .await;
    assert_eq!(closed(&mut ws).await.0, CloseCode::Policy);
}
