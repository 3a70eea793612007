//! Checks across sections: unique names, references between routes, pools, listeners
//! and tcp_services, port clashes, what ACME and cluster-scope limits need.

use super::model::*;
use super::raw::Decoder;
use std::collections::HashMap;
use std::net::SocketAddr;

pub fn check(d: &mut Decoder, c: &Config) {
    unique(d, "listeners", c.listeners.iter().map(|l| &l.name));
    unique(d, "pools", c.pools.iter().map(|p| &p.name));
    unique(d, "routes", c.routes.iter().map(|r| &r.name));
    unique(d, "tcp_services", c.tcp_services.iter().map(|t| &t.name));
    references(d, c);
    ports(d, c);
    acme(d, c);
    cluster_scope(d, c);
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
