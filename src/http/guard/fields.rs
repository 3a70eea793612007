//! The raw header section, line by line: CRLF-only line endings, field-line shape, and
//! the message-framing fields (Content-Length, Transfer-Encoding; RFC 9112 §6).
//! httparse accepts bare LF line endings, and Pingora collapses `Content-Length: 5, 5`,
//! so these are judged on the bytes as received, not on the parsed header.

use super::Refusal;

/// The header section cut into its request line and field lines (without CRLF).
pub struct Head<'a> {
    pub request_line: &'a [u8],
    pub fields: Vec<Field<'a>>,
}

/// One field line: its name and its value with the optional whitespace trimmed.
pub struct Field<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

/// Splits `raw` (request line, fields, empty line) into lines, refusing a bare LF or CR
/// (RFC 9112 §2.2: a recipient of a bare CR must reject or replace it; a bare LF lets a
/// lenient backend see other lines than we did), obs-fold (§5.2) and whitespace between
/// a field name and its colon (§5.1).
pub fn split(raw: &[u8]) -> Result<Head<'_>, Refusal> {
    // Every LF after a CR and every CR before an LF (memchr: the section is scanned by
    // word, not byte by byte).
    let mut from = 0;
    while let Some(found) = memchr::memchr2(b'\r', b'\n', &raw[from..]) {
        let i = from + found;
        let ok = match raw[i] {
            b'\n' => i > 0 && raw[i - 1] == b'\r',
            _ => raw.get(i + 1) == Some(&b'\n'),
        };
        if !ok {
            return Err(Refusal::BAD_REQUEST);
        }
        from = i + 1;
    }
    let mut lines = raw
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut fields = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return Err(Refusal::BAD_REQUEST);
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return Err(Refusal::BAD_REQUEST);
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
            return Err(Refusal::BAD_REQUEST);
        }
        fields.push(Field {
            name,
            value: trim_ows(&line[colon + 1..]),
        });
    }
    Ok(Head {
        request_line,
        fields,
    })
}

/// Refuses ambiguous framing: more than one Content-Length field or a list in one
/// (RFC 9110 §8.6 lets a proxy collapse equal values; we refuse, as SPEC §10 says), a
/// Content-Length that is not digits, Content-Length with Transfer-Encoding (§6.1: a
/// request-smuggling shape), and a Transfer-Encoding other than a lone `chunked`;
/// also `Content_Length` and `Transfer_Encoding`, which CGI-style backends fold into the
/// real names.
pub fn check_framing(fields: &[Field<'_>]) -> Result<(), Refusal> {
    let mut lengths = 0;
    let mut codings = Vec::new();
    for f in fields {
        if f.name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            if f.value.is_empty() || !f.value.iter().all(u8::is_ascii_digit) {
                return Err(Refusal::BAD_REQUEST);
            }
        } else if f.name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings.push(f.value);
        } else if f.name.eq_ignore_ascii_case(b"content_length")
            || f.name.eq_ignore_ascii_case(b"transfer_encoding")
        {
            return Err(Refusal::BAD_REQUEST);
        }
    }
    if lengths > 1 || (lengths == 1 && !codings.is_empty()) {
        return Err(Refusal::BAD_REQUEST);
    }
    match codings.as_slice() {
        [] => Ok(()),
        [one] => transfer_coding(one),
        // Two fields are one list (RFC 9110 §5.3), but no client needs that form.
        _ => Err(Refusal::BAD_REQUEST),
    }
}

