//! The bytes a PostgreSQL server sends back to the health check's StartupMessage →
//! the check's verdict (`pool::db_checks::PgLogin`): never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchyard::fuzzing::pg_greeting(data));
