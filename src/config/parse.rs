//! Reads each SPEC §3 section from the YAML tree into the typed model, with every
//! default applied and every malformed value reported (see `decode`).

use super::decode::{Decoder, Map, Pos};
use super::model::*;
use super::value::BackendAddr;
use http::header::{HeaderName, HeaderValue};
use http::Method;
use ipnet::IpNet;
use marked_yaml::types::Node;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The most worker threads a service may ask for (0 = one per CPU).
pub const MAX_THREADS: usize = 1024;

const HTTP3: &str = "HTTP/3 (QUIC) is not supported; remove this key";

/// Reads the whole document (a mapping at the top level).
pub fn read_config(d: &mut Decoder, root: &Node) -> Option<Config> {
    let mut top = d.map(root, "")?;
    let server = top
        .get("server")
        .and_then(|n| read_server(d, n))
        .unwrap_or_default();
    let log = top
        .get("log")
        .and_then(|n| read_log(d, n))
        .unwrap_or_default();
    let admin = top.get("admin").and_then(|n| read_admin(d, n));
    let metrics = top.get("metrics").and_then(|n| read_metrics(d, n));
    let listeners = top
        .get("listeners")
        .map(|n| d.list(n, "listeners", false, item("listeners", read_listener)))
        .unwrap_or_default();
    let pools = top
        .get("pools")
        .map(|n| d.list(n, "pools", false, item("pools", read_pool)))
        .unwrap_or_default();
    let routes = top
        .get("routes")
        .map(|n| d.list(n, "routes", false, item("routes", read_route)))
        .unwrap_or_default();
    let tcp_services = top
        .get("tcp_services")
        .map(|n| {
            d.list(
                n,
                "tcp_services",
                false,
                item("tcp_services", read_tcp_service),
            )
        })
        .unwrap_or_default();
    let cluster = top.get("cluster").and_then(|n| read_cluster(d, n));
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

// ---------------------------------------------------------------------------
// value parsers shared by the sections

pub fn parse_duration(s: &str) -> Option<Duration> {
    if !s.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    humantime::parse_duration(s).ok()
}

/// A backend address: `host:port` in canonical form (see [`BackendAddr`]) and the
/// socket address it resolves to (the first one). The config file and the admin API
/// both go through here.
pub fn backend_address(s: &str) -> Result<(String, SocketAddr), String> {
    let a: BackendAddr = s.parse()?;
    let addr = a.resolve()?;
    Ok((a.to_string(), addr))
}

/// [`backend_address`] without the canonical name.
pub fn resolve_backend(s: &str) -> Result<SocketAddr, String> {
    backend_address(s).map(|(_, addr)| addr)
}

/// A listen address: an IP literal and a port (names would bind unpredictably).
fn parse_listen(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>().ok().filter(|a| a.port() != 0)
}

fn parse_cidr(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

fn cidr_list(d: &mut Decoder, m: &mut Map, key: &'static str) -> Vec<IpNet> {
    let path = m.child(key);
    m.get(key)
        .map(|n| {
            d.list(n, &path, false, |d, n, p| {
                d.parse(
                    n,
                    p,
                    "a CIDR such as 10.0.0.0/8 or an IP address",
                    parse_cidr,
                )
            })
        })
        .unwrap_or_default()
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

fn required_string(d: &mut Decoder, m: &mut Map, key: &'static str) -> Option<String> {
    let path = m.child(key);
    match m.get(key) {
        Some(n) => {
            let s = d.string(n, &path)?;
            if s.is_empty() {
                d.error(m.key_pos(key), &path, "must not be empty");
                return None;
            }
            Some(s)
        }
        None => {
            d.error(m.pos, &path, "is required");
            None
        }
    }
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
    get_with(d, m, key, |d, n, p| {
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
    })
    .unwrap_or(default)
}

/// A keyword key; the error lists every spelling ("one of a | b").
fn choice<T: Keyword>(d: &mut Decoder, m: &mut Map, key: &'static str, default: T) -> T {
    get_with(d, m, key, |d, n, p| {
        d.parse(n, p, &T::expected(), T::from_name)
    })
    .unwrap_or(default)
}

fn name_list(d: &mut Decoder, m: &mut Map, key: &'static str, scalar_ok: bool) -> Vec<String> {
    let path = m.child(key);
    m.get(key)
        .map(|n| d.list(n, &path, scalar_ok, |d, n, p| d.string(n, p)))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// sections

fn read_server(d: &mut Decoder, node: &Node) -> Option<ServerConfig> {
    let mut m = d.map(node, "server")?;
    let def = ServerConfig::default();
    let threads = get_with(d, &mut m, "threads", |d, n, p| {
        d.parse(
            n,
            p,
            &format!("a whole number from 0 (one per CPU) to {MAX_THREADS}"),
            |s| s.parse::<usize>().ok().filter(|t| *t <= MAX_THREADS),
        )
    })
    .unwrap_or(0);
    let s = ServerConfig {
        threads,
        pid_file: opt_path(d, &mut m, "pid_file").unwrap_or(def.pid_file),
        upgrade_sock: opt_path(d, &mut m, "upgrade_sock").unwrap_or(def.upgrade_sock),
        user: opt_string(d, &mut m, "user"),
        group: opt_string(d, &mut m, "group"),
        grace_period: duration_within(d, &mut m, "grace_period", def.grace_period, DAY),
        shutdown_timeout: duration_within(d, &mut m, "shutdown_timeout", def.shutdown_timeout, DAY),
        trusted_proxies: cidr_list(d, &mut m, "trusted_proxies"),
        deny: cidr_list(d, &mut m, "deny"),
    };
    m.finish(d, |_| None);
    Some(s)
}

fn read_log(d: &mut Decoder, node: &Node) -> Option<LogConfig> {
    let mut m = d.map(node, "log")?;
    let level = get_with(d, &mut m, "level", |d, n, p| {
        d.parse(n, p, &LogLevel::expected(), parse_level)
    })
    .unwrap_or(log::LevelFilter::Info);
    let access_log = get_with(d, &mut m, "access_log", |d, n, p| {
        let s = d.string(n, p)?;
        if s.is_empty() {
            let expected = AccessLogKeyword::NAMES.join(" | ");
            d.error(
                Pos::default(),
                p,
                format!("expected {expected} | a file path"),
            );
            return None;
        }
        Some(AccessLogTarget::from_text(&s))
    })
    .unwrap_or(AccessLogTarget::Stdout);
    m.finish(d, |_| None);
    Some(LogConfig { level, access_log })
}

/// A log level, case-insensitively (`log.level`, `$SWITCHYARD_LOG`).
pub fn parse_level(s: &str) -> Option<log::LevelFilter> {
    LogLevel::from_name(&s.to_ascii_lowercase()).map(LogLevel::filter)
}

fn listen_addr(d: &mut Decoder, m: &mut Map, key: &'static str) -> Option<(SocketAddr, Pos)> {
    let path = m.child(key);
    let pos = m.key_pos(key);
    match m.get(key) {
        Some(n) => {
            let s = d.scalar(n, &path, "ip:port")?;
            if s.text.starts_with("quic") || s.text.starts_with("udp") {
                d.error(s.pos, &path, HTTP3);
                return None;
            }
            match parse_listen(&s.text) {
                Some(a) => Some((a, s.pos)),
                None => {
                    d.error(
                        s.pos,
                        &path,
                        format!("{:?} is not ip:port (e.g. 0.0.0.0:80 or [::]:443)", s.text),
                    );
                    None
                }
            }
        }
        None => {
            d.error(pos, &path, "is required");
            None
        }
    }
}

fn read_admin(d: &mut Decoder, node: &Node) -> Option<AdminConfig> {
    let mut m = d.map(node, "admin")?;
    let pos = m.pos;
    d.spans.set("admin", pos);
    let listen = listen_addr(d, &mut m, "listen");
    let tokens = name_list(d, &mut m, "tokens", false);
    let allow_given = m.get("allow").is_some();
    let mut allow = cidr_list(d, &mut m, "allow");
    if !allow_given {
        allow = vec!["127.0.0.0/8".parse().ok()?, "::1/128".parse().ok()?];
    }
    let state_file = opt_path(d, &mut m, "state_file")
        .unwrap_or_else(|| "/var/lib/switchyard/state.json".into());
    if let Some((addr, lpos)) = listen {
        if tokens.is_empty() && !addr.ip().is_loopback() {
            d.error(
                lpos,
                "admin.tokens",
                "at least one token is required when admin.listen is not a loopback address",
            );
        }
    }
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            d.error(
                pos,
                &format!("admin.tokens[{i}]"),
                "a token must not be empty",
            );
        }
    }
    m.finish(d, |_| None);
    Some(AdminConfig {
        listen: listen?.0,
        tokens,
        allow,
        state_file,
    })
}

fn read_metrics(d: &mut Decoder, node: &Node) -> Option<MetricsConfig> {
    let mut m = d.map(node, "metrics")?;
    d.spans.set("metrics", m.pos);
    let listen = listen_addr(d, &mut m, "listen");
    m.finish(d, |_| None);
    Some(MetricsConfig { listen: listen?.0 })
}

fn read_listener(d: &mut Decoder, node: &Node, path: &str) -> Option<ListenerConfig> {
    let mut m = d.map(node, path)?;
    d.spans.set(path, m.value_pos("name"));
    let name = required_string(d, &mut m, "name");
    let listen = listen_addr(d, &mut m, "listen");
    let tls = get_with(d, &mut m, "tls", read_tls);
    let http2 = boolean(d, &mut m, "http2", tls.is_some());
    m.finish(d, |k| {
        matches!(k, "http3" | "quic" | "alt_svc").then_some(HTTP3)
    });
    Some(ListenerConfig {
        name: name?,
        listen: listen?.0,
        http2,
        tls,
    })
}

fn read_tls(d: &mut Decoder, node: &Node, path: &str) -> Option<TlsConfig> {
    let mut m = d.map(node, path)?;
    let certificates = get_with(d, &mut m, "certificates", |d, n, p| {
        Some(d.list(n, p, false, |d, n, p| {
            let mut c = d.map(n, p)?;
            d.spans.set(p, c.pos);
            let cert_file = required_string(d, &mut c, "cert_file");
            let key_file = required_string(d, &mut c, "key_file");
            c.finish(d, |_| None);
            Some(CertificateFiles {
                cert_file: cert_file?.into(),
                key_file: key_file?.into(),
            })
        }))
    })
    .unwrap_or_default();
    let acme = get_with(d, &mut m, "acme", read_acme);
    let client_ca_file = opt_path(d, &mut m, "client_ca_file");
    let default_auth = if client_ca_file.is_some() {
        ClientAuth::Require
    } else {
        ClientAuth::None
    };
    let client_auth = choice(d, &mut m, "client_auth", default_auth);
    if client_auth != ClientAuth::None && client_ca_file.is_none() {
        d.error(
            m.key_pos("client_auth"),
            &m.child("client_auth"),
            "needs client_ca_file",
        );
    }
    let min_version = choice(d, &mut m, "min_version", TlsVersion::Tls12);
    if certificates.is_empty() && acme.is_none() {
        d.error(m.pos, path, "needs certificates or acme");
    }
    m.finish(d, |_| None);
    Some(TlsConfig {
        certificates,
        acme,
        client_ca_file,
        client_auth,
        min_version,
    })
}

fn read_acme(d: &mut Decoder, node: &Node, path: &str) -> Option<AcmeConfig> {
    let mut m = d.map(node, path)?;
    let email = opt_string(d, &mut m, "email");
    if email
        .as_deref()
        .is_some_and(|e| !e.contains('@') || e.contains(char::is_whitespace))
    {
        d.error(
            m.key_pos("email"),
            &m.child("email"),
            "not an email address",
        );
    }
    let directory = opt_string(d, &mut m, "directory")
        .unwrap_or_else(|| "https://acme-v02.api.letsencrypt.org/directory".into());
    let domains: Vec<String> = name_list(d, &mut m, "domains", false)
        .into_iter()
        .map(|n| n.to_ascii_lowercase())
        .collect();
    if domains.is_empty() {
        d.error(
            m.pos,
            &m.child("domains"),
            "at least one domain is required",
        );
    }
    for (i, name) in domains.iter().enumerate() {
        let problem = if name.starts_with("*.") {
            Some("wildcard names need the DNS-01 challenge, which Switchyard does not do; list each name")
        } else if !is_dns_name(name) {
            Some("not a DNS name (letters, digits, '-' and '.')")
        } else {
            None
        };
        if let Some(problem) = problem {
            let pos = m.key_pos("domains");
            d.error(pos, &format!("{}[{i}]", m.child("domains")), problem);
        }
    }
    let storage =
        opt_path(d, &mut m, "storage").unwrap_or_else(|| "/var/lib/switchyard/acme".into());
    let ca_file = opt_path(d, &mut m, "ca_file");
    m.finish(d, |_| None);
    Some(AcmeConfig {
        email,
        directory,
        domains,
        storage,
        ca_file,
    })
}

/// Letters, digits and inner hyphens in dot-separated labels. A single label (`localhost`)
/// is left for the CA to accept or refuse.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A backend, where its address is written and its key path.
fn read_backend(d: &mut Decoder, node: &Node, path: &str) -> Option<(BackendConfig, Pos, String)> {
    let mut m = d.map(node, path)?;
    let addr_path = m.child("address");
    let address = match m.get("address") {
        Some(n) => {
            d.scalar(n, &addr_path, "host:port")
                .and_then(|s| match backend_address(&s.text) {
                    Ok(v) => Some((v, s.pos)),
                    Err(e) => {
                        d.error(s.pos, &addr_path, e);
                        None
                    }
                })
        }
        None => {
            d.error(m.pos, &addr_path, "is required");
            None
        }
    };
    let weight = bounded(d, &mut m, "weight", 1, 1, 1000);
    let backup = boolean(d, &mut m, "backup", false);
    m.finish(d, |_| None);
    let ((address, addr), pos) = address?;
    Some((
        BackendConfig {
            address,
            addr,
            weight,
            backup,
        },
        pos,
        path.to_string(),
    ))
}

fn read_pool(d: &mut Decoder, node: &Node, path: &str) -> Option<PoolConfig> {
    let mut m = d.map(node, path)?;
    d.spans.set(path, m.value_pos("name"));
    let name = required_string(d, &mut m, "name");
    let algorithm = choice(d, &mut m, "algorithm", Algorithm::RoundRobin);
    let hash_key_pos = m.key_pos("hash_key");
    let hash_key = get_with(d, &mut m, "hash_key", |d, n, p| {
        d.parse(
            n,
            p,
            "client_ip | uri | path | header:NAME | cookie:NAME",
            parse_hash_key,
        )
    });
    if hash_key.is_some() && algorithm != Algorithm::ConsistentHash {
        d.warn(
            hash_key_pos,
            &m.child("hash_key"),
            format!(
                "ignored: algorithm {} does not use a hash key",
                algorithm.as_str()
            ),
        );
    }
    let backends = get_with(d, &mut m, "backends", |d, n, p| {
        Some(d.list(n, p, false, read_backend))
    })
    .unwrap_or_default();
    let backends = distinct_backends(d, backends);
    let discovery = get_with(d, &mut m, "discovery", read_discovery);
    let health_check = get_with(d, &mut m, "health_check", read_health_check);
    let circuit_breaker = get_with(d, &mut m, "circuit_breaker", read_circuit_breaker);
    let sticky = get_with(d, &mut m, "sticky", |d, n, p| {
        let mut s = d.map(n, p)?;
        let cookie = match s.get("cookie") {
            None => "SWITCHYARD_STICKY".to_string(),
            Some(n) => {
                let p = s.child("cookie");
                let pos = s.value_pos("cookie");
                let scalar = d.scalar(n, &p, "a cookie name");
                let reported = scalar.is_none();
                let name = scalar
                    .filter(|s| !s.is_null())
                    .map(|s| s.text)
                    .unwrap_or_default();
                if !reported && name.is_empty() {
                    d.error(pos, &p, "must not be empty");
                } else if !reported && !is_token(&name) {
                    d.error(
                        pos,
                        &p,
                        format!("{name:?} is not a valid cookie name (an RFC 6265 token: letters, digits and !#$%&'*+-.^_`|~)"),
                    );
                }
                name
            }
        };
        let ttl = opt_duration(
            d,
            &mut s,
            "ttl",
            "a duration such as 30m or 1h",
            MAX_DURATION.nonzero(),
        );
        s.finish(d, |_| None);
        Some(StickyConfig { cookie, ttl })
    });
    let retries = bounded(d, &mut m, "retries", 1, 0, 100);
    let timeouts = get_with(d, &mut m, "timeouts", |d, n, p| {
        let mut t = d.map(n, p)?;
        let def = Timeouts::default();
        let v = Timeouts {
            connect: duration_within(d, &mut t, "connect", def.connect, DAY.nonzero()),
            read: duration_within(d, &mut t, "read", def.read, DAY.nonzero()),
            write: duration_within(d, &mut t, "write", def.write, DAY.nonzero()),
            idle: duration_within(d, &mut t, "idle", def.idle, DAY),
        };
        t.finish(d, |_| None);
        Some(v)
    })
    .unwrap_or_default();
    let upstream = get_with(d, &mut m, "upstream", read_upstream).unwrap_or_default();
    let written_backends = m
        .get("backends")
        .and_then(|n| n.as_sequence())
        .map_or(0, |s| s.len());
    if written_backends == 0 && discovery.is_none() {
        d.error(
            m.key_pos("backends"),
            &m.child("backends"),
            "a pool needs at least one backend or a discovery source",
        );
    }
    m.finish(d, |_| None);
    Some(PoolConfig {
        name: name?,
        algorithm,
        hash_key: hash_key.unwrap_or(HashKey::ClientIp),
        backends,
        discovery,
        health_check,
        circuit_breaker,
        sticky,
        retries,
        timeouts,
        upstream,
    })
}

/// Two backends of one pool must not reach the same socket address (`localhost:80`
/// and `127.0.0.1:80` would be one server counted twice); the later one is refused.
fn distinct_backends(
    d: &mut Decoder,
    backends: Vec<(BackendConfig, Pos, String)>,
) -> Vec<BackendConfig> {
    let mut seen: Vec<(BackendConfig, String)> = Vec::with_capacity(backends.len());
    for (b, pos, path) in backends {
        if let Some((first, first_path)) = seen.iter().find(|(o, _)| o.addr == b.addr) {
            let first_path = first_path.rsplit('.').next().unwrap_or(first_path);
            let message = if first.address == b.address {
                format!("duplicate backend {:?} (same as {first_path})", b.address)
            } else {
                format!(
                    "same address as {first_path} ({:?} and {:?} are both {})",
                    first.address, b.address, b.addr
                )
            };
            d.error(pos, &format!("{path}.address"), message);
        }
        seen.push((b, path));
    }
    seen.into_iter().map(|(b, _)| b).collect()
}

/// An RFC 7230 token, what RFC 6265 allows as a cookie name.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn parse_header_name(s: &str) -> Option<HeaderName> {
    HeaderName::from_bytes(s.as_bytes()).ok()
}

fn parse_hash_key(s: &str) -> Option<HashKey> {
    match s {
        "client_ip" => Some(HashKey::ClientIp),
        "uri" => Some(HashKey::Uri),
        "path" => Some(HashKey::Path),
        _ => {
            if let Some(h) = s.strip_prefix("header:") {
                parse_header_name(h).map(HashKey::Header)
            } else if let Some(c) = s.strip_prefix("cookie:") {
                (!c.is_empty()).then(|| HashKey::Cookie(c.to_string()))
            } else {
                None
            }
        }
    }
}

fn read_discovery(d: &mut Decoder, node: &Node, path: &str) -> Option<DnsDiscovery> {
    let mut m = d.map(node, path)?;
    let dns = get_with(d, &mut m, "dns", |d, n, p| {
        let mut s = d.map(n, p)?;
        let name = required_string(d, &mut s, "name");
        let port = get_with(d, &mut s, "port", |d, n, p| {
            d.parse(n, p, "a port number 1-65535", |v| {
                v.parse::<u16>().ok().filter(|p| *p > 0)
            })
        });
        if port.is_none() && s.get("port").is_none() {
            d.error(s.pos, &s.child("port"), "is required");
        }
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

fn read_health_check(d: &mut Decoder, node: &Node, path: &str) -> Option<HealthCheckConfig> {
    let mut m = d.map(node, path)?;
    let def = HealthCheckConfig::default();
    let kind = get_with(d, &mut m, "kind", |d, n, p| {
        d.parse(n, p, &HealthKind::expected(), HealthKind::from_name)
    });
    let hc_path = opt_string(d, &mut m, "path").unwrap_or(def.path);
    if !hc_path.starts_with('/') {
        d.error(
            m.key_pos("path"),
            &m.child("path"),
            format!("{hc_path:?} must start with /"),
        );
    }
    let expect_status = get_with(d, &mut m, "expect_status", |d, n, p| {
        d.parse(
            n,
            p,
            "a status \"N\" or range \"N-M\" (100-599)",
            parse_status_range,
        )
    })
    .unwrap_or(def.expect_status);
    let hc = HealthCheckConfig {
        kind,
        path: hc_path,
        host: opt_string(d, &mut m, "host"),
        expect_status,
        user: opt_string(d, &mut m, "user"),
        database: opt_string(d, &mut m, "database"),
        interval: duration_within(d, &mut m, "interval", def.interval, DAY.nonzero()),
        timeout: duration_within(d, &mut m, "timeout", def.timeout, DAY.nonzero()),
        healthy_threshold: bounded(
            d,
            &mut m,
            "healthy_threshold",
            def.healthy_threshold,
            1,
            100,
        ),
        unhealthy_threshold: bounded(
            d,
            &mut m,
            "unhealthy_threshold",
            def.unhealthy_threshold,
            1,
            100,
        ),
    };
    m.finish(d, |_| None);
    Some(hc)
}

fn parse_status_range(s: &str) -> Option<(u16, u16)> {
    let valid = |v: u16| (100..=599).contains(&v);
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let v = s.trim().parse().ok()?;
            (v, v)
        }
    };
    (valid(lo) && valid(hi) && lo <= hi).then_some((lo, hi))
}

fn read_circuit_breaker(d: &mut Decoder, node: &Node, path: &str) -> Option<CircuitBreakerConfig> {
    let mut m = d.map(node, path)?;
    let def = CircuitBreakerConfig::default();
    let cb = CircuitBreakerConfig {
        failure_threshold: bounded(
            d,
            &mut m,
            "failure_threshold",
            def.failure_threshold,
            1,
            1_000_000,
        ),
        on_5xx: boolean(d, &mut m, "on_5xx", def.on_5xx),
        open_for: duration_within(d, &mut m, "open_for", def.open_for, DAY),
        half_open_requests: bounded(
            d,
            &mut m,
            "half_open_requests",
            def.half_open_requests,
            1,
            1_000_000,
        ),
        max_connections: bounded(
            d,
            &mut m,
            "max_connections",
            def.max_connections,
            0,
            u32::MAX,
        ),
    };
    m.finish(d, |_| None);
    Some(cb)
}

fn read_upstream(d: &mut Decoder, node: &Node, path: &str) -> Option<UpstreamConfig> {
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
    if protocol == UpstreamProtocol::H2c && tls.is_some() {
        d.error(
            m.key_pos("tls"),
            &m.child("tls"),
            "h2c is cleartext HTTP/2: use protocol h2 with tls",
        );
    }
    if protocol == UpstreamProtocol::H2 && tls.is_none() {
        d.error(
            m.key_pos("protocol"),
            &m.child("protocol"),
            "h2 needs upstream.tls; use h2c for cleartext HTTP/2",
        );
    }
    m.finish(d, |k| matches!(k, "http3" | "quic").then_some(HTTP3));
    Some(UpstreamConfig { protocol, tls })
}

fn read_header_edits(d: &mut Decoder, node: &Node, path: &str) -> Option<HeaderEdits> {
    let mut m = d.map(node, path)?;
    let pairs = |d: &mut Decoder, m: &mut Map, key: &'static str| {
        let p = m.child(key);
        let Some(n) = m.get(key) else {
            return Vec::new();
        };
        let Some(map) = n.as_mapping() else {
            d.error(Pos::of(n.span()), &p, "expected a mapping of header: value");
            return Vec::new();
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
            let value =
                d.scalar(v, &kp, "a header value").and_then(|s| {
                    match HeaderValue::from_str(&s.text) {
                        Ok(v) => Some(v),
                        Err(_) => {
                            d.error(
                                s.pos,
                                &kp,
                                format!("{:?} is not a valid header value", s.text),
                            );
                            None
                        }
                    }
                });
            if let (Some(n), Some(v)) = (name, value) {
                out.push((n, v));
            }
        }
        out
    };
    let set = pairs(d, &mut m, "set");
    let add = pairs(d, &mut m, "add");
    let remove_path = m.child("remove");
    let remove = m
        .get("remove")
        .map(|n| {
            d.list(n, &remove_path, false, |d, n, p| {
                d.parse(n, p, "a header name", parse_header_name)
            })
        })
        .unwrap_or_default();
    m.finish(d, |_| None);
    Some(HeaderEdits { set, add, remove })
}

fn read_rate_limit(d: &mut Decoder, node: &Node, path: &str) -> Option<RateLimitConfig> {
    let mut m = d.map(node, path)?;
    d.spans.set(path, m.pos);
    let rate_given = m.get("rate").is_some();
    let rate = bounded(d, &mut m, "rate", 0, 1, u32::MAX);
    if !rate_given {
        d.error(m.pos, &m.child("rate"), "is required");
    }
    let burst = bounded(d, &mut m, "burst", rate, 1, u32::MAX);
    let key = get_with(d, &mut m, "key", |d, n, p| {
        d.parse(n, p, "client_ip | header:NAME | route", |s| match s {
            "client_ip" => Some(RateLimitKey::ClientIp),
            "route" => Some(RateLimitKey::Route),
            _ => s
                .strip_prefix("header:")
                .and_then(parse_header_name)
                .map(RateLimitKey::Header),
        })
    })
    .unwrap_or(RateLimitKey::ClientIp);
    let algorithm = choice(d, &mut m, "algorithm", RateLimitAlgorithm::TokenBucket);
    let scope = choice(d, &mut m, "scope", Scope::Local);
    m.finish(d, |_| None);
    Some(RateLimitConfig {
        rate,
        burst,
        key,
        algorithm,
        scope,
    })
}

fn read_route(d: &mut Decoder, node: &Node, path: &str) -> Option<RouteConfig> {
    let mut m = d.map(node, path)?;
    let pos = m.value_pos("name");
    d.spans.set(path, pos);
    let name = required_string(d, &mut m, "name");
    let listeners = name_list(d, &mut m, "listeners", false);
    let hosts_path = m.child("host");
    let hosts = m
        .get("host")
        .map(|n| {
            d.list(n, &hosts_path, true, |d, n, p| {
                d.parse(n, p, "a host name or *.domain", parse_host_pattern)
            })
        })
        .unwrap_or_default();
    let path_prefix = get_with(d, &mut m, "path_prefix", |d, n, p| {
        d.parse(n, p, "a path starting with /", |s| {
            s.starts_with('/').then(|| s.to_string())
        })
    });
    let methods_path = m.child("methods");
    let methods = m
        .get("methods")
        .map(|n| {
            d.list(n, &methods_path, true, |d, n, p| {
                d.parse(n, p, "an HTTP method such as GET", |s| {
                    let up = s.to_ascii_uppercase();
                    Method::from_bytes(up.as_bytes()).ok()
                })
            })
        })
        .unwrap_or_default();
    let headers = get_with(d, &mut m, "headers", |d, n, p| {
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
            if let (Some(name), Some(value)) = (name, d.string(v, &kp)) {
                out.push((name, value));
            }
        }
        Some(out)
    })
    .unwrap_or_default();
    d.spans.set(&m.child("pool"), m.value_pos("pool"));
    let pool = opt_string(d, &mut m, "pool");
    let strip_prefix = boolean(d, &mut m, "strip_prefix", false);
    let redirect_https = boolean(d, &mut m, "redirect_https", false);
    if pool.is_none() && !redirect_https {
        d.error(
            pos,
            &m.child("pool"),
            "is required (unless redirect_https is true)",
        );
    }
    let allow = cidr_list(d, &mut m, "allow");
    let deny = cidr_list(d, &mut m, "deny");
    let rate_limit = get_with(d, &mut m, "rate_limit", read_rate_limit);
    let request_headers =
        get_with(d, &mut m, "request_headers", read_header_edits).unwrap_or_default();
    let response_headers =
        get_with(d, &mut m, "response_headers", read_header_edits).unwrap_or_default();
    let security_headers = boolean(d, &mut m, "security_headers", false);
    if strip_prefix && path_prefix.is_none() {
        d.warn(
            m.key_pos("strip_prefix"),
            &m.child("strip_prefix"),
            "has no effect without path_prefix",
        );
    }
    m.finish(d, |_| None);
    Some(RouteConfig {
        name: name?,
        listeners,
        hosts,
        path_prefix: path_prefix.map(|p| normalize_prefix(&p)),
        methods,
        headers,
        pool,
        strip_prefix,
        redirect_https,
        allow,
        deny,
        rate_limit,
        request_headers,
        response_headers,
        security_headers,
    })
}

