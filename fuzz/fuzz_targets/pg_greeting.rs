//! The bytes a PostgreSQL server sends back to the health check's StartupMessage →
//! the check's verdict (`pool::db_checks::PgLogin`): never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let with_user = switchyard::fuzzing::parse_pg_answer(data, true);
    let without = switchyard::fuzzing::parse_pg_answer(data, false);
    // A configured user only ever makes the check stricter.
    assert!(!(with_user.is_ok() && without.is_err()));
});
