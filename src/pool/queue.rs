//! A pool's request queue (`queue`, SPEC §13): with `circuit_breaker.max_connections`,
//! a request that finds every available backend full waits, first come first served,
//! for a slot to be released, at most `queue.timeout` and behind at most `queue.max`
//! others; then it is answered 503. Each released slot wakes the longest waiter
//! (tokio's `Notify` wakes in FIFO order).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;

#[derive(Default)]
pub struct Queue {
    waiting: AtomicUsize,
    released: Notify,
}

/// A place in the queue, given up when dropped (served, timed out, or the client left).
pub struct Place(Arc<Queue>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Queue {
    /// Requests waiting now.
    pub fn len(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A place at the back, unless `max` are waiting already.
    pub fn join(self: &Arc<Self>, max: u32) -> Option<Place> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= max as usize {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Place(self.clone()))
    }

    /// Waits for a released slot until `deadline`; false once it passed.
    pub async fn wait(&self, deadline: Instant) -> bool {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return false;
        };
        tokio::time::timeout(left, self.released.notified())
            .await
            .is_ok()
    }

    /// A backend slot was released: the longest waiter may try again.
    pub fn released(&self) {
        if !self.is_empty() {
            self.released.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn bounded_and_woken_in_order() {
        let q = Arc::new(Queue::default());
        let first = q.join(2);
        let second = q.join(2);
        assert!(first.is_some() && second.is_some());
        assert!(q.join(2).is_none(), "max 2");
        assert_eq!(q.len(), 2);
        let far = Instant::now() + Duration::from_secs(5);
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.wait(far).await })
        };
        tokio::task::yield_now().await;
        q.released();
        assert_eq!(waiter.await.ok(), Some(true));
        assert!(
            !q.wait(Instant::now() + Duration::from_millis(20)).await,
            "times out"
        );
        drop((first, second));
        assert!(q.is_empty());
    }
}
