//! Per-route rate limits (SPEC §3 rate_limit, §9); `scope: cluster` is decided by the
//! instance's leases of the shared limit (`lease`, `cluster`) and falls back to the
//! local limiter here:
//! `token_bucket` is governor's keyed GCRA (a bucket of `burst` refilled at `rate`/s,
//! exact per key); `sliding_window` admits at most `rate` requests in any rolling second
//! per key (a log of the last `rate` admission times). Keys idle for longer than the
//! refill window are dropped once a second, so memory is bounded by the keys active in
//! that window; past `MAX_KEYS` keys the limiter stops growing: new sliding-window keys,
//! and every token-bucket key (governor's store cannot be queried), share one overflow
//! bucket until idle keys are dropped.

use super::cluster::{Cluster, Limit};
use super::lease::Shares;
use crate::config::{RateLimitAlgorithm, RateLimitConfig, RateLimitKey, Scope};
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::collections::VecDeque;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Distinct keys kept per route before new keys share the overflow bucket.
pub const MAX_KEYS: usize = 100_000;

/// What a request is limited by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Ip(IpAddr),
    Header(Box<[u8]>),
    Route,
    /// Every new key once a route tracks `MAX_KEYS` keys.
    Overflow,
}

impl Key {
    /// The key for a request: `header:NAME` falls back to the client IP when absent.
    pub fn for_request(
        kind: &RateLimitKey,
        client: Option<IpAddr>,
        headers: &http::HeaderMap,
    ) -> Key {
        let ip = || client.map(Key::Ip).unwrap_or(Key::Route);
        match kind {
            RateLimitKey::ClientIp => ip(),
            RateLimitKey::Route => Key::Route,
            RateLimitKey::Header(name) => match headers.get(name) {
                Some(v) => Key::Header(v.as_bytes().into()),
                None => ip(),
            },
        }
    }
}

enum Algorithm {
    Token(DefaultKeyedRateLimiter<Key>),
    Sliding {
        limit: usize,
        admitted: DashMap<Key, Mutex<VecDeque<Instant>>>,
    },
}

pub struct RateLimiter {
    pub config: RateLimitConfig,
    algorithm: Algorithm,
    /// `scope: cluster`: this instance's leases of the shared limit.
    shares: Option<Shares>,
}

const WINDOW: Duration = Duration::from_secs(1);

impl RateLimiter {
    /// `cluster`: the process's Redis link (`cluster.redis`); without one a `scope:
    /// cluster` limit is counted here only.
    pub fn new(c: &RateLimitConfig, cluster: Option<&Arc<Cluster>>) -> Self {
        let rate = NonZeroU32::new(c.rate).unwrap_or(NonZeroU32::MIN);
        let algorithm = match c.algorithm {
            RateLimitAlgorithm::TokenBucket => {
                let burst = NonZeroU32::new(c.burst).unwrap_or(rate);
                Algorithm::Token(governor::RateLimiter::dashmap(
                    Quota::per_second(rate).allow_burst(burst),
                ))
            }
            RateLimitAlgorithm::SlidingWindow => Algorithm::Sliding {
                limit: rate.get() as usize,
                admitted: DashMap::new(),
            },
        };
        RateLimiter {
            config: c.clone(),
            algorithm,
            shares: cluster
                .filter(|_| c.scope == Scope::Cluster)
                .map(|link| Shares::new(link.clone())),
        }
    }

    fn len(&self) -> usize {
        match &self.algorithm {
            Algorithm::Token(l) => l.len(),
            Algorithm::Sliding { admitted, .. } => admitted.len(),
        }
    }

    /// `Ok` to admit; `Err(seconds)` for `Retry-After` (whole seconds, at least 1).
    /// `scope: cluster` spends this instance's lease of the shared limit (asking Redis
    /// for more when it runs low) and falls back to the local limiter when Redis cannot
    /// decide.
    pub async fn check(&self, route: &str, key: Key) -> Result<(), u64> {
        if let Some(shares) = &self.shares {
            let limit = Limit::from(&self.config);
            if let Some(answer) = shares.check(limit, route, &key).await {
                return answer;
            }
        }
        self.check_local(key)
    }

