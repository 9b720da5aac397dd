//! A circuit breaker and an in-flight bound (load shedding) around Redis.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use es_core::{Clock, SystemClock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::telemetry;

/// Observable state of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through; consecutive failures are counted.
    Closed,
    /// One probe call is allowed; its result closes or re-opens the circuit.
    HalfOpen,
    /// Calls are refused until the cool-down ends.
    Open,
}

impl CircuitState {
    fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { since: DateTime<Utc> },
    HalfOpen { probing: bool },
}

/// Opens after `failure_threshold` consecutive failures, refuses calls for
/// `open_for`, then lets exactly one probe through; a successful probe
/// closes it, a failed one opens it again.
///
/// Guarantees: while open, [`allow`](Self::allow) is `false` without any
/// I/O; at most one probe is in flight while half-open. Every transition is
/// logged (tracing) and published as the `es_redis_circuit_state` gauge.
///
/// The cool-down is measured on a [`Clock`] (the system clock unless one
/// is given with [`with_clock`](Self::with_clock)); a clock that goes
/// backwards ends the cool-down rather than stretching it.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use es_core::ManualClock;
/// use es_redis::{CircuitBreaker, CircuitState};
///
/// let clock = ManualClock::at("2026-01-01T00:00:00Z".parse().unwrap());
/// let breaker = CircuitBreaker::with_clock("doc", 1, Duration::from_secs(30), Arc::new(clock.clone()));
/// breaker.failure();
/// assert!(!breaker.allow());
/// clock.advance(chrono::Duration::seconds(30));
/// assert_eq!(breaker.state(), CircuitState::HalfOpen);
/// ```
pub struct CircuitBreaker {
    name: &'static str,
    threshold: u32,
    open_for: Duration,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("threshold", &self.threshold)
            .field("open_for", &self.open_for)
            .field("inner", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker {
    /// A closed breaker on the system clock; `name` labels its metrics and
    /// logs.
    pub fn new(name: &'static str, failure_threshold: u32, open_for: Duration) -> Self {
        Self::with_clock(name, failure_threshold, open_for, Arc::new(SystemClock))
    }

    /// A closed breaker whose cool-down is measured on `clock`.
    pub fn with_clock(name: &'static str, failure_threshold: u32, open_for: Duration, clock: Arc<dyn Clock>) -> Self {
        metrics::gauge!(telemetry::CIRCUIT_STATE, "name" => name).set(0.0);
        Self {
            name,
            threshold: failure_threshold.max(1),
            open_for,
            clock,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the cool-down of a circuit opened at `since` is over.
    fn cooled_down(&self, since: DateTime<Utc>) -> bool {
        match (self.clock.now() - since).to_std() {
            Ok(elapsed) => elapsed >= self.open_for,
            // The clock went backwards: do not stay open indefinitely.
            Err(_) => true,
        }
    }

    /// The current state (an open breaker whose cool-down has ended reports
    /// half-open).
    pub fn state(&self) -> CircuitState {
        match &*self.lock() {
            Inner::Closed { .. } => CircuitState::Closed,
            Inner::Open { since } if self.cooled_down(*since) => CircuitState::HalfOpen,
            Inner::Open { .. } => CircuitState::Open,
            Inner::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Whether a call may go out now. When it returns `true` the caller
    /// must report the call's result with [`success`](Self::success) or
    /// [`failure`](Self::failure) (or [`cancelled`](Self::cancelled)).
    pub fn allow(&self) -> bool {
        let mut inner = self.lock();
        match &mut *inner {
            Inner::Closed { .. } => true,
            Inner::Open { since } => {
                if self.cooled_down(*since) {
                    *inner = Inner::HalfOpen { probing: true };
                    drop(inner);
                    self.transition(CircuitState::HalfOpen);
                    true
                } else {
                    false
                }
            }
            Inner::HalfOpen { probing } => {
                if *probing {
                    false
                } else {
                    *probing = true;
                    true
                }
            }
        }
    }

    /// Records a successful call; closes a half-open circuit.
    pub fn success(&self) {
        let mut inner = self.lock();
        let was_closed = matches!(*inner, Inner::Closed { .. });
        *inner = Inner::Closed { failures: 0 };
        drop(inner);
        if !was_closed {
            self.transition(CircuitState::Closed);
        }
    }

    /// Records a failed call; may open the circuit.
    pub fn failure(&self) {
        let mut inner = self.lock();
        let open = match &mut *inner {
            Inner::Closed { failures } => {
                *failures += 1;
                *failures >= self.threshold
            }
            Inner::HalfOpen { .. } => true,
            Inner::Open { .. } => false,
        };
        if open {
            *inner = Inner::Open {
                since: self.clock.now(),
            };
            drop(inner);
            self.transition(CircuitState::Open);
        }
    }

    /// Records that an allowed call was abandoned without a verdict (e.g.
    /// the caller's future was dropped); frees the half-open probe slot.
    pub fn cancelled(&self) {
        if let Inner::HalfOpen { probing } = &mut *self.lock() {
            *probing = false;
        }
    }

    fn transition(&self, to: CircuitState) {
        match to {
            CircuitState::Open => tracing::warn!(breaker = self.name, "redis circuit opened"),
            CircuitState::HalfOpen => tracing::info!(breaker = self.name, "redis circuit half-open; probing"),
            CircuitState::Closed => tracing::info!(breaker = self.name, "redis circuit closed"),
        }
        metrics::gauge!(telemetry::CIRCUIT_STATE, "name" => self.name).set(to.gauge());
        metrics::counter!(telemetry::CIRCUIT_TRANSITIONS, "name" => self.name, "to" => to.label()).increment(1);
    }
}

/// A bound on calls in flight; excess calls are refused at once (shed),
/// never queued.
#[derive(Debug, Clone)]
pub struct LoadShedder {
    permits: Arc<Semaphore>,
    max: usize,
}

impl LoadShedder {
    /// Allows at most `max_in_flight` concurrent calls (at least 1).
    pub fn new(max_in_flight: usize) -> Self {
        let max = max_in_flight.max(1);
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A permit for one call, or `None` when the bound is reached.
    pub fn try_enter(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.permits).try_acquire_owned().ok()
    }

    /// The configured bound.
    pub fn max_in_flight(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use es_core::ManualClock;

    fn clock() -> ManualClock {
        ManualClock::at("2026-01-01T00:00:00Z".parse().unwrap())
    }

    #[test]
    fn opens_after_threshold_and_probes_once() {
        let clock = clock();
        let b = CircuitBreaker::with_clock("t", 2, Duration::from_secs(30), Arc::new(clock.clone()));
        assert!(b.allow());
        b.failure();
        assert_eq!(b.state(), CircuitState::Closed);
        b.failure();
        assert_eq!(b.state(), CircuitState::Open);
        assert!(!b.allow());
        clock.advance(chrono::Duration::seconds(29));
        assert!(!b.allow(), "still cooling down");
        clock.advance(chrono::Duration::seconds(1));
        assert!(b.allow(), "first call after cool-down is the probe");
        assert!(!b.allow(), "only one probe at a time");
        b.failure();
        assert_eq!(b.state(), CircuitState::Open, "a failed probe opens it again");
        assert!(!b.allow(), "for a whole new cool-down");
        clock.advance(chrono::Duration::seconds(30));
        assert!(b.allow());
        b.success();
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(b.allow());
    }

    #[test]
    fn a_cancelled_probe_frees_the_slot() {
        let clock = clock();
        let b = CircuitBreaker::with_clock("t3", 1, Duration::from_secs(30), Arc::new(clock.clone()));
        b.failure();
        clock.advance(chrono::Duration::seconds(30));
        assert!(b.allow());
        assert!(!b.allow());
        b.cancelled();
        assert!(b.allow(), "the next caller probes");
    }

    #[test]
    fn a_clock_going_backwards_ends_the_cool_down() {
        let clock = clock();
        let b = CircuitBreaker::with_clock("t4", 1, Duration::from_secs(30), Arc::new(clock.clone()));
        b.failure();
        clock.advance(chrono::Duration::seconds(-3600));
        assert_eq!(b.state(), CircuitState::HalfOpen);
    }

    #[test]
    fn success_resets_failure_count() {
        let b = CircuitBreaker::new("t2", 2, Duration::from_secs(10));
        b.failure();
        b.success();
        b.failure();
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn shedder_bounds_permits() {
        let s = LoadShedder::new(2);
        let a = s.try_enter();
        let b = s.try_enter();
        assert!(a.is_some() && b.is_some());
        assert!(s.try_enter().is_none());
        drop(a);
        assert!(s.try_enter().is_some());
    }
}
