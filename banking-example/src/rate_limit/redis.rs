//! GCRA in Redis: one atomic script per request, so that every instance
//! behind a load balancer shares the same limits. Time comes from the Redis
//! server (`TIME`), so instances' clocks do not matter.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use super::{RateLimitConfig, RateLimitDecision, RateLimiter};

const SCRIPT: &str = r"
local t = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local tolerance = (cap - 1) * t
if tat - now > tolerance then
  return {0, tat - now - tolerance}
end
local new = tat + t
redis.call('SET', KEYS[1], string.format('%d', new), 'PX', math.ceil((new - now) / 1000) + 1)
return {1, cap - math.ceil((new - now) / t)}
";

/// A [`RateLimiter`] shared through Redis. Keys expire as soon as the
/// client is idle, so Redis memory stays bounded by the active clients.
#[derive(Clone)]
pub struct RedisRateLimiter {
    conn: ConnectionManager,
    script: redis::Script,
    config: RateLimitConfig,
    prefix: String,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.prefix)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    /// Connects to `url`; keys are `<prefix><client key>`.
    pub async fn connect(url: &str, prefix: &str, config: RateLimitConfig) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        Ok(Self {
            conn,
            script: redis::Script::new(SCRIPT),
            config,
            prefix: prefix.to_owned(),
        })
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, key: &str) -> RateLimitDecision {
        let t = u64::try_from(self.config.emission_interval().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut conn = self.conn.clone();
        let result: Result<(i64, i64), _> = self
            .script
            .key(format!("{}{key}", self.prefix))
            .arg(t)
            .arg(self.config.capacity())
            .invoke_async(&mut conn)
            .await;
        match result {
            Ok((1, remaining)) => RateLimitDecision::Allowed {
                remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
            },
            Ok((_, wait_us)) => RateLimitDecision::Limited {
                retry_after: Duration::from_micros(u64::try_from(wait_us.max(1)).unwrap_or(1)),
            },
            Err(e) => {
                tracing::warn!(error = %e, "redis rate limiter unavailable; letting the request through");
                metrics::counter!("rate_limit_backend_errors_total").increment(1);
                RateLimitDecision::Allowed { remaining: 0 }
            }
        }
    }

    fn name(&self) -> &'static str {
        "redis"
    }

    async fn health(&self) -> Result<(), String> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
