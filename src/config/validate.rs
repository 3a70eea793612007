//! Checks across sections: unique names, references between routes, pools, listeners
//! and tcp_services, port clashes, what ACME and cluster-scope limits need.

use super::model::*;
use super::raw::{Decoder, Pos};
use super::value::{is_dns_name, is_token};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// The checks that need the whole configuration (run once it is read).
pub fn check(d: &mut Decoder, c: &Config) {
    unique(d, "listeners", c.listeners.iter().map(|l| &l.name));
    unique(d, "pools", c.pools.iter().map(|p| &p.name));
    unique(d, "routes", c.routes.iter().map(|r| &r.name));
    unique(d, "tcp_services", c.tcp_services.iter().map(|t| &t.name));
    references(d, c);
    ports(d, c);
    acme(d, c);
    cluster_scope(d, c);
    proxy_protocol(d, c);
    super::traffic::check(d, c);
    route_caches(d, c);
}

/// A route's `cache` needs the process-wide `cache` storage.
fn route_caches(d: &mut Decoder, c: &Config) {
    if c.cache.is_some() {
        return;
    }
    for (i, r) in c.routes.iter().enumerate() {
        if r.cache.is_some() {
            let path = d.spans.item_path("routes", i);
            let at = format!("{path}.cache");
            d.error(
                d.spans.at(&at),
                &at,
                "needs the top-level cache section (cache.memory), which is not configured",
            );
        }
    }
}

/// A PROXY header is believed only from `server.trusted_proxies`: without any, every
/// connection to such a listener would be refused.
fn proxy_protocol(d: &mut Decoder, c: &Config) {
    if !c.server.trusted_proxies.is_empty() {
        return;
    }
    let listeners = c.listeners.iter().map(|l| l.proxy_protocol).enumerate();
    let services = c.tcp_services.iter().map(|t| t.proxy_protocol).enumerate();
    let on = listeners
        .map(|(i, on)| ("listeners", i, on))
        .chain(services.map(|(i, on)| ("tcp_services", i, on)));
    for (list, i, _) in on.filter(|(_, _, on)| *on) {
        let path = d.spans.item_path(list, i);
        d.error(
            d.spans.at(&path),
            &format!("{path}.proxy_protocol"),
            "needs server.trusted_proxies: a PROXY header is accepted only from those addresses",
        );
    }
}

/// HTTP-01 is the only challenge: the CA must reach a plaintext listener on port 80.
fn acme(d: &mut Decoder, c: &Config) {
    let plaintext = c.listeners.iter().any(|l| l.tls.is_none());
    for (i, l) in c.listeners.iter().enumerate() {
        if l.tls.as_ref().is_some_and(|t| t.acme.is_some()) && !plaintext {
            let path = d.spans.item_path("listeners", i);
            d.error(
                d.spans.at(&path),
                &format!("{path}.tls.acme"),
                "needs a plaintext listener (port 80 for a public CA) to answer HTTP-01 challenges",
            );
        }
    }
}

/// A duplicate name is reported at its second occurrence.
fn unique<'a>(d: &mut Decoder, list: &str, names: impl Iterator<Item = &'a String>) {
    let mut seen: HashMap<&str, String> = HashMap::new();
    for (i, name) in names.enumerate() {
        let path = d.spans.item_path(list, i);
        if let Some(first) = seen.get(name.as_str()) {
            let message = format!("duplicate name {name:?} (first used by {first})");
            d.error(d.spans.at(&path), &format!("{path}.name"), message);
        } else {
            seen.insert(name, path);
        }
    }
}

