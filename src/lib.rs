//! Switchyard: an L4/L7 load balancer and reverse proxy on Pingora.
//! The module tree follows DESIGN.md.

pub(crate) mod admin;
pub mod cache;
pub mod cli;
pub mod config;
pub(crate) mod discovery;
pub(crate) mod edge;
pub(crate) mod geo;
pub(crate) mod http;
pub(crate) mod limits;
pub(crate) mod net;
pub(crate) mod observe;
pub(crate) mod ops;
pub(crate) mod pool;
pub(crate) mod quic;
pub mod routing;
pub mod runtime;
pub(crate) mod serve;
pub mod server;
pub mod state;
pub(crate) mod tcp;
pub(crate) mod tls;

/// The per-request steps the criterion benches in benches/ measure (not an API).
#[doc(hidden)]
pub mod benching;

/// The pure parsers the fuzz targets in fuzz/ call: the same functions the server runs
/// on untrusted bytes (not an API; the modules themselves stay crate-private).
#[doc(hidden)]
pub mod fuzzing;
