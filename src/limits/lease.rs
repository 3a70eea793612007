//! Leases of `scope: cluster` rate limits: the share of the Redis bucket (or window) this
//! instance holds per limit key, so that most requests are decided here without a Redis
//! round trip. An instance takes tokens in batches sized to its own traffic on the key
//! (about `SPAN` of it, never more than `SPAN` of the limit's rate), spends them locally,
//! and asks Redis for the next batch in the background once half of one is left. With no
//! token left it asks synchronously (one request asks, the others on the key wait for
//! that answer); when Redis has none to give, the key is refused here until Redis said
//! the next one is due. Redis hands out at most half of what it has left per ask, so
//! near the limit batches shrink to one token and every instance keeps its turn.
//!
//! Accuracy (docs/OPERATIONS.md): instances together never admit more than the limit plus
//! the tokens they held when an interval began (at most `max(1, rate × SPAN)` per instance
//! and key); tokens an instance leased and did not use go back to a token bucket after
//! one to two idle seconds, and lapse with their one-second slot in a sliding window.
//!
//! `State` is the decision logic (no I/O, unit-tested here); `Shares` runs it against
//! `cluster::Cluster`.

use super::cluster::{Cluster, Grant, Limit};
use super::rate::{Key, MAX_KEYS};
use crate::config::RateLimitAlgorithm;
use dashmap::DashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The most of a limit's rate one instance holds per key, and the span of its own
/// traffic a batch is sized to.
pub const SPAN: Duration = Duration::from_millis(50);

/// A sliding-window token is void this long after it was asked for: its slot in Redis
/// lapses one second after Redis granted it.
const SLIDING_LIFE: Duration = Duration::from_secs(1);

/// How often a request re-checks after waiting for another request's ask before it is
/// refused (tokens are that scarce).
const MAX_ROUNDS: u32 = 8;

/// The largest batch asked for at once (bounds one script call's work in Redis).
pub const MAX_BATCH: u32 = 10_000;

/// `max(1, rate × SPAN)`, at most `MAX_BATCH`: the most one instance holds per key.
pub fn cap(rate: u32) -> u32 {
    let span = (rate as u128 * SPAN.as_millis() / 1000) as u32;
    span.clamp(1, MAX_BATCH)
}

/// What a request does next, decided under the key's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Admitted from the lease; `Some(n)`: also ask Redis for `n` more in the background.
    Admit(Option<u32>),
    /// Redis has no token before this many seconds (`Retry-After`).
    Refuse(u64),
    /// Ask Redis for `n` tokens now and wait for the answer.
    Ask(u32),
    /// Another request is asking: wait for its answer.
    Wait,
    /// No token here and Redis cannot be asked: the local limiter decides.
    Local,
}

/// One key's lease.
#[derive(Debug)]
pub struct State {
    tokens: u32,
    /// Sliding window: when the held tokens become void.
    void_at: Option<Instant>,
    /// Redis said no token is due before this.
    refused_until: Option<Instant>,
    /// An ask for this key is on its way to Redis.
    asking: bool,
    /// Requests seen since `asked_at` (the traffic a batch is sized to).
    arrivals: u32,
    asked_at: Option<Instant>,
    /// The last batch asked for.
    want: u32,
    /// Used since the janitor last looked.
    touched: bool,
}

impl Default for State {
    fn default() -> Self {
        State {
            tokens: 0,
            void_at: None,
            refused_until: None,
            asking: false,
            arrivals: 0,
            asked_at: None,
            want: 1,
            touched: true,
        }
    }
}

impl State {
    /// The next step for a request (`arrived`: its first look, counted as traffic).
    /// `redis_up` is asked only when no token is held.
    pub fn step(
        &mut self,
        now: Instant,
        cap: u32,
        arrived: bool,
        redis_up: impl FnOnce() -> bool,
    ) -> Step {
        if arrived {
            self.arrivals = self.arrivals.saturating_add(1);
            self.touched = true;
        }
        if self.void_at.is_some_and(|v| now >= v) {
            self.tokens = 0;
            self.void_at = None;
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            // Prefetch only for keys busy enough to need more than one token per batch.
            if !self.asking && self.want >= 2 && self.tokens <= self.want / 2 {
                // Held and asked for together stay within `cap` (the accuracy bound).
                let n = self
                    .next_want(now, cap)
                    .min(cap.saturating_sub(self.tokens));
                if n > 0 {
                    self.asking = true;
                    return Step::Admit(Some(n));
                }
            }
            return Step::Admit(None);
        }
        if let Some(until) = self.refused_until {
            if now < until {
                return Step::Refuse(whole_seconds(until - now));
            }
            self.refused_until = None;
        }
        if self.asking {
            return Step::Wait;
        }
        if !redis_up() {
            return Step::Local;
        }
        self.asking = true;
        Step::Ask(self.next_want(now, cap))
    }

