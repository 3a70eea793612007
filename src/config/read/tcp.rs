//! `tcp_services[]`.

use super::*;

pub(super) fn read_tcp_service(
    d: &mut Decoder,
    node: &Node,
    path: &str,
) -> Option<TcpServiceConfig> {
    let mut m = d.map(node, path)?;
    d.spans.set(path, m.value_pos("name"));
    let name = required_string(d, &mut m, "name");
    let listen = listen_addr(d, &mut m, "listen");
    let protocol = choice(d, &mut m, "protocol", TcpProtocol::Tcp);
    d.spans.set(&m.child("pool"), m.value_pos("pool"));
    let pool = required_string(d, &mut m, "pool");
    let idle_timeout = duration(d, &mut m, "idle_timeout", Duration::from_secs(3600));
    let (max_connections, max_connections_per_ip) = super::limits::connection_caps(d, &mut m);
    let proxy_protocol = boolean(d, &mut m, "proxy_protocol", false);
    m.finish(d, |_| None);
    let (listen, listen_pos) = listen?;
    d.spans.set(&format!("{path}.listen"), listen_pos);
    Some(TcpServiceConfig {
        name: name?,
        listen,
        protocol,
        pool: pool?,
        idle_timeout,
        max_connections,
        max_connections_per_ip,
        proxy_protocol,
    })
}
