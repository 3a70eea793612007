//! The typed, validated configuration (SPEC §3). Everything downstream reads these
//! types; nothing re-parses strings from the file.

use super::keyword::keyword;
pub use super::keyword::Keyword;
pub use super::pool::*;
use super::ser;
pub use super::traffic::*;
use http::header::{HeaderName, HeaderValue};
use http::Method;
use ipnet::IpNet;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub admin: Option<AdminConfig>,
    pub metrics: Option<MetricsConfig>,
    pub listeners: Vec<ListenerConfig>,
    pub pools: Vec<PoolConfig>,
    pub routes: Vec<RouteConfig>,
    pub tcp_services: Vec<TcpServiceConfig>,
    pub cluster: Option<ClusterConfig>,
    /// OpenTelemetry tracing (SPEC §14); None = off.
    pub tracing: Option<TracingConfig>,
    /// The HTTP cache storage (SPEC §11); None = no route caches.
    pub cache: Option<super::cache::CacheConfig>,
}

/// `tracing`: where spans go and how many requests start a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TracingConfig {
    pub otlp_endpoint: String,
    pub sample_ratio: Ratio,
    pub service_name: String,
}

/// A fraction from 0 to 1 kept in millionths, so the model stays `Eq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ratio(pub u32);

impl Ratio {
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 1_000_000.0
    }
}

impl Serialize for Ratio {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_f64())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerConfig {
    pub threads: usize,
    pub pid_file: PathBuf,
    pub upgrade_sock: PathBuf,
    pub user: Option<String>,
    pub group: Option<String>,
    #[serde(serialize_with = "ser::duration")]
    pub grace_period: Duration,
    #[serde(serialize_with = "ser::duration")]
    pub shutdown_timeout: Duration,
    #[serde(serialize_with = "ser::display_list")]
    pub trusted_proxies: Vec<IpNet>,
    /// Clients refused on every HTTP listener (403) and tcp_service (closed), before
    /// routing (an extension of SPEC §3).
    #[serde(serialize_with = "ser::display_list")]
    pub deny: Vec<IpNet>,
    /// `server.geoip` (SPEC §13).
    pub geoip: Option<GeoIpConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            threads: 0,
            pid_file: "/run/switchyard/switchyard.pid".into(),
            upgrade_sock: "/run/switchyard/upgrade.sock".into(),
            user: None,
            group: None,
            grace_period: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
            deny: Vec::new(),
            geoip: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    Stderr,
    Off,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogConfig {
    #[serde(serialize_with = "ser::level")]
    pub level: log::LevelFilter,
    #[serde(serialize_with = "ser::display")]
    pub access_log: AccessLogTarget,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: log::LevelFilter::Info,
            access_log: AccessLogTarget::Stdout,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    #[serde(serialize_with = "ser::redacted_list")]
    pub tokens: Vec<String>,
    #[serde(serialize_with = "ser::display_list")]
    pub allow: Vec<IpNet>,
    pub state_file: PathBuf,
    /// Bearer tokens that may only read (GET); a change answers 403 (SPEC §14).
    #[serde(serialize_with = "ser::redacted_list")]
    pub read_only_tokens: Vec<String>,
    /// Bearer JWTs beside the static tokens (SPEC §14).
    pub jwt: Option<JwtConfig>,
    /// One JSON line per change made through the API (SPEC §14).
    pub audit_log: Option<PathBuf>,
}

impl AdminConfig {
    /// Whether `/api/` asks for a bearer token: any token or JWT source is configured.
    pub fn asks_for_token(&self) -> bool {
        !self.tokens.is_empty() || !self.read_only_tokens.is_empty() || self.jwt.is_some()
    }
}

/// `admin.jwt`: where the signing keys come from and what a token must claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JwtConfig {
    #[serde(flatten)]
    pub jwks: JwksSource,
    pub issuer: String,
    pub audience: String,
    /// The claim naming the role: "admin" or "read_only" (absent = read_only).
    pub role_claim: String,
}

/// The JSON Web Key Set: a file (re-read on reload) or a URL (fetched every 10 min).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum JwksSource {
    #[serde(rename = "jwks_file")]
    File(PathBuf),
    #[serde(rename = "jwks_url")]
    Url(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub http2: bool,
    /// Also serve HTTP/3 over QUIC on the same UDP port (SPEC §15; TLS listeners only).
    pub http3: bool,
    pub tls: Option<TlsConfig>,
    pub limits: ListenerLimits,
    /// Every connection must start with a PROXY v1/v2 header from `server.trusted_proxies`.
    pub proxy_protocol: bool,
}

