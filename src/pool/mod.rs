//! A backend pool: its backends with their live state (health, drain, in-flight count),
//! selection across primaries and backups, and the upstream peer settings.

pub mod select;

use crate::config::{Algorithm, BackendConfig, HashKey, PoolConfig, Timeouts, UpstreamConfig};
use select::Selector;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// One backend and the state every part of Switchyard reads it from.
pub struct Backend {
    /// `host:port` as configured: the name in logs, the API and metrics.
    pub address: String,
    pub addr: SocketAddr,
    pub weight: u32,
    pub backup: bool,
    healthy: AtomicBool,
    draining: AtomicBool,
    in_flight: AtomicUsize,
}

impl Backend {
    fn new(c: &BackendConfig) -> Self {
        Backend {
            address: c.address.clone(),
            addr: c.addr,
            weight: c.weight,
            backup: c.backup,
            healthy: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// May take new requests: healthy and not draining.
    pub fn usable(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.draining.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// A draining backend gets no new requests; in-flight ones finish.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Counts a request against its backend until dropped (errors included).
pub struct InFlight(Arc<Backend>);

impl InFlight {
    pub fn new(backend: Arc<Backend>) -> Self {
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(backend)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Tier {
    /// Indices into `Pool::backends`.
    members: Vec<usize>,
    selector: Selector,
}

impl Tier {
    fn new(algorithm: Algorithm, backends: &[Arc<Backend>], backup: bool) -> Self {
        let members: Vec<usize> = (0..backends.len())
            .filter(|i| backends[*i].backup == backup)
            .collect();
        let weighted: Vec<(SocketAddr, u32)> = members
            .iter()
            .map(|i| (backends[*i].addr, backends[*i].weight))
            .collect();
        Tier {
            selector: Selector::new(algorithm, &weighted),
            members,
        }
    }
}

pub struct Pool {
    pub name: String,
    pub algorithm: Algorithm,
    pub hash_key: HashKey,
    pub backends: Vec<Arc<Backend>>,
    primaries: Tier,
    backups: Tier,
    pub retries: u32,
    pub timeouts: Timeouts,
    pub upstream: UpstreamConfig,
}

impl Pool {
    pub fn new(c: &PoolConfig) -> Self {
        let backends: Vec<Arc<Backend>> = c
            .backends
            .iter()
            .map(|b| Arc::new(Backend::new(b)))
            .collect();
        Pool {
            name: c.name.clone(),
            algorithm: c.algorithm,
            hash_key: c.hash_key.clone(),
            primaries: Tier::new(c.algorithm, &backends, false),
            backups: Tier::new(c.algorithm, &backends, true),
            backends,
            retries: c.retries,
            timeouts: c.timeouts,
            upstream: c.upstream.clone(),
        }
    }

    /// Picks a usable backend not in `tried` (indices into `backends`): primaries first;
    /// backups only while no primary is left for this request (all unusable, or all
    /// already failed to connect).
    pub fn select(&self, key: &[u8], tried: &[usize]) -> Option<usize> {
        [&self.primaries, &self.backups]
            .into_iter()
            .find_map(|tier| {
                let usable = |i: usize| {
                    let m = tier.members[i];
                    self.backends[m].usable() && !tried.contains(&m)
                };
                tier.selector
                    .pick(key, usable, |i| self.backends[tier.members[i]].in_flight())
                    .map(|i| tier.members[i])
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(backups: &[bool]) -> Pool {
        let backends = backups
            .iter()
            .enumerate()
            .map(|(i, b)| BackendConfig {
                address: format!("127.0.0.1:{}", 9000 + i),
                addr: SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)),
                weight: 1,
                backup: *b,
            })
            .collect();
        Pool::new(&PoolConfig {
            name: "p".into(),
            algorithm: Algorithm::RoundRobin,
            hash_key: HashKey::ClientIp,
            backends,
            discovery: None,
            health_check: None,
            circuit_breaker: None,
            sticky: None,
            retries: 1,
            timeouts: Timeouts::default(),
            upstream: UpstreamConfig::default(),
            path: "pools[0]".into(),
            pos: Default::default(),
        })
    }

    #[test]
    fn backups_only_when_no_primary_is_usable() {
        let p = pool(&[false, true]);
        for _ in 0..5 {
            assert_eq!(p.select(b"", &[]), Some(0));
        }
        p.backends[0].set_healthy(false);
        assert_eq!(p.select(b"", &[]), Some(1));
        p.backends[0].set_healthy(true);
        p.backends[0].set_draining(true);
        assert_eq!(p.select(b"", &[]), Some(1));
    }

    #[test]
    fn retries_avoid_tried_backends() {
        let p = pool(&[false, false, false]);
        let first = p.select(b"", &[]).unwrap_or(9);
        let second = p.select(b"", &[first]).unwrap_or(9);
        assert_ne!(first, second);
        assert_eq!(p.select(b"", &[0, 1, 2]), None);
    }

    #[test]
    fn backup_takes_the_retry_when_every_primary_failed() {
        let p = pool(&[false, true]);
        assert_eq!(p.select(b"", &[0]), Some(1));
    }

    #[test]
    fn in_flight_guard_counts() {
        let p = pool(&[false]);
        let g = InFlight::new(p.backends[0].clone());
        assert_eq!(p.backends[0].in_flight(), 1);
        drop(g);
        assert_eq!(p.backends[0].in_flight(), 0);
    }
}
