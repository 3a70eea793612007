//! Observability: the JSON access log and Prometheus metrics.

pub mod access_log;
pub mod metrics;
