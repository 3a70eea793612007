//! Requests Switchyard refuses before routing, beyond what Pingora's parser rejects:
//! both Content-Length and Transfer-Encoding (a request-smuggling pattern; Pingora
//! would drop Content-Length and carry on) and oversized header sections.

use pingora_core::protocols::http::server::Session as HttpSession;
use pingora_proxy::Session;

/// Total size of the request line and headers accepted (nginx's default limit is in
/// the same range; Pingora alone allows about 1 MiB).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The status to refuse the request with, if any.
pub fn refuse(session: &Session) -> Option<u16> {
    let HttpSession::H1(h1) = session.as_downstream() else {
        // HTTP/2 has its own framing (no CL/TE ambiguity) and header-list limits.
        return None;
    };
    let raw = h1.get_headers_raw_bytes();
    if raw.len() > MAX_HEADER_BYTES {
        return Some(431);
    }
    let req = session.req_header();
    if req.headers.contains_key(http::header::TRANSFER_ENCODING) && has_content_length(&raw) {
        return Some(400);
    }
    None
}

/// Whether the raw header block has a Content-Length line (Pingora removes that header
/// from the parsed request when Transfer-Encoding is present).
fn has_content_length(raw: &[u8]) -> bool {
    raw.split(|b| *b == b'\n')
        .any(|line| line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_content_length_in_any_case() {
        assert!(has_content_length(
            b"POST / HTTP/1.1\r\nHost: a\r\nCONTENT-LENGTH: 4\r\n\r\n"
        ));
        assert!(!has_content_length(
            b"POST / HTTP/1.1\r\nHost: a\r\nX-Content-Length: 4\r\n\r\n"
        ));
    }
}
