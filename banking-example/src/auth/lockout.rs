//! Account lockout: after `max_login_attempts` failed logins a username is
//! locked for `lockout_duration`; a success clears the count.
//!
//! Attempts are tracked by username whether or not the user exists, so a
//! lockout says nothing about existence (no user enumeration). While
//! locked, every login of that username is refused, even with the right
//! password; the lock is not extended by further attempts.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

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

/// Attempts in process memory, bounded (entries beyond 100,000 are dropped
/// oldest-lock-first).
#[derive(Debug, Default)]
pub struct InMemoryLoginAttempts {
    entries: Mutex<HashMap<String, Attempts>>,
}

impl InMemoryLoginAttempts {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }
}

const MAX_TRACKED: usize = 100_000;

#[async_trait]
impl LoginAttempts for InMemoryLoginAttempts {
    async fn get(&self, username: &str) -> Result<Attempts, AuthStoreError> {
        let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(entries.get(username).copied().unwrap_or_default())
    }

    async fn record_failure(
        &self,
        username: &str,
        policy: LockoutPolicy,
        now: DateTime<Utc>,
    ) -> Result<Attempts, AuthStoreError> {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= MAX_TRACKED && !entries.contains_key(username) {
            entries.retain(|_, a| policy.locked_until(a, now).is_some());
            if entries.len() >= MAX_TRACKED {
                entries.clear();
            }
        }
        let next = policy.after_failure(entries.get(username).copied().unwrap_or_default(), now);
        entries.insert(username.to_owned(), next);
        Ok(next)
    }

    async fn clear(&self, username: &str) -> Result<(), AuthStoreError> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(username);
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
}
