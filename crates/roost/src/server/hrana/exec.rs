//! Serving stream requests: statements, batches with conditions, sequences, descriptions and
//! stored SQL texts.
//!
//! Three kinds of failure, as in sqld: a statement that fails is a Hrana error in the answer
//! (the stream goes on); a request that breaks the protocol (an unknown `sql_id`, a condition on
//! a later step, a request after `close`...) fails the whole HTTP request with `bad_request`;
//! host and storage failures fail the HTTP request with their own code. The last two end the
//! stream.

use std::collections::HashMap;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{json, Value as Json};

use super::super::body::{buffer_error, encode};
use super::super::error::ApiError;
use super::proto::{self, BatchCond, HError, Reply, ResponseJson, StmtResultJson, StreamRequest};
use super::protobuf;
use super::stream::Stream;
use crate::host::RequestMemory;
use crate::vfs::{self, AnswerMeter, Database, Description, Params, QueryResult, Value};

/// How answers are written: both encodings come out of the same executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Protobuf,
}

/// Settings of one request.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub version: u8,
    pub encoding: Encoding,
    pub statement_bytes_max: usize,
    pub sql_texts_max: usize,
}

/// A statement ready to run.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub sql: String,
    pub params: Params,
    pub want_rows: bool,
}

/// A batch step ready to run.
#[derive(Debug, Clone)]
pub struct Step {
    pub condition: Option<BatchCond>,
    pub stmt: Prepared,
}

/// What became of a batch step.
#[derive(Debug)]
pub enum Outcome {
    Skipped,
    Done(QueryResult),
    Failed(HError),
}

fn sqlite_code_name(code: i32) -> &'static str {
    match code & 0xff {
        1 => "SQLITE_ERROR",
        2 => "SQLITE_INTERNAL",
        3 => "SQLITE_PERM",
        4 => "SQLITE_ABORT",
        5 => "SQLITE_BUSY",
        6 => "SQLITE_LOCKED",
        7 => "SQLITE_NOMEM",
        8 => "SQLITE_READONLY",
        9 => "SQLITE_INTERRUPT",
        10 => "SQLITE_IOERR",
        11 => "SQLITE_CORRUPT",
        12 => "SQLITE_NOTFOUND",
        13 => "SQLITE_FULL",
        14 => "SQLITE_CANTOPEN",
        15 => "SQLITE_PROTOCOL",
        17 => "SQLITE_SCHEMA",
        18 => "SQLITE_TOOBIG",
        19 => "SQLITE_CONSTRAINT",
        20 => "SQLITE_MISMATCH",
        21 => "SQLITE_MISUSE",
        22 => "SQLITE_NOLFS",
        23 => "SQLITE_AUTH",
        25 => "SQLITE_RANGE",
        26 => "SQLITE_NOTADB",
        _ => "SQLITE_UNKNOWN",
    }
}

/// A statement's failure as a Hrana error, or the storage failure that must end the request.
pub fn statement_error(error: vfs::Error) -> Result<HError, vfs::Error> {
    use vfs::Error as E;
    Ok(match error {
        E::Sql { code, message } => HError::new(sqlite_code_name(code), message),
        E::Parameters(message) if message.starts_with("one statement expected") => {
            HError::new("SQL_MANY_STATEMENTS", "SQL string contains more than one statement")
        }
        E::Parameters(message) => HError::new("ARGS_INVALID", message),
        E::TooManyRows { .. } | E::AnswerTooLarge { .. } => {
            HError::new("RESPONSE_TOO_LARGE", error.to_string())
        }
        E::TransactionTooLarge { .. } => HError::new("TRANSACTION_TOO_LARGE", error.to_string()),
        // Only transactional JSON batches raise it; the code is the one libSQL's clients use.
        E::TransactionClosed => HError::new("TRANSACTION_CLOSED", error.to_string()),
        E::ScratchFull { .. } => HError::new("SQLITE_FULL", error.to_string()),
        E::Interrupted => HError::new(
            "SQLITE_INTERRUPT",
            "statement ran longer than the time limit and was interrupted; its transaction was rolled back",
        ),
        E::InvalidActorId(_) => HError::new("SQLITE_MISUSE", error.to_string()),
        // Clients know SQLITE_FULL: the statement was not applied and the stream goes on.
        E::Store(crate::kv::KvError::StorageFull { .. }) => HError::new(
            "SQLITE_FULL",
            "the server is out of disk space; the statement was not applied (reads still work)",
        ),
        E::InBatch { source, .. } => return statement_error(*source),
        // The answer pool is busy: the whole HTTP request fails with `overloaded` (retry).
        E::AnswerMemoryFull { .. }
        | E::Fenced
        | E::Moved(_)
        | E::Store(_)
        | E::Corrupt(_)
        | E::ActorBusy
        | E::Poisoned
        | E::ScratchFolder(_) => return Err(error),
    })
}

