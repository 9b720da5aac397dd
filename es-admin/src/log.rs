//! Questions about the global log that es-core's `EventStore` does not
//! answer: how many events lie in a range (a progress bar's length; lag of
//! a projection that never ran) and where the last N events begin.
//!
//! Positions are sparse (`transaction id << 20 + index`), so counts are
//! counted, never computed from positions.

use es_core::EventFilter;
use es_postgres::PostgresEventStore;

use crate::AdminError;

/// Events after `after` up to `until` that pass `filter`, counted up to
/// `cap` (uncapped: `None`).
#[tracing::instrument(name = "es.admin.count_events", skip(store, filter))]
pub(crate) async fn count_events(
    store: &PostgresEventStore,
    after: u64,
    until: u64,
    filter: &EventFilter,
    cap: Option<u64>,
) -> Result<u64, AdminError> {
    if until <= after {
        return Ok(0);
    }
    let n: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM (SELECT 1 FROM {}.events WHERE global_position > $1 AND global_position <= $2 \
           AND (cardinality($3::text[]) = 0 OR event_type = ANY($3)) \
           AND (cardinality($4::text[]) = 0 OR stream_type = ANY($4)) LIMIT $5) AS x",
        store.schema()
    ))
    .bind(after as i64)
    .bind(until as i64)
    .bind(&filter.event_types)
    .bind(&filter.stream_types)
    .bind(cap.map_or(i64::MAX, |c| c.min(i64::MAX as u64) as i64))
    .fetch_one(store.pool())
    .await
    .map_err(AdminError::database("count events"))?;
    Ok(n.max(0) as u64)
}

/// The position after which the last `n` events up to `head` begin (0 when
/// the log holds no more than `n`).
#[tracing::instrument(name = "es.admin.tail_start", skip(store))]
pub(crate) async fn tail_start(store: &PostgresEventStore, head: u64, n: usize) -> Result<u64, AdminError> {
    let before: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT global_position FROM {}.events WHERE global_position <= $1 \
         ORDER BY global_position DESC OFFSET $2 LIMIT 1",
        store.schema()
    ))
    .bind(head as i64)
    .bind(n.min(i64::MAX as usize) as i64)
    .fetch_optional(store.pool())
    .await
    .map_err(AdminError::database("find the tail of the log"))?;
    Ok(before.map_or(0, |p| p.max(0) as u64))
}

/// Whether `relation` (schema-qualified) exists.
pub(crate) async fn relation_exists(store: &PostgresEventStore, relation: &str) -> Result<bool, AdminError> {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(relation)
        .fetch_one(store.pool())
        .await
        .map_err(AdminError::database("look up the event store tables"))
}
