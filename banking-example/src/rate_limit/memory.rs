//! The in-process GCRA limiter with bounded memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;

use super::{MonotonicClock, RateLimitConfig, RateLimitDecision, RateLimiter, SystemMonotonicClock};

/// In-process limiter: one "theoretical arrival time" per client.
#[derive(Debug)]
pub struct InMemoryRateLimiter {
    config: RateLimitConfig,
    clients: Mutex<HashMap<String, Instant>>,
    checks: AtomicU64,
    clock: Arc<dyn MonotonicClock>,
}

/// Every this many checks, idle clients are swept inline.
const SWEEP_EVERY: u64 = 4096;

impl InMemoryRateLimiter {
    /// A limiter with these limits.
    pub fn new(config: RateLimitConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemMonotonicClock))
    }

    /// A limiter telling time by `clock` (tests pass a
    /// [`ManualMonotonicClock`](super::ManualMonotonicClock)).
    pub fn with_clock(config: RateLimitConfig, clock: Arc<dyn MonotonicClock>) -> Self {
        Self {
            config,
            clients: Mutex::new(HashMap::new()),
            checks: AtomicU64::new(0),
            clock,
        }
    }

    /// Number of clients tracked right now.
    pub fn tracked_clients(&self) -> usize {
        self.lock().len()
    }

    /// Drops every idle client (one whose allowance is full again, so
    /// forgetting it changes nothing). Returns how many were dropped.
    pub fn cleanup(&self) -> usize {
        let now = self.clock.now();
        let mut clients = self.lock();
        let before = clients.len();
        clients.retain(|_, tat| *tat > now);
        before - clients.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // No code panics while holding the lock; a poisoned map is still
        // consistent.
        self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes room for one more client: idle ones first, then the tenth of
    /// clients closest to idle.
    fn make_room(&self, clients: &mut HashMap<String, Instant>, now: Instant) {
        clients.retain(|_, tat| *tat > now);
        let max = self.config.max_clients.max(1);
        if clients.len() < max {
            return;
        }
        let mut tats: Vec<Instant> = clients.values().copied().collect();
        let evict = (tats.len() / 10).max(1).min(tats.len()) - 1;
        let (_, cutoff, _) = tats.select_nth_unstable(evict);
        let cutoff = *cutoff;
        clients.retain(|_, tat| *tat > cutoff);
        metrics::counter!("rate_limit_evictions_total").increment(1);
    }
}

#[async_trait]
impl RateLimiter for InMemoryRateLimiter {
    async fn check(&self, key: &str) -> RateLimitDecision {
        let now = self.clock.now();
        let t = self.config.emission_interval();
        let tolerance = t.saturating_mul(self.config.capacity() - 1);
        let mut clients = self.lock();
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            clients.retain(|_, tat| *tat > now);
        }
        let tat = if let Some(tat) = clients.get(key) {
            (*tat).max(now)
        } else {
            if clients.len() >= self.config.max_clients.max(1) {
                self.make_room(&mut clients, now);
            }
            now
        };
        let ahead = tat - now;
        if ahead > tolerance {
            return RateLimitDecision::Limited {
                retry_after: ahead.saturating_sub(tolerance),
            };
        }
        clients.insert(key.to_owned(), tat + t);
        let used = (ahead + t).as_nanos().div_ceil(t.as_nanos().max(1));
        let remaining = u128::from(self.config.capacity()).saturating_sub(used);
        RateLimitDecision::Allowed {
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        }
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::ManualMonotonicClock;
    use std::time::Duration;

    fn limiter(rpm: u32, burst: u32, max_clients: usize) -> (InMemoryRateLimiter, ManualMonotonicClock) {
        let clock = ManualMonotonicClock::new();
        let config = RateLimitConfig {
            requests_per_minute: rpm,
            burst_size: burst,
            window_size: Duration::from_secs(60),
            max_clients,
        };
        (InMemoryRateLimiter::with_clock(config, Arc::new(clock.clone())), clock)
    }

    #[tokio::test]
    async fn allows_a_burst_then_limits_then_refills() {
        let (l, clock) = limiter(60, 3, 10);
        for expected in [2, 1, 0] {
            assert_eq!(l.check("a").await, RateLimitDecision::Allowed { remaining: expected });
        }
        assert_eq!(
            l.check("a").await,
            RateLimitDecision::Limited {
                retry_after: Duration::from_secs(1)
            }
        );
        // Another client has its own allowance.
        assert!(matches!(l.check("b").await, RateLimitDecision::Allowed { .. }));
        // Just before the next emission: still limited, for the rest.
        clock.advance(Duration::from_millis(999));
        assert_eq!(
            l.check("a").await,
            RateLimitDecision::Limited {
                retry_after: Duration::from_millis(1)
            }
        );
        // One emission interval later exactly one more request passes.
        clock.advance(Duration::from_millis(1));
        assert_eq!(l.check("a").await, RateLimitDecision::Allowed { remaining: 0 });
        assert!(matches!(l.check("a").await, RateLimitDecision::Limited { .. }));
        // A whole burst's worth of time refills the whole burst, no more.
        clock.advance(Duration::from_secs(60));
        for expected in [2, 1, 0] {
            assert_eq!(l.check("a").await, RateLimitDecision::Allowed { remaining: expected });
        }
        assert!(matches!(l.check("a").await, RateLimitDecision::Limited { .. }));
    }

    /// A window no clock can add (a hand-made config) limits as if it were
    /// [`MAX_EMISSION_INTERVAL`](crate::rate_limit::MAX_EMISSION_INTERVAL)
    /// per request instead of overflowing an instant.
    #[tokio::test]
    async fn an_enormous_window_limits_without_overflowing() {
        for burst in [1, u32::MAX] {
            let clock = ManualMonotonicClock::new();
            let config = RateLimitConfig {
                requests_per_minute: 1,
                burst_size: burst,
                window_size: Duration::MAX,
                max_clients: 10,
            };
            let l = InMemoryRateLimiter::with_clock(config, Arc::new(clock.clone()));
            assert!(matches!(l.check("a").await, RateLimitDecision::Allowed { .. }));
            for _ in 0..3 {
                let d = l.check("a").await;
                match (burst, d) {
                    (1, RateLimitDecision::Limited { retry_after }) => {
                        assert!(retry_after <= crate::rate_limit::MAX_EMISSION_INTERVAL);
                    }
                    (1, d) => panic!("{d:?}"),
                    (_, d) => assert!(matches!(d, RateLimitDecision::Allowed { .. }), "{d:?}"),
                }
            }
        }
    }

    #[tokio::test]
    async fn memory_stays_bounded() {
        let (l, _clock) = limiter(60, 5, 100);
        for i in 0..1_000 {
            l.check(&format!("client-{i}")).await;
            assert!(l.tracked_clients() <= 100);
        }
    }

    #[tokio::test]
    async fn idle_clients_are_cleaned_up() {
        let (l, clock) = limiter(60, 1, 100);
        l.check("a").await;
        l.check("b").await;
        assert_eq!(l.cleanup(), 0, "both are still within their interval");
        clock.advance(Duration::from_millis(999));
        assert_eq!(l.cleanup(), 0);
        clock.advance(Duration::from_millis(1));
        assert!(matches!(l.check("b").await, RateLimitDecision::Allowed { .. }));
        assert_eq!(l.cleanup(), 1, "a is idle, b is not");
        assert_eq!(l.tracked_clients(), 1);
    }
}
