//! PostgreSQL support: the test database (`ES_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/es_test`, created when missing) and
//! a fresh schema per test, so tests run in parallel.

use banking_example::AppConfig;
use sqlx::{Connection, PgConnection};
use tokio::sync::OnceCell;

/// The test database URL.
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

/// A fresh schema name (at most 40 characters).
pub fn schema() -> String {
    format!("bank_{}", uuid::Uuid::new_v4().simple())
        .chars()
        .take(40)
        .collect()
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
