//! Requests Switchyard refuses before routing, beyond what Pingora's parser rejects
//! (SPEC §10): oversized header sections, and malformed or ambiguous HTTP/1 framing
//! judged on the raw header bytes (`fields`) and the request target (`target`). A refusal
//! is typed (status and reason) so it can be answered, closed and counted.
//!
//! What Pingora 0.9 already refuses itself (400 and close, before any hook runs): a space
//! before the colon, obs-fold, bare CR, differing Content-Length values, a final coding
//! other than `chunked`, Transfer-Encoding on HTTP/1.0, two Host fields and an
//! absolute-form authority that differs from Host. Invalid chunk sizes are found by its
//! body reader once the request is proxied; see docs/SECURITY.md.

mod fields;
mod target;

use pingora_core::protocols::http::server::Session as HttpSession;
use pingora_proxy::Session;

/// Total size of the request line and headers accepted (nginx's default limit is in
/// the same range; Pingora alone allows about 1 MiB).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Why a request was refused: the `reason` label of `switchyard_http_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Malformed or ambiguous framing, target or Host.
    Malformed,
    /// The header section is over the limit.
    HeaderTooLarge,
}

impl Reason {
    /// The metric label (SPEC §10).
    pub fn label(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::HeaderTooLarge => "header_too_large",
        }
    }
}

/// A refused request: answered with `status`, then the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: Reason,
}

impl Refusal {
    /// 400, malformed.
    pub const BAD_REQUEST: Refusal = Refusal {
        status: 400,
        reason: Reason::Malformed,
    };
    /// 501: a transfer coding Switchyard does not implement (RFC 9112 §6.1).
    pub const NOT_IMPLEMENTED: Refusal = Refusal {
        status: 501,
        reason: Reason::Malformed,
    };
    /// 431: the header section is too large.
    pub const TOO_LARGE: Refusal = Refusal {
        status: 431,
        reason: Reason::HeaderTooLarge,
    };
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
        refusal.reason.label()
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

/// Every check, on the raw header section and the parsed request header.
fn check(raw: &[u8], req: &pingora::http::RequestHeader) -> Result<(), Refusal> {
    if raw.len() > MAX_HEADER_BYTES {
        return Err(Refusal::TOO_LARGE);
    }
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
    fn an_oversized_header_section_is_431() {
        let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        raw.resize(MAX_HEADER_BYTES + 1, b'a');
        raw.extend_from_slice(b"\r\n\r\n");
        let h = parsed(http::Version::HTTP_11, Some("a"));
        let refusal = check(&raw, &h);
        assert_eq!(refusal, Err(Refusal::TOO_LARGE));
        assert_eq!(Reason::HeaderTooLarge.label(), "header_too_large");
    }

    #[test]
    fn refusals_of_framing_are_labelled_malformed() {
        let h = parsed(http::Version::HTTP_11, Some("a"));
        let raw = b"GET / HTTP/1.1\nHost: a\r\n\r\n";
        let Err(refusal) = check(raw, &h) else {
            panic!("bare LF accepted");
        };
        assert_eq!((refusal.status, refusal.reason.label()), (400, "malformed"));
    }
}
