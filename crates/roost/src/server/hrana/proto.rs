//! Hrana's JSON structures (HRANA_3_SPEC.md, "Hrana over HTTP" and "Shared structures").
//! Requests are parsed strictly enough that a malformed value fails the whole HTTP request
//! before anything runs; unknown fields are ignored, as the spec asks.

use base64::engine::general_purpose::STANDARD_NO_PAD as BASE64;
use base64::Engine;
use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Value as Json};

use super::super::json::Base64Str;
use crate::vfs::{QueryResult, Value};

#[derive(Debug, Deserialize)]
pub struct PipelineReqBody {
    #[serde(default)]
    pub baton: Option<String>,
    pub requests: Vec<StreamRequest>,
}

#[derive(Debug, Deserialize)]
pub struct CursorReqBody {
    #[serde(default)]
    pub baton: Option<String>,
    pub batch: Batch,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamRequest {
    Close {},
    Execute {
        stmt: Stmt,
    },
    Batch {
        batch: Batch,
    },
    Sequence {
        #[serde(default)]
        sql: Option<String>,
        #[serde(default)]
        sql_id: Option<i32>,
    },
    Describe {
        #[serde(default)]
        sql: Option<String>,
        #[serde(default)]
        sql_id: Option<i32>,
    },
    StoreSql {
        sql_id: i32,
        sql: String,
    },
    CloseSql {
        sql_id: i32,
    },
    GetAutocommit {},
}

impl StreamRequest {
    /// The `type` of the request, which its response repeats.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Close {} => "close",
            Self::Execute { .. } => "execute",
            Self::Batch { .. } => "batch",
            Self::Sequence { .. } => "sequence",
            Self::Describe { .. } => "describe",
            Self::StoreSql { .. } => "store_sql",
            Self::CloseSql { .. } => "close_sql",
            Self::GetAutocommit {} => "get_autocommit",
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct Stmt {
    #[serde(default)]
    pub sql: Option<String>,
    #[serde(default)]
    pub sql_id: Option<i32>,
    #[serde(default)]
    pub args: Option<Vec<HValue>>,
    #[serde(default)]
    pub named_args: Option<Vec<NamedArg>>,
    #[serde(default)]
    pub want_rows: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct NamedArg {
    pub name: String,
    pub value: HValue,
}

#[derive(Debug, Deserialize)]
pub struct Batch {
    pub steps: Vec<BatchStep>,
}

#[derive(Debug, Deserialize)]
pub struct BatchStep {
    #[serde(default)]
    pub condition: Option<BatchCond>,
    pub stmt: Stmt,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BatchCond {
    Ok { step: u32 },
    Error { step: u32 },
    Not { cond: Box<BatchCond> },
    And { conds: Vec<BatchCond> },
    Or { conds: Vec<BatchCond> },
    IsAutocommit {},
}

/// A SQL value in Hrana's JSON encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct HValue(pub Value);

#[derive(Deserialize)]
struct RawValue {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    value: Option<Json>,
    #[serde(default)]
    base64: Option<String>,
}

impl<'de> Deserialize<'de> for HValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawValue::deserialize(deserializer)?;
        let value = match (raw.kind.as_str(), raw.value) {
            ("null", _) => Value::Null,
            // Integers travel as decimal strings; a plain JSON integer is accepted too.
            ("integer", Some(Json::String(s))) => Value::Integer(
                s.parse().map_err(|_| D::Error::custom(format!("integer value {s:?} is not an i64")))?,
            ),
            ("integer", Some(Json::Number(n))) if n.is_i64() => Value::Integer(n.as_i64().unwrap_or(0)),
            ("float", Some(Json::Number(n))) => {
                Value::Real(n.as_f64().ok_or_else(|| D::Error::custom("float value out of range"))?)
            }
            ("text", Some(Json::String(s))) => Value::Text(s),
            ("blob", _) => {
                let text = raw.base64.ok_or_else(|| D::Error::custom("blob value without base64"))?;
                Value::Blob(
                    BASE64
                        .decode(text.trim_end_matches('='))
                        .map_err(|_| D::Error::custom("blob value is not valid base64"))?,
                )
            }
            (kind, _) => return Err(D::Error::custom(format!("invalid value of type {kind:?}"))),
        };
        Ok(HValue(value))
    }
}

/// A Hrana `Error`: always with a code, which some clients require.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HError {
    pub message: String,
    pub code: &'static str,
}

impl HError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { message: message.into(), code }
    }

    pub fn json(&self) -> Json {
        json!({"message": self.message, "code": self.code})
    }
}

