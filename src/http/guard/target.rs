//! The request target on the raw request line (RFC 9112 §3.2): one of the four forms,
//! and no control bytes. Pingora percent-encodes control bytes, spaces, `<`, `>` and `"`
//! in a target before parsing it (`GET \0/x` arrives here as `GET %00/x`), so a control
//! byte is refused in its encoded form: `%00` anywhere, and `%01`–`%1F` and `%7F` in the
//! path. In the query such an encoding stays allowed (forms send `%0A` for newlines);
//! there a raw control byte cannot be told from its encoding, and the backend gets the
//! encoded, harmless form.

use super::Refusal;

/// Refuses a target that is in no valid form or carries a control byte.
pub fn check(request_line: &[u8]) -> Result<(), Refusal> {
    let mut parts = request_line.splitn(2, |b| *b == b' ');
    let method = parts.next().unwrap_or_default();
    let rest = parts.next().unwrap_or_default();
    let target = match rest.iter().rposition(|b| *b == b' ') {
        Some(end) => &rest[..end],
        None => rest,
    };
    if target.iter().any(|b| *b <= b' ' || *b == 0x7f) {
        return Err(Refusal::BAD_REQUEST);
    }
    let form_ok = match target.first() {
        Some(b'/') => true,
        Some(b'*') => target == b"*" && method == b"OPTIONS",
        Some(_) if method == b"CONNECT" => true,
        Some(_) => is_absolute_form(target),
        None => false,
    };
    if !form_ok {
        return Err(Refusal::BAD_REQUEST);
    }
    let query_at = target
        .iter()
        .position(|b| matches!(b, b'?' | b'#'))
        .unwrap_or(target.len());
    for (i, w) in target.windows(3).enumerate() {
        if w[0] != b'%' {
            continue;
        }
        let Some(byte) = hex(w[1]).zip(hex(w[2])).map(|(h, l)| h << 4 | l) else {
            continue;
        };
        if byte == 0 || (i < query_at && (byte < 0x20 || byte == 0x7f)) {
            return Err(Refusal::BAD_REQUEST);
        }
    }
    Ok(())
}

/// `scheme "://" ...`, the scheme being a letter then letters, digits, `+`, `-`, `.`.
fn is_absolute_form(target: &[u8]) -> bool {
    let Some(colon) = target.windows(3).position(|w| w == b"://") else {
        return false;
    };
    let scheme = &target[..colon];
    scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> bool {
        check(line.as_bytes()).is_ok()
    }

    #[test]
    fn the_four_forms_pass() {
        assert!(ok("GET / HTTP/1.1"));
        assert!(ok("GET /a/b?c=d HTTP/1.1"));
        assert!(ok("GET http://a.example/x HTTP/1.1"));
        assert!(ok("OPTIONS * HTTP/1.1"));
        assert!(ok("CONNECT a.example:443 HTTP/1.1"));
    }

    #[test]
    fn targets_in_no_form_are_refused() {
        assert!(!ok("GET %00/x HTTP/1.1"), "an escaped NUL before the path");
        assert!(!ok("GET x/y HTTP/1.1"));
        assert!(!ok("GET * HTTP/1.1"));
        assert!(!ok("OPTIONS *x HTTP/1.1"));
        assert!(!ok("GET 1http://a/ HTTP/1.1"));
        assert!(!ok("GET  HTTP/1.1"));
    }

    #[test]
    fn control_bytes_are_refused_raw_or_encoded_in_the_path() {
        assert!(!ok("GET /x\x01y HTTP/1.1"));
        assert!(!ok("GET /x\x7f HTTP/1.1"));
        assert!(!ok("GET /x%00 HTTP/1.1"));
        assert!(!ok("GET /x%0d%0aSet-Cookie:a HTTP/1.1"));
        assert!(!ok("GET /x%1F HTTP/1.1"));
        assert!(!ok("GET /x%7f HTTP/1.1"));
        assert!(
            !ok("GET /x?a=%00 HTTP/1.1"),
            "NUL is refused in the query too"
        );
    }

    #[test]
    fn ordinary_escapes_and_query_newlines_pass() {
        assert!(ok("GET /a%20b%2Fc%25 HTTP/1.1"));
        assert!(ok("GET /x?text=a%0D%0Ab HTTP/1.1"));
        assert!(
            ok("GET /100% HTTP/1.1"),
            "a stray % is the path layer's business"
        );
    }
}
