//! `pools[].discovery` (SPEC §12): `dns`, `dns_srv`, `docker` and `kubernetes`, each
//! optional, any combination added to the pool's static backends.

use super::*;

pub(super) fn read_discovery(d: &mut Decoder, node: &Node, path: &str) -> Option<DiscoveryConfig> {
    let mut m = d.map(node, path)?;
    let config = DiscoveryConfig {
        dns: get_with(d, &mut m, "dns", read_dns),
        dns_srv: get_with(d, &mut m, "dns_srv", read_dns_srv),
        docker: get_with(d, &mut m, "docker", read_docker),
        kubernetes: get_with(d, &mut m, "kubernetes", read_kubernetes),
    };
    m.finish(d, |_| None);
    Some(config)
}

fn interval(d: &mut Decoder, m: &mut Map) -> Duration {
    duration_within(d, m, "interval", Duration::from_secs(30), DAY.nonzero())
}

fn read_dns(d: &mut Decoder, node: &Node, path: &str) -> Option<DnsDiscovery> {
    let mut s = d.map(node, path)?;
    let name = required_string(d, &mut s, "name");
    let port = required(d, &mut s, "port", |d, n, p| {
        d.parse(n, p, "a port number 1-65535", |v| {
            v.parse::<u16>().ok().filter(|p| *p > 0)
        })
    });
    let interval = interval(d, &mut s);
    s.finish(d, |_| None);
    Some(DnsDiscovery {
        name: name?,
        port: port?,
        interval,
    })
}

fn read_dns_srv(d: &mut Decoder, node: &Node, path: &str) -> Option<DnsSrvDiscovery> {
    let mut s = d.map(node, path)?;
    let name = required_string(d, &mut s, "name");
    let interval = interval(d, &mut s);
    s.finish(d, |k| (k == "port").then_some("SRV records carry the port"));
    Some(DnsSrvDiscovery {
        name: name?,
        interval,
    })
}

/// A string key with a default; written empty is an error.
fn label(d: &mut Decoder, m: &mut Map, key: &'static str, default: &str) -> String {
    let pos = m.value_pos(key);
    match opt_string(d, m, key) {
        Some(v) if v.is_empty() => {
            d.error(pos, &m.child(key), "must not be empty");
            default.to_string()
        }
        Some(v) => v,
        None => default.to_string(),
    }
}

fn read_docker(d: &mut Decoder, node: &Node, path: &str) -> Option<DockerDiscovery> {
    let mut s = d.map(node, path)?;
    let docker = DockerDiscovery {
        socket: opt_path(d, &mut s, "socket")
            .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock")),
        label: label(d, &mut s, "label", "switchyard.pool"),
        port_label: label(d, &mut s, "port_label", "switchyard.port"),
        weight_label: label(d, &mut s, "weight_label", "switchyard.weight"),
        network: opt_string(d, &mut s, "network").filter(|n| !n.is_empty()),
    };
    s.finish(d, |_| None);
    Some(docker)
}

fn read_kubernetes(d: &mut Decoder, node: &Node, path: &str) -> Option<KubernetesDiscovery> {
    let mut s = d.map(node, path)?;
    let namespace = label(d, &mut s, "namespace", "default");
    let service = required_string(d, &mut s, "service");
    let port = get_with(d, &mut s, "port", |d, n, p| {
        let v = d.scalar(n, p, "a port name or number")?;
        if v.is_null() {
            return None;
        }
        if v.text.bytes().all(|b| b.is_ascii_digit()) {
            return match v.text.parse::<u16>().ok().filter(|p| *p > 0) {
                Some(n) => Some(SlicePort::Number(n)),
                None => {
                    d.error(
                        v.pos,
                        p,
                        format!("{:?} is not a port number 1-65535", v.text),
                    );
                    None
                }
            };
        }
        if v.text.is_empty() {
            d.error(v.pos, p, "must not be empty");
            return None;
        }
        Some(SlicePort::Name(v.text))
    });
    let kubeconfig = opt_path(d, &mut s, "kubeconfig");
    s.finish(d, |_| None);
    Some(KubernetesDiscovery {
        namespace,
        service: service?,
        port,
        kubeconfig,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{accepted, errors};
    use crate::config::*;
    use std::path::PathBuf;
    use std::time::Duration;

    const POOL: &str = "pools:\n  - name: web\n    discovery:\n";

    #[test]
    fn every_provider_reads_with_its_defaults() {
        let yaml = format!(
            "{POOL}      dns: {{ name: web.internal, port: 8080 }}\n      dns_srv: {{ name: _http._tcp.web.internal, interval: 5s }}\n      docker: {{}}\n      kubernetes: {{ service: web }}\n"
        );
        let d = accepted(&yaml).pools[0].discovery.clone();
        assert_eq!(d.dns.map(|d| d.interval), Some(Duration::from_secs(30)));
        assert_eq!(d.dns_srv.map(|d| d.interval), Some(Duration::from_secs(5)));
        assert_eq!(
            d.docker,
            Some(DockerDiscovery {
                socket: PathBuf::from("/var/run/docker.sock"),
                label: "switchyard.pool".into(),
                port_label: "switchyard.port".into(),
                weight_label: "switchyard.weight".into(),
                network: None,
            })
        );
        assert_eq!(
            d.kubernetes,
            Some(KubernetesDiscovery {
                namespace: "default".into(),
                service: "web".into(),
                port: None,
                kubeconfig: None,
            })
        );
    }

    #[test]
    fn a_slice_port_is_a_name_or_a_number() {
        let port = |p: &str| {
            let yaml = format!("{POOL}      kubernetes: {{ service: web, port: {p} }}\n");
            accepted(&yaml).pools[0]
                .discovery
                .kubernetes
                .clone()
                .and_then(|k| k.port)
        };
        assert_eq!(port("http"), Some(SlicePort::Name("http".into())));
        assert_eq!(port("8080"), Some(SlicePort::Number(8080)));
        assert_eq!(port("null"), None);
    }

    #[test]
    fn mistakes_are_refused_with_their_key_path() {
        let e = errors(&format!("{POOL}      kubernetes: {{ namespace: x }}\n"));
        assert_eq!(
            e[0],
            "t.yaml:4:19: pools[0].discovery.kubernetes.service: is required"
        );
        let e = errors(&format!(
            "{POOL}      kubernetes: {{ service: web, port: 0 }}\n"
        ));
        assert_eq!(
            e,
            ["t.yaml:4:41: pools[0].discovery.kubernetes.port: \"0\" is not a port number 1-65535"]
        );
        let e = errors(&format!("{POOL}      docker: {{ lable: x }}\n"));
        assert!(e[0].contains("pools[0].discovery.docker.lable"), "{e:?}");
        let e = errors(&format!(
            "{POOL}      dns_srv: {{ name: _x._tcp.y, port: 80 }}\n"
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("pools[0].discovery.dns_srv.port"), "{e:?}");
        let e = errors(&format!("{POOL}      consul: {{}}\n"));
        assert!(e[0].contains("pools[0].discovery.consul"), "{e:?}");
    }

    #[test]
    fn an_empty_discovery_is_no_source() {
        let e = errors("pools:\n  - name: web\n    discovery: {}\n");
        assert!(
            e.iter()
                .any(|l| l.contains("at least one backend or a discovery source")),
            "{e:?}"
        );
    }
}
