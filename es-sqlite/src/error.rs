//! Mapping sqlx's SQLite errors onto es-core's typed errors.

use std::path::PathBuf;

use es_core::StoreError;

/// Errors of setting up the store (opening the file, migrating).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The directory of the database file cannot be created.
    #[error("cannot create the directory {path:?} of the database: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// SQLite refused or failed.
    #[error("database error during {operation}: {source}")]
    Database {
        /// What was being done.
        operation: &'static str,
        /// sqlx's error.
        #[source]
        source: sqlx::Error,
    },
    /// The file was migrated by a newer version of this crate: its tables
    /// may not be what this version expects.
    #[error("the database has migration {found}, newer than the newest this es-sqlite knows ({known})")]
    NewerSchema {
        /// The newest migration recorded in the file.
        found: i64,
        /// The newest migration of this crate.
        known: i64,
    },
}

/// A closure turning a sqlx error into [`SetupError::Database`].
pub(crate) fn setup(operation: &'static str) -> impl FnOnce(sqlx::Error) -> SetupError {
    move |source| SetupError::Database { operation, source }
}

/// SQLite's primary result codes of lock contention.
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;

/// Whether retrying the same operation may succeed: the database (or a
/// table of a shared in-memory database) was locked by another connection
/// for longer than the busy timeout, or the pool had no connection.
pub(crate) fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED)),
        _ => false,
    }
}

/// Whether `e` is a UNIQUE (or PRIMARY KEY) constraint failure.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

pub(crate) fn backend(operation: &'static str, e: sqlx::Error) -> StoreError {
    StoreError::backend(operation, e)
}

/// Runs an idempotent database operation, retrying transient failures by
/// `policy`; the error after the last attempt names the operation.
pub(crate) async fn retry_transient<T, F, Fut>(
    policy: &es_core::RetryPolicy,
    operation: &'static str,
    op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    policy
        .run(op, is_transient, |e, attempt| {
            metrics::counter!("es_sqlite_retries_total", "operation" => operation).increment(1);
            tracing::warn!(error = %e, attempt, operation, "database busy; retrying");
        })
        .await
        .map_err(|e| backend(operation, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Locks held by another connection are transient, constraint failures
    /// are not (checked against real SQLite errors).
    #[tokio::test]
    async fn busy_is_transient_and_unique_is_not() {
        use sqlx::{ConnectOptions, Connection};
        let options: sqlx::sqlite::SqliteConnectOptions = "sqlite::memory:".parse().unwrap();
        let mut conn = options.connect().await.unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut conn)
            .await
            .unwrap();
        let dup = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert!(is_unique_violation(&dup), "{dup}");
        assert!(!is_transient(&dup));

        let dir = std::env::temp_dir().join(format!("es-sqlite-err-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.join("db"))
            .create_if_missing(true)
            .busy_timeout(std::time::Duration::ZERO);
        let mut holder = file.connect().await.unwrap();
        let mut other = file.connect().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.unwrap();
        let busy = sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap_err();
        assert!(is_transient(&busy), "{busy}");
        assert!(!is_unique_violation(&busy));
        holder.close().await.unwrap();
        other.close().await.unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
