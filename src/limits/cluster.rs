//! The Redis side of `scope: cluster` rate limits: one script keeps each limit's token
//! bucket or sliding window in Redis, timed by Redis's own clock so instances' clocks
//! don't matter, and hands out tokens in batches (`lease`: at most half of what is left
//! per ask) that `lease.rs` spends locally; `give_back` returns unused ones to a bucket.
//! Every call is bounded by `cluster.timeout` (20 ms). While Redis is unreachable or slow,
//! `available` is false for a second at a time, each instance falls back to its local
//! limiter and says so once; it goes back to Redis by itself when Redis answers again.
//! All calls share one multiplexed connection.

use crate::config::{RateLimitAlgorithm, RateLimitConfig};
use arc_swap::ArcSwapOption;
use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// After a failure, Redis is not asked again for this long (requests use local limits).
const BACKOFF: Duration = Duration::from_secs(1);

/// KEYS[1] the limit's key; ARGV rate, burst, mode (`bucket`, `sliding` or `return`),
/// want (tokens asked for, or given back), id (unique per call). Returns
/// `{granted, wait_ms}`: `wait_ms` until the next token when none was granted.
const SCRIPT: &str = r#"
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000 + math.floor(tonumber(now_t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[4])
local function share(left)
  if left < 1 then return 0 end
  return math.min(want, math.max(1, math.floor(left / 2)))
end
if ARGV[3] == 'sliding' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 1000)
  local n = redis.call('ZCARD', KEYS[1])
  local granted = share(rate - n)
  if granted > 0 then
    local args = {}
    for i = 1, granted do
      args[#args + 1] = now
      args[#args + 1] = now .. ':' .. ARGV[5] .. ':' .. i
      if #args >= 1000 or i == granted then
        redis.call('ZADD', KEYS[1], unpack(args))
        args = {}
      end
    end
    redis.call('PEXPIRE', KEYS[1], 1100)
    return {granted, 0}
  end
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, 1000 - (now - tonumber(oldest[2]))}
end
local b = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
local granted = 0
local wait = 0
if ARGV[3] == 'return' then
  tokens = math.min(burst, tokens + want)
else
  granted = share(math.floor(tokens))
  if granted > 0 then
    tokens = tokens - granted
  else
    wait = math.ceil((1 - tokens) * 1000 / rate)
  end
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {granted, wait}
"#;

/// What a limit is, as the script needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub rate: u32,
    pub burst: u32,
    pub algorithm: RateLimitAlgorithm,
}

impl From<&RateLimitConfig> for Limit {
    fn from(c: &RateLimitConfig) -> Self {
        Limit {
            rate: c.rate,
            burst: c.burst,
            algorithm: c.algorithm,
        }
    }
}

/// Redis's answer to an ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub tokens: u32,
    /// When `tokens` is 0: milliseconds until Redis has the next one.
    pub wait_ms: u64,
}

/// `host:port` of a Redis URL, for logs: the URL itself may carry a password.
pub fn log_address(url: &str) -> String {
    redis::Client::open(url)
        .map(|c| c.get_connection_info().addr().to_string())
        .unwrap_or_else(|_| "(an invalid URL)".to_string())
}

pub struct Cluster {
    pub url: String,
    /// At most this much is added to a request by Redis (`cluster.timeout`).
    timeout: Duration,
    /// `log_address(url)`.
    at: String,
    link: ArcSwapOption<ConnectionManager>,
    script: redis::Script,
    /// Milliseconds since `start` until which Redis is skipped after a failure.
    skip_until_ms: AtomicU64,
    start: Instant,
    degraded: AtomicBool,
    sequence: AtomicU64,
}

impl Cluster {
    pub fn new(url: &str, timeout: Duration) -> Arc<Self> {
        Arc::new(Cluster {
            url: url.to_string(),
            timeout,
            at: log_address(url),
            link: ArcSwapOption::empty(),
            script: redis::Script::new(SCRIPT),
            skip_until_ms: AtomicU64::new(0),
            start: Instant::now(),
            degraded: AtomicBool::new(false),
            sequence: AtomicU64::new(0),
        })
    }

    /// Connects (and keeps trying every second) until connected; the connection
    /// manager reconnects by itself afterwards. Run from a background service.
    pub async fn connect_forever(self: &Arc<Self>) {
        let client = match redis::Client::open(self.url.as_str()) {
            Ok(c) => c,
            Err(e) => {
                log::error!("cluster.redis {}: {e}; limits stay local", self.at);
                return;
            }
        };
        loop {
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_response_timeout(Some(Duration::from_secs(1)));
            match ConnectionManager::new_with_config(client.clone(), config).await {
                Ok(m) => {
                    self.link.store(Some(Arc::new(m)));
                    log::info!("cluster: connected to Redis at {}", self.at);
                    return;
                }
                Err(e) => {
                    if !self.degraded.swap(true, Ordering::Relaxed) {
                        log::warn!("cluster: Redis at {} unreachable ({e}); rate limits are local until it answers", self.at);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// At most this much is added to a request by Redis.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether Redis may be asked now (connected, and not failed within `BACKOFF`).
    pub fn available(&self) -> bool {
        self.now_ms() >= self.skip_until_ms.load(Ordering::Relaxed) && self.link.load().is_some()
    }

    /// Asks for `want` tokens of `key` (at least 1); `None` when Redis could not decide
    /// in time (the caller applies its local limit).
    pub async fn lease(&self, key: &str, limit: Limit, want: u32) -> Option<Grant> {
        let mode = match limit.algorithm {
            RateLimitAlgorithm::TokenBucket => "bucket",
            RateLimitAlgorithm::SlidingWindow => "sliding",
        };
        let (granted, wait_ms) = self.call(key, limit, mode, want.max(1)).await?;
        Some(Grant {
            tokens: granted.clamp(0, i64::from(u32::MAX)) as u32,
            wait_ms: wait_ms.max(0) as u64,
        })
    }

    /// Puts `n` unused tokens back into `key`'s bucket (never above `burst`).
    pub async fn give_back(&self, key: &str, limit: Limit, n: u32) {
        let _ = self.call(key, limit, "return", n).await;
    }

    async fn call(&self, key: &str, limit: Limit, mode: &str, n: u32) -> Option<(i64, i64)> {
        if self.now_ms() < self.skip_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        let link = self.link.load_full()?;
        let mut conn = (*link).clone();
        let seq = self.sequence.fetch_add(1, Ordering::Relaxed);
        let mut call = self.script.key(key);
        call.arg(limit.rate)
            .arg(limit.burst)
            .arg(mode)
            .arg(n)
            .arg(format!("{}-{seq}", std::process::id()));
        let answer: Result<redis::RedisResult<(i64, i64)>, _> =
            tokio::time::timeout(self.timeout, call.invoke_async(&mut conn)).await;
        match answer {
            Ok(Ok(answer)) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    log::info!(
                        "cluster: Redis at {} answers again; rate limits are shared",
                        self.at
                    );
                }
                Some(answer)
            }
            failed => {
                self.skip_until_ms.store(
                    self.now_ms() + BACKOFF.as_millis() as u64,
                    Ordering::Relaxed,
                );
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {:?}", self.timeout),
                    };
                    log::warn!("cluster: Redis at {} failed ({why}); rate limits are local until it answers", self.at);
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_show_host_and_port_but_never_the_password() {
        let shown = log_address("redis://:s3cret@10.0.0.7:6380/2");
        assert_eq!(shown, "10.0.0.7:6380");
        assert!(!log_address("not a url").contains("not a url"));
    }
}
