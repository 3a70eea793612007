//! Requests Switchyard refuses before routing, beyond what Pingora's parser rejects
//! (SPEC §10): malformed or ambiguous HTTP/1 framing
//! judged on the raw header bytes (`fields`) and the request target (`target`). Every
//! refusal is answered with its status, closed and counted as `malformed`.
//!
//! What Pingora 0.9 already refuses itself (400 and close, before any hook runs): a space
//! before the colon, obs-fold, bare CR, differing Content-Length values, a final coding
//! other than `chunked`, Transfer-Encoding on HTTP/1.0, two Host fields and an
//! absolute-form authority that differs from Host. Invalid chunk sizes are found by its
//! body reader once the request is proxied; see docs/SECURITY.md.

mod fields;
mod target;

use crate::observe::refusal::Reason;
use pingora_core::protocols::http::server::Session as HttpSession;
use pingora_proxy::Session;

/// A refused request: answered with `status`, then the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
}

impl Refusal {
    /// 400, malformed.
    pub const BAD_REQUEST: Refusal = Refusal { status: 400 };
    /// 501: a transfer coding Switchyard does not implement (RFC 9112 §6.1).
    pub const NOT_IMPLEMENTED: Refusal = Refusal { status: 501 };
}

/// The status to refuse this request with, if any (what admission answers and closes).
pub fn refuse(session: &Session) -> Option<u16> {
    refusal(session).map(|r| r.status)
}

/// The typed refusal for this request, if any.
pub fn refusal(session: &Session) -> Option<Refusal> {
    let HttpSession::H1(h1) = session.as_downstream() else {
        // HTTP/2 has its own framing (no CL/TE ambiguity) and header-list limits.
        return None;
    };
    let raw = h1.get_headers_raw_bytes();
    let refusal = check(&raw, session.req_header()).err()?;
    log::debug!(
        "refused a request from {:?}: {} ({})",
        session.client_addr(),
        refusal.status,
        Reason::Malformed.as_str()
    );
    Some(refusal)
}

/// Lets pipelined HTTP/1.1 requests on this connection be answered in order (Pingora
/// otherwise drops the connection after the first). Pingora serves them one at a time:
/// a request is read only once the previous response is written, and a refused request
/// closes the connection (keep-alive off), so requests behind it are never read.
pub fn allow_pipelining(session: &mut Session) {
    if let HttpSession::H1(h1) = session.as_downstream_mut() {
        h1.set_pipelining_enabled(true);
    }
}

/// The checks on the raw header section alone (what `fuzzing` drives).
pub fn check_raw(raw: &[u8]) -> Result<(), Refusal> {
    let head = fields::split(raw)?;
    target::check(head.request_line)?;
    fields::check_framing(&head.fields)
}

/// Every check, on the raw header section and the parsed request header.
fn check(raw: &[u8], req: &pingora::http::RequestHeader) -> Result<(), Refusal> {
    let head = fields::split(raw)?;
    target::check(head.request_line)?;
    // RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host.
    if req.version == http::Version::HTTP_11 && !req.headers.contains_key(http::header::HOST) {
        return Err(Refusal::BAD_REQUEST);
    }
    fields::check_framing(&head.fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::RequestHeader;

    fn parsed(version: http::Version, host: Option<&str>) -> RequestHeader {
        let Ok(mut h) = RequestHeader::build("GET", b"/", None) else {
            panic!("header");
        };
        h.set_version(version);
        if let Some(host) = host {
            if h.insert_header("host", host).is_err() {
                panic!("host");
            }
        }
        h
    }

    #[test]
    fn http11_needs_host_and_http10_does_not() {
        let v11 = parsed(http::Version::HTTP_11, None);
        assert_eq!(
            check(b"GET / HTTP/1.1\r\n\r\n", &v11),
            Err(Refusal::BAD_REQUEST)
        );
        let v10 = parsed(http::Version::HTTP_10, None);
        assert_eq!(check(b"GET / HTTP/1.0\r\n\r\n", &v10), Ok(()));
        let with_host = parsed(http::Version::HTTP_11, Some("a"));
        assert_eq!(
            check(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &with_host),
            Ok(())
        );
    }

    #[test]
    fn a_bare_lf_is_a_400() {
        let h = parsed(http::Version::HTTP_11, Some("a"));
        let raw = b"GET / HTTP/1.1\nHost: a\r\n\r\n";
        assert_eq!(check(raw, &h), Err(Refusal::BAD_REQUEST));
    }
}
