//! Value types written in the configuration and the admin API, each with `FromStr`
//! (the accepted grammar) and `Display` (the canonical spelling).

use super::keyword::keyword;
use super::keyword::Keyword;
use super::model::{AccessLogTarget, HashKey, RateLimitKey};
use http::header::HeaderName;
use ipnet::IpNet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

/// The host part of a backend address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    /// A DNS name, lowercased.
    Name(String),
}

/// Why a value in the file or an admin request was refused; the message names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("{value:?} is not {expected}")]
    Invalid { value: String, expected: String },
    #[error("{0:?} is not a canonical IP address (four numbers 0-255 without leading zeros, e.g. 127.0.0.1)")]
    NonCanonicalIp(String),
    #[error("{0:?} does not resolve")]
    Unresolved(String),
}

impl ValueError {
    pub fn invalid(value: &str, expected: impl Into<String>) -> ValueError {
        ValueError::Invalid {
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

/// A backend address `host:port`, not yet resolved.
///
/// Canonical form: IP literals are written as Rust's `SocketAddr` prints them
/// (`[::1]:80`, not `[0:0::1]:80`) and names are lowercased. Numeric hosts that are
/// not a plain dotted-quad (`127.000.0.1`, `0x7f.1`, `2130706433`) are refused rather
/// than left to the resolver, which would read `010` as octal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendAddr {
    pub host: Host,
    pub port: u16,
}

impl FromStr for BackendAddr {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let not = || ValueError::invalid(s, "host:port");
        let (host, port) = s.rsplit_once(':').ok_or_else(not)?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(not)?;
        let host = if let Some(v6) = host.strip_prefix('[') {
            let v6 = v6.strip_suffix(']').ok_or_else(not)?;
            Host::Ip(IpAddr::V6(v6.parse::<Ipv6Addr>().map_err(|_| not())?))
        } else if let Ok(v4) = host.parse::<Ipv4Addr>() {
            Host::Ip(IpAddr::V4(v4))
        } else {
            let name = host.to_ascii_lowercase();
            let valid = !name.is_empty()
                && !name.starts_with('.')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
            if !valid {
                return Err(not());
            }
            let last = name.trim_end_matches('.').rsplit('.').next().unwrap_or("");
            let numeric = last.bytes().all(|b| b.is_ascii_digit())
                || last
                    .strip_prefix("0x")
                    .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
            if numeric {
                return Err(ValueError::NonCanonicalIp(s.to_string()));
            }
            Host::Name(name)
        };
        Ok(BackendAddr { host, port })
    }
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl BackendAddr {
    /// The socket address to connect to: the literal (no DNS), or the first address the
    /// name resolves to. Blocks on DNS for a name (through `block_in_place` on a
    /// multi-thread runtime worker): only the configuration loader calls it (at start,
    /// and on a reload, where the file's names must resolve before anything changes);
    /// the admin API and the pools use [`BackendAddr::lookup`].
    pub fn resolve(&self) -> Result<SocketAddr, ValueError> {
        match &self.host {
            Host::Ip(ip) => Ok(SocketAddr::new(*ip, self.port)),
            Host::Name(name) => {
                let resolve = || {
                    (name.as_str(), self.port)
                        .to_socket_addrs()
                        .ok()
                        .and_then(|mut it| it.next())
                };
                // On a worker of a multi-thread runtime (Pool::rebuild), hand the
                // worker's other tasks off first; elsewhere just block.
                let on_worker = tokio::runtime::Handle::try_current().is_ok_and(|h| {
                    h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
                });
                let found = if on_worker {
                    tokio::task::block_in_place(resolve)
                } else {
                    resolve()
                };
                found.ok_or_else(|| ValueError::Unresolved(self.to_string()))
            }
        }
    }

    /// [`BackendAddr::resolve`] without blocking the runtime.
    pub async fn lookup(&self) -> Result<SocketAddr, ValueError> {
        match &self.host {
            Host::Ip(ip) => Ok(SocketAddr::new(*ip, self.port)),
            Host::Name(name) => tokio::net::lookup_host((name.as_str(), self.port))
                .await
                .ok()
                .and_then(|mut it| it.next())
                .ok_or_else(|| ValueError::Unresolved(self.to_string())),
        }
    }
}

// ---------------------------------------------------------------------------
// keyword-like values

keyword! {
    /// The words `log.access_log` reads as a target rather than a file path.
    pub enum AccessLogKeyword {
        Stdout = "stdout",
        Stderr = "stderr",
        Off = "off",
    }
}

impl AccessLogTarget {
    /// `stdout`, `stderr` and `off` are keywords; anything else is a file path.
    pub fn from_text(s: &str) -> AccessLogTarget {
        match AccessLogKeyword::from_name(s) {
            Some(AccessLogKeyword::Stdout) => AccessLogTarget::Stdout,
            Some(AccessLogKeyword::Stderr) => AccessLogTarget::Stderr,
            Some(AccessLogKeyword::Off) => AccessLogTarget::Off,
            None => AccessLogTarget::File(s.into()),
        }
    }
}

impl std::fmt::Display for AccessLogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = match self {
            AccessLogTarget::Stdout => AccessLogKeyword::Stdout,
            AccessLogTarget::Stderr => AccessLogKeyword::Stderr,
            AccessLogTarget::Off => AccessLogKeyword::Off,
            AccessLogTarget::File(p) => return write!(f, "{}", p.display()),
        };
        f.write_str(word.as_str())
    }
}

