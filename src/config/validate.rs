//! Checks across sections: unique names, references between routes, pools, listeners
//! and tcp_services, port clashes; plus warnings for keys whose behaviour is not built.

use super::decode::{Decoder, Pos};
use super::model::*;
use std::collections::HashMap;
use std::net::SocketAddr;

pub fn check(d: &mut Decoder, c: &Config) {
    unique(d, "listeners", c.listeners.iter().map(|l| (&l.name, l.pos)));
    unique(d, "pools", c.pools.iter().map(|p| (&p.name, p.pos)));
    unique(d, "routes", c.routes.iter().map(|r| (&r.name, r.pos)));
    unique(
        d,
        "tcp_services",
        c.tcp_services.iter().map(|t| (&t.name, t.pos)),
    );
    references(d, c);
    ports(d, c);
    backends(d, c);
    not_built_yet(d, c);
}

/// A duplicate name is reported at its second occurrence.
fn unique<'a>(d: &mut Decoder, section: &str, names: impl Iterator<Item = (&'a String, Pos)>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, (name, pos)) in names.enumerate() {
        if let Some(first) = seen.insert(name, i) {
            d.error(
                pos,
                &format!("{section}[{i}].name"),
                format!("duplicate name {name:?} (first used by {section}[{first}])"),
            );
        }
    }
}

fn references(d: &mut Decoder, c: &Config) {
    let pool_names: Vec<&str> = c.pools.iter().map(|p| p.name.as_str()).collect();
    let listener_names: Vec<&str> = c.listeners.iter().map(|l| l.name.as_str()).collect();
    for (i, r) in c.routes.iter().enumerate() {
        if let Some(pool) = &r.pool {
            if !pool_names.contains(&pool.as_str()) {
                d.error(
                    r.pool_pos,
                    &format!("routes[{i}].pool"),
                    format!("no pool named {pool:?}"),
                );
            }
        }
        for (j, l) in r.listeners.iter().enumerate() {
            if !listener_names.contains(&l.as_str()) {
                d.error(
                    r.pos,
                    &format!("routes[{i}].listeners[{j}]"),
                    format!("no listener named {l:?}"),
                );
            }
        }
    }
    for (i, t) in c.tcp_services.iter().enumerate() {
        if !pool_names.contains(&t.pool.as_str()) {
            d.error(
                t.pool_pos,
                &format!("tcp_services[{i}].pool"),
                format!("no pool named {:?}", t.pool),
            );
        } else if c
            .routes
            .iter()
            .any(|r| r.pool.as_deref() == Some(t.pool.as_str()))
        {
            d.error(
                t.pool_pos,
                &format!("tcp_services[{i}].pool"),
                format!("pool {:?} is used by routes too; a pool serves HTTP routes or TCP services, not both", t.pool),
            );
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
            d.error(
                l.pos,
                &format!("listeners[{i}].listen"),
                format!("{} is already used by {owner}", l.listen),
            );
        }
        taken.push((l.listen, format!("listener {:?}", l.name)));
    }
    for (i, t) in c.tcp_services.iter().enumerate() {
        if let Some((_, owner)) = taken.iter().find(|(a, _)| overlaps(a, &t.listen)) {
            d.error(
                t.listen_pos,
                &format!("tcp_services[{i}].listen"),
                format!("port {} is already used by {owner}", t.listen.port()),
            );
        }
        taken.push((t.listen, format!("tcp_service {:?}", t.name)));
    }
    let extra = [
        c.admin.as_ref().map(|a| (a.listen, a.pos, "admin.listen")),
        c.metrics
            .as_ref()
            .map(|m| (m.listen, m.pos, "metrics.listen")),
    ];
    for (addr, pos, path) in extra.into_iter().flatten() {
        if let Some((_, owner)) = taken.iter().find(|(a, _)| overlaps(a, &addr)) {
            d.error(pos, path, format!("{addr} is already used by {owner}"));
        }
        taken.push((addr, path.to_string()));
    }
}

fn backends(d: &mut Decoder, c: &Config) {
    for (i, p) in c.pools.iter().enumerate() {
        let mut seen: Vec<&str> = Vec::new();
        for (j, b) in p.backends.iter().enumerate() {
            if seen.contains(&b.address.as_str()) {
                d.error(
                    p.pos,
                    &format!("pools[{i}].backends[{j}].address"),
                    format!("duplicate backend {:?}", b.address),
                );
            }
            seen.push(&b.address);
        }
    }
}

/// Keys that parse and validate now but whose behaviour a later release builds: say so
/// loudly instead of silently doing nothing.
fn not_built_yet(d: &mut Decoder, c: &Config) {
    let soon = "is accepted but not implemented in this version yet; it has no effect";
    if let Some(a) = &c.admin {
        d.warn(a.pos, "admin", soon);
    }
    if let Some(m) = &c.metrics {
        d.warn(m.pos, "metrics", soon);
    }
    if let Some(cl) = &c.cluster {
        d.warn(cl.pos, "cluster", soon);
    }
    for (i, l) in c.listeners.iter().enumerate() {
        if let Some(tls) = &l.tls {
            if tls.acme.is_some() {
                d.warn(l.pos, &format!("listeners[{i}].tls.acme"), soon);
            }
            if tls.client_ca_file.is_some() {
                d.warn(l.pos, &format!("listeners[{i}].tls.client_ca_file"), soon);
            }
            if tls.certificates.len() > 1 {
                d.warn(
                    l.pos,
                    &format!("listeners[{i}].tls.certificates"),
                    "SNI selection is not implemented yet: only the first certificate is served",
                );
            }
        }
    }
    for (i, p) in c.pools.iter().enumerate() {
        let keys = [
            (p.health_check.is_some(), "health_check"),
            (p.circuit_breaker.is_some(), "circuit_breaker"),
            (p.sticky.is_some(), "sticky"),
            (p.discovery.is_some(), "discovery"),
            (
                p.upstream.tls.as_ref().is_some_and(|t| t.ca_file.is_some()),
                "upstream.tls.ca_file",
            ),
        ];
        for (present, key) in keys {
            if present {
                d.warn(p.pos, &format!("pools[{i}].{key}"), soon);
            }
        }
    }
    for (i, r) in c.routes.iter().enumerate() {
        if let Some(rl) = &r.rate_limit {
            d.warn(rl.pos, &format!("routes[{i}].rate_limit"), soon);
        }
    }
    for (i, t) in c.tcp_services.iter().enumerate() {
        d.warn(t.pos, &format!("tcp_services[{i}]"), soon);
    }
}