fn no_statement() -> HError {
    HError::new("SQL_NO_STATEMENT", "SQL string does not contain any statement")
}

/// The SQL text of a request: `sql` or a stored `sql_id`, exactly one of them.
fn resolve_sql(
    sqls: &HashMap<i32, String>,
    sql: Option<String>,
    sql_id: Option<i32>,
) -> Result<String, ApiError> {
    match (sql, sql_id) {
        (Some(sql), None) => Ok(sql),
        (None, Some(id)) => sqls
            .get(&id)
            .cloned()
            .ok_or_else(|| ApiError::bad_request(format!("SQL text {id} is not stored on this stream"))),
        (Some(_), Some(_)) => Err(ApiError::bad_request("a statement has both `sql` and `sql_id`")),
        (None, None) => Err(ApiError::bad_request("a statement has neither `sql` nor `sql_id`")),
    }
}

fn too_long(sql: &str, ctx: &Ctx) -> Option<HError> {
    (sql.len() > ctx.statement_bytes_max).then(|| {
        HError::new("SQLITE_TOOBIG", format!("SQL statement longer than {} bytes", ctx.statement_bytes_max))
    })
}

/// Resolves a `Stmt`: protocol errors fail the request (outer), statement errors are answers.
pub fn prepare(
    sqls: &HashMap<i32, String>,
    stmt: proto::Stmt,
    ctx: &Ctx,
) -> Result<Result<Prepared, HError>, ApiError> {
    let sql = resolve_sql(sqls, stmt.sql, stmt.sql_id)?;
    if let Some(error) = too_long(&sql, ctx) {
        return Ok(Err(error));
    }
    let args = stmt.args.unwrap_or_default();
    let named = stmt.named_args.unwrap_or_default();
    let params = match (args.is_empty(), named.is_empty()) {
        (true, true) => Params::None,
        (false, true) => Params::Positional(args.into_iter().map(|v| v.0).collect()),
        (true, false) => Params::Named(named.into_iter().map(|a| (a.name, a.value.0)).collect()),
        (false, false) => {
            return Ok(Err(HError::new(
                "ARGS_BOTH_POSITIONAL_AND_NAMED",
                "Specifying both positional and named arguments is not supported",
            )))
        }
    };
    Ok(Ok(Prepared { sql, params, want_rows: stmt.want_rows.unwrap_or(true) }))
}

/// Runs one statement, its rows charged to `meter`; statement errors are part of the answer.
pub fn run_statement(
    db: &mut Database,
    stmt: &Prepared,
    meter: &dyn AnswerMeter,
) -> Result<Result<QueryResult, HError>, vfs::Error> {
    match db.execute_metered(&stmt.sql, &stmt.params, meter) {
        Ok(result) => Ok(Ok(result)),
        // SQLite refuses a text without statements; say so plainly.
        Err(vfs::Error::Sql { .. }) if crate::sql::scan(&stmt.sql).empty => Ok(Err(no_statement())),
        Err(error) => statement_error(error).map(Err),
    }
}

