//! Prometheus metrics (SPEC §6). Request counters and latency histograms are resolved
//! to label handles when the runtime is built and cached per (method, status) on first
//! use, so the request path does no string formatting or lookups by name.
//! (The scrape-time backend view and the /metrics endpoint are in `serve::metrics`.)

use once_cell::sync::{Lazy, OnceCell};
use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use std::time::Duration;

/// 100 µs … 30 s: the range a proxy's request latencies live in.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

pub struct Metrics {
    pub registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    pub rate_limited: IntCounterVec,
    pub tcp_connections: IntCounterVec,
    pub tcp_active: IntGaugeVec,
    pub tcp_bytes: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub http_refused: IntCounterVec,
    pub tcp_refused: IntCounterVec,
    pub certificate_expiry: prometheus::GaugeVec,
    /// `routes[].mirror` copies by outcome (success, failure, skipped).
    pub mirror_requests: IntCounterVec,
    pub discovery_errors: IntCounterVec,
    /// SPEC §11: cache answers by route and X-Cache status (lower case).
    pub cache_requests: IntCounterVec,
    pub cache_size_bytes: prometheus::IntGauge,
    pub cache_objects: prometheus::IntGauge,
    pub cache_evictions: IntCounter,
}

pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

/// The process-wide metrics. Definitions are static, so a failure here is a bug
/// caught by the unit tests, not an input error.
pub static METRICS: Lazy<Metrics> = Lazy::new(|| {
    let registry = Registry::new();
    let m = Metrics {
        http_requests: counter_vec(
            "switchyard_http_requests_total",
            "HTTP requests answered, by route, pool, method and status code.",
            &["route", "pool", "method", "code"],
        ),
        http_duration: HistogramVec::new(
            HistogramOpts::new(
                "switchyard_http_request_duration_seconds",
                "Time from receiving a request to finishing its response.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "pool"],
        )
        .unwrap_or_else(|e| panic!("histogram: {e}")),
        rate_limited: counter_vec(
            "switchyard_rate_limited_total",
            "Requests answered 429 by a rate limit.",
            &["route"],
        ),
        tcp_connections: counter_vec(
            "switchyard_tcp_connections_total",
            "TCP connections accepted by a tcp_service.",
            &["service"],
        ),
        tcp_active: gauge_vec(
            "switchyard_tcp_active_connections",
            "Open TCP sessions of a tcp_service.",
            &["service"],
        ),
        tcp_bytes: counter_vec(
            "switchyard_tcp_bytes_total",
            "Bytes proxied by a tcp_service: rx read from clients, tx written to them.",
            &["service", "direction"],
        ),
        config_reloads: counter_vec(
            "switchyard_config_reloads_total",
            "Configuration reloads by result.",
            &["result"],
        ),
        http_refused: counter_vec(
            "switchyard_http_refused_total",
            "Client connections and requests refused at the edge, by listener and reason.",
            &["listener", "reason"],
        ),
        tcp_refused: counter_vec(
            "switchyard_tcp_refused_total",
            "Client connections refused by a tcp_service, by reason.",
            &["service", "reason"],
        ),
        certificate_expiry: prometheus::GaugeVec::new(
            Opts::new(
                "switchyard_tls_certificate_expiry_timestamp_seconds",
                "Expiry time of a served certificate (Unix seconds).",
            ),
            &["listener", "name"],
        )
        .unwrap_or_else(|e| panic!("gauge: {e}")),
        mirror_requests: counter_vec(
            "switchyard_mirror_requests_total",
            "Request copies sent to a route's mirror pool, by outcome.",
            &["route", "outcome"],
        ),
        discovery_errors: counter_vec(
            "switchyard_discovery_errors_total",
            "Failed discovery attempts (lookups, API requests, broken watches), by pool and provider.",
            &["pool", "provider"],
        ),
        cache_requests: counter_vec(
            "switchyard_cache_requests_total",
            "Requests on caching routes, by route and cache status (hit, miss, stale, expired, revalidated, bypass).",
            &["route", "status"],
        ),
        cache_size_bytes: prometheus::IntGauge::new(
            "switchyard_cache_size_bytes",
            "Bytes held by the HTTP cache (bodies, headers and bookkeeping).",
        )
        .unwrap_or_else(|e| panic!("gauge: {e}")),
        cache_objects: prometheus::IntGauge::new(
            "switchyard_cache_objects",
            "Objects held by the HTTP cache.",
        )
        .unwrap_or_else(|e| panic!("gauge: {e}")),
        cache_evictions: IntCounter::new(
            "switchyard_cache_evictions_total",
            "Objects the HTTP cache evicted to stay within cache.memory.",
        )
        .unwrap_or_else(|e| panic!("counter: {e}")),
        registry,
    };
    let build = gauge_vec(
        "switchyard_build_info",
        "Build information; always 1.",
        &["version"],
    );
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    let collectors: Vec<Box<dyn Collector>> = vec![
        Box::new(m.http_requests.clone()),
        Box::new(m.http_duration.clone()),
        Box::new(m.rate_limited.clone()),
        Box::new(m.tcp_connections.clone()),
        Box::new(m.tcp_active.clone()),
        Box::new(m.tcp_bytes.clone()),
        Box::new(m.config_reloads.clone()),
        Box::new(m.http_refused.clone()),
        Box::new(m.tcp_refused.clone()),
        Box::new(m.certificate_expiry.clone()),
        Box::new(m.mirror_requests.clone()),
        Box::new(m.discovery_errors.clone()),
        Box::new(m.cache_requests.clone()),
        Box::new(m.cache_size_bytes.clone()),
        Box::new(m.cache_objects.clone()),
        Box::new(m.cache_evictions.clone()),
        Box::new(build),
        Box::new(prometheus::process_collector::ProcessCollector::for_self()),
    ];
    for c in collectors {
        if let Err(e) = m.registry.register(c) {
            log::error!("metrics registration failed: {e}");
        }
    }
    // Both reload results exist from the start, so alerts can rate() them.
    m.config_reloads.with_label_values(&["success"]);
    m.config_reloads.with_label_values(&["failure"]);
    m
});

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

fn method_index(m: &http::Method) -> usize {
    METHODS
        .iter()
        .position(|x| *x == m.as_str())
        .unwrap_or(METHODS.len())
}

fn method_label(i: usize) -> &'static str {
    METHODS.get(i).copied().unwrap_or("OTHER")
}

