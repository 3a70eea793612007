//! Rollouts (SPEC §13, `POST/GET/DELETE /api/v1/pools/{pool}/rollout`): a pool's
//! backends replaced batch by batch. Each step adds the next `batch` new backends,
//! waits `interval`, waits for them to be healthy (active check passing, not ejected),
//! then drains the next `batch` old ones, waits for their in-flight requests (at most
//! `interval`), and removes them. Every change goes through the admin overlay like the
//! backend API's (persisted, shared with `cluster.redis`). `DELETE` stops a rollout and
//! puts the pool's overlay back as it was before it started: old backends back, new
//! ones gone. One rollout per pool at a time.

use crate::pool::overlay::{AddedBackend, PoolOverlay};
use crate::pool::Pool;
use crate::runtime::SharedRuntime;
use crate::state::store::StateStore;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long a new batch may take to become healthy before the rollout fails (and
/// rolls back): this many intervals, and at least twice the time its checks take to
/// take it out and bring it back.
const HEALTH_INTERVALS: u32 = 10;
const POLL: Duration = Duration::from_millis(100);

/// Why a rollout stopped short.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("the pool is gone (removed by a reload)")]
    PoolGone,
    #[error("new backends not healthy after {waited}: {backends}")]
    NotHealthy { waited: String, backends: String },
    #[error("changing the pool's overlay failed: {0}")]
    State(#[from] crate::state::StateError),
}

/// A requested rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `(address, weight)`, resolved and in canonical spelling.
    pub backends: Vec<(String, u32)>,
    pub batch: usize,
    pub interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Done,
    Aborted,
    Failed,
}

/// What `GET …/rollout` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub pool: String,
    pub status: Status,
    pub batch: usize,
    pub interval: String,
    /// Batches finished, of `batches`.
    pub step: usize,
    pub batches: usize,
    pub adding: Vec<String>,
    pub removing: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub message: String,
}

struct Rollout {
    progress: Mutex<Progress>,
    stop: Notify,
    /// The pool's overlay before the rollout (what DELETE puts back).
    before: PoolOverlay,
}

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every pool's latest rollout.
#[derive(Default)]
pub struct Rollouts {
    by_pool: Mutex<HashMap<String, Arc<Rollout>>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum StartError {
    /// A rollout of this pool is running.
    Running,
    /// The plan changes nothing.
    NothingToDo,
}

impl Rollouts {
    /// The latest rollout of `pool`.
    pub fn progress(&self, pool: &str) -> Option<Progress> {
        relock(&self.by_pool)
            .get(pool)
            .map(|r| relock(&r.progress).clone())
    }

    /// Starts a rollout of `pool` (its task runs until done, failed or stopped).
    pub fn start(
        &self,
        pool: &Pool,
        plan: Plan,
        runtime: SharedRuntime,
        state: Arc<StateStore>,
    ) -> Result<Progress, StartError> {
        let mut all = relock(&self.by_pool);
        if all
            .get(&pool.name)
            .is_some_and(|r| relock(&r.progress).status == Status::Running)
        {
            return Err(StartError::Running);
        }
        let current: Vec<String> = pool
            .members()
            .backends
            .iter()
            .map(|b| b.address.clone())
            .collect();
        let adding: Vec<String> = plan
            .backends
            .iter()
            .map(|(a, _)| a.clone())
            .filter(|a| !current.contains(a))
            .collect();
        let removing: Vec<String> = current
            .iter()
            .filter(|a| !plan.backends.iter().any(|(t, _)| t == *a))
            .cloned()
            .collect();
        if adding.is_empty() && removing.is_empty() {
            return Err(StartError::NothingToDo);
        }
        let batches = adding
            .len()
            .div_ceil(plan.batch)
            .max(removing.len().div_ceil(plan.batch));
        let progress = Progress {
            pool: pool.name.clone(),
            status: Status::Running,
            batch: plan.batch,
            interval: humantime::format_duration(plan.interval).to_string(),
            step: 0,
            batches,
            adding,
            removing,
            added: Vec::new(),
            removed: Vec::new(),
            message: String::new(),
        };
        let rollout = Arc::new(Rollout {
            progress: Mutex::new(progress.clone()),
            stop: Notify::new(),
            before: pool.overlay(),
        });
        all.insert(pool.name.clone(), rollout.clone());
        let name = pool.name.clone();
        tokio::spawn(async move {
            let run = Run {
                name,
                plan,
                runtime,
                state,
                rollout: rollout.clone(),
            };
            // Biased: once stopped (and restored), no further step may run.
            tokio::select! {
                biased;
                _ = rollout.stop.notified() => {}
                outcome = run.steps() => run.finish(outcome),
            }
        });
        log::info!("pool {}: rollout started ({batches} batches)", pool.name);
        Ok(progress)
    }

