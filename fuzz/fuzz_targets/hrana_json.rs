//! Arbitrary bytes as every Hrana request body and WebSocket message (pipeline, cursor, sqld's
//! v1 execute and batch, client messages), for protocol versions 1 to 3; decoded requests are
//! resolved as the handlers do (stored SQL texts, batch conditions, statement limits). Never a
//! panic; bytes that are not JSON never decode.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    roost::server::fuzzing::hrana_json(data);
});
