//! The typed `cache` section and `routes[].cache` (SPEC §11): the process-wide storage
//! bounds and each route's freshness, stale windows, key and coalescing wait.

use super::ser;
use http::header::HeaderName;
use serde::{Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// `cache`: the one storage every caching route shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheConfig {
    /// Bytes kept in memory (bodies, headers and bookkeeping), least useful evicted first.
    pub memory: u64,
    /// Larger responses pass through uncached.
    pub max_object: u64,
}

impl CacheConfig {
    pub const DEFAULT_MEMORY: u64 = 256 << 20;
    pub const DEFAULT_MAX_OBJECT: u64 = 8 << 20;
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            memory: Self::DEFAULT_MEMORY,
            max_object: Self::DEFAULT_MAX_OBJECT,
        }
    }
}

/// One part of a route's cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheKeyPart {
    Method,
    Host,
    Path,
    Query,
    /// `header:NAME`: the request header's value(s).
    Header(HeaderName),
    /// `cookie:NAME`: that cookie's value.
    Cookie(String),
}

impl CacheKeyPart {
    pub const EXPECTED: &'static str = "method, host, path, query, header:NAME or cookie:NAME";

    pub fn parse(s: &str) -> Option<CacheKeyPart> {
        match s {
            "method" => Some(CacheKeyPart::Method),
            "host" => Some(CacheKeyPart::Host),
            "path" => Some(CacheKeyPart::Path),
            "query" => Some(CacheKeyPart::Query),
            _ => {
                if let Some(name) = s.strip_prefix("header:") {
                    HeaderName::from_bytes(name.as_bytes())
                        .ok()
                        .map(CacheKeyPart::Header)
                } else if let Some(name) = s.strip_prefix("cookie:") {
                    let ok = !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_graphic() && !b"=;,".contains(&b));
                    ok.then(|| CacheKeyPart::Cookie(name.to_string()))
                } else {
                    None
                }
            }
        }
    }

    pub fn defaults() -> Vec<CacheKeyPart> {
        vec![
            CacheKeyPart::Method,
            CacheKeyPart::Host,
            CacheKeyPart::Path,
            CacheKeyPart::Query,
        ]
    }
}

impl fmt::Display for CacheKeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheKeyPart::Method => f.write_str("method"),
            CacheKeyPart::Host => f.write_str("host"),
            CacheKeyPart::Path => f.write_str("path"),
            CacheKeyPart::Query => f.write_str("query"),
            CacheKeyPart::Header(h) => write!(f, "header:{h}"),
            CacheKeyPart::Cookie(c) => write!(f, "cookie:{c}"),
        }
    }
}

impl Serialize for CacheKeyPart {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `routes[].cache`: how this route's responses are cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteCacheConfig {
    /// Freshness when the response gives none (zero: such responses are not stored).
    #[serde(serialize_with = "ser::duration")]
    pub default_ttl: Duration,
    /// Cap on any freshness.
    #[serde(serialize_with = "ser::duration")]
    pub max_ttl: Duration,
    #[serde(serialize_with = "ser::duration")]
    pub stale_while_revalidate: Duration,
    #[serde(serialize_with = "ser::duration")]
    pub stale_if_error: Duration,
    pub key: Vec<CacheKeyPart>,
    #[serde(serialize_with = "ser::duration")]
    pub lock_timeout: Duration,
}

impl Default for RouteCacheConfig {
    fn default() -> Self {
        RouteCacheConfig {
            default_ttl: Duration::ZERO,
            max_ttl: Duration::from_secs(86_400),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            key: CacheKeyPart::defaults(),
            lock_timeout: Duration::from_secs(5),
        }
    }
}

/// Reads `256MiB`, `8 MiB`, `512KiB`, `1GiB`, `100kB` or a plain number of bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor).filter(|v| *v <= 1 << 50)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_binary_and_decimal_units() {
        assert_eq!(parse_size("256MiB"), Some(256 << 20));
        assert_eq!(parse_size("8 MiB"), Some(8 << 20));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("10kB"), Some(10_000));
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(parse_size("-1MiB"), None);
    }

    #[test]
    fn key_parts_read_their_spellings() {
        assert_eq!(CacheKeyPart::parse("query"), Some(CacheKeyPart::Query));
        assert_eq!(
            CacheKeyPart::parse("header:Accept-Language").map(|p| p.to_string()),
            Some("header:accept-language".into())
        );
        assert_eq!(
            CacheKeyPart::parse("cookie:session"),
            Some(CacheKeyPart::Cookie("session".into()))
        );
        assert_eq!(CacheKeyPart::parse("cookie:"), None);
        assert_eq!(CacheKeyPart::parse("header:bad header"), None);
        assert_eq!(CacheKeyPart::parse("scheme"), None);
    }
}
