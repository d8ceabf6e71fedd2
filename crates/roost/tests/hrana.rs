//! Hrana over HTTP against a real server on loopback: raw JSON and protobuf pipelines and
//! cursors, batons and transactions across requests, limits and auth, then the real libSQL
//! clients (the Rust `libsql` crate's remote client, which speaks JSON, and `@libsql/client`
//! through Node when it is installed, which speaks protobuf once `v3-protobuf` answers).

#[path = "support/hrana_pb.rs"]
mod pb;
mod support;

use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use prost::Message;
use roost::server::{Auth, ServerConfig, Token};
use roost::{HostConfig, StorageConfig};
use serde_json::{json, Value};
use support::{agent, client_batch, get, post, ran_and_failed, Answer, TestServer};

const TOKEN: &str = "hrana-test-token-0123456789";

fn pipeline(server: &TestServer, path: &str, baton: Option<&str>, requests: Value) -> Answer {
    post(&format!("{}{path}", server.url), None, &json!({"baton": baton, "requests": requests}).to_string())
}

fn execute(sql: &str, args: Value) -> Value {
    json!({"type": "execute", "stmt": {"sql": sql, "args": args}})
}

fn int(i: i64) -> Value {
    json!({"type": "integer", "value": i.to_string()})
}

fn text(s: &str) -> Value {
    json!({"type": "text", "value": s})
}

/// The `response` of result `i`, asserting it is ok.
fn ok(answer: &Answer, i: usize) -> Value {
    let result = &answer.body["results"][i];
    assert_eq!(result["type"], "ok", "result {i}: {result}");
    result["response"].clone()
}

fn rows(answer: &Answer, i: usize) -> Value {
    ok(answer, i)["result"]["rows"].clone()
}

fn baton(answer: &Answer) -> String {
    answer.body["baton"].as_str().expect("a baton").to_string()
}

fn query_v1(server: &TestServer, id: &str, sql: &str) -> Answer {
    post(&format!("{}/v1/actors/{id}/query", server.url), None, &json!({"sql": sql}).to_string())
}

fn token_config() -> ServerConfig {
    let auth =
        Auth { tokens: vec![Token { secret: TOKEN.into(), prefix: Some("team-".into()) }], admin: None };
    ServerConfig { auth, ..ServerConfig::default() }
}

#[test]
fn version_checks() {
    let server = TestServer::default_config();
    for path in ["/v2", "/v3", "/db/a/v2", "/db/a/v3"] {
        let url = format!("{}{path}", server.url);
        let mut response = agent().get(&url).call().unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert!(response.body_mut().read_to_string().unwrap().contains("Hrana"));
    }
    // The protobuf version check answers as sqld's.
    assert_eq!(get(&format!("{}/db/a/v3-protobuf", server.url), None).status, 200);
    assert_eq!(get(&format!("{}/db/.bad/v3", server.url), None).code(), "invalid_actor_id");
}

