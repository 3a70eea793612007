//! Observability: the JSON access log (metrics come with the metrics service).

pub mod access_log;
