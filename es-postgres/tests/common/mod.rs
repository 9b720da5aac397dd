//! Test support: every test gets its own schema in the `es_test` database.
#![allow(dead_code)]

use es_postgres::{EventStoreConfig, PostgresEventStore};
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use tokio::sync::OnceCell;

/// Base URL of the server (without database); `ES_TEST_DATABASE_URL`
/// overrides the whole test database URL.
pub fn database_url() -> String {
    std::env::var("ES_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/es_test".into())
}

static CREATED: OnceCell<()> = OnceCell::const_new();

/// Creates the test database once per test binary (tolerating races).
pub async fn ensure_database() {
    CREATED
        .get_or_init(|| async {
            let url = database_url();
            let (base, db) = url.rsplit_once('/').expect("database url has a database name");
            let db = db.split('?').next().unwrap_or(db).to_owned();
            let mut conn = PgConnection::connect(&format!("{base}/postgres"))
                .await
                .expect("connect to postgres");
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&db)
                .fetch_one(&mut conn)
                .await
                .expect("check database");
            if !exists {
                let _ = sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut conn).await;
            }
        })
        .await;
}

/// A fresh schema name.
pub fn schema(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
        .chars()
        .take(40)
        .collect()
}

/// A migrated store in a fresh schema; its connections carry the schema
/// name as `application_name`, so a test can find (and kill) them.
pub async fn store_with(config: EventStoreConfig) -> PostgresEventStore {
    ensure_database().await;
    let options = PgConnectOptions::from_str(&database_url())
        .expect("url")
        .application_name(&config.schema);
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .expect("connect");
    let store = PostgresEventStore::with_pool(pool, config).expect("store");
    store.migrate().await.expect("migrate");
    store
}

/// A migrated store in a fresh schema with test-sized pools.
pub async fn store() -> PostgresEventStore {
    store_with(EventStoreConfig {
        max_connections: 6,
        ..EventStoreConfig::with_schema(schema("t"))
    })
    .await
}
