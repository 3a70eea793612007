//! YAML text → the loader `switchyard -t` runs (`config::parse_str`, without opening
//! the certificate files it names): never a panic, and a configuration it accepts
//! serialises as `GET /api/v1/config` shows it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchyard::fuzzing::config_load(data));
