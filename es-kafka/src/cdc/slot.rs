//! The replication slot: create, inspect, peek, advance, drop.

use sqlx::{PgPool, Row};

use crate::error::CdcError;

/// One row of a peek: `(lsn as text, data)`.
pub(crate) type PeekRow = (String, String);

/// The state of the relay's slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStatus {
    /// Whether the slot exists.
    pub exists: bool,
    /// Its `confirmed_flush_lsn` (everything before is published).
    pub confirmed_flush_lsn: Option<String>,
    /// WAL bytes the slot holds back (grows while the relay is down).
    pub retained_bytes: Option<i64>,
}

/// Creates the slot with `test_decoding` unless it exists; returns whether
/// it was created. Creating waits for running write transactions to end.
pub(crate) async fn ensure(pool: &PgPool, slot: &str) -> Result<bool, CdcError> {
    let exists: Option<String> = sqlx::query_scalar(
        "SELECT plugin::text FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
    )
    .bind(slot)
    .fetch_optional(pool)
    .await?;
    if exists.is_some() {
        return Ok(false);
    }
    sqlx::query("SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'test_decoding')")
        .bind(slot)
        .fetch_one(pool)
        .await?;
    Ok(true)
}

/// Drops the slot if it exists (releases the WAL it retains).
pub(crate) async fn drop(pool: &PgPool, slot: &str) -> Result<(), CdcError> {
    sqlx::query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1")
        .bind(slot)
        .fetch_all(pool)
        .await?;
    Ok(())
}

/// Decodes (without consuming) up to `max_changes` changes, whole
/// transactions only, with ISO timestamps in UTC.
pub(crate) async fn peek(pool: &PgPool, slot: &str, max_changes: i32) -> Result<Vec<PeekRow>, CdcError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL TimeZone = 'UTC'").execute(&mut *tx).await?;
    sqlx::query("SET LOCAL DateStyle = 'ISO, YMD'")
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query(
        "SELECT lsn::text, data FROM pg_logical_slot_peek_changes($1, NULL, $2, \
           'include-xids', '0', 'include-timestamp', '1', 'skip-empty-xacts', '1')",
    )
    .bind(slot)
    .bind(max_changes)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(CdcError::from)
}

/// Moves the slot's confirmed position to `lsn`: changes of transactions
/// committed before it are never decoded again.
pub(crate) async fn advance(pool: &PgPool, slot: &str, lsn: &str) -> Result<(), CdcError> {
    sqlx::query("SELECT end_lsn::text FROM pg_replication_slot_advance($1, $2::pg_lsn)")
        .bind(slot)
        .bind(lsn)
        .fetch_one(pool)
        .await?;
    Ok(())
}

/// The slot's position and retained WAL.
pub(crate) async fn status(pool: &PgPool, slot: &str) -> Result<SlotStatus, CdcError> {
    let row: Option<(Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT confirmed_flush_lsn::text, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint \
         FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some((lsn, bytes)) => SlotStatus {
            exists: true,
            confirmed_flush_lsn: lsn,
            retained_bytes: bytes,
        },
        None => SlotStatus {
            exists: false,
            confirmed_flush_lsn: None,
            retained_bytes: None,
        },
    })
}
