//! PostgreSQL support: the test database and a fresh schema per test
//! (`es_postgres::testing`), so tests run in parallel.

use banking_example::AppConfig;

pub use es_postgres::testing::database_url;

/// Creates the test database when missing.
pub async fn ensure_database() {
    es_postgres::testing::ensure_database().await.expect("test database");
}

/// A fresh schema name (at most 40 characters).
pub fn schema() -> String {
    es_postgres::testing::fresh_schema("bank")
}

/// The test config on PostgreSQL in `schema`.
pub async fn config(schema: &str) -> AppConfig {
    ensure_database().await;
    AppConfig {
        database_url: Some(database_url()),
        database_schema: schema.to_owned(),
        ..super::config()
    }
}
