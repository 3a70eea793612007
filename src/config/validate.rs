//! Checks across sections: unique names, references between routes, pools, listeners
//! and tcp_services, port clashes, what ACME and cluster-scope limits need.

use super::decode::{Decoder, Pos};
use super::model::*;
use std::collections::HashMap;
use std::net::SocketAddr;

pub fn check(d: &mut Decoder, c: &Config) {
    unique(d, c.listeners.iter().map(|l| (&l.name, l.pos, &l.path)));
    unique(d, c.pools.iter().map(|p| (&p.name, p.pos, &p.path)));
    unique(d, c.routes.iter().map(|r| (&r.name, r.pos, &r.path)));
    unique(d, c.tcp_services.iter().map(|t| (&t.name, t.pos, &t.path)));
    references(d, c);
    ports(d, c);
    acme(d, c);
    cluster_scope(d, c);
}

/// HTTP-01 is the only challenge: the CA must reach a plaintext listener on port 80.
fn acme(d: &mut Decoder, c: &Config) {
    let plaintext = c.listeners.iter().any(|l| l.tls.is_none());
    for l in &c.listeners {
        if l.tls.as_ref().is_some_and(|t| t.acme.is_some()) && !plaintext {
            d.error(
                l.pos,
                &format!("{}.tls.acme", l.path),
                "needs a plaintext listener (port 80 for a public CA) to answer HTTP-01 challenges",
            );
        }
    }
}

/// A duplicate name is reported at its second occurrence.
fn unique<'a>(d: &mut Decoder, entries: impl Iterator<Item = (&'a String, Pos, &'a String)>) {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (name, pos, path) in entries {
        if let Some(first) = seen.get(name.as_str()) {
            let message = format!("duplicate name {name:?} (first used by {first})");
            d.error(pos, &format!("{path}.name"), message);
        } else {
            seen.insert(name, path);
        }
    }
}

fn references(d: &mut Decoder, c: &Config) {
    let pool_names: Vec<&str> = c.pools.iter().map(|p| p.name.as_str()).collect();
    let listener_names: Vec<&str> = c.listeners.iter().map(|l| l.name.as_str()).collect();
    for r in &c.routes {
        if let Some(pool) = &r.pool {
            if !pool_names.contains(&pool.as_str()) {
                let path = format!("{}.pool", r.path);
                d.error(r.pool_pos, &path, format!("no pool named {pool:?}"));
            }
        }
        for (j, l) in r.listeners.iter().enumerate() {
            if !listener_names.contains(&l.as_str()) {
                let path = format!("{}.listeners[{j}]", r.path);
                d.error(r.pos, &path, format!("no listener named {l:?}"));
            }
        }
    }
    for t in &c.tcp_services {
        let path = format!("{}.pool", t.path);
        let used_by_routes = c
            .routes
            .iter()
            .any(|r| r.pool.as_deref() == Some(t.pool.as_str()));
        if !pool_names.contains(&t.pool.as_str()) {
            d.error(t.pool_pos, &path, format!("no pool named {:?}", t.pool));
        } else if used_by_routes {
            let message = format!(
                "pool {:?} is used by routes too; a pool serves HTTP routes or TCP services, not both",
                t.pool
            );
            d.error(t.pool_pos, &path, message);
        }
    }
}

fn overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn ports(d: &mut Decoder, c: &Config) {
    let mut taken: Vec<(SocketAddr, String)> = Vec::new();
    for l in &c.listeners {
        if let Some((_, owner)) = taken.iter().find(|(a, _)| overlaps(a, &l.listen)) {
            d.error(
                l.pos,
                &format!("{}.listen", l.path),
                format!("{} is already used by {owner}", l.listen),
            );
        }
        taken.push((l.listen, format!("listener {:?}", l.name)));
    }
    for t in &c.tcp_services {
        if let Some((_, owner)) = taken.iter().find(|(a, _)| overlaps(a, &t.listen)) {
            d.error(
                t.listen_pos,
                &format!("{}.listen", t.path),
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

/// `scope: cluster` needs somewhere to share the counts.
fn cluster_scope(d: &mut Decoder, c: &Config) {
    for r in &c.routes {
        if let Some(rl) = r.rate_limit.as_ref() {
            if rl.scope == Scope::Cluster && c.cluster.is_none() {
                d.error(
                    rl.pos,
                    &format!("{}.rate_limit.scope", r.path),
                    "scope: cluster needs a cluster.redis section",
                );
            }
        }
    }
}
