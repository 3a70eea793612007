//! Owns the sharing of admin cache purges between instances through `cluster.redis`
//! (SPEC §11): each purge made here is published on channel `switchyard:cache:purge` as
//! `{"origin":"<instance id>","all":true}`, `{"origin":..,"host":H,"path":P}` or
//! `{"origin":..,"host":H,"prefix":P}`, and every other instance's purge is applied here.
//! Runs only when the process started with a `cache` section (its two Redis connections
//! are not opened otherwise). Purges made while Redis is away wait in a bounded queue and
//! are published once it answers; the request path never waits for Redis.

use super::redis_link::{bounded, Link, Presence, Session, SyncError};
use crate::cache::Store;
use crate::runtime::SharedRuntime;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Mutex};

pub const CHANNEL: &str = "switchyard:cache:purge";
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

/// Where the admin API hands the purges it made to the sync service.
#[derive(Clone)]
pub struct PurgeQueue(mpsc::Sender<Purge>);

impl PurgeQueue {
    /// Queues `purge` for the other instances (dropped, and logged, when full).
    pub fn publish(&self, purge: Purge) {
        if self.0.try_send(purge).is_err() {
            log::warn!("cache sync: {QUEUE} purges are waiting for Redis already; this one stays on this instance");
        }
    }
}

/// The background service (with `cluster.redis` and `cache` at start).
pub struct CacheSync {
    url: String,
    /// Whose cache storage the other instances' purges apply to.
    runtime: SharedRuntime,
    origin: String,
    outbox: Mutex<Outbox>,
}

/// Purges made here, on their way to Redis.
struct Outbox {
    queue: mpsc::Receiver<Purge>,
    /// Taken from the queue but not yet published (kept across a failed session).
    pending: Option<Purge>,
}

impl CacheSync {
    /// The service, and the queue the admin API publishes through.
    pub fn new(url: &str, runtime: SharedRuntime) -> (CacheSync, PurgeQueue) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let sync = CacheSync {
            url: url.to_string(),
            runtime,
            origin: fastrand::u64(..).to_string(),
            outbox: Mutex::new(Outbox {
                queue: rx,
                pending: None,
            }),
        };
        (sync, PurgeQueue(tx))
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
        if let Some(store) = self.runtime.load().cache_store {
            let n = purge.apply(store);
            log::info!("cache sync: another instance purged {purge:?}; {n} object(s) dropped here");
        }
    }
}

#[async_trait]
impl Session for CacheSync {
    fn url(&self) -> &str {
        &self.url
    }

    fn presence(&self) -> Presence {
        Presence::new(
            "cache sync",
            &self.url,
            "purges are shared with the other instances",
            "purges stay on this instance",
        )
    }

    /// Subscribes, then publishes ours and applies theirs until Redis fails; `Ok` once
    /// the queue is gone (the process is ending).
    async fn session(
        &self,
        client: &redis::Client,
        presence: &mut Presence,
    ) -> Result<(), SyncError> {
        let mut link = Link::open(client, CHANNEL).await?;
        presence.connected();
        let mut outbox = self.outbox.lock().await;
        loop {
            if let Some(p) = outbox.pending.as_ref() {
                let json = serde_json::to_string(&Message::of(&self.origin, p))?;
                let _: i64 = bounded(
                    redis::cmd("PUBLISH")
                        .arg(CHANNEL)
                        .arg(&json)
                        .query_async(&mut link.conn),
                )
                .await?;
                outbox.pending = None;
                continue;
            }
            tokio::select! {
                message = link.next_message() => self.receive(&message?),
                next = outbox.queue.recv() => match next {
                    Some(p) => outbox.pending = Some(p),
                    None => return Ok(()),
                },
            }
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
