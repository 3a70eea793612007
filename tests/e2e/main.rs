//! The end-to-end tests in one test binary: each module starts the real switchyard binary
//! (and real backends, databases, Redis, Prometheus, ... as an area needs) on 127.0.0.1.
//! `common` holds the shared harness.

// A failed set-up step is a failed test: the harness unwraps and expects honestly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod access_log;
mod acme;
mod admin_api;
mod balancing;
mod cache;
mod cache_ops;
mod cli;
mod cluster;
mod cockpit;
mod cockpit_dashboard;
mod config_errors;
mod dashboard;
mod discovery;
mod errors;
mod framing;
mod fuzz_corpus;
mod grafana_alerts;
mod h2_abuse;
mod headers;
mod http3;
mod l4;
mod limits;
mod metrics;
mod ocsp;
mod operations;
mod path;
mod protocols;
mod proxy_protocol;
mod rate_limit;
mod resilience;
mod routing;
mod smoke;
mod tls;
mod tracing;
mod traffic;
mod ws_teardown;
