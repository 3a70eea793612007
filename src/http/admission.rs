//! Admission: the ordered policies that decide, before any backend is chosen, whether a
//! request is proxied or answered here (path normalisation, request id, header guard, ACME
//! challenge, client IP, `server.deny`, route, ACL, rate limit, `redirect_https`, no
//! pool). Plain inputs in, a `Verdict` out, so every policy is testable without a Pingora
//! session.

use super::ctx::RequestCtx;
use super::headers;
use super::limits::{self, BodyBudget};
use super::path;
use crate::limits::rate::Key;
use crate::net::canonical;
use crate::observe::refusal::{self, Reason};
use crate::routing::RequestFacts;
use crate::runtime::Runtime;
use crate::tls::acme::Challenges;
use pingora::http::RequestHeader;
use std::borrow::Cow;
use std::net::IpAddr;

/// What admission looks at.
pub struct Request<'a> {
    pub header: &'a RequestHeader,
    /// The TCP peer, as accepted.
    pub peer: Option<IpAddr>,
    /// Index of the listener (routes filter on it).
    pub listener: usize,
    pub tls: bool,
    /// The status for a malformed request: the header guard's (`guard::refuse`), else
    /// 400 for a path `normalize_target` refused.
    pub refused: Option<u16>,
    /// The ACME HTTP-01 answers, on a plaintext listener (the CA never asks over TLS).
    pub challenges: Option<&'a Challenges>,
    /// Size of the request line and headers as received (HTTP/1; 0 for HTTP/2, whose
    /// header list Pingora's h2 options bound).
    pub header_bytes: usize,
}

/// A response Switchyard writes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A short text/plain error.
    Status(u16),
    /// An error after which the connection is closed (malformed framing).
    Close(u16),
    /// 429 with `Retry-After` in whole seconds.
    TooMany { retry_after: u64 },
    /// 308 to this URL.
    Redirect(String),
    /// 200 text/plain (ACME HTTP-01 key authorization).
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Proxy,
    Answer(Answer),
}

/// Runs the policies in order; records request id, client IP, route and pool in `ctx`.
pub async fn admit(req: &Request<'_>, rt: &Runtime, ctx: &mut RequestCtx) -> Verdict {
    let header = req.header;
    let peer = req.peer.map(canonical);
    ctx.peer_ip = peer;
    ctx.request_id = request_id(header);
    let listener = rt.listeners.get(req.listener);
    let limits = listener.map(|l| &l.limits);
    // Size first: an oversized header section is 431 whatever else is wrong with it.
    if let Some(reason) =
        limits.and_then(|l| limits::header_refusal(l, req.header_bytes, header.headers.len()))
    {
        return refuse(rt, req, peer, reason, 431);
    }
    if let Some(status) = req.refused {
        return refuse(rt, req, peer, Reason::Malformed, status);
    }
    // The CA validates from anywhere, for a host no route may know.
    if let Some(body) = req.challenges.and_then(|c| c.answer(header.uri.path())) {
        return Verdict::Answer(Answer::Text(body));
    }
    ctx.client_ip = peer.map(|p| headers::client_ip(p, &header.headers, &rt.trusted_proxies));
    if rt.deny.refuses(ctx.client_ip) {
        return Verdict::Answer(Answer::Status(403));
    }
    ctx.country = rt
        .geoip
        .as_ref()
        .zip(ctx.client_ip)
        .and_then(|(g, ip)| g.country(ip));
    let facts = RequestFacts {
        listener: req.listener,
        host: headers::request_host(header),
        path: header.uri.path(),
        method: &header.method,
        headers: &header.headers,
        country: ctx.country.as_ref().map(|c| c.as_str()),
    };
    ctx.route = rt.table.find(&facts);
    let Some(route) = ctx.route.and_then(|i| rt.routes.get(i)) else {
        return Verdict::Answer(Answer::Status(404));
    };
    ctx.pool = route.pool;
    if let Some(max) = limits.and_then(|l| limits::body_limit(l, route.max_body_bytes)) {
        if declared_length(header).is_some_and(|n| n > max) {
            return refuse(rt, req, peer, Reason::BodyTooLarge, 413);
        }
        ctx.body_budget = Some(BodyBudget::new(max));
    }
    if ctx.client_ip.is_some_and(|ip| !route.acl.permits(ip)) {
        return Verdict::Answer(Answer::Status(403));
    }
    if let Some(limit) = &route.rate_limit {
        let key = Key::for_request(&limit.config.key, ctx.client_ip, &header.headers);
        if let Err(retry_after) = limit.check(&route.name, key).await {
            route.metrics.rate_limited();
            return Verdict::Answer(Answer::TooMany { retry_after });
        }
    }
    if route.redirect_https && !req.tls {
        return Verdict::Answer(Answer::Redirect(https_location(header, rt.https_port)));
    }
    if route.pool.is_none() {
        return Verdict::Answer(Answer::Status(404));
    }
    Verdict::Proxy
}