fn references(d: &mut Decoder, c: &Config) {
    let pool_names: Vec<&str> = c.pools.iter().map(|p| p.name.as_str()).collect();
    let listener_names: Vec<&str> = c.listeners.iter().map(|l| l.name.as_str()).collect();
    for (i, r) in c.routes.iter().enumerate() {
        let route = d.spans.item_path("routes", i);
        if let Some(pool) = &r.pool {
            if !pool_names.contains(&pool.as_str()) {
                let path = format!("{route}.pool");
                d.error(d.spans.at(&path), &path, format!("no pool named {pool:?}"));
            }
        }
        for (j, l) in r.listeners.iter().enumerate() {
            if !listener_names.contains(&l.as_str()) {
                let path = format!("{route}.listeners[{j}]");
                d.error(
                    d.spans.at(&route),
                    &path,
                    format!("no listener named {l:?}"),
                );
            }
        }
    }
    for (i, t) in c.tcp_services.iter().enumerate() {
        let path = format!("{}.pool", d.spans.item_path("tcp_services", i));
        let pool_pos = d.spans.at(&path);
        let used_by_routes = c
            .routes
            .iter()
            .any(|r| r.pool.as_deref() == Some(t.pool.as_str()));
        if !pool_names.contains(&t.pool.as_str()) {
            d.error(pool_pos, &path, format!("no pool named {:?}", t.pool));
        } else if used_by_routes {
            let message = format!(
                "pool {:?} is used by routes too; a pool serves HTTP routes or TCP services, not both",
                t.pool
            );
            d.error(pool_pos, &path, message);
        }
    }
}

fn overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn ports(d: &mut Decoder, c: &Config) {
    let mut taken: Vec<(SocketAddr, String)> = Vec::new();
    for (i, l) in c.listeners.iter().enumerate() {
        if let Some((_, owner)) = taken.iter().find(|(a, _)| overlaps(a, &l.listen)) {
            let path = d.spans.item_path("listeners", i);
            d.error(
                d.spans.at(&path),
                &format!("{path}.listen"),
                format!("{} is already used by {owner}", l.listen),
            );
        }
        taken.push((l.listen, format!("listener {:?}", l.name)));
    }
    for (i, t) in c.tcp_services.iter().enumerate() {
        if let Some((_, owner)) = taken.iter().find(|(a, _)| overlaps(a, &t.listen)) {
            let path = format!("{}.listen", d.spans.item_path("tcp_services", i));
            d.error(
                d.spans.at(&path),
                &path,
                format!("port {} is already used by {owner}", t.listen.port()),
            );
        }
        taken.push((t.listen, format!("tcp_service {:?}", t.name)));
    }
    let extra = [
        c.admin
            .as_ref()
            .map(|a| (a.listen, "admin", "admin.listen")),
        c.metrics
            .as_ref()
            .map(|m| (m.listen, "metrics", "metrics.listen")),
    ];
    for (addr, section, path) in extra.into_iter().flatten() {
        if let Some((_, owner)) = taken.iter().find(|(a, _)| overlaps(a, &addr)) {
            let pos = d.spans.at(section);
            d.error(pos, path, format!("{addr} is already used by {owner}"));
        }
        taken.push((addr, path.to_string()));
    }
}

/// `scope: cluster` needs somewhere to share the counts.
fn cluster_scope(d: &mut Decoder, c: &Config) {
    for (i, r) in c.routes.iter().enumerate() {
        if let Some(rl) = r.rate_limit.as_ref() {
            if rl.scope == Scope::Cluster && c.cluster.is_none() {
                let path = format!("{}.rate_limit", d.spans.item_path("routes", i));
                d.error(
                    d.spans.at(&path),
                    &format!("{path}.scope"),
                    "scope: cluster needs a cluster.redis section",
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Rules within one section. The readers apply them where the value is read, so that an
// entry refused for another reason (say, its name) is still checked: every error at once.

/// A non-loopback admin listener must ask for a token (`any_token`: a token, read-only
/// token or JWT source is configured).
pub fn admin_tokens(listen: &SocketAddr, any_token: bool) -> Option<&'static str> {
    (!any_token && !listen.ip().is_loopback())
        .then_some("at least one token is required when admin.listen is not a loopback address")
}

pub fn admin_token(token: &str) -> Option<&'static str> {
    token.is_empty().then_some("a token must not be empty")
}

pub fn tls_sources(certificates: usize, acme: bool) -> Option<&'static str> {
    (certificates == 0 && !acme).then_some("needs certificates or acme")
}

/// `http3: true` needs TLS (QUIC always encrypts) and no PROXY header (QUIC has none).
pub fn http3(tls: Option<&TlsConfig>, proxy_protocol: bool) -> Option<&'static str> {
    if tls.is_none() {
        return Some("HTTP/3 runs over QUIC, which needs TLS: add a tls section or remove http3");
    }
    proxy_protocol
        .then_some("HTTP/3 cannot be combined with proxy_protocol (QUIC carries no PROXY header)")
}

pub fn client_auth(auth: ClientAuth, client_ca_file: bool) -> Option<&'static str> {
    (auth != ClientAuth::None && !client_ca_file).then_some("needs client_ca_file")
}

