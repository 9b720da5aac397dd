//! Rate limiting per client id (account routes) or per peer IP (the rest).
//!
//! The algorithm is GCRA (the generic cell rate algorithm): a sliding-window
//! limit of `requests_per_minute` per `window_size` that lets up to
//! `burst_size` requests through at once, with no fixed-window edge effect
//! (in any interval of length `t` a client gets at most
//! `burst_size + requests_per_minute * t / window_size` requests). One
//! timestamp per client is all the state it needs, which keeps memory
//! small and makes the Redis version a single atomic script.
//!
//! `governor` implements GCRA too, but its keyed store cannot bound the
//! number of clients (it can only drop idle keys), so the in-memory limiter
//! here is written by hand: idle clients are dropped by a periodic sweep,
//! and at `max_clients` idle ones are evicted first, then the ones closest
//! to idle.

mod clock;
mod memory;
mod redis;

pub use clock::{ManualMonotonicClock, MonotonicClock, SystemMonotonicClock};
pub use memory::InMemoryRateLimiter;
pub use redis::RedisRateLimiter;
pub(crate) use redis::{bounded as bounded_redis_call, connect_manager as connect_redis};

use std::time::Duration;

use async_trait::async_trait;

/// The longest [`RateLimitConfig::emission_interval`]: 10 years.
pub const MAX_EMISSION_INTERVAL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Limits of one limiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sustained requests per `window_size` (0 disables limiting).
    pub requests_per_minute: u32,
    /// Requests allowed at once on top of the sustained rate's spacing.
    pub burst_size: u32,
    /// The window `requests_per_minute` is counted over.
    pub window_size: Duration,
    /// Most clients tracked at once (memory bound).
    pub max_clients: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            requests_per_minute: 60,
            burst_size: 10,
            window_size: Duration::from_secs(60),
            max_clients: 10_000,
        }
    }
}

impl RateLimitConfig {
    /// Whether limiting is switched off (`requests_per_minute == 0`).
    pub fn is_disabled(&self) -> bool {
        self.requests_per_minute == 0
    }

    /// Time between two requests at the sustained rate, at most
    /// [`MAX_EMISSION_INTERVAL`] (so that the limiter's arithmetic on
    /// instants stays in range whatever the window).
    pub fn emission_interval(&self) -> Duration {
        (self.window_size / self.requests_per_minute.max(1)).min(MAX_EMISSION_INTERVAL)
    }

    /// How many requests may come at once (at least 1).
    pub fn capacity(&self) -> u32 {
        self.burst_size.max(1)
    }
}

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitDecision {
    /// Let it through; `remaining` more could come right now.
    Allowed {
        /// Requests left in the current burst.
        remaining: u32,
    },
    /// Refuse it; the client may retry after this long.
    Limited {
        /// Wait before the next request would be allowed.
        retry_after: Duration,
    },
}

/// A rate limiter keyed by client (`client:<id>` or `ip:<addr>`).
///
/// Implementations fail open: a limiter whose backend is down lets requests
/// through (and logs it), because rate limiting protects the service and
/// must not take it down.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request of `key` and decides.
    async fn check(&self, key: &str) -> RateLimitDecision;
    /// Short name for logs and the readiness report.
    fn name(&self) -> &'static str;
    /// Whether the backend is reachable.
    async fn health(&self) -> Result<(), String> {
        Ok(())
    }
    /// Whether every request is allowed without counting (no key needs to
    /// be built for it).
    fn is_unlimited(&self) -> bool {
        false
    }
}

/// A limiter that lets everything through (`requests_per_minute = 0`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRateLimit;

#[async_trait]
impl RateLimiter for NoRateLimit {
    async fn check(&self, _key: &str) -> RateLimitDecision {
        RateLimitDecision::Allowed { remaining: u32::MAX }
    }

    fn name(&self) -> &'static str {
        "disabled"
    }

    fn is_unlimited(&self) -> bool {
        true
    }
}