/// Whether a condition holds before the next step. As in libSQL's server, a step either ran
/// to its end (`ok`) or did not (`error`): a step skipped by its own condition counts as not
/// ok, so `error` holds for it too. `is_autocommit` reads SQLite's own flag, so a transaction
/// ended by any statement (`ROLLBACK`, `COMMIT`, an `OR ROLLBACK` conflict, a trigger's
/// `RAISE(ROLLBACK)`) is seen by the next step's condition.
fn holds(cond: &BatchCond, outcomes: &[Outcome], db: &Database) -> bool {
    let done = |step: &u32| matches!(outcomes.get(*step as usize), Some(Outcome::Done(_)));
    match cond {
        BatchCond::Ok { step } => done(step),
        BatchCond::Error { step } => !done(step),
        BatchCond::Not { cond } => !holds(cond, outcomes, db),
        BatchCond::And { conds } => conds.iter().all(|c| holds(c, outcomes, db)),
        BatchCond::Or { conds } => conds.iter().any(|c| holds(c, outcomes, db)),
        BatchCond::IsAutocommit {} => !db.in_transaction(),
    }
}

/// Runs a batch: each step whose condition holds, in order, whatever the others did. Like
/// libSQL's server, a step without a condition runs even after an earlier step ended the
/// transaction (it then runs in autocommit): clients that want atomic batches say so with
/// conditions (`ok` of the previous step and, from Hrana 3, `not is_autocommit`), as
/// `@libsql/client` does for `batch()` and interactive transactions.
pub fn run_batch(
    db: &mut Database,
    steps: &[Step],
    meter: &dyn AnswerMeter,
) -> Result<Vec<Outcome>, vfs::Error> {
    let mut outcomes = Vec::with_capacity(steps.len());
    for step in steps {
        if step.condition.as_ref().is_some_and(|c| !holds(c, &outcomes, db)) {
            outcomes.push(Outcome::Skipped);
            continue;
        }
        outcomes.push(match run_statement(db, &step.stmt, meter)? {
            Ok(result) => Outcome::Done(result),
            Err(error) => Outcome::Failed(error),
        });
    }
    Ok(outcomes)
}

/// Checks a condition of step `index`: it may only look at earlier steps (and `is_autocommit`
/// needs Hrana 3).
fn check_condition(cond: &BatchCond, index: usize, ctx: &Ctx) -> Result<(), ApiError> {
    match cond {
        BatchCond::Ok { step } | BatchCond::Error { step } if *step as usize >= index => {
            Err(ApiError::bad_request(format!("the condition of batch step {index} refers to step {step}")))
        }
        BatchCond::Ok { .. } | BatchCond::Error { .. } => Ok(()),
        BatchCond::Not { cond } => check_condition(cond, index, ctx),
        BatchCond::And { conds } | BatchCond::Or { conds } => {
            conds.iter().try_for_each(|c| check_condition(c, index, ctx))
        }
        BatchCond::IsAutocommit {} if ctx.version < 3 => {
            Err(ApiError::bad_request("the `is_autocommit` condition needs Hrana 3 (use /v3)"))
        }
        BatchCond::IsAutocommit {} => Ok(()),
    }
}

/// Resolves a batch: protocol errors fail the request; a step that cannot run (with its index)
/// fails the whole batch request (as in sqld), before anything runs.
pub fn prepare_batch(
    sqls: &HashMap<i32, String>,
    batch: proto::Batch,
    ctx: &Ctx,
) -> Result<Result<Vec<Step>, (usize, HError)>, ApiError> {
    let mut steps = Vec::with_capacity(batch.steps.len());
    for (index, step) in batch.steps.into_iter().enumerate() {
        if let Some(cond) = &step.condition {
            check_condition(cond, index, ctx)?;
        }
        match prepare(sqls, step.stmt, ctx)? {
            Ok(stmt) => steps.push(Step { condition: step.condition, stmt }),
            Err(error) => return Ok(Err((index, error))),
        }
    }
    Ok(Ok(steps))
}

/// A batch's `BatchResult`: `{"step_results": [...], "step_errors": [...]}`.
pub struct BatchJson<'a> {
    pub steps: &'a [Step],
    pub outcomes: &'a [Outcome],
}

