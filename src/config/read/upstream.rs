//! `pools[].upstream`.

use super::*;

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
    m.finish(d, |k| {
        matches!(k, "http3" | "quic")
            .then_some("HTTP/3 to backends is not supported (clients only: listeners[].http3)")
    });
    Some(UpstreamConfig {
        protocol,
        tls,
        proxy_protocol,
    })
}
