//! Step 7: a cache shared by every instance, in Redis.

use std::sync::Arc;
use std::time::Duration;

use es_core::{EventStore, Repository};
use es_redis::{CacheConfig, RedisConfig, RedisError, RedisStateCache};

use super::step1_account::Account;

// ANCHOR: cache
/// Accounts over `store` with a two-level cache: L1 in this process, L2 in
/// the Redis at `redis_url` under `key_prefix`. Creating it does no I/O:
/// the service starts even while Redis is down, and every Redis failure
/// is a cache miss.
pub fn cached_accounts(
    store: Arc<dyn EventStore>,
    redis_url: &str,
    key_prefix: &str,
) -> Result<Repository<Account>, RedisError> {
    let cache = RedisStateCache::<Account>::new(CacheConfig {
        key_prefix: key_prefix.into(),
        l2_ttl: Duration::from_mins(10),
        redis: RedisConfig {
            url: redis_url.into(),
            ..RedisConfig::default()
        },
        ..CacheConfig::default()
    })?;
    Ok(Repository::<Account>::builder(store).cache(Arc::new(cache)).build())
}
// ANCHOR_END: cache
