//! Prometheus metrics (SPEC §6). Request counters and latency histograms are resolved
//! to label handles when the runtime is built and cached per (method, status) on first
//! use, so the request path does no string formatting or lookups by name. Backend
//! gauges and counters are read from the live pool state at scrape time.

use crate::runtime::SharedRuntime;
use async_trait::async_trait;
use http::Response;
use once_cell::sync::{Lazy, OnceCell};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
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
    pub certificate_expiry: prometheus::GaugeVec,
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
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
        certificate_expiry: prometheus::GaugeVec::new(
            Opts::new(
                "switchyard_tls_certificate_expiry_timestamp_seconds",
                "Expiry time of a served certificate (Unix seconds).",
            ),
            &["listener", "name"],
        )
        .unwrap_or_else(|e| panic!("gauge: {e}")),
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
        Box::new(m.certificate_expiry.clone()),
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
}

impl RouteMetrics {
    pub fn new(route: &str, pool: &str) -> Self {
        RouteMetrics {
            rate_limited: METRICS.rate_limited.with_label_values(&[route]),
            route: route.to_string(),
            pool: pool.to_string(),
            duration: METRICS.http_duration.with_label_values(&[route, pool]),
            by_method: Default::default(),
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

/// Backend gauges and counters, read from the current runtime at scrape time.
struct PoolCollector {
    runtime: SharedRuntime,
    descs: Vec<Desc>,
}

impl PoolCollector {
    fn new(runtime: SharedRuntime) -> Self {
        let descs = [
            (
                "switchyard_backend_up",
                "1 when the backend is healthy (active checks), else 0.",
            ),
            (
                "switchyard_backend_active_requests",
                "Requests in flight to the backend.",
            ),
            (
                "switchyard_backend_requests_total",
                "Requests sent to the backend by outcome.",
            ),
            (
                "switchyard_circuit_breaker_state",
                "Circuit state: 0 closed, 1 open, 2 half_open.",
            ),
        ]
        .iter()
        .filter_map(|(n, h)| {
            Desc::new(n.to_string(), h.to_string(), vec![], Default::default()).ok()
        })
        .collect();
        PoolCollector { runtime, descs }
    }
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let up = gauge_vec(
            "switchyard_backend_up",
            "1 when the backend is healthy (active checks), else 0.",
            &["pool", "backend"],
        );
        let active = gauge_vec(
            "switchyard_backend_active_requests",
            "Requests in flight to the backend.",
            &["pool", "backend"],
        );
        let total = counter_vec(
            "switchyard_backend_requests_total",
            "Requests sent to the backend by outcome.",
            &["pool", "backend", "outcome"],
        );
        let circuit = gauge_vec(
            "switchyard_circuit_breaker_state",
            "Circuit state: 0 closed, 1 open, 2 half_open.",
            &["pool", "backend"],
        );
        let rt = self.runtime.load();
        for pool in &rt.pools {
            for b in pool.members().backends.iter() {
                let labels = [pool.name.as_str(), b.address.as_str()];
                up.with_label_values(&labels).set(b.healthy() as i64);
                active.with_label_values(&labels).set(b.in_flight() as i64);
                circuit.with_label_values(&labels).set(b.circuit() as i64);
                let (ok, failed) = b.outcomes();
                total
                    .with_label_values(&[labels[0], labels[1], "success"])
                    .inc_by(ok);
                total
                    .with_label_values(&[labels[0], labels[1], "failure"])
                    .inc_by(failed);
            }
        }
        let mut families = Vec::new();
        families.extend(up.collect());
        families.extend(active.collect());
        families.extend(total.collect());
        families.extend(circuit.collect());
        families
    }
}

/// Adds the live pool view to the registry (once, at startup).
pub fn register_pools(runtime: SharedRuntime) {
    if let Err(e) = METRICS
        .registry
        .register(Box::new(PoolCollector::new(runtime)))
    {
        log::error!("metrics registration failed: {e}");
    }
}

/// The exposition text for GET /metrics.
pub fn render() -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * 1024);
    if let Err(e) = TextEncoder::new().encode(&METRICS.registry.gather(), &mut out) {
        log::error!("metrics encoding failed: {e}");
    }
    out
}

/// GET /metrics on the metrics listener.
pub struct MetricsApp;

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        if session.req_header().uri.path() != "/metrics" {
            return crate::admin::respond(
                http::StatusCode::NOT_FOUND,
                "text/plain",
                b"not found; try /metrics\n".to_vec(),
            );
        }
        crate::admin::respond(
            http::StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            render(),
        )
    }
}
