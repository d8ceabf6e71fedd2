//! Arbitrary bytes as the `/v1` query and batch bodies, converted to statements as the
//! handlers do (`into_statement` with a statement limit). Never a panic; bytes that are not JSON
//! never decode; a converted statement keeps its SQL and its number of parameters.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = roost::server::fuzzing::api_json(data);
    if let Some(Ok(statement)) = &decoded.query {
        assert!(statement.sql.len() <= roost::server::fuzzing::STATEMENT_BYTES_MAX);
    }
});
