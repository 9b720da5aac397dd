//! Test support: every test gets its own schema in the test database
//! (`es_postgres::testing`).
#![allow(dead_code)]

use es_postgres::{testing, EventStoreConfig, PostgresEventStore};

#[allow(unused_imports)]
pub use es_postgres::testing::{database_url, ensure_database};

/// A fresh schema name.
pub fn schema(prefix: &str) -> String {
    testing::fresh_schema(prefix)
}

/// A migrated store in a fresh schema.
pub async fn store_with(config: EventStoreConfig) -> PostgresEventStore {
    testing::store(config).await.expect("test store")
}

/// A migrated store in a fresh schema with test-sized pools.
pub async fn store() -> PostgresEventStore {
    store_with(EventStoreConfig {
        max_connections: 6,
        ..EventStoreConfig::with_schema(schema("t"))
    })
    .await
}