#[test]
fn execute_values_errors_and_close() {
    let server = TestServer::default_config();
    let path = "/db/exec/v3/pipeline";
    let a = pipeline(
        &server,
        path,
        None,
        json!([
            execute("CREATE TABLE t(id INTEGER PRIMARY KEY, i, f, s, b, n)", json!([])),
            execute(
                "INSERT INTO t(i, f, s, b, n) VALUES (?, ?, ?, ?, ?)",
                json!([int(9007199254740993), {"type": "float", "value": 1.5}, text("héllo"),
                    {"type": "blob", "base64": "AAH/"}, {"type": "null"}])
            ),
            {"type": "execute", "stmt": {"sql": "SELECT i, f, s, b, n, i + 1 AS next FROM t WHERE s = :s",
                "named_args": [{"name": "s", "value": text("héllo")}]}},
            {"type": "execute", "stmt": {"sql": "SELECT * FROM t", "want_rows": false}},
            execute("SELECT * FROM missing", json!([])),
            execute("INSERT INTO t(i) VALUES (?)", json!([])),
            {"type": "execute", "stmt": {"sql": "SELECT ?", "args": [int(1)], "named_args": [{"name": "a", "value": int(1)}]}},
            execute("SELECT 1; SELECT 2", json!([])),
            execute("  -- nothing\n", json!([])),
            {"type": "get_autocommit"},
            {"type": "close"},
        ]),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["baton"], Value::Null);
    assert_eq!(a.body["base_url"], Value::Null);
    assert_eq!(ok(&a, 0)["type"], "execute");
    let insert = ok(&a, 1)["result"].clone();
    assert_eq!(
        (insert["affected_row_count"].clone(), insert["last_insert_rowid"].clone()),
        (json!(1), json!("1"))
    );
    let select = ok(&a, 2)["result"].clone();
    let names: Vec<&str> =
        select["cols"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["i", "f", "s", "b", "n", "next"]);
    assert!(select["cols"][0].as_object().unwrap().contains_key("decltype"));
    assert_eq!(
        select["rows"],
        json!([[int(9007199254740993), {"type": "float", "value": 1.5}, text("héllo"),
            {"type": "blob", "base64": "AAH/"}, {"type": "null"}, int(9007199254740994)]])
    );
    assert_eq!(ok(&a, 3)["result"]["rows"], json!([]));
    assert_eq!(ok(&a, 3)["result"]["cols"].as_array().unwrap().len(), 6);
    let error = |i: usize| {
        let result = &a.body["results"][i];
        assert_eq!(result["type"], "error", "result {i}: {result}");
        (result["error"]["code"].as_str().unwrap().to_string(), result["error"]["message"].to_string())
    };
    assert_eq!(error(4).0, "SQLITE_ERROR");
    assert!(error(4).1.contains("no such table"));
    assert_eq!(error(5).0, "ARGS_INVALID");
    assert_eq!(error(6).0, "ARGS_BOTH_POSITIONAL_AND_NAMED");
    assert_eq!(error(7).0, "SQL_MANY_STATEMENTS");
    assert_eq!(error(8).0, "SQL_NO_STATEMENT");
    assert_eq!(ok(&a, 9), json!({"type": "get_autocommit", "is_autocommit": true}));
    assert_eq!(ok(&a, 10), json!({"type": "close"}));

    // A constraint error names its SQLite code; the stream goes on after it.
    let a = pipeline(
        &server,
        path,
        None,
        json!([
            execute("INSERT INTO t(id) VALUES (1)", json!([])),
            execute("SELECT count(*) FROM t", json!([]))
        ]),
    );
    assert_eq!(a.body["results"][0]["error"]["code"], "SQLITE_CONSTRAINT");
    assert_eq!(rows(&a, 1), json!([[int(1)]]));
    // As libSQL's server: a statement that changed no rows has no last_insert_rowid, rather
    // than the connection's earlier insert.
    assert_eq!(ok(&a, 1)["result"]["last_insert_rowid"], Value::Null);
    let a = pipeline(&server, path, None, json!([execute("INSERT INTO t(id) VALUES (7)", json!([]))]));
    assert_eq!(ok(&a, 0)["result"]["last_insert_rowid"], "7");
    // Requests after `close` break the protocol.
    let a = pipeline(&server, path, None, json!([{"type": "close"}, execute("SELECT 1", json!([]))]));
    assert_eq!((a.status, a.code()), (400, "bad_request"));
    // Malformed bodies and values.
    for body in [
        "{not json".to_string(),
        json!({"requests": [{"type": "nope"}]}).to_string(),
        json!({"requests": [execute("SELECT ?", json!([{"type": "integer", "value": "x"}]))]}).to_string(),
        json!({"requests": [execute("SELECT ?", json!([{"type": "blob", "base64": "!!"}]))]}).to_string(),
        json!({"requests": [{"type": "execute", "stmt": {}}]}).to_string(),
        json!({"requests": [{"type": "execute", "stmt": {"sql": "SELECT 1", "sql_id": 1}}]}).to_string(),
    ] {
        let a = post(&format!("{}{path}", server.url), None, &body);
        assert_eq!((a.status, a.code()), (400, "bad_request"), "{body}: {}", a.body);
        // libSQL's clients read an HTTP-level error from a top-level `message` and `code`.
        assert_eq!(a.body["code"], "bad_request", "{}", a.body);
        assert!(a.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", a.body);
    }
    let a = pipeline(&server, path, Some("0123456789abcdef0123456789abcdef"), json!([]));
    assert_eq!((a.status, a.body["code"].as_str()), (400, Some("bad_request")));
    assert!(a.body["message"].as_str().unwrap().contains("unknown baton"), "{}", a.body);
}

#[test]
fn batch_conditions() {
    let server = TestServer::default_config();
    let path = "/db/batch/v3/pipeline";
    let step = |sql: &str, condition: Value| json!({"condition": condition, "stmt": {"sql": sql}});
    let steps = json!([
        step("CREATE TABLE t(x INTEGER PRIMARY KEY)", Value::Null),
        step("BEGIN", json!({"type": "ok", "step": 0})),
        step("INSERT INTO t VALUES (1)", json!({"type": "ok", "step": 1})),
        step("INSERT INTO t VALUES (1)", json!({"type": "ok", "step": 2})),
        step("SELECT 'after error'", json!({"type": "error", "step": 3})),
        step("SELECT 'skipped'", json!({"type": "ok", "step": 3})),
        step("SELECT 'in transaction'", json!({"type": "not", "cond": {"type": "is_autocommit"}})),
        step(
            "SELECT 'or'",
            json!({"type": "or", "conds": [{"type": "ok", "step": 5}, {"type": "ok", "step": 4}]})
        ),
        step(
            "SELECT 'and'",
            json!({"type": "and", "conds": [{"type": "ok", "step": 4}, {"type": "is_autocommit"}]})
        ),
        step(
            "COMMIT",
            json!({"type": "and", "conds": [{"type": "ok", "step": 2}, {"type": "not", "cond": {"type": "is_autocommit"}}]})
        ),
        step("ROLLBACK", json!({"type": "not", "cond": {"type": "ok", "step": 9}})),
        step("SELECT count(*) FROM t", json!({"type": "is_autocommit"})),
    ]);
    let a = pipeline(
        &server,
        path,
        None,
        json!([{"type": "batch", "batch": {"steps": steps}}, {"type": "close"}]),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let result = ok(&a, 0)["result"].clone();
    let ran: Vec<bool> = result["step_results"].as_array().unwrap().iter().map(|r| !r.is_null()).collect();
    let failed: Vec<bool> = result["step_errors"].as_array().unwrap().iter().map(|e| !e.is_null()).collect();
    assert_eq!(ran, [true, true, true, false, true, false, true, true, false, true, false, true]);
    assert_eq!(failed, [false, false, false, true, false, false, false, false, false, false, false, false]);
    assert_eq!(result["step_errors"][3]["code"], "SQLITE_CONSTRAINT");
    assert_eq!(result["step_results"][4]["rows"], json!([[text("after error")]]));
    assert_eq!(result["step_results"][11]["rows"], json!([[int(1)]]));

    // A condition may only look back; `is_autocommit` needs Hrana 3.
    let forward =
        json!([{"type": "batch", "batch": {"steps": [step("SELECT 1", json!({"type": "ok", "step": 0}))]}}]);
    assert_eq!(pipeline(&server, path, None, forward).code(), "bad_request");
    let v2 =
        json!([{"type": "batch", "batch": {"steps": [step("SELECT 1", json!({"type": "is_autocommit"}))]}}]);
    assert_eq!(pipeline(&server, "/db/batch/v2/pipeline", None, v2).code(), "bad_request");
    let a = pipeline(&server, "/db/batch/v2/pipeline", None, json!([{"type": "get_autocommit"}]));
    assert_eq!((a.status, a.code()), (400, "bad_request"));
    // v2 serves everything else.
    let a = pipeline(
        &server,
        "/db/batch/v2/pipeline",
        None,
        json!([execute("SELECT count(*) FROM t", json!([]))]),
    );
    assert_eq!(rows(&a, 0), json!([[int(1)]]));
}

/// A transaction that ends inside a batch (a `ROLLBACK` statement, an `INSERT OR ROLLBACK`
/// conflict) stops the statements `@libsql/client` guards with conditions: none of them runs in
/// autocommit and nothing is committed. Conditions follow libSQL's server exactly.
#[test]
fn batch_steps_after_their_transaction_ended() {
    let server = TestServer::default_config();
    let run = |version: &str, actor: &str, request: Value| {
        let requests = json!([
            execute("CREATE TABLE IF NOT EXISTS t(x INTEGER PRIMARY KEY)", json!([])),
            request,
            execute("SELECT count(*) FROM t", json!([])),
            {"type": "close"},
        ]);
        let a = pipeline(&server, &format!("/db/{actor}/{version}/pipeline"), None, requests);
        assert_eq!(a.status, 200, "{}", a.body);
        (a.body["results"][1].clone(), rows(&a, 2))
    };
    let batch = |steps: Value| json!({"type": "batch", "batch": steps});
    let (first, second) = ("INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)");
    // Hrana 3: after the ROLLBACK the stream is in autocommit, so the second insert and the
    // COMMIT are skipped; the client's own ROLLBACK runs and fails (nothing to roll back).
    let (result, count) =
        run("v3", "ended-rollback", batch(client_batch(&[first, "ROLLBACK", second], true)));
    let result = &result["response"]["result"];
    let expected =
        (vec![true, true, true, false, false, false], vec![false, false, false, false, false, true]);
    assert_eq!(ran_and_failed(result), expected, "{result}");
    assert_eq!(count, json!([[int(0)]]));
    // An `OR ROLLBACK` conflict fails its step: what follows is skipped, on Hrana 2 and 3.
    for (version, v3) in [("v2", false), ("v3", true)] {
        let conflict = "INSERT OR ROLLBACK INTO t VALUES (1)";
        let actor = format!("ended-or-rollback-{version}");
        let (result, count) = run(version, &actor, batch(client_batch(&[first, conflict, second], v3)));
        let result = &result["response"]["result"];
        let expected =
            (vec![true, true, false, false, false, false], vec![false, false, true, false, false, true]);
        assert_eq!(ran_and_failed(result), expected, "{version}: {result}");
        assert_eq!(result["step_errors"][2]["code"], "SQLITE_CONSTRAINT");
        assert_eq!(count, json!([[int(0)]]), "{version}");
    }
    // A sequence stops at its first failing statement, as libSQL's server does.
    let sequence = json!({"type": "sequence", "sql":
        "BEGIN; INSERT INTO t VALUES (1); INSERT OR ROLLBACK INTO t VALUES (1); INSERT INTO t VALUES (2); COMMIT"});
    let (result, count) = run("v3", "ended-sequence", sequence);
    assert_eq!(
        (result["type"].as_str(), result["error"]["code"].as_str()),
        (Some("error"), Some("SQLITE_CONSTRAINT"))
    );
    assert_eq!(count, json!([[int(0)]]));
    // `error` holds for a step skipped by its condition: libSQL's server only tells whether a
    // step ran to its end.
    let steps = json!({"steps": [
        {"condition": {"type": "not", "cond": {"type": "is_autocommit"}}, "stmt": {"sql": "SELECT 'skipped'"}},
        {"condition": {"type": "error", "step": 0}, "stmt": {"sql": "SELECT 'ran'"}},
    ]});
    let (result, _) = run("v3", "ended-error-of-skipped", batch(steps));
    let result = &result["response"]["result"];
    assert_eq!(ran_and_failed(result), (vec![false, true], vec![false, false]), "{result}");
    // Steps without conditions run whatever the transaction did, as on libSQL's server: the
    // second insert runs in autocommit and the COMMIT fails. Clients that want atomic batches
    // add the conditions above.
    let steps: Vec<Value> = ["BEGIN", first, "ROLLBACK", second, "COMMIT"]
        .iter()
        .map(|sql| json!({"stmt": {"sql": sql}}))
        .collect();
    let (result, count) = run("v3", "ended-unguarded", batch(json!({"steps": steps})));
    let result = &result["response"]["result"];
    assert_eq!(
        ran_and_failed(result),
        (vec![true, true, true, true, false], vec![false, false, false, false, true])
    );
    assert_eq!(count, json!([[int(1)]]));
}

/// The JSON API's transactional batch is all or nothing: a statement that would end its
/// transaction (`ROLLBACK`, `COMMIT`, an `OR ROLLBACK` conflict) fails the batch, which is rolled
/// back whole, instead of leaving the rest to run in autocommit.
#[test]
fn json_transaction_batch_cannot_end_its_transaction() {
    let server = TestServer::default_config();
    let url = format!("{}/v1/actors/json-txn/batch", server.url);
    let batch = |stmts: &[&str], transaction: bool| {
        let statements: Vec<Value> = stmts.iter().map(|sql| json!({"sql": sql})).collect();
        post(&url, None, &json!({"statements": statements, "transaction": transaction}).to_string())
    };
    let created = batch(&["CREATE TABLE t(x INTEGER PRIMARY KEY)"], false);
    assert_eq!(created.status, 200, "{}", created.body);
    let count = || query_v1(&server, "json-txn", "SELECT count(*) FROM t").body["rows"].clone();
    let (first, second) = ("INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)");
    for (ender, says) in [
        ("ROLLBACK", "ended the batch's transaction"),
        ("COMMIT", "ended the batch's transaction"),
        ("END", "ended the batch's transaction"),
        ("INSERT OR ROLLBACK INTO t VALUES (1)", "UNIQUE constraint failed"),
    ] {
        let a = batch(&[first, ender, second], true);
        assert_eq!((a.status, a.code()), (400, "sql_error"), "{ender}: {}", a.body);
        let message = a.body["error"]["message"].as_str().unwrap_or("");
        assert!(message.starts_with("statement 1: ") && message.contains(says), "{ender}: {message}");
        assert_eq!(count(), json!([[0]]), "{ender}");
    }
    // Commits go through again afterwards, in and out of batches.
    assert_eq!(batch(&[first, second], true).status, 200);
    assert_eq!(query_v1(&server, "json-txn", "INSERT INTO t VALUES (3)").status, 200);
    assert_eq!(count(), json!([[3]]));
}

#[test]
fn sequence_describe_and_stored_sql() {
    let config = ServerConfig { hrana_sql_texts_max: 2, statement_bytes_max: 200, ..ServerConfig::default() };
    let server = TestServer::start(config, HostConfig::default(), StorageConfig::default());
    let path = "/db/seq/v3/pipeline";
    let describe = |sql: &str| json!({"type": "describe", "sql": sql});
    let a = pipeline(
        &server,
        path,
        None,
        json!([
            {"type": "sequence", "sql": "CREATE TABLE s(a INTEGER, b TEXT); INSERT INTO s VALUES (1, 'x'); INSERT INTO s VALUES (2, 'y');"},
            {"type": "sequence", "sql": "INSERT INTO s VALUES (3, 'z'); SELEC 1; INSERT INTO s VALUES (4, 'w')"},
            describe("SELECT a AS x, b FROM s WHERE a = :a AND b = ?"),
            describe("INSERT INTO s VALUES (?1, ?2)"),
            describe("EXPLAIN QUERY PLAN SELECT * FROM s"),
            describe("WITH c AS (SELECT a FROM s) SELECT a, a + 1 FROM c WHERE a > $min;"),
            describe("CREATE TABLE u(x)"),
            describe("SELECT ?3, :a, ?, '?', \"?\" FROM s -- ?"),
            describe("SELEC 1"),
            {"type": "store_sql", "sql_id": 1, "sql": "SELECT count(*) FROM s WHERE a > ?"},
            {"type": "execute", "stmt": {"sql_id": 1, "args": [int(1)]}},
            {"type": "describe", "sql_id": 1},
            {"type": "sequence", "sql_id": 1},
            {"type": "store_sql", "sql_id": 2, "sql": "SELECT 2"},
            {"type": "store_sql", "sql_id": 3, "sql": "SELECT 3"},
            {"type": "store_sql", "sql_id": 4, "sql": format!("SELECT '{}'", "a".repeat(300))},
            {"type": "close_sql", "sql_id": 1},
            {"type": "close_sql", "sql_id": 99},
            execute(&format!("SELECT '{}'", "a".repeat(300)), json!([])),
        ]),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(ok(&a, 0), json!({"type": "sequence"}));
    assert_eq!(a.body["results"][1]["error"]["code"], "SQLITE_ERROR");
    let d = ok(&a, 2)["result"].clone();
    assert_eq!(d["params"], json!([{"name": ":a"}, {"name": null}]));
    // Declared types come from SQLite's column metadata.
    assert_eq!(d["cols"], json!([{"name": "x", "decltype": "INTEGER"}, {"name": "b", "decltype": "TEXT"}]));
    assert_eq!((d["is_explain"].clone(), d["is_readonly"].clone()), (json!(false), json!(true)));
    let d = ok(&a, 3)["result"].clone();
    assert_eq!(d["params"], json!([{"name": "?1"}, {"name": "?2"}]));
    assert_eq!((d["is_readonly"].clone(), d["cols"].clone()), (json!(false), json!([])));
    let d = ok(&a, 4)["result"].clone();
    assert_eq!((d["is_explain"].clone(), d["is_readonly"].clone()), (json!(true), json!(true)));
    assert_eq!(d["cols"].as_array().unwrap().len(), 4);
    let d = ok(&a, 5)["result"].clone();
    assert_eq!(d["params"], json!([{"name": "$min"}]));
    let names: Vec<&str> =
        d["cols"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "a + 1"]);
    assert_eq!(d["cols"][0]["decltype"], "INTEGER");
    assert_eq!(d["cols"][1]["decltype"], Value::Null, "an expression has no declared type");
    assert_eq!(ok(&a, 6)["result"]["is_readonly"], false);
    assert_eq!(
        ok(&a, 7)["result"]["params"],
        json!([{"name": null}, {"name": null}, {"name": "?3"}, {"name": ":a"}, {"name": null}])
    );
    assert_eq!(a.body["results"][8]["error"]["code"], "SQLITE_ERROR");
    assert_eq!(ok(&a, 9), json!({"type": "store_sql"}));
    assert_eq!(rows(&a, 10), json!([[int(2)]]));
    assert_eq!(ok(&a, 11)["result"]["params"], json!([{"name": null}]));
    // A sequence ignores rows (and binds no parameters).
    assert_eq!(ok(&a, 12), json!({"type": "sequence"}));
    assert_eq!(ok(&a, 13), json!({"type": "store_sql"}));
    assert_eq!(a.body["results"][14]["error"]["code"], "SQL_STORE_TOO_MANY");
    assert_eq!(a.body["results"][15]["error"]["code"], "SQL_STORE_TOO_MANY");
    assert_eq!(ok(&a, 16), json!({"type": "close_sql"}));
    assert_eq!(ok(&a, 17), json!({"type": "close_sql"}));
    assert_eq!(a.body["results"][18]["error"]["code"], "SQLITE_TOOBIG");
    let b = baton(&a);

    // The sequence stopped at its error: rows 1-3 exist, 4 does not.
    let r = query_v1(&server, "seq", "SELECT group_concat(a) FROM s");
    assert_eq!(r.body["rows"], json!([["1,2,3"]]));
    // A closed SQL text is gone (a protocol error), and so is the stream then.
    let a = pipeline(&server, path, Some(&b), json!([{"type": "execute", "stmt": {"sql_id": 1}}]));
    assert_eq!((a.status, a.code()), (400, "bad_request"));
    let a = pipeline(&server, path, Some(&b), json!([]));
    assert_eq!((a.status, a.code()), (400, "bad_request"));
    // Storing an id twice breaks the protocol.
    let store = json!({"type": "store_sql", "sql_id": 1, "sql": "SELECT 1"});
    let a = pipeline(&server, path, None, json!([store, store]));
    assert_eq!((a.status, a.code()), (400, "bad_request"));
}

#[test]
fn cursor_streams_batch_entries() {
    let server = TestServer::default_config();
    let url = format!("{}/db/cur/v3/cursor", server.url);
    let body = json!({"baton": null, "batch": {"steps": [
        {"stmt": {"sql": "CREATE TABLE t(a, b)"}},
        {"stmt": {"sql": "INSERT INTO t VALUES (1, 'one'), (2, 'two')"}, "condition": {"type": "ok", "step": 0}},
        {"stmt": {"sql": "SELECT a, b FROM t ORDER BY a"}},
        {"stmt": {"sql": "SELECT * FROM nope"}},
        {"stmt": {"sql": "SELECT 1"}, "condition": {"type": "ok", "step": 3}},
    ]}});
    let mut response =
        agent().post(&url).header("content-type", "application/json").send(body.to_string()).unwrap();
    assert_eq!(response.status(), 200);
    let answer = response.body_mut().read_to_string().unwrap();
    let lines: Vec<Value> = answer.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let first_baton = lines[0]["baton"].as_str().unwrap().to_string();
    assert_eq!(lines[0]["base_url"], Value::Null);
    let kinds: Vec<&str> = lines[1..].iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "step_begin",
            "step_end",
            "step_begin",
            "step_end",
            "step_begin",
            "row",
            "row",
            "step_end",
            "step_error"
        ]
    );
    assert_eq!(lines[3]["step"], 1);
    assert_eq!(
        (lines[4]["affected_row_count"].clone(), lines[4]["last_insert_rowid"].clone()),
        (json!(2), json!("2"))
    );
    assert_eq!(lines[5]["cols"], json!([{"name": "a", "decltype": null}, {"name": "b", "decltype": null}]));
    assert_eq!(lines[6]["row"], json!([int(1), text("one")]));
    assert_eq!(
        (lines[9]["step"].clone(), lines[9]["error"]["code"].clone()),
        (json!(3), json!("SQLITE_ERROR"))
    );

    // The cursor's baton continues the stream in a pipeline, with a new baton.
    let a = pipeline(&server, "/db/cur/v3/pipeline", Some(&first_baton), json!([{"type": "close"}]));
    assert_eq!((a.status, a.body["baton"].clone()), (200, Value::Null));
    let again = json!({"baton": first_baton, "batch": {"steps": []}}).to_string();
    let a = post(&url, None, &again);
    assert_eq!((a.status, a.code()), (400, "bad_request"));
}

