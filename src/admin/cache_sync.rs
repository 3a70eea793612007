//! Owns the sharing of admin cache purges between instances through `cluster.redis`
//! (SPEC §11): each purge made here is published on channel `switchyard:cache:purge` as
//! `{"origin":"<instance id>","all":true}`, `{"origin":..,"host":H,"path":P}` or
//! `{"origin":..,"host":H,"prefix":P}`, and every other instance's purge is applied here.
//! Runs only when the process started with a `cache` section (its two Redis connections
//! are not opened otherwise). Purges made while Redis is away wait in a bounded queue and
//! are published once it answers; the request path never waits for Redis.

use super::sync::{bounded, SyncError};
use crate::cache::Store;
use crate::ops::tasks::Forever;
use async_trait::async_trait;
use futures_util::StreamExt;
use once_cell::sync::OnceCell;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::{mpsc, Mutex};

pub const CHANNEL: &str = "switchyard:cache:purge";
const TIMEOUT: Duration = Duration::from_secs(1);
const RETRY: Duration = Duration::from_secs(1);
/// Purges waiting for Redis beyond this many are dropped (and logged).
const QUEUE: usize = 1024;

/// One purge, as the admin API and the channel carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Purge {
    Path { host: String, path: String },
    Prefix { host: String, prefix: String },
    All,
}

impl Purge {
    /// Drops the objects this purge names; how many went.
    pub fn apply(&self, store: &Store) -> usize {
        match self {
            Purge::All => store.purge_all(),
            Purge::Path { host, path } => store.purge_path(host, path),
            Purge::Prefix { host, prefix } => store.purge_prefix(host, prefix),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Message {
    origin: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    all: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
}

impl Message {
    fn of(origin: &str, p: &Purge) -> Message {
        let mut m = Message {
            origin: origin.to_string(),
            all: false,
            host: None,
            path: None,
            prefix: None,
        };
        match p {
            Purge::All => m.all = true,
            Purge::Path { host, path } => {
                m.host = Some(host.clone());
                m.path = Some(path.clone());
            }
            Purge::Prefix { host, prefix } => {
                m.host = Some(host.clone());
                m.prefix = Some(prefix.clone());
            }
        }
        m
    }

    fn purge(self) -> Option<Purge> {
        match (self.all, self.host, self.path, self.prefix) {
            (true, None, None, None) => Some(Purge::All),
            (false, Some(host), Some(path), None) => Some(Purge::Path { host, path }),
            (false, Some(host), None, Some(prefix)) => Some(Purge::Prefix { host, prefix }),
            _ => None,
        }
    }
}

static OUTBOX: OnceCell<mpsc::Sender<Purge>> = OnceCell::new();

/// Hands a purge made here to the sync service (nothing happens without one).
pub fn publish(purge: Purge) {
    if let Some(tx) = OUTBOX.get() {
        if tx.try_send(purge).is_err() {
            log::warn!("cache sync: {QUEUE} purges are waiting for Redis already; this one stays on this instance");
        }
    }
}

/// The background service (with `cluster.redis` and `cache` at start).
pub struct CacheSync {
    url: String,
    origin: String,
    outbox: Mutex<mpsc::Receiver<Purge>>,
}

impl CacheSync {
    pub fn new(url: &str) -> CacheSync {
        let (tx, rx) = mpsc::channel(QUEUE);
        let _ = OUTBOX.set(tx);
        CacheSync {
            url: url.to_string(),
            origin: fastrand::u64(..).to_string(),
            outbox: Mutex::new(rx),
        }
    }

    /// One connection: subscribe, then publish ours and apply theirs until Redis fails.
    async fn session(
        &self,
        client: &redis::Client,
        outbox: &mut mpsc::Receiver<Purge>,
        pending: &mut Option<Purge>,
    ) -> Result<(), SyncError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let mut conn =
            bounded(client.get_multiplexed_async_connection_with_config(&config)).await?;
        let mut pubsub = bounded(client.get_async_pubsub()).await?;
        bounded(pubsub.subscribe(CHANNEL)).await?;
        let mut messages = pubsub.on_message();
        log::info!("cache sync: purges are shared with the other instances over Redis");
        let mut ping = tokio::time::interval(RETRY);
        loop {
            if let Some(p) = pending.as_ref() {
                let json = serde_json::to_string(&Message::of(&self.origin, p))?;
                let _: i64 = bounded(
                    redis::cmd("PUBLISH")
                        .arg(CHANNEL)
                        .arg(&json)
                        .query_async(&mut conn),
                )
                .await?;
                *pending = None;
                continue;
            }
            tokio::select! {
                message = messages.next() => match message {
                    Some(m) => self.receive(&m),
                    None => return Err(SyncError::SubscriptionClosed),
                },
                next = outbox.recv() => match next {
                    Some(p) => *pending = Some(p),
                    None => return Ok(()),
                },
                _ = ping.tick() => {
                    let _: String = bounded(redis::cmd("PING").query_async(&mut conn)).await?;
                }
            }
        }
    }

    fn receive(&self, m: &redis::Msg) {
        let message: Message = match serde_json::from_slice(m.get_payload_bytes()) {
            Ok(v) => v,
            Err(e) => {
                log::warn!("cache sync: ignored a message on {CHANNEL} that is not a purge ({e})");
                return;
            }
        };
        if message.origin == self.origin {
            return;
        }
        let Some(purge) = message.purge() else {
            log::warn!("cache sync: ignored a purge message on {CHANNEL} of no known form");
            return;
        };
        if let Some(store) = crate::cache::store() {
            let n = purge.apply(store);
            log::info!("cache sync: another instance purged {purge:?}; {n} object(s) dropped here");
        }
    }
}

#[async_trait]
impl Forever for CacheSync {
    async fn run(&self) {
        let client = match redis::Client::open(self.url.as_str()) {
            Ok(c) => c,
            Err(e) => {
                log::error!(
                    "cache sync: cluster.redis is unusable ({e}); purges stay on this instance"
                );
                return;
            }
        };
        let at = crate::limits::cluster::log_address(&self.url);
        let mut outbox = self.outbox.lock().await;
        let mut degraded = false;
        // A purge taken from the queue but not yet published (kept across a failure).
        let mut pending: Option<Purge> = None;
        loop {
            match self.session(&client, &mut outbox, &mut pending).await {
                Ok(()) => return,
                Err(e) if !degraded => {
                    log::warn!("cache sync: Redis at {at} unavailable ({e}); purges are published when it answers again");
                    degraded = true;
                }
                Err(e) => log::debug!("cache sync: Redis at {at}: {e}"),
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purges_round_trip_through_their_message() {
        for p in [
            Purge::All,
            Purge::Path {
                host: "a.test".into(),
                path: "/x".into(),
            },
            Purge::Prefix {
                host: "a.test".into(),
                prefix: "/img/".into(),
            },
        ] {
            let json = serde_json::to_string(&Message::of("1", &p)).unwrap();
            let back: Message = serde_json::from_str(&json).unwrap();
            assert_eq!(back.purge(), Some(p), "{json}");
        }
        let odd: Message = serde_json::from_str(r#"{"origin":"2","all":true,"host":"a"}"#).unwrap();
        assert_eq!(odd.purge(), None);
    }
}
