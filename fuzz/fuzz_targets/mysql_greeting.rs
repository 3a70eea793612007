//! The bytes a MySQL/MariaDB server sends (its greeting, then its answer to the
//! handshake response) → the health check's verdict: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchyard::fuzzing::mysql_exchange(data));
