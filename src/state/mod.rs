//! State Switchyard keeps on disk itself: the admin overlay store and the atomic file
//! writer it and ACME use.

pub mod durable;
pub mod store;
