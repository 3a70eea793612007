//! Shutdown signals on top of Pingora's: SIGQUIT (upgrade) and SIGTERM (graceful stop)
//! first mark the process not ready (`/readyz` answers 503), then Pingora stops the
//! listeners. On SIGTERM the process exits 0 as soon as no request or TCP session is in
//! flight, or
//! when `server.shutdown_timeout` has passed, instead of sitting out the whole grace
//! period (which is meant for upgrades). SIGINT is Pingora's fast shutdown.

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};

/// How many HTTP requests and TCP sessions are in progress: the listeners count them,
/// SIGTERM waits for them. One per process, made by the server wiring.
#[derive(Clone, Default)]
pub struct WorkCount(Arc<AtomicUsize>);

impl WorkCount {
    /// Counts one request or session until the `Work` is dropped.
    pub fn start(&self) -> Work {
        self.0.fetch_add(1, Ordering::Relaxed);
        Work(self.0.clone())
    }

    fn current(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One request or session in flight.
pub struct Work(Arc<AtomicUsize>);

impl Drop for Work {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Signals {
    pub ready: Arc<AtomicBool>,
    pub work: WorkCount,
    pub shutdown_timeout: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            log::error!("cannot watch shutdown signals; stopping");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = quit.recv() => {
                self.ready.store(false, Ordering::Relaxed);
                log::info!("SIGQUIT: handing the listening sockets to the new process");
                ShutdownSignal::GracefulUpgrade
            }
            _ = term.recv() => {
                self.ready.store(false, Ordering::Relaxed);
                log::info!("SIGTERM: stopping; waiting up to {:?} for in-flight requests", self.shutdown_timeout);
                exit_when_idle(self.work.clone(), self.shutdown_timeout);
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => ShutdownSignal::FastShutdown,
        }
    }
}

/// Exits 0 once nothing is in flight (after a short settle, so requests already
/// accepted get counted) or when `limit` has passed.
fn exit_when_idle(work: WorkCount, limit: Duration) {
    let spawned = std::thread::Builder::new()
        .name("shutdown".into())
        .spawn(move || {
            let start = Instant::now();
            std::thread::sleep(Duration::from_millis(200));
            while work.current() > 0 && start.elapsed() < limit {
                std::thread::sleep(Duration::from_millis(20));
            }
            let left = work.current();
            if left > 0 {
                log::warn!("shutdown_timeout reached with {left} request(s) still in flight");
            }
            log::info!("stopped");
            std::process::exit(0);
        });
    if let Err(e) = spawned {
        log::error!("cannot start the shutdown watcher: {e}");
    }
}

/// From SIGQUIT/SIGTERM on (`ready` false) responses close their connection, so clients
/// move to the new process instead of racing the old one's shutdown.
pub fn drain_keepalive(
    session: &mut pingora_proxy::Session,
    ready: &std::sync::atomic::AtomicBool,
) {
    if !ready.load(std::sync::atomic::Ordering::Relaxed) {
        session.set_keepalive(None);
    }
}
