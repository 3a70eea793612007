//! Reads each SPEC §3 section from the YAML tree into the typed model, with every
//! default applied and every malformed value reported (see `raw`). This module holds the
//! typed key readers every section shares; one file per section holds its reader.

mod admin_roles;
mod cache;
mod discovery;
mod health;
mod limits;
mod listener;
mod pool;
mod route;
mod server;
mod tcp;
mod tracing;
mod traffic;
mod upstream;

pub use server::MAX_THREADS;

use super::keyword::Keyword;
use super::model::*;
use super::raw::{Decoder, Map, Pos};
use super::validate;
use super::value::*;
use http::header::HeaderName;
use ipnet::IpNet;
use marked_yaml::types::Node;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

const HTTP3: &str = "HTTP/3 is served by a TLS listener with `http3: true` (listeners[].http3)";

/// Reads the whole document (a mapping at the top level).
pub fn read_config(d: &mut Decoder, root: &Node) -> Option<Config> {
    let mut top = d.map(root, "")?;
    let server = top
        .get("server")
        .and_then(|n| server::read_server(d, n))
        .unwrap_or_default();
    let log = top
        .get("log")
        .and_then(|n| server::read_log(d, n))
        .unwrap_or_default();
    let admin = top.get("admin").and_then(|n| server::read_admin(d, n));
    let metrics = top.get("metrics").and_then(|n| server::read_metrics(d, n));
    let listeners = top
        .get("listeners")
        .map(|n| {
            d.list(
                n,
                "listeners",
                false,
                item("listeners", listener::read_listener),
            )
        })
        .unwrap_or_default();
    let pools = top
        .get("pools")
        .map(|n| d.list(n, "pools", false, item("pools", pool::read_pool)))
        .unwrap_or_default();
    let routes = top
        .get("routes")
        .map(|n| d.list(n, "routes", false, item("routes", route::read_route)))
        .unwrap_or_default();
    let tcp_services = top
        .get("tcp_services")
        .map(|n| {
            d.list(
                n,
                "tcp_services",
                false,
                item("tcp_services", tcp::read_tcp_service),
            )
        })
        .unwrap_or_default();
    let cluster = top.get("cluster").and_then(|n| server::read_cluster(d, n));
    let tracing = top.get("tracing").and_then(|n| tracing::read_tracing(d, n));
    let cache = top.get("cache").and_then(|n| cache::read_cache(d, n));
    top.finish(d, |k| matches!(k, "http3" | "quic").then_some(HTTP3));
    Some(Config {
        server,
        log,
        admin,
        metrics,
        listeners,
        pools,
        routes,
        tcp_services,
        cluster,
        tracing,
        cache,
    })
}

/// `read`, recording in the side table which entries of `list` made it into the model.
fn item<T>(
    list: &'static str,
    read: fn(&mut Decoder, &Node, &str) -> Option<T>,
) -> impl FnMut(&mut Decoder, &Node, &str) -> Option<T> {
    move |d, n, p| {
        let v = read(d, n, p)?;
        d.spans.item(list, p);
        Some(v)
    }
}

/// The list under `key` (empty when it is not written); `scalar_ok` takes a lone value
/// as a list of one.
fn key_list<T>(
    d: &mut Decoder,
    m: &mut Map,
    key: &'static str,
    scalar_ok: bool,
    item: impl FnMut(&mut Decoder, &Node, &str) -> Option<T>,
) -> Vec<T> {
    get_with(d, m, key, |d, n, path| {
        Some(d.list(n, path, scalar_ok, item))
    })
    .unwrap_or_default()
}

fn cidr_list(d: &mut Decoder, m: &mut Map, key: &'static str) -> Vec<IpNet> {
    key_list(d, m, key, false, |d, n, p| {
        d.parse(
            n,
            p,
            "a CIDR such as 10.0.0.0/8 or an IP address",
            parse_cidr,
        )
    })
}

fn opt_string(d: &mut Decoder, m: &mut Map, key: &'static str) -> Option<String> {
    let path = m.child(key);
    let node = m.get(key)?;
    let s = d.scalar(node, &path, "a string")?;
    (!s.is_null()).then_some(s.text)
}

fn opt_path(d: &mut Decoder, m: &mut Map, key: &'static str) -> Option<PathBuf> {
    opt_string(d, m, key).map(PathBuf::from)
}

/// A key that must be written: "is required" at the mapping when it is not.
fn required<T>(
    d: &mut Decoder,
    m: &mut Map,
    key: &'static str,
    read: impl FnOnce(&mut Decoder, &Node, &str) -> Option<T>,
) -> Option<T> {
    let path = m.child(key);
    match m.get(key) {
        Some(n) => read(d, n, &path),
        None => {
            d.error(m.pos, &path, "is required");
            None
        }
    }
}

fn required_string(d: &mut Decoder, m: &mut Map, key: &'static str) -> Option<String> {
    let key_pos = m.key_pos(key);
    required(d, m, key, |d, n, path| {
        let s = d.string(n, path)?;
        if s.is_empty() {
            d.error(key_pos, path, "must not be empty");
            return None;
        }
        Some(s)
    })
}