    /// Sizes the batch to the traffic seen since the last ask.
    fn next_want(&mut self, now: Instant, cap: u32) -> u32 {
        let want = match self.asked_at {
            None => 1,
            Some(at) => {
                let elapsed = now.duration_since(at).max(Duration::from_millis(1));
                let per_span =
                    self.arrivals as u128 * SPAN.as_micros() / elapsed.as_micros().max(1);
                (per_span as u32).saturating_add(1)
            }
        };
        self.arrivals = 0;
        self.asked_at = Some(now);
        self.want = want.clamp(1, cap);
        self.want
    }

    /// Redis's answer to an ask sent at `sent` (`None`: it could not decide).
    pub fn answered(
        &mut self,
        sent: Instant,
        now: Instant,
        algorithm: RateLimitAlgorithm,
        grant: Option<Grant>,
    ) {
        self.asking = false;
        let Some(grant) = grant else { return };
        if grant.tokens == 0 {
            if self.tokens == 0 {
                self.refused_until = Some(now + Duration::from_millis(grant.wait_ms.max(1)));
            }
            return;
        }
        if algorithm == RateLimitAlgorithm::SlidingWindow {
            let void = sent + SLIDING_LIFE;
            self.void_at = Some(match self.void_at {
                Some(v) if self.tokens > 0 => v.min(void),
                _ => void,
            });
        }
        self.tokens = self.tokens.saturating_add(grant.tokens);
        self.refused_until = None;
    }

    /// Called once a second: the token-bucket tokens to give back (held and unused since
    /// the last call), and whether the key can be forgotten.
    pub fn sweep(&mut self, now: Instant, algorithm: RateLimitAlgorithm) -> (u32, bool) {
        if self.void_at.is_some_and(|v| now >= v) {
            self.tokens = 0;
            self.void_at = None;
        }
        let idle = !self.touched && !self.asking;
        self.touched = false;
        if !idle {
            return (0, false);
        }
        let back = match algorithm {
            RateLimitAlgorithm::TokenBucket => std::mem::take(&mut self.tokens),
            RateLimitAlgorithm::SlidingWindow => 0,
        };
        let refusing = self.refused_until.is_some_and(|u| now < u);
        (back, self.tokens == 0 && !refusing)
    }
}

fn whole_seconds(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

/// One key's lease and the answer its waiters wait for.
struct Share {
    redis_key: String,
    state: Mutex<State>,
    answered: Notify,
}

impl Share {
    fn lock(&self) -> Option<MutexGuard<'_, State>> {
        // A poisoned lock (a panic elsewhere while it was held) refuses nothing: the
        // caller falls back to the local limiter.
        self.state.lock().ok()
    }
}

/// The leases of one cluster-scope limit, per key, from the process's Redis link.
pub struct Shares {
    map: DashMap<Key, Arc<Share>>,
    cluster: Arc<Cluster>,
}

/// A request's first look: decided at once, or the step that needs Redis.
type FirstLook = Result<Option<Result<(), u64>>, (Arc<Share>, Step)>;

