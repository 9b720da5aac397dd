//! Shared pieces of the projection engine tests: appending, reading the
//! log and checkpoints straight from the tables, polling.
#![allow(dead_code)]

use std::time::Duration;

use es_core::{EventStore, ExpectedVersion, NewEvent, StreamId};
use es_postgres::PostgresEventStore;
use serde_json::Value;

/// Appends one event of `event_type` to `stream` (stream type `tally`);
/// its global position.
pub(crate) async fn append(store: &PostgresEventStore, stream: &str, event_type: &str, payload: Value) -> u64 {
    append_typed(store, "tally", stream, NewEvent::new(event_type, payload)).await
}

/// Appends `event` to `stream` of `stream_type`; its global position.
pub(crate) async fn append_typed(store: &PostgresEventStore, stream_type: &str, stream: &str, event: NewEvent) -> u64 {
    store
        .append(stream_type, &StreamId::from(stream), ExpectedVersion::Any, vec![event])
        .await
        .expect("append")
        .positions[0]
}

/// The stored checkpoint of `projection` (read from the table, not through
/// the engine); 0 when there is none.
pub(crate) async fn checkpoint(store: &PostgresEventStore, projection: &str) -> u64 {
    let p: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT position FROM {}.checkpoints WHERE projection = $1",
        store.schema()
    ))
    .bind(projection)
    .fetch_optional(store.pool())
    .await
    .expect("checkpoint");
    p.unwrap_or(0).max(0) as u64
}

/// Events per stream in the log, by stream id.
pub(crate) async fn log_counts(store: &PostgresEventStore) -> Vec<(String, i64)> {
    sqlx::query_as(&format!(
        "SELECT stream_id, count(*) FROM {}.events GROUP BY stream_id ORDER BY stream_id",
        store.schema()
    ))
    .fetch_all(store.pool())
    .await
    .expect("log counts")
}

/// `SELECT stream_id, n FROM <table> ORDER BY stream_id`.
pub(crate) async fn table_counts(store: &PostgresEventStore, table: &str) -> Vec<(String, i64)> {
    sqlx::query_as(&format!(
        "SELECT stream_id, n::bigint FROM {}.{table} ORDER BY stream_id",
        store.schema()
    ))
    .fetch_all(store.pool())
    .await
    .expect("table counts")
}

/// Polls `check` every 20 ms until it holds, for at most `secs` seconds;
/// whether it did.
pub(crate) async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