    /// Stops `pool`'s running rollout and restores the pool's overlay from before it.
    pub fn stop(
        &self,
        pool: &str,
        state: &StateStore,
        runtime: &SharedRuntime,
    ) -> Option<Progress> {
        let rollout = relock(&self.by_pool).get(pool).cloned()?;
        {
            let mut p = relock(&rollout.progress);
            if p.status != Status::Running {
                return Some(p.clone());
            }
            p.status = Status::Aborted;
            p.message = "stopped; the pool's backends are as before the rollout".into();
        }
        rollout.stop.notify_one();
        restore(pool, &rollout.before, state, runtime);
        log::info!("pool {pool}: rollout stopped, backends restored");
        let progress = relock(&rollout.progress).clone();
        Some(progress)
    }
}

/// How long the pool's active check takes to find a dead new backend (a round is at
/// most `timeout + interval`, `unhealthy_threshold` rounds must fail), and to take one
/// out and bring it back; zero without checks.
fn check_times(pool: &Pool) -> (Duration, Duration) {
    if pool.health_kind == crate::config::HealthKind::None {
        return (Duration::ZERO, Duration::ZERO);
    }
    let hc = pool.health_check.clone().unwrap_or_default();
    let round = hc.interval + hc.timeout;
    (
        round * hc.unhealthy_threshold.max(1),
        round * (hc.unhealthy_threshold + hc.healthy_threshold).max(1),
    )
}

fn current_pool(runtime: &SharedRuntime, name: &str) -> Option<Arc<Pool>> {
    runtime
        .load()
        .pools
        .iter()
        .find(|p| p.name == name)
        .cloned()
}

fn restore(pool: &str, before: &PoolOverlay, state: &StateStore, runtime: &SharedRuntime) {
    let Some(p) = current_pool(runtime, pool) else {
        return;
    };
    let result = state.update(pool, |o| *o = before.clone(), |o| p.set_overlay(o.clone()));
    if let Err(e) = result {
        log::error!("pool {pool}: restoring the backends after a rollout failed: {e}");
    }
}

/// One running rollout's task.
struct Run {
    name: String,
    plan: Plan,
    runtime: SharedRuntime,
    state: Arc<StateStore>,
    rollout: Arc<Rollout>,
}

impl Run {
    fn change(&self, change: impl FnOnce(&mut PoolOverlay, &Pool)) -> Result<(), RolloutError> {
        let pool = current_pool(&self.runtime, &self.name).ok_or(RolloutError::PoolGone)?;
        self.state
            .update(
                &self.name,
                |o| change(o, &pool),
                |o| pool.set_overlay(o.clone()),
            )
            .map(|_| ())
            .map_err(RolloutError::from)
    }

