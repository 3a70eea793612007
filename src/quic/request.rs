//! An HTTP/3 request head turned into Pingora's `RequestHeader` (what every hook reads),
//! with the checks HTTP/3 leaves to the server: `:authority` and `Host` must agree
//! (RFC 9114 §4.3.1), Content-Length values must agree, and no control byte may sit in
//! the target (Pingora's HTTP/2 server refuses the same).

use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderValue, Request, Version};
use pingora::http::RequestHeader;

/// Why a request head is answered 400 before any hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Neither `:authority` nor `Host`.
    NoAuthority,
    /// `:authority` and `Host` name different hosts, or there are two `Host` fields.
    AuthorityMismatch,
    /// Two Content-Length values that differ, or one that is not a number.
    ContentLength,
    /// A control byte (CR, LF, NUL...) in the request target.
    Target,
}

/// The request as Pingora's hooks see it: version HTTP/3 (the access log's `protocol`),
/// and a `Host` field set from `:authority` when the client sent none, so HTTP/1.1
/// backends get one.
pub fn header(req: Request<()>) -> Result<RequestHeader, Malformed> {
    let (mut parts, ()) = req.into_parts();
    parts.version = Version::HTTP_3;
    let target = parts.uri.path_and_query().map_or("", |p| p.as_str());
    if target.bytes().any(|b| b.is_ascii_control()) {
        return Err(Malformed::Target);
    }
    let mut hosts = parts.headers.get_all(HOST).iter();
    let host = hosts.next().cloned();
    if hosts.next().is_some() {
        return Err(Malformed::AuthorityMismatch);
    }
    let authority = parts.uri.authority().map(|a| a.as_str().to_string());
    match (authority, host) {
        (None, None) => return Err(Malformed::NoAuthority),
        (Some(a), Some(h)) if !a.eq_ignore_ascii_case(h.to_str().unwrap_or("")) => {
            return Err(Malformed::AuthorityMismatch)
        }
        (Some(a), None) => {
            let value = HeaderValue::from_str(&a).map_err(|_| Malformed::AuthorityMismatch)?;
            parts.headers.insert(HOST, value);
        }
        _ => {}
    }
    let mut lengths = parts.headers.get_all(CONTENT_LENGTH).iter().flat_map(|v| {
        v.to_str()
            .unwrap_or("x")
            .split(',')
            .map(|n| n.trim().parse::<u64>().ok())
            .collect::<Vec<_>>()
    });
    if let Some(first) = lengths.next() {
        if first.is_none() || lengths.any(|n| n != first) {
            return Err(Malformed::ContentLength);
        }
    }
    Ok(RequestHeader::from(parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method("GET").uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn authority_becomes_host_and_the_version_is_http3() {
        let h = header(req("https://a.example:8443/x?y=1", &[])).unwrap();
        assert_eq!(h.version, Version::HTTP_3);
        assert_eq!(h.headers.get(HOST).unwrap(), "a.example:8443");
        assert_eq!(h.raw_path(), b"/x?y=1");
    }

    #[test]
    fn host_must_agree_with_authority() {
        assert!(header(req("https://a.example/", &[("host", "A.example")])).is_ok());
        assert_eq!(
            header(req("https://a.example/", &[("host", "b.example")])).unwrap_err(),
            Malformed::AuthorityMismatch
        );
        assert_eq!(header(req("/", &[])).unwrap_err(), Malformed::NoAuthority);
        assert!(header(req("/", &[("host", "b.example")])).is_ok());
    }

    #[test]
    fn content_lengths_must_agree() {
        let ok = [("content-length", "5"), ("content-length", "5")];
        assert!(header(req("https://a/", &ok)).is_ok());
        let two = [("content-length", "5"), ("content-length", "6")];
        assert_eq!(
            header(req("https://a/", &two)).unwrap_err(),
            Malformed::ContentLength
        );
        let bad = [("content-length", "5, x")];
        assert_eq!(
            header(req("https://a/", &bad)).unwrap_err(),
            Malformed::ContentLength
        );
    }
}
