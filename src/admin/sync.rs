//! Owns the sharing of admin API changes between instances through `cluster.redis`:
//! publishing this instance's changes, applying the others', and catching up on every
//! (re)connection. Last writer wins per pool, in the order Redis saw the writes.
//!
//! Redis layout:
//! - hash `switchyard:admin:pools`: field = pool name, value = that pool's
//!   `PoolOverlay` JSON (a pool without changes has no field);
//! - string `switchyard:admin:epoch`: a counter bumped by every write, so it exists once
//!   any instance has written the overlay to this Redis;
//! - channel `switchyard:admin:changes`: one message per change,
//!   `{"origin":"<instance id>","version":N,"pool":"name","overlay":{...}}` where `N` is
//!   the epoch that write set.
//!
//! A change is written, counted and published by one script (atomically). The version
//! orders messages against the snapshot read at connection time and against this
//! instance's own writes, so a message that arrives late never undoes a newer write.
//! A pool changed here while Redis is unreachable stays marked in the `StateStore` and is
//! pushed first after reconnecting; a message for a pool with such an unpublished change
//! is ignored (the push that follows it wins in Redis too). All of it runs in one
//! background task: the request path never waits for Redis.

use crate::ops::tasks::Forever;
use crate::pool::overlay::PoolOverlay;
use crate::runtime::SharedRuntime;
use crate::state::store::StateStore;
use async_trait::async_trait;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub const POOLS_KEY: &str = "switchyard:admin:pools";
pub const EPOCH_KEY: &str = "switchyard:admin:epoch";
pub const CHANNEL: &str = "switchyard:admin:changes";

/// Connecting and every Redis command are bounded by this.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between connection attempts, and between liveness pings.
const RETRY: Duration = Duration::from_secs(1);

/// KEYS: pools hash, epoch. ARGV: pool name, overlay JSON ('' = no changes), channel,
/// origin as a JSON string, pool name as a JSON string. Returns the new epoch.
const PUSH: &str = r#"
local version = redis.call('INCR', KEYS[2])
local overlay = ARGV[2]
if overlay == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  overlay = '{}'
else
  redis.call('HSET', KEYS[1], ARGV[1], overlay)
end
redis.call('PUBLISH', ARGV[3], '{"origin":' .. ARGV[4] .. ',"version":' .. version ..
  ',"pool":' .. ARGV[5] .. ',"overlay":' .. overlay .. '}')
return version
"#;

/// KEYS: pools hash, epoch. ARGV: name, overlay JSON, name, overlay JSON, ...
/// Writes the overlay only if no instance ever did (-1 otherwise); returns the epoch.
const SEED: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
redis.call('DEL', KEYS[1])
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return redis.call('INCR', KEYS[2])
"#;

/// One change as published on the channel.
#[derive(Debug, Serialize, Deserialize)]
struct Change {
    origin: String,
    version: i64,
    pool: String,
    overlay: PoolOverlay,
}

/// The newest write known per pool during one connection: what the snapshot showed
/// (`floor`) and what was seen or written since.
#[derive(Default)]
struct Versions {
    floor: i64,
    pools: HashMap<String, i64>,
}

impl Versions {
    fn is_newer(&self, pool: &str, version: i64) -> bool {
        version > self.floor.max(self.pools.get(pool).copied().unwrap_or(0))
    }

    fn saw(&mut self, pool: &str, version: i64) {
        let v = self.pools.entry(pool.to_string()).or_insert(0);
        *v = (*v).max(version);
    }
}

/// The background service (only with `cluster.redis`).
pub struct AdminSync {
    url: String,
    /// This process's instance id (random per process).
    origin: String,
    state: Arc<StateStore>,
    runtime: SharedRuntime,
    /// Bumped after every reload: pools built by it get the current overlay again.
    reloaded: watch::Receiver<u64>,
    push: redis::Script,
    seed: redis::Script,
}

impl AdminSync {
    pub fn new(
        url: &str,
        state: Arc<StateStore>,
        runtime: SharedRuntime,
        reloaded: watch::Receiver<u64>,
    ) -> Self {
        AdminSync {
            url: url.to_string(),
            origin: fastrand::u64(..).to_string(),
            state,
            runtime,
            reloaded,
            push: redis::Script::new(PUSH),
            seed: redis::Script::new(SEED),
        }
    }

