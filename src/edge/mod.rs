//! The accept side of every HTTP listener and tcp_service (SPEC §10): what happens to a
//! client connection before Pingora's HTTP code or our TCP session sees it. Connection
//! caps per listener and per client IP, and the process-wide file-descriptor budget,
//! are checked right after accept (before TLS, through Pingora's connection filter) and
//! held for the connection's life by [`app::EdgeApp`], which wraps the service's app.
//! A PROXY header (listeners' and tcp_services' `proxy_protocol`) is read there too,
//! before the caps count the client it names; [`proxy_header`] also builds the header
//! sent to backends. An HTTP connection's stream then carries the header deadline and
//! the HTTP/2 abuse watch (`stream`); between HTTP/1 requests it waits in
//! [`keepalive`], outside Pingora's session.

pub mod app;
pub mod caps;
pub mod fd_budget;
pub mod h2_watch;
pub mod header_clock;
pub mod keepalive;
pub mod proxy_header;
pub mod stream;

pub use app::{EarlyGate, EdgeApp, Gate, PreTlsHeader};
