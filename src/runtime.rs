//! The running state built from a `Config`: compiled routes, pools with live backend
//! state, per-route actions. Held in an `ArcSwap` so a reload swaps it atomically and
//! every request works on one consistent snapshot.

use crate::config::process::ProcessConfig;
use crate::config::RateLimitConfig;
use crate::config::{
    Config, HeaderEdits, HealthKind, ListenerConfig, ListenerLimits, PoolConfig, TcpProtocol,
};
use crate::limits::cluster::Cluster;
use crate::limits::rate::RateLimiter;
use crate::limits::Acl;
use crate::observe::access_log::AccessLog;
use crate::observe::metrics::RouteMetrics;
use crate::pool::Pool;
use crate::routing::RouteTable;
use crate::state::store::StateStore;
use arc_swap::ArcSwap;
use ipnet::IpNet;
use std::sync::Arc;

/// What a matched route does with a request.
pub struct Route {
    pub name: String,
    pub pool: Option<usize>,
    /// The normalized prefix to strip, when `strip_prefix` is on.
    pub strip: Option<String>,
    pub redirect_https: bool,
    pub acl: Acl,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    pub security_headers: bool,
    /// `max_body_bytes` when the route sets it (else the listener's applies).
    pub max_body_bytes: Option<u64>,
    pub metrics: RouteMetrics,
    pub rate_limit: Option<Arc<RateLimiter>>,
    /// `mirror` (SPEC §13).
    pub mirror: Option<RouteMirror>,
    /// `cache` (SPEC §11), on the process's one storage.
    pub cache: Option<crate::cache::RouteCache>,
}

/// A route's `mirror`: the pool copies go to, the share copied, the outcome counters.
pub struct RouteMirror {
    pub pool: usize,
    pub percent: u32,
    pub success: prometheus::IntCounter,
    pub failure: prometheus::IntCounter,
    pub skipped: prometheus::IntCounter,
}

impl RouteMirror {
    fn new(route: &str, pool: usize, percent: u32) -> Self {
        let c = |outcome: &str| {
            crate::observe::metrics::METRICS
                .mirror_requests
                .with_label_values(&[route, outcome])
        };
        RouteMirror {
            pool,
            percent,
            success: c("success"),
            failure: c("failure"),
            skipped: c("skipped"),
        }
    }
}

/// Per-service metric handles, resolved once.
pub struct TcpMetrics {
    pub connections: prometheus::IntCounter,
    pub active: prometheus::IntGauge,
    pub rx: prometheus::IntCounter,
    pub tx: prometheus::IntCounter,
}

impl TcpMetrics {
    fn new(service: &str) -> Self {
        let m = &crate::observe::metrics::METRICS;
        TcpMetrics {
            connections: m.tcp_connections.with_label_values(&[service]),
            active: m.tcp_active.with_label_values(&[service]),
            rx: m.tcp_bytes.with_label_values(&[service, "rx"]),
            tx: m.tcp_bytes.with_label_values(&[service, "tx"]),
        }
    }
}

/// A tcp_service as running.
pub struct TcpService {
    pub name: String,
    pub pool: usize,
    pub idle_timeout: std::time::Duration,
    pub metrics: TcpMetrics,
}

/// A bound listener's reloadable settings.
#[derive(Clone)]
pub struct ListenerInfo {
    pub name: String,
    pub tls: bool,
    pub limits: ListenerLimits,
    pub proxy_protocol: bool,
}

impl ListenerInfo {
    fn of(l: &ListenerConfig) -> ListenerInfo {
        ListenerInfo {
            name: l.name.clone(),
            tls: l.tls.is_some(),
            limits: l.limits.clone(),
            proxy_protocol: l.proxy_protocol,
        }
    }
}

