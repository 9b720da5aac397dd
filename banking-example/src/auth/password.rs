//! Password hashing (Argon2id) and the password policy.
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`)
//! with a random 16-byte salt per password; the parameters come from
//! [`Argon2Params`] (default: 19 MiB, 2 passes, 1 lane — the OWASP
//! recommendation) and are stored in each hash, so they can be raised
//! without invalidating old hashes. Hashing and verifying run on the
//! blocking thread pool (`spawn_blocking`), never on the async executor.
//!
//! Each hash holds `memory_kib` of memory while it runs, so at most
//! `max_concurrent` run at once (default: one per CPU); a request that
//! cannot get a turn within `queue_wait` is refused with
//! [`HashError::Busy`] (503 with `Retry-After` at HTTP) instead of queueing
//! without bound.
//!
//! Policy: at least 12 characters, at most 1024, not equal to the
//! username (case-insensitive).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::config::Argon2Params;

/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest accepted password, in characters (at most 4 KiB of UTF-8:
/// bounds hashing work).
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// Why hashing or verifying did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// Bad parameters or a worker that died.
    #[error("password hashing failed: {0}")]
    Failed(String),
    /// Every hashing slot stayed busy for the whole queue wait.
    #[error("password hashing is at capacity")]
    Busy,
}

/// Hashes and verifies passwords with Argon2id, at most `max_concurrent`
/// at a time.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    params: Params,
    slots: Arc<Semaphore>,
    queue_wait: Duration,
}

/// Concurrent hashes when not configured: the number of CPUs (hashing is
/// CPU-bound; more at once only adds memory and latency).
pub fn default_max_concurrent() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

impl PasswordHasher {
    /// A hasher with these costs, one hash per CPU at a time, waiting up to
    /// a second for a turn.
    pub fn new(p: Argon2Params) -> Result<Self, HashError> {
        Self::bounded(p, default_max_concurrent(), Duration::from_secs(1))
    }

    /// A hasher running at most `max_concurrent` hashes at once (0: one
    /// per CPU); a call waits at most `queue_wait` for a turn.
    pub fn bounded(p: Argon2Params, max_concurrent: usize, queue_wait: Duration) -> Result<Self, HashError> {
        let params = Params::new(p.memory_kib, p.iterations, p.parallelism, None)
            .map_err(|e| HashError::Failed(e.to_string()))?;
        let max = if max_concurrent == 0 {
            default_max_concurrent()
        } else {
            max_concurrent
        };
        Ok(Self {
            params,
            slots: Arc::new(Semaphore::new(max)),
            queue_wait,
        })
    }

    async fn slot(&self) -> Result<OwnedSemaphorePermit, HashError> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(permit);
        }
        if let Ok(Ok(permit)) = tokio::time::timeout(self.queue_wait, Arc::clone(&self.slots).acquire_owned()).await {
            Ok(permit)
        } else {
            metrics::counter!("password_hash_rejections_total").increment(1);
            Err(HashError::Busy)
        }
    }

    fn argon2(params: Params) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    /// The PHC hash of `password` with a fresh salt.
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let permit = self.slot().await?;
        let params = self.params.clone();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let salt = SaltString::generate(&mut OsRng);
            Self::argon2(params)
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| HashError::Failed(e.to_string()))
        })
        .await
        .map_err(|e| HashError::Failed(e.to_string()))?
    }

    /// Whether `password` matches `hash` (false for a malformed hash);
    /// [`HashError::Busy`] when no slot freed up in time.
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool, HashError> {
        let permit = self.slot().await?;
        let params = self.params.clone();
        let password = password.to_owned();
        let hash = hash.to_owned();
        Ok(tokio::task::spawn_blocking(move || {
            let _permit = permit;
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                Self::argon2(params)
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false))
    }
}

/// The policy's verdict on a new password: `Err` with the reason.
pub fn check_policy(username: &str, password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!("password must be at least {MIN_PASSWORD_CHARS} characters"));
    }
    if password.chars().count() > MAX_PASSWORD_CHARS {
        return Err(format!("password must be at most {MAX_PASSWORD_CHARS} characters"));
    }
    if password.trim().eq_ignore_ascii_case(username.trim()) {
        return Err("password must not equal the username".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(Argon2Params {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn hashes_verify_and_are_salted() {
        let h = cheap();
        let a = h.hash("correct horse battery").await.unwrap();
        let b = h.hash("correct horse battery").await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{a}");
        assert_ne!(a, b, "per-password salt");
        assert!(h.verify("correct horse battery", &a).await.unwrap());
        assert!(!h.verify("correct horse batterY", &a).await.unwrap());
        assert!(!h.verify("x", "not a hash").await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_max_concurrent_hashes_then_busy() {
        // 32 MiB, 3 passes: tens of milliseconds per hash, so 6 callers
        // overlap; with one slot and no queue wait, all but one are
        // refused rather than piling 6 x 32 MiB on the blocking pool.
        let costly = Argon2Params {
            memory_kib: 32 * 1024,
            iterations: 3,
            parallelism: 1,
        };
        let h = PasswordHasher::bounded(costly, 1, Duration::ZERO).unwrap();
        let results = futures::future::join_all((0..6).map(|_| h.hash("correct horse battery"))).await;
        let busy = results.iter().filter(|r| **r == Err(HashError::Busy)).count();
        assert_eq!(results.len() - busy, 1, "{results:?}");
        // Once the running hash is done, the slot is free again.
        assert!(h.hash("correct horse battery").await.is_ok());
        // With a queue wait long enough, callers wait their turn instead.
        let patient = PasswordHasher::bounded(costly, 1, Duration::from_secs(60)).unwrap();
        let results = futures::future::join_all((0..3).map(|_| patient.hash("correct horse battery"))).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }

    #[test]
    fn policy() {
        assert!(check_policy("a@b.c", "short").is_err());
        assert!(check_policy("someone@example.com", "SomeOne@Example.com").is_err());
        assert!(check_policy("a@b.c", "long enough password").is_ok());
        assert!(check_policy("a@b.c", &"x".repeat(2000)).is_err());
    }
}
