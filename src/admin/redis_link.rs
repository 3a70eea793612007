//! Owns what the two admin-side sharing tasks over `cluster.redis` (admin changes, cache
//! purges) have in common: every Redis command bounded in time, one session's command and
//! subscription connections with their liveness ping, and the reconnect loop that says
//! once that Redis went away and once that it answers again.

use crate::ops::tasks::Forever;
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubStream};
use std::future::Future;
use std::time::Duration;
use tokio::time::Interval;

/// Connecting and every Redis command are bounded by this.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between connection attempts, and between liveness pings.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub(super) enum SyncError {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the subscription connection closed")]
    SubscriptionClosed,
    #[error("cannot encode a message: {0}")]
    Encode(#[from] serde_json::Error),
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

/// One session's connections: `conn` for commands, and the messages of one channel.
pub(super) struct Link {
    pub conn: MultiplexedConnection,
    messages: PubSubStream,
    ping: Interval,
}

impl Link {
    /// Opens the command connection, then subscribes to `channel`.
    pub async fn open(client: &redis::Client, channel: &str) -> Result<Link, SyncError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let conn = bounded(client.get_multiplexed_async_connection_with_config(&config)).await?;
        let mut pubsub = bounded(client.get_async_pubsub()).await?;
        bounded(pubsub.subscribe(channel)).await?;
        Ok(Link {
            conn,
            messages: pubsub.into_on_message(),
            ping: tokio::time::interval(RETRY),
        })
    }

    /// The channel's next message; meanwhile Redis is pinged every `RETRY`, so a Redis
    /// that stopped answering ends the session. Cancel-safe (a `select!` branch).
    pub async fn next_message(&mut self) -> Result<redis::Msg, SyncError> {
        loop {
            tokio::select! {
                message = self.messages.next() => {
                    return message.ok_or(SyncError::SubscriptionClosed);
                }
                _ = self.ping.tick() => {
                    let _: String = bounded(redis::cmd("PING").query_async(&mut self.conn)).await?;
                }
            }
        }
    }
}

/// What one sharing task says about Redis, and whether it has said it: the first
/// connection and each recovery are logged once, a loss once until the next recovery.
pub(super) struct Presence {
    /// The task's name in its log lines ("admin sync").
    pub task: &'static str,
    /// What works while connected ("admin API changes are shared with the other instances").
    pub shared: &'static str,
    /// What happens without Redis ("admin API changes stay on this instance").
    pub alone: &'static str,
    /// `host:port` of Redis (the URL may carry a password).
    at: String,
    ever_connected: bool,
    degraded: bool,
}

impl Presence {
    pub fn new(task: &'static str, url: &str, shared: &'static str, alone: &'static str) -> Self {
        Presence {
            task,
            shared,
            alone,
            at: crate::limits::cluster::log_address(url),
            ever_connected: false,
            degraded: false,
        }
    }

    /// The session is connected and caught up.
    pub fn connected(&mut self) {
        if self.degraded || !self.ever_connected {
            log::info!(
                "{}: connected to Redis at {}; {}",
                self.task,
                self.at,
                self.shared
            );
        }
        self.degraded = false;
        self.ever_connected = true;
    }

    fn lost(&mut self, e: &SyncError) {
        if self.degraded {
            log::debug!("{}: Redis at {}: {e}", self.task, self.at);
        } else {
            log::warn!(
                "{}: Redis at {} unavailable ({e}); {} until it answers again",
                self.task,
                self.at,
                self.alone
            );
            self.degraded = true;
        }
    }
}

/// A sharing task's work over one connection to Redis.
#[async_trait::async_trait]
pub(super) trait Session: Send + Sync {
    /// `cluster.redis`.
    fn url(&self) -> &str;

    /// What the task says about Redis in its logs.
    fn presence(&self) -> Presence;

    /// Works until Redis fails (`Err`) or the task's work is over (`Ok`); calls
    /// `presence.connected()` once it is connected and caught up.
    async fn session(
        &self,
        client: &redis::Client,
        presence: &mut Presence,
    ) -> Result<(), SyncError>;
}

/// A sharing task runs its sessions over and over, `RETRY` apart, until one returns
/// `Ok`; each failure is reported through its `Presence`.
#[async_trait::async_trait]
impl<T: Session> Forever for T {
    async fn run(&self) {
        let mut presence = self.presence();
        let client = match redis::Client::open(self.url()) {
            Ok(c) => c,
            Err(e) => {
                log::error!(
                    "{}: cluster.redis is unusable ({e}); {}",
                    presence.task,
                    presence.alone
                );
                return;
            }
        };
        loop {
            match self.session(&client, &mut presence).await {
                Ok(()) => return,
                Err(e) => presence.lost(&e),
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}
