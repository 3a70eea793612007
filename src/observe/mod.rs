//! Observability: the JSON access log, Prometheus metrics and the process log.

pub mod access_log;
pub mod metrics;
pub mod process_log;
pub mod refusal;
pub mod stats;
pub mod tracing;
