//! Pingora background services (so they run after daemonising) for the runtime's state:
//! every pool's health-check loops (a loop ends by itself once its pool is gone), the
//! lookup of its admin-added backend names and its discovery providers
//! (`discovery::Supervisor`), following reloads, and the rate limiters' idle-key cleanup;
//! `UntilShutdown` runs the Redis links' loops.

use crate::config::HealthKind;
use crate::discovery::Supervisor;
use crate::pool::{health, Pool};
use crate::runtime::SharedRuntime;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct PoolTasks {
    pub runtime: SharedRuntime,
    /// Bumped after every successful reload.
    pub reloaded: watch::Receiver<u64>,
}

#[async_trait]
impl BackgroundService for PoolTasks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut reloaded = self.reloaded.clone();
        let mut running: HashMap<usize, Vec<JoinHandle<()>>> = HashMap::new();
        let mut discovery = Supervisor::default();
        loop {
            running.retain(|_, tasks| tasks.iter().any(|t| !t.is_finished()));
            let rt = self.runtime.load_full();
            for pool in &rt.pools {
                let key = Arc::as_ptr(pool) as usize;
                running.entry(key).or_insert_with(|| spawn_for(pool));
            }
            discovery.follow(&rt.pools);
            drop(rt);
            tokio::select! {
                _ = shutdown.changed() => break,
                changed = reloaded.changed() => if changed.is_err() { break },
            }
        }
        for task in running.into_values().flatten() {
            task.abort();
        }
    }
}

fn spawn_for(pool: &Arc<Pool>) -> Vec<JoinHandle<()>> {
    // Admin-added backends given by name (from the state file) join once resolved.
    let added = pool.clone();
    let mut tasks = vec![tokio::spawn(async move { added.resolve_added().await })];
    if pool.health_kind != HealthKind::None {
        tasks.push(tokio::spawn(health::run(
            Arc::downgrade(pool),
            pool.health_kind,
        )));
    }
    tasks
}

/// Once a second, drops rate-limit keys that are back to a full allowance, which bounds
/// the limiters' memory by the keys active within their refill window.
pub struct LimiterJanitor {
    pub runtime: SharedRuntime,
}

#[async_trait]
impl BackgroundService for LimiterJanitor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {
                    let rt = self.runtime.load();
                    for limit in rt.routes.iter().filter_map(|r| r.rate_limit.as_ref()) {
                        limit.forget_idle();
                    }
                }
            }
        }
    }
}

/// Keeps the Redis link of `scope: cluster` rate limits up.
pub struct ClusterLink(pub Arc<crate::limits::cluster::Cluster>);

#[async_trait]
impl Forever for ClusterLink {
    async fn run(&self) {
        self.0.connect_forever().await
    }
}

/// Work that runs for the life of the process (or until it gives up by itself).
#[async_trait]
pub trait Forever: Send + Sync {
    async fn run(&self);
}

/// A `Forever` as a Pingora background service: stopped when the server shuts down.
pub struct UntilShutdown<T>(pub T);

#[async_trait]
impl<T: Forever> BackgroundService for UntilShutdown<T> {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = self.0.run() => {}
        }
    }
}
