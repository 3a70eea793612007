//! Discovery providers (SPEC §12) behind one seam: a `Provider` sends whole backend sets
//! (or failures) down an `Updates` channel; `supervise` keeps the last set, applies it to
//! the pool through `Pool::set_discovered` (the same rebuild that merges static backends
//! and the admin overlay, so health checks, breaker, drain and weights apply alike),
//! counts failures and logs once per outage. Static backends come from the file and
//! are merged by the pool itself.

mod dns;
mod dns_srv;
mod docker;
mod kubernetes;
mod supervise;

pub use supervise::Supervisor;

use crate::config::DiscoveryConfig;
use crate::pool::{Discovered, Source};
use async_trait::async_trait;
use tokio::sync::mpsc;

/// Why a provider has no fresh answer; its last set stays in the pool meanwhile.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("lookup of {name} failed: {source}")]
    Lookup {
        name: String,
        source: std::io::Error,
    },
    #[error("SRV lookup of {name} failed: {source}")]
    Srv {
        name: String,
        source: Box<hickory_resolver::ResolveError>,
    },
    #[error("resolver configuration: {0}")]
    Resolver(Box<hickory_resolver::ResolveError>),
    #[error("Docker Engine API at {socket}: {source}")]
    Docker {
        socket: String,
        source: Box<bollard::errors::Error>,
    },
    #[error("Docker event stream at {0} ended")]
    DockerEventsEnded(String),
    #[error("Kubernetes client configuration: {0}")]
    Kubeconfig(Box<kube::config::KubeconfigError>),
    #[error("Kubernetes client: {0}")]
    KubeClient(Box<kube::Error>),
    #[error("Kubernetes API: {0}")]
    Kubernetes(Box<kube::runtime::watcher::Error>),
}

/// What a provider reports.
pub enum Update {
    /// The whole current set (sorted, no duplicates).
    Found(Vec<Discovered>),
    Failed(DiscoveryError),
}

/// The sending end a provider writes to; closed once its pool and settings are gone.
pub struct Updates(mpsc::Sender<Update>);

impl Updates {
    /// Reports the current set; false once nobody listens (the provider should end).
    pub async fn found(&self, mut set: Vec<Discovered>) -> bool {
        set.sort();
        set.dedup_by(|a, b| a.addr == b.addr);
        self.0.send(Update::Found(set)).await.is_ok()
    }

    /// Reports a failure; false once nobody listens.
    pub async fn failed(&self, e: DiscoveryError) -> bool {
        self.0.send(Update::Failed(e)).await.is_ok()
    }
}

/// One discovery source of one pool.
#[async_trait]
pub trait Provider: Send {
    /// Runs until `updates` closes, sending every change of the backend set.
    async fn run(self: Box<Self>, updates: Updates);
}

/// One configured provider: the settings a reload compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settings {
    Dns(crate::config::DnsDiscovery),
    DnsSrv(crate::config::DnsSrvDiscovery),
    Docker(crate::config::DockerDiscovery),
    Kubernetes(crate::config::KubernetesDiscovery),
}

impl Settings {
    pub fn of(c: &DiscoveryConfig) -> Vec<Settings> {
        let mut all = Vec::new();
        all.extend(c.dns.clone().map(Settings::Dns));
        all.extend(c.dns_srv.clone().map(Settings::DnsSrv));
        all.extend(c.docker.clone().map(Settings::Docker));
        all.extend(c.kubernetes.clone().map(Settings::Kubernetes));
        all
    }

    pub fn source(&self) -> Source {
        match self {
            Settings::Dns(_) => Source::Dns,
            Settings::DnsSrv(_) => Source::DnsSrv,
            Settings::Docker(_) => Source::Docker,
            Settings::Kubernetes(_) => Source::Kubernetes,
        }
    }

    fn provider(&self, pool: &str) -> Box<dyn Provider> {
        match self {
            Settings::Dns(c) => Box::new(dns::Dns(c.clone())),
            Settings::DnsSrv(c) => Box::new(dns_srv::DnsSrv(c.clone())),
            Settings::Docker(c) => Box::new(docker::Docker::new(pool, c.clone())),
            Settings::Kubernetes(c) => Box::new(kubernetes::Kubernetes(c.clone())),
        }
    }
}
