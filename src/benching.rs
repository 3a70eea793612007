//! The per-request steps `benches/hot_paths.rs` measures, called the way the proxy hooks
//! call them: the header edits on the request to the backend and on the response, and
//! the access-log line (not an API; the modules themselves stay crate-private).

use crate::config::HeaderEdits;
use crate::http::headers::{self, Forwarded};
use crate::observe::access_log::{millis, timestamp, AccessLog, HttpEntry};
use pingora::http::{RequestHeader, ResponseHeader};
use std::net::IpAddr;
use std::time::Duration;

/// What `upstream_request_filter` does to the request for the backend: the forwarding
/// headers and X-Request-Id, then the route's `request_headers` edits.
pub fn request_edits(
    req: &mut RequestHeader,
    peer: IpAddr,
    client: IpAddr,
    request_id: &str,
    edits: &HeaderEdits,
) -> pingora::Result<()> {
    let f = Forwarded {
        peer,
        client,
        tls: false,
        request_id,
    };
    headers::add_forwarding(req, &f)?;
    headers::apply_edits(req, edits)
}

/// What `response_filter` does to the backend's response: X-Request-Id, the security
/// headers, then the route's `response_headers` edits.
pub fn response_edits(
    resp: &mut ResponseHeader,
    request_id: &str,
    tls: bool,
    edits: &HeaderEdits,
) -> pingora::Result<()> {
    headers::set_request_id(resp, request_id)?;
    headers::add_security_headers(resp, tls)?;
    headers::apply_edits(resp, edits)
}

/// The checks on a request's raw header section (line endings, field shapes, framing);
/// true when it passes.
pub fn check_raw_header(raw: &[u8]) -> bool {
    crate::http::guard::check_raw(raw).is_ok()
}

/// A new request id, as a request without an acceptable X-Request-Id gets.
pub fn new_request_id() -> String {
    headers::new_request_id()
}

/// The access-log line of a proxied request, as `AccessLog::write` queues it.
pub fn access_log_line(client: IpAddr, request_id: &str, took: Duration) -> Vec<u8> {
    let entry = HttpEntry {
        ts: timestamp(),
        request_id,
        client_ip: client.to_string(),
        method: "GET",
        host: "app.example.com",
        path: "/api/v1/users/42?expand=orders",
        status: 200,
        duration_ms: millis(took),
        route: "api",
        pool: "backend",
        backend: "10.0.0.12:8080",
        bytes_sent: 5120,
        protocol: "HTTP/1.1",
        tls: true,
        termination: "-",
        attempts: 1,
        upstream_connect_ms: Some(0.412),
        upstream_response_ms: Some(3.207),
        country: None,
        cache: None,
        cache_wait_ms: None,
    };
    AccessLog::line(&entry).unwrap_or_default()
}
