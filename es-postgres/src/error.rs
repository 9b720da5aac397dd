//! Mapping sqlx errors onto es-core's typed errors.

use es_core::StoreError;

/// Errors of setting up the store (connecting, migrating).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The schema name is not a plain lowercase identifier.
    #[error("invalid schema name {0:?}: use lowercase letters, digits and _ (at most 48)")]
    InvalidSchema(String),
    /// The database refused or failed.
    #[error("database error during {operation}: {source}")]
    Database {
        /// What was being done.
        operation: &'static str,
        /// sqlx's error.
        #[source]
        source: sqlx::Error,
    },
}

/// SQLSTATE of a unique violation.
pub(crate) const UNIQUE_VIOLATION: &str = "23505";

/// The SQLSTATE of a database error, if it is one.
pub(crate) fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(std::borrow::Cow::into_owned),
        _ => None,
    }
}

/// Whether retrying the same statement may succeed.
pub(crate) fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        // Not `PoolTimedOut`: the pool already spent its acquire timeout
        // reconnecting; the caller hears of it at once.
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(_) => matches!(
            sqlstate(e).as_deref(),
            // serialization failure, deadlock, admin shutdown, crash
            // shutdown, cannot connect now, a transaction ended for idling
            // (rolled back whole), connection exceptions
            Some(
                "40001"
                    | "40P01"
                    | "57P01"
                    | "57P02"
                    | "57P03"
                    | "25P03"
                    | "08000"
                    | "08003"
                    | "08006"
                    | "08001"
                    | "08004"
            )
        ),
        _ => false,
    }
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
            metrics::counter!("es_postgres_retries_total", "operation" => operation).increment(1);
            tracing::warn!(error = %e, attempt, operation, "transient database failure; retrying");
        })
        .await
        .map_err(|e| backend(operation, e))
}
