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

/// A [`ShardConfig`] that cannot work: the field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct InvalidShardConfig {
    /// The [`ShardConfig`] field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ShardConfig {
    /// Checks the settings against each other: at least one shard; a
    /// rebalance interval of at least 10 ms (the interval paces every
    /// round's Redis calls) and a lease (`lock_timeout`) of at least twice
    /// it (leases are renewed once per interval); a finite, non-negative
    /// threshold; a minimum per instance no larger than the maximum nor
    /// than the shard count, and a maximum of at least 1. [`ShardManager::connect`](super::ShardManager::connect)
    /// refuses a configuration that fails it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use es_redis::ShardConfig;
    /// assert!(ShardConfig::default().validate().is_ok());
    /// let busy = ShardConfig { rebalance_interval: Duration::ZERO, ..ShardConfig::default() };
    /// assert_eq!(busy.validate().unwrap_err().field, "rebalance_interval");
    /// let upside_down = ShardConfig { min_shards_per_instance: 5, max_shards_per_instance: 2, ..ShardConfig::default() };
    /// assert_eq!(upside_down.validate().unwrap_err().field, "min_shards_per_instance");
    /// ```
    pub fn validate(&self) -> Result<(), InvalidShardConfig> {
        let invalid = |field, reason: String| Err(InvalidShardConfig { field, reason });
        if self.shard_count == 0 {
            return invalid("shard_count", "must be at least 1".into());
        }
        if self.rebalance_interval < MIN_REBALANCE_INTERVAL {
            return invalid(
                "rebalance_interval",
                format!(
                    "must be at least {} ms (it paces the protocol's Redis calls), got {} ms",
                    MIN_REBALANCE_INTERVAL.as_millis(),
                    self.rebalance_interval.as_millis()
                ),
            );
        }
        if self.lock_timeout < self.rebalance_interval * 2 {
            return invalid(
                "lock_timeout",
                format!(
                    "({} ms) must be at least twice rebalance_interval ({} ms): leases are renewed once per interval",
                    self.lock_timeout.as_millis(),
                    self.rebalance_interval.as_millis()
                ),
            );
        }
        if !self.rebalance_threshold.is_finite() || self.rebalance_threshold < 0.0 {
            return invalid(
                "rebalance_threshold",
                format!("must be a fraction of at least 0, got {}", self.rebalance_threshold),
            );
        }
        if self.max_shards_per_instance == 0 {
            return invalid("max_shards_per_instance", "must be at least 1".into());
        }
        if self.min_shards_per_instance > self.shard_count {
            return invalid(
                "min_shards_per_instance",
                format!(
                    "({}) must not exceed shard_count ({}): no instance can own more shards than there are",
                    self.min_shards_per_instance, self.shard_count
                ),
            );
        }
        if self.min_shards_per_instance > self.max_shards_per_instance {
            return invalid(
                "min_shards_per_instance",
                format!(
                    "({}) must not exceed max_shards_per_instance ({})",
                    self.min_shards_per_instance, self.max_shards_per_instance
                ),
            );
        }
        Ok(())
    }
}

/// The shortest [`ShardConfig::rebalance_interval`] accepted.
pub const MIN_REBALANCE_INTERVAL: Duration = Duration::from_millis(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_field_at_fault() {
        let field = |c: ShardConfig| c.validate().err().map(|e| e.field);
        let d = ShardConfig::default;
        assert_eq!(field(d()), None);
        assert_eq!(field(ShardConfig { shard_count: 0, ..d() }), Some("shard_count"));
        assert_eq!(
            field(ShardConfig {
                rebalance_interval: Duration::from_millis(9),
                ..d()
            }),
            Some("rebalance_interval")
        );
        assert_eq!(
            field(ShardConfig {
                lock_timeout: Duration::from_millis(1999),
                ..d()
            }),
            Some("lock_timeout")
        );
        for t in [-0.1, f64::NAN, f64::INFINITY] {
            assert_eq!(
                field(ShardConfig {
                    rebalance_threshold: t,
                    ..d()
                }),
                Some("rebalance_threshold"),
                "{t}"
            );
        }
        assert_eq!(
            field(ShardConfig {
                max_shards_per_instance: 0,
                ..d()
            }),
            Some("max_shards_per_instance")
        );
        assert_eq!(
            field(ShardConfig {
                min_shards_per_instance: 3,
                max_shards_per_instance: 2,
                ..d()
            }),
            Some("min_shards_per_instance")
        );
        let count = d().shard_count;
        assert_eq!(
            field(ShardConfig {
                min_shards_per_instance: count + 1,
                ..d()
            }),
            Some("min_shards_per_instance"),
            "more than there are"
        );
        assert_eq!(
            field(ShardConfig {
                min_shards_per_instance: count,
                ..d()
            }),
            None,
            "all of them"
        );
        assert_eq!(
            field(ShardConfig {
                min_shards_per_instance: 2,
                max_shards_per_instance: 2,
                rebalance_threshold: 0.0,
                rebalance_interval: Duration::from_millis(10),
                lock_timeout: Duration::from_millis(20),
                ..d()
            }),
            None,
            "the bounds themselves are accepted"
        );
    }
}
