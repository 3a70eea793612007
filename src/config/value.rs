//! Value types written in the configuration and the admin API, each with `FromStr`
//! (the accepted grammar) and `Display` (the canonical spelling).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// The host part of a backend address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    /// A DNS name, lowercased.
    Name(String),
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
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let not = || format!("{s:?} is not host:port");
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
                return Err(format!(
                    "{s:?} is not a canonical IP address (four numbers 0-255 without leading zeros, e.g. 127.0.0.1)"
                ));
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
    /// The socket address to connect to: the literal, or the first address the name
    /// resolves to. Blocks on DNS for a name; async code uses [`BackendAddr::lookup`].
    pub fn resolve(&self) -> Result<SocketAddr, String> {
        match &self.host {
            Host::Ip(ip) => Ok(SocketAddr::new(*ip, self.port)),
            Host::Name(name) => (name.as_str(), self.port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut it| it.next())
                .ok_or_else(|| format!("{:?} does not resolve", self.to_string())),
        }
    }

    /// [`BackendAddr::resolve`] without blocking the runtime.
    pub async fn lookup(&self) -> Result<SocketAddr, String> {
        match &self.host {
            Host::Ip(ip) => Ok(SocketAddr::new(*ip, self.port)),
            Host::Name(name) => tokio::net::lookup_host((name.as_str(), self.port))
                .await
                .ok()
                .and_then(|mut it| it.next())
                .ok_or_else(|| format!("{:?} does not resolve", self.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> Result<String, String> {
        s.parse::<BackendAddr>().map(|a| a.to_string())
    }

    #[test]
    fn backend_addresses_are_canonical() {
        assert_eq!(canon("127.0.0.1:80").as_deref(), Ok("127.0.0.1:80"));
        assert_eq!(canon("[0:0::1]:80").as_deref(), Ok("[::1]:80"));
        assert_eq!(
            canon("Web.Internal:8080").as_deref(),
            Ok("web.internal:8080")
        );
        assert_eq!(canon("localhost:80").as_deref(), Ok("localhost:80"));
    }

    #[test]
    fn numeric_hosts_must_be_plain_ip_literals() {
        for bad in [
            "127.000.0.1:80",
            "0127.0.0.1:80",
            "127.1:80",
            "2130706433:80",
            "0x7f.1:80",
        ] {
            let e = canon(bad).unwrap_err();
            assert!(e.contains("not a canonical IP address"), "{bad}: {e}");
        }
    }

    #[test]
    fn malformed_host_port() {
        for bad in [
            "10.0.0.1",
            "10.0.0.1:0",
            "a b:80",
            ":80",
            "[::1:80",
            "[x]:80",
            ".a:80",
        ] {
            let e = canon(bad).unwrap_err();
            assert!(e.ends_with("is not host:port"), "{bad}: {e}");
        }
    }

    #[test]
    fn literals_resolve_without_dns() {
        let a: BackendAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(a.resolve(), Ok(SocketAddr::from(([127, 0, 0, 1], 9))));
    }
}
