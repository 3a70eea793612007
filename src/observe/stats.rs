//! In-process traffic windows for `GET /api/v1/stats` (SPEC §14): per route and per
//! backend, requests, errors and a latency histogram over the last 60 s, kept in a
//! ring of 5-second slots of atomic counters (no lock on the request path); and the
//! open-connection counters of every listener and tcp_service, registered by the edge.

use once_cell::sync::Lazy;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// The window the stats cover.
pub const WINDOW: Duration = Duration::from_secs(60);
const SLOT_SECS: u64 = 5;
/// Twelve full slots plus the one being filled.
const SLOTS: usize = 13;
/// Latency buckets: quarter octaves of microseconds (about 19 % wide), up to ~2^28 µs.
const BUCKETS: usize = 112;

static START: Lazy<Instant> = Lazy::new(Instant::now);

fn slot_now() -> u64 {
    START.elapsed().as_secs() / SLOT_SECS
}

struct Slot {
    /// The slot number this slot holds plus one (0 = never used).
    epoch: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU32; BUCKETS],
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            epoch: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

impl Slot {
    fn clear(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
        for b in &self.latency {
            b.store(0, Ordering::Relaxed);
        }
    }
}

/// One route's or backend's last minute.
pub struct Window {
    slots: Box<[Slot]>,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }
}

/// What `GET /api/v1/stats` shows for one route or backend.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub requests: u64,
    pub errors: u64,
    /// errors / requests (0 without requests).
    pub error_rate: f64,
    pub requests_per_second: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

fn bucket_of(d: Duration) -> usize {
    let us = d.as_micros().clamp(1, u64::MAX as u128) as u64;
    let octave = 63 - us.leading_zeros() as u64;
    let quarter = if octave >= 2 {
        (us >> (octave - 2)) & 3
    } else {
        (us << (2 - octave)) & 3
    };
    ((octave * 4 + quarter) as usize).min(BUCKETS - 1)
}

/// The middle of bucket `i`, in milliseconds.
fn bucket_ms(i: usize) -> f64 {
    let (octave, quarter) = ((i / 4) as i32, (i % 4) as f64);
    let low = 2f64.powi(octave) * (1.0 + quarter / 4.0);
    let high = 2f64.powi(octave) * (1.0 + (quarter + 1.0) / 4.0);
    (low + high) / 2.0 / 1000.0
}

impl Window {
    /// One finished request: `error` for a 5xx answer or a failed exchange.
    pub fn record(&self, error: bool, elapsed: Duration) {
        self.record_at(slot_now(), error, elapsed);
    }

