//! Plain configuration structs, each with sensible defaults.
//!
//! Nothing here reads the environment: the application decides where its
//! settings come from and fills these in.

use std::time::Duration;

/// How to reach Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Connection URL, e.g. `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// Number of multiplexed connections used round-robin (at least 1).
    pub pool_size: usize,
    /// Upper bound on establishing one connection.
    pub connect_timeout: Duration,
    /// Upper bound on one Redis call (including queueing on the
    /// connection); a call that takes longer counts as a failure.
    pub response_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            pool_size: 2,
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_millis(250),
        }
    }
}

/// Circuit breaker, load shedding and retry around every Redis call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResilienceConfig {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit rejects calls before letting one probe
    /// through (half-open).
    pub open_for: Duration,
    /// Maximum Redis calls in flight at once; calls beyond it are shed
    /// (answered as "unavailable" at once, so callers fall back to the
    /// store instead of queueing).
    pub max_in_flight: usize,
    /// Attempts for idempotent calls, the first included (1 = no retry).
    pub retry_attempts: u32,
    /// Delay after the first failed attempt; doubles per attempt, with
    /// jitter.
    pub retry_base_delay: Duration,
    /// Upper bound of one retry delay.
    pub retry_max_delay: Duration,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(5),
            max_in_flight: 256,
            retry_attempts: 2,
            retry_base_delay: Duration::from_millis(10),
            retry_max_delay: Duration::from_millis(100),
        }
    }
}

/// How the in-process level (L1) chooses what to drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvictionPolicy {
    /// Least recently used goes first when full; entries also expire after
    /// `ttl` without access (time-to-idle).
    #[default]
    Lru,
    /// TinyLFU admission and frequency-based eviction (good for skewed
    /// access, resists scans); entries expire after `ttl` without access.
    Lfu,
    /// Entries expire `ttl` after they were written, whether used or not
    /// (bounds staleness of L1 for readers of other instances' writes);
    /// LRU when full.
    Ttl,
}

/// Two-level cache settings (L1 in process, L2 in Redis).
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Maximum entries of L1.
    pub max_size: u64,
    /// Lifetime of an L1 entry (idle or since write, by `eviction_policy`).
    pub ttl: Duration,
    /// Whether L1 is used at all. `false` makes every read go to Redis:
    /// right for [`LockedRepository`](crate::LockedRepository) across
    /// instances, where under the stream lock L2 holds the previous
    /// holder's write but this instance's L1 may not.
    pub l1_enabled: bool,
    /// Lifetime of an L2 entry in Redis since its last write.
    pub l2_ttl: Duration,
    /// L1 eviction policy.
    pub eviction_policy: EvictionPolicy,
    /// Namespace of every Redis key of this cache.
    pub key_prefix: String,
    /// How many recently written keys are remembered in Redis for
    /// [`warm_recent`](crate::RedisStateCache::warm_recent) (0: none).
    pub recent_keys: usize,
    /// Connection settings.
    pub redis: RedisConfig,
    /// Breaker, shedding and retry settings.
    pub resilience: ResilienceConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_size: 10_000,
            ttl: Duration::from_secs(300),
            l1_enabled: true,
            l2_ttl: Duration::from_secs(3600),
            eviction_policy: EvictionPolicy::default(),
            key_prefix: "es".to_owned(),
            recent_keys: 1000,
            redis: RedisConfig::default(),
            resilience: ResilienceConfig::default(),
        }
    }
}

/// What the de-duplicator does when Redis cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenUnavailable {
    /// Refuse the command with [`es_core::DedupError::Unavailable`]: a
    /// repeat could not be recognised, so running it risks a double
    /// effect. The default.
    #[default]
    FailClosed,
    /// Run the command as if the key were new (availability over
    /// at-most-once). Only sensible when the command is idempotent by
    /// other means, e.g. a `CommandContext::command_id`.
    FailOpen,
}

/// Command de-duplication settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DedupConfig {
    /// Namespace of every Redis key of the de-duplicator.
    pub key_prefix: String,
    /// How long a completed outcome is kept and replayed.
    pub window: Duration,
    /// How long an in-flight mark lives if its owner never completes
    /// (crash); after it, a repeat runs the command.
    pub in_flight_ttl: Duration,
    /// Behaviour when Redis is unreachable.
    pub when_unavailable: WhenUnavailable,
    /// Connection settings.
    pub redis: RedisConfig,
    /// Breaker, shedding and retry settings.
    pub resilience: ResilienceConfig,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            key_prefix: "es".to_owned(),
            window: Duration::from_secs(24 * 3600),
            in_flight_ttl: Duration::from_secs(30),
            when_unavailable: WhenUnavailable::default(),
            redis: RedisConfig::default(),
            resilience: ResilienceConfig::default(),
        }
    }
}

/// Distributed lock settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LockConfig {
    /// The lease time to give [`LockedRepository::new`](crate::LockedRepository::new)
    /// (`LockedRepository::new(repo, locks, config.lock_timeout)`); the
    /// manager itself takes each lease's time from its caller.
    pub lock_timeout: Duration,
    /// Attempts of `acquire` while the lock is taken.
    pub retry_attempts: u32,
    /// Delay between attempts (jittered by up to 50%).
    pub retry_delay: Duration,
    /// Prefix of every lock key and of the fencing-token counter.
    pub lock_prefix: String,
    /// Connection settings.
    pub redis: RedisConfig,
    /// Breaker, shedding and retry settings.
    pub resilience: ResilienceConfig,
}

impl Default for LockConfig {
    fn default() -> Self {
        Self {
            lock_timeout: Duration::from_secs(10),
            retry_attempts: 100,
            retry_delay: Duration::from_millis(10),
            lock_prefix: "es:lock:".to_owned(),
            redis: RedisConfig::default(),
            resilience: ResilienceConfig::default(),
        }
    }
}
