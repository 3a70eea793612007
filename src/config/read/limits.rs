//! `listeners[].limits` and the byte-count keys (`max_body_bytes`) that routes share.

use super::*;

/// Pingora's HTTP/1 reader refuses header sections above 1 MiB itself.
const MAX_HEADER_SECTION: u32 = 1024 * 1024;
/// Pingora parses at most this many header lines (httparse's array in pingora-core).
pub const MAX_HEADER_LINES: u32 = 256;
const MAX_CONNECTIONS: u32 = 10_000_000;

pub(super) fn read_limits(d: &mut Decoder, node: &Node, path: &str) -> Option<ListenerLimits> {
    let mut m = d.map(node, path)?;
    let def = ListenerLimits::default();
    let limits = ListenerLimits {
        header_timeout: duration_within(
            d,
            &mut m,
            "header_timeout",
            def.header_timeout,
            DAY.nonzero(),
        ),
        keepalive_timeout: duration_within(
            d,
            &mut m,
            "keepalive_timeout",
            def.keepalive_timeout,
            DAY,
        ),
        body_timeout: duration_within(d, &mut m, "body_timeout", def.body_timeout, DAY.nonzero()),
        max_header_bytes: bounded(
            d,
            &mut m,
            "max_header_bytes",
            def.max_header_bytes,
            1024,
            MAX_HEADER_SECTION,
        ),
        max_headers: bounded(
            d,
            &mut m,
            "max_headers",
            def.max_headers,
            1,
            MAX_HEADER_LINES,
        ),
        max_body_bytes: byte_count(d, &mut m, "max_body_bytes").unwrap_or(def.max_body_bytes),
        max_connections: bounded(d, &mut m, "max_connections", 0, 0, MAX_CONNECTIONS),
        max_connections_per_ip: bounded(d, &mut m, "max_connections_per_ip", 0, 0, MAX_CONNECTIONS),
        max_requests_per_connection: bounded(
            d,
            &mut m,
            "max_requests_per_connection",
            0,
            0,
            u32::MAX,
        ),
        h2_max_concurrent_streams: bounded(
            d,
            &mut m,
            "h2_max_concurrent_streams",
            def.h2_max_concurrent_streams,
            1,
            10_000,
        ),
    };
    m.finish(d, |_| None);
    Some(limits)
}

/// The connection caps a `tcp_services[]` entry shares with listeners.
pub(super) fn connection_caps(d: &mut Decoder, m: &mut Map) -> (u32, u32) {
    (
        bounded(d, m, "max_connections", 0, 0, MAX_CONNECTIONS),
        bounded(d, m, "max_connections_per_ip", 0, 0, MAX_CONNECTIONS),
    )
}

/// A byte count: a whole number of bytes, 0 meaning unlimited.
pub(super) fn byte_count(d: &mut Decoder, m: &mut Map, key: &'static str) -> Option<u64> {
    get_with(d, m, key, |d, n, p| {
        let s = d.scalar(n, p, "a whole number of bytes")?;
        match s.text.parse::<u64>() {
            Ok(v) if v <= 1 << 53 => Some(v),
            _ => {
                d.error(
                    s.pos,
                    p,
                    format!(
                        "{:?} is not a whole number of bytes (0 = unlimited)",
                        s.text
                    ),
                );
                None
            }
        }
    })
}
