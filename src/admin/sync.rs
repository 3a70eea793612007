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

use super::redis_link::{bounded, Link, Presence, Session, SyncError};
use crate::pool::overlay::PoolOverlay;
use crate::runtime::SharedRuntime;
use crate::state::store::StateStore;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::watch;

pub const POOLS_KEY: &str = "switchyard:admin:pools";
pub const EPOCH_KEY: &str = "switchyard:admin:epoch";
pub const CHANNEL: &str = "switchyard:admin:changes";

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

fn to_json<T: Serialize>(value: &T) -> Result<String, SyncError> {
    Ok(serde_json::to_string(value)?)
}

#[async_trait]
impl Session for AdminSync {
    fn url(&self) -> &str {
        &self.url
    }

    fn presence(&self) -> Presence {
        Presence::new(
            "admin sync",
            &self.url,
            "admin API changes are shared with the other instances",
            "admin API changes stay on this instance",
        )
    }

    /// Subscribes, catches up, then publishes and applies changes until a Redis
    /// operation fails.
    async fn session(
        &self,
        client: &redis::Client,
        presence: &mut Presence,
    ) -> Result<(), SyncError> {
        // Reloads before this point are covered by the catch-up.
        let mut reloaded = self.reloaded.clone();
        reloaded.mark_unchanged();
        // Subscribed before catching up: no change falls between the two.
        let mut link = Link::open(client, CHANNEL).await?;
        let mut versions = self.catch_up(&mut link.conn).await?;
        presence.connected();
        // False once the reloader is gone (its channel would then answer at once).
        let mut reloads = true;
        loop {
            tokio::select! {
                message = link.next_message() => self.receive(&message?, &mut versions),
                _ = self.state.changed() => self.push_unpublished(&mut link.conn, &mut versions).await?,
                changed = reloaded.changed(), if reloads => match changed {
                    Ok(()) => self.reapply(),
                    Err(_) => reloads = false,
                },
            }
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
