//! [`OutboxPoller`]: claim, publish, wait for acknowledgements, mark.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use es_core::RecordedEvent;
use sqlx::{PgPool, Postgres, Transaction};
use tracing::Instrument;

use super::hold;
use super::row::{cut_at_parked, OutboxRow};
use super::sql::OutboxSql;
use super::{OutboxConfig, Retention};
use crate::error::{OutboxError, SetupError};
use crate::health::{HealthSnapshot, PublishHealth};
use crate::publisher::{published_prefix, KafkaPublisher};
use crate::rounds::{self, Pace, Progress};
use crate::telemetry;

const METHOD: &str = "outbox_poller";

/// Most windows of pending rows one claim looks through for streams that
/// no other poller owns.
pub const CLAIM_WINDOWS: usize = 8;

/// Publishes the outbox rows es-postgres writes in each append's own
/// statement (`EventStoreConfig { outbox: true, .. }`).
///
/// Guarantees:
/// - **at least once**: a row is marked published (or deleted) only after
///   Kafka acknowledged it, in the transaction that claimed it; a poller
///   that dies at any point leaves its rows pending, and they are
///   published again;
/// - **per-stream order, with any number of pollers**: a batch owns whole
///   streams by taking each stream's advisory lock
///   (`pg_try_advisory_xact_lock`, skipping streams another poller
///   holds), so no two pollers publish a stream at once, and a stream's
///   rows are published in version order; after a failure only the
///   acknowledged prefix of the stream is marked;
/// - **readers of the log do not wait for Kafka**: a claim writes nothing
///   and takes no row lock until its acknowledgements are in, so it has
///   no transaction id while it waits, and es-postgres's global-log
///   readers (projections, process managers), which stop below the oldest
///   running transaction id, go on through a broker outage;
/// - **nothing uncommitted**: rows of a rolled-back append never exist;
/// - a row failing `max_attempts` times through its own fault
///   ([`PublishError::is_permanent`](crate::PublishError::is_permanent)) is
///   **parked** with its error and blocks only its own stream
///   ([`status`](Self::status) lists it, [`unpark`](Self::unpark) releases
///   it); a broker outage counts no attempts, so it parks nothing;
/// - **a claim costs O(batch)**, not O(backlog): it reads the oldest
///   `batch_size` pending rows by global position and one head per stream
///   (see the statements in `outbox/sql.rs`); the rows appended behind a
///   parked row are **held** once a claim has seen them (they leave the
///   pending index until `unpark` releases them), so a parked stream's
///   backlog is not walked again by every claim.
#[derive(Debug, Clone)]
pub struct OutboxPoller {
    pool: PgPool,
    publisher: Arc<KafkaPublisher>,
    sql: Arc<OutboxSql>,
    config: OutboxConfig,
    health: Arc<PublishHealth>,
}

/// Rows claimed by one poller: their streams are owned until the claim is
/// finished or dropped (dropping it rolls back: the rows stay pending).
pub struct Claim {
    tx: Transaction<'static, Postgres>,
    rows: Vec<OutboxRow>,
    /// Streams seen blocked by a parked row: their rows are held once the
    /// claim is finished.
    blocked: Vec<String>,
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
    /// The first publish error of the batch, if any.
    pub first_error: Option<String>,
}

impl OutboxPoller {
    /// A poller over the outbox of `config.schema`.
    pub fn new(pool: PgPool, publisher: Arc<KafkaPublisher>, config: OutboxConfig) -> Result<Self, SetupError> {
        let schema = crate::ident::check(&config.schema)?;
        Ok(Self {
            sql: Arc::new(OutboxSql::new(schema)),
            health: Arc::new(PublishHealth::new(METHOD, config.unhealthy_after)),
            pool,
            publisher,
            config,
        })
    }

