//! [`PostgresCheckpointStore`]: projection checkpoints and dead letters.

use async_trait::async_trait;
use es_core::{CheckpointStore, DeadLetter, StoreError, StreamId};
use sqlx::postgres::PgPool;
use sqlx::Row;

use crate::column::{bigint, unsigned};
use crate::error::backend;
use crate::PostgresEventStore;

/// Checkpoints and dead letters in the store's schema.
#[derive(Debug, Clone)]
pub struct PostgresCheckpointStore {
    pool: PgPool,
    schema: String,
}

impl PostgresCheckpointStore {
    /// The checkpoint store of an event store's schema.
    pub fn new(store: &PostgresEventStore) -> Self {
        Self {
            pool: store.pool().clone(),
            schema: store.schema().to_owned(),
        }
    }

    /// The statement that records a checkpoint (binds: projection, position).
    fn save_sql(schema: &str) -> String {
        format!(
            "INSERT INTO {schema}.checkpoints (projection, position, updated_at) VALUES ($1, $2, now()) \
             ON CONFLICT (projection) DO UPDATE SET position = EXCLUDED.position, updated_at = now()"
        )
    }

    /// Records a dead letter through `executor` (the pool, or a runner's
    /// transaction).
    pub(crate) async fn insert_dead_letter<'e, E>(executor: E, sql: &str, l: &DeadLetter) -> Result<(), sqlx::Error>
    where
        E: sqlx::Executor<'e, Database = sqlx::Postgres>,
    {
        sqlx::query(sql)
            .bind(&l.projection)
            .bind(bigint(l.global_position))
            .bind(l.stream_id.as_str())
            .bind(bigint(l.version))
            .bind(l.event_id)
            .bind(&l.event_type)
            .bind(&l.error)
            .bind(l.attempts as i32)
            .bind(l.failed_at)
            .execute(executor)
            .await
            .map(|_| ())
    }

    /// The statement that records a dead letter.
    pub(crate) fn dead_letter_sql(schema: &str) -> String {
        format!(
            "INSERT INTO {schema}.dead_letters (projection, global_position, stream_id, version, event_id, event_type, \
             error, attempts, failed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (projection, global_position) DO UPDATE SET error = EXCLUDED.error, \
             attempts = EXCLUDED.attempts, failed_at = EXCLUDED.failed_at"
        )
    }
}

#[async_trait]
impl CheckpointStore for PostgresCheckpointStore {
    async fn load(&self, projection: &str) -> Result<u64, StoreError> {
        let v: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT position FROM {}.checkpoints WHERE projection = $1",
            self.schema
        ))
        .bind(projection)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| backend("load checkpoint", e))?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }

    async fn save(&self, projection: &str, position: u64) -> Result<(), StoreError> {
        sqlx::query(&Self::save_sql(&self.schema))
            .bind(projection)
            .bind(bigint(position))
            .execute(&self.pool)
            .await
            .map_err(|e| backend("save checkpoint", e))?;
        Ok(())
    }

    async fn dead_letter(&self, l: DeadLetter) -> Result<(), StoreError> {
        Self::insert_dead_letter(&self.pool, &Self::dead_letter_sql(&self.schema), &l)
            .await
            .map_err(|e| backend("record dead letter", e))
    }

    async fn remove_dead_letter(&self, projection: &str, global_position: u64) -> Result<bool, StoreError> {
        let removed = sqlx::query(&format!(
            "DELETE FROM {}.dead_letters WHERE projection = $1 AND global_position = $2",
            self.schema
        ))
        .bind(projection)
        .bind(bigint(global_position))
        .execute(&self.pool)
        .await
        .map_err(|e| backend("remove dead letter", e))?
        .rows_affected();
        Ok(removed > 0)
    }

    async fn dead_letters(&self, projection: &str) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT projection, global_position, stream_id, version, event_id, event_type, error, attempts, failed_at \
             FROM {}.dead_letters WHERE projection = $1 ORDER BY global_position",
            self.schema
        ))
        .bind(projection)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| backend("read dead letters", e))?;
        rows.iter()
            .map(|r| {
                let d = |e: sqlx::Error| backend("decode dead letter", e);
                let negative = |e| StoreError::backend("decode dead letter", e);
                Ok(DeadLetter {
                    projection: r.try_get(0).map_err(d)?,
                    global_position: unsigned(r.try_get::<i64, _>(1).map_err(d)?).map_err(negative)?,
                    stream_id: StreamId::from(r.try_get::<String, _>(2).map_err(d)?),
                    version: unsigned(r.try_get::<i64, _>(3).map_err(d)?).map_err(negative)?,
                    event_id: r.try_get(4).map_err(d)?,
                    event_type: r.try_get(5).map_err(d)?,
                    error: r.try_get(6).map_err(d)?,
                    attempts: r.try_get::<i32, _>(7).map_err(d)?.max(0) as u32,
                    failed_at: r.try_get(8).map_err(d)?,
                })
            })
            .collect()
    }
}
