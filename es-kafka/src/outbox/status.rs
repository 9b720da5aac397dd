//! The outbox status query: what is pending, what is parked and why.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::sql::OutboxSql;
use super::OutboxPoller;
use crate::error::OutboxError;
use crate::telemetry;

/// `(position, stream, version, type, attempts, error, parked_at)`.
type ParkedTuple = (i64, String, i64, String, i32, String, DateTime<Utc>);

/// A row that failed too often and waits for an operator.
#[derive(Debug, Clone, PartialEq)]
pub struct ParkedRow {
    /// Global position of the event.
    pub global_position: u64,
    /// Its stream (blocked behind this row).
    pub stream_id: String,
    /// Its stream version.
    pub version: u64,
    /// Its event type.
    pub event_type: String,
    /// Failed attempts.
    pub attempts: i32,
    /// The last error.
    pub last_error: String,
    /// When it was parked.
    pub parked_at: DateTime<Utc>,
}

/// A snapshot of the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxStatus {
    /// Unpublished rows that are not parked.
    pub pending: u64,
    /// Parked rows.
    pub parked: u64,
    /// Of the pending rows, those held behind a parked row of their stream
    /// (published once it is released with
    /// [`OutboxPoller::unpark`](crate::OutboxPoller::unpark)). Rows appended
    /// behind a parked row count here once a poller has seen them.
    pub held: u64,
    /// Age of the oldest pending row (how far behind publishing is).
    pub oldest_pending_age: Option<Duration>,
    /// The parked rows, oldest first (at most 100).
    pub parked_rows: Vec<ParkedRow>,
}

impl OutboxPoller {
    /// Counts pending and parked rows, lists parked rows with their errors,
    /// and sets the `es_kafka_outbox_pending`, `_parked_rows` and
    /// `_oldest_pending_seconds` gauges.
    pub async fn status(&self) -> Result<OutboxStatus, OutboxError> {
        let status = read(self.pool(), self.sql()).await?;
        ::metrics::gauge!(telemetry::OUTBOX_PENDING).set(status.pending as f64);
        ::metrics::gauge!(telemetry::OUTBOX_PARKED_ROWS).set(status.parked as f64);
        ::metrics::gauge!(telemetry::OUTBOX_OLDEST_AGE)
            .set(status.oldest_pending_age.unwrap_or_default().as_secs_f64());
        Ok(status)
    }
}

/// The status of the outbox in `schema`, read without a poller or a Kafka
/// client (operators' tools); the same as [`OutboxPoller::status`] without
/// setting its gauges.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool) -> Result<(), es_kafka::OutboxError> {
/// let status = es_kafka::outbox::outbox_status(&pool, "bank").await?;
/// println!("{} pending, {} parked", status.pending, status.parked);
/// # Ok(()) }
/// ```
pub async fn outbox_status(pool: &PgPool, schema: &str) -> Result<OutboxStatus, OutboxError> {
    let schema = crate::ident::check(schema)?;
    read(pool, &OutboxSql::new(schema)).await
}

async fn read(pool: &PgPool, sql: &OutboxSql) -> Result<OutboxStatus, OutboxError> {
    let (pending, parked, held, oldest): (i64, i64, i64, Option<DateTime<Utc>>) =
        sqlx::query_as(&sql.counts).fetch_one(pool).await?;
    let rows: Vec<ParkedTuple> = sqlx::query_as(&sql.parked).bind(100_i64).fetch_all(pool).await?;
    Ok(OutboxStatus {
        pending: pending.max(0) as u64,
        parked: parked.max(0) as u64,
        held: held.max(0) as u64,
        oldest_pending_age: oldest.map(|t| (Utc::now() - t).to_std().unwrap_or_default()),
        parked_rows: rows
            .into_iter()
            .map(
                |(p, stream_id, version, event_type, attempts, last_error, parked_at)| ParkedRow {
                    global_position: p.max(0) as u64,
                    stream_id,
                    version: version.max(0) as u64,
                    event_type,
                    attempts,
                    last_error,
                    parked_at,
                },
            )
            .collect(),
    })
}