pub struct Runtime {
    pub table: RouteTable,
    pub routes: Vec<Route>,
    pub pools: Vec<Arc<Pool>>,
    pub tcp_services: Vec<TcpService>,
    /// One per listener the process bound, in that order (a listener's index in the
    /// running process): a reload that reorders or removes listeners keeps each
    /// socket's index, and a removed one keeps its last settings until an upgrade.
    pub listeners: Vec<ListenerInfo>,
    /// What the process was started with and only an upgrade changes.
    pub process: Arc<ProcessConfig>,
    /// The Redis link of `cluster.redis`, made with the first runtime and kept by every
    /// reload (its URL is process configuration).
    pub cluster: Option<Arc<Cluster>>,
    /// The cache storage, made with the first configuration that has `cache` and kept
    /// by every reload after it (the admin purge works on it).
    pub cache_store: Option<&'static crate::cache::Store>,
    pub trusted_proxies: Vec<IpNet>,
    /// `server.deny`: refused on every HTTP listener and tcp_service before routing.
    pub deny: Acl,
    /// Port for `redirect_https`: the first TLS listener's, or 443.
    pub https_port: u16,
    pub access_log: Arc<AccessLog>,
    /// Requests that matched no route (`route=""`, `pool=""`).
    pub unrouted_metrics: RouteMetrics,
    /// Request metrics are recorded only when a metrics listener is configured.
    pub metrics_enabled: bool,
    /// The configuration this runtime was built from (the API shows it).
    pub config: Arc<Config>,
    /// `server.geoip`, opened for this runtime (a reload re-reads the file).
    pub geoip: Option<Arc<crate::geo::GeoIp>>,
}

fn same_limit(a: &RateLimitConfig, b: &RateLimitConfig) -> bool {
    (a.rate, a.burst, &a.key, a.algorithm, a.scope)
        == (b.rate, b.burst, &b.key, b.algorithm, b.scope)
}

/// Equal pool definitions (the model holds no file positions, so moving a pool in the
/// file does not change its definition).
fn same_definition(a: &PoolConfig, b: &PoolConfig) -> bool {
    a == b
}

