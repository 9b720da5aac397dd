//! Login lockout, per username **and source**: after each failed login
//! from one source (the client address as the rate limiter groups it: IPv6
//! by /64, `X-Forwarded-For` only from trusted proxies) that source waits
//! longer before its next try of that username (a progressive delay:
//! `backoff` after the second failure, doubling, at most
//! `lockout_duration`); after `max_login_attempts` failures it is locked
//! out of that username for `lockout_duration`. A success from the source
//! clears its count; a password reset clears every source's.
//!
//! Keyed on the source as well, a flood of failures from one place locks
//! that place out, not the victim: the owner still logs in from anywhere
//! else. Attempts are tracked whether or not the user exists, so a lockout
//! says nothing about existence (no user enumeration). While locked, every
//! login of that username from that source is refused, even with the right
//! password; refused attempts do not extend the wait. While delayed, a
//! login waits the delay out before its password is checked (up to
//! [`MAX_LOGIN_WAIT`](super::MAX_LOGIN_WAIT); a longer delay is
//! refused like a lockout), so wrong passwords keep answering 401 until the
//! lockout.
//! Counts idle for [`IDLE_AFTER`] are forgotten (the database stores purge
//! them).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use moka::ops::compute::Op;
use moka::sync::Cache;
use moka::Expiry;

use super::AuthStoreError;

/// How long a count without a new failure is kept.
pub const IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whose failures are counted: a username tried from one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptKey<'a> {
    /// The normalized username.
    pub username: &'a str,
    /// The client address key (`ip:203.0.113.7`, `ip:2001:db8:1:2::/64`).
    pub source: &'a str,
}

impl AttemptKey<'_> {
    fn joined(&self) -> String {
        format!("{}\n{}", self.username, self.source)
    }
}

/// Failed logins of one username from one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attempts {
    /// Consecutive failures since the last success or lockout.
    pub failures: u32,
    /// Refused until this time, if refused: a lockout when `failures` is
    /// 0, a progressive delay otherwise.
    pub locked_until: Option<DateTime<Utc>>,
}

/// The lockout rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures that trigger a lockout (0 disables lockout).
    pub max_attempts: u32,
    /// Lockout length (also the longest progressive delay).
    pub duration: chrono::Duration,
    /// The wait after the second failure, doubled after each further one
    /// (zero: no progressive delay).
    pub backoff: chrono::Duration,
}

impl LockoutPolicy {
    /// `Some(until)` while `a` is refused at `now`.
    pub fn locked_until(&self, a: &Attempts, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        a.locked_until.filter(|until| *until > now)
    }

    /// The wait after `failures` failures (none after the first).
    pub fn delay(&self, failures: u32) -> chrono::Duration {
        if failures < 2 || self.backoff <= chrono::Duration::zero() {
            return chrono::Duration::zero();
        }
        let factor = 1i32.checked_shl(failures - 2).unwrap_or(i32::MAX).max(1);
        self.backoff
            .checked_mul(factor)
            .unwrap_or(self.duration)
            .min(self.duration)
    }

    /// The state after one more failure at `now`.
    pub fn after_failure(&self, a: Attempts, now: DateTime<Utc>) -> Attempts {
        if self.locked_until(&a, now).is_some() {
            return a;
        }
        let lockout_over = a.failures == 0 && a.locked_until.is_some();
        let failures = if lockout_over { 1 } else { a.failures.saturating_add(1) };
        if self.max_attempts > 0 && failures >= self.max_attempts {
            return Attempts {
                failures: 0,
                locked_until: Some(now + self.duration),
            };
        }
        let delay = self.delay(failures);
        Attempts {
            failures,
            locked_until: (delay > chrono::Duration::zero()).then(|| now + delay),
        }
    }
}

