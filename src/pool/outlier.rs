//! Outlier detection (SPEC §13): passive ejection of a backend on live traffic, beside
//! the circuit breaker. A streak of `consecutive_5xx` 5xx answers, or of
//! `consecutive_gateway_failures` gateway failures (502, 503, 504, connect failures,
//! timeouts and resets), ejects the backend for `base_ejection_time`, doubled on each
//! repeated ejection up to `max_ejection_time`; never more than `max_ejection_percent`
//! of a pool's backends are ejected at once. An ejection ends by time: the backend
//! returns at the first look after its ejection time. Lock-free: atomics per backend.

use super::backend::Backend;
use super::members::Members;
use crate::config::OutlierConfig;
use once_cell::sync::Lazy;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

static EPOCH: Lazy<Instant> = Lazy::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// What one attempt on a backend came to, as outlier detection counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer below 500.
    Success,
    /// A 5xx answer with this status.
    Status(u16),
    /// No answer: connect failure, timeout or reset.
    GatewayFailure,
}

/// Where a backend stands with outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    In,
    Ejected,
    /// Its ejection ended at this look.
    Returned,
}

/// One backend's outlier state.
pub struct Outlier {
    pool: Arc<str>,
    config: OutlierConfig,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    ejected: AtomicBool,
    until_ms: AtomicU64,
    /// Ejections in the current streak (the next one lasts base × 2^this).
    streak: AtomicU32,
    returned_ms: AtomicU64,
    ejections: AtomicU64,
}

impl Outlier {
    pub fn new(pool: Arc<str>, config: &OutlierConfig) -> Self {
        Outlier {
            pool,
            config: config.clone(),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            ejected: AtomicBool::new(false),
            until_ms: AtomicU64::new(0),
            streak: AtomicU32::new(0),
            returned_ms: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
        }
    }

    /// Counts `outcome`; true when a streak reached its threshold.
    fn count(&self, outcome: Outcome) -> Option<&'static str> {
        let bump = |c: &AtomicU32, threshold: u32| {
            threshold > 0 && c.fetch_add(1, Ordering::AcqRel) + 1 >= threshold
        };
        match outcome {
            Outcome::Success => {
                self.consecutive_5xx.store(0, Ordering::Release);
                self.consecutive_gateway.store(0, Ordering::Release);
                None
            }
            Outcome::Status(status) => {
                let gateway = matches!(status, 502..=504)
                    && bump(
                        &self.consecutive_gateway,
                        self.config.consecutive_gateway_failures,
                    );
                if !matches!(status, 502..=504) {
                    self.consecutive_gateway.store(0, Ordering::Release);
                }
                let five = bump(&self.consecutive_5xx, self.config.consecutive_5xx);
                (gateway.then_some("consecutive gateway failures"))
                    .or(five.then_some("consecutive 5xx"))
            }
            Outcome::GatewayFailure => {
                let gateway = bump(
                    &self.consecutive_gateway,
                    self.config.consecutive_gateway_failures,
                );
                let five = bump(&self.consecutive_5xx, self.config.consecutive_5xx);
                (gateway.then_some("consecutive gateway failures"))
                    .or(five.then_some("consecutive 5xx"))
            }
        }
    }

    fn reset_streaks(&self) {
        self.consecutive_5xx.store(0, Ordering::Release);
        self.consecutive_gateway.store(0, Ordering::Release);
    }

    /// Ejects now; returns how long for (None when another thread just did).
    fn eject(&self) -> Option<Duration> {
        if self.ejected.swap(true, Ordering::AcqRel) {
            return None;
        }
        let now = now_ms();
        // A backend that stayed in for max_ejection_time since it returned starts over.
        let returned = self.returned_ms.load(Ordering::Acquire);
        let max = self.config.max_ejection_time;
        if returned > 0 && now.saturating_sub(returned) >= max.as_millis() as u64 {
            self.streak.store(0, Ordering::Release);
        }
        let n = self.streak.fetch_add(1, Ordering::AcqRel).min(20);
        let time = self
            .config
            .base_ejection_time
            .saturating_mul(1u32 << n)
            .min(max);
        self.until_ms
            .store(now + time.as_millis() as u64, Ordering::Release);
        self.ejections.fetch_add(1, Ordering::Relaxed);
        self.reset_streaks();
        Some(time)
    }

    /// Ejected right now. The first look after the ejection time ends it (and logs it).
    pub fn is_ejected(&self, address: &str) -> bool {
        self.state(address) == State::Ejected
    }

    /// Ejected, in, or back this moment (the first look after the ejection time ends
    /// it, and logs it).
    pub fn state(&self, address: &str) -> State {
        if !self.ejected.load(Ordering::Acquire) {
            return State::In;
        }
        let now = now_ms();
        if now < self.until_ms.load(Ordering::Acquire) {
            return State::Ejected;
        }
        if self
            .ejected
            .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.returned_ms.store(now.max(1), Ordering::Release);
            self.reset_streaks();
            log::info!(
                "pool {}: backend {address} returned after its ejection",
                self.pool
            );
            return State::Returned;
        }
        State::In
    }

    /// Ejections so far.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }
}

