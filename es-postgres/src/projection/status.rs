//! [`projection_statuses`]: where each projection stands, for operators.

use chrono::{DateTime, Utc};
use es_core::{EventStore, StoreError};
use serde::Serialize;
use sqlx::Row;

use crate::column::bigint;
use crate::error::backend;
use crate::PostgresEventStore;

/// Lag in events is counted up to this many.
pub(crate) const LAG_COUNT_CAP: u64 = 1_000_000;

/// One projection's checkpoint, lag and health.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectionStatus {
    /// The projection (checkpoint key).
    pub name: String,
    /// Its checkpoint.
    pub position: u64,
    /// Events in the log after the checkpoint (of any type; counted up to
    /// 1,000,000).
    pub lag_events: u64,
    /// Age of the oldest event after the checkpoint (0 when caught up).
    pub lag_seconds: f64,
    /// Dead letters waiting for an operator.
    pub dead_letters: u64,
    /// Why its runner stopped, until the next page applies.
    pub last_error: Option<String>,
    /// When the checkpoint last moved.
    pub updated_at: DateTime<Utc>,
}

impl ProjectionStatus {
    /// `failed`, `dead-letters`, `catching-up` or `current`.
    pub fn state(&self) -> &'static str {
        if self.last_error.is_some() {
            "failed"
        } else if self.dead_letters > 0 {
            "dead-letters"
        } else if self.lag_events > 0 {
            "catching-up"
        } else {
            "current"
        }
    }
}

/// The status of every projection with a checkpoint in `store`'s schema,
/// by name.
pub async fn projection_statuses(store: &PostgresEventStore) -> Result<Vec<ProjectionStatus>, StoreError> {
    let s = store.schema();
    let head = store.head_position().await?;
    let rows = sqlx::query(&format!(
        "SELECT c.projection, c.position, c.last_error, c.updated_at, \
                (SELECT count(*) FROM {s}.dead_letters d WHERE d.projection = c.projection), \
                (SELECT count(*) FROM (SELECT 1 FROM {s}.events e WHERE e.global_position > c.position \
                   AND e.global_position <= $1 LIMIT $2) AS behind), \
                (SELECT e.recorded_at FROM {s}.events e WHERE e.global_position > c.position \
                   AND e.global_position <= $1 ORDER BY e.global_position LIMIT 1) \
         FROM {s}.checkpoints c ORDER BY c.projection"
    ))
    .bind(bigint(head))
    .bind(bigint(LAG_COUNT_CAP))
    .fetch_all(store.pool())
    .await
    .map_err(|e| backend("read projection statuses", e))?;
    let now = Utc::now();
    rows.iter()
        .map(|r| {
            let d = |e| backend("decode projection status", e);
            let oldest: Option<DateTime<Utc>> = r.try_get(6).map_err(d)?;
            Ok(ProjectionStatus {
                name: r.try_get(0).map_err(d)?,
                position: r.try_get::<i64, _>(1).map_err(d)?.max(0) as u64,
                last_error: r.try_get(2).map_err(d)?,
                updated_at: r.try_get(3).map_err(d)?,
                dead_letters: r.try_get::<i64, _>(4).map_err(d)?.max(0) as u64,
                lag_events: r.try_get::<i64, _>(5).map_err(d)?.max(0) as u64,
                lag_seconds: oldest.map_or(0.0, |t| (now - t).as_seconds_f64().max(0.0)),
            })
        })
        .collect()
}