impl Serialize for BatchJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let pairs = || self.steps.iter().zip(self.outcomes);
        let results = pairs().map(|(step, outcome)| match outcome {
            Outcome::Done(result) => Some(StmtResultJson { result, want_rows: step.stmt.want_rows }),
            Outcome::Skipped | Outcome::Failed(_) => None,
        });
        let errors = pairs().map(|(_, outcome)| match outcome {
            Outcome::Failed(error) => Some(error.json()),
            Outcome::Skipped | Outcome::Done(_) => None,
        });
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("step_results", &Seq(results))?;
        map.serialize_entry("step_errors", &Seq(errors))?;
        map.end()
    }
}

/// Serializes an iterator as a JSON array (cloned per use).
struct Seq<I>(I);

impl<I: Iterator<Item = T> + Clone, T: Serialize> Serialize for Seq<I> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.clone())
    }
}

fn push_line<T: Serialize>(out: &mut Vec<u8>, entry: &T) {
    serde_json::to_writer(&mut *out, entry).expect("JSON values serialize");
    out.push(b'\n');
}

/// A cursor's `{"type": "row", "row": [...]}` entry.
struct RowEntry<'a>(&'a [Value]);

impl Serialize for RowEntry<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("type", "row")?;
        map.serialize_entry("row", &proto::RowJson(self.0))?;
        map.end()
    }
}

/// The cursor entry of a step that failed before it began.
pub fn step_error_entry(step: usize, error: &HError) -> Vec<u8> {
    let mut out = Vec::new();
    push_line(&mut out, &json!({"type": "step_error", "step": step, "error": error.json()}));
    out
}

/// The newline-delimited cursor entries of a finished batch.
pub fn cursor_entries(steps: &[Step], outcomes: &[Outcome]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, (step, outcome)) in steps.iter().zip(outcomes).enumerate() {
        match outcome {
            Outcome::Skipped => {}
            Outcome::Done(result) => {
                let begin = json!({"type": "step_begin", "step": index, "cols": proto::cols_json(result)});
                push_line(&mut out, &begin);
                if step.stmt.want_rows {
                    for row in &result.rows {
                        push_line(&mut out, &RowEntry(row));
                    }
                }
                let end = json!({
                    "type": "step_end",
                    "affected_row_count": result.rows_affected,
                    "last_insert_rowid": proto::last_insert_rowid(result),
                });
                push_line(&mut out, &end);
            }
            Outcome::Failed(error) => {
                push_line(&mut out, &json!({"type": "step_error", "step": index, "error": error.json()}));
            }
        }
    }
    out
}

/// Describes a statement from SQLite's prepared statement (parameters, columns with their
/// declared types, `is_explain`, `is_readonly`), without running it.
pub fn describe(db: &mut Database, sql: &str) -> Result<Result<Description, HError>, vfs::Error> {
    if crate::sql::scan(sql).empty {
        return Ok(Err(no_statement()));
    }
    match db.describe(sql) {
        Ok(description) => Ok(Ok(description)),
        Err(error) => statement_error(error).map(Err),
    }
}

/// A `DescribeResult` in JSON.
fn describe_json(description: &Description) -> Json {
    let params: Vec<Json> = description.params.iter().map(|name| json!({"name": name})).collect();
    let cols: Vec<Json> = description
        .columns
        .iter()
        .map(|(name, decltype)| json!({"name": name, "decltype": decltype}))
        .collect();
    json!({
        "params": params,
        "cols": cols,
        "is_explain": description.is_explain,
        "is_readonly": description.is_readonly,
    })
}

/// A `describe` response body.
fn describe_answer(description: Description, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Json => {
            encode(&proto::response("describe", json!({"result": describe_json(&description)})))
        }
        Encoding::Protobuf => protobuf::describe_body(description),
    }
}

/// The body of a response of `kind` in `encoding`: JSON carries the `type` (and `fields`);
/// protobuf leaves the kind to the envelope (its field number), and `pb` gives the body.
fn simple_answer(kind: &str, fields: Json, encoding: Encoding, pb: impl FnOnce() -> Vec<u8>) -> Reply {
    Ok(match encoding {
        Encoding::Json => encode(&proto::response(kind, fields)),
        Encoding::Protobuf => pb(),
    })
}

