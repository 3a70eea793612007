//! `routes[]` with their header edits and rate limit.

use super::*;
use http::header::HeaderValue;
use http::Method;

pub(super) fn read_route(d: &mut Decoder, node: &Node, path: &str) -> Option<RouteConfig> {
    let mut m = d.map(node, path)?;
    let pos = m.value_pos("name");
    d.spans.set(path, pos);
    let name = required_string(d, &mut m, "name");
    let listeners = name_list(d, &mut m, "listeners", false);
    let hosts = key_list(d, &mut m, "host", true, |d, n, p| {
        d.parse(n, p, "a host name or *.domain", parse_host_pattern)
    });
    let path_prefix = get_with(d, &mut m, "path_prefix", |d, n, p| {
        d.parse(n, p, "a path starting with /", |s| {
            s.starts_with('/').then(|| s.to_string())
        })
    });
    let methods = key_list(d, &mut m, "methods", true, |d, n, p| {
        d.parse(n, p, "an HTTP method such as GET", |s| {
            let up = s.to_ascii_uppercase();
            Method::from_bytes(up.as_bytes()).ok()
        })
    });
    let headers = get_with(d, &mut m, "headers", |d, n, p| {
        header_map(d, n, p, |d, v, kp| d.string(v, kp))
    })
    .unwrap_or_default();
    d.spans.set(&m.child("pool"), m.value_pos("pool"));
    let pool = opt_string(d, &mut m, "pool");
    let strip_prefix = boolean(d, &mut m, "strip_prefix", false);
    let redirect_https = boolean(d, &mut m, "redirect_https", false);
    if let Some(e) = validate::route_pool(pool.is_some(), redirect_https) {
        d.error(pos, &m.child("pool"), e);
    }
    let allow = cidr_list(d, &mut m, "allow");
    let deny = cidr_list(d, &mut m, "deny");
    let rate_limit = get_with(d, &mut m, "rate_limit", read_rate_limit);
    let request_headers =
        get_with(d, &mut m, "request_headers", read_header_edits).unwrap_or_default();
    let response_headers =
        get_with(d, &mut m, "response_headers", read_header_edits).unwrap_or_default();
    let security_headers = boolean(d, &mut m, "security_headers", false);
    let max_body_bytes = super::limits::byte_count(d, &mut m, "max_body_bytes");
    let traffic = super::traffic::read_route_traffic(d, &mut m);
    let cache = get_with(d, &mut m, "cache", super::cache::read_route_cache);
    if strip_prefix && path_prefix.is_none() {
        d.warn(
            m.key_pos("strip_prefix"),
            &m.child("strip_prefix"),
            "has no effect without path_prefix",
        );
    }
    m.finish(d, |_| None);
    Some(RouteConfig {
        name: name?,
        listeners,
        hosts,
        path_prefix: path_prefix.map(|p| normalize_prefix(&p)),
        methods,
        headers,
        pool,
        strip_prefix,
        redirect_https,
        allow,
        deny,
        rate_limit,
        request_headers,
        response_headers,
        security_headers,
        max_body_bytes,
        traffic,
        cache,
    })
}

pub(super) fn read_header_edits(d: &mut Decoder, node: &Node, path: &str) -> Option<HeaderEdits> {
    let mut m = d.map(node, path)?;
    let pairs = |d: &mut Decoder, m: &mut Map, key: &'static str| {
        get_with(d, m, key, |d, n, p| {
            header_map(d, n, p, |d, v, kp| {
                let s = d.scalar(v, kp, "a header value")?;
                match HeaderValue::from_str(&s.text) {
                    Ok(v) => Some(v),
                    Err(_) => {
                        d.error(
                            s.pos,
                            kp,
                            format!("{:?} is not a valid header value", s.text),
                        );
                        None
                    }
                }
            })
        })
        .unwrap_or_default()
    };
    let set = pairs(d, &mut m, "set");
    let add = pairs(d, &mut m, "add");
    let remove = key_list(d, &mut m, "remove", false, |d, n, p| {
        d.parse(n, p, "a header name", parse_header_name)
    });
    m.finish(d, |_| None);
    Some(HeaderEdits { set, add, remove })
}

pub(super) fn read_rate_limit(d: &mut Decoder, node: &Node, path: &str) -> Option<RateLimitConfig> {
    let mut m = d.map(node, path)?;
    d.spans.set(path, m.pos);
    let rate = required(d, &mut m, "rate", |d, n, p| whole(d, n, p, 1, u32::MAX)).unwrap_or(0);
    let burst = bounded(d, &mut m, "burst", rate, 1, u32::MAX);
    let key = get_with(d, &mut m, "key", |d, n, p| {
        d.parse(n, p, RateLimitKey::EXPECTED, |s| s.parse().ok())
    })
    .unwrap_or(RateLimitKey::ClientIp);
    let algorithm = choice(d, &mut m, "algorithm", RateLimitAlgorithm::TokenBucket);
    let scope = choice(d, &mut m, "scope", Scope::Local);
    m.finish(d, |_| None);
    Some(RateLimitConfig {
        rate,
        burst,
        key,
        algorithm,
        scope,
    })
}
