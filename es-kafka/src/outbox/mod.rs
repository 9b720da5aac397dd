//! The `outbox_poller` capture method: publishes es-postgres outbox rows.

mod hold;
mod poller;
mod row;
mod sql;
mod status;

use std::time::Duration;

use es_core::RetryPolicy;

pub use hold::{unpark, Unparked};
pub use poller::{BatchOutcome, Claim, OutboxPoller, CLAIM_WINDOWS};
pub use status::{outbox_status, OutboxStatus, ParkedRow};

/// What happens to an outbox row once Kafka has acknowledged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Delete the row in the transaction that would have marked it.
    DeleteOnPublish,
    /// Set `published_at`; [`OutboxPoller::run`] deletes published rows
    /// older than `purge_after` (never, if `None`).
    MarkPublished {
        /// Age after which published rows are deleted.
        purge_after: Option<Duration>,
    },
}

impl Default for Retention {
    fn default() -> Self {
        Self::MarkPublished {
            purge_after: Some(Duration::from_secs(7 * 24 * 3600)),
        }
    }
}

/// Settings of an [`OutboxPoller`].
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxConfig {
    /// Schema of the es-postgres tables.
    pub schema: String,
    /// Most streams claimed by one batch (no more than `batch_size`).
    pub max_streams: i64,
    /// Most rows published by one batch.
    pub batch_size: i64,
    /// Wait between polls when nothing was pending.
    pub poll_interval: Duration,
    /// Failed attempts after which a row is parked (it then blocks its
    /// stream until [`OutboxPoller::unpark`]). Only failures that are the
    /// row's own fault count ([`PublishError::is_permanent`]: too large,
    /// not encodable, refused as invalid); a broker outage never parks a
    /// row.
    ///
    /// [`PublishError::is_permanent`]: crate::PublishError::is_permanent
    pub max_attempts: i32,
    /// Back-off of the poller after a batch with failures or an error
    /// (50 ms doubling to 1 s: during an outage each round already waits
    /// for the publisher's `message_timeout`, so a longer back-off would
    /// only delay the resumption).
    pub backoff: RetryPolicy,
    /// What happens to published rows.
    pub retention: Retention,
    /// Published rows deleted per statement by the purge (small batches
    /// keep locks and WAL bursts short).
    pub purge_batch: i64,
    /// Consecutive rounds without progress after which
    /// [`OutboxPoller::health`] reports unhealthy.
    pub unhealthy_after: u32,
    /// How long [`OutboxPoller::run`] lets the round in progress finish
    /// after shutdown is requested; then the round is dropped (its claim
    /// rolls back and the rows are published by the next start).
    pub shutdown_grace: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            schema: "es".into(),
            max_streams: 500,
            batch_size: 1000,
            poll_interval: Duration::from_millis(20),
            max_attempts: 5,
            backoff: RetryPolicy {
                max_attempts: u32::MAX,
                initial_delay: Duration::from_millis(50),
                multiplier: 2.0,
                max_delay: Duration::from_secs(1),
                jitter: 0.5,
            },
            retention: Retention::default(),
            purge_batch: 10_000,
            unhealthy_after: crate::health::DEFAULT_UNHEALTHY_AFTER,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl OutboxConfig {
    /// The default configuration for another schema.
    pub fn with_schema(schema: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            ..Self::default()
        }
    }
}
