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
use crate::tls::acme;
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
    if !req.tls {
        if let Some(body) = acme::challenge::answer(header.uri.path()) {
            return Verdict::Answer(Answer::Text(body));
        }
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
mod tests {
    use super::*;
    use crate::config::parse_str;
    use crate::state::store::StateStore;

    const YAML: &str = "
listeners: [{name: web, listen: '127.0.0.1:8080'}]
server: {deny: ['10.9.0.0/16'], trusted_proxies: ['127.0.0.0/8']}
pools:
  - name: p
    backends: [{address: '127.0.0.1:9001'}]
routes:
  - {name: acl, path_prefix: /acl, allow: ['192.168.0.0/16'], pool: p}
  - {name: limited, path_prefix: /limited, rate_limit: {rate: 1, burst: 1, key: route}, pool: p}
  - {name: secure, path_prefix: /secure, redirect_https: true}
  - {name: app, host: app.example.com, pool: p}
";

    fn runtime() -> Runtime {
        let loaded = match parse_str("test.yaml", YAML, &|_| None, false) {
            Ok(l) => l,
            Err(e) => panic!("test config invalid: {e:?}"),
        };
        let state = match StateStore::open(None) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        Runtime::build(&loaded.config, None, &state)
    }

    fn header(path: &str, host: &str, extra: &[(&'static str, &str)]) -> RequestHeader {
        let mut h = match RequestHeader::build("GET", path.as_bytes(), None) {
            Ok(h) => h,
            Err(e) => panic!("{e}"),
        };
        let mut set = |name: &'static str, value: &str| {
            if let Err(e) = h.insert_header(name, value) {
                panic!("{e}");
            }
        };
        set("host", host);
        for (n, v) in extra {
            set(n, v);
        }
        h
    }

    fn run(
        rt: &Runtime,
        header: &RequestHeader,
        peer: [u8; 4],
        tls: bool,
        refused: Option<u16>,
    ) -> (Verdict, RequestCtx) {
        let mut ctx = RequestCtx::new();
        let req = Request {
            header,
            peer: Some(IpAddr::from(peer)),
            listener: 0,
            tls,
            refused,
            header_bytes: 0,
        };
        let verdict = futures_lite(admit(&req, rt, &mut ctx));
        (verdict, ctx)
    }

    /// Admission only awaits the (local) rate limiter, so a current-thread runtime will do.
    fn futures_lite<F: std::future::Future>(f: F) -> F::Output {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(f),
            Err(e) => panic!("{e}"),
        }
    }

    const CLIENT: [u8; 4] = [192, 168, 1, 1];

    #[test]
    fn a_routed_request_is_proxied_and_recorded() {
        let rt = runtime();
        let (v, ctx) = run(
            &rt,
            &header("/", "app.example.com", &[]),
            CLIENT,
            false,
            None,
        );
        assert_eq!(v, Verdict::Proxy);
        assert!(ctx.route.is_some() && ctx.pool.is_some());
        assert_eq!(ctx.client_ip, Some(IpAddr::from(CLIENT)));
        assert_eq!(ctx.request_id.len(), 32, "a new id is 32 hex characters");
    }

    #[test]
    fn a_valid_client_request_id_is_kept_and_an_invalid_one_replaced() {
        let rt = runtime();
        let h = header("/", "app.example.com", &[("x-request-id", "abc-123")]);
        assert_eq!(run(&rt, &h, CLIENT, false, None).1.request_id, "abc-123");
        let h = header("/", "app.example.com", &[("x-request-id", "a b")]);
        assert_ne!(run(&rt, &h, CLIENT, false, None).1.request_id, "a b");
    }

    #[test]
    fn the_guard_answers_first_and_closes() {
        let rt = runtime();
        let h = header("/", "app.example.com", &[]);
        let (v, ctx) = run(&rt, &h, CLIENT, false, Some(431));
        assert_eq!(v, Verdict::Answer(Answer::Close(431)));
        assert!(!ctx.request_id.is_empty(), "the answer still carries an id");
        assert!(ctx.route.is_none());
    }

    #[test]
    fn server_deny_answers_403_before_routing() {
        let rt = runtime();
        let h = header("/", "app.example.com", &[]);
        let (v, ctx) = run(&rt, &h, [10, 9, 1, 1], false, None);
        assert_eq!(v, Verdict::Answer(Answer::Status(403)));
        assert!(ctx.route.is_none());
    }

    #[test]
    fn deny_applies_to_the_client_ip_behind_a_trusted_proxy() {
        let rt = runtime();
        let h = header("/", "app.example.com", &[("x-forwarded-for", "10.9.2.2")]);
        let (v, ctx) = run(&rt, &h, [127, 0, 0, 1], false, None);
        assert_eq!(ctx.client_ip, Some(IpAddr::from([10, 9, 2, 2])));
        assert_eq!(v, Verdict::Answer(Answer::Status(403)));
    }

    #[test]
    fn no_route_answers_404() {
        let rt = runtime();
        let h = header("/", "other.example.com", &[]);
        assert_eq!(
            run(&rt, &h, CLIENT, false, None).0,
            Verdict::Answer(Answer::Status(404))
        );
    }

    #[test]
    fn the_route_acl_answers_403() {
        let rt = runtime();
        let h = header("/acl", "x", &[]);
        assert_eq!(run(&rt, &h, CLIENT, false, None).0, Verdict::Proxy);
        let (v, ctx) = run(&rt, &h, [172, 16, 0, 1], false, None);
        assert_eq!(v, Verdict::Answer(Answer::Status(403)));
        assert!(ctx.route.is_some(), "the route is known for the access log");
    }

    #[test]
    fn the_rate_limit_answers_429_with_retry_after() {
        let rt = runtime();
        let h = header("/limited", "x", &[]);
        assert_eq!(run(&rt, &h, CLIENT, false, None).0, Verdict::Proxy);
        match run(&rt, &h, CLIENT, false, None).0 {
            Verdict::Answer(Answer::TooMany { retry_after }) => assert!(retry_after >= 1),
            other => panic!("expected 429, got {other:?}"),
        }
    }

    #[test]
    fn redirect_https_on_plain_http_and_404_without_a_pool_on_tls() {
        let rt = runtime();
        let h = header("/secure/a?b=1", "app.example.com", &[]);
        assert_eq!(
            run(&rt, &h, CLIENT, false, None).0,
            Verdict::Answer(Answer::Redirect(
                "https://app.example.com/secure/a?b=1".into()
            ))
        );
        assert_eq!(
            run(&rt, &h, CLIENT, true, None).0,
            Verdict::Answer(Answer::Status(404))
        );
    }

    fn normalized(target: &str) -> (Option<u16>, RequestHeader, RequestCtx) {
        let mut h = header(target, "app.example.com", &[]);
        let mut ctx = RequestCtx::new();
        (normalize_target(&mut h, &mut ctx), h, ctx)
    }

    #[test]
    fn the_path_is_normalised_in_place_with_the_query_kept() {
        let (refused, h, ctx) = normalized("/a/./b/../%63?x=%2e%2e&y=//");
        assert_eq!(refused, None);
        assert_eq!(
            h.uri.path_and_query().map(|p| p.as_str()),
            Some("/a/c?x=%2e%2e&y=//")
        );
        assert_eq!(h.raw_path(), b"/a/c?x=%2e%2e&y=//");
        assert_eq!(
            ctx.original_target.as_deref(),
            Some("/a/./b/../%63?x=%2e%2e&y=//")
        );
    }

    #[test]
    fn a_normal_path_is_left_alone() {
        let (refused, h, ctx) = normalized("/a/c?q=1");
        assert_eq!(refused, None);
        assert_eq!(h.raw_path(), b"/a/c?q=1");
        assert!(ctx.original_target.is_none());
    }

    #[test]
    fn an_absolute_form_target_keeps_its_authority() {
        let (refused, h, _) = normalized("http://app.example.com/x/../flag?q");
        assert_eq!(refused, None);
        assert_eq!(h.uri.path(), "/flag");
        assert_eq!(h.raw_path(), b"http://app.example.com/flag?q");
    }

    #[test]
    fn a_refused_path_is_400_and_reaches_no_route() {
        let rt = runtime();
        for target in ["/acl%2fx", "/acl%5C", "/acl%00"] {
            let (refused, h, _) = normalized(target);
            assert_eq!(refused, Some(400), "{target}");
            let (v, ctx) = run(&rt, &h, CLIENT, false, refused);
            assert_eq!(v, Verdict::Answer(Answer::Close(400)));
            assert!(ctx.route.is_none());
        }
    }

    #[test]
    fn an_acl_sees_the_normalised_path() {
        let rt = runtime();
        let (_, h, _) = normalized("/x/%2e%2e/%61cl");
        let (v, ctx) = run(&rt, &h, [172, 16, 0, 1], false, None);
        assert_eq!(v, Verdict::Answer(Answer::Status(403)));
        assert_eq!(ctx.route.map(|r| rt.routes[r].name.as_str()), Some("acl"));
    }

    #[test]
    fn https_location_drops_the_http_port_and_names_a_non_default_one() {
        let h = header("/p", "app.example.com:8080", &[]);
        assert_eq!(https_location(&h, 8443), "https://app.example.com:8443/p");
        assert_eq!(https_location(&h, 443), "https://app.example.com/p");
    }
}
