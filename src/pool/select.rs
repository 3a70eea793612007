//! Backend selection over one tier (primaries or backups): smooth weighted round robin,
//! weighted random, ip_hash, Ketama consistent hashing and weighted least connections.
//! Every algorithm walks on to the next candidate when one is unusable or already tried,
//! so health and retries never rebuild anything.

use crate::config::Algorithm;
use crate::net::hash;
use pingora_ketama::{Bucket, Continuum};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};

/// nginx's smooth weighted round robin, unrolled into one period (length = sum of
/// weights) so that selection is a lock-free atomic increment: weights 5:1:1 give
/// A A B A C A A rather than A A A A A B C.
pub fn smooth_schedule(weights: &[u32]) -> Vec<u32> {
    let total: i64 = weights.iter().map(|w| *w as i64).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

/// One tier's selection state. Indices are positions in the tier's backend list.
pub struct Selector {
    algorithm: Algorithm,
    weights: Vec<u32>,
    schedule: Vec<u32>,
    cursor: AtomicUsize,
    ring: Option<(Continuum, HashMap<SocketAddr, usize>)>,
}

impl Selector {
    /// Weights are non-zero by type: a zero would make the round-robin period empty (a
    /// division by zero) and Pingora's Ketama ring asserts on it (pingora #1006).
    pub fn new(algorithm: Algorithm, backends: &[(SocketAddr, NonZeroU32)]) -> Self {
        let weights: Vec<u32> = backends.iter().map(|(_, w)| w.get()).collect();
        let ring = (algorithm == Algorithm::ConsistentHash && !backends.is_empty()).then(|| {
            let buckets: Vec<Bucket> = backends
                .iter()
                .map(|(a, w)| Bucket::new(*a, w.get()))
                .collect();
            let index = backends
                .iter()
                .enumerate()
                .map(|(i, (a, _))| (*a, i))
                .collect();
            (Continuum::new(&buckets), index)
        });
        Selector {
            algorithm,
            schedule: smooth_schedule(&weights),
            weights,
            cursor: AtomicUsize::new(fastrand::usize(..usize::MAX / 2)),
            ring,
        }
    }

    /// The first usable backend in this algorithm's order. `key` is the client IP bytes
    /// (ip_hash) or the configured hash key (consistent_hash); `in_flight(i)` is
    /// backend i's current load (least_conn).
    pub fn pick(
        &self,
        key: &[u8],
        usable: impl Fn(usize) -> bool,
        in_flight: impl Fn(usize) -> usize,
    ) -> Option<usize> {
        if self.weights.is_empty() {
            return None;
        }
        match self.algorithm {
            Algorithm::RoundRobin => {
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                self.walk_schedule(start, &usable)
            }
            Algorithm::Random => {
                self.walk_schedule(fastrand::usize(..self.schedule.len()), &usable)
            }
            Algorithm::IpHash => self.walk_schedule(hash(key) as usize, &usable),
            Algorithm::ConsistentHash => {
                let (ring, index) = self.ring.as_ref()?;
                ring.node_iter(key)
                    .take(self.weights.len() * 160)
                    .filter_map(|addr| index.get(addr).copied())
                    .find(|i| usable(*i))
                    .or_else(|| (0..self.weights.len()).find(|i| usable(*i)))
            }
            Algorithm::LeastConn => {
                let n = self.weights.len();
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                let mut best: Option<(usize, usize)> = None;
                for step in 0..n {
                    let i = (start + step) % n;
                    if !usable(i) {
                        continue;
                    }
                    let load = in_flight(i);
                    // load_i / w_i < load_b / w_b, cross-multiplied; ties keep the
                    // earlier one in rotating order, so equal loads go round robin.
                    let better = best.is_none_or(|(b, b_load)| {
                        (load as u64) * (self.weights[b] as u64)
                            < (b_load as u64) * (self.weights[i] as u64)
                    });
                    if better {
                        best = Some((i, load));
                    }
                }
                best.map(|(i, _)| i)
            }
        }
    }

    fn walk_schedule(&self, start: usize, usable: &impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.schedule.len();
        let first = self.schedule[start % len] as usize;
        if usable(first) {
            return Some(first);
        }
        // Walk the period once; fall back to a plain scan so a tiny weight can't hide.
        (1..len)
            .map(|step| self.schedule[(start + step) % len] as usize)
            .find(|i| usable(*i))
            .or_else(|| (0..self.weights.len()).find(|i| usable(*i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(weights: &[u32]) -> Vec<(SocketAddr, NonZeroU32)> {
        weights
            .iter()
            .enumerate()
            .filter_map(|(i, w)| {
                Some((
                    SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)),
                    NonZeroU32::new(*w)?,
                ))
            })
            .collect()
    }

    #[test]
    fn smooth_schedule_interleaves() {
        assert_eq!(smooth_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_schedule(&[1, 1, 1]).len(), 3);
    }

    #[test]
    fn round_robin_skips_unusable() {
        let s = Selector::new(Algorithm::RoundRobin, &addrs(&[1, 1, 1]));
        for _ in 0..10 {
            assert_ne!(s.pick(b"", |i| i != 1, |_| 0), Some(1));
        }
        assert_eq!(s.pick(b"", |_| false, |_| 0), None);
    }

    #[test]
    fn least_conn_prefers_lowest_load_per_weight() {
        let s = Selector::new(Algorithm::LeastConn, &addrs(&[1, 4]));
        // 2/1 vs 4/4: backend 1 has the lower ratio.
        assert_eq!(s.pick(b"", |_| true, |i| [2, 4][i]), Some(1));
        assert_eq!(s.pick(b"", |_| true, |i| [0, 4][i]), Some(0));
    }

    #[test]
    fn consistent_hash_is_stable_and_walks_on() {
        let s = Selector::new(Algorithm::ConsistentHash, &addrs(&[1, 1, 1]));
        let first = s.pick(b"user-42", |_| true, |_| 0);
        assert_eq!(s.pick(b"user-42", |_| true, |_| 0), first);
        let f = first.unwrap_or(0);
        let next = s.pick(b"user-42", |i| i != f, |_| 0);
        assert!(next.is_some() && next != first);
    }
}
