//! Request-path normalisation (SPEC §10): one canonical spelling of a path, so that a
//! route's match, its ACL and what the backend serves cannot disagree. Percent-encoded
//! unreserved characters are decoded, other escapes get upper-case hex, repeated slashes
//! are merged and `.`/`..` segments resolved (RFC 3986 §5.2.4, never above the root).
//! An encoded `/`, `\` or NUL, a raw `\` or control byte, or a broken escape is refused.
//! Pure: a path in, a path or a refusal out; the query string is not its business.

use std::borrow::Cow;
use std::fmt;

/// Why a path is refused (the request gets 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRefusal {
    /// `%2F`: a slash that routing would not see as one, but a backend might.
    EncodedSlash,
    /// `%5C` or a raw `\`: a separator on some backends (Windows, some frameworks).
    Backslash,
    /// `%00`: truncates the path in C-string backends.
    Nul,
    /// A raw control byte or DEL.
    ControlByte,
    /// `%` not followed by two hex digits.
    BadEscape,
}

impl fmt::Display for PathRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathRefusal::EncodedSlash => "encoded slash in path",
            PathRefusal::Backslash => "backslash in path",
            PathRefusal::Nul => "encoded NUL in path",
            PathRefusal::ControlByte => "control byte in path",
            PathRefusal::BadEscape => "invalid percent-encoding in path",
        })
    }
}

/// The normal form of `path`; `Borrowed` (no allocation) when it already is normal.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathRefusal> {
    if !needs_work(path.as_bytes())? {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path)?;
    Ok(Cow::Owned(resolve(&decoded)))
}

/// RFC 3986 §2.3.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte an escape at `at` (the `%`) stands for, refusing the forbidden ones.
fn escaped(bytes: &[u8], at: usize) -> Result<u8, PathRefusal> {
    let digit = |i: usize| bytes.get(i).copied().and_then(hex);
    let (Some(hi), Some(lo)) = (digit(at + 1), digit(at + 2)) else {
        return Err(PathRefusal::BadEscape);
    };
    match (hi << 4) | lo {
        b'/' => Err(PathRefusal::EncodedSlash),
        b'\\' => Err(PathRefusal::Backslash),
        0 => Err(PathRefusal::Nul),
        v => Ok(v),
    }
}

fn refuse_raw(b: u8) -> Result<(), PathRefusal> {
    match b {
        b'\\' => Err(PathRefusal::Backslash),
        b if b < 0x20 || b == 0x7f => Err(PathRefusal::ControlByte),
        _ => Ok(()),
    }
}

/// Whether `normalize` would change the path (the per-request fast path: one scan, no
/// allocation); refusals are found here too.
fn needs_work(bytes: &[u8]) -> Result<bool, PathRefusal> {
    let mut change = false;
    let mut seg_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        refuse_raw(b)?;
        if b == b'%' {
            let v = escaped(bytes, i)?;
            let lower_hex = bytes[i + 1..i + 3].iter().any(u8::is_ascii_lowercase);
            change |= unreserved(v) || lower_hex;
            i += 3;
            continue;
        }
        if b == b'/' {
            change |= is_dot_or_empty(&bytes[seg_start..i], seg_start, i);
            seg_start = i + 1;
        }
        i += 1;
    }
    // The last segment: empty there is a trailing slash (kept), not a repeat.
    let last = &bytes[seg_start..];
    change |= last == b"." || last == b"..";
    Ok(change)
}

/// A segment (ending at the slash at `end`) that resolution would remove: `.`, `..`, or
/// empty (a repeated slash) unless it is the one before a leading `/`.
fn is_dot_or_empty(seg: &[u8], start: usize, end: usize) -> bool {
    match seg {
        b"." | b".." => true,
        b"" => !(start == 0 && end == 0),
        _ => false,
    }
}

/// Decodes unreserved escapes and upper-cases the hex of the others.
fn decode(text: &str) -> Result<String, PathRefusal> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    // Copy runs of plain bytes whole (they may be multi-byte UTF-8).
    let mut run = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            refuse_raw(bytes[i])?;
            i += 1;
            continue;
        }
        out.push_str(text.get(run..i).unwrap_or(""));
        let v = escaped(bytes, i)?;
        if unreserved(v) {
            out.push(char::from(v));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(v >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(v & 15)]));
        }
        i += 3;
        run = i;
    }
    out.push_str(text.get(run..).unwrap_or(""));
    Ok(out)
}

