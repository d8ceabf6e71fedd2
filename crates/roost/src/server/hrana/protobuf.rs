//! Hrana 3's protobuf encoding (`/v3-protobuf/...` over HTTP, subprotocol `hrana3-protobuf`
//! over WebSocket), with the message and field numbers of libSQL's `hrana.proto` as sqld reads
//! and writes them.
//!
//! Requests are decoded into the structures below and converted at once into the JSON path's
//! structures ([`super::proto`]), so [`super::exec`] serves both encodings alike. Answers are
//! written from the executor's own results: a response's body is encoded on the blocking thread
//! (as JSON answers are), and the transports put it inside their envelopes as raw bytes, which
//! is valid because an embedded message and a `bytes` field share one wire format.

use prost::encoding::{encode_key, encode_varint, WireType};
use prost::Message;

use super::super::error::ApiError;
use super::exec::{Outcome, Step};
use super::proto::{self as json, HError, HValue};
use crate::vfs::{Description, QueryResult, Value as SqlValue};

/// An empty message (`close`, `hello_ok`, the `null` of a value...).
#[derive(Clone, PartialEq, Message)]
pub struct Empty {}

// ---- Shared structures -------------------------------------------------------------------

#[derive(Clone, PartialEq, Message)]
pub struct Value {
    #[prost(oneof = "ValueKind", tags = "1, 2, 3, 4, 5")]
    pub kind: Option<ValueKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ValueKind {
    #[prost(message, tag = "1")]
    Null(Empty),
    #[prost(sint64, tag = "2")]
    Integer(i64),
    #[prost(double, tag = "3")]
    Float(f64),
    #[prost(string, tag = "4")]
    Text(String),
    #[prost(bytes = "vec", tag = "5")]
    Blob(Vec<u8>),
}

#[derive(Clone, PartialEq, Message)]
pub struct Stmt {
    #[prost(string, optional, tag = "1")]
    pub sql: Option<String>,
    #[prost(int32, optional, tag = "2")]
    pub sql_id: Option<i32>,
    #[prost(message, repeated, tag = "3")]
    pub args: Vec<Value>,
    #[prost(message, repeated, tag = "4")]
    pub named_args: Vec<NamedArg>,
    #[prost(bool, optional, tag = "5")]
    pub want_rows: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedArg {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Value>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Batch {
    #[prost(message, repeated, tag = "1")]
    pub steps: Vec<BatchStep>,
}

#[derive(Clone, PartialEq, Message)]
pub struct BatchStep {
    #[prost(message, optional, tag = "1")]
    pub condition: Option<BatchCond>,
    #[prost(message, optional, tag = "2")]
    pub stmt: Option<Stmt>,
}

#[derive(Clone, PartialEq, Message)]
pub struct BatchCond {
    #[prost(oneof = "BatchCondKind", tags = "1, 2, 3, 4, 5, 6")]
    pub kind: Option<BatchCondKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum BatchCondKind {
    #[prost(uint32, tag = "1")]
    Ok(u32),
    #[prost(uint32, tag = "2")]
    Error(u32),
    #[prost(message, tag = "3")]
    Not(Box<BatchCond>),
    #[prost(message, tag = "4")]
    And(CondList),
    #[prost(message, tag = "5")]
    Or(CondList),
    #[prost(message, tag = "6")]
    IsAutocommit(Empty),
}

#[derive(Clone, PartialEq, Message)]
pub struct CondList {
    #[prost(message, repeated, tag = "1")]
    pub conds: Vec<BatchCond>,
}

/// The `sql` or `sql_id` of `sequence` and `describe` (over WebSocket after a `stream_id`).
#[derive(Clone, PartialEq, Message)]
pub struct SqlReq {
    #[prost(string, optional, tag = "1")]
    pub sql: Option<String>,
    #[prost(int32, optional, tag = "2")]
    pub sql_id: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct StoreSqlReq {
    #[prost(int32, tag = "1")]
    pub sql_id: i32,
    #[prost(string, tag = "2")]
    pub sql: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct SqlIdReq {
    #[prost(int32, tag = "1")]
    pub sql_id: i32,
}

// ---- Hrana over HTTP requests ------------------------------------------------------------

#[derive(Clone, PartialEq, Message)]
pub struct PipelineReqBody {
    #[prost(string, optional, tag = "1")]
    pub baton: Option<String>,
    #[prost(message, repeated, tag = "2")]
    pub requests: Vec<StreamRequest>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CursorReqBody {
    #[prost(string, optional, tag = "1")]
    pub baton: Option<String>,
    #[prost(message, optional, tag = "2")]
    pub batch: Option<Batch>,
}

#[derive(Clone, PartialEq, Message)]
pub struct StreamRequest {
    #[prost(oneof = "StreamRequestKind", tags = "1, 2, 3, 4, 5, 6, 7, 8")]
    pub kind: Option<StreamRequestKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum StreamRequestKind {
    #[prost(message, tag = "1")]
    Close(Empty),
    #[prost(message, tag = "2")]
    Execute(StmtReq),
    #[prost(message, tag = "3")]
    Batch(BatchReq),
    #[prost(message, tag = "4")]
    Sequence(SqlReq),
    #[prost(message, tag = "5")]
    Describe(SqlReq),
    #[prost(message, tag = "6")]
    StoreSql(StoreSqlReq),
    #[prost(message, tag = "7")]
    CloseSql(SqlIdReq),
    #[prost(message, tag = "8")]
    GetAutocommit(Empty),
}

#[derive(Clone, PartialEq, Message)]
pub struct StmtReq {
    #[prost(message, optional, tag = "1")]
    pub stmt: Option<Stmt>,
}

#[derive(Clone, PartialEq, Message)]
pub struct BatchReq {
    #[prost(message, optional, tag = "1")]
    pub batch: Option<Batch>,
}

// ---- Hrana over WebSocket requests -------------------------------------------------------

#[derive(Clone, PartialEq, Message)]
pub struct ClientMsg {
    #[prost(oneof = "ClientMsgKind", tags = "1, 2")]
    pub kind: Option<ClientMsgKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ClientMsgKind {
    #[prost(message, tag = "1")]
    Hello(HelloMsg),
    #[prost(message, tag = "2")]
    Request(RequestMsg),
}

#[derive(Clone, PartialEq, Message)]
pub struct HelloMsg {
    #[prost(string, optional, tag = "1")]
    pub jwt: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RequestMsg {
    #[prost(int32, tag = "1")]
    pub request_id: i32,
    #[prost(oneof = "WsRequest", tags = "2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13")]
    pub request: Option<WsRequest>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum WsRequest {
    #[prost(message, tag = "2")]
    OpenStream(StreamIdReq),
    #[prost(message, tag = "3")]
    CloseStream(StreamIdReq),
    #[prost(message, tag = "4")]
    Execute(WsStmtReq),
    #[prost(message, tag = "5")]
    Batch(WsBatchReq),
    #[prost(message, tag = "6")]
    OpenCursor(OpenCursorReq),
    #[prost(message, tag = "7")]
    CloseCursor(CursorIdReq),
    #[prost(message, tag = "8")]
    FetchCursor(FetchCursorReq),
    #[prost(message, tag = "9")]
    Sequence(WsSqlReq),
    #[prost(message, tag = "10")]
    Describe(WsSqlReq),
    #[prost(message, tag = "11")]
    StoreSql(StoreSqlReq),
    #[prost(message, tag = "12")]
    CloseSql(SqlIdReq),
    #[prost(message, tag = "13")]
    GetAutocommit(StreamIdReq),
}

/// Only the request id of a client message, for refusing a request that could not be charged.
#[derive(Clone, PartialEq, Message)]
pub struct RequestIdOnly {
    #[prost(message, optional, tag = "2")]
    pub request: Option<RequestIdMsg>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RequestIdMsg {
    #[prost(int32, tag = "1")]
    pub request_id: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct StreamIdReq {
    #[prost(int32, tag = "1")]
    pub stream_id: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct WsStmtReq {
    #[prost(int32, tag = "1")]
    pub stream_id: i32,
    #[prost(message, optional, tag = "2")]
    pub stmt: Option<Stmt>,
}

#[derive(Clone, PartialEq, Message)]
pub struct WsBatchReq {
    #[prost(int32, tag = "1")]
    pub stream_id: i32,
    #[prost(message, optional, tag = "2")]
    pub batch: Option<Batch>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OpenCursorReq {
    #[prost(int32, tag = "1")]
    pub stream_id: i32,
    #[prost(int32, tag = "2")]
    pub cursor_id: i32,
    #[prost(message, optional, tag = "3")]
    pub batch: Option<Batch>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CursorIdReq {
    #[prost(int32, tag = "1")]
    pub cursor_id: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct FetchCursorReq {
    #[prost(int32, tag = "1")]
    pub cursor_id: i32,
    #[prost(uint32, tag = "2")]
    pub max_count: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct WsSqlReq {
    #[prost(int32, tag = "1")]
    pub stream_id: i32,
    #[prost(string, optional, tag = "2")]
    pub sql: Option<String>,
    #[prost(int32, optional, tag = "3")]
    pub sql_id: Option<i32>,
}

// ---- Answers -----------------------------------------------------------------------------

#[derive(Clone, PartialEq, Message)]
pub struct Error {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(string, tag = "2")]
    pub code: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Col {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub decltype: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Row {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<Value>,
}

#[derive(Clone, PartialEq, Message)]
pub struct StmtResult {
    #[prost(message, repeated, tag = "1")]
    pub cols: Vec<Col>,
    #[prost(message, repeated, tag = "2")]
    pub rows: Vec<Row>,
    #[prost(uint64, tag = "3")]
    pub affected_row_count: u64,
    #[prost(sint64, optional, tag = "4")]
    pub last_insert_rowid: Option<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DescribeResult {
    #[prost(message, repeated, tag = "1")]
    pub params: Vec<DescribeParam>,
    #[prost(message, repeated, tag = "2")]
    pub cols: Vec<Col>,
    #[prost(bool, tag = "3")]
    pub is_explain: bool,
    #[prost(bool, tag = "4")]
    pub is_readonly: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct DescribeParam {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CursorEntry {
    #[prost(oneof = "CursorEntryKind", tags = "1, 2, 3, 4, 5")]
    pub kind: Option<CursorEntryKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum CursorEntryKind {
    #[prost(message, tag = "1")]
    StepBegin(StepBegin),
    #[prost(message, tag = "2")]
    StepEnd(StepEnd),
    #[prost(message, tag = "3")]
    StepError(StepError),
    #[prost(message, tag = "4")]
    Row(Row),
    #[prost(message, tag = "5")]
    Error(Error),
}

#[derive(Clone, PartialEq, Message)]
pub struct StepBegin {
    #[prost(uint32, tag = "1")]
    pub step: u32,
    #[prost(message, repeated, tag = "2")]
    pub cols: Vec<Col>,
}

#[derive(Clone, PartialEq, Message)]
pub struct StepEnd {
    #[prost(uint64, tag = "1")]
    pub affected_row_count: u64,
    #[prost(sint64, optional, tag = "2")]
    pub last_insert_rowid: Option<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct StepError {
    #[prost(uint32, tag = "1")]
    pub step: u32,
    #[prost(message, optional, tag = "2")]
    pub error: Option<Error>,
}

// ---- Decoding ----------------------------------------------------------------------------

/// What decoding may allocate per length-delimited field of a body (messages, texts, blobs:
/// scalars live inside the message that holds them): the largest decoded structure (a batch
/// step with its statement) twice (the protobuf one and the JSON path's one it becomes) and a
/// growing vector's slack. Each such field takes at least two bytes of the body.
const PARSE_BYTES_PER_FIELD: u64 = 320;

/// Nesting deeper than prost decodes (its recursion limit) fails anyway.
const SCAN_DEPTH_MAX: usize = 100;

/// An upper bound of the memory that decoding `body` takes, beyond the body: its
/// length-delimited fields are counted without a schema, each looked into as a message (a text
/// or blob that reads as fields is overcounted, never undercounted).
pub fn parse_bytes_bound(body: &[u8]) -> u64 {
    body.len() as u64 + PARSE_BYTES_PER_FIELD * (count_fields(body, 0) + 1)
}

/// The length-delimited fields in `bytes` and in what they nest, up to the first bytes that
/// cannot be a field: decoding stops there too, but keeps what it allocated before, so the
/// fields before count.
fn count_fields(mut bytes: &[u8], depth: usize) -> u64 {
    use prost::encoding::decode_varint;
    let mut fields = 0u64;
    while let Ok(key) = decode_varint(&mut bytes) {
        let rest = match key & 7 {
            0 => decode_varint(&mut bytes).ok().map(|_| bytes),
            1 => bytes.get(8..),
            5 => bytes.get(4..),
            // Group markers carry nothing; a group's fields are counted as they come.
            3 | 4 => Some(bytes),
            2 => decode_varint(&mut bytes).ok().and_then(|length| {
                let payload = bytes.get(..usize::try_from(length).ok()?)?;
                fields += 1;
                if depth < SCAN_DEPTH_MAX {
                    fields += count_fields(payload, depth + 1);
                }
                Some(&bytes[payload.len()..])
            }),
            _ => None,
        };
        match rest {
            Some(rest) => bytes = rest,
            None => break,
        }
    }
    fields
}

fn invalid(what: &str) -> ApiError {
    ApiError::bad_request(format!("invalid protobuf body: {what}"))
}

/// Decodes a body or message; what does not decode is a `bad_request`, as invalid JSON is.
pub fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, ApiError> {
    M::decode(bytes).map_err(|e| invalid(&e.to_string()))
}

impl TryFrom<Value> for HValue {
    type Error = ApiError;

    fn try_from(value: Value) -> Result<Self, ApiError> {
        Ok(HValue(match value.kind.ok_or_else(|| invalid("a value without a type"))? {
            ValueKind::Null(_) => SqlValue::Null,
            ValueKind::Integer(i) => SqlValue::Integer(i),
            ValueKind::Float(f) => SqlValue::Real(f),
            ValueKind::Text(s) => SqlValue::Text(s),
            ValueKind::Blob(b) => SqlValue::Blob(b),
        }))
    }
}

impl TryFrom<Stmt> for json::Stmt {
    type Error = ApiError;

    fn try_from(stmt: Stmt) -> Result<Self, ApiError> {
        let args = stmt.args.into_iter().map(HValue::try_from).collect::<Result<Vec<_>, _>>()?;
        let named_args = stmt
            .named_args
            .into_iter()
            .map(|arg| {
                let value = arg.value.ok_or_else(|| invalid("a named argument without a value"))?;
                Ok(json::NamedArg { name: arg.name, value: value.try_into()? })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok(json::Stmt {
            sql: stmt.sql,
            sql_id: stmt.sql_id,
            args: Some(args),
            named_args: Some(named_args),
            want_rows: stmt.want_rows,
        })
    }
}

impl TryFrom<BatchCond> for json::BatchCond {
    type Error = ApiError;

    fn try_from(cond: BatchCond) -> Result<Self, ApiError> {
        let list = |list: CondList| list.conds.into_iter().map(Self::try_from).collect::<Result<Vec<_>, _>>();
        Ok(match cond.kind.ok_or_else(|| invalid("a batch condition without a type"))? {
            BatchCondKind::Ok(step) => Self::Ok { step },
            BatchCondKind::Error(step) => Self::Error { step },
            BatchCondKind::Not(cond) => Self::Not { cond: Box::new((*cond).try_into()?) },
            BatchCondKind::And(conds) => Self::And { conds: list(conds)? },
            BatchCondKind::Or(conds) => Self::Or { conds: list(conds)? },
            BatchCondKind::IsAutocommit(_) => Self::IsAutocommit {},
        })
    }
}

/// A required message field.
fn required<T>(field: Option<T>, what: &str) -> Result<T, ApiError> {
    field.ok_or_else(|| invalid(&format!("{what} is missing")))
}

impl TryFrom<Batch> for json::Batch {
    type Error = ApiError;

    fn try_from(batch: Batch) -> Result<Self, ApiError> {
        let step = |step: BatchStep| {
            Ok(json::BatchStep {
                condition: step.condition.map(json::BatchCond::try_from).transpose()?,
                stmt: required(step.stmt, "a batch step's `stmt`")?.try_into()?,
            })
        };
        Ok(json::Batch { steps: batch.steps.into_iter().map(step).collect::<Result<_, ApiError>>()? })
    }
}

/// A required statement, converted.
pub fn stmt(stmt: Option<Stmt>) -> Result<json::Stmt, ApiError> {
    required(stmt, "`stmt`")?.try_into()
}

/// A required batch, converted.
pub fn batch(batch: Option<Batch>) -> Result<json::Batch, ApiError> {
    required(batch, "`batch`")?.try_into()
}

impl TryFrom<StreamRequest> for json::StreamRequest {
    type Error = ApiError;

    fn try_from(request: StreamRequest) -> Result<Self, ApiError> {
        use StreamRequestKind as K;
        Ok(match request.kind.ok_or_else(|| invalid("a stream request without a type"))? {
            K::Close(_) => Self::Close {},
            K::Execute(req) => Self::Execute { stmt: stmt(req.stmt)? },
            K::Batch(req) => Self::Batch { batch: batch(req.batch)? },
            K::Sequence(SqlReq { sql, sql_id }) => Self::Sequence { sql, sql_id },
            K::Describe(SqlReq { sql, sql_id }) => Self::Describe { sql, sql_id },
            K::StoreSql(StoreSqlReq { sql_id, sql }) => Self::StoreSql { sql_id, sql },
            K::CloseSql(SqlIdReq { sql_id }) => Self::CloseSql { sql_id },
            K::GetAutocommit(_) => Self::GetAutocommit {},
        })
    }
}

impl TryFrom<PipelineReqBody> for json::PipelineReqBody {
    type Error = ApiError;

    fn try_from(body: PipelineReqBody) -> Result<Self, ApiError> {
        let requests =
            body.requests.into_iter().map(json::StreamRequest::try_from).collect::<Result<_, _>>()?;
        Ok(json::PipelineReqBody { baton: body.baton, requests })
    }
}

impl TryFrom<CursorReqBody> for json::CursorReqBody {
    type Error = ApiError;

    fn try_from(body: CursorReqBody) -> Result<Self, ApiError> {
        Ok(json::CursorReqBody { baton: body.baton, batch: batch(body.batch)? })
    }
}

// ---- Encoding ----------------------------------------------------------------------------

/// Field number of a response in Hrana over HTTP's `StreamResponse` oneof.
fn http_response_tag(kind: &str) -> u32 {
    match kind {
        "close" => 1,
        "execute" => 2,
        "batch" => 3,
        "sequence" => 4,
        "describe" => 5,
        "store_sql" => 6,
        "close_sql" => 7,
        _ => 8, // get_autocommit
    }
}

/// Field number of a response in Hrana over WebSocket's `ResponseOkMsg` oneof.
fn ws_response_tag(kind: &str) -> u32 {
    match kind {
        "open_stream" => 2,
        "close_stream" => 3,
        "execute" => 4,
        "batch" => 5,
        "open_cursor" => 6,
        "close_cursor" => 7,
        "fetch_cursor" => 8,
        "sequence" => 9,
        "describe" => 10,
        "store_sql" => 11,
        "close_sql" => 12,
        _ => 13, // get_autocommit
    }
}

/// Writes a length-delimited field holding `bytes` (an encoded message, or a string).
fn put_bytes(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn put_message<M: Message>(out: &mut Vec<u8>, tag: u32, message: &M) {
    prost::encoding::message::encode(tag, message, out);
}

fn error(error: &HError) -> Error {
    Error { message: error.message.clone(), code: error.code.to_string() }
}

/// A SQL value; unlike JSON (which answers `null`), a double carries infinities as they are.
fn value(value: SqlValue) -> Value {
    Value {
        kind: Some(match value {
            SqlValue::Null => ValueKind::Null(Empty {}),
            SqlValue::Integer(i) => ValueKind::Integer(i),
            SqlValue::Real(f) => ValueKind::Float(f),
            SqlValue::Text(s) => ValueKind::Text(s),
            SqlValue::Blob(b) => ValueKind::Blob(b),
        }),
    }
}

fn row(values: Vec<SqlValue>) -> Row {
    Row { values: values.into_iter().map(value).collect() }
}

fn cols(result: &mut QueryResult) -> Vec<Col> {
    let mut decltypes = std::mem::take(&mut result.decltypes).into_iter();
    std::mem::take(&mut result.columns)
        .into_iter()
        .map(|name| Col { name: Some(name), decltype: decltypes.next().flatten() })
        .collect()
}

/// As in JSON: the last rowid only of a statement that changed rows.
fn last_insert_rowid(result: &QueryResult) -> Option<i64> {
    (result.rows_affected > 0).then_some(result.last_insert_rowid)
}

/// A `StmtResult`, its values moved out of `result` (rows only when the client wants them).
fn stmt_result(mut result: QueryResult, want_rows: bool) -> StmtResult {
    let rows = if want_rows { std::mem::take(&mut result.rows) } else { Vec::new() };
    StmtResult {
        cols: cols(&mut result),
        rows: rows.into_iter().map(row).collect(),
        affected_row_count: result.rows_affected,
        last_insert_rowid: last_insert_rowid(&result),
    }
}

/// The body of an `execute` response: `{result: StmtResult}`.
pub fn execute_body(result: QueryResult, want_rows: bool) -> Vec<u8> {
    let mut out = Vec::new();
    put_message(&mut out, 1, &stmt_result(result, want_rows));
    out
}

/// The body of a `batch` response: `{result: BatchResult}`, whose step results and errors are
/// maps from step index (written as sqld writes them, key and value always present).
pub fn batch_body(steps: &[Step], outcomes: Vec<Outcome>) -> Vec<u8> {
    let mut results = Vec::new();
    let mut errors = Vec::new();
    let entry = |index: usize, value: &dyn Fn(&mut Vec<u8>)| {
        let mut entry = Vec::new();
        prost::encoding::uint32::encode(1, &(index as u32), &mut entry);
        value(&mut entry);
        entry
    };
    for (index, (step, outcome)) in steps.iter().zip(outcomes).enumerate() {
        match outcome {
            Outcome::Skipped => {}
            Outcome::Done(result) => {
                let result = stmt_result(result, step.stmt.want_rows);
                put_bytes(&mut results, 1, &entry(index, &|out| put_message(out, 2, &result)));
            }
            Outcome::Failed(failure) => {
                let failure = error(&failure);
                put_bytes(&mut errors, 2, &entry(index, &|out| put_message(out, 2, &failure)));
            }
        }
    }
    results.extend(errors);
    let mut out = Vec::new();
    put_bytes(&mut out, 1, &results);
    out
}

/// The body of a `describe` response: `{result: DescribeResult}`.
pub fn describe_body(description: Description) -> Vec<u8> {
    let result = DescribeResult {
        params: description.params.into_iter().map(|name| DescribeParam { name }).collect(),
        cols: description
            .columns
            .into_iter()
            .map(|(name, decltype)| Col { name: Some(name), decltype })
            .collect(),
        is_explain: description.is_explain,
        is_readonly: description.is_readonly,
    };
    let mut out = Vec::new();
    put_message(&mut out, 1, &result);
    out
}

/// The body of a `get_autocommit` response.
pub fn autocommit_body(is_autocommit: bool) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::bool::encode(1, &is_autocommit, &mut out);
    out
}

fn push_entry(out: &mut Vec<u8>, kind: CursorEntryKind) {
    CursorEntry { kind: Some(kind) }.encode_length_delimited(out).expect("a Vec grows");
}

/// The cursor entry of a step that failed before it began, length-delimited.
pub fn step_error_entry(step: usize, failure: &HError) -> Vec<u8> {
    let mut out = Vec::new();
    push_entry(
        &mut out,
        CursorEntryKind::StepError(StepError { step: step as u32, error: Some(error(failure)) }),
    );
    out
}

/// The length-delimited cursor entries of a finished batch.
pub fn cursor_entries(steps: &[Step], outcomes: Vec<Outcome>) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, (step, outcome)) in steps.iter().zip(outcomes).enumerate() {
        match outcome {
            Outcome::Skipped => {}
            Outcome::Done(mut result) => {
                let cols = cols(&mut result);
                push_entry(&mut out, CursorEntryKind::StepBegin(StepBegin { step: index as u32, cols }));
                let rows = if step.stmt.want_rows { std::mem::take(&mut result.rows) } else { Vec::new() };
                for values in rows {
                    push_entry(&mut out, CursorEntryKind::Row(row(values)));
                }
                let end = StepEnd {
                    affected_row_count: result.rows_affected,
                    last_insert_rowid: last_insert_rowid(&result),
                };
                push_entry(&mut out, CursorEntryKind::StepEnd(end));
            }
            Outcome::Failed(failure) => {
                let entry = StepError { step: index as u32, error: Some(error(&failure)) };
                push_entry(&mut out, CursorEntryKind::StepError(entry));
            }
        }
    }
    out
}

/// Where the first of length-delimited `entries` ends.
pub fn entry_end(entries: &[u8]) -> usize {
    let mut rest = entries;
    match prost::encoding::decode_varint(&mut rest) {
        Ok(length) => (entries.len() - rest.len()).saturating_add(length as usize).min(entries.len()),
        Err(_) => entries.len(),
    }
}

/// A pipeline's `StreamResult`: `ok` with the response (of `kind`, its body encoded already),
/// or `error`.
pub fn stream_result(kind: &str, reply: &json::Reply) -> Vec<u8> {
    let mut out = Vec::new();
    match reply {
        Ok(body) => {
            let mut response = Vec::new();
            put_bytes(&mut response, http_response_tag(kind), body);
            put_bytes(&mut out, 1, &response);
        }
        Err(failure) => put_message(&mut out, 2, &error(failure)),
    }
    out
}

/// A `PipelineRespBody` around stream results encoded already.
pub fn pipeline_answer(baton: Option<&str>, results: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(results.iter().map(|r| r.len() + 6).sum::<usize>() + 64);
    if let Some(baton) = baton {
        put_bytes(&mut out, 1, baton.as_bytes());
    }
    for result in results {
        put_bytes(&mut out, 3, result);
    }
    out
}

/// The `CursorRespBody` that begins a cursor's answer, length-delimited like its entries.
pub fn cursor_head(baton: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    if let Some(baton) = baton {
        put_bytes(&mut body, 1, baton.as_bytes());
    }
    let mut out = Vec::with_capacity(body.len() + 2);
    encode_varint(body.len() as u64, &mut out);
    out.extend(body);
    out
}

/// `ServerMsg.hello_ok`.
pub fn hello_ok() -> Vec<u8> {
    let mut out = Vec::new();
    put_bytes(&mut out, 1, &[]);
    out
}

/// `ServerMsg.hello_error`.
pub fn hello_error(failure: &HError) -> Vec<u8> {
    let mut hello = Vec::new();
    put_message(&mut hello, 1, &error(failure));
    let mut out = Vec::new();
    put_bytes(&mut out, 2, &hello);
    out
}

/// `ServerMsg.response_ok` or `response_error` for request `request_id` of `kind`.
pub fn ws_reply(request_id: i32, kind: &str, reply: &json::Reply) -> Vec<u8> {
    let mut message = Vec::new();
    prost::encoding::int32::encode(1, &request_id, &mut message);
    let tag = match reply {
        Ok(body) => {
            put_bytes(&mut message, ws_response_tag(kind), body);
            3
        }
        Err(failure) => {
            put_message(&mut message, 2, &error(failure));
            4
        }
    };
    let mut out = Vec::new();
    put_bytes(&mut out, tag, &message);
    out
}

/// The body of a `fetch_cursor` response from length-delimited entries: each entry is already
/// a `repeated CursorEntry entries = 1` element once its key is put before it.
pub fn fetch_cursor_body(entries: &[u8], done: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() + 16);
    let mut rest = entries;
    while !rest.is_empty() {
        let end = entry_end(rest);
        encode_key(1, WireType::LengthDelimited, &mut out);
        out.extend_from_slice(&rest[..end]);
        rest = &rest[end..];
    }
    prost::encoding::bool::encode(2, &done, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(values: Vec<Value>) -> Vec<u8> {
        let stmt = Stmt { sql: Some("SELECT ?".into()), args: values, ..Stmt::default() };
        let execute = StreamRequest { kind: Some(StreamRequestKind::Execute(StmtReq { stmt: Some(stmt) })) };
        PipelineReqBody { baton: None, requests: vec![execute] }.encode_to_vec()
    }

    #[test]
    fn decoding_is_charged_per_nested_field() {
        let null = || Value { kind: Some(ValueKind::Null(Empty {})) };
        let few = pipeline(vec![null()]);
        let many = pipeline(vec![null(); 100]);
        // Each null is two fields (the argument and its oneof), each two bytes.
        let extra = parse_bytes_bound(&many) - parse_bytes_bound(&few) - (many.len() - few.len()) as u64;
        assert_eq!(extra, 99 * 2 * PARSE_BYTES_PER_FIELD);
        // A blob that does not read as a message is one field, whatever its size.
        let blob = Value { kind: Some(ValueKind::Blob(vec![0xff; 1000])) };
        let bound = parse_bytes_bound(&pipeline(vec![blob]));
        assert!(bound < 1100 + 8 * PARSE_BYTES_PER_FIELD, "{bound}");
        assert_eq!(parse_bytes_bound(&[0xff]), 1 + PARSE_BYTES_PER_FIELD);
        // Fields before a malformed end are decoded before decoding fails: they count.
        let mut broken = many.clone();
        broken.push(0x07);
        assert_eq!(parse_bytes_bound(&broken), parse_bytes_bound(&many) + 1);
        // Scalars add nothing but their bytes.
        let ints = pipeline(vec![Value { kind: Some(ValueKind::Integer(-1)) }; 100]);
        let nulls_bound = parse_bytes_bound(&many) - many.len() as u64;
        assert_eq!(parse_bytes_bound(&ints) - ints.len() as u64, nulls_bound - 100 * PARSE_BYTES_PER_FIELD);
    }

    #[test]
    fn requests_convert_or_are_refused() {
        let body: json::PipelineReqBody =
            decode::<PipelineReqBody>(&pipeline(vec![])).unwrap().try_into().unwrap();
        assert!(
            matches!(&body.requests[..], [json::StreamRequest::Execute { stmt }] if stmt.sql.as_deref() == Some("SELECT ?"))
        );
        let typeless = pipeline(vec![Value { kind: None }]);
        let refused =
            decode::<PipelineReqBody>(&typeless).and_then(json::PipelineReqBody::try_from).unwrap_err();
        assert_eq!(refused.code, "bad_request");
        assert!(decode::<PipelineReqBody>(&[0x12, 0x05]).is_err(), "truncated");
    }

    #[test]
    fn a_request_id_is_read_without_the_request() {
        let stmt = Stmt { sql: Some("SELECT 1".into()), ..Stmt::default() };
        let execute = WsRequest::Execute(WsStmtReq { stream_id: 1, stmt: Some(stmt) });
        let request = RequestMsg { request_id: 42, request: Some(execute) };
        let message = ClientMsg { kind: Some(ClientMsgKind::Request(request)) }.encode_to_vec();
        let only = decode::<RequestIdOnly>(&message).unwrap();
        assert_eq!(only.request.map(|r| r.request_id), Some(42));
        let hello = ClientMsg { kind: Some(ClientMsgKind::Hello(HelloMsg { jwt: None })) }.encode_to_vec();
        assert_eq!(decode::<RequestIdOnly>(&hello).unwrap().request, None);
    }

    #[test]
    fn cursor_entries_are_fetched_whole() {
        let mut entries = step_error_entry(0, &HError::new("X", "y"));
        let first = entries.len();
        push_entry(&mut entries, CursorEntryKind::Row(Row { values: vec![value(SqlValue::Integer(-1))] }));
        assert_eq!(entry_end(&entries), first);
        assert_eq!(entry_end(&entries[first..]), entries.len() - first);
        assert_eq!(entry_end(&[0x05, 1]), 2, "a truncated entry ends with the bytes");
        #[derive(Clone, PartialEq, Message)]
        struct Fetched {
            #[prost(message, repeated, tag = "1")]
            entries: Vec<CursorEntry>,
            #[prost(bool, tag = "2")]
            done: bool,
        }
        let fetched = Fetched::decode(&fetch_cursor_body(&entries, true)[..]).unwrap();
        assert!(fetched.done);
        assert_eq!(
            fetched.entries[1].kind,
            Some(CursorEntryKind::Row(Row { values: vec![value(SqlValue::Integer(-1))] }))
        );
    }
}
