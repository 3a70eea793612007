//! `limits.header_timeout` for HTTP/1 (SPEC §10): the request line and headers must
//! arrive within it, however slowly they trickle in (slowloris). Pingora only bounds
//! each single read, so the accepted stream (`super::stream::EdgeStream`) keeps the
//! deadline. The proxy hooks move its [`HeaderClock`] through a request: the header is
//! complete (`early_request_filter`), the response is done (`logging`); the clock is
//! found through a task-local, since an HTTP/1 connection is served by one task from
//! accept to close. When the deadline passes with part of a header read, the client
//! gets a 408 and the connection is closed; an idle connection that never sent a byte
//! is closed silently (that is a keep-alive or preconnect, not an attack).

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

tokio::task_local! {
    static CLOCK: Arc<HeaderClock>;
}

/// Where a connection's current request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No request in progress: waiting (under Pingora's keep-alive timeout) for the
    /// first byte of the next one.
    Idle,
    /// A request's header is being read: the deadline runs.
    Reading,
    /// The header is complete; the body and response are under their own timeouts.
    Serving,
    /// HTTP/2, or the deadline passed: no deadline any more.
    Off,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Idle,
            1 => Phase::Reading,
            2 => Phase::Serving,
            _ => Phase::Off,
        }
    }
}

pub const TIMEOUT_408: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: 20\r\nconnection: close\r\n\r\n408 request timeout\n";

/// One connection's request phase, shared by its stream and its hooks.
#[derive(Debug)]
pub struct HeaderClock {
    phase: AtomicU8,
    pub timeout: Duration,
}

impl HeaderClock {
    pub fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(HeaderClock {
            // The first request's deadline runs from accept.
            phase: AtomicU8::new(Phase::Reading as u8),
            timeout,
        })
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// Moves to `phase`, unless the clock is off (that is final).
    pub fn set(&self, phase: Phase) {
        let _ = self
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p != Phase::Off as u8).then_some(phase as u8)
            });
    }

    /// Runs `fut` (the connection's HTTP/1 serving) with this clock reachable by the
    /// hooks below.
    pub async fn scope<F: Future>(self: Arc<Self>, fut: F) -> F::Output {
        CLOCK.scope(self, fut).await
    }
}

/// The request header has been read: its deadline stops.
pub fn header_complete() {
    let _ = CLOCK.try_with(|c| c.set(Phase::Serving));
}

/// The response is done: the next request's deadline starts with its first byte.
pub fn request_done() {
    let _ = CLOCK.try_with(|c| c.set(Phase::Idle));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hooks_move_the_clock_of_their_own_connection_only() {
        let mine = HeaderClock::new(Duration::from_secs(1));
        let other = HeaderClock::new(Duration::from_secs(1));
        mine.clone()
            .scope(async {
                header_complete();
            })
            .await;
        assert_eq!(mine.phase(), Phase::Serving);
        assert_eq!(other.phase(), Phase::Reading);
        mine.clone().scope(async { request_done() }).await;
        assert_eq!(mine.phase(), Phase::Idle);
        // Outside any connection the hooks do nothing.
        header_complete();
    }

    #[test]
    fn off_is_final() {
        let c = HeaderClock::new(Duration::from_secs(1));
        c.set(Phase::Off);
        c.set(Phase::Reading);
        assert_eq!(c.phase(), Phase::Off);
    }
}
