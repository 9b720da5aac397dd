//! Exponential backoff with jitter, shared by the repository, projection
//! runners, lock acquisition and the backends' retries of transient
//! database failures ([`RetryPolicy::run`]).

use std::future::Future;
use std::time::Duration;

/// How often and how patiently to retry.
///
/// Attempt `n` (1-based) that fails waits `initial_delay * multiplier^(n-1)`,
/// capped at `max_delay`, then scaled by a random factor in
/// `[1 - jitter, 1]` ("equal jitter"), so that contending writers spread out.
///
/// ```
/// use es_core::RetryPolicy;
/// use std::time::Duration;
/// let p = RetryPolicy { jitter: 0.0, ..RetryPolicy::default() };
/// assert_eq!(p.max_attempts, 3);
/// assert_eq!(p.delay_after(1), Duration::from_millis(100));
/// assert_eq!(p.delay_after(2), Duration::from_millis(200));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Delay after the first failed attempt.
    pub initial_delay: Duration,
    /// Growth factor per attempt.
    pub multiplier: f64,
    /// Upper bound of one delay.
    pub max_delay: Duration,
    /// Fraction of the delay that is randomized, 0.0 to 1.0.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_delay: Duration::from_millis(100),
            multiplier: 2.0,
            max_delay: Duration::from_secs(5),
            jitter: 0.5,
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn never() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The delay to wait after failed attempt `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let exp = self.multiplier.max(1.0).powi(attempt.saturating_sub(1).min(64) as i32);
        let base = self.initial_delay.as_secs_f64() * exp;
        let capped = base.min(self.max_delay.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter * fastrand::f64();
        Duration::from_secs_f64((capped * factor).max(0.0))
    }

    /// Whether another attempt follows failed attempt `attempt`.
    pub fn should_retry(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// Runs `op` until it succeeds, fails with an error `transient` does
    /// not retry, or the attempts are spent, sleeping
    /// [`delay_after`](Self::delay_after) between attempts; the last
    /// error is returned as it is. `on_retry(error, attempt)` runs before
    /// each sleep (to log and count the failure). Only for an operation
    /// that is safe to run again after a failure of unknown outcome. An
    /// operation that needs `&mut` access to its caller's state between
    /// attempts drives [`attempts`](Self::attempts) in a loop of its own.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::time::Duration;
    /// use es_core::RetryPolicy;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let policy = RetryPolicy { initial_delay: Duration::from_millis(1), ..RetryPolicy::default() };
    /// let calls = AtomicU32::new(0);
    /// let busy_twice = || async {
    ///     let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
    ///     if n < 3 { Err("busy") } else { Ok(n) }
    /// };
    /// assert_eq!(policy.run(busy_twice, |e| *e == "busy", |_, _| {}).await, Ok(3));
    /// let fatal = policy.run(|| async { Err::<(), _>("corrupt") }, |e| *e == "busy", |_, _| {}).await;
    /// assert_eq!(fatal, Err("corrupt"));
    /// # }
    /// ```
    pub async fn run<T, E, F, Fut>(
        &self,
        mut op: F,
        transient: impl Fn(&E) -> bool,
        mut on_retry: impl FnMut(&E, u32),
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempts = self.attempts();
        loop {
            let result = op().await;
            if let Some(done) = attempts.settle(result, &transient, &mut on_retry).await {
                return done;
            }
        }
    }

    /// The attempts of one operation under this policy, for a retry loop
    /// whose operation borrows its caller's state:
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use es_core::RetryPolicy;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let policy = RetryPolicy { initial_delay: Duration::from_millis(1), ..RetryPolicy::default() };
    /// let mut tries = Vec::new();
    /// let mut attempts = policy.attempts();
    /// let result = loop {
    ///     tries.push(tries.len());
    ///     let result: Result<(), &str> = if tries.len() < 2 { Err("busy") } else { Ok(()) };
    ///     if let Some(done) = attempts.settle(result, |e| *e == "busy", |_, _| {}).await {
    ///         break done;
    ///     }
    /// };
    /// assert_eq!((result, tries.len()), (Ok(()), 2));
    /// # }
    /// ```
    pub fn attempts(&self) -> Attempts {
        Attempts {
            policy: *self,
            attempt: 1,
        }
    }
}

/// The attempts of one operation under a [`RetryPolicy`] (see
/// [`RetryPolicy::attempts`]).
#[derive(Debug, Clone)]
pub struct Attempts {
    policy: RetryPolicy,
    /// The attempt whose result comes next (1-based).
    attempt: u32,
}

impl Attempts {
    /// Takes the result of the current attempt: `Some` to return it (a
    /// success, an error `transient` does not retry, or the last attempt's
    /// error), `None` to try again, after `on_retry(error, attempt)` and
    /// the policy's delay.
    pub async fn settle<T, E>(
        &mut self,
        result: Result<T, E>,
        transient: impl Fn(&E) -> bool,
        mut on_retry: impl FnMut(&E, u32),
    ) -> Option<Result<T, E>> {
        match result {
            Err(e) if transient(&e) && self.policy.should_retry(self.attempt) => {
                on_retry(&e, self.attempt);
                tokio::time::sleep(self.policy.delay_after(self.attempt)).await;
                self.attempt += 1;
                None
            }
            other => Some(other),
        }
    }
}
