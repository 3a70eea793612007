//! The HTTP cache (SPEC §11): one storage for the process (`store`), the per-route key
//! (`key`), the RFC 9111 decisions as pure functions (`policy`) and the purge index
//! (`index`). The proxy hooks that use them are in `http::cache`; the admin purge in
//! `admin::cache_api`.

pub mod index;
pub mod key;
pub mod policy;
pub mod store;

use crate::config::CacheConfig;
use once_cell::sync::OnceCell;
use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
pub use store::Store;

/// The process's storage: `kept` (the running one) or, on the first configuration that
/// has `cache`, a new one. It lives as long as the process (Pingora's cache wants
/// `'static` storage), so a reload keeps every object; new `cache.memory` or
/// `cache.max_object` values take effect at the next start or upgrade.
pub fn open_store(
    kept: Option<&'static Store>,
    config: Option<&CacheConfig>,
) -> Option<&'static Store> {
    let Some(config) = config else {
        return kept;
    };
    let memory = usize::try_from(config.memory).unwrap_or(usize::MAX);
    let max_object = usize::try_from(config.max_object).unwrap_or(usize::MAX);
    let Some(store) = kept else {
        return Some(Box::leak(Box::new(Store::new(memory, max_object))));
    };
    if store.memory != memory || store.max_object != max_object {
        log::warn!(
            "cache.memory / cache.max_object changed; the running cache keeps {} / {} bytes until the next start or upgrade",
            store.memory,
            store.max_object
        );
    }
    Some(store)
}

/// One lock table per `lock_timeout` value, shared by every route and reload with it:
/// concurrent misses for one key wait on the first fetch.
pub fn lock_for(timeout: Duration) -> &'static CacheKeyLockImpl {
    static LOCKS: OnceCell<Mutex<HashMap<Duration, &'static CacheLock>>> = OnceCell::new();
    let locks = LOCKS.get_or_init(Default::default);
    let mut locks = locks.lock().unwrap_or_else(|p| p.into_inner());
    let lock: &'static CacheLock = locks.entry(timeout).or_insert_with(|| {
        // A writer that holds the lock longer than the wait lets the next one take over.
        Box::leak(CacheLock::new_boxed(timeout.max(Duration::from_millis(1))))
    });
    lock
}

/// What the cache did for one response: the `X-Cache` value and the access log's word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Hit,
    Miss,
    Stale,
    Expired,
    Revalidated,
    Bypass,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Hit,
        Status::Miss,
        Status::Stale,
        Status::Expired,
        Status::Revalidated,
        Status::Bypass,
    ];

    pub fn header(self) -> &'static str {
        match self {
            Status::Hit => "HIT",
            Status::Miss => "MISS",
            Status::Stale => "STALE",
            Status::Expired => "EXPIRED",
            Status::Revalidated => "REVALIDATED",
            Status::Bypass => "BYPASS",
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Status::Hit => "hit",
            Status::Miss => "miss",
            Status::Stale => "stale",
            Status::Expired => "expired",
            Status::Revalidated => "revalidated",
            Status::Bypass => "bypass",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A caching route as running: its settings, the shared storage and lock, and its
/// `switchyard_cache_requests_total` counters by status.
pub struct RouteCache {
    pub config: crate::config::RouteCacheConfig,
    pub store: &'static Store,
    pub lock: &'static CacheKeyLockImpl,
    counters: [prometheus::IntCounter; 6],
}

impl RouteCache {
    pub fn new(
        route: &str,
        config: &crate::config::RouteCacheConfig,
        store: &'static Store,
    ) -> RouteCache {
        let counter = |s: Status| {
            crate::observe::metrics::METRICS
                .cache_requests
                .with_label_values(&[route, s.label()])
        };
        RouteCache {
            config: config.clone(),
            store,
            lock: lock_for(config.lock_timeout),
            counters: Status::ALL.map(counter),
        }
    }

    /// One answered request on this route.
    pub fn count(&self, status: Status) {
        self.counters[status.index()].inc();
    }

    /// How many requests this route answered with `status` (the dashboard's hit ratio).
    pub fn counted(&self, status: Status) -> u64 {
        self.counters[status.index()].get()
    }
}