/// `Col`s: each column's name and declared type (null for expressions).
pub fn cols_json(result: &QueryResult) -> Json {
    let decltype = |i: usize| result.decltypes.get(i).cloned().flatten();
    Json::Array(
        result
            .columns
            .iter()
            .enumerate()
            .map(|(i, name)| json!({"name": name, "decltype": decltype(i)}))
            .collect(),
    )
}

/// A value in Hrana's encoding, serialized without an intermediate JSON tree.
pub struct HValueJson<'a>(pub &'a Value);

impl Serialize for HValueJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        match self.0 {
            Value::Integer(i) => {
                map.serialize_entry("type", "integer")?;
                map.serialize_entry("value", &i.to_string())?;
            }
            Value::Real(f) if f.is_finite() => {
                map.serialize_entry("type", "float")?;
                map.serialize_entry("value", f)?;
            }
            // JSON has no infinities (SQLite stores no NaN): those come back as null, as in /v1.
            Value::Null | Value::Real(_) => map.serialize_entry("type", "null")?,
            Value::Text(s) => {
                map.serialize_entry("type", "text")?;
                map.serialize_entry("value", s)?;
            }
            Value::Blob(b) => {
                map.serialize_entry("type", "blob")?;
                // Hrana writes blobs as unpadded base64.
                map.serialize_entry("base64", &Base64Str(b, &BASE64))?;
            }
        }
        map.end()
    }
}

/// One row of values.
pub struct RowJson<'a>(pub &'a [Value]);

impl Serialize for RowJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(HValueJson))
    }
}

/// The `last_insert_rowid` of a `StmtResult`: as libSQL's server, only for a statement that
/// changed rows (a `SELECT` answers none, not the connection's previous insert).
pub fn last_insert_rowid(result: &QueryResult) -> Option<String> {
    (result.rows_affected > 0).then(|| result.last_insert_rowid.to_string())
}

/// A `StmtResult`; rows only when the client wants them.
pub struct StmtResultJson<'a> {
    pub result: &'a QueryResult,
    pub want_rows: bool,
}

impl Serialize for StmtResultJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let rows: &[Vec<Value>] = if self.want_rows { &self.result.rows } else { &[] };
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("cols", &cols_json(self.result))?;
        map.serialize_entry("rows", &RowsJson(rows))?;
        map.serialize_entry("affected_row_count", &self.result.rows_affected)?;
        map.serialize_entry("last_insert_rowid", &last_insert_rowid(self.result))?;
        map.end()
    }
}

struct RowsJson<'a>(&'a [Vec<Value>]);

impl Serialize for RowsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|row| RowJson(row)))
    }
}

/// A response with one field, `{"type": kind, field: value}`, serialized without an
/// intermediate JSON tree (the transports wrap it: [`wrap_ok`] for HTTP pipelines, `response_ok`
/// messages over WebSocket).
pub struct ResponseJson<'a, T> {
    pub kind: &'a str,
    pub field: &'a str,
    pub value: T,
}

impl<T: Serialize> Serialize for ResponseJson<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("type", self.kind)?;
        map.serialize_entry(self.field, &self.value)?;
        map.end()
    }
}

/// A response `{"type": kind, ...fields}`.
pub fn response(kind: &str, fields: Json) -> Json {
    let mut response = json!({"type": kind});
    if let (Json::Object(target), Json::Object(extra)) = (&mut response, fields) {
        target.extend(extra);
    }
    response
}