/// RFC 3986 §5.2.4 remove_dot_segments, with empty segments (repeated slashes) merged;
/// a trailing `/`, `.` or `..` leaves a trailing slash.
fn resolve(path: &str) -> String {
    let absolute = path.starts_with('/');
    let body = if absolute { &path[1..] } else { path };
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    let mut segments = body.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        match seg {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
        trailing_slash = last && matches!(seg, "" | "." | "..");
    }
    let mut out = String::with_capacity(path.len());
    if absolute {
        out.push('/');
    }
    out.push_str(&kept.join("/"));
    if trailing_slash && !kept.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> String {
        match normalize(p) {
            Ok(n) => n.into_owned(),
            Err(e) => panic!("{p}: refused: {e}"),
        }
    }

    #[test]
    fn rfc3986_remove_dot_segments_examples() {
        assert_eq!(norm("/a/b/c/./../../g"), "/a/g");
        assert_eq!(norm("mid/content=5/../6"), "mid/6");
        // RFC 3986 §5.4 reference resolutions, as paths against the root.
        assert_eq!(norm("/b/c/./g"), "/b/c/g");
        assert_eq!(norm("/b/c/../g"), "/b/g");
        assert_eq!(norm("/b/c/."), "/b/c/");
        assert_eq!(norm("/b/c/.."), "/b/");
        assert_eq!(norm("/b/c/../.."), "/");
        assert_eq!(norm("/b/c/g."), "/b/c/g.");
        assert_eq!(norm("/b/c/.g"), "/b/c/.g");
        assert_eq!(norm("/b/c/..g"), "/b/c/..g");
        assert_eq!(norm("/b/c/./../g"), "/b/g");
        assert_eq!(norm("/b/c/g/./h"), "/b/c/g/h");
        assert_eq!(norm("/b/c/g;x=1/../y"), "/b/c/y");
    }

    #[test]
    fn never_above_the_root() {
        assert_eq!(norm("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(norm("/.."), "/");
        assert_eq!(norm("/a/../../.."), "/");
    }

    #[test]
    fn each_bypass_shape_becomes_the_plain_path() {
        for p in [
            "/flag",
            "/fl%61g",
            "/fl%61%67",
            "//flag",
            "///flag",
            "/./flag",
            "/x/../flag",
            "/x/%2e%2e/flag",
            "/x/%2E%2E/flag",
            "/x/.%2e/flag",
            "/%2e/flag",
            "/x//../flag",
        ] {
            assert_eq!(norm(p), "/flag", "{p}");
        }
    }

    #[test]
    fn encoded_separators_nul_and_raw_controls_are_refused() {
        use PathRefusal::*;
        for (p, why) in [
            ("/flag%2fx", EncodedSlash),
            ("/flag%2Fx", EncodedSlash),
            ("/flag%5cx", Backslash),
            ("/flag%5Cx", Backslash),
            ("/flag\\x", Backslash),
            ("/flag%00", Nul),
            ("/fl\0ag", ControlByte),
            ("/fl\tag", ControlByte),
            ("/fl\x7fag", ControlByte),
            ("/a%", BadEscape),
            ("/a%4", BadEscape),
            ("/a%zz", BadEscape),
        ] {
            assert_eq!(normalize(p), Err(why), "{p}");
        }
    }

    #[test]
    fn other_escapes_stay_encoded_with_upper_case_hex() {
        assert_eq!(norm("/a%20b"), "/a%20b");
        assert_eq!(norm("/a%3f%2a/./b"), "/a%3F%2A/b");
    }

    #[test]
    fn lower_case_hex_of_reserved_escapes_is_upper_cased() {
        assert_eq!(norm("/a%3fb%c3%a9"), "/a%3Fb%C3%A9");
        assert_eq!(norm("/%7e%7Euser"), "/~~user");
        assert_eq!(norm("/%252e%252e/x"), "/%252e%252e/x");
    }

    #[test]
    fn trailing_slashes_and_roots_are_kept() {
        assert_eq!(norm("/"), "/");
        assert_eq!(norm("//"), "/");
        assert_eq!(norm("/a/"), "/a/");
        assert_eq!(norm("/a//"), "/a/");
        assert_eq!(norm("/a//b"), "/a/b");
        assert_eq!(norm("/a/./"), "/a/");
    }

    #[test]
    fn non_origin_forms_pass_unchanged() {
        assert!(matches!(normalize("*"), Ok(Cow::Borrowed("*"))));
        assert!(matches!(normalize(""), Ok(Cow::Borrowed(""))));
    }

    #[test]
    fn a_normal_path_is_borrowed() {
        for p in [
            "/",
            "/a/b/c",
            "/a/b/",
            "/a%20b/%C3%A9",
            "/.well-known/acme-challenge/x",
            "/a..b/.c/c./...",
            "/caf\u{e9}",
        ] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn normalising_twice_changes_nothing_more() {
        for p in [
            "/a/b/c/./../../g",
            "/fl%61g",
            "//x//y/",
            "/x/%2e%2e/flag",
            "/%252e%252e/../a",
            "/a%3fb/%7e/.",
            "/b/c/..",
            "/caf\u{e9}/../%c3%a9",
            "mid/content=5/../6",
        ] {
            let once = norm(p);
            assert!(
                matches!(normalize(&once), Ok(Cow::Borrowed(_))),
                "{p} -> {once} is not normal"
            );
        }
    }
}