    fn record_at(&self, now: u64, error: bool, elapsed: Duration) {
        let slot = &self.slots[(now % SLOTS as u64) as usize];
        let seen = slot.epoch.load(Ordering::Acquire);
        if seen != now + 1
            && slot
                .epoch
                .compare_exchange(seen, now + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            // The first request of a new slot clears it; a request racing with the
            // clear may be lost, which a one-minute view can afford.
            slot.clear();
        }
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        slot.latency[bucket_of(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn summary(&self) -> Summary {
        self.summary_at(slot_now())
    }

    fn summary_at(&self, now: u64) -> Summary {
        let (mut requests, mut errors) = (0, 0);
        let mut latency = [0u64; BUCKETS];
        // The slot being filled and the twelve before it: the last 60 to 65 s.
        let oldest = now.saturating_sub(SLOTS as u64 - 1);
        for slot in self.slots.iter() {
            let epoch = slot.epoch.load(Ordering::Acquire);
            if epoch == 0 || epoch < oldest + 1 || epoch > now + 1 {
                continue;
            }
            requests += slot.requests.load(Ordering::Relaxed);
            errors += slot.errors.load(Ordering::Relaxed);
            for (sum, b) in latency.iter_mut().zip(&slot.latency) {
                *sum += b.load(Ordering::Relaxed) as u64;
            }
        }
        let quantile = |q: f64| {
            let total: u64 = latency.iter().sum();
            let want = ((q * total as f64).ceil() as u64).max(1);
            let mut seen = 0;
            (total > 0)
                .then(|| {
                    latency.iter().position(|n| {
                        seen += n;
                        seen >= want
                    })
                })
                .flatten()
                .map(|i| (bucket_ms(i) * 1000.0).round() / 1000.0)
        };
        Summary {
            requests,
            errors,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            requests_per_second: requests as f64 / WINDOW.as_secs_f64(),
            p50_ms: quantile(0.50),
            p95_ms: quantile(0.95),
            p99_ms: quantile(0.99),
        }
    }
}

static ROUTES: Lazy<Mutex<HashMap<String, Weak<Window>>>> = Lazy::new(Default::default);

/// The window of route `name`, shared by every runtime that has the route, so a reload
/// keeps its history. Called when a runtime is built, never per request.
pub fn route_window(name: &str) -> Arc<Window> {
    let mut routes = ROUTES.lock().unwrap_or_else(PoisonError::into_inner);
    routes.retain(|_, w| w.strong_count() > 0);
    if let Some(w) = routes.get(name).and_then(Weak::upgrade) {
        return w;
    }
    let w = Arc::new(Window::default());
    routes.insert(name.to_string(), Arc::downgrade(&w));
    w
}

/// What an open-connection counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Listener,
    TcpService,
}

type OpenCount = Arc<dyn Fn() -> Option<u32> + Send + Sync>;

static OPEN: Lazy<Mutex<Vec<(Side, String, OpenCount)>>> = Lazy::new(Default::default);

/// Registers the open-connection counter of a listener or tcp_service (`open` answers
/// None once the counter is gone).
pub fn register_open(side: Side, name: &str, open: OpenCount) {
    let mut all = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
    all.retain(|(s, n, _)| !(*s == side && n == name));
    all.push((side, name.to_string(), open));
}

/// The open connections of every registered listener or tcp_service of `side`.
pub fn open_connections(side: Side) -> Vec<(String, u32)> {
    let all = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
    all.iter()
        .filter(|(s, _, _)| *s == side)
        .filter_map(|(_, name, open)| open().map(|n| (name.clone(), n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let w = Window::default();
        for i in 0..100 {
            // 90 fast (about 2 ms), 9 at about 50 ms, 1 at about 800 ms.
            let d = match i {
                0..=89 => ms(2),
                90..=98 => ms(50),
                _ => ms(800),
            };
            w.record_at(10, i == 99, d);
        }
        let s = w.summary_at(10);
        assert_eq!((s.requests, s.errors), (100, 1));
        assert!((s.error_rate - 0.01).abs() < 1e-9);
        let within = |v: Option<f64>, want: f64| {
            let v = v.unwrap();
            assert!((v - want).abs() / want < 0.2, "{v} vs {want}");
        };
        within(s.p50_ms, 2.0);
        within(s.p95_ms, 50.0);
        within(s.p99_ms, 50.0);
        assert_eq!(Window::default().summary_at(3).p50_ms, None);
    }

    #[test]
    fn requests_older_than_the_window_drop_out() {
        let w = Window::default();
        w.record_at(100, false, ms(1));
        w.record_at(105, true, ms(1));
        assert_eq!(w.summary_at(105).requests, 2);
        // Slot 100 counts for 12 more slots (60 s), then drops out; 105 is still in.
        assert_eq!(w.summary_at(112).requests, 2);
        let s = w.summary_at(113);
        assert_eq!((s.requests, s.errors), (1, 1));
        assert_eq!(w.summary_at(118).requests, 0);
        // The slot reused after a full turn starts from zero: 105's and 113's request.
        w.record_at(113, false, ms(1));
        assert_eq!(w.summary_at(113).requests, 2);
    }

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut last = 0;
        for us in [
            1u64, 2, 3, 5, 8, 100, 1_000, 1_500, 10_000, 1_000_000, 60_000_000,
        ] {
            let b = bucket_of(Duration::from_micros(us));
            assert!(b >= last);
            last = b;
            let mid = bucket_ms(b) * 1000.0;
            assert!((mid - us as f64).abs() / (us as f64) < 0.3, "{us}: {mid}");
        }
    }

    #[test]
    fn route_windows_survive_a_rebuild() {
        let a = route_window("stats-test-route");
        a.record(false, ms(1));
        let b = route_window("stats-test-route");
        assert_eq!(b.summary().requests, 1);
    }
}
