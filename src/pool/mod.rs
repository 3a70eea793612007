//! A backend pool: its members with their live state (health, circuit, drain, in-flight
//! count), selection across primaries and backups, stickiness, and the upstream settings.
//! Membership (static + discovered + admin changes) is swapped atomically; a request keeps
//! the `Members` snapshot it started with.

pub mod circuit;
pub mod db_checks;
pub mod discovery;
pub mod health;
pub mod overlay;
pub mod select;
pub mod sticky;

use crate::config::{
    Algorithm, BackendConfig, CircuitBreakerConfig, HashKey, HealthCheckConfig, HealthKind,
    PoolConfig, Timeouts, UpstreamConfig,
};
use arc_swap::ArcSwap;
use circuit::{Breaker, CircuitState};
use overlay::PoolOverlay;
use select::Selector;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use sticky::Sticky;

/// One backend and the state every part of Switchyard reads it from.
pub struct Backend {
    /// `host:port` as configured (or `ip:port` when discovered): the name in logs,
    /// the API and metrics.
    pub address: String,
    pub addr: SocketAddr,
    /// Changed in place by the admin API (the backend keeps its live state); never 0
    /// (every store goes through `NonZeroU32`).
    weight: AtomicU32,
    pub backup: bool,
    healthy: AtomicBool,
    draining: AtomicBool,
    in_flight: AtomicUsize,
    /// 0 = unlimited.
    max_connections: usize,
    pub breaker: Option<Breaker>,
    succeeded: AtomicU64,
    failed: AtomicU64,
}

impl Backend {
    fn new(c: &BackendConfig, weight: NonZeroU32, breaker: Option<&CircuitBreakerConfig>) -> Self {
        Backend {
            address: c.address.clone(),
            addr: c.addr,
            weight: AtomicU32::new(weight.get()),
            backup: c.backup,
            healthy: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            max_connections: breaker.map(|b| b.max_connections as usize).unwrap_or(0),
            breaker: breaker.map(Breaker::new),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    pub fn weight(&self) -> NonZeroU32 {
        NonZeroU32::new(self.weight.load(Ordering::Relaxed)).unwrap_or(NonZeroU32::MIN)
    }

    /// May take a new request: healthy, not draining, circuit admitting, not full.
    pub fn usable(&self) -> bool {
        self.available() && !self.full()
    }

    /// Healthy, not draining and the circuit admits (capacity aside).
    pub fn available(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
            && self.breaker.as_ref().is_none_or(|b| b.may_admit())
    }

    fn full(&self) -> bool {
        self.max_connections > 0 && self.in_flight.load(Ordering::Relaxed) >= self.max_connections
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Sets health; returns the previous value.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::Relaxed)
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
    }
}

/// A claimed backend: its index in `Members::backends` and the slot held on it.
pub struct Claim {
    pub idx: usize,
    pub guard: InFlight,
}

struct Tier {
    /// Indices into `Members::backends`.
    members: Vec<usize>,
    selector: Selector,
}

impl Tier {
    fn new(algorithm: Algorithm, backends: &[Arc<Backend>], backup: bool) -> Self {
        let members: Vec<usize> = (0..backends.len())
            .filter(|i| backends[*i].backup == backup)
            .collect();
        let weighted: Vec<(SocketAddr, NonZeroU32)> = members
            .iter()
            .map(|i| (backends[*i].addr, backends[*i].weight()))
            .collect();
        Tier {
            selector: Selector::new(algorithm, &weighted),
            members,
        }
    }
}

/// One membership snapshot: the backends and the selection structures over them.
pub struct Members {
    pub backends: Vec<Arc<Backend>>,
    primaries: Tier,
    backups: Tier,
    /// Sticky cookie value → backend index.
    sticky_values: HashMap<String, usize>,
    /// Backend index → its sticky cookie value.
    pub sticky_of: Vec<String>,
}

impl Members {
    /// Picks a usable backend not in `tried` (indices into `backends`): primaries first;
    /// backups only while no primary is left for this request (all unusable, or all
    /// already failed to connect).
    pub fn select(&self, key: &[u8], tried: &[usize]) -> Option<usize> {
        [&self.primaries, &self.backups]
            .into_iter()
            .find_map(|tier| {
                let usable = |i: usize| {
                    let m = tier.members[i];
                    self.backends[m].usable() && !tried.contains(&m)
                };
                tier.selector
                    .pick(key, usable, |i| self.backends[tier.members[i]].in_flight())
                    .map(|i| tier.members[i])
            })
    }

