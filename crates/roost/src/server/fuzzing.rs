//! Entry points for the `cargo fuzz` targets in `fuzz/` (and the property tests of
//! `server::fuzz_json`): the request decoders, which are private to the server, behind a few
//! functions. Not a stable API.
//!
//! Each one decodes arbitrary bytes the way the server does and converts what decoded the way
//! the handlers do; it must never panic, whatever the input. Invariants the handlers rely on
//! are asserted here, so that the fuzzer reports their violations as crashes.

use super::body::parse_json;
use super::json::{BatchBody, QueryBody};
use crate::vfs::{Params, Statement};

/// Largest statement the targets accept (the server's is `statement_bytes_max`).
pub const STATEMENT_BYTES_MAX: usize = 64;

/// Decodes `bytes` as every Hrana request body and WebSocket message (HTTP pipeline and
/// cursor, sqld's v1 execute and batch, every protocol version, JSON and protobuf) and resolves
/// the requests' statements, batches and stored SQL texts. Answers how many JSON decodings
/// succeeded: text that is not JSON decodes as nothing in JSON.
pub fn hrana_json(bytes: &[u8]) -> usize {
    let decoded = super::hrana::decode_for_fuzzing(bytes, STATEMENT_BYTES_MAX).json;
    if decoded > 0 {
        // Syntax only: a number too big for `Value` (1e999) in an ignored field is still JSON,
        // and the decoders rightly skip it without converting it.
        assert!(
            serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok(),
            "decoded a body that is not JSON"
        );
    }
    decoded
}

/// [`hrana_json`]'s decoders, answering how many protobuf decodings succeeded (most bytes
/// decode as some protobuf message: fields are optional and unknown ones are skipped).
pub fn hrana_protobuf(bytes: &[u8]) -> usize {
    super::hrana::decode_for_fuzzing(bytes, STATEMENT_BYTES_MAX).protobuf
}

/// What [`api_json`] made of a body.
#[derive(Debug, Default)]
pub struct ApiDecoded {
    /// The `/v1/actors/{id}/query` body decoded, and converted to a statement (or refused).
    pub query: Option<Result<Statement, String>>,
    /// The `/v1/actors/{id}/batch` body decoded, and converted to statements (or refused).
    pub batch: Option<Result<Vec<Statement>, String>>,
}

/// Decodes `bytes` as the `/v1` query and batch bodies and converts them to statements as the
/// handlers do, with [`STATEMENT_BYTES_MAX`].
pub fn api_json(bytes: &[u8]) -> ApiDecoded {
    let convert = |body: QueryBody| {
        let (sql_len, params) = (body.sql.len(), body.params.clone());
        let result = body.into_statement(STATEMENT_BYTES_MAX).map_err(|e| e.message);
        if let Ok(statement) = &result {
            assert!(sql_len <= STATEMENT_BYTES_MAX && statement.sql.len() == sql_len);
            let count = |p: &Params| match p {
                Params::None => None,
                Params::Positional(values) => Some(values.len()),
                Params::Named(values) => Some(values.len()),
            };
            let json_count = params.as_ref().and_then(|p| match p {
                serde_json::Value::Array(a) => Some(a.len()),
                serde_json::Value::Object(o) => Some(o.len()),
                _ => None,
            });
            assert_eq!(count(&statement.params), json_count, "parameters lost or invented");
        }
        result
    };
    let decoded = ApiDecoded {
        query: parse_json::<QueryBody>(bytes).ok().map(convert),
        batch: parse_json::<BatchBody>(bytes)
            .ok()
            .map(|body| body.statements.into_iter().map(convert).collect()),
    };
    if decoded.query.is_some() || decoded.batch.is_some() {
        assert!(
            serde_json::from_slice::<serde_json::Value>(bytes).is_ok(),
            "decoded a body that is not JSON"
        );
    }
    decoded
}
