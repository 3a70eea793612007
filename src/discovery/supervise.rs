//! Runs each pool's providers across reloads: a provider whose pool name and settings
//! are unchanged keeps running (and is pointed at the pool's new definition); changed or
//! removed ones stop, new ones start. Each provider's last set survives its failures.

use super::{Settings, Update, Updates};
use crate::observe::metrics::METRICS;
use crate::pool::{Discovered, Pool, Source};
use std::sync::{Arc, Weak};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

struct Running {
    pool: String,
    settings: Settings,
    target: watch::Sender<Weak<Pool>>,
    task: JoinHandle<()>,
}

/// The running providers of every pool.
#[derive(Default)]
pub struct Supervisor {
    running: Vec<Running>,
}

impl Supervisor {
    /// Matches the running providers to `pools` (after start and after every reload).
    pub fn follow(&mut self, pools: &[Arc<Pool>]) {
        let mut next = Vec::new();
        for pool in pools {
            for settings in Settings::of(&pool.definition.discovery) {
                let kept = self
                    .running
                    .iter()
                    .position(|r| r.pool == pool.name && r.settings == settings);
                match kept {
                    Some(i) => {
                        let r = self.running.swap_remove(i);
                        let weak = Arc::downgrade(pool);
                        r.target.send_if_modified(|t| {
                            let changed = !Weak::ptr_eq(t, &weak);
                            *t = weak;
                            changed
                        });
                        next.push(r);
                    }
                    None => next.push(start(pool, settings)),
                }
            }
        }
        for gone in self.running.drain(..) {
            log::info!(
                "discovery: pool {} {}: stopped",
                gone.pool,
                gone.settings.source().as_str()
            );
            gone.task.abort();
        }
        self.running = next;
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for r in &self.running {
            r.task.abort();
        }
    }
}

fn start(pool: &Arc<Pool>, settings: Settings) -> Running {
    let (target, watching) = watch::channel(Arc::downgrade(pool));
    let task = tokio::spawn(supervise(pool.name.clone(), settings.clone(), watching));
    Running {
        pool: pool.name.clone(),
        settings,
        target,
        task,
    }
}

/// Aborts the provider when its supervisor ends (or is aborted).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn supervise(pool: String, settings: Settings, mut target: watch::Receiver<Weak<Pool>>) {
    let source = settings.source();
    let (tx, mut rx) = mpsc::channel(8);
    let _provider = AbortOnDrop(tokio::spawn(settings.provider(&pool).run(Updates(tx))));
    let errors = METRICS
        .discovery_errors
        .with_label_values(&[pool.as_str(), source.as_str()]);
    let mut last: Option<Vec<Discovered>> =
        target.borrow().upgrade().and_then(|p| p.discovered(source));
    let mut outage = false;
    loop {
        tokio::select! {
            update = rx.recv() => match update {
                None => return,
                Some(Update::Found(set)) => {
                    if outage {
                        outage = false;
                        log::info!("discovery: pool {pool} {}: answering again", source.as_str());
                    }
                    if last.as_ref() != Some(&set) {
                        log::info!("discovery: pool {pool} {}: {}", source.as_str(), describe(&set));
                        apply(&target, source, &set);
                        last = Some(set);
                    }
                }
                Some(Update::Failed(e)) => {
                    errors.inc();
                    if !outage {
                        outage = true;
                        let kept = last.as_ref().map_or(0, Vec::len);
                        log::warn!(
                            "discovery: pool {pool} {}: {e}; keeping the last {kept} backends until it answers again",
                            source.as_str()
                        );
                    }
                }
            },
            changed = target.changed() => {
                if changed.is_err() {
                    return;
                }
                if let Some(set) = &last {
                    apply(&target, source, set);
                }
            }
        }
    }
}

fn apply(target: &watch::Receiver<Weak<Pool>>, source: Source, set: &[Discovered]) {
    let pool = target.borrow().upgrade();
    if let Some(pool) = pool {
        pool.set_discovered(source, set.to_vec());
    }
}

/// `[10.0.0.1:80 w=1, 10.0.0.2:80 w=5 backup, 10.0.0.3:80 draining]`
fn describe(set: &[Discovered]) -> String {
    let items: Vec<String> = set
        .iter()
        .map(|d| {
            let mut s = format!("{} w={}", d.addr, d.weight);
            if d.backup {
                s.push_str(" backup");
            }
            if d.draining {
                s.push_str(" draining");
            }
            s
        })
        .collect();
    format!("[{}]", items.join(", "))
}
