//! DNS A/AAAA discovery: every address of `name`, on `port`, re-resolved each `interval`
//! with the system resolver (so /etc/hosts and nsswitch apply, as operators expect).

use super::{DiscoveryError, Provider, Updates};
use crate::config::DnsDiscovery;
use crate::pool::Discovered;
use async_trait::async_trait;

pub struct Dns(pub DnsDiscovery);

#[async_trait]
impl Provider for Dns {
    async fn run(self: Box<Self>, updates: Updates) {
        let d = self.0;
        loop {
            let sent = match tokio::net::lookup_host((d.name.as_str(), d.port)).await {
                Ok(addrs) => {
                    let set = addrs.map(|a| Discovered::serving(a, 1)).collect();
                    updates.found(set).await
                }
                Err(source) => {
                    let name = format!("{}:{}", d.name, d.port);
                    updates
                        .failed(DiscoveryError::Lookup { name, source })
                        .await
                }
            };
            if !sent {
                return;
            }
            tokio::time::sleep(d.interval).await;
        }
    }
}