/// Feeds one attempt's outcome on `members.backends[idx]` to its outlier detection and
/// ejects it when a streak reached its threshold and the pool's cap allows it.
pub fn observe(members: &Members, idx: usize, outcome: Outcome) {
    let Some(backend) = members.backends.get(idx) else {
        return;
    };
    let Some(outlier) = &backend.outlier else {
        return;
    };
    let Some(reason) = outlier.count(outcome) else {
        return;
    };
    if !may_eject(&members.backends, outlier.config.max_ejection_percent) {
        outlier.reset_streaks();
        log::warn!(
            "pool {}: backend {} not ejected ({reason}): max_ejection_percent {} reached",
            outlier.pool,
            backend.address,
            outlier.config.max_ejection_percent
        );
        return;
    }
    if let Some(time) = outlier.eject() {
        log::warn!(
            "pool {}: backend {} ejected for {} ({reason})",
            outlier.pool,
            backend.address,
            humantime::format_duration(time)
        );
    }
}

/// One more ejection keeps the pool within `percent` of its backends ejected.
fn may_eject(backends: &[Arc<Backend>], percent: u32) -> bool {
    let ejected = backends.iter().filter(|b| b.ejected()).count();
    (ejected + 1) * 100 <= percent as usize * backends.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outlier(five: u32, gateway: u32, base_ms: u64, max_ms: u64) -> Outlier {
        Outlier::new(
            "p".into(),
            &OutlierConfig {
                consecutive_5xx: five,
                consecutive_gateway_failures: gateway,
                base_ejection_time: Duration::from_millis(base_ms),
                max_ejection_time: Duration::from_millis(max_ms),
                max_ejection_percent: 100,
            },
        )
    }

    #[test]
    fn streaks_count_exactly_and_a_success_resets_them() {
        let o = outlier(3, 0, 1000, 1000);
        assert_eq!(o.count(Outcome::Status(500)), None);
        assert_eq!(o.count(Outcome::Status(500)), None);
        assert_eq!(o.count(Outcome::Success), None);
        assert_eq!(o.count(Outcome::Status(500)), None);
        assert_eq!(o.count(Outcome::Status(503)), None);
        assert_eq!(o.count(Outcome::GatewayFailure), Some("consecutive 5xx"));
    }

    #[test]
    fn gateway_failures_have_their_own_streak() {
        let o = outlier(0, 2, 1000, 1000);
        assert_eq!(o.count(Outcome::Status(502)), None);
        assert_eq!(
            o.count(Outcome::Status(500)),
            None,
            "500 is no gateway failure"
        );
        assert_eq!(o.count(Outcome::GatewayFailure), None);
        assert_eq!(
            o.count(Outcome::Status(504)),
            Some("consecutive gateway failures")
        );
    }

    #[test]
    fn ejection_time_doubles_up_to_the_max_and_ends_by_itself() {
        let o = outlier(1, 0, 40, 100);
        assert_eq!(o.eject(), Some(Duration::from_millis(40)));
        assert!(o.is_ejected("a"));
        assert_eq!(o.eject(), None, "already ejected");
        std::thread::sleep(Duration::from_millis(60));
        assert!(!o.is_ejected("a"), "back after base_ejection_time");
        assert_eq!(o.eject(), Some(Duration::from_millis(80)));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!o.is_ejected("a"));
        assert_eq!(o.eject(), Some(Duration::from_millis(100)), "capped");
        assert_eq!(o.ejections(), 3);
    }
}
