//! Passive health per backend: a circuit breaker driven by live request outcomes.
//! Closed → (exactly `failure_threshold` consecutive failures) → open for `open_for` →
//! half-open, admitting exactly `half_open_requests` trials: all succeed → closed, any
//! fails → open again. Lock-free: a few atomics per backend.

use crate::config::CircuitBreakerConfig;
use once_cell::sync::Lazy;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

static EPOCH: Lazy<Instant> = Lazy::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

pub struct Breaker {
    failure_threshold: u32,
    open_for: Duration,
    half_open_requests: u32,
    state: AtomicU8,
    consecutive_failures: AtomicU32,
    opened_at_ms: AtomicU64,
    trials_admitted: AtomicU32,
    trials_succeeded: AtomicU32,
}

impl Breaker {
    pub fn new(c: &CircuitBreakerConfig) -> Self {
        Breaker {
            failure_threshold: c.failure_threshold.max(1),
            open_for: c.open_for,
            half_open_requests: c.half_open_requests.max(1),
            state: AtomicU8::new(CircuitState::Closed as u8),
            consecutive_failures: AtomicU32::new(0),
            opened_at_ms: AtomicU64::new(0),
            trials_admitted: AtomicU32::new(0),
            trials_succeeded: AtomicU32::new(0),
        }
    }

    /// The state as the API and metrics show it (an expired open circuit is half-open).
    pub fn state(&self) -> CircuitState {
        match self.state.load(Ordering::Acquire) {
            1 if self.open_expired() => CircuitState::HalfOpen,
            1 => CircuitState::Open,
            2 => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        }
    }

    fn open_expired(&self) -> bool {
        now_ms().saturating_sub(self.opened_at_ms.load(Ordering::Acquire))
            >= self.open_for.as_millis() as u64
    }

    /// Could a request go here now? (No side effect; see `admit`.)
    pub fn may_admit(&self) -> bool {
        match self.state() {
            CircuitState::Closed => true,
            CircuitState::Open => false,
            CircuitState::HalfOpen => {
                self.trials_admitted.load(Ordering::Acquire) < self.half_open_requests
            }
        }
    }

    /// Takes a slot for a request that was just routed here; false if the circuit
    /// filled up (or opened) in the meantime.
    pub fn admit(&self) -> bool {
        if self.state.load(Ordering::Acquire) == CircuitState::Open as u8 && self.open_expired() {
            // First request after open_for: move to half-open with fresh trial counters.
            if self
                .state
                .compare_exchange(
                    CircuitState::Open as u8,
                    CircuitState::HalfOpen as u8,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                self.trials_admitted.store(0, Ordering::Release);
                self.trials_succeeded.store(0, Ordering::Release);
            }
        }
        match self.state.load(Ordering::Acquire) {
            0 => true,
            2 => self.trials_admitted.fetch_add(1, Ordering::AcqRel) < self.half_open_requests,
            _ => false,
        }
    }

    pub fn record_success(&self) {
        match self.state.load(Ordering::Acquire) {
            0 => self.consecutive_failures.store(0, Ordering::Release),
            2 => {
                let ok = self.trials_succeeded.fetch_add(1, Ordering::AcqRel) + 1;
                if ok >= self.half_open_requests {
                    self.consecutive_failures.store(0, Ordering::Release);
                    self.state
                        .store(CircuitState::Closed as u8, Ordering::Release);
                }
            }
            _ => {}
        }
    }

    pub fn record_failure(&self) {
        match self.state.load(Ordering::Acquire) {
            0 => {
                let n = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
                if n == self.failure_threshold {
                    self.open();
                }
            }
            2 => self.open(),
            _ => {}
        }
    }

    fn open(&self) {
        self.opened_at_ms.store(now_ms(), Ordering::Release);
        self.consecutive_failures.store(0, Ordering::Release);
        // The next half-open round starts with every trial slot free.
        self.trials_admitted.store(0, Ordering::Release);
        self.trials_succeeded.store(0, Ordering::Release);
        self.state
            .store(CircuitState::Open as u8, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, open_for_ms: u64, trials: u32) -> Breaker {
        Breaker::new(&CircuitBreakerConfig {
            failure_threshold: threshold,
            on_5xx: true,
            open_for: Duration::from_millis(open_for_ms),
            half_open_requests: trials,
            max_connections: 0,
        })
    }

    #[test]
    fn opens_after_exactly_threshold_failures() {
        let b = breaker(3, 60_000, 1);
        b.record_failure();
        b.record_failure();
        assert_eq!(b.state(), CircuitState::Closed);
        b.record_failure();
        assert_eq!(b.state(), CircuitState::Open);
        assert!(!b.may_admit());
    }

    #[test]
    fn success_resets_the_count() {
        let b = breaker(2, 60_000, 1);
        b.record_failure();
        b.record_success();
        b.record_failure();
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn half_open_admits_exactly_n_then_closes() {
        let b = breaker(1, 0, 2);
        b.record_failure();
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert!(b.admit());
        assert!(b.admit());
        assert!(!b.admit());
        b.record_success();
        assert_eq!(b.state(), CircuitState::HalfOpen);
        b.record_success();
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn a_failed_round_leaves_the_next_round_its_trials() {
        let b = breaker(1, 30, 1);
        b.record_failure();
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit());
        b.record_failure();
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.may_admit());
        assert!(b.admit());
        b.record_success();
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn half_open_failure_reopens() {
        let b = breaker(1, 50, 2);
        b.record_failure();
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.admit());
        b.record_failure();
        assert_eq!(b.state(), CircuitState::Open);
    }
}
