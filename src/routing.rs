//! The route table, compiled once per configuration: for a request (listener, host,
//! path, method, headers) it returns the first matching route in file order (SPEC §4).
//! A host index, built with the table, narrows the routes a request is tested against
//! to those that could match its host; the answer is the one a scan in file order gives.

use crate::config::RouteConfig;
use http::header::HeaderName;
use http::{HeaderMap, Method};
use std::collections::HashMap;

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
    /// Lower-case exact host → the routes that may match a request for it, in file
    /// order: the routes naming that host, and every route in `other_hosts`.
    by_host: HashMap<String, Box<[usize]>>,
    /// The routes that may match any host (no `host`, or a wildcard), in file order.
    other_hosts: Box<[usize]>,
}

/// The longest host looked up without allocating (longer ones are lower-cased on the
/// heap; DNS names are at most 253 bytes).
const HOST_BUF: usize = 256;

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
            .collect::<Vec<_>>();
        let (by_host, other_hosts) = host_index(&matchers);
        RouteTable {
            matchers,
            by_host,
            other_hosts,
        }
    }

    /// Index of the first matching route.
    pub fn find(&self, request: &RequestFacts) -> Option<usize> {
        let host = request.host.as_bytes();
        let mut buf = [0u8; HOST_BUF];
        let heap;
        let lower: &[u8] = if host.iter().any(u8::is_ascii_uppercase) {
            if host.len() <= HOST_BUF {
                let b = &mut buf[..host.len()];
                b.copy_from_slice(host);
                b.make_ascii_lowercase();
                b
            } else {
                heap = host.to_ascii_lowercase();
                &heap
            }
        } else {
            host
        };
        let candidates = std::str::from_utf8(lower)
            .ok()
            .and_then(|h| self.by_host.get(h))
            .unwrap_or(&self.other_hosts);
        candidates
            .iter()
            .copied()
            .find(|&i| self.matchers[i].matches(request))
    }

    /// The first matching route by testing every route in order (what `find` must
    /// agree with; kept for tests and benches).
    pub fn find_by_scan(&self, request: &RequestFacts) -> Option<usize> {
        self.matchers.iter().position(|m| m.matches(request))
    }
}

/// The host index: a route with only exact hosts can match only those hosts; one with
/// no host or a wildcard may match any host, so it is a candidate for every host.
type HostIndex = (HashMap<String, Box<[usize]>>, Box<[usize]>);

fn host_index(matchers: &[Matcher]) -> HostIndex {
    let any_host = |m: &Matcher| {
        m.hosts.is_empty() || m.hosts.iter().any(|h| matches!(h, HostPattern::Suffix(_)))
    };
    let other: Vec<usize> = (0..matchers.len())
        .filter(|&i| any_host(&matchers[i]))
        .collect();
    let mut named: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, m) in matchers.iter().enumerate() {
        for h in &m.hosts {
            if let HostPattern::Exact(h) = h {
                let list = named.entry(h.to_ascii_lowercase()).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
    }
    let by_host = named
        .into_iter()
        .map(|(host, mut list)| {
            list.extend_from_slice(&other);
            list.sort_unstable();
            list.dedup();
            (host, list.into_boxed_slice())
        })
        .collect();
    (by_host, other.into_boxed_slice())
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

    fn table(yaml_routes: &str) -> RouteTable {
        let yaml = format!(
            "listeners: [{{name: web, listen: '127.0.0.1:8080'}}, {{name: alt, listen: '127.0.0.1:8081'}}]\npools: [{{name: p, backends: [{{address: '127.0.0.1:9001'}}]}}]\nroutes:\n{yaml_routes}"
        );
        let config = match crate::config::parse_str("t.yaml", &yaml, &|_| None, false) {
            Ok(l) => l.config,
            Err(e) => panic!("{e:?}"),
        };
        let names: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
        RouteTable::compile(&config.routes, |n| names.iter().position(|x| x == n))
    }

    #[test]
    fn the_host_index_gives_the_first_match_in_file_order() {
        let t = table(concat!(
            "  - {name: a, host: App.example.com, path_prefix: /a, pool: p}\n",
            "  - {name: any, path_prefix: /b, pool: p}\n",
            "  - {name: wild, host: '*.example.com', path_prefix: /c, pool: p}\n",
            "  - {name: a2, host: [app.example.com, other.example.org], pool: p}\n",
            "  - {name: alt, host: app.example.com, listeners: [alt], pool: p}\n",
            "  - {name: last, pool: p}\n",
        ));
        let headers = HeaderMap::new();
        let hosts = [
            "app.example.com",
            "APP.EXAMPLE.COM",
            "x.example.com",
            "other.example.org",
            "unknown.test",
            "",
            "é.example.com",
        ];
        let long = "a".repeat(300) + ".example.com";
        for listener in [0, 1] {
            for host in hosts.iter().copied().chain([long.as_str()]) {
                for path in ["/a", "/b", "/c", "/d"] {
                    let facts = RequestFacts {
                        listener,
                        host,
                        path,
                        method: &Method::GET,
                        headers: &headers,
                        country: None,
                    };
                    assert_eq!(
                        t.find(&facts),
                        t.find_by_scan(&facts),
                        "{listener} {host} {path}"
                    );
                }
            }
        }
        let facts = RequestFacts {
            listener: 0,
            host: "APP.example.com",
            path: "/d",
            method: &Method::GET,
            headers: &headers,
            country: None,
        };
        assert_eq!(t.find(&facts), Some(3), "a2 comes before last");
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
