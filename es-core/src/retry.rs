//! Exponential backoff with jitter, shared by the repository, projection
//! runners and lock acquisition.

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
}
