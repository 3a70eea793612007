//! Kubernetes discovery with kube-runtime's watcher over `discovery.k8s.io/v1`
//! EndpointSlices labelled `kubernetes.io/service-name=<service>` in `namespace`: ready
//! endpoints serve, terminating ones drain, others (and removed ones) leave. The watcher
//! resumes from the last resource version and lists again on `410 Gone`. The client is
//! configured from `kubeconfig` when set, else the in-cluster service account, else
//! `$KUBECONFIG` (or ~/.kube/config).

use super::{DiscoveryError, Provider, Updates};
use crate::config::{KubernetesDiscovery, SlicePort};
use crate::pool::Discovered;
use async_trait::async_trait;
use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Config};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The wait before building the client again after a configuration failure.
const RETRY: Duration = Duration::from_secs(5);

pub struct Kubernetes(pub KubernetesDiscovery);

#[async_trait]
impl Provider for Kubernetes {
    async fn run(self: Box<Self>, updates: Updates) {
        let c = self.0;
        let client = loop {
            match client(&c).await {
                Ok(client) => break client,
                Err(e) => {
                    if !updates.failed(e).await {
                        return;
                    }
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        let api: Api<EndpointSlice> = Api::namespaced(client, &c.namespace);
        let selector = format!("kubernetes.io/service-name={}", c.service);
        let mut events = watcher::watcher(api, watcher::Config::default().labels(&selector))
            .default_backoff()
            .boxed();
        let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
        let mut listing: Option<BTreeMap<String, EndpointSlice>> = None;
        // After a failure, the next event reports the set again (the end of the outage).
        let mut failing = false;
        while let Some(event) = events.next().await {
            let recovered = event.is_ok() && std::mem::take(&mut failing);
            let changed = match event {
                Ok(Event::Apply(s)) => {
                    slices.insert(slice_name(&s), s);
                    true
                }
                Ok(Event::Delete(s)) => {
                    slices.remove(&slice_name(&s));
                    true
                }
                Ok(Event::Init) => {
                    listing = Some(BTreeMap::new());
                    false
                }
                Ok(Event::InitApply(s)) => {
                    if let Some(l) = listing.as_mut() {
                        l.insert(slice_name(&s), s);
                    }
                    false
                }
                Ok(Event::InitDone) => {
                    slices = listing.take().unwrap_or_default();
                    true
                }
                // An expired resource version: the watcher lists again, as designed.
                Err(watcher::Error::WatchError(e)) if e.code == 410 => {
                    log::debug!(
                        "discovery: kubernetes watch expired ({}); listing again",
                        e.message
                    );
                    false
                }
                Err(e) => {
                    failing = true;
                    if !updates
                        .failed(DiscoveryError::Kubernetes(Box::new(e)))
                        .await
                    {
                        return;
                    }
                    false
                }
            };
            // Mid-list the set is not known yet; InitDone reports it.
            let settled = listing.is_none();
            if (changed || recovered && settled)
                && !updates.found(backends(&slices, c.port.as_ref())).await
            {
                return;
            }
        }
    }
}

fn slice_name(s: &EndpointSlice) -> String {
    s.metadata.name.clone().unwrap_or_default()
}

async fn client(c: &KubernetesDiscovery) -> Result<Client, DiscoveryError> {
    let bad_config = |e| DiscoveryError::Kubeconfig(Box::new(e));
    let options = KubeConfigOptions::default();
    let config = match &c.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(bad_config)?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(bad_config)?
        }
        None => match Config::incluster() {
            Ok(config) => config,
            Err(_) => Config::from_kubeconfig(&options)
                .await
                .map_err(bad_config)?,
        },
    };
    Client::try_from(config).map_err(|e| DiscoveryError::KubeClient(Box::new(e)))
}

/// Every ready or terminating endpoint of `slices` on the chosen port.
fn backends(slices: &BTreeMap<String, EndpointSlice>, port: Option<&SlicePort>) -> Vec<Discovered> {
    let mut set = Vec::new();
    for slice in slices.values() {
        if slice.address_type == "FQDN" {
            continue;
        }
        let Some(port) = slice_port(slice, port) else {
            continue;
        };
        for e in &slice.endpoints {
            let conditions = e.conditions.clone().unwrap_or_default();
            // Per the API: a missing `ready` counts as ready, a missing `terminating` as not.
            let terminating = conditions.terminating == Some(true);
            let ready = conditions.ready.unwrap_or(true) && !terminating;
            if !ready && !terminating {
                continue;
            }
            for ip in e.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                let mut d = Discovered::serving(SocketAddr::new(ip, port), 1);
                d.draining = terminating;
                set.push(d);
            }
        }
    }
    set
}

/// The slice's port with `wanted`'s name or number, or its only port when unset.
fn slice_port(slice: &EndpointSlice, wanted: Option<&SlicePort>) -> Option<u16> {
    let ports = slice.ports.as_deref().unwrap_or_default();
    let found = match wanted {
        Some(SlicePort::Name(n)) => ports.iter().find(|p| p.name.as_deref() == Some(n)),
        Some(SlicePort::Number(n)) => ports.iter().find(|p| p.port == Some(i32::from(*n))),
        None => match ports {
            [one] => Some(one),
            _ => None,
        },
    }?;
    found
        .port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

    fn endpoint(ip: &str, ready: Option<bool>, terminating: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready,
                serving: None,
                terminating,
            }),
            ..Default::default()
        }
    }

    fn slice(ports: &[(&str, i32)], endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: Some(n.to_string()),
                        port: Some(*p),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn ready_serve_terminating_drain_others_leave() {
        let s = slice(
            &[("http", 8080)],
            vec![
                endpoint("10.0.0.1", Some(true), Some(false)),
                endpoint("10.0.0.2", None, None),
                endpoint("10.0.0.3", Some(false), Some(true)),
                endpoint("10.0.0.4", Some(false), None),
            ],
        );
        let slices = BTreeMap::from([("a".to_string(), s)]);
        let found = backends(&slices, Some(&SlicePort::Name("http".into())));
        let got: Vec<(String, bool)> = found
            .iter()
            .map(|d| (d.addr.to_string(), d.draining))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.1:8080".to_string(), false),
                ("10.0.0.2:8080".to_string(), false),
                ("10.0.0.3:8080".to_string(), true),
            ]
        );
    }

    #[test]
    fn the_port_by_name_by_number_or_the_only_one() {
        let two = slice(&[("metrics", 9090), ("http", 8080)], Vec::new());
        let name = |n: &str| SlicePort::Name(n.into());
        assert_eq!(slice_port(&two, Some(&name("http"))), Some(8080));
        assert_eq!(slice_port(&two, Some(&SlicePort::Number(9090))), Some(9090));
        assert_eq!(slice_port(&two, Some(&name("grpc"))), None);
        assert_eq!(slice_port(&two, None), None, "two ports, none named");
        let one = slice(&[("", 7000)], Vec::new());
        assert_eq!(slice_port(&one, None), Some(7000));
    }

    #[test]
    fn fqdn_slices_are_skipped() {
        let mut s = slice(
            &[("http", 80)],
            vec![endpoint("web.example", Some(true), None)],
        );
        s.address_type = "FQDN".into();
        let slices = BTreeMap::from([("a".to_string(), s)]);
        assert!(backends(&slices, None).is_empty());
    }
}
