//! [`OutboxPoller`]: claim, publish, wait for acknowledgements, mark.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use es_core::RecordedEvent;
use sqlx::{PgPool, Postgres, Transaction};
use tracing::Instrument;

use super::row::{cut_at_parked, OutboxRow};
use super::sql::OutboxSql;
use super::{OutboxConfig, Retention};
use crate::error::{OutboxError, SetupError};
use crate::publisher::{published_prefix, KafkaPublisher};
use crate::telemetry;

const METHOD: &str = "outbox_poller";

/// Publishes the outbox rows es-postgres writes in each append's own
/// statement (`EventStoreConfig { outbox: true, .. }`).
///
/// Guarantees:
/// - **at least once**: a row is marked published (or deleted) only after
///   Kafka acknowledged it, in the transaction that claimed it; a poller
///   that dies at any point leaves its rows pending, and they are
///   published again;
/// - **per-stream order, with any number of pollers**: a batch owns whole
///   streams by locking each stream's oldest unpublished row
///   (`FOR UPDATE SKIP LOCKED`), so no two pollers publish a stream at
///   once, and a stream's rows are published in version order; after a
///   failure only the acknowledged prefix of the stream is marked;
/// - **nothing uncommitted**: rows of a rolled-back append never exist;
/// - a row failing `max_attempts` times is **parked** with its error and
///   blocks only its own stream ([`status`](Self::status) lists it,
///   [`unpark`](Self::unpark) releases it).
#[derive(Debug, Clone)]
pub struct OutboxPoller {
    pool: PgPool,
    publisher: Arc<KafkaPublisher>,
    sql: Arc<OutboxSql>,
    config: OutboxConfig,
}

/// Rows claimed by one poller: their streams are owned until the claim is
/// finished or dropped (dropping it rolls back: the rows stay pending).
pub struct Claim {
    tx: Transaction<'static, Postgres>,
    rows: Vec<OutboxRow>,
}

impl Claim {
    /// The claimed events, in per-stream version order.
    pub fn events(&self) -> Vec<RecordedEvent> {
        self.rows.iter().map(|r| r.event.clone()).collect()
    }

    /// Whether nothing was claimed.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchOutcome {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows acknowledged by Kafka and marked published (or deleted).
    pub published: usize,
    /// Rows whose publication failed (attempt counted).
    pub failed: usize,
    /// Rows parked by this poll.
    pub parked: usize,
    /// Commit-to-acknowledgement lag of each published row.
    pub lags: Vec<Duration>,
}

impl OutboxPoller {
    /// A poller over the outbox of `config.schema`.
    pub fn new(pool: PgPool, publisher: Arc<KafkaPublisher>, config: OutboxConfig) -> Result<Self, SetupError> {
        let schema = crate::ident::check(&config.schema)?;
        Ok(Self {
            sql: Arc::new(OutboxSql::new(schema)),
            pool,
            publisher,
            config,
        })
    }

    /// Creates the poller's index (idempotent). Run after es-postgres'
    /// own migration.
    pub async fn migrate(&self) -> Result<(), SetupError> {
        sqlx::query(&self.sql.index).execute(&self.pool).await?;
        Ok(())
    }

    /// The settings.
    pub fn config(&self) -> &OutboxConfig {
        &self.config
    }

