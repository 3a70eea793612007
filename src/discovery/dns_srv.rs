//! DNS SRV discovery with hickory-resolver: each record's target (resolved to its
//! addresses), port and weight; the lowest priority serves, the next priority is the
//! backup tier, higher ones are ignored. Re-resolved every `interval`, sooner when the
//! records' TTL runs out first. The nameservers are the system's (/etc/resolv.conf),
//! or `$SWITCHYARD_NAMESERVER` (`ip:port`) when set.

use super::{DiscoveryError, Provider, Updates};
use crate::config::DnsSrvDiscovery;
use crate::pool::Discovered;
use async_trait::async_trait;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{ResolveError, TokioResolver};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Never re-resolve more often than this, whatever the TTL (dnsmasq answers with 0).
const MIN_REFRESH: Duration = Duration::from_secs(1);

/// How long one query waits for its answer.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

pub struct DnsSrv(pub DnsSrvDiscovery);

#[async_trait]
impl Provider for DnsSrv {
    async fn run(self: Box<Self>, updates: Updates) {
        let d = self.0;
        let resolver = loop {
            match resolver() {
                Ok(r) => break r,
                Err(e) => {
                    if !updates.failed(DiscoveryError::Resolver(Box::new(e))).await {
                        return;
                    }
                    tokio::time::sleep(d.interval).await;
                }
            }
        };
        loop {
            let (sent, next) = match resolve(&resolver, &d.name).await {
                Ok((set, valid_until)) => {
                    let ttl = valid_until.saturating_duration_since(Instant::now());
                    (updates.found(set).await, ttl.clamp(MIN_REFRESH, d.interval))
                }
                Err(e) => {
                    let name = d.name.clone();
                    let source = Box::new(e);
                    (
                        updates.failed(DiscoveryError::Srv { name, source }).await,
                        d.interval,
                    )
                }
            };
            if !sent {
                return;
            }
            tokio::time::sleep(next).await;
        }
    }
}

fn resolver() -> Result<TokioResolver, ResolveError> {
    let provider = TokioConnectionProvider::default();
    let mut builder = match nameserver_override() {
        Some(ns) => {
            let group = NameServerConfigGroup::from_ips_clear(&[ns.ip()], ns.port(), true);
            let config = ResolverConfig::from_parts(None, Vec::new(), group);
            TokioResolver::builder_with_config(config, provider)
        }
        None => TokioResolver::builder(provider)?,
    };
    // A nameserver that went away shows as a failure within the interval, not after
    // the default 2 x 5 s of retries.
    let options = builder.options_mut();
    options.timeout = LOOKUP_TIMEOUT;
    options.attempts = 1;
    Ok(builder.build())
}

fn nameserver_override() -> Option<SocketAddr> {
    let v = std::env::var("SWITCHYARD_NAMESERVER").ok()?;
    match v.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            log::warn!("SWITCHYARD_NAMESERVER={v:?} is not ip:port; using the system resolver");
            None
        }
    }
}

/// The backends `name`'s SRV records name, and when the shortest TTL among them ends.
async fn resolve(
    resolver: &TokioResolver,
    name: &str,
) -> Result<(Vec<Discovered>, Instant), ResolveError> {
    let srv = resolver.srv_lookup(name).await?;
    let mut valid_until = srv.as_lookup().valid_until();
    let mut priorities: Vec<u16> = srv.iter().map(|r| r.priority()).collect();
    priorities.sort_unstable();
    priorities.dedup();
    let mut set = Vec::new();
    for record in srv.iter() {
        let backup = match priorities.iter().position(|p| *p == record.priority()) {
            Some(0) => false,
            Some(1) => true,
            _ => continue,
        };
        // "." as the target: the service is decidedly not available there (RFC 2782).
        if record.target().is_root() {
            continue;
        }
        let ips = resolver.lookup_ip(record.target().clone()).await?;
        valid_until = valid_until.min(ips.valid_until());
        for ip in ips.iter() {
            set.push(Discovered {
                addr: SocketAddr::new(ip, record.port()),
                weight: u32::from(record.weight()).clamp(1, 1000),
                backup,
                draining: false,
            });
        }
    }
    Ok((set, valid_until))
}
