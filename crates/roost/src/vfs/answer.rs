//! What an answer costs in memory, charged while its rows are collected.
//!
//! A statement's rows are held in Rust (`Value`s) and then encoded (JSON API or Hrana JSON).
//! Each value is charged, before it is kept, with its in-memory size plus an upper bound of its
//! encoded size in either encoding, so that the bytes of the rows and of the answer built from
//! them are both inside what was charged. The meter decides what a charge may cost: the host
//! charges a pool of the memory budget and caps one answer; [`Unmetered`] charges nothing.

use rusqlite::types::ValueRef;

use super::error::Error;
use super::Value;

/// Accounts an answer's bytes while it is built.
pub trait AnswerMeter {
    /// Accounts `bytes` more; an error stops the statement (nothing of it is kept).
    fn charge(&self, bytes: u64) -> Result<(), Error>;
}

/// A meter that never refuses (library calls that hold their answers themselves).
#[derive(Debug, Clone, Copy, Default)]
pub struct Unmetered;

impl AnswerMeter for Unmetered {
    fn charge(&self, _bytes: u64) -> Result<(), Error> {
        Ok(())
    }
}

/// Bytes an encoded value may take beyond its payload: Hrana's
/// `{"type":"integer","value":"-9223372036854775808"},` is the longest.
const VALUE_OVERHEAD_BYTES: u64 = 64;
/// A row's own cost: its `Vec` and brackets, or a Hrana cursor line around it.
pub const ROW_OVERHEAD_BYTES: u64 = 64;

/// Length of `text` as a JSON string body: quotes and backslashes take 2 bytes, control
/// characters 2 (`\n`) or 6 (`\u001f`), everything else is copied.
fn json_escaped_len(text: &[u8]) -> u64 {
    text.iter()
        .map(|b| match *b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// Memory of one value held in a row plus its largest encoding.
pub fn value_cost(value: &Value) -> u64 {
    value_ref_cost(match value {
        Value::Null => ValueRef::Null,
        Value::Integer(i) => ValueRef::Integer(*i),
        Value::Real(f) => ValueRef::Real(*f),
        Value::Text(s) => ValueRef::Text(s.as_bytes()),
        Value::Blob(b) => ValueRef::Blob(b),
    })
}

/// [`value_cost`] of a value still inside SQLite, before it is copied.
pub(crate) fn value_ref_cost(value: ValueRef<'_>) -> u64 {
    let held = std::mem::size_of::<Value>() as u64;
    let payload = match value {
        ValueRef::Null | ValueRef::Integer(_) | ValueRef::Real(_) => 0,
        ValueRef::Text(t) if std::str::from_utf8(t).is_ok() => t.len() as u64 + json_escaped_len(t),
        // Invalid UTF-8 is replaced (3 bytes per bad byte) when copied out, then encoded.
        ValueRef::Text(t) => 12 * t.len() as u64,
        ValueRef::Blob(b) => b.len() as u64 + (b.len() as u64).div_ceil(3) * 4,
    };
    held + VALUE_OVERHEAD_BYTES + payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_bound_both_encodings() {
        let values = [
            Value::Null,
            Value::Integer(i64::MIN),
            Value::Real(-1.234_567_890_123_456_7e-300),
            Value::Text("a\"\\\n\u{1}é".into()),
            Value::Blob(vec![7; 1000]),
        ];
        for value in values {
            let cost = value_cost(&value);
            let api = serde_json::to_vec(&match &value {
                Value::Text(s) => serde_json::json!({"type": "text", "value": s}),
                Value::Blob(b) => {
                    serde_json::json!({"type": "blob", "base64": "x".repeat(b.len().div_ceil(3) * 4)})
                }
                Value::Integer(i) => serde_json::json!({"type": "integer", "value": i.to_string()}),
                Value::Real(f) => serde_json::json!({"type": "float", "value": f}),
                Value::Null => serde_json::json!({"type": "null"}),
            })
            .unwrap();
            assert!(cost > api.len() as u64, "{value:?}: cost {cost} <= {}", api.len());
        }
        assert_eq!(json_escaped_len("a\"\u{1}".as_bytes()), 1 + 2 + 6);
    }
}
