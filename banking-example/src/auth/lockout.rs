//! Account lockout: after `max_login_attempts` failed logins a username is
//! locked for `lockout_duration`; a success clears the count.
//!
//! Attempts are tracked by username whether or not the user exists, so a
//! lockout says nothing about existence (no user enumeration). While
//! locked, every login of that username is refused, even with the right
//! password; the lock is not extended by further attempts.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use moka::ops::compute::Op;
use moka::sync::Cache;
use moka::Expiry;

use super::AuthStoreError;

/// Failed logins of one username.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attempts {
    /// Consecutive failures since the last success or lockout.
    pub failures: u32,
    /// Locked until this time, if locked.
    pub locked_until: Option<DateTime<Utc>>,
}

/// The lockout rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures that trigger a lockout (0 disables lockout).
    pub max_attempts: u32,
    /// Lockout length.
    pub duration: chrono::Duration,
}

impl LockoutPolicy {
    /// `Some(until)` while `a` is locked at `now`.
    pub fn locked_until(&self, a: &Attempts, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        a.locked_until.filter(|until| *until > now)
    }

    /// The state after one more failure at `now`.
    pub fn after_failure(&self, a: Attempts, now: DateTime<Utc>) -> Attempts {
        if self.locked_until(&a, now).is_some() {
            return a;
        }
        let failures = if a.locked_until.is_some() { 1 } else { a.failures + 1 };
        if self.max_attempts > 0 && failures >= self.max_attempts {
            Attempts {
                failures: 0,
                locked_until: Some(now + self.duration),
            }
        } else {
            Attempts {
                failures,
                locked_until: None,
            }
        }
    }
}

/// Where login attempts are counted.
#[async_trait]
pub trait LoginAttempts: Send + Sync + 'static {
    /// The current state of `username`.
    async fn get(&self, username: &str) -> Result<Attempts, AuthStoreError>;
    /// Applies one failure atomically; returns the new state.
    async fn record_failure(
        &self,
        username: &str,
        policy: LockoutPolicy,
        now: DateTime<Utc>,
    ) -> Result<Attempts, AuthStoreError>;
    /// Clears the state (after a successful login or a password reset).
    async fn clear(&self, username: &str) -> Result<(), AuthStoreError>;
}

/// Attempts in process memory, bounded: two moka caches of at most
/// `capacity` keys each, one counting failures (idle counts go after
/// `count_idle`), one holding the locks (each until it ends). A flood of
/// failures on made-up usernames evicts counts only, never a lock, and
/// nothing is ever wiped whole.
#[derive(Debug)]
pub struct InMemoryLoginAttempts {
    counting: Cache<String, u32>,
    locked: Cache<String, DateTime<Utc>>,
}

impl Default for InMemoryLoginAttempts {
    fn default() -> Self {
        Self::new()
    }
}

/// Keys tracked per cache by [`InMemoryLoginAttempts::new`].
pub const MAX_TRACKED: u64 = 100_000;

struct LockExpiry;

impl Expiry<String, DateTime<Utc>> for LockExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        until: &DateTime<Utc>,
        _created_at: std::time::Instant,
    ) -> Option<std::time::Duration> {
        // Dropped a little after the lock ends (by the wall clock); the
        // lock itself is judged by the service's clock.
        Some((*until - Utc::now()).to_std().unwrap_or_default() + std::time::Duration::from_secs(60))
    }
}

impl InMemoryLoginAttempts {
    /// A tracker of at most [`MAX_TRACKED`] counting and [`MAX_TRACKED`]
    /// locked keys; failure counts are forgotten after an hour without a
    /// failure.
    pub fn new() -> Self {
        Self::bounded(MAX_TRACKED, std::time::Duration::from_secs(3600))
    }