/// One Transfer-Encoding value: a lone `chunked` passes. A list whose last coding is not
/// `chunked`, that names `chunked` twice, or that is not a clean token list is 400
/// (RFC 9112 §6.3: the length cannot be determined); a clean list ending in `chunked`
/// with other codings before it is 501 (§6.1: a coding we do not implement).
fn transfer_coding(value: &[u8]) -> Result<(), Refusal> {
    let codings: Vec<&[u8]> = value.split(|b| *b == b',').map(trim_ows).collect();
    if codings
        .iter()
        .any(|c| c.is_empty() || !c.iter().all(|b| is_tchar(*b)))
    {
        return Err(Refusal::BAD_REQUEST);
    }
    let chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
    let last_is_chunked = codings.last().is_some_and(|c| chunked(c));
    if !last_is_chunked || codings.iter().filter(|c| chunked(c)).count() > 1 {
        return Err(Refusal::BAD_REQUEST);
    }
    if codings.len() > 1 {
        return Err(Refusal::NOT_IMPLEMENTED);
    }
    Ok(())
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// RFC 9110 §5.6.2 token characters, as a table (one load per name byte).
static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

/// Strips optional whitespace (SP, HTAB) from both ends.
fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let end = v.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
    match (start, end) {
        (Some(s), Some(e)) => &v[s..=e],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The refusal status for a header section, or 0 if it passes.
    fn status(raw: &[u8]) -> u16 {
        match split(raw).and_then(|h| check_framing(&h.fields)) {
            Ok(()) => 0,
            Err(r) => r.status,
        }
    }

    fn req(fields: &str) -> Vec<u8> {
        format!("POST / HTTP/1.1\r\nHost: a\r\n{fields}\r\n").into_bytes()
    }

    #[test]
    fn a_plain_request_passes_and_is_cut_into_lines() {
        let raw = b"GET /x HTTP/1.1\r\nHost: a\r\nX-A:  b \t\r\n\r\n";
        let Ok(head) = split(raw) else {
            panic!("refused");
        };
        assert_eq!(head.request_line, b"GET /x HTTP/1.1");
        let pairs: Vec<(&[u8], &[u8])> = head.fields.iter().map(|f| (f.name, f.value)).collect();
        assert_eq!(pairs, vec![(&b"Host"[..], &b"a"[..]), (b"X-A", b"b")]);
        assert_eq!(status(&req("Content-Length: 5\r\n")), 0);
        assert_eq!(status(&req("Transfer-Encoding: chunked\r\n")), 0);
        assert_eq!(status(&req("Transfer-Encoding: CHUNKED\r\n")), 0);
        assert_eq!(status(&req("Transfer-Encoding:\tchunked\t\r\n")), 0);
    }

    #[test]
    fn bare_lf_and_bare_cr_are_refused() {
        assert_eq!(status(b"GET / HTTP/1.1\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\n\n"), 400);
        assert_eq!(status(b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), 400);
    }

    #[test]
    fn obs_fold_and_space_before_the_colon_are_refused() {
        assert_eq!(status(&req("X-A: b\r\n c\r\n")), 400);
        assert_eq!(status(&req("X-A: b\r\n\tc\r\n")), 400);
        assert_eq!(status(&req("Transfer-Encoding : chunked\r\n")), 400);
        assert_eq!(status(&req("Transfer-Encoding\t: chunked\r\n")), 400);
        assert_eq!(status(&req(" Transfer-Encoding: chunked\r\n")), 400);
        assert_eq!(status(&req("No-Colon\r\n")), 400);
        assert_eq!(status(&req(": empty-name\r\n")), 400);
    }

    #[test]
    fn content_length_must_be_one_field_of_digits_without_transfer_encoding() {
        assert_eq!(
            status(&req("Content-Length: 5\r\nContent-Length: 5\r\n")),
            400
        );
        assert_eq!(status(&req("Content-Length: 5, 5\r\n")), 400);
        assert_eq!(status(&req("Content-Length: 5,6\r\n")), 400);
        assert_eq!(status(&req("Content-Length: +5\r\n")), 400);
        assert_eq!(status(&req("Content-Length: 0x5\r\n")), 400);
        assert_eq!(status(&req("Content-Length:\r\n")), 400);
        assert_eq!(
            status(&req("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n")),
            400
        );
        assert_eq!(
            status(&req("transfer-encoding: chunked\r\ncontent-length: 5\r\n")),
            400
        );
        assert_eq!(status(&req("Content_Length: 5\r\n")), 400);
        assert_eq!(status(&req("Transfer_Encoding: chunked\r\n")), 400);
    }

    #[test]
    fn obfuscated_transfer_encodings_are_400() {
        for te in [
            "xchunked",
            "chunkedx",
            "chunked, identity",
            "identity",
            "gzip",
            "chunked, chunked",
            "chunked,",
            ", chunked",
            "\"chunked\"",
            "chunked;q=1",
            "chu nked",
            "chunked\x0b",
            "\x0cchunked",
            "",
        ] {
            assert_eq!(
                status(&req(&format!("Transfer-Encoding: {te}\r\n"))),
                400,
                "{te:?}"
            );
        }
        assert_eq!(
            status(&req(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
            )),
            400
        );
    }

    #[test]
    fn other_codings_before_chunked_are_501() {
        for te in ["gzip, chunked", "deflate,chunked", "foo , chunked"] {
            assert_eq!(
                status(&req(&format!("Transfer-Encoding: {te}\r\n"))),
                501,
                "{te:?}"
            );
        }
    }
}
