//! Admin API request bodies (`POST …/backends`, `PATCH …/backends/ADDRESS`) → the
//! validation the API runs before it changes anything: never a panic, a refusal is a
//! 400 naming the field, and an accepted weight is from 1 to 1000.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchyard::fuzzing::admin_body(data));
