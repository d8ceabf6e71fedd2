//! Hrana over WebSocket (raw protocol, through tokio-tungstenite) and sqld's HTTP API v1
//! (`/v1/execute`, `/v1/batch`) against a real server on loopback.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roost::server::{Auth, ServerConfig, Token};
use roost::{HostConfig, StorageConfig};
use serde_json::{json, Value};
use support::{post, TestServer};
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
    // Only protobuf asked: refused before the upgrade; a bad id too.
    let mut request = ws_url(&server, "/db/ws-p").into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "hrana3-protobuf".parse().unwrap());
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
