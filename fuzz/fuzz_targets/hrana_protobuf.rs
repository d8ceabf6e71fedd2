//! Arbitrary bytes as every Hrana request body and WebSocket message, JSON and protobuf
//! (`/v3-protobuf/pipeline`, `/v3-protobuf/cursor`, `hrana3-protobuf` client messages); decoded
//! requests are resolved as the handlers do. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    roost::server::fuzzing::hrana_protobuf(data);
});