/// Where login attempts are counted.
#[async_trait]
pub trait LoginAttempts: Send + Sync + 'static {
    /// The current state of `key`.
    async fn get(&self, key: AttemptKey<'_>) -> Result<Attempts, AuthStoreError>;
    /// Applies one failure atomically; returns the new state.
    async fn record_failure(
        &self,
        key: AttemptKey<'_>,
        policy: LockoutPolicy,
        now: DateTime<Utc>,
    ) -> Result<Attempts, AuthStoreError>;
    /// Clears the state of `key` (after a successful login from there).
    async fn clear(&self, key: AttemptKey<'_>) -> Result<(), AuthStoreError>;
    /// Clears the state of `username` from every source (after a reset).
    async fn clear_user(&self, username: &str) -> Result<(), AuthStoreError>;
    /// Forgets counts without a failure since `now - idle` that are not
    /// locked at `now`; returns how many (bounded per call).
    async fn purge_idle(&self, now: DateTime<Utc>, idle: chrono::Duration) -> Result<u64, AuthStoreError>;
}

/// Attempts in process memory, bounded: two moka caches of at most
/// `capacity` keys each, one counting failures (idle counts go after
/// `count_idle`), one holding the locks (each until it ends). A flood of
/// failures on made-up usernames evicts counts only, never a lock, and
/// nothing is ever wiped whole.
#[derive(Debug)]
pub struct InMemoryLoginAttempts {
    counting: Cache<String, Attempts>,
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
    /// locked keys; failure counts are forgotten after [`IDLE_AFTER`]
    /// without a failure.
    pub fn new() -> Self {
        Self::bounded(MAX_TRACKED, IDLE_AFTER)
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
        self.counting.get(key).unwrap_or_default()
    }
}

/// Whether `a` is a lockout (rather than a count, delayed or not).
fn is_lockout(a: &Attempts) -> bool {
    a.failures == 0 && a.locked_until.is_some()
}

#[async_trait]
impl LoginAttempts for InMemoryLoginAttempts {
    async fn get(&self, key: AttemptKey<'_>) -> Result<Attempts, AuthStoreError> {
        Ok(self.current(&key.joined()))
    }

    async fn record_failure(
        &self,
        key: AttemptKey<'_>,
        policy: LockoutPolicy,
        now: DateTime<Utc>,
    ) -> Result<Attempts, AuthStoreError> {
        let key = key.joined();
        let mut next = Attempts::default();
        let locked = self.locked.get(&key);
        // Serialized per key: concurrent failures are all counted.
        self.counting.entry_by_ref(&key).and_compute_with(|count| {
            let current = match locked {
                Some(until) => Attempts {
                    failures: 0,
                    locked_until: Some(until),
                },
                None => count.map(moka::Entry::into_value).unwrap_or_default(),
            };
            next = policy.after_failure(current, now);
            if is_lockout(&next) {
                Op::Remove
            } else {
                Op::Put(next)
            }
        });
        match next.locked_until {
            Some(until) if is_lockout(&next) && locked != Some(until) => self.locked.insert(key, until),
            _ if !is_lockout(&next) && locked.is_some() => self.locked.invalidate(&key),
            _ => {}
        }
        Ok(next)
    }

    async fn clear(&self, key: AttemptKey<'_>) -> Result<(), AuthStoreError> {
        let key = key.joined();
        self.counting.invalidate(&key);
        self.locked.invalidate(&key);
        Ok(())
    }

    async fn clear_user(&self, username: &str) -> Result<(), AuthStoreError> {
        let prefix = format!("{username}\n");
        for (key, _) in self.counting.iter().filter(|(k, _)| k.starts_with(&prefix)) {
            self.counting.invalidate(key.as_str());
        }
        for (key, _) in self.locked.iter().filter(|(k, _)| k.starts_with(&prefix)) {
            self.locked.invalidate(key.as_str());
        }
        Ok(())
    }

    async fn purge_idle(&self, _now: DateTime<Utc>, _idle: chrono::Duration) -> Result<u64, AuthStoreError> {
        // The caches forget idle counts and ended locks themselves.
        Ok(0)
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
            backoff: chrono::Duration::zero(),
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
            backoff: chrono::Duration::zero(),
        };
        let now = Utc::now();
        fn key(username: &str) -> AttemptKey<'_> {
            AttemptKey {
                username,
                source: "ip:203.0.113.7",
            }
        }
        let attempts = InMemoryLoginAttempts::bounded(1_000, std::time::Duration::from_secs(3600));
        // A victim locked.
        for _ in 0..5 {
            attempts.record_failure(key("locked"), p, now).await.unwrap();
        }
        // An attacker fails once each on 20,000 made-up usernames.
        for i in 0..20_000 {
            attempts
                .record_failure(key(&format!("flood-{i}")), p, now)
                .await
                .unwrap();
        }
        let (counting, locked) = attempts.tracked();
        assert!(counting <= 1_000, "{counting} counting");
        assert!(counting > 500, "not wiped whole: {counting} counting");
        assert_eq!(locked, 1);
        assert!(
            p.locked_until(&attempts.get(key("locked")).await.unwrap(), now)
                .is_some(),
            "a flood of failures never evicts a lock"
        );
    }

    #[test]
    fn the_delay_doubles_after_the_second_failure_up_to_the_lockout() {
        let p = LockoutPolicy {
            max_attempts: 6,
            duration: chrono::Duration::seconds(5),
            backoff: chrono::Duration::seconds(1),
        };
        let t0 = Utc::now();
        let mut a = p.after_failure(Attempts::default(), t0);
        assert_eq!(a.locked_until, None, "the first failure costs no wait");
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..4 {
            a = p.after_failure(a, now);
            let until = a.locked_until.unwrap();
            assert_eq!(p.after_failure(a, now), a, "a refused try does not extend the wait");
            waits.push((until - now).num_seconds());
            now = until;
        }
        assert_eq!(waits, [1, 2, 4, 5], "doubling, at most the lockout");
        assert_eq!(a.failures, 5);
        let locked = p.after_failure(a, now);
        assert_eq!((locked.failures, locked.locked_until), (0, Some(now + p.duration)));
    }

    #[tokio::test]
    async fn sources_are_counted_apart() {
        let p = LockoutPolicy {
            max_attempts: 2,
            duration: chrono::Duration::minutes(5),
            backoff: chrono::Duration::zero(),
        };
        let now = Utc::now();
        let attempts = InMemoryLoginAttempts::new();
        let attacker = AttemptKey {
            username: "victim@example.com",
            source: "ip:198.51.100.1",
        };
        let owner = AttemptKey {
            source: "ip:203.0.113.7",
            ..attacker
        };
        for _ in 0..2 {
            attempts.record_failure(attacker, p, now).await.unwrap();
        }
        assert!(p.locked_until(&attempts.get(attacker).await.unwrap(), now).is_some());
        assert_eq!(attempts.get(owner).await.unwrap(), Attempts::default());
        attempts.clear_user("victim@example.com").await.unwrap();
        assert_eq!(attempts.get(attacker).await.unwrap(), Attempts::default());
    }
}
