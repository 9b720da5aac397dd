//! A circuit breaker and an in-flight bound (load shedding) around Redis.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

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
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// Opens after `failure_threshold` consecutive failures, refuses calls for
/// `open_for`, then lets exactly one probe through; a successful probe
/// closes it, a failed one opens it again.
///
/// Guarantees: while open, [`allow`](Self::allow) is `false` without any
/// I/O; at most one probe is in flight while half-open. Every transition is
/// logged (tracing) and published as the `es_redis_circuit_state` gauge.
#[derive(Debug)]
pub struct CircuitBreaker {
    name: &'static str,
    threshold: u32,
    open_for: Duration,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// A closed breaker; `name` labels its metrics and logs.
    pub fn new(name: &'static str, failure_threshold: u32, open_for: Duration) -> Self {
        metrics::gauge!(telemetry::CIRCUIT_STATE, "name" => name).set(0.0);
        Self {
            name,
            threshold: failure_threshold.max(1),
            open_for,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current state (an open breaker whose cool-down has ended reports
    /// half-open).
    pub fn state(&self) -> CircuitState {
        match &*self.lock() {
            Inner::Closed { .. } => CircuitState::Closed,
            Inner::Open { until } if Instant::now() >= *until => CircuitState::HalfOpen,
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
            Inner::Open { until } => {
                if Instant::now() >= *until {
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
                until: Instant::now() + self.open_for,
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

    #[test]
    fn opens_after_threshold_and_probes_once() {
        let b = CircuitBreaker::new("t", 2, Duration::from_millis(20));
        assert!(b.allow());
        b.failure();
        assert_eq!(b.state(), CircuitState::Closed);
        b.failure();
        assert_eq!(b.state(), CircuitState::Open);
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(25));
        assert!(b.allow(), "first call after cool-down is the probe");
        assert!(!b.allow(), "only one probe at a time");
        b.failure();
        assert_eq!(b.state(), CircuitState::Open);
        std::thread::sleep(Duration::from_millis(25));
        assert!(b.allow());
        b.success();
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(b.allow());
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
