//! Header rules (SPEC §4, §9): the client IP behind trusted proxies, X-Forwarded-*,
//! X-Real-IP, X-Request-Id, per-route set/add/remove edits and security headers.

use crate::config::HeaderEdits;
use crate::net::{canonical, contains_any};
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use ipnet::IpNet;
use pingora::http::{RequestHeader, ResponseHeader};
use std::net::IpAddr;

pub const X_REQUEST_ID: &str = "x-request-id";
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The client IP: the peer, or, when the peer is a trusted proxy, the right-most
/// X-Forwarded-For entry that is not itself trusted.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if trusted.is_empty() || !contains_any(trusted, peer) {
        return peer;
    }
    let mut leftmost = None;
    let entries: Vec<IpAddr> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| parse_forwarded_ip(s.trim()))
        .collect();
    for ip in entries.iter().rev() {
        if !contains_any(trusted, *ip) {
            return canonical(*ip);
        }
        leftmost = Some(*ip);
    }
    leftmost.map(canonical).unwrap_or(peer)
}

/// XFF entries are usually bare IPs; accept `ip:port` and `[v6]:port` too.
fn parse_forwarded_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// A client's X-Request-Id is kept when it is 1–128 chars of `[A-Za-z0-9._:-]`.
pub fn valid_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// 128 random bits as 32 lowercase hex characters.
pub fn new_request_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// The request's host without the port: the URI authority (HTTP/2) or the Host header.
pub fn request_host(req: &RequestHeader) -> &str {
    let raw = req
        .uri
        .host()
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    strip_port(raw)
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port → v6 literal with brackets kept out
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Forwarding headers on the request to the backend.
pub struct Forwarded<'a> {
    pub peer: IpAddr,
    pub client: IpAddr,
    pub tls: bool,
    pub request_id: &'a str,
}

pub fn add_forwarding(req: &mut RequestHeader, f: &Forwarded) -> pingora::Result<()> {
    let peer = f.peer.to_string();
    let xff = {
        let existing: Vec<&str> = req
            .headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if existing.is_empty() {
            peer
        } else {
            format!("{}, {peer}", existing.join(", "))
        }
    };
    req.insert_header(X_FORWARDED_FOR, xff)?;
    req.insert_header("x-real-ip", f.client.to_string())?;
    req.insert_header("x-forwarded-proto", if f.tls { "https" } else { "http" })?;
    if let Some(host) = req.headers.get(http::header::HOST).cloned().or_else(|| {
        req.uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    }) {
        req.insert_header("x-forwarded-host", host.clone())?;
        if req.headers.get(http::header::HOST).is_none() {
            req.insert_header(http::header::HOST, host)?;
        }
    }
    req.insert_header(X_REQUEST_ID, f.request_id)?;
    Ok(())
}

/// `X-Client-Cert-Subject`: the verified client certificate's subject (mutual TLS);
/// a client-sent value is always removed.
pub fn set_client_cert_subject(
    req: &mut RequestHeader,
    session: &pingora_proxy::Session,
) -> pingora::Result<()> {
    const NAME: &str = "x-client-cert-subject";
    req.remove_header(NAME);
    let subject = session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|s| s.extension.get::<crate::tls::ClientSubject>());
    if let Some(subject) = subject {
        req.insert_header(NAME, subject.0.as_str())?;
    }
    Ok(())
}

/// The header operations shared by requests and responses.
pub trait EditableHeaders {
    fn set(&mut self, name: &HeaderName, value: &HeaderValue) -> pingora::Result<()>;
    fn add(&mut self, name: &HeaderName, value: &HeaderValue) -> pingora::Result<()>;
    fn remove(&mut self, name: &HeaderName);
}

/// Request and response headers share these methods but no trait in Pingora.
macro_rules! editable {
    ($t:ty) => {
        impl EditableHeaders for $t {
            fn set(&mut self, name: &HeaderName, value: &HeaderValue) -> pingora::Result<()> {
                self.insert_header(name.clone(), value.clone())
            }
            fn add(&mut self, name: &HeaderName, value: &HeaderValue) -> pingora::Result<()> {
                self.append_header(name.clone(), value.clone()).map(|_| ())
            }
            fn remove(&mut self, name: &HeaderName) {
                self.remove_header(name);
            }
        }
    };
}

editable!(RequestHeader);
editable!(ResponseHeader);

/// `remove` drops, then `set` replaces, then `add` appends one more line.
pub fn apply_edits(h: &mut impl EditableHeaders, edits: &HeaderEdits) -> pingora::Result<()> {
    for name in &edits.remove {
        h.remove(name);
    }
    for (name, value) in &edits.set {
        h.set(name, value)?;
    }
    for (name, value) in &edits.add {
        h.add(name, value)?;
    }
    Ok(())
}

/// Added unless the backend already sent them; HSTS only over TLS.
pub fn add_security_headers(resp: &mut ResponseHeader, tls: bool) -> pingora::Result<()> {
    let mut headers = vec![
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
    ];
    if tls {
        headers.push(("strict-transport-security", "max-age=31536000"));
    }
    for (name, value) in headers {
        if !resp.headers.contains_key(name) {
            resp.insert_header(name, value)?;
        }
    }
    Ok(())
}

/// Headers every proxied response gets: our request id and a new sticky cookie.
pub fn stamp_response(
    resp: &mut pingora::http::ResponseHeader,
    ctx: &mut super::ctx::RequestCtx,
) -> pingora::Result<()> {
    resp.insert_header(X_REQUEST_ID, ctx.request_id.as_str())?;
    if let Some(cookie) = ctx.set_cookie.take() {
        resp.append_header(http::header::SET_COOKIE, cookie)?;
    }
    Ok(())
}

/// The forwarding headers for this request, when both peer and client are known.
pub fn forward(
    req: &mut pingora::http::RequestHeader,
    ctx: &super::ctx::RequestCtx,
    tls: bool,
) -> pingora::Result<()> {
    let (Some(peer), Some(client)) = (ctx.peer_ip, ctx.client_ip) else {
        return Ok(());
    };
    let request_id = ctx.request_id.as_str();
    add_forwarding(
        req,
        &Forwarded {
            peer,
            client,
            tls,
            request_id,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn client_ip_behind_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap_or_default()];
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_static("1.1.1.1, 2.2.2.2, 10.0.0.5"),
        );
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("2.2.2.2"));
        // an untrusted peer's header is ignored
        assert_eq!(client_ip(ip("3.3.3.3"), &h, &trusted), ip("3.3.3.3"));
        // no header: the peer
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn request_id_rules() {
        assert!(valid_request_id(b"abc-123_x.y:z"));
        assert!(!valid_request_id(b""));
        assert!(!valid_request_id(b"has space"));
        assert!(!valid_request_id(&[b'a'; 129]));
        assert_eq!(new_request_id().len(), 32);
    }

    #[test]
    fn host_port_is_ignored() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }
}
