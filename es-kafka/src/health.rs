//! [`PublishHealth`]: what the last rounds of a poller or relay achieved,
//! for readiness checks and metrics.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::telemetry;

/// Consecutive failed rounds after which a publisher reports itself
/// unhealthy, unless configured otherwise.
pub const DEFAULT_UNHEALTHY_AFTER: u32 = 5;

/// The progress record of one publishing loop ([`OutboxPoller`] or
/// [`CdcRelay`]), updated after every round.
///
/// A round **fails** when it returns an error, or when a pending event was
/// not acknowledged (a broker outage looks like that: the deliveries time
/// out). A round that acknowledged some events and failed on others
/// counts both ([`partial`](PublishHealth::partial)). Every failed round is logged (a warning) and
/// counted ([`telemetry::FAILED_ROUNDS`]); after `unhealthy_after`
/// consecutive failed rounds [`HealthSnapshot::healthy`] is false, with the
/// last reason, until a round makes progress again.
///
/// [`OutboxPoller`]: crate::OutboxPoller
/// [`CdcRelay`]: crate::CdcRelay
#[derive(Debug)]
pub struct PublishHealth {
    method: &'static str,
    unhealthy_after: u32,
    created_at: DateTime<Utc>,
    state: Mutex<HealthSnapshot>,
}

/// A copy of a [`PublishHealth`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthSnapshot {
    /// `outbox_poller` or `cdc_builtin`.
    pub method: &'static str,
    /// False after `unhealthy_after` consecutive failed rounds.
    pub healthy: bool,
    /// Failed rounds since the last round that made progress.
    pub consecutive_failed_rounds: u32,
    /// Failed rounds since the start.
    pub failed_rounds_total: u64,
    /// Why the last failed round failed.
    pub last_error: Option<String>,
    /// When an event was last acknowledged by Kafka.
    pub last_publish_at: Option<DateTime<Utc>>,
    /// When the last round ended.
    pub last_round_at: Option<DateTime<Utc>>,
    /// Events acknowledged since the start.
    pub published_total: u64,
    /// Standing by: another relay holds the slot's turn (see
    /// [`CdcRelay`](crate::CdcRelay)); healthy, and publishing nothing
    /// until it takes the turn over.
    pub standby: bool,
}

impl HealthSnapshot {
    /// Time since the last acknowledged event (`None` before the first).
    pub fn since_last_publish(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.last_publish_at.map(|t| (now - t).to_std().unwrap_or_default())
    }
}

impl PublishHealth {
    /// A fresh record (healthy until rounds fail).
    pub fn new(method: &'static str, unhealthy_after: u32) -> Self {
        Self {
            method,
            unhealthy_after: unhealthy_after.max(1),
            created_at: Utc::now(),
            state: Mutex::new(HealthSnapshot {
                method,
                healthy: true,
                ..HealthSnapshot::default()
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HealthSnapshot) -> T) -> T {
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Records a round that acknowledged `published` events, or found
    /// nothing pending (`0`): both end a run of failed rounds.
    pub fn progress(&self, published: usize) {
        let now = Utc::now();
        self.with(|s| {
            if s.consecutive_failed_rounds > 0 {
                tracing::info!(
                    method = self.method,
                    after_failed_rounds = s.consecutive_failed_rounds,
                    "publishing to Kafka recovered"
                );
            }
            if published > 0 {
                s.last_publish_at = Some(now);
                s.published_total += published as u64;
            }
            s.consecutive_failed_rounds = 0;
            s.healthy = true;
            s.last_error = None;
            s.last_round_at = Some(now);
            s.standby = false;
        });
    }

    /// Records a round in which another relay held the turn: healthy,
    /// nothing to do. Returns whether the record already stood by (so the
    /// caller logs the change only).
    pub fn standby(&self) -> bool {
        let now = Utc::now();
        self.with(|s| {
            let was = s.standby;
            s.standby = true;
            s.consecutive_failed_rounds = 0;
            s.healthy = true;
            s.last_error = None;
            s.last_round_at = Some(now);
            was
        })
    }

    /// Records a round that made no progress, with why.
    pub fn failed(&self, reason: impl Into<String>) {
        self.fail(0, reason.into());
    }

    /// Records a round that acknowledged `published` events but failed on
    /// others, with why: the events count, and so does the failure (a
    /// stream stuck behind an event Kafka keeps refusing turns the record
    /// unhealthy even while other streams go out).
    pub fn partial(&self, published: usize, reason: impl Into<String>) {
        self.fail(published, reason.into());
    }

    fn fail(&self, published: usize, reason: String) {
        let now = Utc::now();
        ::metrics::counter!(telemetry::FAILED_ROUNDS, "method" => self.method).increment(1);
        self.with(|s| {
            if published > 0 {
                s.last_publish_at = Some(now);
                s.published_total += published as u64;
            }
            s.consecutive_failed_rounds += 1;
            s.failed_rounds_total += 1;
            s.standby = false;
            s.healthy = s.consecutive_failed_rounds < self.unhealthy_after;
            s.last_round_at = Some(now);
            tracing::warn!(
                method = self.method,
                consecutive = s.consecutive_failed_rounds,
                published,
                reason = %reason,
                "publishing round failed"
            );
            s.last_error = Some(reason);
        });
    }

    /// The current record; also sets the
    /// [`telemetry::SECONDS_SINCE_PUBLISH`] gauge (before the first
    /// acknowledged event, to the time since this record was made: a
    /// process restarted during a broker outage reports its wait too).
    pub fn snapshot(&self) -> HealthSnapshot {
        let snap = self.with(|s| s.clone());
        let now = Utc::now();
        let age = snap
            .since_last_publish(now)
            .unwrap_or_else(|| (now - self.created_at).to_std().unwrap_or_default());
        ::metrics::gauge!(telemetry::SECONDS_SINCE_PUBLISH, "method" => self.method).set(age.as_secs_f64());
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_after_consecutive_failures_until_progress() {
        let h = PublishHealth::new("outbox_poller", 3);
        h.progress(0);
        assert!(h.snapshot().healthy);
        h.failed("a");
        h.failed("b");
        let s = h.snapshot();
        assert!(s.healthy, "two of three failures");
        assert_eq!(s.consecutive_failed_rounds, 2);
        h.failed("c");
        let s = h.snapshot();
        assert!(!s.healthy);
        assert_eq!(s.last_error.as_deref(), Some("c"));
        assert_eq!(s.failed_rounds_total, 3);
        assert!(s.last_publish_at.is_none());
        h.progress(7);
        let s = h.snapshot();
        assert!(s.healthy);
        assert_eq!((s.consecutive_failed_rounds, s.published_total), (0, 7));
        assert!(s.last_error.is_none() && s.last_publish_at.is_some());
        h.partial(2, "e");
        h.partial(1, "f");
        let s = h.snapshot();
        assert_eq!((s.consecutive_failed_rounds, s.published_total), (2, 10));
        assert_eq!(s.last_error.as_deref(), Some("f"));
        h.partial(0, "g");
        assert!(!h.snapshot().healthy, "partial rounds are failed rounds");
        h.failed("d");
        h.progress(0);
        let s = h.snapshot();
        assert_eq!(
            (s.consecutive_failed_rounds, s.published_total, s.failed_rounds_total),
            (0, 10, 7),
            "nothing pending ends a failure run"
        );
    }
}
