//! Helpers for tests against a real PostgreSQL (feature `testing`): one
//! database for the whole test run, a fresh schema per test, so tests run
//! in parallel without seeing each other.
//!
//! ```no_run
//! # async fn demo() -> Result<(), es_postgres::SetupError> {
//! use es_postgres::{testing, EventStoreConfig};
//! let store = testing::store(EventStoreConfig::with_schema(testing::fresh_schema("t"))).await?;
//! # Ok(()) }
//! ```

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use tokio::sync::OnceCell;

use crate::{EventStoreConfig, PostgresEventStore, SetupError};

/// Default test database when `ES_TEST_DATABASE_URL` is not set.
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/es_test";

/// The test database: `ES_TEST_DATABASE_URL`, or
/// [`DEFAULT_TEST_DATABASE_URL`].
pub fn database_url() -> String {
    std::env::var("ES_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned())
}

static CREATED: OnceCell<()> = OnceCell::const_new();

fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> SetupError {
    move |source| SetupError::Database { operation, source }
}

/// Creates the test database if it does not exist (once per process;
/// tolerates other processes racing to create it).
pub async fn ensure_database() -> Result<(), SetupError> {
    CREATED
        .get_or_try_init(|| async {
            let url = database_url();
            let (base, rest) = url
                .rsplit_once('/')
                .ok_or_else(|| SetupError::InvalidSchema(format!("no database name in {url}")))?;
            let name = rest.split('?').next().unwrap_or(rest).to_owned();
            if !crate::sql::valid_identifier(&name) {
                return Err(SetupError::InvalidSchema(name));
            }
            let mut conn = PgConnection::connect(&format!("{base}/postgres"))
                .await
                .map_err(db("connect to the postgres database"))?;
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&name)
                .fetch_one(&mut conn)
                .await
                .map_err(db("look up the test database"))?;
            if !exists {
                // Another process may win the race: that is fine.
                let _ = sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await;
            }
            Ok(())
        })
        .await
        .copied()
}

/// A schema name no other test uses: `prefix_` and a random suffix, at
/// most 40 characters.
pub fn fresh_schema(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
        .chars()
        .take(40)
        .collect()
}

/// A migrated store in the test database; its connections carry the
/// schema name as `application_name`, so a test can find (or kill) them.
pub async fn store(config: EventStoreConfig) -> Result<PostgresEventStore, SetupError> {
    ensure_database().await?;
    let options = PgConnectOptions::from_str(&database_url())
        .map_err(db("parse the test database url"))?
        .application_name(&config.schema);
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(db("connect to the test database"))?;
    let store = PostgresEventStore::with_pool(pool, config)?;
    store.migrate().await?;
    Ok(store)
}
