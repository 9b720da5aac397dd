//! Embedded, versioned schema migrations with a configurable schema name.

use sqlx::postgres::PgPool;

use crate::error::SetupError;
use crate::sql::Sql;

/// The migrations, in order. Never edit a released one: add a new one.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "events, snapshots, checkpoints, outbox",
        include_str!("sql/0001_events.sql"),
    ),
    (
        2,
        "projection failures, blue/green versions",
        include_str!("sql/0002_projections.sql"),
    ),
    (3, "shard fences", include_str!("sql/0003_shard_fences.sql")),
    (
        4,
        "outbox rows held behind a parked row",
        include_str!("sql/0004_outbox_held.sql"),
    ),
];

fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> SetupError {
    move |source| SetupError::Database { operation, source }
}

/// Applies the pending migrations in one transaction, serialized across
/// processes by an advisory lock on the schema name.
#[tracing::instrument(name = "es.pg.migrate", skip_all, fields(schema = %sql.schema))]
pub(crate) async fn run(pool: &PgPool, sql: &Sql) -> Result<(), SetupError> {
    let mut tx = pool.begin().await.map_err(db("begin migration"))?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("es-postgres-migrate-{}", sql.schema))
        .execute(&mut *tx)
        .await
        .map_err(db("lock migrations"))?;
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {}", sql.schema))
        .execute(&mut *tx)
        .await
        .map_err(db("create schema"))?;
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {}.schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, \
         applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        sql.schema
    ))
    .execute(&mut *tx)
    .await
    .map_err(db("create migrations table"))?;
    let applied: Vec<i32> = sqlx::query_scalar(&format!("SELECT version FROM {}.schema_migrations", sql.schema))
        .fetch_all(&mut *tx)
        .await
        .map_err(db("read migrations"))?;
    for (version, description, script) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        sqlx::raw_sql(&sql.render(script))
            .execute(&mut *tx)
            .await
            .map_err(db("apply migration"))?;
        sqlx::query(&format!(
            "INSERT INTO {}.schema_migrations (version, description) VALUES ($1, $2)",
            sql.schema
        ))
        .bind(version)
        .bind(description)
        .execute(&mut *tx)
        .await
        .map_err(db("record migration"))?;
        tracing::info!(version, description, "migration applied");
    }
    tx.commit().await.map_err(db("commit migration"))
}