/// `listeners[].limits` (SPEC §10): what one client may hold and send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerLimits {
    #[serde(serialize_with = "ser::duration")]
    pub header_timeout: Duration,
    /// Also the HTTP/2 idle timeout; zero closes the connection after each response.
    #[serde(serialize_with = "ser::duration")]
    pub keepalive_timeout: Duration,
    #[serde(serialize_with = "ser::duration")]
    pub body_timeout: Duration,
    pub max_header_bytes: u32,
    pub max_headers: u32,
    /// Zero = unlimited.
    pub max_body_bytes: u64,
    pub max_connections: u32,
    pub max_connections_per_ip: u32,
    pub max_requests_per_connection: u32,
    pub h2_max_concurrent_streams: u32,
}

impl ListenerLimits {
    /// The keep-alive in Pingora's unit, whole seconds rounded up; `None` closes the
    /// connection after each response.
    pub fn keepalive_seconds(&self) -> Option<u64> {
        let d = self.keepalive_timeout;
        (!d.is_zero()).then(|| d.as_secs_f64().ceil() as u64)
    }
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body_bytes: 0,
            max_connections: 0,
            max_connections_per_ip: 0,
            max_requests_per_connection: 0,
            h2_max_concurrent_streams: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsConfig {
    pub certificates: Vec<CertificateFiles>,
    pub acme: Option<AcmeConfig>,
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
    pub min_version: TlsVersion,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateFiles {
    pub cert_file: PathBuf,
    #[serde(serialize_with = "ser::redacted")]
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcmeConfig {
    /// The account's contact (expiry and policy mail from the CA); optional.
    pub email: Option<String>,
    pub directory: String,
    pub domains: Vec<String>,
    pub storage: PathBuf,
    pub ca_file: Option<PathBuf>,
}

keyword! {
    pub enum ClientAuth {
        None = "none",
        Optional = "optional",
        Require = "require",
    }
}

keyword! {
    pub enum TlsVersion {
        Tls12 = "1.2",
        Tls13 = "1.3",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitKey {
    ClientIp,
    Header(HeaderName),
    Route,
}

keyword! {
    pub enum RateLimitAlgorithm {
        TokenBucket = "token_bucket",
        SlidingWindow = "sliding_window",
    }
}

keyword! {
    pub enum Scope {
        Local = "local",
        Cluster = "cluster",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RateLimitConfig {
    pub rate: u32,
    pub burst: u32,
    #[serde(serialize_with = "ser::display")]
    pub key: RateLimitKey,
    pub algorithm: RateLimitAlgorithm,
    pub scope: Scope,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HeaderEdits {
    #[serde(serialize_with = "ser::header_values")]
    pub set: Vec<(HeaderName, HeaderValue)>,
    #[serde(serialize_with = "ser::header_values")]
    pub add: Vec<(HeaderName, HeaderValue)>,
    #[serde(serialize_with = "ser::display_list")]
    pub remove: Vec<HeaderName>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteConfig {
    pub name: String,
    /// Empty = every HTTP listener.
    pub listeners: Vec<String>,
    #[serde(rename = "host")]
    pub hosts: Vec<String>,
    pub path_prefix: Option<String>,
    #[serde(serialize_with = "ser::display_list")]
    pub methods: Vec<Method>,
    #[serde(serialize_with = "ser::header_texts")]
    pub headers: Vec<(HeaderName, String)>,
    /// `None` only for a route that always redirects to HTTPS.
    pub pool: Option<String>,
    pub strip_prefix: bool,
    pub redirect_https: bool,
    #[serde(serialize_with = "ser::display_list")]
    pub allow: Vec<IpNet>,
    #[serde(serialize_with = "ser::display_list")]
    pub deny: Vec<IpNet>,
    pub rate_limit: Option<RateLimitConfig>,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    pub security_headers: bool,
    /// Overrides the listener's `limits.max_body_bytes` (zero = unlimited).
    pub max_body_bytes: Option<u64>,
    /// `mirror` and `geo` (SPEC §13), shown at the route's top level.
    #[serde(flatten)]
    pub traffic: RouteTraffic,
    /// `cache` (SPEC §11); None = responses are never cached.
    pub cache: Option<super::cache::RouteCacheConfig>,
}

keyword! {
    pub enum TcpProtocol {
        Tcp = "tcp",
        Postgres = "postgres",
        Mysql = "mysql",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TcpServiceConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub protocol: TcpProtocol,
    pub pool: String,
    #[serde(serialize_with = "ser::duration")]
    pub idle_timeout: Duration,
    /// Zero = unlimited.
    pub max_connections: u32,
    pub max_connections_per_ip: u32,
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterConfig {
    #[serde(serialize_with = "ser::redacted")]
    pub redis: String,
    /// The most a cluster-scope rate limit waits for Redis before deciding locally.
    #[serde(serialize_with = "ser::duration")]
    pub timeout: Duration,
}