    /// One connection: subscribe, catch up, then publish and apply changes until a
    /// Redis operation fails (the error is returned).
    async fn session(
        &self,
        client: &redis::Client,
        reloaded: &mut watch::Receiver<u64>,
        on_ready: impl FnOnce(),
    ) -> Result<(), SyncError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let mut conn =
            bounded(client.get_multiplexed_async_connection_with_config(&config)).await?;
        let mut pubsub = bounded(client.get_async_pubsub()).await?;
        // Subscribed before catching up: no change falls between the two.
        bounded(pubsub.subscribe(CHANNEL)).await?;
        let mut messages = pubsub.on_message();
        let mut versions = self.catch_up(&mut conn).await?;
        on_ready();
        let mut ping = tokio::time::interval(RETRY);
        // False once the reloader is gone (its channel would then answer at once).
        let mut reloads = true;
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(m) => self.receive(&m, &mut versions),
                    None => return Err(SyncError::SubscriptionClosed),
                },
                _ = self.state.changed() => self.push_unpublished(&mut conn, &mut versions).await?,
                changed = reloaded.changed(), if reloads => match changed {
                    Ok(()) => self.reapply(),
                    Err(_) => reloads = false,
                },
                _ = ping.tick() => {
                    let _: String = bounded(redis::cmd("PING").query_async(&mut conn)).await?;
                }
            }
        }
    }

    /// On (re)connection: a Redis that never had the overlay gets ours; otherwise our
    /// unpublished changes are pushed and then the whole overlay is read and applied.
    async fn catch_up(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> Result<Versions, SyncError> {
        let local = self.state.snapshot();
        let unpublished = self.state.unpublished();
        let mut call = self.seed.key(POOLS_KEY);
        call.key(EPOCH_KEY);
        for (name, overlay) in &local.pools {
            call.arg(name).arg(to_json(overlay)?);
        }
        let seeded: i64 = bounded(call.invoke_async(conn)).await?;
        if seeded >= 0 {
            for (name, _) in &unpublished {
                let pushed = local.pools.get(name).cloned().unwrap_or_default();
                self.state.published(name, &pushed);
            }
            log::info!(
                "admin sync: Redis had no admin overlay; wrote this instance's ({} pool(s))",
                local.pools.len()
            );
            return Ok(Versions {
                floor: seeded,
                pools: HashMap::new(),
            });
        }
        let mut versions = Versions::default();
        self.push_unpublished(conn, &mut versions).await?;
        let (epoch, hash): (Option<i64>, HashMap<String, String>) = bounded(
            redis::pipe()
                .atomic()
                .get(EPOCH_KEY)
                .hgetall(POOLS_KEY)
                .query_async(conn),
        )
        .await?;
        versions.floor = epoch.unwrap_or(0);
        let mut pools = BTreeMap::new();
        let mut unreadable = BTreeSet::new();
        for (name, json) in hash {
            match serde_json::from_str::<PoolOverlay>(&json) {
                Ok(o) => {
                    pools.insert(name, o);
                }
                Err(e) => {
                    log::warn!("admin sync: {POOLS_KEY} field {name:?} is not a pool overlay ({e}); this instance keeps its own");
                    unreadable.insert(name);
                }
            }
        }
        match self
            .state
            .replace_all(pools, &unreadable, |name, o| self.apply(name, o))
        {
            Ok(changed) => {
                for name in changed {
                    log::info!("admin sync: pool {name} takes the admin changes shared in Redis");
                }
            }
            Err(e) => log::error!("admin sync: applied the shared admin changes, but {e}"),
        }
        Ok(versions)
    }

    /// Writes and publishes every pool changed here since the last push.
    async fn push_unpublished(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        versions: &mut Versions,
    ) -> Result<(), SyncError> {
        for (name, overlay) in self.state.unpublished() {
            let json = if overlay.is_empty() {
                String::new()
            } else {
                to_json(&overlay)?
            };
            let mut call = self.push.key(POOLS_KEY);
            call.key(EPOCH_KEY)
                .arg(&name)
                .arg(json)
                .arg(CHANNEL)
                .arg(to_json(&self.origin)?)
                .arg(to_json(&name)?);
            let version: i64 = bounded(call.invoke_async(conn)).await?;
            versions.saw(&name, version);
            self.state.published(&name, &overlay);
            log::debug!("admin sync: published pool {name} (version {version})");
        }
        Ok(())
    }

    /// A message on the channel: another instance's newer change is applied.
    fn receive(&self, message: &redis::Msg, versions: &mut Versions) {
        let change: Change = match serde_json::from_slice(message.get_payload_bytes()) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("admin sync: ignored a message on {CHANNEL} that is not a change ({e})");
                return;
            }
        };
        if change.origin == self.origin || !versions.is_newer(&change.pool, change.version) {
            versions.saw(&change.pool, change.version);
            return;
        }
        versions.saw(&change.pool, change.version);
        let name = change.pool.clone();
        match self
            .state
            .replace(&name, change.overlay, |o| self.apply(&name, o))
        {
            Ok(true) => log::info!("admin sync: pool {name} changed through another instance"),
            Ok(false) => {}
            Err(e) => {
                log::error!("admin sync: applied another instance's change to pool {name}, but {e}")
            }
        }
    }

    /// Sets `overlay` on the running pool `name`, if this instance has that pool (the
    /// `StateStore` keeps it for a reload that adds the pool).
    fn apply(&self, name: &str, overlay: &PoolOverlay) {
        let rt = self.runtime.load();
        if let Some(pool) = rt.pools.iter().find(|p| p.name == name) {
            if pool.overlay() != *overlay {
                pool.set_overlay(overlay.clone());
                // Names another instance added are looked up off this lock.
                let pool = pool.clone();
                tokio::spawn(async move { pool.resolve_added().await });
            }
        }
    }

    /// After a reload: every running pool carries the current overlay (a pool rebuilt
    /// while a change arrived could have missed it).
    fn reapply(&self) {
        let rt = self.runtime.load_full();
        for pool in &rt.pools {
            self.state.with_pool(&pool.name, |o| {
                if pool.overlay() != *o {
                    pool.set_overlay(o.clone());
                }
            });
        }
    }
}