    /// The backend a sticky cookie names, if it exists and may take the request.
    pub fn sticky_target(&self, value: &[u8], tried: &[usize]) -> Option<usize> {
        let value = std::str::from_utf8(value).ok()?;
        let idx = *self.sticky_values.get(value)?;
        (self.backends[idx].usable() && !tried.contains(&idx)).then_some(idx)
    }

    /// Claims an in-flight slot on a backend not in `tried`: the one the sticky cookie
    /// names when it is usable, else a selection. Every selected backend is recorded in
    /// `tried`; one whose slot filled (or whose circuit stopped admitting) since it was
    /// selected is passed over, for at most `bound` selections in all. The same routine
    /// serves HTTP (bound: slots filling between selection and claim) and TCP (bound:
    /// the connect attempts left).
    pub fn claim(
        &self,
        key: &[u8],
        sticky: Option<&[u8]>,
        tried: &mut Vec<usize>,
        bound: usize,
    ) -> Option<Claim> {
        for _ in 0..bound {
            let idx = sticky
                .and_then(|c| self.sticky_target(c, tried))
                .or_else(|| self.select(key, tried))?;
            tried.push(idx);
            if let Some(guard) = InFlight::acquire(&self.backends[idx]) {
                return Some(Claim { idx, guard });
            }
        }
        None
    }

    /// The index of the backend named `address`.
    pub fn find(&self, address: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.address == address)
    }
}

pub struct Pool {
    pub name: String,
    pub algorithm: Algorithm,
    pub hash_key: HashKey,
    pub retries: u32,
    pub timeouts: Timeouts,
    pub upstream: UpstreamConfig,
    /// Trust for upstream TLS (`upstream.tls.ca_file`), loaded once; `None` = system store.
    pub upstream_ca: Option<Arc<Box<[openssl::x509::X509]>>>,
    /// Keeps this pool's upstream connections apart from every other pool's (and from
    /// an earlier definition of this pool): Pingora's reuse hash ignores the CA a TLS
    /// connection was verified against, so without it a pool that does not trust a
    /// backend could reuse a connection another pool verified (`HttpPeer::group_key`).
    pub reuse_group: u64,
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    pub on_5xx: bool,
    pub health_check: Option<HealthCheckConfig>,
    /// The check that runs: the configured kind, else the default for how the pool is used.
    pub health_kind: HealthKind,
    pub sticky: Option<Sticky>,
    /// The configuration this pool was built from (a reload keeps the pool, and its
    /// state, when this is unchanged).
    pub definition: PoolConfig,
    members: ArcSwap<Members>,
    /// Backends found by discovery, merged with the static ones on every change.
    discovered: Mutex<Vec<BackendConfig>>,
    /// Changes made through the admin API (added, re-weighted, drained, deleted).
    overlay: Mutex<PoolOverlay>,
}

impl Pool {
    /// `default_check` applies when the pool's health_check names no kind; `overlay`
    /// holds the admin API's changes to this pool.
    pub fn new(c: &PoolConfig, default_check: HealthKind, overlay: PoolOverlay) -> Self {
        let sticky = c.sticky.as_ref().map(|s| Sticky::new(&c.name, s));
        let pool = Pool {
            name: c.name.clone(),
            algorithm: c.algorithm,
            hash_key: c.hash_key.clone(),
            retries: c.retries,
            timeouts: c.timeouts,
            upstream: c.upstream.clone(),
            upstream_ca: c
                .upstream
                .tls
                .as_ref()
                .and_then(|t| t.ca_file.as_ref())
                .and_then(|f| std::fs::read(f).ok())
                .and_then(|pem| openssl::x509::X509::stack_from_pem(&pem).ok())
                .map(|certs| Arc::new(certs.into_boxed_slice())),
            reuse_group: reuse_group(c),
            circuit_breaker: c.circuit_breaker.clone(),
            on_5xx: c.circuit_breaker.as_ref().is_some_and(|b| b.on_5xx),
            health_check: c.health_check.clone(),
            health_kind: c
                .health_check
                .as_ref()
                .and_then(|h| h.kind)
                .unwrap_or(default_check),
            sticky,
            definition: c.clone(),
            members: ArcSwap::from_pointee(Members {
                backends: Vec::new(),
                primaries: Tier::new(c.algorithm, &[], false),
                backups: Tier::new(c.algorithm, &[], true),
                sticky_values: HashMap::new(),
                sticky_of: Vec::new(),
            }),
            discovered: Mutex::new(Vec::new()),
            overlay: Mutex::new(overlay),
        };
        pool.rebuild();
        pool
    }

