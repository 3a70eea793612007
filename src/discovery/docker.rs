//! Docker (or Podman's Docker-compatible API) discovery with bollard over the Unix
//! socket: running containers whose `label` equals the pool's name, at their IP on
//! `network` (else their first network by name), on the port in `port_label` (else their
//! only exposed port), weighted by `weight_label`. Follows `/events` (start, die, stop,
//! health_status) and lists the containers again after every event and every reconnect;
//! a container whose Docker health check reports unhealthy is drained.

use super::{DiscoveryError, Provider, Updates};
use crate::config::DockerDiscovery;
use crate::pool::Discovered;
use async_trait::async_trait;
use bollard::models::{ContainerSummary, ContainerSummaryHealthStatusEnum};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The wait before reconnecting to an engine that went away.
const RECONNECT: Duration = Duration::from_secs(1);
/// Seconds a request waits for the engine's response headers.
const REQUEST_TIMEOUT: u64 = 10;

pub struct Docker {
    pool: String,
    c: DockerDiscovery,
    /// Containers already warned about (no usable port or address), by id.
    warned: HashSet<String>,
}

/// The session ended because nobody listens any more.
struct Closed;

impl Docker {
    pub fn new(pool: &str, c: DockerDiscovery) -> Self {
        Docker {
            pool: pool.to_string(),
            c,
            warned: HashSet::new(),
        }
    }

    fn error(&self, e: bollard::errors::Error) -> DiscoveryError {
        DiscoveryError::Docker {
            socket: self.c.socket.display().to_string(),
            source: Box::new(e),
        }
    }

    fn filters(&self) -> HashMap<String, Vec<String>> {
        let label = format!("{}={}", self.c.label, self.pool);
        HashMap::from([("label".to_string(), vec![label])])
    }