/// Counts and logs a refusal at the edge; the answer closes the connection.
fn refuse(
    rt: &Runtime,
    req: &Request<'_>,
    peer: Option<IpAddr>,
    reason: Reason,
    status: u16,
) -> Verdict {
    let name = rt
        .listeners
        .get(req.listener)
        .map_or("", |l| l.name.as_str());
    let who = peer.map(|p| p.to_string()).unwrap_or_default();
    refusal::http(name, reason, &format_args!("client {who}: {status}"));
    Verdict::Answer(Answer::Close(status))
}

/// The request's Content-Length, when it has one valid value.
fn declared_length(header: &RequestHeader) -> Option<u64> {
    let v = header.headers.get(http::header::CONTENT_LENGTH)?;
    v.to_str().ok()?.trim().parse().ok()
}

/// Rewrites the request's path to its normal form (SPEC §10) before anything reads it, so
/// routing, ACLs, rate-limit keys, hashing, `strip_prefix` and the upstream request all
/// see one spelling; the query is kept as sent. Records the target as sent in
/// `ctx.original_target` when it changes. Returns 400 for a path that is refused.
pub fn normalize_target(header: &mut RequestHeader, ctx: &mut RequestCtx) -> Option<u16> {
    let normal = match path::normalize(header.uri.path()) {
        Ok(Cow::Borrowed(_)) => return None,
        Ok(Cow::Owned(normal)) => normal,
        Err(why) => {
            log::debug!("refused request path {:?}: {why}", header.uri.path());
            return Some(400);
        }
    };
    // The URI holds a lossy rendering of a non-UTF-8 target; rewriting it would send
    // replacement characters instead of the client's bytes.
    if !header.raw_path_is_utf8() {
        return Some(400);
    }
    let original = header
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let target = match header.uri.query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    let raw = header.raw_path();
    let rewritten = match raw.strip_suffix(original.as_bytes()) {
        // Absolute-form: the target is kept verbatim for the wire, scheme and authority
        // in front of the path.
        Some(prefix) if !prefix.is_empty() => {
            header.set_raw_path(&[prefix, target.as_bytes()].concat())
        }
        // Origin-form (HTTP/1), or HTTP/2 whose URI carries scheme and authority: keep them.
        _ => {
            let mut parts = header.uri.clone().into_parts();
            target
                .parse::<http::uri::PathAndQuery>()
                .ok()
                .and_then(|pq| {
                    parts.path_and_query = Some(pq);
                    http::Uri::from_parts(parts).ok()
                })
                .map(|uri| header.set_uri(uri))
                .ok_or_else(|| pingora::Error::new_str("normalised path"))
        }
    };
    if rewritten.is_err() {
        return Some(400);
    }
    ctx.original_target = Some(original);
    None
}

/// The client's `X-Request-Id` when it is acceptable, else a new one.
fn request_id(header: &RequestHeader) -> String {
    match header.headers.get(&headers::REQUEST_ID.name) {
        Some(id) if headers::valid_request_id(id.as_bytes()) => {
            String::from_utf8_lossy(id.as_bytes()).into_owned()
        }
        _ => headers::new_request_id(),
    }
}

/// `https://host[:port]/path?query`; the port only when it is not 443.
fn https_location(req: &RequestHeader, port: u16) -> String {
    let host = headers::request_host(req);
    let path = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    }
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