/// What a stream request gave: its encoded response, or the Hrana error of a statement.
pub type Reply = Result<Vec<u8>, HError>;

/// `bytes` (an encoded JSON value) inside `{head, field: bytes}`; `head` is an encoded JSON
/// object.
pub fn wrap(head: &Json, field: &str, bytes: &[u8]) -> Vec<u8> {
    let head = serde_json::to_vec(head).expect("JSON values serialize");
    let mut out = Vec::with_capacity(head.len() + field.len() + bytes.len() + 4);
    out.extend_from_slice(&head[..head.len() - 1]);
    if head.len() > 2 {
        out.push(b',');
    }
    serde_json::to_writer(&mut out, field).expect("strings serialize");
    out.push(b':');
    out.extend_from_slice(bytes);
    out.push(b'}');
    out
}

/// A pipeline's `StreamResult`: `{"type": "ok", "response": ...}` or `{"type": "error", ...}`.
pub fn wrap_ok(reply: &Reply) -> Vec<u8> {
    match reply {
        Ok(bytes) => wrap(&json!({"type": "ok"}), "response", bytes),
        Err(error) => serde_json::to_vec(&error_result(error)).expect("JSON values serialize"),
    }
}

pub fn error_result(error: &HError) -> Json {
    json!({"type": "error", "error": error.json()})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_json(value: &Value) -> Json {
        serde_json::to_value(HValueJson(value)).unwrap()
    }

    #[test]
    fn wraps_encoded_values() {
        let inner = br#"{"type":"close"}"#;
        let wrapped = wrap_ok(&Ok(inner.to_vec()));
        assert_eq!(
            serde_json::from_slice::<Json>(&wrapped).unwrap(),
            json!({"type": "ok", "response": {"type": "close"}})
        );
        assert_eq!(wrap(&json!({}), "a", b"1"), br#"{"a":1}"#.to_vec());
        let error = wrap_ok(&Err(HError::new("X", "y")));
        assert_eq!(serde_json::from_slice::<Json>(&error).unwrap()["error"]["code"], "X");
    }

    #[test]
    fn values_round_trip() {
        let parse = |j: Json| serde_json::from_value::<HValue>(j).map(|v| v.0);
        assert_eq!(parse(json!({"type": "null"})).unwrap(), Value::Null);
        assert_eq!(
            parse(json!({"type": "integer", "value": "-9007199254740993"})).unwrap(),
            Value::Integer(-9007199254740993)
        );
        assert_eq!(parse(json!({"type": "integer", "value": 5})).unwrap(), Value::Integer(5));
        assert_eq!(parse(json!({"type": "float", "value": 1.5})).unwrap(), Value::Real(1.5));
        assert_eq!(parse(json!({"type": "text", "value": "hé"})).unwrap(), Value::Text("hé".into()));
        assert_eq!(parse(json!({"type": "blob", "base64": "AAH/"})).unwrap(), Value::Blob(vec![0, 1, 255]));
        assert_eq!(parse(json!({"type": "blob", "base64": "AAE="})).unwrap(), Value::Blob(vec![0, 1]));
        assert!(parse(json!({"type": "integer", "value": "1.5"})).is_err());
        assert!(parse(json!({"type": "blob", "base64": "!!"})).is_err());
        assert!(parse(json!({"type": "date"})).is_err());
        assert!(parse(json!({"value": "x"})).is_err());
        assert_eq!(value_json(&Value::Blob(vec![0, 1])), json!({"type": "blob", "base64": "AAE"}));
        assert_eq!(
            value_json(&Value::Integer(i64::MAX)),
            json!({"type": "integer", "value": "9223372036854775807"})
        );
        assert_eq!(value_json(&Value::Real(f64::INFINITY)), json!({"type": "null"}));
        assert_eq!(value_json(&Value::Real(-2.5)), json!({"type": "float", "value": -2.5}));
        assert_eq!(value_json(&Value::Text("a\"b".into())), json!({"type": "text", "value": "a\"b"}));
        assert_eq!(value_json(&Value::Null), json!({"type": "null"}));
    }
}