/// A cursor's entries in `encoding`: JSON lines, or length-delimited protobuf messages.
fn entries(steps: &[Step], outcomes: Vec<Outcome>, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Json => cursor_entries(steps, &outcomes),
        Encoding::Protobuf => protobuf::cursor_entries(steps, outcomes),
    }
}

/// An `execute` response body.
fn execute_answer(result: QueryResult, want_rows: bool, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Json => {
            let value = StmtResultJson { result: &result, want_rows };
            encode(&ResponseJson { kind: "execute", field: "result", value })
        }
        Encoding::Protobuf => protobuf::execute_body(result, want_rows),
    }
}

/// A `batch` response body.
fn batch_answer(steps: &[Step], outcomes: Vec<Outcome>, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Json => {
            let value = BatchJson { steps, outcomes: &outcomes };
            encode(&ResponseJson { kind: "batch", field: "result", value })
        }
        Encoding::Protobuf => protobuf::batch_body(steps, outcomes),
    }
}

/// Runs a batch for a cursor: its entries, newline-delimited JSON or length-delimited protobuf
/// (a step that cannot run ends the batch there, reported as that step's error).
pub async fn cursor(
    stream: &mut Stream,
    batch: proto::Batch,
    ctx: &Ctx,
    memory: &RequestMemory,
) -> Result<Vec<u8>, ApiError> {
    match prepare_batch(&stream.sqls, batch, ctx)? {
        Ok(steps) => {
            let (meter, encoding) = (memory.clone(), ctx.encoding);
            let entries = stream
                .run(move |db| {
                    let outcomes = run_batch(db, &steps, &meter)?;
                    Ok(entries(&steps, outcomes, encoding))
                })
                .await?;
            Ok(entries)
        }
        Err((step, error)) => Ok(match ctx.encoding {
            Encoding::Json => step_error_entry(step, &error),
            Encoding::Protobuf => protobuf::step_error_entry(step, &error),
        }),
    }
}

/// Serves one stream request: its encoded response or a statement's Hrana error. Answers are
/// charged to `memory` while their rows are collected, and encoded on the blocking thread.
/// `Err` is a protocol error (`bad_request`) or a host failure; both end the stream.
pub async fn handle(
    stream: &mut Stream,
    request: StreamRequest,
    ctx: &Ctx,
    memory: &RequestMemory,
) -> Result<Reply, ApiError> {
    if stream.closed {
        return Err(ApiError::bad_request("the stream is closed"));
    }
    let (kind, encoding) = (request.kind(), ctx.encoding);
    let answer = |fields: Json| Ok(simple_answer(kind, fields, encoding, Vec::new));
    match request {
        StreamRequest::Close {} => {
            stream.closed = true;
            answer(json!({}))
        }
        StreamRequest::Execute { stmt } => {
            let stmt = match prepare(&stream.sqls, stmt, ctx)? {
                Ok(stmt) => stmt,
                Err(error) => return Ok(Err(error)),
            };
            let meter = memory.clone();
            Ok(stream
                .run(move |db| {
                    Ok(run_statement(db, &stmt, &meter)?
                        .map(|result| execute_answer(result, stmt.want_rows, encoding)))
                })
                .await?)
        }
        StreamRequest::Batch { batch } => {
            let steps = match prepare_batch(&stream.sqls, batch, ctx)? {
                Ok(steps) => steps,
                Err((_, error)) => return Ok(Err(error)),
            };
            let meter = memory.clone();
            Ok(Ok(stream
                .run(move |db| {
                    let outcomes = run_batch(db, &steps, &meter)?;
                    Ok(batch_answer(&steps, outcomes, encoding))
                })
                .await?))
        }
        StreamRequest::Sequence { sql, sql_id } => {
            let sql = resolve_sql(&stream.sqls, sql, sql_id)?;
            if let Some(error) = too_long(&sql, ctx) {
                return Ok(Err(error));
            }
            let done = stream
                .run(move |db| match db.execute_script(&sql) {
                    Ok(()) => Ok(Ok(())),
                    Err(error) => statement_error(error).map(Err),
                })
                .await?;
            done.map_or_else(|error| Ok(Err(error)), |()| answer(json!({})))
        }
        StreamRequest::Describe { sql, sql_id } => {
            let sql = resolve_sql(&stream.sqls, sql, sql_id)?;
            if let Some(error) = too_long(&sql, ctx) {
                return Ok(Err(error));
            }
            match stream.run(move |db| describe(db, &sql)).await? {
                Ok(description) => Ok(Ok(describe_answer(description, encoding))),
                Err(error) => Ok(Err(error)),
            }
        }
        StreamRequest::StoreSql { sql_id, sql } => {
            if stream.sqls.contains_key(&sql_id) {
                return Err(ApiError::bad_request(format!("SQL text {sql_id} is already stored")));
            }
            if let Some(error) = store_refused(stream.sqls.len(), &sql, ctx) {
                return Ok(Err(error));
            }
            stream.store_sql(sql_id, sql).map_err(|e| buffer_error(e, "storing SQL on a stream"))?;
            answer(json!({}))
        }
        StreamRequest::CloseSql { sql_id } => {
            stream.close_sql(sql_id);
            answer(json!({}))
        }
        StreamRequest::GetAutocommit {} => {
            if ctx.version < 3 {
                return Err(ApiError::bad_request("`get_autocommit` needs Hrana 3 (use /v3)"));
            }
            let is_autocommit = !stream.in_transaction();
            Ok(simple_answer(kind, json!({"is_autocommit": is_autocommit}), encoding, || {
                protobuf::autocommit_body(is_autocommit)
            }))
        }
    }
}

