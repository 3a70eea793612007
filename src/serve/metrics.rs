//! The metrics listener: GET /metrics, and the backend gauges and counters read from the
//! live pool state at scrape time (so they need no updating on the request path).

use crate::observe::metrics::{counter_vec, gauge_vec, METRICS};
use crate::runtime::SharedRuntime;
use crate::serve::reply::respond;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, TextEncoder};

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
            (
                "switchyard_backend_ejected",
                "1 while outlier detection keeps the backend out, else 0.",
            ),
            (
                "switchyard_outlier_ejections_total",
                "Times outlier detection ejected the backend.",
            ),
            (
                "switchyard_pool_queue_length",
                "Requests waiting for a free backend slot (queue).",
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
        let ejected = gauge_vec(
            "switchyard_backend_ejected",
            "1 while outlier detection keeps the backend out, else 0.",
            &["pool", "backend"],
        );
        let ejections = counter_vec(
            "switchyard_outlier_ejections_total",
            "Times outlier detection ejected the backend.",
            &["pool", "backend"],
        );
        let queue = gauge_vec(
            "switchyard_pool_queue_length",
            "Requests waiting for a free backend slot (queue).",
            &["pool"],
        );
        let rt = self.runtime.load();
        for pool in &rt.pools {
            queue
                .with_label_values(&[pool.name.as_str()])
                .set(pool.queue.len() as i64);
            for b in pool.members().backends.iter() {
                let labels = [pool.name.as_str(), b.address.as_str()];
                up.with_label_values(&labels).set(b.healthy() as i64);
                active.with_label_values(&labels).set(b.in_flight() as i64);
                circuit.with_label_values(&labels).set(b.circuit() as i64);
                ejected.with_label_values(&labels).set(b.ejected() as i64);
                ejections
                    .with_label_values(&labels)
                    .inc_by(b.outlier.as_ref().map_or(0, |o| o.ejections()));
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
        families.extend(ejected.collect());
        families.extend(ejections.collect());
        families.extend(queue.collect());
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
            return respond(
                http::StatusCode::NOT_FOUND,
                "text/plain",
                b"not found; try /metrics\n".to_vec(),
            );
        }
        respond(
            http::StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            render(),
        )
    }
}
