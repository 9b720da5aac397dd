//! Builds the bounded in-process level from a [`CacheConfig`].

use std::hash::Hash;

use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy as MokaPolicy;
use moka::sync::Cache;

use crate::config::{CacheConfig, EvictionPolicy};
use crate::telemetry;

/// A moka cache bounded by `max_size`, evicting by the configured policy,
/// counting evictions per cause under `cache` in the metrics (`size`,
/// `expired`, `explicit`; an entry replaced by a newer value is not an
/// eviction and is not counted).
pub(crate) fn build<K, V>(config: &CacheConfig, cache: &'static str) -> Cache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let builder = Cache::builder()
        .max_capacity(config.max_size)
        .eviction_listener(move |_key, _value, cause| {
            let cause = match cause {
                RemovalCause::Size => "size",
                RemovalCause::Expired => "expired",
                RemovalCause::Replaced => return,
                RemovalCause::Explicit => "explicit",
            };
            metrics::counter!(telemetry::CACHE_EVICTIONS, "cache" => cache, "cause" => cause).increment(1);
        });
    match config.eviction_policy {
        EvictionPolicy::Lru => builder
            .eviction_policy(MokaPolicy::lru())
            .time_to_idle(config.ttl)
            .build(),
        EvictionPolicy::Lfu => builder
            .eviction_policy(MokaPolicy::tiny_lfu())
            .time_to_idle(config.ttl)
            .build(),
        EvictionPolicy::Ttl => builder
            .eviction_policy(MokaPolicy::lru())
            .time_to_live(config.ttl)
            .build(),
    }
}
