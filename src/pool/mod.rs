//! A backend pool: its members with their live state (health, circuit, drain, in-flight
//! count), selection across primaries and backups, stickiness, and the upstream settings.
//! Membership (static + discovered + admin changes) is swapped atomically; a request keeps
//! the `Members` snapshot it started with.

pub mod added;
pub mod backend;
pub mod budget;
pub mod circuit;
pub mod db_checks;
pub mod health;
pub mod members;
pub mod outlier;
pub mod overlay;
pub mod proxy_out;
pub mod queue;
pub mod select;
pub mod slow_start;
pub mod source;
pub mod sticky;

use crate::config::{
    Algorithm, BackendConfig, CircuitBreakerConfig, HashKey, HealthCheckConfig, HealthKind,
    PoolConfig, Timeouts, UpstreamConfig,
};
use arc_swap::ArcSwap;
pub use backend::{Backend, InFlight};
use members::Tier;
pub use members::{Claim, Members};
use overlay::PoolOverlay;
pub use source::{Discovered, Source};
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use sticky::Sticky;

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
    /// Backends found by each discovery provider, merged with the static ones on every
    /// change.
    discovered: Mutex<BTreeMap<Source, Vec<Discovered>>>,
    /// Changes made through the admin API (added, re-weighted, drained, deleted).
    overlay: Mutex<PoolOverlay>,
    /// The addresses of admin-added backends given by host name.
    added_names: added::AddedNames,
    /// Retries in progress against active requests (`retry_budget`).
    pub retry_budget: Arc<budget::RetryBudget>,
    /// Requests waiting for a backend slot (`queue`).
    pub queue: Arc<queue::Queue>,
    /// Set after the first membership: backends joining later ramp up (`slow_start`).
    started: std::sync::atomic::AtomicBool,
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
                panic_threshold: c.traffic.panic_threshold,
            }),
            discovered: Mutex::new(BTreeMap::new()),
            overlay: Mutex::new(overlay),
            added_names: added::AddedNames::default(),
            retry_budget: Arc::default(),
            started: Default::default(),
            queue: Arc::default(),
        };
        pool.rebuild();
        pool.started.store(true, Ordering::Relaxed);
        pool
    }

    /// The current membership snapshot.
    pub fn members(&self) -> Arc<Members> {
        self.members.load_full()
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

    /// Records where an admin-added backend's name resolved (the API looked it up).
    pub fn remember_added(&self, address: &str, addr: std::net::SocketAddr) {
        self.added_names.remember(address, addr);
    }

    /// Resolves the admin-added backends given by a name not looked up yet (from the
    /// state file or another instance) and rebuilds when one was found.
    pub async fn resolve_added(&self) {
        let overlay = self.overlay();
        let names = overlay.added.iter().map(|a| a.address.as_str());
        if self.added_names.resolve(names).await {
            self.rebuild();
        }
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

    /// Outlier state for a new backend, when the pool has `outlier_detection`.
    fn new_outlier(&self) -> Option<outlier::Outlier> {
        let config = self.definition.traffic.outlier_detection.as_ref()?;
        Some(outlier::Outlier::new(self.name.as_str().into(), config))
    }

    /// Whether requests queue for a slot: `queue.max` with `max_connections`.
    pub fn queued(&self) -> bool {
        self.definition.traffic.queue.max > 0
            && self
                .circuit_breaker
                .as_ref()
                .is_some_and(|b| b.max_connections > 0)
    }

    /// A slow-start ramp for a new backend, when the pool has `slow_start`: ramping at
    /// once when it joins a running pool, not for the pool's first members.
    fn new_slow_start(&self) -> Option<slow_start::SlowStart> {
        let window = self.definition.traffic.slow_start;
        let running = self.started.load(Ordering::Relaxed);
        (!window.is_zero()).then(|| slow_start::SlowStart::new(window, running))
    }

    /// Rebuilds the membership from static + admin-added + discovered backends, keeping
    /// the live state of every backend whose address, weight and role are unchanged.
    fn rebuild(&self) {
        let old = self.members.load_full();
        let discovered = relock(&self.discovered).clone();
        let overlay = relock(&self.overlay).clone();
        let mut specs: Vec<(BackendConfig, Source, bool)> = Vec::new();
        for b in &self.definition.backends {
            if overlay.deleted.contains(&b.address) {
                continue;
            }
            let mut b = b.clone();
            if let Some(w) = overlay.weights.get(&b.address) {
                b.weight = *w;
            }
            specs.push((b, Source::Static, false));
        }
        for a in &overlay.added {
            // A name not resolved yet joins once `resolve_added` has looked it up.
            let Some(addr) = self.added_names.addr_of(&a.address) else {
                continue;
            };
            if !specs.iter().any(|s| s.0.address == a.address) {
                specs.push((
                    BackendConfig {
                        address: a.address.clone(),
                        addr,
                        weight: a.weight,
                        backup: false,
                    },
                    Source::Api,
                    false,
                ));
            }
        }
        for (source, found) in discovered {
            for d in found {
                if !specs.iter().any(|s| s.0.addr == d.addr) {
                    let mut spec = source::as_backend(&d);
                    if let Some(w) = overlay.weights.get(&spec.address) {
                        spec.weight = *w;
                    }
                    specs.push((spec, source, d.draining));
                }
            }
        }
        let backends: Vec<Arc<Backend>> = specs
            .iter()
            .map(|(spec, source, _)| {
                let weight = self.nonzero_weight(spec);
                match old.backends.iter().find(|b| {
                    b.address == spec.address && b.backup == spec.backup && b.source == *source
                }) {
                    // Same backend: it keeps health, circuit and counters; a new weight
                    // applies in place.
                    Some(b) => {
                        b.weight.store(weight.get(), Ordering::Relaxed);
                        b.clone()
                    }
                    None => Arc::new(
                        Backend::new(spec, weight, self.circuit_breaker.as_ref(), *source)
                            .with_outlier(self.new_outlier())
                            .with_slow_start(self.new_slow_start())
                            .with_queue(self.queued().then(|| self.queue.clone())),
                    ),
                }
            })
            .collect();
        for (b, (_, _, discovered_draining)) in backends.iter().zip(&specs) {
            b.set_draining(*discovered_draining || overlay.draining.contains(&b.address));
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
            panic_threshold: self.definition.traffic.panic_threshold,
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
mod tests;