#[test]
fn transaction_spans_requests_and_holds_the_actor() {
    let server = TestServer::default_config();
    let path = "/db/tx/v3/pipeline";
    let a = pipeline(&server, path, None, json!([execute("CREATE TABLE t(x)", json!([]))]));
    let b0 = baton(&a);
    let a = pipeline(
        &server,
        path,
        Some(&b0),
        json!([execute("BEGIN", json!([])), execute("INSERT INTO t VALUES (1)", json!([])), {"type": "get_autocommit"}]),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(ok(&a, 2)["is_autocommit"], false);
    let b1 = baton(&a);
    assert_ne!(b0, b1);
    assert!(b1.len() >= 32 && b1.chars().all(|c| c.is_ascii_hexdigit()));
    // The old baton was replaced.
    let stale = pipeline(&server, path, Some(&b0), json!([]));
    assert_eq!((stale.status, stale.code()), (400, "bad_request"));

    // Another request on the actor waits for the transaction.
    let url = server.url.clone();
    let (done_tx, done) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let answer = post(
            &format!("{url}/v1/actors/tx/query"),
            None,
            &json!({"sql": "SELECT count(*) FROM t"}).to_string(),
        );
        done_tx.send(Instant::now()).unwrap();
        answer
    });
    assert!(done.recv_timeout(Duration::from_millis(400)).is_err(), "the reader did not wait");
    let committing = Instant::now();
    let a = pipeline(
        &server,
        path,
        Some(&b1),
        json!([execute("INSERT INTO t VALUES (2)", json!([])), execute("COMMIT", json!([])), {"type": "get_autocommit"}]),
    );
    assert_eq!(ok(&a, 2)["is_autocommit"], true);
    let read = reader.join().unwrap();
    assert!(done.recv().unwrap() >= committing);
    assert_eq!(read.body["rows"], json!([[2]]));
    let b2 = baton(&a);

    // Closing a stream inside a transaction rolls it back and frees the actor.
    let a = pipeline(
        &server,
        path,
        Some(&b2),
        json!([execute("BEGIN", json!([])), execute("INSERT INTO t VALUES (3)", json!([])), {"type": "close"}]),
    );
    assert_eq!(a.body["baton"], Value::Null);
    assert_eq!(query_v1(&server, "tx", "SELECT count(*) FROM t").body["rows"], json!([[2]]));
    assert_eq!(pipeline(&server, path, Some(&b2), json!([])).code(), "bad_request");

    // A protocol error inside a transaction ends the stream and rolls back too.
    let a = pipeline(
        &server,
        path,
        None,
        json!([execute("BEGIN", json!([])), execute("INSERT INTO t VALUES (4)", json!([]))]),
    );
    let b3 = baton(&a);
    let a = pipeline(&server, path, Some(&b3), json!([{"type": "execute", "stmt": {"sql_id": 7}}]));
    assert_eq!((a.status, a.code()), (400, "bad_request"));
    assert_eq!(query_v1(&server, "tx", "SELECT count(*) FROM t").body["rows"], json!([[2]]));

    // Shutting down does not wait for a parked transaction to expire (10 s): it is rolled back.
    let a = pipeline(
        &server,
        path,
        None,
        json!([execute("BEGIN", json!([])), execute("DELETE FROM t", json!([]))]),
    );
    assert_eq!(ok(&a, 1)["result"]["affected_row_count"], 2);
    let started = Instant::now();
    drop(server);
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
}

