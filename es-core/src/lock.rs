//! Distributed locks with fencing tokens.
//!
//! A lock only bounds *how many* holders act at once under normal timing; a
//! holder that stalls past its TTL (GC pause, network partition) can still
//! act after another has taken the lock. The **fencing token** handles that:
//! every acquisition gets a strictly larger token, the holder sends it with
//! its writes, and the resource rejects tokens older than one it has seen.
//! In this library the repository is that resource: a command fenced with
//! [`CommandContext::with_fencing_token`](crate::CommandContext::with_fencing_token)
//! fails with [`RepositoryError::Fenced`](crate::RepositoryError::Fenced)
//! once the stream holds events of a newer token, and the store's
//! optimistic concurrency (an append pins the exact version the check
//! read) makes the check and the append one atomic step.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::BoxError;

/// A monotonically increasing number issued with every acquisition of any
/// lock of one manager.
pub type FencingToken = u64;

/// Errors of a [`LockManager`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// The lock stayed taken through every attempt.
    #[error("lock {key} is held by another owner ({attempts} attempts)")]
    Contended {
        /// The lock key.
        key: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The backend failed.
    #[error("lock backend failed during {operation} of {key}: {source}")]
    Backend {
        /// The operation.
        operation: &'static str,
        /// The lock key.
        key: String,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

/// Proof of holding a lock: key, owner and fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lock key.
    pub key: String,
    /// Random id of this holder; only it can release or extend.
    pub owner: Uuid,
    /// The fencing token of this acquisition.
    pub fencing_token: FencingToken,
}

/// Exclusive, expiring locks with fencing tokens.
///
/// Guarantees: at most one unexpired lease per key; only the owner of a
/// lease can release or extend it; each successful acquisition gets a
/// fencing token larger than every earlier one of this manager.
#[async_trait]
pub trait LockManager: Send + Sync + 'static {
    /// One attempt to take the lock for `ttl`.
    async fn try_acquire(&self, key: &str, ttl: Duration) -> Result<Option<LockGuard>, LockError>;

    /// Takes the lock, retrying by the manager's configured policy.
    async fn acquire(&self, key: &str, ttl: Duration) -> Result<LockGuard, LockError>;

    /// Releases a lease; `false` if it is no longer held by its owner.
    async fn release(&self, lease: &Lease) -> Result<bool, LockError>;

    /// Extends a lease to `ttl` from now; `false` if it was lost.
    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<bool, LockError>;

    /// Makes every later token larger than `token`, when the manager's
    /// counter is below it; whether it was. A resource (an event stream)
    /// holding a token the counter never reached means the counter was
    /// lost (a Redis restarted without persistence, say): without this,
    /// every later holder would be fenced off until the counter passed it
    /// again. The default does nothing (`false`).
    async fn raise_tokens_past(&self, token: FencingToken) -> Result<bool, LockError> {
        let _ = token;
        Ok(false)
    }
}

/// A held lock. Released by [`release`](LockGuard::release), or on drop (in
/// the background, when a tokio runtime is running).
pub struct LockGuard {
    lease: Lease,
    manager: Option<Arc<dyn LockManager>>,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    /// Wraps a lease; `manager` releases it on drop.
    pub fn new(lease: Lease, manager: Arc<dyn LockManager>) -> Self {
        Self {
            lease,
            manager: Some(manager),
        }
    }

    /// The lease held.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The fencing token of this acquisition.
    pub fn fencing_token(&self) -> FencingToken {
        self.lease.fencing_token
    }

    /// Extends the lease; `false` if it was already lost.
    pub async fn extend(&self, ttl: Duration) -> Result<bool, LockError> {
        match &self.manager {
            Some(m) => m.extend(&self.lease, ttl).await,
            None => Ok(false),
        }
    }

    /// Releases the lock now; `false` if it had already been lost.
    pub async fn release(mut self) -> Result<bool, LockError> {
        match self.manager.take() {
            Some(m) => m.release(&self.lease).await,
            None => Ok(false),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(manager) = self.manager.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let lease = self.lease.clone();
                handle.spawn(async move {
                    if let Err(e) = manager.release(&lease).await {
                        tracing::warn!(key = %lease.key, error = %e, "lock release on drop failed; it expires by TTL");
                    }
                });
            }
        }
    }
}

/// How [`LockManager::acquire`] retries a taken lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockRetry {
    /// Attempts in all.
    pub attempts: u32,
    /// Delay between attempts (jittered by up to 50%).
    pub delay: Duration,
}

impl Default for LockRetry {
    fn default() -> Self {
        Self {
            attempts: 50,
            delay: Duration::from_millis(20),
        }
    }
}

impl LockRetry {
    /// Retries `attempt` until it yields a guard or attempts run out.
    pub async fn run<F, Fut>(&self, key: &str, mut attempt: F) -> Result<LockGuard, LockError>
    where
        F: FnMut() -> Fut + Send,
        Fut: std::future::Future<Output = Result<Option<LockGuard>, LockError>> + Send,
    {
        let attempts = self.attempts.max(1);
        for n in 1..=attempts {
            if let Some(guard) = attempt().await? {
                return Ok(guard);
            }
            if n < attempts {
                let jitter = 0.5 + fastrand::f64() * 0.5;
                tokio::time::sleep(self.delay.mul_f64(jitter)).await;
            }
        }
        Err(LockError::Contended {
            key: key.to_owned(),
            attempts,
        })
    }
}