    async fn steps(&self) -> Result<(), RolloutError> {
        let (adding, removing) = {
            let p = relock(&self.rollout.progress);
            (p.adding.clone(), p.removing.clone())
        };
        let batch = self.plan.batch;
        let batches = relock(&self.rollout.progress).batches;
        for step in 0..batches {
            let add: Vec<String> = adding
                .iter()
                .skip(step * batch)
                .take(batch)
                .cloned()
                .collect();
            let remove: Vec<String> = removing
                .iter()
                .skip(step * batch)
                .take(batch)
                .cloned()
                .collect();
            self.add(&add)?;
            tokio::time::sleep(self.plan.interval).await;
            self.wait_healthy(&add).await?;
            self.drain(&remove).await?;
            let mut p = relock(&self.rollout.progress);
            p.step = step + 1;
            p.added.extend(add);
            p.removed.extend(remove);
        }
        Ok(())
    }

    fn weight_of(&self, address: &str) -> u32 {
        self.plan
            .backends
            .iter()
            .find(|(a, _)| a == address)
            .map_or(1, |(_, w)| *w)
    }

    fn add(&self, batch: &[String]) -> Result<(), RolloutError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.change(|o, pool| {
            for address in batch {
                let weight = self.weight_of(address);
                o.deleted.remove(address);
                o.draining.remove(address);
                if pool.is_static(address) {
                    o.weights.insert(address.clone(), weight);
                } else {
                    o.added.retain(|a| &a.address != address);
                    o.added.push(AddedBackend {
                        address: address.clone(),
                        weight,
                    });
                }
            }
        })
    }

    /// Every backend of `batch` is in the pool, healthy and not ejected. A new backend
    /// starts healthy, so it must first have had time to fail its check
    /// `unhealthy_threshold` times (`interval` has passed already).
    async fn wait_healthy(&self, batch: &[String]) -> Result<(), RolloutError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (settle, flip) = current_pool(&self.runtime, &self.name)
            .map(|p| check_times(&p))
            .unwrap_or_default();
        tokio::time::sleep(settle.saturating_sub(self.plan.interval)).await;
        let limit = (self.plan.interval * HEALTH_INTERVALS).max(flip * 2);
        let deadline = Instant::now() + limit;
        loop {
            let pool = current_pool(&self.runtime, &self.name).ok_or(RolloutError::PoolGone)?;
            let members = pool.members();
            let ready = batch.iter().all(|a| {
                members.find(a).is_some_and(|i| {
                    members.backends[i].healthy() && !members.backends[i].ejected()
                })
            });
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(RolloutError::NotHealthy {
                    waited: humantime::format_duration(limit).to_string(),
                    backends: batch.join(", "),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Drains `batch`, waits for its in-flight requests (at most `interval`), removes it.
    async fn drain(&self, batch: &[String]) -> Result<(), RolloutError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.change(|o, _| {
            for address in batch {
                o.draining.insert(address.clone());
            }
        })?;
        let deadline = Instant::now() + self.plan.interval;
        while Instant::now() < deadline {
            let idle = current_pool(&self.runtime, &self.name).is_some_and(|p| {
                let m = p.members();
                batch
                    .iter()
                    .all(|a| m.find(a).is_none_or(|i| m.backends[i].in_flight() == 0))
            });
            if idle {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        self.change(|o, pool| {
            for address in batch {
                o.draining.remove(address);
                o.weights.remove(address);
                o.added.retain(|a| &a.address != address);
                if pool.is_static(address) {
                    o.deleted.insert(address.clone());
                }
            }
        })
    }

    fn finish(&self, outcome: Result<(), RolloutError>) {
        {
            let mut p = relock(&self.rollout.progress);
            match &outcome {
                Ok(()) => {
                    p.status = Status::Done;
                    p.message = "every batch replaced".into();
                }
                Err(e) => {
                    p.status = Status::Failed;
                    p.message = format!("{e}; the pool's backends are as before the rollout");
                }
            }
        }
        match outcome {
            Ok(()) => log::info!("pool {}: rollout done", self.name),
            Err(e) => {
                log::warn!("pool {}: rollout failed: {e}; rolling back", self.name);
                restore(&self.name, &self.rollout.before, &self.state, &self.runtime);
            }
        }
    }
}
