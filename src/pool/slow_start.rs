//! Slow start (SPEC §13): a backend that joins a running pool, or comes back (healthy
//! again, or back from an ejection), ramps from 10 % to its full share over
//! `slow_start`. The ramp is applied at selection, as the chance that a selected
//! backend takes the request (else selection walks on), so the selectors keep their
//! configured non-zero weights and are never rebuilt (Pingora's Ketama asserts on a
//! zero weight, pingora #1006). Works for every algorithm.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The share a ramping backend starts at.
const FLOOR: f64 = 0.1;

static EPOCH: once_cell::sync::Lazy<Instant> = once_cell::sync::Lazy::new(Instant::now);

fn now_ms() -> u64 {
    // Never 0: 0 means "not ramping".
    EPOCH.elapsed().as_millis() as u64 + 1
}

pub struct SlowStart {
    window_ms: u64,
    /// When the current ramp began; 0 = not ramping.
    since_ms: AtomicU64,
}

impl SlowStart {
    /// `ramping`: the ramp starts now (a backend joining a running pool).
    pub fn new(window: Duration, ramping: bool) -> Self {
        SlowStart {
            window_ms: window.as_millis().max(1) as u64,
            since_ms: AtomicU64::new(if ramping { now_ms() } else { 0 }),
        }
    }

    /// The backend (re)joined: ramp from the floor again.
    pub fn restart(&self) {
        self.since_ms.store(now_ms(), Ordering::Release);
    }

    /// The current share, from 0.1 to 1.
    pub fn factor(&self) -> f64 {
        let since = self.since_ms.load(Ordering::Acquire);
        if since == 0 {
            return 1.0;
        }
        let elapsed = now_ms().saturating_sub(since) as f64 / self.window_ms as f64;
        if elapsed >= 1.0 {
            self.since_ms.store(0, Ordering::Release);
            return 1.0;
        }
        FLOOR + (1.0 - FLOOR) * elapsed
    }

    /// Whether the backend takes this selection.
    pub fn admits(&self) -> bool {
        let f = self.factor();
        f >= 1.0 || fastrand::f64() < f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_from_the_floor_to_full() {
        let s = SlowStart::new(Duration::from_millis(200), true);
        let f = s.factor();
        assert!((0.1..0.5).contains(&f), "{f}");
        let admitted = (0..2000).filter(|_| s.admits()).count();
        assert!(admitted < 1200, "about 10-30 % early: {admitted}");
        std::thread::sleep(Duration::from_millis(220));
        assert_eq!(s.factor(), 1.0);
        assert!((0..100).all(|_| s.admits()));
        s.restart();
        assert!(s.factor() < 0.5);
        assert_eq!(SlowStart::new(Duration::from_secs(1), false).factor(), 1.0);
    }
}
