//! The HTTP side: the `ProxyHttp` dispatcher and the request-level helpers it calls.

pub mod admission;
pub mod alt_svc;
pub mod attempt;
pub mod cache;
pub mod country;
pub mod ctx;
pub mod errors;
pub mod guard;
pub mod headers;
pub mod limits;
pub mod log;
pub mod mirror;
pub mod path;
pub mod proxy;
pub mod retry;
pub mod termination;
pub mod trace;
pub mod upstream;
pub mod wait;
