//! DNS discovery through pingora-load-balancing's `ServiceDiscovery`: every A and AAAA
//! record of `name`, on `port`, re-resolved each `interval` with the system resolver
//! (so /etc/hosts and nsswitch apply, as operators expect); a failed lookup keeps the
//! last answer.

use crate::config::{BackendConfig, DnsDiscovery};
use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::Backend as LbBackend;
use std::collections::{BTreeSet, HashMap};
use std::sync::Weak;

pub struct Dns {
    pub name: String,
    pub port: u16,
}

#[async_trait]
impl ServiceDiscovery for Dns {
    async fn discover(&self) -> pingora::Result<(BTreeSet<LbBackend>, HashMap<u64, bool>)> {
        let addrs = tokio::net::lookup_host((self.name.as_str(), self.port))
            .await
            .map_err(|e| {
                pingora::Error::because(pingora::ErrorType::ConnectNoRoute, "dns lookup", e)
            })?;
        let mut set = BTreeSet::new();
        for a in addrs {
            set.insert(LbBackend::new(&a.to_string())?);
        }
        Ok((set, HashMap::new()))
    }
}

/// Re-resolves until the pool is gone; discovered backends get weight 1.
pub async fn run(pool: Weak<super::Pool>, d: DnsDiscovery) {
    let dns = Dns {
        name: d.name.clone(),
        port: d.port,
    };
    let mut last: Vec<String> = Vec::new();
    loop {
        if pool.upgrade().is_none() {
            return;
        }
        match dns.discover().await {
            Ok((found, _)) => {
                let backends: Vec<BackendConfig> = found
                    .iter()
                    .filter_map(|b| b.addr.as_inet().copied())
                    .map(|addr| BackendConfig {
                        address: addr.to_string(),
                        addr,
                        weight: 1,
                        backup: false,
                    })
                    .collect();
                let names: Vec<String> = backends.iter().map(|b| b.address.clone()).collect();
                if names != last {
                    if let Some(p) = pool.upgrade() {
                        log::info!(
                            "discovery: pool {} {}:{} -> {:?}",
                            p.name,
                            d.name,
                            d.port,
                            names
                        );
                        p.set_discovered(backends);
                    }
                    last = names;
                }
            }
            Err(e) => log::warn!(
                "discovery: {}:{} lookup failed, keeping {:?}: {e}",
                d.name,
                d.port,
                last
            ),
        }
        tokio::time::sleep(d.interval).await;
    }
}
