//! Fuzz-style property tests of the request decoders (stable Rust; see `tests/fuzz_props.rs`
//! for the storage and authorizer ones): arbitrary bytes and arbitrary JSON trees, bare or
//! wrapped in the shape of a real request, fed to the `/v1` bodies and the Hrana requests.
//! Decoding answers a value or an error, never a panic; decoded bodies convert to statements
//! (or a `bad_request`) without panicking either.

use proptest::prelude::*;
use serde_json::{json, Value as Json};

use super::json::params_from_json;

/// Arbitrary JSON, biased toward the strings and keys the decoders look for.
fn json_tree() -> impl Strategy<Value = Json> {
    let key = prop_oneof![
        Just("sql".to_string()),
        Just("params".to_string()),
        Just("base64".to_string()),
        Just("type".to_string()),
        Just("value".to_string()),
        Just("stmt".to_string()),
        Just("args".to_string()),
        Just("named_args".to_string()),
        Just("steps".to_string()),
        Just("condition".to_string()),
        Just("cond".to_string()),
        Just("conds".to_string()),
        Just("step".to_string()),
        "[a-z_]{0,8}",
    ];
    let text = prop_oneof![
        Just("integer".to_string()),
        Just("float".to_string()),
        Just("blob".to_string()),
        Just("text".to_string()),
        Just("null".to_string()),
        Just("execute".to_string()),
        Just("batch".to_string()),
        Just("not".to_string()),
        Just("and".to_string()),
        Just("9223372036854775808".to_string()),
        Just("SELECT ?1, :a, @b, $c".to_string()),
        any::<String>(),
    ];
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<f64>().prop_map(Json::from),
        text.prop_map(Json::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

/// Feeds one JSON document to every decoder (the entry points of the `cargo fuzz` targets).
fn decode_all(bytes: &[u8]) {
    super::fuzzing::api_json(bytes);
    super::fuzzing::hrana_json(bytes);
}

/// A protobuf pipeline with one execute of `sql` and `args` (raw `Value` messages), written by
/// hand so that the property below can put any bytes where a value goes.
fn protobuf_pipeline(sql: &str, args: &[Vec<u8>]) -> Vec<u8> {
    fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(tag << 3) | 2];
        prost::encoding::encode_varint(bytes.len() as u64, &mut out);
        out.extend_from_slice(bytes);
        out
    }
    let mut stmt = field(1, sql.as_bytes());
    for arg in args {
        stmt.extend(field(3, arg));
    }
    field(2, &field(2, &field(1, &stmt)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_decode_or_error(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        decode_all(&bytes);
    }

    #[test]
    fn arbitrary_protobuf_in_request_shapes_decodes_or_errors(
        sql in any::<String>(),
        args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 0..4),
        flip in any::<usize>(),
    ) {
        let mut bytes = protobuf_pipeline(&sql, &args);
        super::fuzzing::hrana_protobuf(&bytes);
        let at = flip % bytes.len();
        bytes[at] ^= 0x5a;
        super::fuzzing::hrana_protobuf(&bytes);
        super::fuzzing::hrana_protobuf(&bytes[..at]);
    }

    #[test]
    fn arbitrary_json_in_request_shapes_decodes_or_errors(value in json_tree(), sql in any::<String>()) {
        let shapes = [
            value.clone(),
            json!({"sql": sql, "params": value}),
            json!({"statements": [{"sql": sql, "params": value}], "transaction": true}),
            json!({"requests": [{"type": "execute", "stmt": {"sql": sql, "args": [value]}}]}),
            json!({"requests": [{"type": "execute", "stmt": {"sql": sql, "named_args": [{"name": ":a", "value": value}]}}]}),
            json!({"requests": [{"type": "batch", "batch": {"steps": [{"stmt": {"sql": sql}, "condition": value}]}}]}),
            json!({"baton": null, "batch": {"steps": [{"stmt": value}]}}),
        ];
        for shape in shapes {
            decode_all(&serde_json::to_vec(&shape).unwrap());
            let _ = params_from_json(Some(&shape));
        }
    }
}

/// Found by `cargo fuzz run hrana_json`: a number beyond `f64` in a field the decoders ignore.
#[test]
fn a_huge_number_in_an_ignored_field_is_still_json() {
    let body = include_bytes!("../../../../fuzz/corpus/hrana_json/regress-huge-number");
    assert!(super::fuzzing::hrana_json(body) > 0, "the body decodes (its odd field is ignored)");
    decode_all(br#"{"stmt":{"sql":"SELECT 1","x":1e999}}"#);
}
