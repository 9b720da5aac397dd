//! Command de-duplication (idempotency keys) across retries of a request.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

use crate::error::BoxError;

/// Proof that a caller holds a key it began: only the holder's `complete`
/// and `abandon` act on the key.
///
/// An in-flight mark expires by itself after the deduplicator's
/// `in_flight_ttl`, so that a key whose owner died can be retried. An owner
/// that was only slow (a paused process, a command that took longer than
/// the TTL) may then find the key taken over by a retry; its claim keeps it
/// from releasing the retry's mark or overwriting the retry's outcome.
///
/// ```
/// use es_core::DedupClaim;
/// let (a, b) = (DedupClaim::new(), DedupClaim::new());
/// assert_ne!(a, b, "every claim is new");
/// assert_eq!(a.as_str().len(), 32);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupClaim(String);

impl DedupClaim {
    /// A new claim (random, 32 hexadecimal digits): what a backend's
    /// `begin` hands out.
    pub fn new() -> Self {
        Self(Uuid::new_v4().simple().to_string())
    }

    /// The claim as backends store it next to the key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for DedupClaim {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for DedupClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What [`CommandDeduplicator::begin`] found for a key.
#[derive(Debug, Clone, PartialEq)]
pub enum DedupStatus {
    /// The key is new: the caller now holds it under this claim and must
    /// run the command, then call `complete` (or `abandon` if it failed)
    /// with the claim.
    Started(DedupClaim),
    /// Another request with this key is running right now.
    InProgress,
    /// The command already ran; this is its stored outcome.
    Completed(Value),
}

impl DedupStatus {
    /// The claim, when the key was [`Started`](Self::Started).
    pub fn into_claim(self) -> Option<DedupClaim> {
        match self {
            Self::Started(claim) => Some(claim),
            _ => None,
        }
    }

    /// Whether the key was [`Started`](Self::Started).
    pub fn is_started(&self) -> bool {
        matches!(self, Self::Started(_))
    }
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
    /// The caller's claim on the key no longer holds: its in-flight mark
    /// expired and another request began the key (or completed it). Nothing
    /// was changed; the other request's mark or outcome stands.
    #[error(
        "the claim on idempotency key {key} was lost: its in-flight mark expired and another request took the key"
    )]
    ClaimLost {
        /// The key.
        key: String,
    },
}

/// Runs a command at most once per key within a window.
///
/// Protocol: `begin` atomically marks the key in flight (only one caller
/// gets [`DedupStatus::Started`], with a [`DedupClaim`]); the holder runs
/// the command and calls `complete` with its claim and the outcome to
/// replay, or `abandon` when it failed so a retry may run it. An in-flight
/// mark expires by itself (`in_flight_ttl`) if its holder dies; a holder
/// that was only slow and lost the key to a retry changes nothing with its
/// late `complete` ([`DedupError::ClaimLost`]) or `abandon`.
///
/// Every backend runs `es_core::conformance::deduplicator_claims` (feature
/// `conformance`) against itself.
#[async_trait]
pub trait CommandDeduplicator: Send + Sync + 'static {
    /// Claims the key, or reports it in progress or completed.
    async fn begin(&self, key: &str) -> Result<DedupStatus, DedupError>;
    /// Stores the outcome for the window, when `claim` still holds the
    /// key in flight or the key is free (its mark expired and nobody took
    /// it). When the key holds this very outcome already (a retried call)
    /// it succeeds and changes nothing; otherwise (another request's mark
    /// or outcome) it is [`DedupError::ClaimLost`] and nothing changes.
    async fn complete(&self, key: &str, claim: &DedupClaim, outcome: &Value) -> Result<(), DedupError>;
    /// Releases the key after a failure so it can be retried, when `claim`
    /// still holds it in flight; otherwise nothing changes (a completed
    /// outcome or another request's mark stays).
    async fn abandon(&self, key: &str, claim: &DedupClaim) -> Result<(), DedupError>;

    /// Starts the in-flight mark's time to live again, when `claim` still
    /// holds the key in flight: a holder whose command runs long calls it
    /// well within the TTL, so that the TTL can be short (a dead holder's
    /// key is free again soon) without a slow command losing its key.
    /// Whether the claim still held (`false`: the mark expired and another
    /// request may have taken the key, or the key completed). The default,
    /// for a backend whose marks outlive any command, changes nothing and
    /// answers `true`.
    async fn renew(&self, key: &str, claim: &DedupClaim) -> Result<bool, DedupError> {
        let _ = (key, claim);
        Ok(true)
    }

    /// Whether the backend answers, for readiness probes: `Err` when a
    /// `begin` would fail now. Backends on a database or a server check
    /// it (the SQL backends run `SELECT 1`, Redis pings); the default, for
    /// a backend with nothing to reach (in memory), is `Ok`.
    async fn check(&self) -> Result<(), DedupError> {
        Ok(())
    }

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