    /// Claims the next batch (see the type's guarantees).
    pub async fn claim(&self) -> Result<Claim, OutboxError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(&self.sql.claim)
            .bind(self.config.max_streams)
            .bind(self.config.batch_size)
            .fetch_all(&mut *tx)
            .await?;
        let rows = rows.iter().map(OutboxRow::decode).collect::<Result<Vec<_>, _>>()?;
        Ok(Claim {
            tx,
            rows: cut_at_parked(rows),
        })
    }

    /// Publishes a claim, waits for every acknowledgement, then marks the
    /// acknowledged rows (per stream, the prefix before the first failure),
    /// counts the failures, parks rows out of attempts, and commits.
    pub async fn finish(&self, claim: Claim) -> Result<BatchOutcome, OutboxError> {
        let Claim { mut tx, rows } = claim;
        let mut outcome = BatchOutcome {
            claimed: rows.len(),
            ..BatchOutcome::default()
        };
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(outcome);
        }
        let events: Vec<RecordedEvent> = rows.iter().map(|r| r.event.clone()).collect();
        let results = self.publisher.publish(&events).await;
        let ok = published_prefix(&events, &results);
        let mut done = Vec::with_capacity(ok.len());
        for &i in &ok {
            if let (Some(row), Some(Ok(delivered))) = (rows.get(i), results.get(i)) {
                done.push(row.event.global_position as i64);
                outcome
                    .lags
                    .push(telemetry::record_lag(METHOD, row.created_at, delivered.acked_at));
            }
        }
        // The first failure of each stream gets an attempt counted; rows
        // behind it were not at fault.
        let mut failed_streams = std::collections::HashSet::new();
        let (mut positions, mut errors) = (Vec::new(), Vec::new());
        for (row, result) in rows.iter().zip(&results) {
            if let Err(e) = result {
                if failed_streams.insert(row.event.stream_id.clone())
                    && !matches!(e, crate::PublishError::Blocked { .. })
                {
                    positions.push(row.event.global_position as i64);
                    errors.push(e.to_string());
                }
            }
        }
        let mark = match self.config.retention {
            Retention::DeleteOnPublish => &self.sql.delete_published,
            Retention::MarkPublished { .. } => &self.sql.mark_published,
        };
        sqlx::query(mark).bind(&done).execute(&mut *tx).await?;
        if !positions.is_empty() {
            tracing::warn!(failed = positions.len(), first_error = %errors[0], "outbox publish failures");
            let parked: Vec<bool> = sqlx::query_scalar(&self.sql.record_failures)
                .bind(&positions)
                .bind(&errors)
                .bind(self.config.max_attempts)
                .fetch_all(&mut *tx)
                .await?;
            outcome.parked = parked.iter().filter(|p| **p).count();
        }
        tx.commit().await?;
        outcome.published = done.len();
        outcome.failed = rows.len() - done.len();
        ::metrics::counter!(telemetry::PUBLISHED, "method" => METHOD).increment(done.len() as u64);
        ::metrics::counter!(telemetry::PUBLISH_FAILURES, "method" => METHOD).increment(outcome.failed as u64);
        ::metrics::counter!(telemetry::OUTBOX_PARKED).increment(outcome.parked as u64);
        Ok(outcome)
    }

    /// One round: [`claim`](Self::claim) then [`finish`](Self::finish).
    pub async fn poll_once(&self) -> Result<BatchOutcome, OutboxError> {
        let started = Instant::now();
        let span = tracing::debug_span!("outbox.poll", schema = %self.config.schema);
        let outcome = async { self.finish(self.claim().await?).await }
            .instrument(span)
            .await?;
        if outcome.claimed > 0 {
            ::metrics::histogram!(telemetry::BATCH_DURATION, "method" => METHOD)
                .record(started.elapsed().as_secs_f64());
        }
        Ok(outcome)
    }

    /// Polls until `shutdown` completes: immediately again after a full
    /// batch, after `poll_interval` when idle, with exponential back-off
    /// after failures and errors. Purges old published rows when the
    /// retention says so. Errors are logged and retried, never returned.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut failures: u32 = 0;
        let mut last_purge = Instant::now();
        loop {
            let wait = match self.poll_once().await {
                Ok(o) if o.failed > 0 => {
                    failures += 1;
                    self.config.backoff.delay_after(failures)
                }
                Ok(o) => {
                    failures = 0;
                    if o.claimed > 0 {
                        Duration::ZERO
                    } else {
                        self.config.poll_interval
                    }
                }
                Err(e) => {
                    failures += 1;
                    tracing::error!(error = %e, "outbox poll failed");
                    self.config.backoff.delay_after(failures)
                }
            };
            if let Retention::MarkPublished { purge_after: Some(age) } = self.config.retention {
                if last_purge.elapsed() > Duration::from_secs(60) {
                    last_purge = Instant::now();
                    if let Err(e) = self.purge_published(age).await {
                        tracing::warn!(error = %e, "outbox purge failed");
                    }
                }
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Deletes published rows older than `age`; returns how many.
    pub async fn purge_published(&self, age: Duration) -> Result<u64, OutboxError> {
        let done = sqlx::query(&self.sql.purge)
            .bind(age.as_secs_f64())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Releases a parked row: it is retried with a fresh attempt count.
    /// Returns whether the row was parked.
    pub async fn unpark(&self, global_position: u64) -> Result<bool, OutboxError> {
        let done = sqlx::query(&self.sql.unpark)
            .bind(global_position as i64)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(super) fn sql(&self) -> &OutboxSql {
        &self.sql
    }
}
