//! A Pingora background service (so it runs after daemonising) that gives every pool of
//! the current runtime its health-check and discovery loops, and picks up the pools of
//! each new runtime after a reload. A loop ends by itself once its pool is gone.

use crate::config::HealthKind;
use crate::pool::{discovery, health, Pool};
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
        loop {
            running.retain(|_, tasks| tasks.iter().any(|t| !t.is_finished()));
            let rt = self.runtime.load_full();
            for pool in &rt.pools {
                let key = Arc::as_ptr(pool) as usize;
                running.entry(key).or_insert_with(|| spawn_for(pool));
            }
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
    let mut tasks = Vec::new();
    if pool.health_kind != HealthKind::None {
        tasks.push(tokio::spawn(health::run(
            Arc::downgrade(pool),
            pool.health_kind,
        )));
    }
    if let Some(d) = pool.definition.discovery.clone() {
        tasks.push(tokio::spawn(discovery::run(Arc::downgrade(pool), d)));
    }
    tasks
}
