//! The bytes a MySQL/MariaDB server sends (its greeting, then its answer to the
//! handshake response) → the health check's verdict: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = switchyard::fuzzing::mysql_greeting(data);
    let with_user = switchyard::fuzzing::parse_mysql_exchange(data, Some("health"));
    let without = switchyard::fuzzing::parse_mysql_exchange(data, None);
    // A configured user only ever makes the check stricter.
    assert!(!(with_user.is_ok() && without.is_err()));
});
