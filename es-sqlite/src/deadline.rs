//! [`SqliteDeadlineStore`]: process deadlines in the store's file.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use es_core::{DeadlineStore, StoreError, StreamId};
use sqlx::sqlite::SqlitePool;
use sqlx::Row;
use tokio::sync::OnceCell;

use crate::error::{backend, retry_transient};
use crate::gate::WriteGate;
use crate::sql;
use crate::{SqliteConfig, SqliteEventStore};

const CREATE: &str = "CREATE TABLE IF NOT EXISTS process_deadlines (manager TEXT NOT NULL, process_id TEXT NOT NULL, \
     due_at INTEGER NOT NULL, PRIMARY KEY (manager, process_id)); \
     CREATE INDEX IF NOT EXISTS process_deadlines_due_idx ON process_deadlines (manager, due_at)";
const SET: &str = "INSERT INTO process_deadlines (manager, process_id, due_at) VALUES (?1, ?2, ?3) \
     ON CONFLICT (manager, process_id) DO UPDATE SET due_at = excluded.due_at";
const CLEAR: &str = "DELETE FROM process_deadlines WHERE manager = ?1 AND process_id = ?2";
const DUE: &str = "SELECT process_id, due_at FROM process_deadlines WHERE manager = ?1 AND due_at <= ?2 \
     ORDER BY due_at LIMIT ?3";

/// es-core's `DeadlineStore` in the table `process_deadlines` of the
/// store's file (created on first use; times in microseconds since the
/// epoch), written through the store's write gate.
#[derive(Debug, Clone)]
pub struct SqliteDeadlineStore {
    pool: SqlitePool,
    config: SqliteConfig,
    gate: Arc<WriteGate>,
    setup: Arc<OnceCell<()>>,
}

impl SqliteDeadlineStore {
    /// The deadline store of an event store's database.
    pub fn new(store: &SqliteEventStore) -> Self {
        Self {
            pool: store.pool().clone(),
            config: store.config().clone(),
            gate: Arc::clone(&store.inner.gate),
            setup: Arc::new(OnceCell::new()),
        }
    }

    async fn setup(&self) -> Result<(), StoreError> {
        self.setup
            .get_or_try_init(|| async {
                let _turn = self.gate.enter().await;
                retry_transient(&self.config.transient_retry, "create process_deadlines", || {
                    sqlx::raw_sql(CREATE).execute(&self.pool)
                })
                .await
                .map(|_| ())
            })
            .await
            .copied()
    }
}

#[async_trait]
impl DeadlineStore for SqliteDeadlineStore {
    #[tracing::instrument(level = "debug", name = "es.sqlite.deadline.set", skip(self))]
    async fn set(&self, manager: &str, process_id: &StreamId, at: Option<DateTime<Utc>>) -> Result<(), StoreError> {
        self.setup().await?;
        let _turn = self.gate.enter().await;
        retry_transient(&self.config.transient_retry, "set process deadline", || {
            let q = match at {
                Some(at) => sqlx::query(SET)
                    .bind(manager)
                    .bind(process_id.as_str())
                    .bind(sql::micros(at)),
                None => sqlx::query(CLEAR).bind(manager).bind(process_id.as_str()),
            };
            q.execute(&self.pool)
        })
        .await
        .map(|_| ())
    }

    #[tracing::instrument(level = "debug", name = "es.sqlite.deadline.due", skip(self))]
    async fn due(
        &self,
        manager: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(StreamId, DateTime<Utc>)>, StoreError> {
        self.setup().await?;
        let rows = retry_transient(&self.config.transient_retry, "read due deadlines", || {
            sqlx::query(DUE)
                .bind(manager)
                .bind(sql::micros(now))
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
        })
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get(0).map_err(|e| backend("decode deadline", e))?;
                let us: i64 = r.try_get(1).map_err(|e| backend("decode deadline", e))?;
                let at =
                    sql::from_micros(us).ok_or_else(|| StoreError::backend("decode deadline", "time out of range"))?;
                Ok((StreamId::from(id), at))
            })
            .collect()
    }
}
