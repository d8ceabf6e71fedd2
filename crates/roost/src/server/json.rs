//! JSON shapes of the `/v1` API and the SQL value encoding of DESIGN.md: `null`, integers and
//! floats as numbers, text as strings, blobs as `{"base64": "..."}`.

use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::engine::GeneralPurpose;
use base64::Engine;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value as Json};

use super::error::ApiError;
use crate::vfs::{Params, QueryResult, Statement, Value};

pub fn value_from_json(json: &Json) -> Result<Value, ApiError> {
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Integer(i64::from(*b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(
                n.as_f64().ok_or_else(|| ApiError::bad_request(format!("number {n} is out of range")))?,
            ),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Object(o) => match (o.get("base64"), o.len()) {
            (Some(Json::String(b64)), 1) => Value::Blob(
                BASE64.decode(b64).map_err(|_| ApiError::bad_request("blob is not valid base64"))?,
            ),
            _ => return Err(ApiError::bad_request("an object value must be {\"base64\": \"...\"}")),
        },
        Json::Array(_) => return Err(ApiError::bad_request("arrays are not SQL values")),
    })
}

pub fn params_from_json(params: Option<&Json>) -> Result<Params, ApiError> {
    match params {
        None | Some(Json::Null) => Ok(Params::None),
        Some(Json::Array(values)) => {
            Ok(Params::Positional(values.iter().map(value_from_json).collect::<Result<_, _>>()?))
        }
        Some(Json::Object(named)) => Ok(Params::Named(
            named
                .iter()
                .map(|(k, v)| Ok((k.clone(), value_from_json(v)?)))
                .collect::<Result<_, ApiError>>()?,
        )),
        Some(_) => Err(ApiError::bad_request("params must be an array or an object")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    pub sql: String,
    #[serde(default)]
    pub params: Option<Json>,
}

impl QueryBody {
    pub fn into_statement(self, sql_bytes_max: usize) -> Result<Statement, ApiError> {
        if self.sql.len() > sql_bytes_max {
            return Err(ApiError::bad_request(format!("SQL statement longer than {sql_bytes_max} bytes")));
        }
        let params = params_from_json(self.params.as_ref())?;
        Ok(Statement::with_params(self.sql, params))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    pub statements: Vec<QueryBody>,
    #[serde(default)]
    pub transaction: bool,
}

/// A SQL value in the `/v1` encoding, serialized without an intermediate JSON tree. JSON has
/// no infinities or NaN: those come back as null.
pub struct ValueJson<'a>(pub &'a Value);

impl Serialize for ValueJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => serializer.serialize_unit(),
            Value::Integer(i) => serializer.serialize_i64(*i),
            Value::Real(f) if f.is_finite() => serializer.serialize_f64(*f),
            Value::Real(_) => serializer.serialize_unit(),
            Value::Text(s) => serializer.serialize_str(s),
            Value::Blob(b) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("base64", &Base64Str(b, &BASE64))?;
                map.end()
            }
        }
    }
}

/// Blob bytes as a base64 string in `engine`'s alphabet and padding, written straight into the
/// output (no intermediate string).
pub struct Base64Str<'a>(pub &'a [u8], pub &'a GeneralPurpose);

impl Serialize for Base64Str<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&Base64Display::new(self.0, self.1))
    }
}

struct RowJson<'a>(&'a [Value]);

impl Serialize for RowJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(ValueJson))
    }
}

struct RowsJson<'a>(&'a [Vec<Value>]);

impl Serialize for RowsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|row| RowJson(row)))
    }
}

/// A query answer: `{"columns", "rows", "rows_affected", "last_insert_rowid"}`.
pub struct ResultJson<'a>(pub &'a QueryResult);

impl Serialize for ResultJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let result = self.0;
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("columns", &result.columns)?;
        map.serialize_entry("rows", &RowsJson(&result.rows))?;
        map.serialize_entry("rows_affected", &result.rows_affected)?;
        map.serialize_entry("last_insert_rowid", &result.last_insert_rowid)?;
        map.end()
    }
}

/// A batch answer: `{"results": [<query answer>...]}`.
pub struct BatchJson<'a>(pub &'a [QueryResult]);

impl Serialize for BatchJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("results", &ResultsJson(self.0))?;
        map.end()
    }
}

struct ResultsJson<'a>(&'a [QueryResult]);

impl Serialize for ResultsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(ResultJson))
    }
}

#[derive(Debug, Serialize)]
pub struct ActorJson {
    pub id: String,
    pub state: &'static str,
    pub size_bytes: u64,
    /// With several nodes: the node that owns the actor (none while no live node does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

pub fn empty_object() -> Json {
    Json::Object(Map::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_encode_as_documented() {
        let result = QueryResult {
            columns: vec!["a".into(), "b".into()],
            decltypes: vec![None, Some("TEXT".into())],
            rows: vec![
                vec![Value::Null, Value::Integer(-3)],
                vec![Value::Real(f64::INFINITY), Value::Text("x\"y".into())],
                vec![Value::Real(1.5), Value::Blob(vec![0, 1, 255])],
            ],
            rows_affected: 2,
            last_insert_rowid: 7,
        };
        let encoded: Json =
            serde_json::from_slice(&serde_json::to_vec(&ResultJson(&result)).unwrap()).unwrap();
        assert_eq!(
            encoded,
            serde_json::json!({
                "columns": ["a", "b"],
                "rows": [[null, -3], [null, "x\"y"], [1.5, {"base64": "AAH/"}]],
                "rows_affected": 2,
                "last_insert_rowid": 7,
            })
        );
    }
}
