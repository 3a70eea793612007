//! Where a pool member comes from (the admin API's `source`, SPEC §12) and the shape in
//! which discovery providers hand their backends to the pool.

use std::net::SocketAddr;

/// The origin of a backend; discovered ones are keyed by their provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    Static,
    Dns,
    DnsSrv,
    Docker,
    Kubernetes,
    Api,
}

impl Source {
    /// The spelling in the admin API and the `provider` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Static => "static",
            Source::Dns => "dns",
            Source::DnsSrv => "dns_srv",
            Source::Docker => "docker",
            Source::Kubernetes => "kubernetes",
            Source::Api => "api",
        }
    }
}

/// One backend as a provider found it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Discovered {
    pub addr: SocketAddr,
    /// 1–1000 (providers clamp what they read).
    pub weight: u32,
    /// Only used while no primary is usable (DNS SRV's second priority tier).
    pub backup: bool,
    /// Takes no new requests (a terminating endpoint, an unhealthy container).
    pub draining: bool,
}

impl Discovered {
    pub fn serving(addr: SocketAddr, weight: u32) -> Self {
        Discovered {
            addr,
            weight: weight.clamp(1, 1000),
            backup: false,
            draining: false,
        }
    }
}

impl super::Pool {
    /// Replaces the backends one provider found; static ones always stay.
    pub fn set_discovered(&self, source: Source, found: Vec<Discovered>) {
        super::relock(&self.discovered).insert(source, found);
        self.rebuild();
    }

    /// What `source` found last (`None` before its first answer).
    pub fn discovered(&self, source: Source) -> Option<Vec<Discovered>> {
        super::relock(&self.discovered).get(&source).cloned()
    }

    /// After a reload replaced this pool's definition: takes over the backends of every
    /// provider whose settings did not change (its task keeps running), with their
    /// health, so they serve at once instead of waiting for the provider's next answer.
    pub fn inherit_discovered(&self, old: &super::Pool) {
        let kept = unchanged_providers(&old.definition.discovery, &self.definition.discovery);
        let mut inherited = false;
        for s in kept {
            if let Some(set) = old.discovered(s) {
                super::relock(&self.discovered).insert(s, set);
                inherited = true;
            }
        }
        if !inherited {
            return;
        }
        self.rebuild();
        let old_members = old.members();
        for b in self
            .members()
            .backends
            .iter()
            .filter(|b| b.source != Source::Static)
        {
            if let Some(i) = old_members.find(&b.address) {
                b.set_healthy(old_members.backends[i].healthy());
            }
        }
    }
}

/// The member a discovered backend becomes: named `ip:port`.
pub(super) fn as_backend(d: &Discovered) -> crate::config::BackendConfig {
    crate::config::BackendConfig {
        address: d.addr.to_string(),
        addr: d.addr,
        weight: d.weight,
        backup: d.backup,
    }
}

/// The providers configured the same way in `old` and `new` (their tasks keep running
/// across a reload).
pub fn unchanged_providers(
    old: &crate::config::DiscoveryConfig,
    new: &crate::config::DiscoveryConfig,
) -> Vec<Source> {
    /// Set in both, and set the same way.
    fn kept<T: PartialEq>(old: &Option<T>, new: &Option<T>) -> bool {
        old.is_some() && old == new
    }
    [
        (Source::Dns, kept(&old.dns, &new.dns)),
        (Source::DnsSrv, kept(&old.dns_srv, &new.dns_srv)),
        (Source::Docker, kept(&old.docker, &new.docker)),
        (Source::Kubernetes, kept(&old.kubernetes, &new.kubernetes)),
    ]
    .into_iter()
    .filter_map(|(source, same)| same.then_some(source))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::*;
    use crate::pool::overlay::PoolOverlay;
    use crate::pool::Pool;

    fn pool(discovery: DiscoveryConfig) -> Pool {
        let c = PoolConfig {
            name: "p".into(),
            algorithm: Algorithm::RoundRobin,
            hash_key: HashKey::ClientIp,
            backends: Vec::new(),
            discovery,
            health_check: None,
            circuit_breaker: None,
            sticky: None,
            retries: 1,
            timeouts: Timeouts::default(),
            upstream: UpstreamConfig::default(),
            traffic: Default::default(),
        };
        Pool::new(&c, HealthKind::Tcp, PoolOverlay::default())
    }

    fn dns(name: &str) -> Option<DnsDiscovery> {
        Some(DnsDiscovery {
            name: name.into(),
            port: 80,
            interval: std::time::Duration::from_secs(30),
        })
    }

    fn srv() -> Option<DnsSrvDiscovery> {
        Some(DnsSrvDiscovery {
            name: "_http._tcp.web".into(),
            interval: std::time::Duration::from_secs(30),
        })
    }

    #[test]
    fn a_rebuilt_pool_inherits_only_unchanged_providers_with_their_health() {
        let old = pool(DiscoveryConfig {
            dns: dns("a.internal"),
            dns_srv: srv(),
            ..Default::default()
        });
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        old.set_discovered(Source::Dns, vec![Discovered::serving(a, 1)]);
        old.set_discovered(Source::DnsSrv, vec![Discovered::serving(b, 5)]);
        old.members().backends[1].set_healthy(false);
        assert_eq!(old.members().backends[1].addr, b);

        // SRV unchanged, DNS's name changed.
        let new = pool(DiscoveryConfig {
            dns: dns("b.internal"),
            dns_srv: srv(),
            ..Default::default()
        });
        new.inherit_discovered(&old);
        let m = new.members();
        assert_eq!(m.backends.len(), 1, "only the SRV set came along");
        assert_eq!(
            (m.backends[0].addr, m.backends[0].source),
            (b, Source::DnsSrv)
        );
        assert_eq!(m.backends[0].weight().get(), 5);
        assert!(!m.backends[0].healthy(), "with its health");
        assert_eq!(new.discovered(Source::Dns), None);
    }

    #[test]
    fn discovered_draining_and_backup_reach_the_members() {
        let p = pool(DiscoveryConfig {
            docker: None,
            ..Default::default()
        });
        let mut d = Discovered::serving("10.0.0.1:80".parse().unwrap(), 2000);
        d.draining = true;
        let mut backup = Discovered::serving("10.0.0.2:80".parse().unwrap(), 1);
        backup.backup = true;
        p.set_discovered(Source::Kubernetes, vec![d, backup]);
        let m = p.members();
        assert_eq!(m.backends[0].weight().get(), 1000, "clamped");
        assert!(m.backends[0].draining());
        assert!(m.backends[1].backup);
        assert_eq!(
            m.select(b"", &[]),
            Some(1),
            "the backup serves while the primary drains"
        );
    }
}