#[test]
fn concurrent_transactions_on_one_actor_serialize() {
    let server = TestServer::default_config();
    let path = "/db/conc/v3/pipeline";
    let a =
        pipeline(&server, path, None, json!([execute("CREATE TABLE t(n)", json!([])), {"type": "close"}]));
    assert_eq!(a.status, 200);
    std::thread::scope(|scope| {
        for worker in 0..4 {
            let server = &server;
            scope.spawn(move || {
                for round in 0..5 {
                    // Read, then write what was read + 1 in a later request: only correct if
                    // nothing else runs on the actor in between.
                    let a = pipeline(
                        server,
                        path,
                        None,
                        json!([execute("BEGIN", json!([])), execute("SELECT count(*) FROM t", json!([]))]),
                    );
                    assert_eq!(a.status, 200, "{worker}/{round}: {}", a.body);
                    let seen: i64 = rows(&a, 1)[0][0]["value"].as_str().unwrap().parse().unwrap();
                    let b = pipeline(
                        server,
                        path,
                        Some(&baton(&a)),
                        json!([execute("INSERT INTO t VALUES (?)", json!([int(seen + 1)])),
                            execute("COMMIT", json!([])), {"type": "close"}]),
                    );
                    assert_eq!(b.status, 200, "{worker}/{round}: {}", b.body);
                }
            });
        }
    });
    let answer = query_v1(&server, "conc", "SELECT count(*), count(DISTINCT n), max(n) FROM t");
    assert_eq!(answer.body["rows"], json!([[20, 20, 20]]));
}

#[test]
fn batons_are_bound_to_their_stream_and_actor() {
    let config = ServerConfig { hrana_stream_idle_ms: 200, ..ServerConfig::default() };
    let server = TestServer::start(config, HostConfig::default(), StorageConfig::default());
    for forged in ["", "00000000000000000000000000000000", "not-a-baton", &"f".repeat(10_000)] {
        let a = pipeline(&server, "/db/a/v3/pipeline", Some(forged), json!([execute("SELECT 1", json!([]))]));
        assert_eq!((a.status, a.code()), (400, "bad_request"), "{forged:.20}");
    }
    // A baton of actor a is refused on actor b, and keeps working on a.
    let a = pipeline(&server, "/db/a/v3/pipeline", None, json!([execute("CREATE TABLE t(x)", json!([]))]));
    let ba = baton(&a);
    let other = pipeline(&server, "/db/b/v3/pipeline", Some(&ba), json!([execute("SELECT 1", json!([]))]));
    assert_eq!((other.status, other.code()), (400, "bad_request"));
    let a = pipeline(
        &server,
        "/db/a/v3/pipeline",
        Some(&ba),
        json!([execute("SELECT count(*) FROM t", json!([]))]),
    );
    assert_eq!(rows(&a, 0), json!([[int(0)]]));

    // An idle stream expires: its baton is refused, its transaction rolled back and its actor
    // freed by the sweep, without waiting for the baton to come back.
    let a = pipeline(
        &server,
        "/db/a/v3/pipeline",
        Some(&baton(&a)),
        json!([execute("BEGIN", json!([])), execute("INSERT INTO t VALUES (1)", json!([]))]),
    );
    let expiring = baton(&a);
    std::thread::sleep(Duration::from_millis(700));
    let (sent, read) = mpsc::channel();
    let url = format!("{}/v1/actors/a/query", server.url);
    std::thread::spawn(move || {
        let _ = sent.send(post(&url, None, &json!({"sql": "SELECT count(*) FROM t"}).to_string()));
    });
    let read = read.recv_timeout(Duration::from_secs(5)).expect("the expired stream still holds the actor");
    assert_eq!(read.body["rows"], json!([[0]]));
    let a = pipeline(&server, "/db/a/v3/pipeline", Some(&expiring), json!([execute("SELECT 1", json!([]))]));
    assert_eq!((a.status, a.code()), (400, "bad_request"));
}

#[test]
fn streams_and_statements_are_bounded() {
    let config = ServerConfig { hrana_streams_max: 2, body_bytes_max: 64 << 10, ..ServerConfig::default() };
    let server =
        TestServer::start(config, HostConfig::default(), StorageConfig { rows_max: 5, ..Default::default() });
    let path = "/db/lim/v3/pipeline";
    let first = baton(&pipeline(&server, path, None, json!([])));
    let _second = baton(&pipeline(&server, path, None, json!([])));
    let a = pipeline(&server, path, None, json!([]));
    assert_eq!((a.status, a.code()), (503, "overloaded"));
    assert!(a.retry_after.is_some());
    // Closing one makes room.
    let a = pipeline(&server, path, Some(&first), json!([{"type": "close"}]));
    assert_eq!(a.status, 200);
    let a = pipeline(
        &server,
        path,
        None,
        json!([execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 10) SELECT i FROM n", json!([])),
            {"type": "close"}]),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["results"][0]["error"]["code"], "RESPONSE_TOO_LARGE");
    // Body limit.
    let big = json!({"requests": [execute(&format!("SELECT '{}'", "a".repeat(100_000)), json!([]))]});
    let a = post(&format!("{}{path}", server.url), None, &big.to_string());
    assert_eq!((a.status, a.code()), (413, "payload_too_large"));
}

