//! Command de-duplication (idempotency keys) across retries of a request.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::BoxError;

/// What [`CommandDeduplicator::begin`] found for a key.
#[derive(Debug, Clone, PartialEq)]
pub enum DedupStatus {
    /// The key is new: the caller now owns it and must run the command,
    /// then call `complete` (or `abandon` if it failed).
    Started,
    /// Another request with this key is running right now.
    InProgress,
    /// The command already ran; this is its stored outcome.
    Completed(Value),
}

/// Errors of a [`CommandDeduplicator`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DedupError {
    /// The backend cannot be reached; with a key, the command must not run
    /// (fail closed), since a repeat could not be recognised.
    #[error("de-duplication unavailable during {operation}: {source}")]
    Unavailable {
        /// The operation.
        operation: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// Another request with this key is still in flight after waiting.
    #[error("a request with idempotency key {key} is still in progress")]
    InProgress {
        /// The key.
        key: String,
    },
}

/// Runs a command at most once per key within a window.
///
/// Protocol: `begin` atomically marks the key in flight (only one caller
/// gets [`DedupStatus::Started`]); the owner runs the command and calls
/// `complete` with the outcome to replay, or `abandon` when it failed so a
/// retry may run it. An in-flight mark expires by itself (`in_flight_ttl`)
/// if its owner dies.
#[async_trait]
pub trait CommandDeduplicator: Send + Sync + 'static {
    /// Claims the key, or reports it in progress or completed.
    async fn begin(&self, key: &str) -> Result<DedupStatus, DedupError>;
    /// Stores the outcome for the rest of the window.
    async fn complete(&self, key: &str, outcome: &Value) -> Result<(), DedupError>;
    /// Releases the key after a failure so it can be retried.
    async fn abandon(&self, key: &str) -> Result<(), DedupError>;

    /// `begin`, waiting up to `wait` (polling every 10-50 ms) while another
    /// request with the key is in progress.
    async fn begin_or_wait(&self, key: &str, wait: Duration) -> Result<DedupStatus, DedupError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut delay = Duration::from_millis(10);
        loop {
            match self.begin(key).await? {
                DedupStatus::InProgress if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(50));
                }
                DedupStatus::InProgress => return Err(DedupError::InProgress { key: key.to_owned() }),
                other => return Ok(other),
            }
        }
    }
}
