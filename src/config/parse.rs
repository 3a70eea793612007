//! The entry points other modules use by name: `read_config` (see `read`) and the
//! value grammar shared with the admin API and `$SWITCHYARD_LOG` (see `value`).

pub use super::read::{read_config, MAX_THREADS};
pub use super::value::{
    backend_address, lookup_backend, parse_duration, parse_level, resolve_backend,
};