    /// The current membership snapshot.
    pub fn members(&self) -> Arc<Members> {
        self.members.load_full()
    }

    /// Replaces the discovered backends (DNS); static ones always stay.
    pub fn set_discovered(&self, found: Vec<BackendConfig>) {
        *relock(&self.discovered) = found;
        self.rebuild();
    }

    /// The admin API's changes to this pool, as applied.
    pub fn overlay(&self) -> PoolOverlay {
        relock(&self.overlay).clone()
    }

    /// True when `address` is one of the file's backends (not added or discovered).
    pub fn is_static(&self, address: &str) -> bool {
        self.definition
            .backends
            .iter()
            .any(|b| b.address == address)
    }

    /// Replaces the admin API's changes to this pool and rebuilds the membership.
    pub fn set_overlay(&self, overlay: PoolOverlay) {
        *relock(&self.overlay) = overlay;
        self.rebuild();
    }

    /// A backend's weight as the selectors take it. The file and the admin API allow
    /// 1–1000 only, but an overlay also comes from the state file and from other
    /// instances through Redis: a 0 there counts as 1 (with a warning) rather than
    /// emptying the round-robin period or tripping Ketama's assertion.
    fn nonzero_weight(&self, spec: &BackendConfig) -> NonZeroU32 {
        NonZeroU32::new(spec.weight).unwrap_or_else(|| {
            log::warn!(
                "pool {}: backend {} has weight 0; using 1",
                self.name,
                spec.address
            );
            NonZeroU32::MIN
        })
    }

    /// Rebuilds the membership from static + admin-added + discovered backends, keeping
    /// the live state of every backend whose address, weight and role are unchanged.
    fn rebuild(&self) {
        let old = self.members.load_full();
        let discovered = relock(&self.discovered).clone();
        let overlay = relock(&self.overlay).clone();
        let mut specs: Vec<BackendConfig> = Vec::new();
        for b in &self.definition.backends {
            if overlay.deleted.contains(&b.address) {
                continue;
            }
            let mut b = b.clone();
            if let Some(w) = overlay.weights.get(&b.address) {
                b.weight = *w;
            }
            specs.push(b);
        }
        for a in &overlay.added {
            match crate::config::parse::resolve_backend(&a.address).ok() {
                Some(addr) if !specs.iter().any(|s| s.address == a.address) => {
                    specs.push(BackendConfig {
                        address: a.address.clone(),
                        addr,
                        weight: a.weight,
                        backup: false,
                    })
                }
                Some(_) => {}
                None => log::warn!(
                    "pool {}: admin-added backend {} does not resolve; skipped",
                    self.name,
                    a.address
                ),
            }
        }
        for d in discovered {
            if !specs.iter().any(|s| s.addr == d.addr) {
                specs.push(d);
            }
        }
        let backends: Vec<Arc<Backend>> = specs
            .iter()
            .map(|spec| {
                let weight = self.nonzero_weight(spec);
                match old
                    .backends
                    .iter()
                    .find(|b| b.address == spec.address && b.backup == spec.backup)
                {
                    // Same backend: it keeps health, circuit and counters; a new weight
                    // applies in place.
                    Some(b) => {
                        b.weight.store(weight.get(), Ordering::Relaxed);
                        b.clone()
                    }
                    None => Arc::new(Backend::new(spec, weight, self.circuit_breaker.as_ref())),
                }
            })
            .collect();
        for b in &backends {
            b.set_draining(overlay.draining.contains(&b.address));
        }
        let sticky_of: Vec<String> = match &self.sticky {
            Some(s) => backends.iter().map(|b| s.value_for(&b.address)).collect(),
            None => Vec::new(),
        };
        let members = Members {
            primaries: Tier::new(self.algorithm, &backends, false),
            backups: Tier::new(self.algorithm, &backends, true),
            sticky_values: sticky_of
                .iter()
                .enumerate()
                .map(|(i, v)| (v.clone(), i))
                .collect(),
            sticky_of,
            backends,
        };
        self.members.store(Arc::new(members));
    }
}