#[test]
fn namespace_header_routes_to_the_actor() {
    let server = TestServer::default_config();
    let send = |path: &str, namespace: Option<&str>, body: Value| {
        let mut request =
            agent().post(&format!("{}{path}", server.url)).header("content-type", "application/json");
        if let Some(ns) = namespace {
            request = request.header("x-namespace", ns);
        }
        let mut response = request.send(body.to_string()).unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        (status, text)
    };
    let body = json!({"requests": [execute("CREATE TABLE ns(x)", json!([])), execute("INSERT INTO ns VALUES (7)", json!([])),
        {"type": "close"}]});
    let (status, text) = send("/v2/pipeline", Some("by-header"), body);
    assert_eq!(status, 200, "{text}");
    let a =
        pipeline(&server, "/db/by-header/v3/pipeline", None, json!([execute("SELECT x FROM ns", json!([]))]));
    assert_eq!(rows(&a, 0), json!([[int(7)]]));
    let (status, text) = send(
        "/v3/pipeline",
        Some("by-header"),
        json!({"requests": [execute("SELECT x FROM ns", json!([]))]}),
    );
    assert_eq!(status, 200);
    assert!(text.contains("\"7\""));
    let (status, text) = send(
        "/v3/cursor",
        Some("by-header"),
        json!({"batch": {"steps": [{"stmt": {"sql": "SELECT x FROM ns"}}]}}),
    );
    assert_eq!(status, 200);
    assert!(text.lines().any(|l| l.contains("\"row\"")));
    let (status, text) = send("/v3/pipeline", None, json!({"requests": []}));
    assert_eq!(status, 400, "{text}");
    let (status, _) = send("/v3/pipeline", Some("../x"), json!({"requests": []}));
    assert_eq!(status, 400);
}

#[test]
fn tokens_guard_hrana() {
    let server = TestServer::start(token_config(), HostConfig::default(), StorageConfig::default());
    let body = json!({"requests": [execute("SELECT 1", json!([])), {"type": "close"}]}).to_string();
    let url = |id: &str| format!("{}/db/{id}/v3/pipeline", server.url);
    assert_eq!(post(&url("team-a"), None, &body).code(), "unauthorized");
    assert_eq!(post(&url("team-a"), Some("wrong-token-wrong-token"), &body).code(), "unauthorized");
    assert_eq!(post(&url("other"), Some(TOKEN), &body).code(), "unauthorized");
    let a = post(&url("team-a"), Some(TOKEN), &body);
    assert_eq!(a.status, 200, "{}", a.body);
    // Unauthorized requests are refused before their body is read.
    assert_eq!(post(&url("team-a"), None, "{not json").code(), "unauthorized");
    let mut request = agent()
        .post(&format!("{}/v3/pipeline", server.url))
        .header("x-namespace", "other")
        .header("authorization", format!("Bearer {TOKEN}"));
    request = request.header("content-type", "application/json");
    assert_eq!(request.send(body.as_str()).unwrap().status(), 401);
    // Version checks need no token (clients probe them without one).
    assert_eq!(get(&format!("{}/db/team-a/v2", server.url), None).status, 200);
}

/// The Rust `libsql` crate's remote client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libsql_rust_client() {
    let server = TestServer::start(token_config(), HostConfig::default(), StorageConfig::default());
    let url = format!("{}/db/team-rust", server.url);
    let db = libsql::Builder::new_remote(url, TOKEN.to_string())
        .connector(hyper014::client::HttpConnector::new())
        .build()
        .await
        .unwrap();
    let conn = db.connect().unwrap();
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL, data BLOB)", ())
        .await
        .unwrap();
    let n = conn
        .execute(
            "INSERT INTO t(name, score, data) VALUES (?1, ?2, ?3)",
            libsql::params!["alice", 1.5, vec![1u8, 2, 3]],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(conn.last_insert_rowid(), 1);
    conn.execute(
        "INSERT INTO t(name, score) VALUES (:name, :score)",
        libsql::named_params! {":name": "bob", ":score": 2.5},
    )
    .await
    .unwrap();
    let err = conn.execute("INSERT INTO t(name) VALUES (NULL)", ()).await.unwrap_err();
    assert!(err.to_string().contains("NOT NULL"), "{err}");

    let mut rows = conn.query("SELECT id, name, score, data FROM t ORDER BY id", ()).await.unwrap();
    let row = rows.next().await.unwrap().unwrap();
    assert_eq!(row.get::<i64>(0).unwrap(), 1);
    assert_eq!(row.get::<String>(1).unwrap(), "alice");
    assert_eq!(row.get::<f64>(2).unwrap(), 1.5);
    assert_eq!(row.get::<Vec<u8>>(3).unwrap(), vec![1, 2, 3]);
    assert_eq!(rows.next().await.unwrap().unwrap().get::<String>(1).unwrap(), "bob");
    assert!(rows.next().await.unwrap().is_none());

    // Prepared statements describe first.
    let stmt = conn.prepare("SELECT name FROM t WHERE id = ?").await.unwrap();
    assert_eq!(stmt.columns().len(), 1);
    let mut rows = stmt.query([2]).await.unwrap();
    assert_eq!(rows.next().await.unwrap().unwrap().get::<String>(0).unwrap(), "bob");

    // An interactive transaction that commits, and one that rolls back.
    let tx = conn.transaction().await.unwrap();
    tx.execute("INSERT INTO t(name) VALUES (?1)", ["carol"]).await.unwrap();
    let mut inside = tx.query("SELECT count(*) FROM t", ()).await.unwrap();
    assert_eq!(inside.next().await.unwrap().unwrap().get::<i64>(0).unwrap(), 3);
    tx.commit().await.unwrap();
    let tx = conn.transaction().await.unwrap();
    tx.execute("INSERT INTO t(name) VALUES ('dave')", ()).await.unwrap();
    tx.rollback().await.unwrap();

    // Batches: plain, and transactional (all or nothing).
    conn.execute_batch("INSERT INTO t(name) VALUES ('e1'); INSERT INTO t(name) VALUES ('e2');")
        .await
        .unwrap();
    let failed = conn
        .execute_transactional_batch("INSERT INTO t(name) VALUES ('f1'); INSERT INTO t(name) VALUES (NULL);")
        .await;
    assert!(failed.is_err());

    let mut rows = conn.query("SELECT group_concat(name, ',') FROM t", ()).await.unwrap();
    let names = rows.next().await.unwrap().unwrap().get::<String>(0).unwrap();
    assert_eq!(names, "alice,bob,carol,e1,e2");
    drop(rows);
    drop(conn);
    drop(db);
    // The server sees the same data.
    let answer = tokio::task::spawn_blocking(move || {
        let answer = post(
            &format!("{}/v1/actors/team-rust/query", server.url),
            Some(TOKEN),
            &json!({"sql": "SELECT count(*) FROM t"}).to_string(),
        );
        drop(server);
        answer
    })
    .await
    .unwrap();
    assert_eq!(answer.body["rows"], json!([[5]]));
}

/// Runs `tests/node/client.mjs` (`@libsql/client`) against `url` on actor `team-node...`; its
/// summary, or `None` when Node or its packages are missing (a failure under
/// ROOST_REQUIRE_NODE=1).
fn run_node_client(url: &str) -> Option<Value> {
    run_node("client.mjs", &[url])
}

/// Runs `script` of `tests/node` with `args` and the test token; the JSON summary it prints
/// last, or `None` when Node or its packages are missing (a failure under
/// ROOST_REQUIRE_NODE=1).
fn run_node(script: &str, args: &[&str]) -> Option<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    let required = std::env::var("ROOST_REQUIRE_NODE").is_ok_and(|v| v == "1");
    if !dir.join("node_modules/@libsql/client").exists() {
        assert!(
            !required,
            "ROOST_REQUIRE_NODE=1 but {} has no node_modules: run `npm ci` there",
            dir.display()
        );
        eprintln!("warning: skipping the {script} test: run `npm ci` in {}", dir.display());
        return None;
    }
    let output = match Command::new("node")
        .arg(script)
        .args(args)
        .env("ROOST_TOKEN", TOKEN)
        .current_dir(&dir)
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            assert!(!required, "ROOST_REQUIRE_NODE=1 but node cannot run: {e}");
            eprintln!("warning: skipping the {script} test: node cannot run: {e}");
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "node failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| {
        panic!("no JSON summary ({e})\nstdout:\n{stdout}\nstderr:\n{stderr}");
    });
    eprintln!("{script} summary ({args:?}): {summary}");
    Some(summary)
}

/// What the script sees on any transport.
fn check_node_summary(server: &TestServer, actor: &str, summary: &Value) {
    assert_eq!(summary["insert"], json!({"rowsAffected": 1, "lastInsertRowid": "1"}), "{summary}");
    assert_eq!(summary["select"]["columns"], json!(["id", "name", "qty", "price", "data"]));
    assert_eq!(
        summary["select"]["row"],
        json!({"id": 1, "name": "apple", "qty": 3, "price": 1.25, "data": [1, 2, 3]})
    );
    assert_eq!(summary["batch"], json!({"count": 3, "updated": 1, "results": 3}));
    assert_eq!(summary["failedBatch"]["rolledBack"], true, "{summary}");
    assert_eq!(summary["transaction"], json!({"countInside": 4, "committed": true}));
    assert_eq!(summary["rollback"], json!({"countAfter": 4}));
    assert_eq!(summary["names"], json!(["apple", "pear", "plum", "kiwi"]));
    assert_eq!(summary["columnTypes"], json!(["INTEGER", "TEXT", "INTEGER", "REAL", "BLOB"]), "{summary}");
    let answer = post(
        &format!("{}/v1/actors/{actor}/query", server.url),
        Some(TOKEN),
        &json!({"sql": "SELECT group_concat(name, ',') FROM items"}).to_string(),
    );
    assert_eq!(answer.body["rows"], json!([["apple,pear,plum,kiwi"]]));
}