    /// One connection: list, then follow events until the stream breaks.
    async fn session(&mut self, updates: &Updates) -> Result<Closed, DiscoveryError> {
        let socket = self.c.socket.to_string_lossy().into_owned();
        let client = bollard::Docker::connect_with_unix(
            &socket,
            REQUEST_TIMEOUT,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| self.error(e))?;
        let mut filters = self.filters();
        filters.insert("type".to_string(), vec!["container".to_string()]);
        // From a second before the list: an event between the list and the stream's
        // start is replayed, not missed (one more list at worst).
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs().saturating_sub(1).to_string())
            .ok();
        let mut events = client.events(Some(EventsOptions {
            since,
            filters: Some(filters),
            ..Default::default()
        }));
        let mut unhealthy: HashSet<String> = HashSet::new();
        if !updates.found(self.list(&client, &unhealthy).await?).await {
            return Ok(Closed);
        }
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| self.error(e))?;
            let action = event.action.unwrap_or_default();
            let id = event.actor.and_then(|a| a.id).unwrap_or_default();
            if let Some(status) = action.strip_prefix("health_status") {
                if status.trim_start_matches(':').trim() == "unhealthy" {
                    unhealthy.insert(id);
                } else {
                    unhealthy.remove(&id);
                }
            } else if !matches!(
                action.as_str(),
                "start" | "restart" | "die" | "stop" | "kill" | "pause" | "unpause" | "destroy"
            ) {
                continue;
            }
            if !updates.found(self.list(&client, &unhealthy).await?).await {
                return Ok(Closed);
            }
        }
        Err(DiscoveryError::DockerEventsEnded(socket))
    }

    async fn list(
        &mut self,
        client: &bollard::Docker,
        unhealthy: &HashSet<String>,
    ) -> Result<Vec<Discovered>, DiscoveryError> {
        let mut filters = self.filters();
        filters.insert("status".to_string(), vec!["running".to_string()]);
        let containers = client
            .list_containers(Some(ListContainersOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.error(e))?;
        Ok(containers
            .iter()
            .filter_map(|c| self.backend(c, unhealthy))
            .collect())
    }

    /// A running container as a backend, or `None` (warned once) when it has no usable
    /// address or port.
    fn backend(&mut self, c: &ContainerSummary, unhealthy: &HashSet<String>) -> Option<Discovered> {
        let id = c.id.clone().unwrap_or_default();
        let labels = c.labels.clone().unwrap_or_default();
        let found = address(c, self.c.network.as_deref()).and_then(|ip| {
            let port = match labels.get(&self.c.port_label) {
                Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0),
                None => only_port(c),
            }?;
            Some(SocketAddr::new(ip, port))
        });
        let Some(addr) = found else {
            if self.warned.insert(id.clone()) {
                log::warn!(
                    "discovery: pool {} docker: container {} has no address on {} or no port ({} label or a single exposed port); skipped",
                    self.pool,
                    short(&id),
                    self.c.network.as_deref().unwrap_or("any network"),
                    self.c.port_label
                );
            }
            return None;
        };
        let weight = match labels.get(&self.c.weight_label) {
            None => 1,
            Some(w) => match w.parse::<u32>().ok().filter(|w| (1..=1000).contains(w)) {
                Some(w) => w,
                None => {
                    if self.warned.insert(format!("{id}/weight")) {
                        log::warn!(
                            "discovery: pool {} docker: container {}: {}={w:?} is not 1-1000; using 1",
                            self.pool,
                            short(&id),
                            self.c.weight_label
                        );
                    }
                    1
                }
            },
        };
        let mut d = Discovered::serving(addr, weight);
        d.draining = unhealthy.contains(&id) || reports_unhealthy(c);
        Some(d)
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The container's IP on `network`, else on its first network by name.
fn address(c: &ContainerSummary, network: Option<&str>) -> Option<IpAddr> {
    let networks = c.network_settings.as_ref()?.networks.as_ref()?;
    let settings = match network {
        Some(n) => networks.get(n)?,
        None => {
            let first = networks.keys().min()?;
            networks.get(first)?
        }
    };
    settings.ip_address.as_deref()?.parse().ok()
}

/// The container's single exposed (private) port.
fn only_port(c: &ContainerSummary) -> Option<u16> {
    let mut ports: Vec<u16> = c.ports.iter().flatten().map(|p| p.private_port).collect();
    ports.sort_unstable();
    ports.dedup();
    match ports.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

fn reports_unhealthy(c: &ContainerSummary) -> bool {
    c.health
        .as_ref()
        .and_then(|h| h.status)
        .is_some_and(|s| s == ContainerSummaryHealthStatusEnum::UNHEALTHY)
        || c.status
            .as_deref()
            .is_some_and(|s| s.contains("(unhealthy)"))
}

#[async_trait]
impl Provider for Docker {
    async fn run(mut self: Box<Self>, updates: Updates) {
        loop {
            match self.session(&updates).await {
                Ok(Closed) => return,
                Err(e) => {
                    if !updates.failed(e).await {
                        return;
                    }
                }
            }
            tokio::time::sleep(RECONNECT).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerSummaryNetworkSettings, EndpointSettings, PortSummary};
    use std::path::PathBuf;

    fn provider(network: Option<&str>) -> Docker {
        Docker::new(
            "web",
            DockerDiscovery {
                socket: PathBuf::from("/run/docker.sock"),
                label: "switchyard.pool".into(),
                port_label: "switchyard.port".into(),
                weight_label: "switchyard.weight".into(),
                network: network.map(str::to_string),
            },
        )
    }

    fn container(
        labels: &[(&str, &str)],
        networks: &[(&str, &str)],
        ports: &[u16],
    ) -> ContainerSummary {
        ContainerSummary {
            id: Some("c0ffee".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            network_settings: Some(ContainerSummaryNetworkSettings {
                networks: Some(
                    networks
                        .iter()
                        .map(|(n, ip)| {
                            let settings = EndpointSettings {
                                ip_address: Some(ip.to_string()),
                                ..Default::default()
                            };
                            (n.to_string(), settings)
                        })
                        .collect(),
                ),
            }),
            ports: Some(
                ports
                    .iter()
                    .map(|p| PortSummary {
                        private_port: *p,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn address_port_and_weight_come_from_the_container() {
        let nets = [("front", "10.1.0.5"), ("back", "10.2.0.5")];
        let c = container(
            &[("switchyard.port", "8080"), ("switchyard.weight", "7")],
            &nets,
            &[80, 443],
        );
        let none = HashSet::new();
        let d = provider(Some("front")).backend(&c, &none);
        assert_eq!(
            d,
            Some(Discovered::serving("10.1.0.5:8080".parse().unwrap(), 7))
        );
        // Without `network`, the first network by name ("back").
        let d = provider(None).backend(&c, &none);
        assert_eq!(d.map(|d| d.addr.to_string()), Some("10.2.0.5:8080".into()));
    }

    #[test]
    fn the_single_exposed_port_serves_when_no_label_names_one() {
        let none = HashSet::new();
        let one = container(&[], &[("bridge", "172.17.0.2")], &[3000, 3000]);
        let d = provider(None).backend(&one, &none);
        assert_eq!(
            d.map(|d| d.addr.to_string()),
            Some("172.17.0.2:3000".into())
        );
        let two = container(&[], &[("bridge", "172.17.0.2")], &[3000, 3001]);
        assert_eq!(provider(None).backend(&two, &none), None, "which of two?");
        let elsewhere = container(
            &[("switchyard.port", "80")],
            &[("bridge", "172.17.0.2")],
            &[],
        );
        assert_eq!(
            provider(Some("backend")).backend(&elsewhere, &none),
            None,
            "not on that network"
        );
    }

    #[test]
    fn a_bad_weight_counts_as_1_and_unhealthy_drains() {
        let c = container(
            &[("switchyard.port", "80"), ("switchyard.weight", "0")],
            &[("n", "10.0.0.1")],
            &[],
        );
        let unhealthy = HashSet::from(["c0ffee".to_string()]);
        let d = provider(None).backend(&c, &unhealthy).unwrap();
        assert_eq!((d.weight, d.draining), (1, true));
        let mut c = c;
        c.status = Some("Up 3 minutes (unhealthy)".into());
        let d = provider(None).backend(&c, &HashSet::new()).unwrap();
        assert!(d.draining, "the list's status says so too");
    }
}
