//! How late events reach a projection that follows the log during a run.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The lags a following projection saw: each event's time from being
/// recorded to being applied, in microseconds. A bench's projector calls
/// [`record`](Self::record) for each event it applies.
#[derive(Debug, Default)]
pub struct Lags(Mutex<Vec<u64>>);

impl Lags {
    /// Records the lag of an event recorded at `recorded_at`, applied now.
    pub fn record(&self, recorded_at: DateTime<Utc>) {
        let lag = (Utc::now() - recorded_at).num_microseconds().unwrap_or(0).max(0) as u64;
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(lag);
    }

    /// How many events were recorded.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets what was recorded (the catch-up before a timed phase).
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    /// Waits (polling every 10 ms) until `count` events were recorded or
    /// `timeout` has passed; returns whether they were.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.len() < count {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// The lags recorded, ascending.
    pub fn sorted(&self) -> Vec<u64> {
        let mut lags = self.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
        lags.sort_unstable();
        lags
    }
}
