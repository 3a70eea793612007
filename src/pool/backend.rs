//! One backend's live state (health, drain, circuit, in-flight count, weight, outcome
//! counters), read by selection, the admin API, the dashboard and `/metrics`, and the
//! in-flight slot a request or TCP session holds on it.

use super::circuit::{Breaker, CircuitState};
use super::outlier::Outlier;
use super::slow_start::SlowStart;
use crate::config::{BackendConfig, CircuitBreakerConfig};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// One backend and the state every part of Switchyard reads it from.
pub struct Backend {
    /// `host:port` as configured (or `ip:port` when discovered): the name in logs,
    /// the API and metrics.
    pub address: String,
    pub addr: SocketAddr,
    /// The host of `address` (brackets off an IPv6 literal): the SNI of a TLS pool
    /// without `upstream.tls.sni`, worked out once.
    pub host: Box<str>,
    /// Whether `host` is an IP literal (its certificate is checked by IP SAN).
    pub host_is_ip: bool,
    /// Changed in place by the admin API (the backend keeps its live state); never 0
    /// (every store goes through `NonZeroU32`).
    pub(super) weight: AtomicU32,
    pub backup: bool,
    /// The file, a discovery provider or the admin API.
    pub source: super::Source,
    healthy: AtomicBool,
    draining: AtomicBool,
    in_flight: AtomicUsize,
    /// 0 = unlimited.
    max_connections: usize,
    pub breaker: Option<Breaker>,
    /// Passive ejection (`outlier_detection`), when the pool has it.
    pub outlier: Option<Outlier>,
    /// The ramp after joining or coming back (`slow_start`), when the pool has one.
    pub slow_start: Option<SlowStart>,
    /// The pool's queue (`queue.max` > 0): told when a slot is released.
    queue: Option<Arc<super::queue::Queue>>,
    succeeded: AtomicU64,
    failed: AtomicU64,
    /// The last minute of requests this backend answered, for `GET /api/v1/stats`.
    pub stats: crate::observe::stats::Window,
}

/// `host` of `host:port`, brackets off an IPv6 literal.
pub fn host_of(address: &str) -> &str {
    match address.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => address,
    }
}

impl Backend {
    pub(super) fn new(
        c: &BackendConfig,
        weight: NonZeroU32,
        breaker: Option<&CircuitBreakerConfig>,
        source: super::Source,
    ) -> Self {
        let host = host_of(&c.address);
        Backend {
            address: c.address.clone(),
            addr: c.addr,
            host: host.into(),
            host_is_ip: host.parse::<std::net::IpAddr>().is_ok(),
            weight: AtomicU32::new(weight.get()),
            backup: c.backup,
            source,
            healthy: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            max_connections: breaker.map(|b| b.max_connections as usize).unwrap_or(0),
            breaker: breaker.map(Breaker::new),
            outlier: None,
            slow_start: None,
            queue: None,
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            stats: Default::default(),
        }
    }

    /// The same backend with outlier detection.
    pub(super) fn with_outlier(mut self, outlier: Option<Outlier>) -> Self {
        self.outlier = outlier;
        self
    }

    /// The same backend with a slow-start ramp.
    pub(super) fn with_slow_start(mut self, slow_start: Option<SlowStart>) -> Self {
        self.slow_start = slow_start;
        self
    }

    /// The same backend, telling `queue` about released slots.
    pub(super) fn with_queue(mut self, queue: Option<Arc<super::queue::Queue>>) -> Self {
        self.queue = queue;
        self
    }

    /// Ejected by outlier detection right now (a return restarts the slow start).
    pub fn ejected(&self) -> bool {
        let Some(o) = &self.outlier else {
            return false;
        };
        match o.state(&self.address) {
            super::outlier::State::Ejected => true,
            super::outlier::State::Returned => {
                self.ramp();
                false
            }
            super::outlier::State::In => false,
        }
    }

    fn ramp(&self) {
        if let Some(s) = &self.slow_start {
            s.restart();
        }
    }

    /// Takes this selection, given its slow-start ramp.
    pub fn ramp_admits(&self) -> bool {
        self.slow_start.as_ref().is_none_or(|s| s.admits())
    }

    pub fn weight(&self) -> NonZeroU32 {
        NonZeroU32::new(self.weight.load(Ordering::Relaxed)).unwrap_or(NonZeroU32::MIN)
    }

    /// May take a new request: healthy, not draining, circuit admitting, not full.
    pub fn usable(&self) -> bool {
        self.available() && !self.full()
    }

    /// Healthy, not draining, not ejected and the circuit admits (capacity aside).
    pub fn available(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
            && self.breaker.as_ref().is_none_or(|b| b.may_admit())
            && !self.ejected()
    }

    /// Not draining and not full: what panic mode still asks of a backend.
    pub fn panic_usable(&self) -> bool {
        !self.draining.load(Ordering::Relaxed) && !self.full()
    }

    fn full(&self) -> bool {
        self.max_connections > 0 && self.in_flight.load(Ordering::Relaxed) >= self.max_connections
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Sets health; returns the previous value. Coming back restarts the slow start.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if healthy && !was {
            self.ramp();
        }
        was
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// A draining backend gets no new requests; in-flight ones finish.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn circuit(&self) -> CircuitState {
        self.breaker
            .as_ref()
            .map(|b| b.state())
            .unwrap_or(CircuitState::Closed)
    }

    /// Requests sent here so far: (succeeded, failed).
    pub fn outcomes(&self) -> (u64, u64) {
        (
            self.succeeded.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Counts one attempt's outcome (a 5xx answer is a failure) and feeds the circuit
    /// breaker with what it counts (`breaker_success`: a 5xx fails it only with `on_5xx`).
    pub fn record(&self, success: bool, breaker_success: bool) {
        let counter = if success {
            &self.succeeded
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(b) = &self.breaker {
            if breaker_success {
                b.record_success()
            } else {
                b.record_failure()
            }
        }
    }
}

/// Counts a request against its backend until dropped (errors included).
pub struct InFlight(Arc<Backend>);

impl InFlight {
    /// Claims a slot; `None` when the backend filled up or its circuit stopped admitting
    /// since it was selected.
    pub fn acquire(backend: &Arc<Backend>) -> Option<Self> {
        let n = backend.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(backend.clone());
        if backend.max_connections > 0 && n >= backend.max_connections {
            return None;
        }
        if let Some(b) = &backend.breaker {
            if !b.admit() {
                return None;
            }
        }
        Some(guard)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        if let Some(q) = &self.0.queue {
            q.released();
        }
    }
}
