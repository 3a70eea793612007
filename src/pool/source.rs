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
    let mut same = Vec::new();
    let mut keep = |source, old_set: bool, new_set: bool, equal: bool| {
        if old_set && new_set && equal {
            same.push(source);
        }
    };
    keep(
        Source::Dns,
        old.dns.is_some(),
        new.dns.is_some(),
        old.dns == new.dns,
    );
    keep(
        Source::DnsSrv,
        old.dns_srv.is_some(),
        new.dns_srv.is_some(),
        old.dns_srv == new.dns_srv,
    );
    keep(
        Source::Docker,
        old.docker.is_some(),
        new.docker.is_some(),
        old.docker == new.docker,
    );
    keep(
        Source::Kubernetes,
        old.kubernetes.is_some(),
        new.kubernetes.is_some(),
        old.kubernetes == new.kubernetes,
    );
    same
}