/// Why a SQL text cannot be stored next to `stored` others, if it cannot.
pub fn store_refused(stored: usize, sql: &str, ctx: &Ctx) -> Option<HError> {
    if stored >= ctx.sql_texts_max {
        Some(HError::new(
            "SQL_STORE_TOO_MANY",
            format!("{stored} SQL texts are stored already, no more can be stored"),
        ))
    } else if sql.len() > ctx.statement_bytes_max {
        Some(HError::new(
            "SQL_STORE_TOO_LARGE",
            format!("SQL text longer than {} bytes", ctx.statement_bytes_max),
        ))
    } else {
        None
    }
}

/// What `handle` does with `request` before it touches a database: resolves its SQL (stored
/// texts included, kept in `sqls`), checks its limits and prepares its statements or batch. For
/// the fuzz targets (`server::fuzzing`): every resolved statement respects the limits.
pub fn resolve_for_fuzzing(
    sqls: &mut HashMap<i32, String>,
    request: StreamRequest,
    ctx: &Ctx,
) -> Result<(), ApiError> {
    let check = |stmt: &Prepared| {
        assert!(stmt.sql.len() <= ctx.statement_bytes_max, "a statement over the limit was prepared");
        drop(crate::sql::scan(&stmt.sql));
    };
    match request {
        StreamRequest::Execute { stmt } => {
            if let Ok(stmt) = prepare(sqls, stmt, ctx)? {
                check(&stmt);
            }
        }
        StreamRequest::Batch { batch } => {
            if let Ok(steps) = prepare_batch(sqls, batch, ctx)? {
                steps.iter().for_each(|step| check(&step.stmt));
            }
        }
        StreamRequest::Sequence { sql, sql_id } | StreamRequest::Describe { sql, sql_id } => {
            let sql = resolve_sql(sqls, sql, sql_id)?;
            if too_long(&sql, ctx).is_none() {
                drop(crate::sql::scan(&sql));
            }
        }
        StreamRequest::StoreSql { sql_id, sql } => {
            if sqls.contains_key(&sql_id) {
                return Err(ApiError::bad_request(format!("SQL text {sql_id} is already stored")));
            }
            if store_refused(sqls.len(), &sql, ctx).is_none() {
                sqls.insert(sql_id, sql);
            }
        }
        StreamRequest::CloseSql { sql_id } => drop(sqls.remove(&sql_id)),
        StreamRequest::Close {} | StreamRequest::GetAutocommit {} => {}
    }
    Ok(())
}