impl Runtime {
    /// Builds the running state; pools whose definition is unchanged from `previous` are
    /// kept as they are, with their health, circuit and in-flight state; new pools get
    /// their admin overlay from `state`.
    pub fn build(config: &Config, previous: Option<&Runtime>, state: &StateStore) -> Runtime {
        let process = previous.map_or_else(
            || Arc::new(ProcessConfig::of(config)),
            |old| old.process.clone(),
        );
        let cluster = previous.map_or_else(
            || {
                config
                    .cluster
                    .as_ref()
                    .map(|c| Cluster::new(&c.redis, c.timeout))
            },
            |old| old.cluster.clone(),
        );
        let listener_index = |name: &str| process.listener_index(name);
        let pool_index = |name: &str| config.pools.iter().position(|p| p.name == name);
        let cache_store =
            crate::cache::open_store(previous.and_then(|o| o.cache_store), config.cache.as_ref());
        let store = config.cache.as_ref().and(cache_store);
        let routes =
            config
                .routes
                .iter()
                .map(|r| Route {
                    name: r.name.clone(),
                    pool: r.pool.as_deref().and_then(pool_index),
                    strip: r.path_prefix.clone().filter(|p| r.strip_prefix && p != "/"),
                    redirect_https: r.redirect_https,
                    acl: Acl::new(&r.allow, &r.deny),
                    request_headers: r.request_headers.clone(),
                    response_headers: r.response_headers.clone(),
                    security_headers: r.security_headers,
                    max_body_bytes: r.max_body_bytes,
                    metrics: RouteMetrics::new(&r.name, r.pool.as_deref().unwrap_or("")),
                    // An unchanged limit keeps its state (buckets) across a reload.
                    rate_limit: r.rate_limit.as_ref().map(|c| {
                        previous
                            .and_then(|old| old.routes.iter().find(|o| o.name == r.name))
                            .and_then(|o| o.rate_limit.clone())
                            .filter(|l| same_limit(&l.config, c))
                            .unwrap_or_else(|| Arc::new(RateLimiter::new(c, cluster.as_ref())))
                    }),
                    mirror: r.traffic.mirror.as_ref().and_then(|m| {
                        Some(RouteMirror::new(&r.name, pool_index(&m.pool)?, m.percent))
                    }),
                    cache: r
                        .cache
                        .as_ref()
                        .zip(store)
                        .map(|(c, store)| crate::cache::RouteCache::new(&r.name, c, store)),
                })
                .collect();
        Runtime {
            table: RouteTable::compile(&config.routes, listener_index),
            routes,
            pools: config
                .pools
                .iter()
                .map(|p| {
                    let kept = previous.and_then(|old| {
                        old.pools
                            .iter()
                            .find(|o| o.name == p.name && same_definition(&o.definition, p))
                    });
                    match kept {
                        Some(pool) => pool.clone(),
                        None => {
                            let pool =
                                Pool::new(p, default_check(config, &p.name), state.pool(&p.name));
                            // Unchanged discovery settings keep their backends and health.
                            let replaced = previous
                                .and_then(|old| old.pools.iter().find(|o| o.name == p.name));
                            if let Some(old) = replaced {
                                pool.inherit_discovered(old);
                            }
                            Arc::new(pool)
                        }
                    }
                })
                .collect(),
            tcp_services: config
                .tcp_services
                .iter()
                .filter_map(|t| {
                    Some(TcpService {
                        name: t.name.clone(),
                        pool: pool_index(&t.pool)?,
                        idle_timeout: t.idle_timeout,
                        metrics: TcpMetrics::new(&t.name),
                    })
                })
                .collect(),
            listeners: process
                .listeners
                .iter()
                .enumerate()
                .map(|(index, bound)| {
                    let current = config.listeners.iter().find(|l| l.name == bound.name);
                    current
                        .map(ListenerInfo::of)
                        .or_else(|| previous.and_then(|old| old.listeners.get(index).cloned()))
                        .unwrap_or_else(|| ListenerInfo {
                            name: bound.name.clone(),
                            tls: bound.tls.is_some(),
                            limits: ListenerLimits::default(),
                            proxy_protocol: false,
                        })
                })
                .collect(),
            trusted_proxies: config.server.trusted_proxies.clone(),
            deny: Acl::deny_only(&config.server.deny),
            // Where the process serves TLS (a moved listener keeps its old port until
            // an upgrade).
            https_port: process
                .listeners
                .iter()
                .find(|l| l.tls.is_some())
                .map(|l| l.listen.port())
                .unwrap_or(443),
            access_log: match previous {
                Some(old) if old.access_log.target() == &config.log.access_log => {
                    old.access_log.clone()
                }
                _ => Arc::new(AccessLog::new(config.log.access_log.clone())),
            },
            unrouted_metrics: RouteMetrics::new("", ""),
            // The metrics listener is bound at start (or not).
            metrics_enabled: process.metrics_listen.is_some(),
            config: Arc::new(config.clone()),
            geoip: config.server.geoip.as_ref().and_then(|g| {
                crate::geo::GeoIp::open(&g.database)
                    .map_err(|e| log::error!("{e}; client countries are unknown"))
                    .ok()
                    .map(Arc::new)
            }),
            process,
            cluster,
            cache_store,
        }
    }
}

/// postgres / mysql for a pool behind a tcp_service of that protocol, else tcp.
fn default_check(config: &Config, pool: &str) -> HealthKind {
    match config
        .tcp_services
        .iter()
        .find(|t| t.pool == pool)
        .map(|t| t.protocol)
    {
        Some(TcpProtocol::Postgres) => HealthKind::Postgres,
        Some(TcpProtocol::Mysql) => HealthKind::Mysql,
        _ => HealthKind::Tcp,
    }
}

/// Shared by every service; `load()` per request, `store()` on reload.
pub type SharedRuntime = Arc<ArcSwap<Runtime>>;

pub fn shared(runtime: Runtime) -> SharedRuntime {
    Arc::new(ArcSwap::from_pointee(runtime))
}
