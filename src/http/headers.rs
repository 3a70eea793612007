//! Header rules (SPEC §4, §9): the client IP behind trusted proxies, X-Forwarded-*,
//! X-Real-IP, X-Request-Id, per-route set/add/remove edits and security headers.

use crate::config::HeaderEdits;
use crate::net::{canonical, contains_any};
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use ipnet::IpNet;
use pingora::http::{CaseHeaderName, RequestHeader, ResponseHeader};
use std::net::{IpAddr, Ipv4Addr};

/// A header name compiled once for Pingora's two header maps: the name for the lookup
/// and the case it is written with (Pingora's own insert parses and copies the name
/// on every call).
pub struct Prepared {
    pub name: HeaderName,
    case: CaseHeaderName,
}

impl Prepared {
    /// `text` must be a valid lowercase header name (checked when it is compiled).
    pub const fn new(text: &'static str) -> Self {
        Prepared {
            name: HeaderName::from_static(text),
            case: CaseHeaderName::from_static(text),
        }
    }
}

pub static REQUEST_ID: Prepared = Prepared::new("x-request-id");
static FORWARDED_FOR: Prepared = Prepared::new("x-forwarded-for");
static REAL_IP: Prepared = Prepared::new("x-real-ip");
static FORWARDED_PROTO: Prepared = Prepared::new("x-forwarded-proto");
static FORWARDED_HOST: Prepared = Prepared::new("x-forwarded-host");
static CLIENT_CERT_SUBJECT: Prepared = Prepared::new("x-client-cert-subject");

/// The security headers (SPEC §9), names and values compiled once.
struct Security {
    header: Prepared,
    value: HeaderValue,
}

const fn security(text: &'static str, value: &'static str) -> Security {
    Security {
        header: Prepared::new(text),
        value: HeaderValue::from_static(value),
    }
}

/// Added to every response of a route with `security_headers`.
static SECURITY: [Security; 3] = [
    security("x-content-type-options", "nosniff"),
    security("x-frame-options", "DENY"),
    security("referrer-policy", "strict-origin-when-cross-origin"),
];

/// Added over TLS only.
static HSTS: Security = security("strict-transport-security", "max-age=31536000");

/// The client IP: the peer, or, when the peer is a trusted proxy, the right-most
/// X-Forwarded-For entry that is not itself trusted.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if trusted.is_empty() || !contains_any(trusted, peer) {
        return peer;
    }
    let mut leftmost = None;
    let entries: Vec<IpAddr> = headers
        .get_all(&FORWARDED_FOR.name)
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
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u128(..);
    let mut out = [0u8; 32];
    for b in out.iter_mut().rev() {
        *b = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    // Only ASCII hex digits were written.
    std::str::from_utf8(&out)
        .map(str::to_owned)
        .unwrap_or_default()
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

/// `X-Forwarded-For` for the backend: the client's entries (every line, joined with
/// ", "; a line that is not text is left out) followed by the peer.
fn forwarded_for(headers: &HeaderMap, peer: IpAddr) -> String {
    let mut xff = String::with_capacity(48);
    for v in headers.get_all(&FORWARDED_FOR.name) {
        if let Ok(v) = v.to_str() {
            xff.push_str(v);
            xff.push_str(", ");
        }
    }
    push_ip(&mut xff, peer);
    xff
}

/// An IP address as text, for a header value.
fn ip_text(ip: IpAddr) -> String {
    let mut s = String::with_capacity(39);
    push_ip(&mut s, ip);
    s
}

/// Appends `ip` as text; IPv4 without `fmt`, which costs several times more per address.
fn push_ip(s: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => push_ipv4(s, v4),
        IpAddr::V6(v6) => {
            use std::fmt::Write;
            // Writing to a String cannot fail.
            let _ = write!(s, "{v6}");
        }
    }
}

fn push_ipv4(s: &mut String, ip: Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        if octet >= 100 {
            s.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            s.push(char::from(b'0' + octet / 10 % 10));
        }
        s.push(char::from(b'0' + octet % 10));
    }
}

const PROTO_HTTPS: HeaderValue = HeaderValue::from_static("https");
const PROTO_HTTP: HeaderValue = HeaderValue::from_static("http");

pub fn add_forwarding(req: &mut RequestHeader, f: &Forwarded) -> pingora::Result<()> {
    let xff = forwarded_for(&req.headers, f.peer);
    req.put(&FORWARDED_FOR, header_value(xff)?)?;
    req.put(&REAL_IP, header_value(ip_text(f.client))?)?;
    req.put(
        &FORWARDED_PROTO,
        if f.tls { PROTO_HTTPS } else { PROTO_HTTP },
    )?;
    if let Some(host) = req.headers.get(http::header::HOST).cloned().or_else(|| {
        req.uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    }) {
        req.put(&FORWARDED_HOST, host.clone())?;
        if req.headers.get(http::header::HOST).is_none() {
            req.insert_header(http::header::HOST, host)?;
        }
    }
    set_request_id(req, f.request_id)
}

/// `X-Request-Id` on a request or response.
pub fn set_request_id(h: &mut impl EditableHeaders, id: &str) -> pingora::Result<()> {
    h.put(&REQUEST_ID, header_value(id)?)
}

/// A header value from text we built (an address list, an id); refused as Pingora's
/// insert refuses an invalid one.
fn header_value<T>(text: T) -> pingora::Result<HeaderValue>
where
    HeaderValue: TryFrom<T>,
{
    use pingora::{ErrorType, OrErr};
    HeaderValue::try_from(text)
        .explain_err(ErrorType::InvalidHTTPHeader, |_| "invalid header value")
}

/// `X-Client-Cert-Subject`: the verified client certificate's subject (mutual TLS);
/// a client-sent value is always removed.
pub fn set_client_cert_subject(
    req: &mut RequestHeader,
    session: &pingora_proxy::Session,
) -> pingora::Result<()> {
    req.remove_header(&CLIENT_CERT_SUBJECT.name);
    let subject = session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|s| s.extension.get::<crate::tls::ClientSubject>());
    if let Some(subject) = subject {
        req.put(&CLIENT_CERT_SUBJECT, header_value(subject.0.as_str())?)?;
    }
    Ok(())
}

/// The header operations shared by requests and responses.
pub trait EditableHeaders {
    fn set(&mut self, name: &HeaderName, value: &HeaderValue) -> pingora::Result<()>;
    fn add(&mut self, name: &HeaderName, value: &HeaderValue) -> pingora::Result<()>;
    fn remove(&mut self, name: &HeaderName);
    /// Sets a header under a [`Prepared`] name (replacing any of that name).
    fn put(&mut self, header: &Prepared, value: HeaderValue) -> pingora::Result<()>;
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
            fn put(&mut self, header: &Prepared, value: HeaderValue) -> pingora::Result<()> {
                self.insert_header_prepared(&header.name, &header.case, value)
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
    let hsts = tls.then_some(&HSTS);
    for h in SECURITY.iter().chain(hsts) {
        if !resp.headers.contains_key(&h.header.name) {
            resp.put(&h.header, h.value.clone())?;
        }
    }
    Ok(())
}

/// Headers every proxied response gets: our request id and a new sticky cookie.
pub fn stamp_response(
    resp: &mut pingora::http::ResponseHeader,
    ctx: &mut super::ctx::RequestCtx,
) -> pingora::Result<()> {
    set_request_id(resp, &ctx.request_id)?;
    if let Some(cookie) = ctx.upstream.set_cookie.take() {
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
#[path = "headers_tests.rs"]
mod tests;