/// The value behind `m`, also after a panic elsewhere under it: the value is only ever
/// replaced whole, so it is still valid, and a default would silently drop every drain
/// and delete at the next rebuild.
fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The connection-reuse group of a pool: its name and upstream TLS settings.
fn reuse_group(c: &PoolConfig) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    c.name.hash(&mut h);
    if let Some(t) = &c.upstream.tls {
        (&t.sni, t.verify, &t.ca_file).hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool_with(backups: &[bool], breaker: Option<CircuitBreakerConfig>) -> Pool {
        let backends = backups
            .iter()
            .enumerate()
            .map(|(i, b)| BackendConfig {
                address: format!("127.0.0.1:{}", 9000 + i),
                addr: SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)),
                weight: 1,
                backup: *b,
            })
            .collect();
        Pool::new(
            &PoolConfig {
                name: "p".into(),
                algorithm: Algorithm::RoundRobin,
                hash_key: HashKey::ClientIp,
                backends,
                discovery: None,
                health_check: None,
                circuit_breaker: breaker,
                sticky: None,
                retries: 1,
                timeouts: Timeouts::default(),
                upstream: UpstreamConfig::default(),
            },
            HealthKind::Tcp,
            PoolOverlay::default(),
        )
    }

    fn pool(backups: &[bool]) -> Pool {
        pool_with(backups, None)
    }

    #[test]
    fn backups_only_when_no_primary_is_usable() {
        let p = pool(&[false, true]);
        let m = p.members();
        for _ in 0..5 {
            assert_eq!(m.select(b"", &[]), Some(0));
        }
        m.backends[0].set_healthy(false);
        assert_eq!(m.select(b"", &[]), Some(1));
        m.backends[0].set_healthy(true);
        m.backends[0].set_draining(true);
        assert_eq!(m.select(b"", &[]), Some(1));
    }

    #[test]
    fn retries_avoid_tried_backends() {
        let p = pool(&[false, false, false]);
        let m = p.members();
        let first = m.select(b"", &[]).unwrap_or(9);
        let second = m.select(b"", &[first]).unwrap_or(9);
        assert_ne!(first, second);
        assert_eq!(m.select(b"", &[0, 1, 2]), None);
    }

    #[test]
    fn backup_takes_the_retry_when_every_primary_failed() {
        let p = pool(&[false, true]);
        assert_eq!(p.members().select(b"", &[0]), Some(1));
    }

    #[test]
    fn a_poisoned_overlay_lock_keeps_the_overlay() {
        let p = pool(&[false, false]);
        let mut o = PoolOverlay::default();
        o.draining.insert("127.0.0.1:9000".into());
        p.set_overlay(o.clone());
        let poisoned = std::thread::scope(|s| {
            s.spawn(|| {
                let _held = p.overlay.lock();
                panic!("poison the lock");
            })
            .join()
        });
        assert!(poisoned.is_err() && p.overlay.is_poisoned());
        assert_eq!(p.overlay(), o, "the drain survives");
        p.rebuild();
        assert!(p.members().backends[0].draining());
    }

    #[test]
    fn claim_records_tried_and_skips_them() {
        let p = pool(&[false, false]);
        let m = p.members();
        let mut tried = Vec::new();
        let a = m.claim(b"", None, &mut tried, 2).map(|c| c.idx);
        let b = m.claim(b"", None, &mut tried, 2).map(|c| c.idx);
        assert!(a.is_some() && b.is_some() && a != b);
        assert_eq!(tried.len(), 2);
        assert!(m.claim(b"", None, &mut tried, 2).is_none(), "all tried");
    }

    #[test]
    fn claim_uses_backups_only_when_no_primary_is_left() {
        let p = pool(&[false, true]);
        let m = p.members();
        let mut tried = Vec::new();
        assert_eq!(m.claim(b"", None, &mut tried, 1).map(|c| c.idx), Some(0));
        assert_eq!(m.claim(b"", None, &mut tried, 1).map(|c| c.idx), Some(1));
    }

    #[test]
    fn claim_passes_over_full_backends_and_holds_a_slot() {
        let p = pool_with(
            &[false, false],
            Some(CircuitBreakerConfig {
                max_connections: 1,
                ..Default::default()
            }),
        );
        let m = p.members();
        let held = InFlight::acquire(&m.backends[0]);
        assert!(held.is_some());
        let mut tried = Vec::new();
        let c = m.claim(b"", None, &mut tried, 2);
        assert_eq!(c.as_ref().map(|c| c.idx), Some(1));
        assert_eq!(m.backends[1].in_flight(), 1, "the claim holds the slot");
        drop(c);
        assert_eq!(m.backends[1].in_flight(), 0);
        assert!(m.claim(b"", None, &mut Vec::new(), 2).is_some());
    }

    #[test]
    fn claim_stops_at_its_bound() {
        let p = pool(&[false, false, false]);
        let m = p.members();
        let mut tried = Vec::new();
        assert!(m.claim(b"", None, &mut tried, 0).is_none());
        assert!(tried.is_empty(), "a zero bound selects nothing");
        assert!(m.claim(b"", None, &mut tried, 1).is_some());
        assert_eq!(tried.len(), 1);
    }

    #[test]
    fn max_connections_skips_full_backends() {
        let p = pool_with(
            &[false, false],
            Some(CircuitBreakerConfig {
                max_connections: 1,
                ..Default::default()
            }),
        );
        let m = p.members();
        let g0 = InFlight::acquire(&m.backends[0]);
        assert!(g0.is_some());
        assert_eq!(m.select(b"", &[]), Some(1));
        let g1 = InFlight::acquire(&m.backends[1]);
        assert!(g1.is_some());
        assert_eq!(m.select(b"", &[]), None);
        drop(g0);
        assert_eq!(m.select(b"", &[]), Some(0));
    }

    /// Regression: a weight of 0 (here from an admin overlay, as a state file or another
    /// instance could carry) reached Pingora's Ketama ring, which asserts on it, and an
    /// all-zero tier divided by zero in round robin.
    #[test]
    fn a_zero_weight_never_reaches_a_selector() {
        for algorithm in [
            Algorithm::ConsistentHash,
            Algorithm::RoundRobin,
            Algorithm::Random,
            Algorithm::IpHash,
            Algorithm::LeastConn,
        ] {
            let mut p = pool(&[false, false]);
            p.algorithm = algorithm;
            p.definition.algorithm = algorithm;
            let address = p.members().backends[0].address.clone();
            let mut overlay = PoolOverlay::default();
            overlay.weights.insert(address, 0);
            overlay.added.push(overlay::AddedBackend {
                address: "127.0.0.1:9200".into(),
                weight: 0,
            });
            p.set_overlay(overlay);
            let m = p.members();
            assert_eq!(m.backends.len(), 3, "{algorithm:?}");
            assert!(m.backends.iter().all(|b| b.weight().get() == 1));
            assert!(m.select(b"key", &[]).is_some(), "{algorithm:?}");
        }
    }

    #[test]
    fn rebuild_keeps_backend_state() {
        let p = pool(&[false, false]);
        p.members().backends[0].set_healthy(false);
        p.set_discovered(vec![BackendConfig {
            address: "127.0.0.1:9100".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 9100)),
            weight: 1,
            backup: false,
        }]);
        let m = p.members();
        assert_eq!(m.backends.len(), 3);
        assert!(!m.backends[0].healthy());
    }
}
