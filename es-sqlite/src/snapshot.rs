//! [`SqliteSnapshotStore`]: the newest snapshot of each stream.

use std::sync::Arc;

use async_trait::async_trait;
use es_core::{Snapshot, SnapshotStore, StoreError, StreamId};
use sqlx::sqlite::SqlitePool;
use sqlx::Row;

use crate::error::{backend, retry_transient};
use crate::gate::WriteGate;
use crate::sql::{self, signed, unsigned};
use crate::{SqliteConfig, SqliteEventStore};

const UPSERT: &str = "INSERT INTO snapshots (stream_id, stream_type, version, schema_version, state, taken_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
     ON CONFLICT (stream_id) DO UPDATE SET stream_type = excluded.stream_type, version = excluded.version, \
     schema_version = excluded.schema_version, state = excluded.state, taken_at = excluded.taken_at \
     WHERE snapshots.version <= excluded.version";

const SELECT: &str =
    "SELECT stream_id, stream_type, version, schema_version, state, taken_at FROM snapshots WHERE stream_id = ?1";

/// Snapshots in the store's database (`snapshots` table, one row per
/// stream). `save` never moves a stream's snapshot to an older version.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use es_core::{SnapshotPolicy, SnapshotStore};
/// use es_sqlite::{SqliteConfig, SqliteEventStore, SqliteSnapshotStore};
///
/// let store = SqliteEventStore::connect("sqlite::memory:", SqliteConfig::default()).await.unwrap();
/// let snapshots: Arc<dyn SnapshotStore> = Arc::new(SqliteSnapshotStore::new(&store));
/// // e.g. Repository::builder(..).snapshots(snapshots, SnapshotPolicy::EveryNEvents(100))
/// assert!(snapshots.load(&"acc-1".into()).await.unwrap().is_none());
/// # let _ = SnapshotPolicy::EveryNEvents(100);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct SqliteSnapshotStore {
    pool: SqlitePool,
    config: SqliteConfig,
    gate: Arc<WriteGate>,
}

impl SqliteSnapshotStore {
    /// The snapshot store of an event store's database.
    pub fn new(store: &SqliteEventStore) -> Self {
        Self {
            pool: store.pool().clone(),
            config: store.config().clone(),
            gate: Arc::clone(&store.inner.gate),
        }
    }
}

#[async_trait]
impl SnapshotStore for SqliteSnapshotStore {
    #[tracing::instrument(level = "debug", name = "es.sqlite.snapshot.save", skip_all, fields(stream_id = %snapshot.stream_id, version = snapshot.version))]
    async fn save(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let state = snapshot.state.to_string();
        let _turn = self.gate.enter().await;
        retry_transient(&self.config.transient_retry, "save snapshot", || {
            sqlx::query(UPSERT)
                .bind(snapshot.stream_id.as_str())
                .bind(&snapshot.stream_type)
                .bind(signed(snapshot.version))
                .bind(i64::from(snapshot.schema_version))
                .bind(&state)
                .bind(sql::micros(snapshot.taken_at))
                .execute(&self.pool)
        })
        .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", name = "es.sqlite.snapshot.load", skip_all, fields(stream_id = %stream_id))]
    async fn load(&self, stream_id: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let row = retry_transient(&self.config.transient_retry, "load snapshot", || {
            sqlx::query(SELECT).bind(stream_id.as_str()).fetch_optional(&self.pool)
        })
        .await?;
        let Some(row) = row else { return Ok(None) };
        let decode = |e: sqlx::Error| backend("decode snapshot", e);
        let version = unsigned(row.try_get(2).map_err(decode)?);
        let corrupt = |reason: String| StoreError::Corrupt {
            stream_id: stream_id.clone(),
            version,
            reason,
        };
        let state = serde_json::from_str(row.try_get::<&str, _>(4).map_err(decode)?)
            .map_err(|e| corrupt(format!("snapshot state: {e}")))?;
        let taken_at: i64 = row.try_get(5).map_err(decode)?;
        Ok(Some(Snapshot {
            stream_id: StreamId::from(row.try_get::<String, _>(0).map_err(decode)?),
            stream_type: row.try_get(1).map_err(decode)?,
            version,
            schema_version: u32::try_from(row.try_get::<i64, _>(3).map_err(decode)?.max(0)).unwrap_or(u32::MAX),
            state,
            taken_at: sql::from_micros(taken_at).ok_or_else(|| corrupt(format!("snapshot taken_at {taken_at}")))?,
        }))
    }
}