pub fn acme_email(email: &str) -> Option<&'static str> {
    (!email.contains('@') || email.contains(char::is_whitespace)).then_some("not an email address")
}

pub fn acme_domains(domains: &[String]) -> Option<&'static str> {
    domains
        .is_empty()
        .then_some("at least one domain is required")
}

pub fn acme_domain(name: &str) -> Option<&'static str> {
    if name.starts_with("*.") {
        Some("wildcard names need the DNS-01 challenge, which Switchyard does not do; list each name")
    } else if !is_dns_name(name) {
        Some("not a DNS name (letters, digits, '-' and '.')")
    } else {
        None
    }
}

pub fn pool_sources(written_backends: usize, discovery: bool) -> Option<&'static str> {
    (written_backends == 0 && !discovery)
        .then_some("a pool needs at least one backend or a discovery source")
}

/// What is wrong with `upstream`, and under which key it is reported.
pub fn upstream_protocol(
    protocol: UpstreamProtocol,
    tls: bool,
) -> Option<(&'static str, &'static str)> {
    match (protocol, tls) {
        (UpstreamProtocol::H2c, true) => {
            Some(("tls", "h2c is cleartext HTTP/2: use protocol h2 with tls"))
        }
        (UpstreamProtocol::H2, false) => Some((
            "protocol",
            "h2 needs upstream.tls; use h2c for cleartext HTTP/2",
        )),
        _ => None,
    }
}

pub fn health_path(path: &str) -> Option<String> {
    (!path.starts_with('/')).then(|| format!("{path:?} must start with /"))
}

pub fn route_pool(pool: bool, redirect_https: bool) -> Option<&'static str> {
    (!pool && !redirect_https).then_some("is required (unless redirect_https is true)")
}

/// A sticky cookie name: an RFC 6265 token.
pub fn cookie_name(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("must not be empty".into())
    } else if !is_token(name) {
        Some(format!("{name:?} is not a valid cookie name (an RFC 6265 token: letters, digits and !#$%&'*+-.^_`|~)"))
    } else {
        None
    }
}

pub fn cluster_timeout(timeout: Duration) -> Option<&'static str> {
    (timeout.is_zero() || timeout > Duration::from_secs(10))
        .then_some("must be more than 0 and at most 10s")
}

/// Two backends of one pool must not reach the same socket address (`localhost:80`
/// and `127.0.0.1:80` would be one server counted twice); the later one is refused.
pub fn distinct_backends(
    d: &mut Decoder,
    backends: Vec<(BackendConfig, Pos, String)>,
) -> Vec<BackendConfig> {
    let mut seen: Vec<(BackendConfig, String)> = Vec::with_capacity(backends.len());
    for (b, pos, path) in backends {
        if let Some((first, first_path)) = seen.iter().find(|(o, _)| o.addr == b.addr) {
            let first_path = first_path.rsplit('.').next().unwrap_or(first_path);
            let message = if first.address == b.address {
                format!("duplicate backend {:?} (same as {first_path})", b.address)
            } else {
                format!(
                    "same address as {first_path} ({:?} and {:?} are both {})",
                    first.address, b.address, b.addr
                )
            };
            d.error(pos, &format!("{path}.address"), message);
        }
        seen.push((b, path));
    }
    seen.into_iter().map(|(b, _)| b).collect()
}