    fn check_local(&self, key: Key) -> Result<(), u64> {
        let key = if self.len() >= MAX_KEYS && !self.knows(&key) {
            Key::Overflow
        } else {
            key
        };
        match &self.algorithm {
            Algorithm::Token(l) => l.check_key(&key).map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                retry_after(wait)
            }),
            Algorithm::Sliding { limit, admitted } => {
                let now = Instant::now();
                let entry = admitted
                    .entry(key)
                    .or_insert_with(|| Mutex::new(VecDeque::new()));
                let mut log = entry.lock().map_err(|_| 1u64)?;
                while log
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= WINDOW)
                {
                    log.pop_front();
                }
                if log.len() < *limit {
                    log.push_back(now);
                    Ok(())
                } else {
                    let oldest = log.front().copied().unwrap_or(now);
                    Err(retry_after(
                        WINDOW.saturating_sub(now.duration_since(oldest)),
                    ))
                }
            }
        }
    }

    fn knows(&self, key: &Key) -> bool {
        match &self.algorithm {
            // governor's store has no lookup: at the cap every token-bucket key shares
            // the overflow bucket until idle keys have been dropped (a flood of more than
            // MAX_KEYS keys within the refill window degrades to one shared limit).
            Algorithm::Token(_) => false,
            Algorithm::Sliding { admitted, .. } => admitted.contains_key(key),
        }
    }

    /// Drops keys that are back to a full allowance, and gives unused leased tokens back
    /// (called once a second).
    pub fn forget_idle(&self) {
        if let Some(shares) = &self.shares {
            shares.sweep(Limit::from(&self.config));
        }
        match &self.algorithm {
            Algorithm::Token(l) => {
                l.retain_recent();
                l.shrink_to_fit();
            }
            Algorithm::Sliding { admitted, .. } => {
                let now = Instant::now();
                admitted.retain(|_, log| {
                    log.get_mut()
                        .map(|l| l.back().is_some_and(|t| now.duration_since(*t) < WINDOW))
                        .unwrap_or(false)
                });
                admitted.shrink_to_fit();
            }
        }
    }

    /// Keys currently tracked (for tests and the memory bound).
    pub fn tracked_keys(&self) -> usize {
        self.len()
    }
}

/// The Redis key of a limit: route and key, header values hashed to bound the size.
pub(super) fn redis_key(route: &str, key: &Key) -> String {
    match key {
        Key::Ip(ip) => format!("switchyard:rl:{route}:ip:{ip}"),
        Key::Header(v) => format!("switchyard:rl:{route}:h:{:016x}", crate::net::hash(v)),
        Key::Route | Key::Overflow => format!("switchyard:rl:{route}:route"),
    }
}

fn retry_after(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, burst: u32, algorithm: RateLimitAlgorithm) -> RateLimiter {
        RateLimiter::new(
            &RateLimitConfig {
                rate,
                burst,
                key: RateLimitKey::ClientIp,
                algorithm,
                scope: Scope::Local,
            },
            None,
        )
    }

    fn ip(n: u8) -> Key {
        Key::Ip(IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn token_bucket_admits_exactly_burst_then_refuses() {
        let l = limiter(1, 5, RateLimitAlgorithm::TokenBucket);
        let admitted = (0..10).filter(|_| l.check_local(ip(1)).is_ok()).count();
        assert_eq!(admitted, 5);
        assert_eq!(l.check_local(ip(1)), Err(1));
        // Keys are independent.
        assert!(l.check_local(ip(2)).is_ok());
    }

    #[test]
    fn sliding_window_admits_rate_per_second() {
        let l = limiter(3, 3, RateLimitAlgorithm::SlidingWindow);
        let admitted = (0..10).filter(|_| l.check_local(ip(1)).is_ok()).count();
        assert_eq!(admitted, 3);
        assert_eq!(l.check_local(ip(1)), Err(1));
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let l = limiter(1000, 1, RateLimitAlgorithm::SlidingWindow);
        for n in 0..50 {
            let _ = l.check_local(ip(n));
        }
        assert_eq!(l.tracked_keys(), 50);
        std::thread::sleep(Duration::from_millis(1100));
        l.forget_idle();
        assert_eq!(l.tracked_keys(), 0);
    }
}