    /// Creates the poller's indexes and sets the table's autovacuum
    /// settings (idempotent). Run after es-postgres' own migration.
    pub async fn migrate(&self) -> Result<(), SetupError> {
        for statement in &self.sql.migrate {
            sqlx::query(statement).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Progress of [`run`](Self::run): failed rounds, the last error, the
    /// last publish (for readiness checks).
    pub fn health(&self) -> HealthSnapshot {
        self.health.snapshot()
    }

    /// The settings.
    pub fn config(&self) -> &OutboxConfig {
        &self.config
    }

    /// Claims the next batch (see the type's guarantees): up to
    /// `max_streams` streams, oldest pending row first, and up to
    /// `batch_size` of their rows (an equal share per stream).
    ///
    /// Candidates come from windows of `batch_size` pending rows in global
    /// order; while fewer than `max_streams` streams are claimed and the
    /// window was full, the next window is tried (at most
    /// [`CLAIM_WINDOWS`] of them), so several pollers share a backlog that
    /// sits in a few streams (each skips the streams others own). No more
    /// than `batch_size` streams are claimed, so the share of each is at
    /// least one row and the batch at most `batch_size` rows.
    pub async fn claim(&self) -> Result<Claim, OutboxError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(self.sql.custom_plans).execute(&mut *tx).await?;
        let batch = self.config.batch_size.max(1);
        let max_streams = usize::try_from(self.config.max_streams.clamp(1, batch)).unwrap_or(1);
        let mut owned: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut blocked: Vec<String> = Vec::new();
        let mut after = i64::MIN;
        for _ in 0..CLAIM_WINDOWS {
            let window: Vec<(String, i64, i64, i64, bool)> = sqlx::query_as(&self.sql.window)
                .bind(after)
                .bind(batch)
                .fetch_all(&mut *tx)
                .await?;
            let rows_in_window: i64 = window.iter().map(|w| w.2).sum();
            let mut candidates: Vec<String> = Vec::new();
            for w in window.iter().filter(|w| seen.insert(w.0.clone())) {
                if w.4 {
                    blocked.push(w.0.clone());
                } else {
                    candidates.push(w.0.clone());
                }
            }
            if !candidates.is_empty() {
                let locked: Vec<String> = sqlx::query_scalar(&self.sql.lock_heads)
                    .bind(&candidates)
                    .bind((max_streams - owned.len()) as i64)
                    .fetch_all(&mut *tx)
                    .await?;
                owned.extend(locked);
            }
            match window.iter().map(|w| w.3).max() {
                Some(last) if owned.len() < max_streams && rows_in_window >= batch => after = last,
                _ => break,
            }
        }
        if owned.is_empty() {
            return Ok(Claim {
                tx,
                rows: Vec::new(),
                blocked,
            });
        }
        let share = (batch / owned.len() as i64).max(1);
        let rows = sqlx::query(&self.sql.rows)
            .bind(&owned)
            .bind(share)
            .fetch_all(&mut *tx)
            .await?;
        let rows = rows.iter().map(OutboxRow::decode).collect::<Result<Vec<_>, _>>()?;
        Ok(Claim {
            tx,
            rows: cut_at_parked(rows),
            blocked,
        })
    }

    /// Publishes a claim, waits for every acknowledgement, then marks the
    /// acknowledged rows (per stream, the prefix before the first failure),
    /// counts the failures, parks rows out of attempts, and commits.
    pub async fn finish(&self, claim: Claim) -> Result<BatchOutcome, OutboxError> {
        let Claim { mut tx, rows, blocked } = claim;
        let mut outcome = BatchOutcome {
            claimed: rows.len(),
            ..BatchOutcome::default()
        };
        if rows.is_empty() {
            tx.commit().await?;
            self.hold(blocked).await;
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
        // The first failure of each stream gets an attempt counted if it
        // was the row's own fault; rows behind it were not at fault, and a
        // broker outage is nobody's row's fault.
        let mut failed_streams = std::collections::HashSet::new();
        let (mut positions, mut errors) = (Vec::new(), Vec::new());
        let mut first_error = None;
        for (row, result) in rows.iter().zip(&results) {
            if let Err(e) = result {
                first_error.get_or_insert_with(|| e.to_string());
                if failed_streams.insert(row.event.stream_id.clone()) && e.is_permanent() {
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
        if let Some(first) = &first_error {
            tracing::warn!(failed = rows.len() - done.len(), first_error = %first, "outbox publish failures");
        }
        if !positions.is_empty() {
            let parked: Vec<bool> = sqlx::query_scalar(&self.sql.record_failures)
                .bind(&positions)
                .bind(&errors)
                .bind(self.config.max_attempts)
                .fetch_all(&mut *tx)
                .await?;
            outcome.parked = parked.iter().filter(|p| **p).count();
        }
        tx.commit().await?;
        self.hold(blocked).await;
        outcome.published = done.len();
        outcome.failed = rows.len() - done.len();
        outcome.first_error = first_error;
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
    /// after failures and errors. Every round that publishes nothing while
    /// rows are pending is logged and counted ([`health`](Self::health)).
    /// Purges old published rows when the retention says so. Errors are
    /// logged and retried, never returned.
    ///
    /// Shutdown lets the round in progress finish for at most
    /// `shutdown_grace`, then drops it: its claim rolls back, and its rows
    /// are published (again, at least once) by the next start.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let last_purge = std::sync::Mutex::new(Instant::now());
        let pace = Pace {
            poll_interval: self.config.poll_interval,
            backoff: &self.config.backoff,
            shutdown_grace: self.config.shutdown_grace,
            what: METHOD,
        };
        rounds::run(pace, shutdown, || async {
            let progress = self.record(&self.poll_once().await);
            if let Retention::MarkPublished { purge_after: Some(age) } = self.config.retention {
                let due = match last_purge.lock() {
                    Ok(mut last) if last.elapsed() > Duration::from_secs(60) => {
                        *last = Instant::now();
                        true
                    }
                    _ => false,
                };
                if due {
                    if let Err(e) = self.purge_published(age).await {
                        tracing::warn!(error = %e, "outbox purge failed");
                    }
                }
            }
            progress
        })
        .await;
    }

    /// Records a round's outcome in the health record.
    fn record(&self, result: &Result<BatchOutcome, OutboxError>) -> Progress {
        match result {
            Ok(o) if o.claimed > 0 && o.published == 0 => {
                let reason = o.first_error.clone().unwrap_or_else(|| "no row acknowledged".into());
                self.health
                    .failed(format!("{} rows claimed, none published: {reason}", o.claimed));
                Progress::Failed
            }
            Ok(o) if o.failed > 0 => {
                // Some rows went out: the next round goes at once (other
                // streams are not held back by one that keeps failing).
                let reason = o.first_error.clone().unwrap_or_else(|| "rows not acknowledged".into());
                self.health.partial(
                    o.published,
                    format!("{} of {} rows not published: {reason}", o.failed, o.claimed),
                );
                Progress::Busy
            }
            Ok(o) => {
                self.health.progress(o.published);
                if o.claimed == 0 {
                    Progress::Idle
                } else {
                    Progress::Busy
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "outbox poll failed");
                self.health.failed(e.to_string());
                Progress::Failed
            }
        }
    }

    /// Deletes published rows older than `age`, `purge_batch` rows per
    /// statement; returns how many.
    pub async fn purge_published(&self, age: Duration) -> Result<u64, OutboxError> {
        let mut total = 0;
        loop {
            let done = sqlx::query(&self.sql.purge)
                .bind(age.as_secs_f64())
                .bind(self.config.purge_batch.max(1))
                .execute(&self.pool)
                .await?
                .rows_affected();
            total += done;
            if done < self.config.purge_batch.max(1) as u64 {
                return Ok(total);
            }
        }
    }

    /// Releases a parked row: it is retried with a fresh attempt count,
    /// and the rows of its stream held behind it are pending again (the
    /// same as [`outbox::unpark`](super::unpark), which operators' tools
    /// call without a poller). Returns whether the row was parked.
    pub async fn unpark(&self, global_position: u64) -> Result<bool, OutboxError> {
        Ok(hold::release(&self.pool, &self.sql, global_position).await?.is_some())
    }

    /// Holds the rows of `streams` seen blocked by a parked row, after the
    /// claim's commit (a claim writes nothing until its acknowledgements
    /// are in); a failed hold only leaves the rows for the next claim.
    async fn hold(&self, streams: Vec<String>) {
        if streams.is_empty() {
            return;
        }
        if let Err(e) = hold::hold(&self.pool, &self.sql, streams).await {
            tracing::warn!(error = %e, "holding the rows of parked streams failed");
        }
    }

    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(super) fn sql(&self) -> &OutboxSql {
        &self.sql
    }
}