/// `@libsql/client` through Node (`tests/node`) over Hrana over HTTP. Skipped with a warning
/// when its packages are not installed, unless ROOST_REQUIRE_NODE=1.
#[test]
fn libsql_node_client() {
    let server = TestServer::start(token_config(), HostConfig::default(), StorageConfig::default());
    let Some(summary) = run_node_client(&format!("{}/db/team-node/", server.url)) else { return };
    check_node_summary(&server, "team-node", &summary);
    let message = summary["httpError"]["message"].as_str().unwrap_or("");
    assert!(message.contains("larger than the limit"), "{summary}");
}

/// `@libsql/client` over Hrana over WebSocket (`ws://`, it negotiates `hrana3`: batches run
/// through cursors). A message over the body limit closes the socket; the client opens a new
/// one for the next request.
#[test]
fn libsql_node_client_websocket() {
    let server = TestServer::start(token_config(), HostConfig::default(), StorageConfig::default());
    let url = format!("{}/db/team-node-ws", server.url.replacen("http://", "ws://", 1));
    let Some(summary) = run_node_client(&url) else { return };
    check_node_summary(&server, "team-node-ws", &summary);
    // The socket reader refuses the frame before Roost sees it, so the client only sees the
    // socket go away (code 1006).
    assert_eq!(summary["httpError"]["code"], "HRANA_WEBSOCKET_ERROR", "{summary}");
}

/// `@libsql/client` (`tests/node/transactions.mjs`) when a transaction ends early, over HTTP and
/// WebSocket. The client speaks Hrana 2 on both by default (it asks for Hrana 3 only when told
/// to), so its batches guard each statement with `ok` of the one before but cannot say "only
/// inside the transaction" (`is_autocommit` is Hrana 3). Hence, as against libSQL's server:
/// a write batch whose statement fails, or hits an `OR ROLLBACK` conflict, throws and leaves
/// nothing committed; but a `ROLLBACK` statement succeeds, so the statements after it run in
/// autocommit and stay, and the `COMMIT` fails (`SQLITE_ERROR`). The same holds in an
/// interactive transaction. With Hrana 3 conditions those statements are skipped instead
/// (`batch_steps_after_their_transaction_ended`).
#[test]
fn libsql_node_client_transaction_ends_early() {
    let server = TestServer::start(token_config(), HostConfig::default(), StorageConfig::default());
    let ws = server.url.replacen("http://", "ws://", 1);
    for url in [format!("{}/db/team-node-txn/", server.url), format!("{ws}/db/team-node-txn-ws")] {
        let Some(summary) = run_node("transactions.mjs", &[&url]) else { return };
        let constraint = json!({"error": "SQLITE_CONSTRAINT", "committed": 0});
        assert_eq!(summary["batch_failing"], constraint, "{url}: {summary}");
        assert_eq!(summary["batch_orRollback"], constraint, "{url}: {summary}");
        let after_rollback = json!({"error": "SQLITE_ERROR", "committed": 1});
        assert_eq!(summary["batch_rollback"], after_rollback, "{url}: {summary}");
        assert_eq!(
            summary["transaction_orRollback"],
            json!({"endError": "SQLITE_CONSTRAINT", "afterError": null, "commitError": "SQLITE_ERROR", "committed": 1}),
            "{url}: {summary}"
        );
        assert_eq!(
            summary["transaction_rollback"],
            json!({"endError": null, "afterError": null, "commitError": "SQLITE_ERROR", "committed": 1}),
            "{url}: {summary}"
        );
    }
}

/// `@libsql/hrana-client` (what `@libsql/client` is built on) asked for Hrana 3, which makes it
/// speak protobuf: over HTTP it finds `v3-protobuf`; over WebSocket it offers only
/// `hrana3-protobuf`.
#[test]
fn hrana_client_protobuf() {
    let server = TestServer::start(token_config(), HostConfig::default(), StorageConfig::default());
    let ws = server.url.replacen("http://", "ws://", 1);
    let runs = [
        ("http", format!("{}/db/team-pb-node/", server.url), "protobuf"),
        ("ws", format!("{ws}/db/team-pb-node-ws"), "hrana3-protobuf"),
    ];
    for (transport, url, encoding) in runs {
        let Some(summary) = run_node("hrana_protobuf.mjs", &[&url, transport]) else { return };
        assert_eq!((summary["version"].clone(), summary["encoding"].clone()), (json!(3), json!(encoding)));
        assert_eq!(summary["insert"], json!({"affected": 1, "rowid": "1"}), "{summary}");
        let select = &summary["select"];
        assert_eq!(select["columns"], json!(["i", "f", "s", "b", "n"]), "{summary}");
        assert_eq!(select["decltypes"], json!(["INTEGER", "REAL", "TEXT", "BLOB", null]), "{summary}");
        assert_eq!(select["first"], json!(["-9223372036854775808", 1.5, "hé", [0, 255], null]), "{summary}");
        assert_eq!(select["second"], json!(["9223372036854775807", "named"]), "{summary}");
        assert_eq!(summary["error"], "SQLITE_ERROR", "{summary}");
        let batch = json!({"bad": "SQLITE_ERROR", "count": "2"});
        assert_eq!(
            (summary["batch"].clone(), summary["cursor"].clone()),
            (batch.clone(), batch),
            "{summary}"
        );
        assert_eq!(summary["describe"], json!({"params": 1, "cols": ["s"], "readonly": true}), "{summary}");
        assert_eq!((summary["autocommit"].clone(), summary["stored"].clone()), (json!(true), json!("2")));
    }
}

// ---- Hrana 3 over protobuf (`/v3-protobuf/...`) ---------------------------------------------

/// Status, content type and body of a protobuf `POST`.
fn post_pb(url: &str, token: Option<&str>, body: Vec<u8>) -> (u16, String, Vec<u8>) {
    let mut request = agent().post(url).header("content-type", "application/x-protobuf");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let mut response = request.send(&body[..]).expect("transport error");
    let content_type = response.headers().get("content-type").map_or("", |v| v.to_str().unwrap()).to_string();
    (response.status().as_u16(), content_type, response.body_mut().read_to_vec().unwrap())
}

/// A protobuf pipeline that must succeed as an HTTP request.
fn pb_pipeline(
    server: &TestServer,
    path: &str,
    baton: Option<&str>,
    requests: Vec<pb::StreamRequest>,
) -> pb::PipelineRespBody {
    let body = pb::PipelineReqBody { baton: baton.map(String::from), requests }.encode_to_vec();
    let (status, content_type, bytes) = post_pb(&format!("{}{path}", server.url), None, body);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(content_type, "application/x-protobuf");
    pb::PipelineRespBody::decode(&bytes[..]).expect("a PipelineRespBody")
}

/// The response of result `i`, asserting it is ok.
fn pb_ok(answer: &pb::PipelineRespBody, i: usize) -> pb::Resp {
    match &answer.results[i].res {
        Some(pb::Res::Ok(response)) => response.resp.clone().expect("a response type"),
        other => panic!("result {i}: {other:?}"),
    }
}

fn pb_error(answer: &pb::PipelineRespBody, i: usize) -> pb::Error {
    match &answer.results[i].res {
        Some(pb::Res::Error(error)) => error.clone(),
        other => panic!("result {i} is no error: {other:?}"),
    }
}

fn pb_result(answer: &pb::PipelineRespBody, i: usize) -> pb::StmtResult {
    match pb_ok(answer, i) {
        pb::Resp::Execute(pb::ExecuteResp { result: Some(result) }) => result,
        other => panic!("result {i} is no execute result: {other:?}"),
    }
}

fn pb_stmt(sql: &str) -> pb::StreamRequest {
    pb::execute(pb::stmt(sql, vec![]))
}

