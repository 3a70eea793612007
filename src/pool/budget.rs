//! A pool's retry budget (`retry_budget`, SPEC §13): retries in progress stay under a
//! percentage of the pool's active requests, so a failing pool cannot multiply its
//! load. Like Envoy's, the budget never goes below a few concurrent retries, so a quiet
//! pool still retries; a budget of 0 turns retries off.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Concurrent retries a pool may always have in progress (Envoy's
/// `min_retry_concurrency`), whatever its active request count.
pub const MIN_RETRY_CONCURRENCY: usize = 3;

#[derive(Debug, Default)]
pub struct RetryBudget {
    active: AtomicUsize,
    retrying: AtomicUsize,
}

/// One active request of the pool, until dropped.
pub struct Active(Arc<RetryBudget>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One request retrying in the pool, until dropped.
pub struct Retrying(Arc<RetryBudget>);

impl Drop for Retrying {
    fn drop(&mut self) {
        self.0.retrying.fetch_sub(1, Ordering::AcqRel);
    }
}

impl RetryBudget {
    pub fn enter(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::AcqRel);
        Active(self.clone())
    }

    /// A retry slot within `percent` of the active requests, if one is left.
    pub fn try_retry(self: &Arc<Self>, percent: u32) -> Option<Retrying> {
        if percent == 0 {
            return None;
        }
        let active = self.active.load(Ordering::Acquire);
        let allowed = (active * percent as usize)
            .div_ceil(100)
            .max(MIN_RETRY_CONCURRENCY);
        if self.retrying.fetch_add(1, Ordering::AcqRel) >= allowed {
            self.retrying.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Retrying(self.clone()))
    }

    /// Requests retrying right now.
    pub fn retrying(&self) -> usize {
        self.retrying.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_the_share_of_active_requests() {
        let b = Arc::new(RetryBudget::default());
        let active: Vec<Active> = (0..40).map(|_| b.enter()).collect();
        let slots: Vec<Retrying> = (0..20).filter_map(|_| b.try_retry(20)).collect();
        assert_eq!(slots.len(), 8, "20 % of 40");
        drop(slots);
        assert_eq!(b.retrying(), 0);
        drop(active);
        let few: Vec<Retrying> = (0..10).filter_map(|_| b.try_retry(20)).collect();
        assert_eq!(few.len(), MIN_RETRY_CONCURRENCY, "the floor");
        assert!(b.try_retry(0).is_none(), "0 = no retries");
    }
}
