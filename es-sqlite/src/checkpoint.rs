//! [`SqliteCheckpointStore`]: projection checkpoints and dead letters.

use std::sync::Arc;

use async_trait::async_trait;
use es_core::{CheckpointStore, DeadLetter, StoreError, StreamId};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::Row;

use crate::error::{backend, retry_transient};
use crate::gate::WriteGate;
use crate::sql::{self, signed, unsigned};
use crate::{SqliteConfig, SqliteEventStore};

/// Records a checkpoint (binds: projection, position, now).
pub(crate) const SAVE: &str = "INSERT INTO checkpoints (projection, position, updated_at) VALUES (?1, ?2, ?3) \
     ON CONFLICT (projection) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at";

const LOAD: &str = "SELECT position FROM checkpoints WHERE projection = ?1";

/// Records a dead letter, or updates the one of the same event.
pub(crate) const DEAD_LETTER: &str = "INSERT INTO dead_letters (projection, global_position, stream_id, version, \
     event_id, event_type, error, attempts, failed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
     ON CONFLICT (projection, global_position) DO UPDATE SET error = excluded.error, \
     attempts = excluded.attempts, failed_at = excluded.failed_at";

pub(crate) const REMOVE_DEAD_LETTER: &str = "DELETE FROM dead_letters WHERE projection = ?1 AND global_position = ?2";

const DEAD_LETTERS: &str = "SELECT projection, global_position, stream_id, version, event_id, event_type, error, \
     attempts, failed_at FROM dead_letters WHERE projection = ?1 ORDER BY global_position";

/// Checkpoints and dead letters in the store's database, for es-core's
/// `ProjectorUnit` (projections whose read model lives elsewhere).
/// Projections whose read model lives in the same database use
/// [`SqliteProjectionUnit`](crate::SqliteProjectionUnit), which keeps the
/// checkpoint in the same transaction as the rows.
#[derive(Debug, Clone)]
pub struct SqliteCheckpointStore {
    pool: SqlitePool,
    config: SqliteConfig,
    gate: Arc<WriteGate>,
}

impl SqliteCheckpointStore {
    /// The checkpoint store of an event store's database.
    pub fn new(store: &SqliteEventStore) -> Self {
        Self {
            pool: store.pool().clone(),
            config: store.config().clone(),
            gate: Arc::clone(&store.inner.gate),
        }
    }

    /// Records a dead letter through `executor` (the pool, or a unit's
    /// transaction).
    pub(crate) async fn insert_dead_letter<'e, E>(executor: E, l: &DeadLetter) -> Result<(), sqlx::Error>
    where
        E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
    {
        sqlx::query(DEAD_LETTER)
            .bind(&l.projection)
            .bind(signed(l.global_position))
            .bind(l.stream_id.as_str())
            .bind(signed(l.version))
            .bind(l.event_id)
            .bind(&l.event_type)
            .bind(&l.error)
            .bind(i64::from(l.attempts))
            .bind(sql::micros(l.failed_at))
            .execute(executor)
            .await
            .map(|_| ())
    }
}

fn decode_dead_letter(r: &SqliteRow) -> Result<DeadLetter, StoreError> {
    let d = |e: sqlx::Error| backend("decode dead letter", e);
    let failed_at: i64 = r.try_get(8).map_err(d)?;
    let stream_id = StreamId::from(r.try_get::<String, _>(2).map_err(d)?);
    let version = unsigned(r.try_get(3).map_err(d)?);
    Ok(DeadLetter {
        projection: r.try_get(0).map_err(d)?,
        global_position: unsigned(r.try_get(1).map_err(d)?),
        event_id: r.try_get(4).map_err(d)?,
        event_type: r.try_get(5).map_err(d)?,
        error: r.try_get(6).map_err(d)?,
        attempts: u32::try_from(r.try_get::<i64, _>(7).map_err(d)?.max(0)).unwrap_or(u32::MAX),
        failed_at: sql::from_micros(failed_at).ok_or_else(|| StoreError::Corrupt {
            stream_id: stream_id.clone(),
            version,
            reason: format!("dead letter failed_at {failed_at}"),
        })?,
        stream_id,
        version,
    })
}

#[async_trait]
impl CheckpointStore for SqliteCheckpointStore {
    #[tracing::instrument(level = "debug", name = "es.sqlite.checkpoint.load", skip(self))]
    async fn load(&self, projection: &str) -> Result<u64, StoreError> {
        let v: Option<i64> = retry_transient(&self.config.transient_retry, "load checkpoint", || {
            sqlx::query_scalar(LOAD).bind(projection).fetch_optional(&self.pool)
        })
        .await?;
        Ok(unsigned(v.unwrap_or(0)))
    }

    #[tracing::instrument(level = "debug", name = "es.sqlite.checkpoint.save", skip(self))]
    async fn save(&self, projection: &str, position: u64) -> Result<(), StoreError> {
        let now = sql::micros(chrono::Utc::now());
        let _turn = self.gate.enter().await;
        retry_transient(&self.config.transient_retry, "save checkpoint", || {
            sqlx::query(SAVE)
                .bind(projection)
                .bind(signed(position))
                .bind(now)
                .execute(&self.pool)
        })
        .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", name = "es.sqlite.dead_letter", skip_all, fields(projection = %l.projection, position = l.global_position))]
    async fn dead_letter(&self, l: DeadLetter) -> Result<(), StoreError> {
        let _turn = self.gate.enter().await;
        retry_transient(&self.config.transient_retry, "record dead letter", || {
            Self::insert_dead_letter(&self.pool, &l)
        })
        .await
    }

    #[tracing::instrument(level = "debug", name = "es.sqlite.dead_letter.remove", skip(self))]
    async fn remove_dead_letter(&self, projection: &str, global_position: u64) -> Result<bool, StoreError> {
        let _turn = self.gate.enter().await;
        let removed = retry_transient(&self.config.transient_retry, "remove dead letter", || {
            sqlx::query(REMOVE_DEAD_LETTER)
                .bind(projection)
                .bind(signed(global_position))
                .execute(&self.pool)
        })
        .await?
        .rows_affected();
        Ok(removed > 0)
    }

    #[tracing::instrument(level = "debug", name = "es.sqlite.dead_letters", skip(self))]
    async fn dead_letters(&self, projection: &str) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = retry_transient(&self.config.transient_retry, "read dead letters", || {
            sqlx::query(DEAD_LETTERS).bind(projection).fetch_all(&self.pool)
        })
        .await?;
        rows.iter().map(decode_dead_letter).collect()
    }
}