#[test]
fn protobuf_version_checks_and_routes() {
    let server = TestServer::start(token_config(), HostConfig::default(), StorageConfig::default());
    for path in ["/v3-protobuf", "/db/team-a/v3-protobuf"] {
        let answer = get(&format!("{}{path}", server.url), None);
        assert_eq!(answer.status, 200, "{path}");
    }
    // The token is checked as for JSON, and `x-namespace` routes to the same actor.
    let body =
        pb::PipelineReqBody { baton: None, requests: vec![pb_stmt("CREATE TABLE t(x)")] }.encode_to_vec();
    let (status, content_type, bytes) =
        post_pb(&format!("{}/db/team-a/v3-protobuf/pipeline", server.url), None, body.clone());
    assert_eq!((status, content_type.as_str()), (401, "application/json"));
    let error: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(error["code"], "unauthorized", "{error}");
    let (status, _, _) =
        post_pb(&format!("{}/db/team-a/v3-protobuf/pipeline", server.url), Some(TOKEN), body.clone());
    assert_eq!(status, 200);
    let request = agent()
        .post(format!("{}/v3-protobuf/pipeline", server.url))
        .header("x-namespace", "team-a")
        .header("authorization", format!("Bearer {TOKEN}"));
    let query = pb::PipelineReqBody { baton: None, requests: vec![pb_stmt("SELECT count(*) FROM t")] };
    let mut response = request.send(&query.encode_to_vec()[..]).unwrap();
    assert_eq!(response.status(), 200);
    let answer = pb::PipelineRespBody::decode(&response.body_mut().read_to_vec().unwrap()[..]).unwrap();
    assert_eq!(pb_result(&answer, 0).rows[0].values, vec![pb::int(0)]);
}