keyword! {
    /// `log.level` (and `$SWITCHYARD_LOG`, case-insensitively).
    pub enum LogLevel {
        Error = "error",
        Warn = "warn",
        Info = "info",
        Debug = "debug",
        Trace = "trace",
    }
}

impl LogLevel {
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }

    /// The keyword of a filter; `off` (never read from a file) reads as `error`.
    pub fn of(filter: log::LevelFilter) -> LogLevel {
        match filter {
            log::LevelFilter::Off | log::LevelFilter::Error => LogLevel::Error,
            log::LevelFilter::Warn => LogLevel::Warn,
            log::LevelFilter::Info => LogLevel::Info,
            log::LevelFilter::Debug => LogLevel::Debug,
            log::LevelFilter::Trace => LogLevel::Trace,
        }
    }
}

impl std::fmt::Display for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashKey::ClientIp => f.write_str("client_ip"),
            HashKey::Uri => f.write_str("uri"),
            HashKey::Path => f.write_str("path"),
            HashKey::Header(h) => write!(f, "header:{h}"),
            HashKey::Cookie(c) => write!(f, "cookie:{c}"),
        }
    }
}

impl std::fmt::Display for RateLimitKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RateLimitKey::ClientIp => f.write_str("client_ip"),
            RateLimitKey::Route => f.write_str("route"),
            RateLimitKey::Header(h) => write!(f, "header:{h}"),
        }
    }
}

// ---------------------------------------------------------------------------
// the grammar of the other values

pub fn parse_duration(s: &str) -> Option<Duration> {
    if !s.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    humantime::parse_duration(s).ok()
}

/// A listen address: an IP literal and a port (names would bind unpredictably).
pub fn parse_listen(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>().ok().filter(|a| a.port() != 0)
}

pub fn parse_cidr(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// A log level, case-insensitively (`log.level`, `$SWITCHYARD_LOG`).
pub fn parse_level(s: &str) -> Option<log::LevelFilter> {
    LogLevel::from_name(&s.to_ascii_lowercase()).map(LogLevel::filter)
}

/// Letters, digits and inner hyphens in dot-separated labels. A single label (`localhost`)
/// is left for the CA to accept or refuse.
pub fn is_dns_name(name: &str) -> bool {
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

/// An RFC 7230 token, what RFC 6265 allows as a cookie name.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub fn parse_header_name(s: &str) -> Option<HeaderName> {
    HeaderName::from_bytes(s.as_bytes()).ok()
}

impl HashKey {
    /// The accepted forms, as error messages put them.
    pub const EXPECTED: &'static str = "client_ip | uri | path | header:NAME | cookie:NAME";
}

impl FromStr for HashKey {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let key = match s {
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
        };
        key.ok_or_else(|| ValueError::invalid(s, HashKey::EXPECTED))
    }
}

impl RateLimitKey {
    /// The accepted forms, as error messages put them.
    pub const EXPECTED: &'static str = "client_ip | header:NAME | route";
}

impl FromStr for RateLimitKey {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let key = match s {
            "client_ip" => Some(RateLimitKey::ClientIp),
            "route" => Some(RateLimitKey::Route),
            _ => s
                .strip_prefix("header:")
                .and_then(parse_header_name)
                .map(RateLimitKey::Header),
        };
        key.ok_or_else(|| ValueError::invalid(s, RateLimitKey::EXPECTED))
    }
}

pub fn parse_status_range(s: &str) -> Option<(u16, u16)> {
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

/// `/v1/` and `/v1` match the same requests (segment boundary); `/` stays `/`.
pub fn normalize_prefix(p: &str) -> String {
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

pub fn parse_host_pattern(s: &str) -> Option<String> {
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

/// A backend address: `host:port` in canonical form (see [`BackendAddr`]) and the
/// socket address it resolves to (the first one). The config file and the admin API
/// both go through here.
pub fn backend_address(s: &str) -> Result<(String, SocketAddr), ValueError> {
    let a: BackendAddr = s.parse()?;
    let addr = a.resolve()?;
    Ok((a.to_string(), addr))
}

/// [`backend_address`] for async code: a name is resolved by `tokio::net::lookup_host`
/// instead of blocking a runtime thread.
pub async fn lookup_backend(s: &str) -> Result<(String, SocketAddr), ValueError> {
    let a: BackendAddr = s.parse()?;
    let addr = a.lookup().await?;
    Ok((a.to_string(), addr))
}

#[cfg(test)]
#[path = "value_tests.rs"]
mod tests;
