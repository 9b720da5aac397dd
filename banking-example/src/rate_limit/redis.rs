//! GCRA in Redis: one atomic script per request, so that every instance
//! behind a load balancer shares the same limits. Time comes from the Redis
//! server (`TIME`), so instances' clocks do not matter.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

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

/// Upper bound on one Redis call of the limiter and of the token
/// blacklist, reconnection included: a Redis that is down costs a request
/// at most this long, then the caller's failure policy applies.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// A connection manager that gives up quickly when Redis is away (bounded
/// connect and response times, one reconnection attempt per failure)
/// instead of holding requests through a long reconnection backoff.
pub(crate) async fn connect_manager(url: &str) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_millis(400))
        .set_response_timeout(Duration::from_millis(250))
        .set_number_of_retries(1)
        .set_max_delay(100);
    ConnectionManager::new_with_config(client, config).await
}

/// `call`, failed with a timeout error after [`CALL_TIMEOUT`].
pub(crate) async fn bounded<T>(call: impl Future<Output = redis::RedisResult<T>>) -> redis::RedisResult<T> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::IoError,
            "redis call timed out",
        ))),
    }
}

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
        let conn = connect_manager(url).await?;
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
        let mut invocation = self.script.key(format!("{}{key}", self.prefix));
        invocation.arg(t).arg(self.config.capacity());
        let result: Result<(i64, i64), _> = bounded(invocation.invoke_async(&mut conn)).await;
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
        bounded(redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
