//! Why the edge refused a connection or a request (SPEC §10's `reason` label), how it
//! is counted, and the flood-proof log line: a burst of refusals is one line per reason
//! and interval with a count, never one line per client.

use super::metrics::METRICS;
use once_cell::sync::Lazy;
use prometheus::IntCounterVec;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    HeaderTimeout,
    BodyTimeout,
    HeaderTooLarge,
    BodyTooLarge,
    Malformed,
    ConnectionLimit,
    PerIpLimit,
    H2Abuse,
    /// A tcp_service client refused by `server.deny` or a missing/untrusted PROXY header.
    Denied,
}

impl Reason {
    /// The reasons an HTTP listener reports (SPEC §10).
    pub const HTTP: [Reason; 8] = [
        Reason::HeaderTimeout,
        Reason::BodyTimeout,
        Reason::HeaderTooLarge,
        Reason::BodyTooLarge,
        Reason::Malformed,
        Reason::ConnectionLimit,
        Reason::PerIpLimit,
        Reason::H2Abuse,
    ];
    /// The reasons a tcp_service reports.
    pub const TCP: [Reason; 3] = [Reason::ConnectionLimit, Reason::PerIpLimit, Reason::Denied];
    /// How many reasons there are (`Denied` is the last one declared).
    pub const COUNT: usize = Reason::Denied as usize + 1;

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::HeaderTimeout => "header_timeout",
            Reason::BodyTimeout => "body_timeout",
            Reason::HeaderTooLarge => "header_too_large",
            Reason::BodyTooLarge => "body_too_large",
            Reason::Malformed => "malformed",
            Reason::ConnectionLimit => "connection_limit",
            Reason::PerIpLimit => "per_ip_limit",
            Reason::H2Abuse => "h2_abuse",
            Reason::Denied => "denied",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Creates every (listener, reason) series at zero, so alerts can `rate()` them from the
/// start.
pub fn register_http(listener: &str) {
    register(&METRICS.http_refused, listener, &Reason::HTTP);
}

pub fn register_tcp(service: &str) {
    register(&METRICS.tcp_refused, service, &Reason::TCP);
}

fn register(counter: &IntCounterVec, name: &str, reasons: &[Reason]) {
    for r in reasons {
        counter.with_label_values(&[name, r.as_str()]);
    }
}

/// Counts an HTTP refusal and logs it through the flood guard.
pub fn http(listener: &str, reason: Reason, detail: &dyn std::fmt::Display) {
    count(&METRICS.http_refused, "listener", listener, reason, detail);
}

/// Counts a tcp_service refusal and logs it through the flood guard.
pub fn tcp(service: &str, reason: Reason, detail: &dyn std::fmt::Display) {
    count(&METRICS.tcp_refused, "tcp_service", service, reason, detail);
}

fn count(
    counter: &IntCounterVec,
    kind: &str,
    name: &str,
    reason: Reason,
    detail: &dyn std::fmt::Display,
) {
    counter.with_label_values(&[name, reason.as_str()]).inc();
    FLOOD.note(reason, || {
        format!("{kind} {name}: refused ({}): {detail}", reason.as_str())
    });
}

/// One summary line per reason and interval.
const INTERVAL: Duration = Duration::from_secs(10);

static FLOOD: Lazy<FloodGuard> = Lazy::new(|| FloodGuard::new(INTERVAL));

/// Logs the first refusal of a reason at once, then stays quiet for `interval`, after
/// which the next refusal logs how many were not logged in between.
pub struct FloodGuard {
    interval: Duration,
    /// Per reason: when it last logged (None: never) and how many it has held back since.
    state: [Mutex<Option<Instant>>; Reason::COUNT],
    held: [AtomicU64; Reason::COUNT],
}

impl FloodGuard {
    pub fn new(interval: Duration) -> Self {
        FloodGuard {
            interval,
            state: Default::default(),
            held: Default::default(),
        }
    }

    /// Logs `line()` unless this reason logged within the interval; returns whether
    /// it logged.
    pub fn note(&self, reason: Reason, line: impl FnOnce() -> String) -> bool {
        let i = reason.index();
        let now = Instant::now();
        let mut last = self.state[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|t| now.duration_since(t) < self.interval) {
            self.held[i].fetch_add(1, Ordering::Relaxed);
            return false;
        }
        *last = Some(now);
        drop(last);
        let held = self.held[i].swap(0, Ordering::Relaxed);
        if held == 0 {
            log::warn!("{}", line());
        } else {
            log::warn!(
                "{} (and {held} more {} refusals in the last {}s)",
                line(),
                reason.as_str(),
                self.interval.as_secs()
            );
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_logs_once_per_interval() {
        let guard = FloodGuard::new(Duration::from_secs(3600));
        let logged = (0..1000)
            .filter(|_| guard.note(Reason::PerIpLimit, || "x".into()))
            .count();
        assert_eq!(logged, 1);
        assert_eq!(
            guard.held[Reason::PerIpLimit.index()].load(Ordering::Relaxed),
            999
        );
        // Another reason has its own budget.
        assert!(guard.note(Reason::Malformed, || "y".into()));
    }

    #[test]
    fn after_the_interval_the_next_refusal_logs_the_count() {
        let guard = FloodGuard::new(Duration::ZERO);
        assert!(guard.note(Reason::Denied, || "a".into()));
        assert!(guard.note(Reason::Denied, || "b".into()));
    }

    #[test]
    fn every_reason_has_its_own_slot() {
        let mut seen: Vec<usize> = Reason::HTTP
            .iter()
            .chain(&Reason::TCP)
            .map(|r| r.index())
            .collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, (0..Reason::COUNT).collect::<Vec<_>>());
    }
}
