//! sqld's HTTP API v1 ("Hrana over HTTP 1"): `POST /v1/execute` with `{"stmt": Stmt}` answers
//! `{"result": StmtResult}`; `POST /v1/batch` with `{"batch": Batch}` answers
//! `{"result": BatchResult}` (step errors inside it). Each request runs on a stream of its own,
//! closed at its end (a transaction left open is rolled back). A statement that fails, or a
//! batch step that cannot be prepared, answers 400 with the Hrana error `{"message", "code"}`
//! at the top level, as sqld does (sqld answers SQLite errors with 500; Roost keeps 500 for its
//! own bugs).

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::super::body::{encode, json_answer, parse_json, JsonBody};
use super::super::error::ApiError;
use super::exec::{self, BatchJson};
use super::proto::{Batch, HError, Stmt, StmtResultJson};
use super::{authorized_actor, Hrana};

#[derive(Debug, Deserialize)]
struct ExecuteBody {
    stmt: Stmt,
}

#[derive(Debug, Deserialize)]
struct BatchBody {
    batch: Batch,
}

#[derive(Serialize)]
struct ResultBody<T> {
    result: T,
}

/// Hrana 1 semantics: no stored SQL, no `is_autocommit`.
const VERSION: u8 = 1;

fn statement_failed(error: HError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, error.code, error.message)
}

pub(super) async fn execute(hrana: Hrana, path: Option<String>, request: Request) -> Response {
    let served = async {
        let id = authorized_actor(&hrana, path, request.headers())?;
        let JsonBody { value: body, memory } =
            JsonBody::<ExecuteBody>::from_request(request, &hrana.app).await?;
        let ctx = hrana.ctx(VERSION, exec::Encoding::Json);
        let stmt = exec::prepare(&Default::default(), body.stmt, &ctx)?.map_err(statement_failed)?;
        let mut stream = hrana.streams.open(id, hrana.app.host().clone())?;
        let meter = memory.clone();
        let ran = stream
            .run(move |db| {
                Ok(exec::run_statement(db, &stmt, &meter)?.map(|result| {
                    encode(&ResultBody {
                        result: StmtResultJson { result: &result, want_rows: stmt.want_rows },
                    })
                }))
            })
            .await;
        stream.close().await;
        let answer = ran?.map_err(statement_failed)?;
        Ok::<_, ApiError>(json_answer(answer, memory))
    };
    served.await.unwrap_or_else(ApiError::into_hrana_response)
}

pub(super) async fn batch(hrana: Hrana, path: Option<String>, request: Request) -> Response {
    let served = async {
        let id = authorized_actor(&hrana, path, request.headers())?;
        let JsonBody { value: body, memory } =
            JsonBody::<BatchBody>::from_request(request, &hrana.app).await?;
        let ctx = hrana.ctx(VERSION, exec::Encoding::Json);
        let steps = exec::prepare_batch(&Default::default(), body.batch, &ctx)?
            .map_err(|(_, e)| statement_failed(e))?;
        let mut stream = hrana.streams.open(id, hrana.app.host().clone())?;
        let meter = memory.clone();
        let ran = stream
            .run(move |db| {
                let outcomes = exec::run_batch(db, &steps, &meter)?;
                Ok(encode(&ResultBody { result: BatchJson { steps: &steps, outcomes: &outcomes } }))
            })
            .await;
        stream.close().await;
        Ok::<_, ApiError>(json_answer(ran?, memory))
    };
    served.await.unwrap_or_else(ApiError::into_hrana_response)
}

/// Decodes `bytes` as the v1 bodies and resolves what decoded as the handlers do; answers how
/// many decoded (`server::fuzzing`).
pub(super) fn decode_for_fuzzing(bytes: &[u8], ctx: &exec::Ctx) -> usize {
    let ctx = exec::Ctx { version: VERSION, ..*ctx };
    let mut decoded = 0;
    if let Ok(body) = parse_json::<ExecuteBody>(bytes) {
        decoded += 1;
        let request = super::proto::StreamRequest::Execute { stmt: body.stmt };
        let _ = exec::resolve_for_fuzzing(&mut Default::default(), request, &ctx);
    }
    if let Ok(body) = parse_json::<BatchBody>(bytes) {
        decoded += 1;
        let request = super::proto::StreamRequest::Batch { batch: body.batch };
        let _ = exec::resolve_for_fuzzing(&mut Default::default(), request, &ctx);
    }
    decoded
}