impl Shares {
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Shares {
            map: DashMap::new(),
            cluster,
        }
    }

    /// `Some(Ok)` admitted, `Some(Err(seconds))` refused, `None`: Redis could not decide
    /// and the local limiter applies.
    pub async fn check(&self, limit: Limit, route: &str, key: &Key) -> Option<Result<(), u64>> {
        let cluster = &self.cluster;
        let cap = cap(limit.rate);
        let first = match self.map.get(key) {
            Some(share) => look(&share, cluster, limit, cap),
            None if self.map.len() >= MAX_KEYS => {
                // Past the cap a key gets no lease: one ask per request, as without leases.
                let name = super::rate::redis_key(route, key);
                let grant = cluster.lease(&name, limit, 1).await?;
                return Some(decision(grant));
            }
            None => {
                let share = self
                    .map
                    .entry(key.clone())
                    .or_insert_with(|| {
                        Arc::new(Share {
                            redis_key: super::rate::redis_key(route, key),
                            state: Mutex::new(State::default()),
                            answered: Notify::new(),
                        })
                    })
                    .clone();
                look(&share, cluster, limit, cap)
            }
        };
        match first {
            Ok(answer) => answer,
            Err((share, step)) => settle(cluster, limit, share, cap, step).await,
        }
    }

    /// Gives idle token-bucket leases back to Redis and forgets idle keys (once a second).
    pub fn sweep(&self, limit: Limit) {
        let now = Instant::now();
        let runtime = tokio::runtime::Handle::try_current().ok();
        self.map.retain(|_, share| {
            let Some((back, forget)) = share.lock().map(|mut s| s.sweep(now, limit.algorithm))
            else {
                return false;
            };
            if back > 0 {
                if let Some(rt) = &runtime {
                    let (cluster, share) = (self.cluster.clone(), share.clone());
                    rt.spawn(async move { cluster.give_back(&share.redis_key, limit, back).await });
                }
            }
            !forget
        });
        self.map.shrink_to_fit();
    }
}

/// The first step of a request under the key's lock; what needs no wait is done here.
fn look(share: &Arc<Share>, cluster: &Arc<Cluster>, limit: Limit, cap: u32) -> FirstLook {
    let Some(mut state) = share.lock() else {
        return Ok(None);
    };
    let step = state.step(Instant::now(), cap, true, || cluster.available());
    drop(state);
    match step {
        Step::Admit(refresh) => {
            if let Some(n) = refresh {
                spawn_ask(cluster, limit, share.clone(), n);
            }
            Ok(Some(Ok(())))
        }
        Step::Refuse(secs) => Ok(Some(Err(secs))),
        Step::Local => Ok(None),
        Step::Ask(_) | Step::Wait => Err((share.clone(), step)),
    }
}

/// Asks or waits for the answer to an ask, then looks again, up to `MAX_ROUNDS` times.
async fn settle(
    cluster: &Arc<Cluster>,
    limit: Limit,
    share: Arc<Share>,
    cap: u32,
    mut step: Step,
) -> Option<Result<(), u64>> {
    for _ in 0..MAX_ROUNDS {
        match step {
            Step::Admit(refresh) => {
                if let Some(n) = refresh {
                    spawn_ask(cluster, limit, share.clone(), n);
                }
                return Some(Ok(()));
            }
            Step::Refuse(secs) => return Some(Err(secs)),
            Step::Local => return None,
            Step::Ask(n) => {
                let notified = share.answered.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                spawn_ask(cluster, limit, share.clone(), n);
                let _ = tokio::time::timeout(cluster.timeout(), notified).await;
            }
            Step::Wait => {
                let notified = share.answered.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                // The answer may have come between the first look and `enable`.
                if share.lock().is_some_and(|s| s.asking) {
                    let _ = tokio::time::timeout(cluster.timeout(), notified).await;
                }
            }
        }
        step = share
            .lock()?
            .step(Instant::now(), cap, false, || cluster.available());
    }
    // Other requests on this key took every token Redis gave meanwhile.
    Some(Err(1))
}

fn decision(grant: Grant) -> Result<(), u64> {
    if grant.tokens > 0 {
        Ok(())
    } else {
        Err(whole_seconds(Duration::from_millis(grant.wait_ms.max(1))))
    }
}

/// Asks Redis for `n` tokens in a task of its own (a request that goes away does not
/// leave the key "asking"), then wakes the key's waiters.
fn spawn_ask(cluster: &Arc<Cluster>, limit: Limit, share: Arc<Share>, n: u32) {
    let cluster = cluster.clone();
    tokio::spawn(async move {
        let sent = Instant::now();
        let grant = cluster.lease(&share.redis_key, limit, n).await;
        if let Some(mut s) = share.lock() {
            s.answered(sent, Instant::now(), limit.algorithm, grant);
        }
        share.answered.notify_waiters();
    });
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
