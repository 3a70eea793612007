//! The non-proxy HTTP listeners' shared pieces: the metrics endpoint with its scrape-time
//! collector, and the reply builder the admin API uses too.

pub mod metrics;
pub mod reply;