/// The handles for one (route, pool) pair: the histogram, and counters per method and
/// status code created on first use.
pub struct RouteMetrics {
    rate_limited: IntCounter,
    route: String,
    pool: String,
    duration: Histogram,
    by_method: [OnceCell<Box<[OnceCell<IntCounter>]>>; METHODS.len() + 1],
    /// The route's last minute for `GET /api/v1/stats`, kept across reloads.
    pub stats: std::sync::Arc<super::stats::Window>,
}

impl RouteMetrics {
    pub fn new(route: &str, pool: &str) -> Self {
        RouteMetrics {
            rate_limited: METRICS.rate_limited.with_label_values(&[route]),
            route: route.to_string(),
            pool: pool.to_string(),
            duration: METRICS.http_duration.with_label_values(&[route, pool]),
            by_method: Default::default(),
            stats: super::stats::route_window(route),
        }
    }

    /// One request answered 429.
    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    pub fn observe(&self, method: &http::Method, status: u16, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
        let status = status.clamp(100, 599);
        let m = method_index(method);
        let codes =
            self.by_method[m].get_or_init(|| (100..=599).map(|_| OnceCell::new()).collect());
        codes[(status - 100) as usize]
            .get_or_init(|| {
                METRICS.http_requests.with_label_values(&[
                    &self.route,
                    &self.pool,
                    method_label(m),
                    &status.to_string(),
                ])
            })
            .inc();
    }
}
