//! A pool's typed configuration (SPEC §3 `pools[]`): its algorithm and hash key, static
//! backends and discovery providers, health check, circuit breaker, sticky cookie,
//! timeouts and upstream protocol. The traffic-management keys are in `traffic`.

use super::keyword::keyword;
use super::ser;
use super::traffic::PoolTraffic;
use http::header::HeaderName;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

keyword! {
    pub enum Algorithm {
        RoundRobin = "round_robin",
        LeastConn = "least_conn",
        IpHash = "ip_hash",
        ConsistentHash = "consistent_hash",
        Random = "random",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Uri,
    Path,
    Header(HeaderName),
    Cookie(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendConfig {
    /// As written (`host:port`): the backend's name in the API, metrics and logs.
    pub address: String,
    #[serde(skip)]
    pub addr: SocketAddr,
    pub weight: u32,
    pub backup: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsDiscovery {
    pub name: String,
    pub port: u16,
    #[serde(serialize_with = "ser::duration")]
    pub interval: Duration,
}

/// `pools[].discovery` (SPEC §12): any of the providers, added to the static backends.
/// Shown as written: the configured providers only, `null` for none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiscoveryConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsDiscovery>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_srv: Option<DnsSrvDiscovery>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerDiscovery>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesDiscovery>,
}

impl DiscoveryConfig {
    pub fn is_empty(&self) -> bool {
        self.dns.is_none()
            && self.dns_srv.is_none()
            && self.docker.is_none()
            && self.kubernetes.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsSrvDiscovery {
    pub name: String,
    #[serde(serialize_with = "ser::duration")]
    pub interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DockerDiscovery {
    pub socket: PathBuf,
    pub label: String,
    pub port_label: String,
    pub weight_label: String,
    /// `None`: the container's first network (by name).
    pub network: Option<String>,
}

/// An EndpointSlice port by name or number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum SlicePort {
    Name(String),
    Number(u16),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KubernetesDiscovery {
    pub namespace: String,
    pub service: String,
    /// `None`: the slice's only port.
    pub port: Option<SlicePort>,
    /// `None`: the in-cluster service account, else `$KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
}

keyword! {
    pub enum HealthKind {
        Http = "http",
        Tcp = "tcp",
        Postgres = "postgres",
        Mysql = "mysql",
        None = "none",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheckConfig {
    /// `None` = the default for how the pool is used (SPEC §3).
    pub kind: Option<HealthKind>,
    pub path: String,
    pub host: Option<String>,
    #[serde(serialize_with = "ser::status_range")]
    pub expect_status: (u16, u16),
    pub user: Option<String>,
    pub database: Option<String>,
    #[serde(serialize_with = "ser::duration")]
    pub interval: Duration,
    #[serde(serialize_with = "ser::duration")]
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            kind: None,
            path: "/".into(),
            host: None,
            expect_status: (200, 399),
            user: None,
            database: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CircuitBreakerConfig {
    pub failure_threshold: u32,
    pub on_5xx: bool,
    #[serde(serialize_with = "ser::duration")]
    pub open_for: Duration,
    pub half_open_requests: u32,
    pub max_connections: u32,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            failure_threshold: 5,
            on_5xx: true,
            open_for: Duration::from_secs(30),
            half_open_requests: 3,
            max_connections: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StickyConfig {
    pub cookie: String,
    #[serde(serialize_with = "ser::opt_duration")]
    pub ttl: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    #[serde(serialize_with = "ser::duration")]
    pub connect: Duration,
    #[serde(serialize_with = "ser::duration")]
    pub read: Duration,
    #[serde(serialize_with = "ser::duration")]
    pub write: Duration,
    #[serde(serialize_with = "ser::duration")]
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            read: Duration::from_secs(60),
            write: Duration::from_secs(60),
            idle: Duration::from_secs(90),
        }
    }
}

keyword! {
    pub enum UpstreamProtocol {
        Http1 = "http1",
        H2 = "h2",
        H2c = "h2c",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamTls {
    pub sni: Option<String>,
    pub verify: bool,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamConfig {
    pub protocol: UpstreamProtocol,
    pub tls: Option<UpstreamTls>,
    pub proxy_protocol: ProxyProtocolSend,
}

keyword! {
    /// `upstream.proxy_protocol`: the PROXY header sent on each new backend connection.
    pub enum ProxyProtocolSend {
        None = "none",
        V1 = "v1",
        V2 = "v2",
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            protocol: UpstreamProtocol::Http1,
            tls: None,
            proxy_protocol: ProxyProtocolSend::None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolConfig {
    pub name: String,
    pub algorithm: Algorithm,
    #[serde(serialize_with = "ser::display")]
    pub hash_key: HashKey,
    pub backends: Vec<BackendConfig>,
    #[serde(serialize_with = "ser::discovery")]
    pub discovery: DiscoveryConfig,
    pub health_check: Option<HealthCheckConfig>,
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    pub sticky: Option<StickyConfig>,
    pub retries: u32,
    pub timeouts: Timeouts,
    pub upstream: UpstreamConfig,
    /// The traffic-management keys (SPEC §13), shown at the pool's top level.
    #[serde(flatten)]
    pub traffic: PoolTraffic,
}
