use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use async_trait::async_trait;
use uuid::Uuid;

use super::lock;
use crate::clock::deadline;
use crate::{Clock, FencingToken, Lease, LockError, LockGuard, LockManager, LockRetry, SystemClock};

/// In-process [`LockManager`] with TTLs and fencing tokens; clones share
/// the same locks.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use es_core::{InMemoryLockManager, LockManager};
/// use std::time::Duration;
/// let locks = InMemoryLockManager::new();
/// let a = locks.acquire("account-1", Duration::from_secs(5)).await.unwrap();
/// assert!(locks.try_acquire("account-1", Duration::from_secs(5)).await.unwrap().is_none());
/// let t = a.fencing_token();
/// assert!(a.release().await.unwrap());
/// let b = locks.acquire("account-1", Duration::from_secs(5)).await.unwrap();
/// assert!(b.fencing_token() > t);
/// # });
/// ```
#[derive(Clone, Default)]
pub struct InMemoryLockManager {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    retry: LockRetry,
    clock: Arc<dyn Clock>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            retry: LockRetry::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

#[derive(Default)]
struct State {
    next_token: u64,
    held: HashMap<String, (Uuid, DateTime<Utc>)>,
}

impl std::fmt::Debug for InMemoryLockManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryLockManager").finish_non_exhaustive()
    }
}

impl InMemoryLockManager {
    /// A manager with the default retry policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// A manager that retries `acquire` by `retry`.
    pub fn with_retry(retry: LockRetry) -> Self {
        Self::with_retry_and_clock(retry, Arc::new(SystemClock))
    }

    /// A manager whose leases expire by `clock` (a
    /// [`ManualClock`](crate::ManualClock) in tests), retrying `acquire`
    /// by `retry`.
    pub fn with_retry_and_clock(retry: LockRetry, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::default(),
                retry,
                clock,
            }),
        }
    }
}

#[async_trait]
impl LockManager for InMemoryLockManager {
    async fn try_acquire(&self, key: &str, ttl: Duration) -> Result<Option<LockGuard>, LockError> {
        let now = self.inner.clock.now();
        let mut state = lock(&self.inner.state);
        if matches!(state.held.get(key), Some((_, expiry)) if *expiry > now) {
            return Ok(None);
        }
        state.next_token += 1;
        let owner = Uuid::new_v4();
        state.held.insert(key.to_owned(), (owner, deadline(now, ttl)));
        let lease = Lease {
            key: key.to_owned(),
            owner,
            fencing_token: state.next_token,
        };
        drop(state);
        Ok(Some(LockGuard::new(lease, Arc::new(self.clone()))))
    }

    async fn acquire(&self, key: &str, ttl: Duration) -> Result<LockGuard, LockError> {
        self.inner.retry.run(key, || self.try_acquire(key, ttl)).await
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        let mut state = lock(&self.inner.state);
        let owned = matches!(state.held.get(&lease.key), Some((owner, expiry)) if *owner == lease.owner && *expiry > self.inner.clock.now());
        if owned {
            state.held.remove(&lease.key);
        }
        Ok(owned)
    }

    async fn raise_tokens_past(&self, token: FencingToken) -> Result<bool, LockError> {
        let mut state = lock(&self.inner.state);
        let behind = state.next_token < token;
        state.next_token = state.next_token.max(token);
        Ok(behind)
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<bool, LockError> {
        let now = self.inner.clock.now();
        let mut state = lock(&self.inner.state);
        match state.held.get_mut(&lease.key) {
            Some((owner, expiry)) if *owner == lease.owner && *expiry > now => {
                *expiry = deadline(now, ttl);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
