//! [`ShardConfig`]: how many shards, how long a lease lasts, how eagerly
//! the cluster rebalances.

use std::time::Duration;

use crate::config::{RedisConfig, ResilienceConfig};

/// Settings of a [`ShardManager`](super::ShardManager). Every instance of a
/// cluster must use the same `shard_count` and `key_prefix`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardConfig {
    /// Number of shards streams are spread over (default 16). Fixed for
    /// the life of a cluster: an instance configured with another count
    /// refuses to start ([`ShardError::ShardCountMismatch`](super::ShardError)).
    pub shard_count: u32,
    /// Imbalance that triggers a rebalance, as a fraction of the fair share
    /// (default 0.2): shards move when the most loaded live instance owns
    /// more than `threshold x shard_count / instances` shards above the
    /// least loaded one (and at least 2 more).
    pub rebalance_threshold: f64,
    /// How often an instance heartbeats, renews its leases, picks up
    /// unowned shards and (one instance at a time) rebalances (default
    /// 1 s). An instance that dies loses its shards to the live ones within
    /// `lock_timeout + rebalance_interval`.
    pub rebalance_interval: Duration,
    /// The lease TTL of a shard and of an instance's registration (default
    /// 5 s). Must be well above `rebalance_interval` (leases are renewed
    /// every interval): at least twice it.
    pub lock_timeout: Duration,
    /// Pause between attempts of a Redis call of the shard protocol that
    /// failed (default 100 ms).
    pub lock_retry_interval: Duration,
    /// Attempts of such a call before the round gives up on it (default 3).
    pub max_retries: u32,
    /// Shards an instance takes even beyond its fair share, so small
    /// clusters never leave an instance idle (default 0).
    pub min_shards_per_instance: u32,
    /// Shards an instance never exceeds, whatever the fair share (default:
    /// no limit, `u32::MAX`). With too few instances some shards then stay
    /// unowned (their commands are answered as unavailable).
    pub max_shards_per_instance: u32,
    /// How long a giver waits for its commands in flight on a shard it
    /// hands over before it releases the shard anyway (default 2 s; the
    /// store's fence refuses any of them that is still running after the
    /// taker's raise).
    pub drain_timeout: Duration,
    /// Prefix of every key of the shard protocol (default `es:shards:`).
    pub key_prefix: String,
    /// Connection settings.
    pub redis: RedisConfig,
    /// Breaker, shedding and retry settings.
    pub resilience: ResilienceConfig,
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            shard_count: 16,
            rebalance_threshold: 0.2,
            rebalance_interval: Duration::from_secs(1),
            lock_timeout: Duration::from_secs(5),
            lock_retry_interval: Duration::from_millis(100),
            max_retries: 3,
            min_shards_per_instance: 0,
            max_shards_per_instance: u32::MAX,
            drain_timeout: Duration::from_secs(2),
            key_prefix: "es:shards:".to_owned(),
            redis: RedisConfig::default(),
            resilience: ResilienceConfig::default(),
        }
    }
}