/// A `{header-name: value}` mapping; `value` reads each value.
fn header_map<T>(
    d: &mut Decoder,
    n: &Node,
    p: &str,
    mut value: impl FnMut(&mut Decoder, &Node, &str) -> Option<T>,
) -> Option<Vec<(HeaderName, T)>> {
    let Some(map) = n.as_mapping() else {
        d.error(Pos::of(n.span()), p, "expected a mapping of header: value");
        return None;
    };
    let mut out = Vec::new();
    for (k, v) in map.iter() {
        let kp = format!("{p}.{}", k.as_str());
        let name = parse_header_name(k.as_str());
        if name.is_none() {
            d.error(
                Pos::of(k.span()),
                &kp,
                format!("{:?} is not a valid header name", k.as_str()),
            );
        }
        if let (Some(name), Some(value)) = (name, value(d, v, &kp)) {
            out.push((name, value));
        }
    }
    Some(out)
}

fn get_with<T>(
    d: &mut Decoder,
    m: &mut Map,
    key: &'static str,
    read: impl FnOnce(&mut Decoder, &Node, &str) -> Option<T>,
) -> Option<T> {
    let path = m.child(key);
    m.get(key).and_then(|n| read(d, n, &path))
}

/// The longest duration any key accepts: longer ones are typos, and `Instant + d` would
/// overflow (humantime reads `99999999999999h` without complaint).
pub const MAX_DURATION: Limit = Limit {
    max: Duration::from_secs(365 * 86_400),
    text: "365d",
    nonzero: false,
};

/// At most a day: drain periods and per-request timeouts.
pub const DAY: Limit = Limit {
    max: Duration::from_secs(86_400),
    text: "24h",
    nonzero: false,
};

/// The range a duration key accepts.
#[derive(Clone, Copy)]
pub struct Limit {
    max: Duration,
    text: &'static str,
    nonzero: bool,
}
impl Limit {
    /// The same limit, with 0 refused.
    pub const fn nonzero(self) -> Limit {
        Limit {
            nonzero: true,
            ..self
        }
    }

    /// Reports `v` (written at `pos`) when it is out of range; true when it is in range.
    fn check(self, d: &mut Decoder, pos: Pos, path: &str, v: Duration) -> bool {
        if self.nonzero && v.is_zero() {
            d.error(pos, path, "must be greater than 0");
            false
        } else if v > self.max {
            d.error(pos, path, format!("must be at most {}", self.text));
            false
        } else {
            true
        }
    }
}

/// An optional duration key within `limit`.
fn opt_duration(
    d: &mut Decoder,
    m: &mut Map,
    key: &'static str,
    expected: &str,
    limit: Limit,
) -> Option<Duration> {
    let pos = m.value_pos(key);
    get_with(d, m, key, |d, n, p| {
        let v = d.parse(n, p, expected, parse_duration)?;
        limit.check(d, pos, p, v).then_some(v)
    })
}

fn duration(d: &mut Decoder, m: &mut Map, key: &'static str, default: Duration) -> Duration {
    duration_within(d, m, key, default, MAX_DURATION)
}

fn duration_within(
    d: &mut Decoder,
    m: &mut Map,
    key: &'static str,
    default: Duration,
    limit: Limit,
) -> Duration {
    opt_duration(d, m, key, "a duration such as 250ms, 5s, 2m or 1h", limit).unwrap_or(default)
}

fn boolean(d: &mut Decoder, m: &mut Map, key: &'static str, default: bool) -> bool {
    get_with(d, m, key, |d, n, p| d.bool(n, p)).unwrap_or(default)
}

fn bounded(
    d: &mut Decoder,
    m: &mut Map,
    key: &'static str,
    default: u32,
    min: u32,
    max: u32,
) -> u32 {
    get_with(d, m, key, |d, n, p| whole(d, n, p, min, max)).unwrap_or(default)
}

/// A whole number from `min` to `max`.
fn whole(d: &mut Decoder, n: &Node, p: &str, min: u32, max: u32) -> Option<u32> {
    let s = d.scalar(n, p, "a whole number")?;
    match s.text.parse::<u32>() {
        Ok(v) if (min..=max).contains(&v) => Some(v),
        _ => {
            d.error(
                s.pos,
                p,
                format!("{:?} is not a whole number from {min} to {max}", s.text),
            );
            None
        }
    }
}

/// A keyword key; the error lists every spelling ("one of a | b").
fn choice<T: Keyword>(d: &mut Decoder, m: &mut Map, key: &'static str, default: T) -> T {
    get_with(d, m, key, |d, n, p| {
        d.parse(n, p, &T::expected(), T::from_name)
    })
    .unwrap_or(default)
}

fn name_list(d: &mut Decoder, m: &mut Map, key: &'static str, scalar_ok: bool) -> Vec<String> {
    key_list(d, m, key, scalar_ok, |d, n, p| d.string(n, p))
}

fn listen_addr(d: &mut Decoder, m: &mut Map, key: &'static str) -> Option<(SocketAddr, Pos)> {
    required(d, m, key, |d, n, path| {
        let s = d.scalar(n, path, "ip:port")?;
        if s.text.starts_with("quic") || s.text.starts_with("udp") {
            d.error(s.pos, path, HTTP3);
            return None;
        }
        match parse_listen(&s.text) {
            Some(a) => Some((a, s.pos)),
            None => {
                d.error(
                    s.pos,
                    path,
                    format!("{:?} is not ip:port (e.g. 0.0.0.0:80 or [::]:443)", s.text),
                );
                None
            }
        }
    })
}
