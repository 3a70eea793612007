//! `switchyard::fuzzing::path_normalize`: see src/fuzzing.rs for the property.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchyard::fuzzing::path_normalize(data));