/// Why a session with Redis ended (the service reconnects after a pause).
#[derive(Debug, thiserror::Error)]
pub(super) enum SyncError {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the subscription connection closed")]
    SubscriptionClosed,
    #[error("cannot encode an overlay: {0}")]
    Encode(#[from] serde_json::Error),
}

fn to_json<T: Serialize>(value: &T) -> Result<String, SyncError> {
    Ok(serde_json::to_string(value)?)
}

/// Runs one Redis operation, giving up after `TIMEOUT`.
pub(super) async fn bounded<T>(
    op: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, SyncError> {
    match tokio::time::timeout(TIMEOUT, op).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(SyncError::Timeout(TIMEOUT)),
    }
}

#[async_trait]
impl Forever for AdminSync {
    async fn run(&self) {
        let client = match redis::Client::open(self.url.as_str()) {
            Ok(c) => c,
            Err(e) => {
                log::error!("admin sync: cluster.redis is unusable ({e}); admin API changes stay on this instance");
                return;
            }
        };
        let at = crate::limits::cluster::log_address(&self.url);
        let mut reloaded = self.reloaded.clone();
        let mut ever_connected = false;
        let mut degraded = false;
        loop {
            let end = self
                .session(&client, &mut reloaded, || {
                    if degraded || !ever_connected {
                        log::info!("admin sync: connected to Redis at {at}; admin API changes are shared with the other instances");
                    }
                    degraded = false;
                    ever_connected = true;
                })
                .await;
            if let Err(e) = end {
                if !degraded {
                    log::warn!("admin sync: Redis at {at} unavailable ({e}); admin API changes stay on this instance and are published when it answers again");
                    degraded = true;
                } else {
                    log::debug!("admin sync: Redis at {at}: {e}");
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_message_never_undoes_a_newer_write() {
        let mut v = Versions {
            floor: 10,
            pools: HashMap::new(),
        };
        assert!(!v.is_newer("web", 10), "in the snapshot already");
        assert!(v.is_newer("web", 11));
        v.saw("web", 15);
        assert!(!v.is_newer("web", 12), "older than our own write");
        assert!(v.is_newer("other", 12));
    }

    #[test]
    fn the_published_message_is_a_change() {
        // What the PUSH script builds, for an overlay and for "no changes".
        let overlay = r#"{"added":[],"weights":{},"draining":["127.0.0.1:1"],"deleted":[]}"#;
        for o in [overlay, "{}"] {
            let text = format!(
                r#"{{"origin":"{}","version":3,"pool":"web","overlay":{o}}}"#,
                "42"
            );
            let c: Result<Change, _> = serde_json::from_str(&text);
            assert!(c.is_ok(), "{text}: {c:?}");
        }
    }
}