#[test]
fn protobuf_execute_values_args_and_errors() {
    let server = TestServer::default_config();
    let path = "/db/pb-a/v3-protobuf/pipeline";
    let values = vec![
        pb::null(),
        pb::int(i64::MIN),
        pb::int(i64::MAX),
        pb::int(0),
        pb::float(-2.5),
        pb::text("hé\"\n"),
        pb::blob(&[0, 1, 255]),
        pb::blob(&[]),
    ];
    let insert = pb::stmt("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values.clone());
    let named = pb::Stmt {
        sql: Some("INSERT INTO t(a, b) VALUES (:a, @b)".into()),
        named_args: vec![
            pb::NamedArg { name: ":a".into(), value: Some(pb::text("named")) },
            pb::NamedArg { name: "@b".into(), value: Some(pb::int(-7)) },
        ],
        ..pb::Stmt::default()
    };
    let quiet = pb::Stmt { want_rows: Some(false), ..pb::stmt("SELECT * FROM t", vec![]) };
    let answer = pb_pipeline(
        &server,
        path,
        None,
        vec![
            pb_stmt("CREATE TABLE t(a, b INTEGER, c, d, e REAL, f TEXT, g BLOB, h)"),
            pb::execute(insert),
            pb::execute(named),
            pb_stmt("SELECT * FROM t ORDER BY rowid"),
            pb::execute(quiet),
            pb_stmt("SELEC nothing"),
            pb::execute(pb::stmt("SELECT ?", vec![pb::int(1)])),
            pb::req(pb::Req::GetAutocommit(pb::Empty {})),
        ],
    );
    let created = pb_result(&answer, 0);
    assert_eq!((created.affected_row_count, created.last_insert_rowid), (0, None));
    let inserted = pb_result(&answer, 1);
    assert_eq!((inserted.affected_row_count, inserted.last_insert_rowid), (1, Some(1)));
    assert_eq!(pb_result(&answer, 2).last_insert_rowid, Some(2));
    let selected = pb_result(&answer, 3);
    let names: Vec<_> = selected.cols.iter().map(|c| c.name.clone().unwrap()).collect();
    assert_eq!(names, ["a", "b", "c", "d", "e", "f", "g", "h"]);
    assert_eq!(selected.cols[1].decltype.as_deref(), Some("INTEGER"));
    assert_eq!(selected.cols[0].decltype, None);
    assert_eq!(selected.rows[0].values, values, "every value type round-trips");
    assert_eq!(selected.rows[1].values[..2], [pb::text("named"), pb::int(-7)]);
    assert_eq!(selected.rows[1].values[2], pb::null());
    let quiet = pb_result(&answer, 4);
    assert!(quiet.rows.is_empty() && quiet.cols.len() == 8, "{quiet:?}");
    assert_eq!(pb_error(&answer, 5).code, "SQLITE_ERROR");
    assert!(pb_error(&answer, 5).message.contains("syntax"), "{:?}", pb_error(&answer, 5));
    assert_eq!(pb_result(&answer, 6).rows.len(), 1, "the stream goes on after an error");
    assert_eq!(pb_ok(&answer, 7), pb::Resp::GetAutocommit(pb::GetAutocommitResp { is_autocommit: true }));
    let baton = answer.baton.clone().expect("a baton");
    assert_eq!(answer.base_url, None);

    // The stream's transaction spans requests; `close` ends it and its baton.
    let answer = pb_pipeline(
        &server,
        path,
        Some(&baton),
        vec![pb_stmt("BEGIN"), pb::req(pb::Req::GetAutocommit(pb::Empty {})), pb_stmt("ROLLBACK")],
    );
    assert_eq!(pb_ok(&answer, 1), pb::Resp::GetAutocommit(pb::GetAutocommitResp { is_autocommit: false }));
    let answer =
        pb_pipeline(&server, path, answer.baton.as_deref(), vec![pb::req(pb::Req::Close(pb::Empty {}))]);
    assert_eq!(pb_ok(&answer, 0), pb::Resp::Close(pb::Empty {}));
    assert_eq!(answer.baton, None);

    // Both kinds of arguments at once is a statement error, as in JSON.
    let both = pb::Stmt {
        named_args: vec![pb::NamedArg { name: ":a".into(), value: Some(pb::int(1)) }],
        ..pb::stmt("SELECT ?", vec![pb::int(1)])
    };
    let answer = pb_pipeline(&server, path, None, vec![pb::execute(both)]);
    assert_eq!(pb_error(&answer, 0).code, "ARGS_BOTH_POSITIONAL_AND_NAMED");
}

#[test]
fn protobuf_batch_conditions() {
    let server = TestServer::default_config();
    use pb::C;
    let steps = vec![
        pb::step(None, "CREATE TABLE t(x NOT NULL)"),
        pb::step(Some(pb::cond(C::Ok(0))), "INSERT INTO t VALUES (NULL)"),
        pb::step(Some(pb::cond(C::Error(1))), "INSERT INTO t VALUES (1)"),
        pb::step(Some(pb::cond(C::Not(Box::new(pb::cond(C::Ok(2)))))), "INSERT INTO t VALUES (2)"),
        pb::step(
            Some(pb::cond(C::And(pb::CondList { conds: vec![pb::cond(C::Ok(2)), pb::cond(C::Error(1))] }))),
            "INSERT INTO t VALUES (3)",
        ),
        pb::step(
            Some(pb::cond(C::Or(pb::CondList { conds: vec![pb::cond(C::Ok(1)), pb::cond(C::Error(2))] }))),
            "INSERT INTO t VALUES (4)",
        ),
        pb::step(Some(pb::cond(C::IsAutocommit(pb::Empty {}))), "SELECT x FROM t ORDER BY x"),
    ];
    let batch = pb::req(pb::Req::Batch(pb::BatchReq { batch: Some(pb::Batch { steps }) }));
    let answer = pb_pipeline(&server, "/db/pb-batch/v3-protobuf/pipeline", None, vec![batch]);
    let pb::Resp::Batch(pb::BatchResp { result: Some(result) }) = pb_ok(&answer, 0) else {
        panic!("no batch result: {answer:?}")
    };
    assert_eq!(result.step_results.keys().copied().collect::<Vec<_>>(), [0, 2, 4, 6]);
    assert_eq!(result.step_errors.keys().copied().collect::<Vec<_>>(), [1]);
    assert_eq!(result.step_errors[&1].code, "SQLITE_CONSTRAINT");
    // Step 0 has an empty result, present all the same.
    assert_eq!(result.step_results[&0], pb::StmtResult::default());
    let rows: Vec<_> = result.step_results[&6].rows.iter().map(|r| r.values.clone()).collect();
    assert_eq!(rows, [vec![pb::int(1)], vec![pb::int(3)]]);

    // A condition on a later step breaks the protocol: the whole request fails, as in JSON.
    let steps = vec![pb::step(Some(pb::cond(C::Ok(1))), "SELECT 1"), pb::step(None, "SELECT 2")];
    let batch = pb::req(pb::Req::Batch(pb::BatchReq { batch: Some(pb::Batch { steps }) }));
    let body = pb::PipelineReqBody { baton: None, requests: vec![batch] }.encode_to_vec();
    let (status, _, bytes) = post_pb(&format!("{}/db/pb-batch/v3-protobuf/pipeline", server.url), None, body);
    let error: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!((status, error["code"].as_str()), (400, Some("bad_request")), "{error}");
}

#[test]
fn protobuf_stored_sql_sequence_and_describe() {
    let server = TestServer::default_config();
    let path = "/db/pb-sql/v3-protobuf/pipeline";
    let sql = |sql: &str| pb::SqlReq { sql: Some(sql.into()), sql_id: None };
    let answer = pb_pipeline(
        &server,
        path,
        None,
        vec![
            pb::req(pb::Req::Sequence(sql(
                "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('a');",
            ))),
            pb::req(pb::Req::StoreSql(pb::StoreSqlReq {
                sql_id: 5,
                sql: "SELECT v FROM t WHERE id = ?".into(),
            })),
            pb::execute(pb::Stmt { sql_id: Some(5), args: vec![pb::int(1)], ..pb::Stmt::default() }),
            pb::req(pb::Req::Describe(pb::SqlReq { sql: None, sql_id: Some(5) })),
            pb::req(pb::Req::Describe(sql("INSERT INTO t(v) VALUES (:v)"))),
            pb::req(pb::Req::Describe(sql("EXPLAIN SELECT 1"))),
            pb::req(pb::Req::CloseSql(pb::CloseSqlReq { sql_id: 5 })),
            pb::req(pb::Req::Sequence(sql("SELEC"))),
        ],
    );
    assert_eq!(pb_ok(&answer, 0), pb::Resp::Sequence(pb::Empty {}));
    assert_eq!(pb_ok(&answer, 1), pb::Resp::StoreSql(pb::Empty {}));
    assert_eq!(pb_result(&answer, 2).rows[0].values, [pb::text("a")]);
    let describe = |i: usize| match pb_ok(&answer, i) {
        pb::Resp::Describe(pb::DescribeResp { result: Some(result) }) => result,
        other => panic!("result {i} is no description: {other:?}"),
    };
    let select = describe(3);
    assert_eq!((select.params.len(), select.params[0].name.clone()), (1, None));
    assert_eq!(select.cols, [pb::Col { name: Some("v".into()), decltype: Some("TEXT".into()) }]);
    assert!(select.is_readonly && !select.is_explain);
    let insert = describe(4);
    assert_eq!(insert.params[0].name.as_deref(), Some(":v"));
    assert!(!insert.is_readonly && insert.cols.is_empty());
    assert!(describe(5).is_explain);
    assert_eq!(pb_ok(&answer, 6), pb::Resp::CloseSql(pb::Empty {}));
    assert_eq!(pb_error(&answer, 7).code, "SQLITE_ERROR");

    // A closed SQL text is gone: naming it breaks the protocol.
    let baton = answer.baton.clone().unwrap();
    let body = pb::PipelineReqBody {
        baton: Some(baton),
        requests: vec![pb::execute(pb::Stmt { sql_id: Some(5), ..pb::Stmt::default() })],
    };
    let (status, _, bytes) = post_pb(&format!("{}{path}", server.url), None, body.encode_to_vec());
    let error: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!((status, error["code"].as_str()), (400, Some("bad_request")), "{error}");
}

/// Splits a protobuf cursor answer into its length-delimited messages.
fn split_delimited(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    while !bytes.is_empty() {
        let length = prost::decode_length_delimiter(&mut bytes).unwrap();
        messages.push(bytes[..length].to_vec());
        bytes = &bytes[length..];
    }
    messages
}

#[test]
fn protobuf_cursor_frames_entries() {
    let server = TestServer::default_config();
    let url = format!("{}/db/pb-cursor/v3-protobuf/cursor", server.url);
    let steps = vec![
        pb::step(None, "CREATE TABLE t(x INTEGER)"),
        pb::BatchStep {
            condition: None,
            stmt: Some(pb::stmt("INSERT INTO t VALUES (?), (?)", vec![pb::int(1), pb::int(-1)])),
        },
        pb::step(None, "SELECT x FROM t ORDER BY x"),
        pb::step(None, "SELEC"),
        pb::step(Some(pb::cond(pb::C::Ok(3))), "SELECT 1"),
    ];
    let body = pb::CursorReqBody { baton: None, batch: Some(pb::Batch { steps }) }.encode_to_vec();
    let (status, content_type, bytes) = post_pb(&url, None, body);
    assert_eq!((status, content_type.as_str()), (200, "application/octet-stream"));
    let messages = split_delimited(&bytes);
    let head = pb::CursorRespBody::decode(&messages[0][..]).unwrap();
    assert!(head.baton.is_some() && head.base_url.is_none());
    let entries: Vec<pb::Entry> =
        messages[1..].iter().map(|m| pb::CursorEntry::decode(&m[..]).unwrap().entry.unwrap()).collect();
    let begin = |step: u32, cols: Vec<pb::Col>| pb::Entry::StepBegin(pb::StepBegin { step, cols });
    let end = |affected_row_count, last_insert_rowid| {
        pb::Entry::StepEnd(pb::StepEnd { affected_row_count, last_insert_rowid })
    };
    let col = pb::Col { name: Some("x".into()), decltype: Some("INTEGER".into()) };
    assert_eq!(
        entries[..7],
        [
            begin(0, vec![]),
            end(0, None),
            begin(1, vec![]),
            end(2, Some(2)),
            begin(2, vec![col]),
            pb::Entry::Row(pb::Row { values: vec![pb::int(-1)] }),
            pb::Entry::Row(pb::Row { values: vec![pb::int(1)] }),
        ]
    );
    assert_eq!(entries[7], end(0, None));
    let pb::Entry::StepError(error) = &entries[8] else { panic!("{:?}", entries[8]) };
    assert_eq!((error.step, error.error.as_ref().unwrap().code.as_str()), (3, "SQLITE_ERROR"));
    assert_eq!(entries.len(), 9, "the skipped step has no entries");

    // The baton carries on to a pipeline on the same stream.
    let answer = pb_pipeline(
        &server,
        "/db/pb-cursor/v3-protobuf/pipeline",
        head.baton.as_deref(),
        vec![pb_stmt("SELECT count(*) FROM t")],
    );
    assert_eq!(pb_result(&answer, 0).rows[0].values, [pb::int(2)]);
}

#[test]
fn protobuf_malformed_bodies_and_batons() {
    let server = TestServer::start(
        ServerConfig { body_bytes_max: 64 << 10, statement_bytes_max: 100, ..ServerConfig::default() },
        HostConfig::default(),
        StorageConfig::default(),
    );
    let url = format!("{}/db/pb-bad/v3-protobuf/pipeline", server.url);
    let refused = |url: &str, body: Vec<u8>| {
        let (status, content_type, bytes) = post_pb(url, None, body);
        let error: Value = serde_json::from_slice(&bytes).expect("a JSON error body");
        assert_eq!(content_type, "application/json");
        (status, error["code"].as_str().unwrap_or("").to_string())
    };
    let bad = (400, "bad_request".to_string());
    // Truncated, a wrong wire type, a JSON body, a request or a value without a type.
    let whole = pb::PipelineReqBody { baton: None, requests: vec![pb_stmt("SELECT 1")] }.encode_to_vec();
    assert_eq!(refused(&url, whole[..whole.len() - 1].to_vec()), bad);
    assert_eq!(refused(&url, vec![0x0d, 1, 2, 3, 4]), bad, "baton as fixed32");
    assert_eq!(refused(&url, br#"{"requests": []}"#.to_vec()), bad);
    let empty_request = pb::PipelineReqBody { baton: None, requests: vec![pb::StreamRequest { req: None }] };
    assert_eq!(refused(&url, empty_request.encode_to_vec()), bad);
    let typeless = pb::execute(pb::stmt("SELECT ?", vec![pb::Value { v: None }]));
    assert_eq!(
        refused(&url, pb::PipelineReqBody { baton: None, requests: vec![typeless] }.encode_to_vec()),
        bad
    );
    let no_stmt = pb::req(pb::Req::Execute(pb::ExecuteReq { stmt: None }));
    assert_eq!(
        refused(&url, pb::PipelineReqBody { baton: None, requests: vec![no_stmt] }.encode_to_vec()),
        bad
    );
    let cursor = format!("{}/db/pb-bad/v3-protobuf/cursor", server.url);
    assert_eq!(refused(&cursor, pb::CursorReqBody { baton: None, batch: None }.encode_to_vec()), bad);
    assert_eq!(refused(&cursor, vec![0xff]), bad);
    // Unknown batons, as in JSON.
    for forged in ["", "not-a-baton"] {
        let body = pb::PipelineReqBody { baton: Some(forged.into()), requests: vec![pb_stmt("SELECT 1")] };
        assert_eq!(refused(&url, body.encode_to_vec()), bad, "{forged:?}");
    }
    // The body and statement limits hold.
    let big = pb::PipelineReqBody {
        baton: None,
        requests: vec![pb::execute(pb::stmt("SELECT ?", vec![pb::blob(&[0; 70 << 10])]))],
    };
    assert_eq!(refused(&url, big.encode_to_vec()).0, 413);
    let long = format!("SELECT '{}'", "x".repeat(200));
    let answer = pb_pipeline(&server, "/db/pb-bad/v3-protobuf/pipeline", None, vec![pb_stmt(&long)]);
    assert_eq!(pb_error(&answer, 0).code, "SQLITE_TOOBIG");
    // An empty body is an empty pipeline: a new stream, nothing run.
    let answer = pb_pipeline(&server, "/db/pb-bad/v3-protobuf/pipeline", None, vec![]);
    assert!(answer.results.is_empty() && answer.baton.is_some());
}
