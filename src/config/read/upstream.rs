//! `pools[].discovery` and `pools[].upstream`.

use super::*;

pub(super) fn read_discovery(d: &mut Decoder, node: &Node, path: &str) -> Option<DnsDiscovery> {
    let mut m = d.map(node, path)?;
    let dns = get_with(d, &mut m, "dns", |d, n, p| {
        let mut s = d.map(n, p)?;
        let name = required_string(d, &mut s, "name");
        let port = required(d, &mut s, "port", |d, n, p| {
            d.parse(n, p, "a port number 1-65535", |v| {
                v.parse::<u16>().ok().filter(|p| *p > 0)
            })
        });
        let interval = duration_within(
            d,
            &mut s,
            "interval",
            Duration::from_secs(30),
            DAY.nonzero(),
        );
        s.finish(d, |_| None);
        Some(DnsDiscovery {
            name: name?,
            port: port?,
            interval,
        })
    });
    m.finish(d, |_| None);
    dns
}

pub(super) fn read_upstream(d: &mut Decoder, node: &Node, path: &str) -> Option<UpstreamConfig> {
    let mut m = d.map(node, path)?;
    let protocol = choice(d, &mut m, "protocol", UpstreamProtocol::Http1);
    let tls = get_with(d, &mut m, "tls", |d, n, p| {
        let mut t = d.map(n, p)?;
        let v = UpstreamTls {
            sni: opt_string(d, &mut t, "sni"),
            verify: boolean(d, &mut t, "verify", true),
            ca_file: opt_path(d, &mut t, "ca_file"),
        };
        t.finish(d, |_| None);
        Some(v)
    });
    if let Some((key, e)) = validate::upstream_protocol(protocol, tls.is_some()) {
        d.error(m.key_pos(key), &m.child(key), e);
    }
    let proxy_protocol = choice(d, &mut m, "proxy_protocol", ProxyProtocolSend::None);
    m.finish(d, |k| matches!(k, "http3" | "quic").then_some(HTTP3));
    Some(UpstreamConfig {
        protocol,
        tls,
        proxy_protocol,
    })
}
