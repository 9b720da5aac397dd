//! Embedded, versioned schema migrations.

use sqlx::SqliteConnection;

use crate::error::{setup, SetupError};

/// The migrations, in order. Never edit a released one: add a new one.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "events, snapshots, checkpoints, dead letters",
    include_str!("sql/0001_events.sql"),
)];

/// Applies the pending migrations in one write transaction: SQLite's
/// write lock serializes processes migrating the same file, and DDL is
/// transactional, so a failed migration leaves nothing behind.
#[tracing::instrument(name = "es.sqlite.migrate", skip_all)]
pub(crate) async fn run(conn: &mut SqliteConnection) -> Result<(), SetupError> {
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *conn)
        .await
        .map_err(setup("begin migration"))?;
    match apply(conn).await {
        Ok(()) => sqlx::query("COMMIT")
            .execute(&mut *conn)
            .await
            .map(|_| ())
            .map_err(setup("commit migration")),
        Err(e) => {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            Err(e)
        }
    }
}

async fn apply(conn: &mut SqliteConnection) -> Result<(), SetupError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER NOT NULL PRIMARY KEY, \
         description TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT",
    )
    .execute(&mut *conn)
    .await
    .map_err(setup("create migrations table"))?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(&mut *conn)
        .await
        .map_err(setup("read migrations"))?;
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if let Some(&found) = applied.iter().max().filter(|v| **v > known) {
        return Err(SetupError::NewerSchema { found, known });
    }
    for (version, description, script) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        sqlx::raw_sql(script)
            .execute(&mut *conn)
            .await
            .map_err(setup("apply migration"))?;
        sqlx::query("INSERT INTO schema_migrations (version, description, applied_at) VALUES (?1, ?2, ?3)")
            .bind(version)
            .bind(description)
            .bind(crate::sql::micros(chrono::Utc::now()))
            .execute(&mut *conn)
            .await
            .map_err(setup("record migration"))?;
        tracing::info!(version, description, "migration applied");
    }
    Ok(())
}
