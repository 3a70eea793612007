//! Switchyard: an L4/L7 load balancer and reverse proxy on Pingora.
//! The module tree follows DESIGN.md.

pub mod admin;
pub mod cli;
pub mod config;
pub mod http;
pub mod limits;
pub mod net;
pub mod observe;
pub mod ops;
pub mod pool;
pub mod routing;
pub mod runtime;
pub mod serve;
pub mod server;
pub mod state;
pub mod tcp;
pub mod tls;
