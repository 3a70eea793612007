//! The route table, compiled once per configuration: for a request (listener, host,
//! path, method, headers) it returns the first matching route in file order (SPEC §4).

use crate::config::RouteConfig;
use http::header::HeaderName;
use http::{HeaderMap, Method};

/// What a request offers for matching; borrowed from the request header.
pub struct RequestFacts<'a> {
    pub listener: usize,
    /// Host without port, as sent (compared case-insensitively).
    pub host: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// The client's country (`server.geoip`), when known.
    pub country: Option<&'a str>,
}

enum HostPattern {
    Exact(String),
    /// `*.example.com` stored as `.example.com`: any depth of subdomain, not the apex.
    Suffix(String),
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => host.eq_ignore_ascii_case(h),
            HostPattern::Suffix(s) => {
                host.len() > s.len()
                    && host.is_char_boundary(host.len() - s.len())
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
}

struct Matcher {
    /// Listener indices; empty = every listener.
    listeners: Vec<usize>,
    hosts: Vec<HostPattern>,
    /// Normalized without a trailing slash; `None` or `/` matches every path.
    prefix: Option<String>,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, String)>,
    /// `geo.countries` (upper case); empty = any client.
    countries: Vec<String>,
}

impl Matcher {
    fn matches(&self, r: &RequestFacts) -> bool {
        (self.listeners.is_empty() || self.listeners.contains(&r.listener))
            && (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(r.host)))
            && self
                .prefix
                .as_deref()
                .is_none_or(|p| prefix_matches(p, r.path))
            && (self.methods.is_empty() || self.methods.contains(r.method))
            && self.headers.iter().all(|(name, want)| {
                r.headers
                    .get_all(name)
                    .iter()
                    .any(|v| v.as_bytes() == want.as_bytes())
            })
            && (self.countries.is_empty()
                || r.country
                    .is_some_and(|c| self.countries.iter().any(|x| x == c)))
    }
}

/// `/v1` matches `/v1`, `/v1/` and `/v1/x`, not `/v1x`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    path.starts_with(prefix)
        && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
}

/// The path the backend sees after `strip_prefix`; the query string is kept.
pub fn strip_prefix(prefix: &str, path_and_query: &str) -> String {
    if prefix == "/" {
        return path_and_query.to_string();
    }
    let rest = path_and_query.get(prefix.len()..).unwrap_or("");
    if rest.is_empty() || rest.starts_with('?') {
        format!("/{rest}")
    } else {
        rest.to_string()
    }
}

pub struct RouteTable {
    matchers: Vec<Matcher>,
}

impl RouteTable {
    /// `listener_index` maps a listener name to its index (names were validated).
    pub fn compile(routes: &[RouteConfig], listener_index: impl Fn(&str) -> Option<usize>) -> Self {
        let matchers = routes
            .iter()
            .map(|r| Matcher {
                listeners: r
                    .listeners
                    .iter()
                    .filter_map(|l| listener_index(l))
                    .collect(),
                hosts: r
                    .hosts
                    .iter()
                    .map(|h| match h.strip_prefix('*') {
                        Some(suffix) => HostPattern::Suffix(suffix.to_string()),
                        None => HostPattern::Exact(h.clone()),
                    })
                    .collect(),
                prefix: r.path_prefix.clone().filter(|p| p != "/"),
                methods: r.methods.clone(),
                headers: r.headers.clone(),
                countries: r
                    .traffic
                    .geo
                    .as_ref()
                    .map(|g| g.countries.clone())
                    .unwrap_or_default(),
            })
            .collect();
        RouteTable { matchers }
    }

    /// Index of the first matching route.
    pub fn find(&self, request: &RequestFacts) -> Option<usize> {
        self.matchers.iter().position(|m| m.matches(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_respects_segments() {
        assert!(prefix_matches("/v1", "/v1"));
        assert!(prefix_matches("/v1", "/v1/"));
        assert!(prefix_matches("/v1", "/v1/users"));
        assert!(!prefix_matches("/v1", "/v1x"));
        assert!(!prefix_matches("/v1", "/v"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn strip_keeps_query_and_root() {
        assert_eq!(strip_prefix("/api", "/api"), "/");
        assert_eq!(strip_prefix("/api", "/api?x=1"), "/?x=1");
        assert_eq!(strip_prefix("/api", "/api/users?x=1"), "/users?x=1");
    }

    #[test]
    fn wildcard_is_any_depth_not_apex() {
        let p = HostPattern::Suffix(".example.com".into());
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.EXAMPLE.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("badexample.com"));
    }
}
