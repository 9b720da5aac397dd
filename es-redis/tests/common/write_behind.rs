//! Helpers of the write-behind tests: a PostgreSQL store, configs, the
//! store through Redis, events.

use std::sync::Arc;
use std::time::Duration;

use es_core::NewEvent;
use es_postgres::{testing, EventStoreConfig, PostgresEventStore};
use es_redis::{RedisConfig, WriteBehindConfig, WriteBehindStore};
use serde_json::json;

/// A PostgreSQL event store in `schema` of the test database.
pub(crate) async fn pg(schema: &str) -> Arc<PostgresEventStore> {
    Arc::new(
        testing::store(EventStoreConfig::with_schema(schema.to_owned()))
            .await
            .expect("test database"),
    )
}

/// A write-behind config under `prefix`: 4 shards, 1 s flush leases.
pub(crate) fn config(prefix: &str) -> WriteBehindConfig {
    WriteBehindConfig {
        key_prefix: prefix.to_owned(),
        shards: 4,
        flush_lease: Duration::from_secs(1),
        ..WriteBehindConfig::default()
    }
}

/// Connection settings for the Redis at `url`.
pub(crate) fn redis(url: &str) -> RedisConfig {
    RedisConfig {
        url: url.to_owned(),
        response_timeout: Duration::from_secs(2),
        ..RedisConfig::default()
    }
}

/// A write-behind store over `inner` through the Redis at `url`.
pub(crate) async fn write_behind(
    inner: Arc<PostgresEventStore>,
    url: &str,
    config: WriteBehindConfig,
) -> WriteBehindStore<PostgresEventStore> {
    WriteBehindStore::builder(inner)
        .redis(redis(url))
        .config(config)
        .build()
        .await
        .expect("write-behind store")
}

/// An event `Deposited {n}`.
pub(crate) fn event(n: u64) -> NewEvent {
    NewEvent::new("Deposited", json!({ "n": n }))
}
