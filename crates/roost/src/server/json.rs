//! JSON shapes of the `/v1` API and the SQL value encoding of DESIGN.md: `null`, integers and
//! floats as numbers, text as strings, blobs as `{"base64": "..."}`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value as Json};

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

pub fn value_to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Integer(i) => json!(i),
        // JSON has no infinities or NaN: those come back as null.
        Value::Real(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Text(s) => Json::String(s.clone()),
        Value::Blob(b) => json!({"base64": BASE64.encode(b)}),
    }
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

pub fn result_to_json(result: &QueryResult) -> Json {
    let rows: Vec<Json> =
        result.rows.iter().map(|r| Json::Array(r.iter().map(value_to_json).collect())).collect();
    json!({
        "columns": result.columns,
        "rows": rows,
        "rows_affected": result.rows_affected,
        "last_insert_rowid": result.last_insert_rowid,
    })
}

#[derive(Debug, Serialize)]
pub struct ActorJson {
    pub id: String,
    pub state: &'static str,
    pub size_bytes: u64,
}

pub fn empty_object() -> Json {
    Json::Object(Map::new())
}
