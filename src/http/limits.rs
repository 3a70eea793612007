//! A listener's `limits` on the HTTP path (SPEC §10): Pingora's server and HTTP/2
//! options built from them, the header-size and declared-body checks admission runs,
//! and the running count of a streamed request body.

use crate::config::{ListenerConfig, ListenerLimits};
use crate::observe::refusal::Reason;
use pingora::apps::HttpServerOptions;
use pingora::{Error, ErrorType, Result};
use pingora_core::protocols::http::server::Session as HttpSession;
use pingora_core::protocols::http::v2::server::{default_h2_options, H2Options};
use pingora_proxy::Session;
use std::time::Duration;

/// Pingora's options for one listener's service.
pub fn server_options(l: &ListenerConfig) -> HttpServerOptions {
    let mut o = HttpServerOptions::default();
    o.h2c = l.http2 && l.tls.is_none();
    // Pingora counts reuses: the first request is not one.
    let n = l.limits.max_requests_per_connection;
    o.keepalive_request_limit = (n > 0).then(|| n - 1);
    o.h2_idle_timeout = Some(h2_idle(&l.limits));
    o
}

/// HTTP/2 has no "close after each response": a zero keep-alive closes an idle h2
/// connection after a second instead.
fn h2_idle(limits: &ListenerLimits) -> Duration {
    limits.keepalive_timeout.max(Duration::from_secs(1))
}

/// Pingora's bounded HTTP/2 defaults with this listener's stream and header limits.
pub fn h2_options(limits: &ListenerLimits) -> H2Options {
    let mut o = default_h2_options();
    o.max_concurrent_streams(limits.h2_max_concurrent_streams);
    o.max_header_list_size(limits.max_header_bytes);
    o
}

/// The keep-alive to set on each HTTP/1 request (Pingora's unit is whole seconds;
/// `None` closes the connection after the response).
pub fn keepalive_seconds(limits: &ListenerLimits) -> Option<u64> {
    limits.keepalive_seconds()
}

/// Per request: the keep-alive (unless the connection is already closing: the client
/// asked, or the process is shutting down) and the body timeout, Pingora's read
/// timeout from here on (the longest wait for one read of the body).
pub fn apply_to_session(session: &mut Session, limits: &ListenerLimits) {
    if session.get_keepalive().is_some() {
        session.set_keepalive(keepalive_seconds(limits));
    }
    session.set_read_timeout(Some(limits.body_timeout));
}

/// Size of the request line and headers as received (HTTP/1; 0 for HTTP/2, whose header
/// list the h2 options bound).
pub fn header_bytes(session: &Session) -> usize {
    match session.as_downstream() {
        HttpSession::H1(h1) => h1.get_headers_raw_bytes().len(),
        _ => 0,
    }
}

/// 431 when the request line and headers pass `max_header_bytes` or the header lines
/// pass `max_headers`.
pub fn header_refusal(
    limits: &ListenerLimits,
    header_bytes: usize,
    lines: usize,
) -> Option<Reason> {
    let too_big = header_bytes > limits.max_header_bytes as usize;
    (too_big || lines > limits.max_headers as usize).then_some(Reason::HeaderTooLarge)
}

/// The body limit for a request on a route (`routes[].max_body_bytes` overrides the
/// listener's); `None` = unlimited.
pub fn body_limit(limits: &ListenerLimits, route: Option<u64>) -> Option<u64> {
    Some(route.unwrap_or(limits.max_body_bytes)).filter(|n| *n > 0)
}

/// Bytes of a request body still allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyBudget {
    left: u64,
}

impl BodyBudget {
    pub fn new(limit: u64) -> Self {
        BodyBudget { left: limit }
    }

    /// Takes `n` bytes; false once the body has passed the limit.
    pub fn take(&mut self, n: usize) -> bool {
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                true
            }
            None => false,
        }
    }
}

/// Spends `chunk` from the request's body budget, if it has one; 413 once the body has
/// passed `max_body_bytes`.
pub fn spend_body(budget: Option<&mut BodyBudget>, chunk: Option<&bytes::Bytes>) -> Result<()> {
    let within = match (budget, chunk) {
        (Some(budget), Some(chunk)) => budget.take(chunk.len()),
        _ => true,
    };
    if within {
        return Ok(());
    }
    Err(Error::explain(
        ErrorType::HTTPStatus(413),
        "request body passed max_body_bytes",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_limits_refuse_bytes_and_lines_separately() {
        let l = ListenerLimits {
            max_header_bytes: 1000,
            max_headers: 3,
            ..ListenerLimits::default()
        };
        assert_eq!(header_refusal(&l, 1000, 3), None);
        assert_eq!(header_refusal(&l, 1001, 1), Some(Reason::HeaderTooLarge));
        assert_eq!(header_refusal(&l, 10, 4), Some(Reason::HeaderTooLarge));
    }

    #[test]
    fn a_route_limit_overrides_the_listener_and_zero_is_unlimited() {
        let l = ListenerLimits {
            max_body_bytes: 100,
            ..ListenerLimits::default()
        };
        assert_eq!(body_limit(&l, None), Some(100));
        assert_eq!(body_limit(&l, Some(5)), Some(5));
        assert_eq!(body_limit(&l, Some(0)), None);
        assert_eq!(body_limit(&ListenerLimits::default(), None), None);
    }

    #[test]
    fn a_body_past_its_budget_is_413_and_no_budget_is_unlimited() {
        let chunk = bytes::Bytes::from_static(b"abc");
        let mut b = BodyBudget::new(5);
        assert!(spend_body(Some(&mut b), Some(&chunk)).is_ok());
        let e = spend_body(Some(&mut b), Some(&chunk)).err();
        assert_eq!(
            e.map(|e| e.etype().clone()),
            Some(ErrorType::HTTPStatus(413))
        );
        assert!(spend_body(None, Some(&chunk)).is_ok());
        assert!(spend_body(Some(&mut BodyBudget::new(0)), None).is_ok());
    }

    #[test]
    fn the_budget_allows_exactly_the_limit() {
        let mut b = BodyBudget::new(10);
        assert!(b.take(4));
        assert!(b.take(6));
        assert!(!b.take(1));
        let mut b = BodyBudget::new(10);
        assert!(!b.take(11));
    }

    #[test]
    fn keepalive_rounds_up_to_whole_seconds_and_zero_closes() {
        let mut l = ListenerLimits::default();
        assert_eq!(keepalive_seconds(&l), Some(60));
        l.keepalive_timeout = Duration::from_millis(1500);
        assert_eq!(keepalive_seconds(&l), Some(2));
        l.keepalive_timeout = Duration::ZERO;
        assert_eq!(keepalive_seconds(&l), None);
        assert_eq!(h2_idle(&l), Duration::from_secs(1));
    }
}