/// `/v1/` and `/v1` match the same requests (segment boundary); `/` stays `/`.
fn normalize_prefix(p: &str) -> String {
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

fn parse_host_pattern(s: &str) -> Option<String> {
    let lower = s.to_ascii_lowercase();
    let name = lower.strip_prefix("*.").unwrap_or(&lower);
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        && !name.starts_with('.')
        && !name.ends_with('.');
    ok.then_some(lower)
}

fn read_tcp_service(d: &mut Decoder, node: &Node, path: &str) -> Option<TcpServiceConfig> {
    let mut m = d.map(node, path)?;
    d.spans.set(path, m.value_pos("name"));
    let name = required_string(d, &mut m, "name");
    let listen = listen_addr(d, &mut m, "listen");
    let protocol = choice(d, &mut m, "protocol", TcpProtocol::Tcp);
    d.spans.set(&m.child("pool"), m.value_pos("pool"));
    let pool = required_string(d, &mut m, "pool");
    let idle_timeout = duration(d, &mut m, "idle_timeout", Duration::from_secs(3600));
    m.finish(d, |_| None);
    let (listen, listen_pos) = listen?;
    d.spans.set(&format!("{path}.listen"), listen_pos);
    Some(TcpServiceConfig {
        name: name?,
        listen,
        protocol,
        pool: pool?,
        idle_timeout,
    })
}

fn read_cluster(d: &mut Decoder, node: &Node) -> Option<ClusterConfig> {
    let mut m = d.map(node, "cluster")?;
    d.spans.set("cluster", m.pos);
    let redis = get_with(d, &mut m, "redis", |d, n, p| {
        d.parse(n, p, "a redis://host:port/db URL", |s| {
            (s.starts_with("redis://") || s.starts_with("rediss://") || s.starts_with("unix://"))
                .then(|| s.to_string())
        })
    });
    if m.get("redis").is_none() {
        d.error(m.pos, "cluster.redis", "is required");
    }
    let timeout = duration(d, &mut m, "timeout", Duration::from_millis(20));
    if timeout.is_zero() || timeout > Duration::from_secs(10) {
        let pos = m.key_pos("timeout");
        d.error(
            pos,
            "cluster.timeout",
            "must be more than 0 and at most 10s",
        );
    }
    m.finish(d, |_| None);
    Some(ClusterConfig {
        redis: redis?,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("fast"), None);
    }

    #[test]
    fn host_port_forms() {
        assert!(resolve_backend("127.0.0.1:80").is_ok());
        assert!(resolve_backend("[::1]:80").is_ok());
        assert!(resolve_backend("127.0.0.1").is_err());
        assert!(resolve_backend("127.000.0.1:80").is_err());
    }

    #[test]
    fn status_ranges() {
        assert_eq!(parse_status_range("200"), Some((200, 200)));
        assert_eq!(parse_status_range("200-399"), Some((200, 399)));
        assert_eq!(parse_status_range("399-200"), None);
        assert_eq!(parse_status_range("99"), None);
    }

    #[test]
    fn prefixes_are_segment_normalized() {
        assert_eq!(normalize_prefix("/v1/"), "/v1");
        assert_eq!(normalize_prefix("/"), "/");
    }
}
