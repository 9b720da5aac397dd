//! One claimed outbox row.

use chrono::{DateTime, Utc};
use es_core::{Metadata, RecordedEvent, StreamId};
use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::error::OutboxError;

/// An outbox row decoded into its event.
#[derive(Debug, Clone)]
pub(crate) struct OutboxRow {
    pub(crate) event: RecordedEvent,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) parked: bool,
}

impl OutboxRow {
    pub(crate) fn decode(row: &PgRow) -> Result<Self, OutboxError> {
        let position: i64 = row.try_get(0)?;
        let bad = |reason: String| OutboxError::BadRow { position, reason };
        let version: i64 = row.try_get(4)?;
        let schema_version: i32 = row.try_get(6)?;
        let metadata: serde_json::Value = row.try_get(8)?;
        let metadata: Metadata = serde_json::from_value(metadata).map_err(|e| bad(format!("metadata: {e}")))?;
        let parked_at: Option<DateTime<Utc>> = row.try_get(12)?;
        Ok(Self {
            event: RecordedEvent {
                global_position: u64::try_from(position).map_err(|_| bad("negative position".into()))?,
                event_id: row.try_get(1)?,
                stream_id: StreamId::from(row.try_get::<String, _>(2)?),
                stream_type: row.try_get(3)?,
                version: u64::try_from(version).map_err(|_| bad("negative version".into()))?,
                event_type: row.try_get(5)?,
                schema_version: u32::try_from(schema_version).map_err(|_| bad("negative schema version".into()))?,
                payload: row.try_get(7)?,
                metadata,
                recorded_at: row.try_get(9)?,
            },
            created_at: row.try_get(10)?,
            parked: parked_at.is_some(),
        })
    }
}

/// Keeps, per stream, the rows before the first parked one (a parked row
/// blocks the rest of its stream). Rows arrive ordered by stream, version.
pub(crate) fn cut_at_parked(rows: Vec<OutboxRow>) -> Vec<OutboxRow> {
    let mut blocked: Option<StreamId> = None;
    rows.into_iter()
        .filter(|r| {
            if blocked.as_ref() == Some(&r.event.stream_id) {
                return false;
            }
            if r.parked {
                blocked = Some(r.event.stream_id.clone());
                return false;
            }
            true
        })
        .collect()
}
