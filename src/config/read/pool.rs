//! `pools[]`: backends (one socket address each), sticky sessions, timeouts.

use super::discovery::read_discovery;
use super::health::{read_circuit_breaker, read_health_check};
use super::upstream::read_upstream;
use super::*;

/// A backend, where its address is written and its key path.
pub(super) fn read_backend(
    d: &mut Decoder,
    node: &Node,
    path: &str,
) -> Option<(BackendConfig, Pos, String)> {
    let mut m = d.map(node, path)?;
    let address = required(d, &mut m, "address", |d, n, p| {
        let s = d.scalar(n, p, "host:port")?;
        match backend_address(&s.text) {
            Ok(v) => Some((v, s.pos)),
            Err(e) => {
                d.error(s.pos, p, e.to_string());
                None
            }
        }
    });
    let weight = bounded(d, &mut m, "weight", 1, 1, 1000);
    let backup = boolean(d, &mut m, "backup", false);
    m.finish(d, |_| None);
    let ((address, addr), pos) = address?;
    Some((
        BackendConfig {
            address,
            addr,
            weight,
            backup,
        },
        pos,
        path.to_string(),
    ))
}

pub(super) fn read_pool(d: &mut Decoder, node: &Node, path: &str) -> Option<PoolConfig> {
    let mut m = d.map(node, path)?;
    d.spans.set(path, m.value_pos("name"));
    let name = required_string(d, &mut m, "name");
    let algorithm = choice(d, &mut m, "algorithm", Algorithm::RoundRobin);
    let hash_key_pos = m.key_pos("hash_key");
    let hash_key = get_with(d, &mut m, "hash_key", |d, n, p| {
        d.parse(n, p, HashKey::EXPECTED, |s| s.parse().ok())
    });
    if hash_key.is_some() && algorithm != Algorithm::ConsistentHash {
        d.warn(
            hash_key_pos,
            &m.child("hash_key"),
            format!(
                "ignored: algorithm {} does not use a hash key",
                algorithm.as_str()
            ),
        );
    }
    let backends = get_with(d, &mut m, "backends", |d, n, p| {
        Some(d.list(n, p, false, read_backend))
    })
    .unwrap_or_default();
    let backends = validate::distinct_backends(d, backends);
    let discovery = get_with(d, &mut m, "discovery", read_discovery).unwrap_or_default();
    let health_check = get_with(d, &mut m, "health_check", read_health_check);
    let circuit_breaker = get_with(d, &mut m, "circuit_breaker", read_circuit_breaker);
    let sticky = get_with(d, &mut m, "sticky", |d, n, p| {
        let mut s = d.map(n, p)?;
        let cookie = match s.get("cookie") {
            None => "SWITCHYARD_STICKY".to_string(),
            Some(n) => {
                let p = s.child("cookie");
                let pos = s.value_pos("cookie");
                let scalar = d.scalar(n, &p, "a cookie name");
                let reported = scalar.is_none();
                let name = scalar
                    .filter(|s| !s.is_null())
                    .map(|s| s.text)
                    .unwrap_or_default();
                if let Some(e) = validate::cookie_name(&name).filter(|_| !reported) {
                    d.error(pos, &p, e);
                }
                name
            }
        };
        let ttl = opt_duration(
            d,
            &mut s,
            "ttl",
            "a duration such as 30m or 1h",
            MAX_DURATION.nonzero(),
        );
        s.finish(d, |_| None);
        Some(StickyConfig { cookie, ttl })
    });
    let retries = bounded(d, &mut m, "retries", 1, 0, 100);
    let timeouts = get_with(d, &mut m, "timeouts", |d, n, p| {
        let mut t = d.map(n, p)?;
        let def = Timeouts::default();
        let v = Timeouts {
            connect: duration_within(d, &mut t, "connect", def.connect, DAY.nonzero()),
            read: duration_within(d, &mut t, "read", def.read, DAY.nonzero()),
            write: duration_within(d, &mut t, "write", def.write, DAY.nonzero()),
            idle: duration_within(d, &mut t, "idle", def.idle, DAY),
        };
        t.finish(d, |_| None);
        Some(v)
    })
    .unwrap_or_default();
    let upstream = get_with(d, &mut m, "upstream", read_upstream).unwrap_or_default();
    let traffic = super::traffic::read_pool_traffic(d, &mut m);
    let written_backends = m
        .get("backends")
        .and_then(|n| n.as_sequence())
        .map_or(0, |s| s.len());
    if let Some(e) = validate::pool_sources(written_backends, !discovery.is_empty()) {
        d.error(m.key_pos("backends"), &m.child("backends"), e);
    }
    m.finish(d, |_| None);
    Some(PoolConfig {
        name: name?,
        algorithm,
        hash_key: hash_key.unwrap_or(HashKey::ClientIp),
        backends,
        discovery,
        health_check,
        circuit_breaker,
        sticky,
        retries,
        timeouts,
        upstream,
        traffic,
    })
}