    /// A tracker of at most `capacity` keys per cache, forgetting a count
    /// after `count_idle` without a failure.
    pub fn bounded(capacity: u64, count_idle: std::time::Duration) -> Self {
        Self {
            counting: Cache::builder().max_capacity(capacity).time_to_idle(count_idle).build(),
            locked: Cache::builder().max_capacity(capacity).expire_after(LockExpiry).build(),
        }
    }

    /// Keys held now (counting, locked), after pending evictions ran.
    pub fn tracked(&self) -> (u64, u64) {
        self.counting.run_pending_tasks();
        self.locked.run_pending_tasks();
        (self.counting.entry_count(), self.locked.entry_count())
    }

    fn current(&self, key: &str) -> Attempts {
        if let Some(until) = self.locked.get(key) {
            return Attempts {
                failures: 0,
                locked_until: Some(until),
            };
        }
        Attempts {
            failures: self.counting.get(key).unwrap_or(0),
            locked_until: None,
        }
    }
}

#[async_trait]
impl LoginAttempts for InMemoryLoginAttempts {
    async fn get(&self, key: &str) -> Result<Attempts, AuthStoreError> {
        Ok(self.current(key))
    }

    async fn record_failure(
        &self,
        key: &str,
        policy: LockoutPolicy,
        now: DateTime<Utc>,
    ) -> Result<Attempts, AuthStoreError> {
        let mut next = Attempts::default();
        let locked = self.locked.get(key);
        // Serialized per key: concurrent failures are all counted.
        self.counting.entry_by_ref(key).and_compute_with(|count| {
            let current = Attempts {
                failures: count.map_or(0, moka::Entry::into_value),
                locked_until: locked,
            };
            next = policy.after_failure(current, now);
            match next.locked_until {
                Some(_) => Op::Remove,
                None => Op::Put(next.failures),
            }
        });
        match next.locked_until {
            Some(until) if locked != Some(until) => self.locked.insert(key.to_owned(), until),
            Some(_) => {}
            None if locked.is_some() => self.locked.invalidate(key),
            None => {}
        }
        Ok(next)
    }

    async fn clear(&self, key: &str) -> Result<(), AuthStoreError> {
        self.counting.invalidate(key);
        self.locked.invalidate(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_then_expires() {
        let p = LockoutPolicy {
            max_attempts: 3,
            duration: chrono::Duration::minutes(5),
        };
        let t0 = Utc::now();
        let mut a = Attempts::default();
        for _ in 0..2 {
            a = p.after_failure(a, t0);
            assert!(p.locked_until(&a, t0).is_none());
        }
        a = p.after_failure(a, t0);
        assert_eq!(p.locked_until(&a, t0), Some(t0 + chrono::Duration::minutes(5)));
        assert_eq!(p.after_failure(a, t0), a, "not extended while locked");
        let later = t0 + chrono::Duration::minutes(6);
        assert!(p.locked_until(&a, later).is_none());
        assert_eq!(
            p.after_failure(a, later).failures,
            1,
            "counting restarts after a lockout"
        );
    }

    #[tokio::test]
    async fn a_flood_of_usernames_neither_grows_memory_nor_evicts_a_lock() {
        let p = LockoutPolicy {
            max_attempts: 5,
            duration: chrono::Duration::minutes(5),
        };
        let now = Utc::now();
        let attempts = InMemoryLoginAttempts::bounded(1_000, std::time::Duration::from_secs(3600));
        // A victim locked.
        for _ in 0..5 {
            attempts.record_failure("locked", p, now).await.unwrap();
        }
        // An attacker fails once each on 20,000 made-up usernames.
        for i in 0..20_000 {
            attempts.record_failure(&format!("flood-{i}"), p, now).await.unwrap();
        }
        let (counting, locked) = attempts.tracked();
        assert!(counting <= 1_000, "{counting} counting");
        assert!(counting > 500, "not wiped whole: {counting} counting");
        assert_eq!(locked, 1);
        assert!(
            p.locked_until(&attempts.get("locked").await.unwrap(), now).is_some(),
            "a flood of failures never evicts a lock"
        );
    }
}
