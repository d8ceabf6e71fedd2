//! A client's view of Hrana 3's protobuf messages (libSQL's `hrana.proto` field numbers),
//! written for the tests apart from the server's own structures, so that a wrong field number
//! on either side fails a test instead of agreeing with itself.
#![allow(dead_code)]

use std::collections::BTreeMap;

use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub struct Empty {}

#[derive(Clone, PartialEq, Message)]
pub struct Value {
    #[prost(oneof = "V", tags = "1, 2, 3, 4, 5")]
    pub v: Option<V>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum V {
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

pub fn null() -> Value {
    Value { v: Some(V::Null(Empty {})) }
}
pub fn int(i: i64) -> Value {
    Value { v: Some(V::Integer(i)) }
}
pub fn float(f: f64) -> Value {
    Value { v: Some(V::Float(f)) }
}
pub fn text(s: &str) -> Value {
    Value { v: Some(V::Text(s.into())) }
}
pub fn blob(b: &[u8]) -> Value {
    Value { v: Some(V::Blob(b.to_vec())) }
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

pub fn stmt(sql: &str, args: Vec<Value>) -> Stmt {
    Stmt { sql: Some(sql.into()), args, ..Stmt::default() }
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
    pub condition: Option<Cond>,
    #[prost(message, optional, tag = "2")]
    pub stmt: Option<Stmt>,
}

pub fn step(condition: Option<Cond>, sql: &str) -> BatchStep {
    BatchStep { condition, stmt: Some(stmt(sql, vec![])) }
}

#[derive(Clone, PartialEq, Message)]
pub struct Cond {
    #[prost(oneof = "C", tags = "1, 2, 3, 4, 5, 6")]
    pub c: Option<C>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum C {
    #[prost(uint32, tag = "1")]
    Ok(u32),
    #[prost(uint32, tag = "2")]
    Error(u32),
    #[prost(message, tag = "3")]
    Not(Box<Cond>),
    #[prost(message, tag = "4")]
    And(CondList),
    #[prost(message, tag = "5")]
    Or(CondList),
    #[prost(message, tag = "6")]
    IsAutocommit(Empty),
}

pub fn cond(c: C) -> Cond {
    Cond { c: Some(c) }
}

#[derive(Clone, PartialEq, Message)]
pub struct CondList {
    #[prost(message, repeated, tag = "1")]
    pub conds: Vec<Cond>,
}

// ---- HTTP --------------------------------------------------------------------------------

#[derive(Clone, PartialEq, Message)]
pub struct PipelineReqBody {
    #[prost(string, optional, tag = "1")]
    pub baton: Option<String>,
    #[prost(message, repeated, tag = "2")]
    pub requests: Vec<StreamRequest>,
}

#[derive(Clone, PartialEq, Message)]
pub struct StreamRequest {
    #[prost(oneof = "Req", tags = "1, 2, 3, 4, 5, 6, 7, 8")]
    pub req: Option<Req>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Req {
    #[prost(message, tag = "1")]
    Close(Empty),
    #[prost(message, tag = "2")]
    Execute(ExecuteReq),
    #[prost(message, tag = "3")]
    Batch(BatchReq),
    #[prost(message, tag = "4")]
    Sequence(SqlReq),
    #[prost(message, tag = "5")]
    Describe(SqlReq),
    #[prost(message, tag = "6")]
    StoreSql(StoreSqlReq),
    #[prost(message, tag = "7")]
    CloseSql(CloseSqlReq),
    #[prost(message, tag = "8")]
    GetAutocommit(Empty),
}

pub fn req(r: Req) -> StreamRequest {
    StreamRequest { req: Some(r) }
}

pub fn execute(s: Stmt) -> StreamRequest {
    req(Req::Execute(ExecuteReq { stmt: Some(s) }))
}

#[derive(Clone, PartialEq, Message)]
pub struct ExecuteReq {
    #[prost(message, optional, tag = "1")]
    pub stmt: Option<Stmt>,
}

#[derive(Clone, PartialEq, Message)]
pub struct BatchReq {
    #[prost(message, optional, tag = "1")]
    pub batch: Option<Batch>,
}

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
pub struct CloseSqlReq {
    #[prost(int32, tag = "1")]
    pub sql_id: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct CursorReqBody {
    #[prost(string, optional, tag = "1")]
    pub baton: Option<String>,
    #[prost(message, optional, tag = "2")]
    pub batch: Option<Batch>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PipelineRespBody {
    #[prost(string, optional, tag = "1")]
    pub baton: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub base_url: Option<String>,
    #[prost(message, repeated, tag = "3")]
    pub results: Vec<StreamResult>,
}

#[derive(Clone, PartialEq, Message)]
pub struct StreamResult {
    #[prost(oneof = "Res", tags = "1, 2")]
    pub res: Option<Res>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Res {
    #[prost(message, tag = "1")]
    Ok(StreamResponse),
    #[prost(message, tag = "2")]
    Error(Error),
}

#[derive(Clone, PartialEq, Message)]
pub struct StreamResponse {
    #[prost(oneof = "Resp", tags = "1, 2, 3, 4, 5, 6, 7, 8")]
    pub resp: Option<Resp>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Resp {
    #[prost(message, tag = "1")]
    Close(Empty),
    #[prost(message, tag = "2")]
    Execute(ExecuteResp),
    #[prost(message, tag = "3")]
    Batch(BatchResp),
    #[prost(message, tag = "4")]
    Sequence(Empty),
    #[prost(message, tag = "5")]
    Describe(DescribeResp),
    #[prost(message, tag = "6")]
    StoreSql(Empty),
    #[prost(message, tag = "7")]
    CloseSql(Empty),
    #[prost(message, tag = "8")]
    GetAutocommit(GetAutocommitResp),
}

#[derive(Clone, PartialEq, Message)]
pub struct ExecuteResp {
    #[prost(message, optional, tag = "1")]
    pub result: Option<StmtResult>,
}

#[derive(Clone, PartialEq, Message)]
pub struct BatchResp {
    #[prost(message, optional, tag = "1")]
    pub result: Option<BatchResult>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DescribeResp {
    #[prost(message, optional, tag = "1")]
    pub result: Option<DescribeResult>,
}

#[derive(Clone, PartialEq, Message)]
pub struct GetAutocommitResp {
    #[prost(bool, tag = "1")]
    pub is_autocommit: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct Error {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(string, tag = "2")]
    pub code: String,
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
pub struct BatchResult {
    #[prost(btree_map = "uint32, message", tag = "1")]
    pub step_results: BTreeMap<u32, StmtResult>,
    #[prost(btree_map = "uint32, message", tag = "2")]
    pub step_errors: BTreeMap<u32, Error>,
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
pub struct CursorRespBody {
    #[prost(string, optional, tag = "1")]
    pub baton: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub base_url: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CursorEntry {
    #[prost(oneof = "Entry", tags = "1, 2, 3, 4, 5")]
    pub entry: Option<Entry>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Entry {
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

// ---- WebSocket ---------------------------------------------------------------------------

#[derive(Clone, PartialEq, Message)]
pub struct ClientMsg {
    #[prost(oneof = "Client", tags = "1, 2")]
    pub msg: Option<Client>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Client {
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
    #[prost(oneof = "WsReq", tags = "2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13")]
    pub request: Option<WsReq>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum WsReq {
    #[prost(message, tag = "2")]
    OpenStream(StreamId),
    #[prost(message, tag = "3")]
    CloseStream(StreamId),
    #[prost(message, tag = "4")]
    Execute(WsExecute),
    #[prost(message, tag = "5")]
    Batch(WsBatch),
    #[prost(message, tag = "6")]
    OpenCursor(WsOpenCursor),
    #[prost(message, tag = "7")]
    CloseCursor(CursorId),
    #[prost(message, tag = "8")]
    FetchCursor(WsFetchCursor),
    #[prost(message, tag = "9")]
    Sequence(WsSql),
    #[prost(message, tag = "10")]
    Describe(WsSql),
    #[prost(message, tag = "11")]
    StoreSql(StoreSqlReq),
    #[prost(message, tag = "12")]
    CloseSql(CloseSqlReq),
    #[prost(message, tag = "13")]
    GetAutocommit(StreamId),
}

#[derive(Clone, PartialEq, Message)]
pub struct StreamId {
    #[prost(int32, tag = "1")]
    pub stream_id: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct CursorId {
    #[prost(int32, tag = "1")]
    pub cursor_id: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct WsExecute {
    #[prost(int32, tag = "1")]
    pub stream_id: i32,
    #[prost(message, optional, tag = "2")]
    pub stmt: Option<Stmt>,
}

#[derive(Clone, PartialEq, Message)]
pub struct WsBatch {
    #[prost(int32, tag = "1")]
    pub stream_id: i32,
    #[prost(message, optional, tag = "2")]
    pub batch: Option<Batch>,
}

#[derive(Clone, PartialEq, Message)]
pub struct WsOpenCursor {
    #[prost(int32, tag = "1")]
    pub stream_id: i32,
    #[prost(int32, tag = "2")]
    pub cursor_id: i32,
    #[prost(message, optional, tag = "3")]
    pub batch: Option<Batch>,
}

#[derive(Clone, PartialEq, Message)]
pub struct WsFetchCursor {
    #[prost(int32, tag = "1")]
    pub cursor_id: i32,
    #[prost(uint32, tag = "2")]
    pub max_count: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct WsSql {
    #[prost(int32, tag = "1")]
    pub stream_id: i32,
    #[prost(string, optional, tag = "2")]
    pub sql: Option<String>,
    #[prost(int32, optional, tag = "3")]
    pub sql_id: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ServerMsg {
    #[prost(oneof = "Server", tags = "1, 2, 3, 4")]
    pub msg: Option<Server>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Server {
    #[prost(message, tag = "1")]
    HelloOk(Empty),
    #[prost(message, tag = "2")]
    HelloError(HelloError),
    #[prost(message, tag = "3")]
    ResponseOk(ResponseOk),
    #[prost(message, tag = "4")]
    ResponseError(ResponseError),
}

#[derive(Clone, PartialEq, Message)]
pub struct HelloError {
    #[prost(message, optional, tag = "1")]
    pub error: Option<Error>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ResponseOk {
    #[prost(int32, tag = "1")]
    pub request_id: i32,
    #[prost(oneof = "WsResp", tags = "2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13")]
    pub response: Option<WsResp>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum WsResp {
    #[prost(message, tag = "2")]
    OpenStream(Empty),
    #[prost(message, tag = "3")]
    CloseStream(Empty),
    #[prost(message, tag = "4")]
    Execute(ExecuteResp),
    #[prost(message, tag = "5")]
    Batch(BatchResp),
    #[prost(message, tag = "6")]
    OpenCursor(Empty),
    #[prost(message, tag = "7")]
    CloseCursor(Empty),
    #[prost(message, tag = "8")]
    FetchCursor(FetchCursorResp),
    #[prost(message, tag = "9")]
    Sequence(Empty),
    #[prost(message, tag = "10")]
    Describe(DescribeResp),
    #[prost(message, tag = "11")]
    StoreSql(Empty),
    #[prost(message, tag = "12")]
    CloseSql(Empty),
    #[prost(message, tag = "13")]
    GetAutocommit(GetAutocommitResp),
}

#[derive(Clone, PartialEq, Message)]
pub struct FetchCursorResp {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<CursorEntry>,
    #[prost(bool, tag = "2")]
    pub done: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct ResponseError {
    #[prost(int32, tag = "1")]
    pub request_id: i32,
    #[prost(message, optional, tag = "2")]
    pub error: Option<Error>,
}
