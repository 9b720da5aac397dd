//! Process managers on PostgreSQL: [`PgProcess`] runs es-core's
//! `ProcessDriver` in [`PgProjectionUnit`](crate::PgProjectionUnit), and
//! [`PostgresDeadlineStore`] keeps their deadlines.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use es_core::{
    BoxError, DeadlineStore, EventFilter, PageFailure, ProcessDriver, ProcessManager, ProjectionRunner, RecordedEvent,
    StoreError, StreamId,
};
use sqlx::{PgConnection, Row};
use tokio::sync::OnceCell;

use crate::error::backend;
use crate::{PgProjectionUnit, PostgresEventStore, TransactionalProjector};

/// A process driver as a [`TransactionalProjector`]: run in
/// [`PgProjectionUnit`], a page of the log is driven while the unit holds
/// the projection's turn (an advisory lock), so with several server instances
/// one drives a page and the others wait, then see the checkpoint moved
/// and skip it: each process is driven by one instance at a time. The
/// steps themselves go through the event store (their own transactions);
/// a crash before the checkpoint commits drives the page again, which is
/// safe (driving is idempotent).
///
/// ```no_run
/// # async fn demo<M: es_core::ProcessManager>(store: es_postgres::PostgresEventStore, driver: std::sync::Arc<es_core::ProcessDriver<M>>) {
/// let runner = es_postgres::PgProcess::runner(&store, driver);
/// runner.catch_up().await.unwrap();
/// # }
/// ```
pub struct PgProcess<M: ProcessManager> {
    driver: Arc<ProcessDriver<M>>,
}

impl<M: ProcessManager> PgProcess<M> {
    /// The projector of `driver`.
    pub fn new(driver: Arc<ProcessDriver<M>>) -> Self {
        Self { driver }
    }

    /// A runner of `driver` in a [`PgProjectionUnit`] over `store`.
    pub fn runner(store: &PostgresEventStore, driver: Arc<ProcessDriver<M>>) -> ProjectionRunner {
        PgProjectionUnit::new(store, Arc::new(Self::new(driver))).runner()
    }
}

#[async_trait]
impl<M: ProcessManager> TransactionalProjector for PgProcess<M> {
    fn name(&self) -> &str {
        self.driver.manager().name()
    }

    fn filter(&self) -> EventFilter {
        self.driver.manager().filter()
    }

    async fn apply(&self, _tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), BoxError> {
        self.driver
            .drive_page(std::slice::from_ref(event))
            .await
            .map_err(|f| f.error)
    }

    async fn apply_page(&self, _tx: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), PageFailure> {
        self.driver.drive_page(events).await
    }

    async fn reset(&self, _tx: &mut PgConnection) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Process deadlines in `<schema>.process_deadlines` (created on first
/// use): one row per waiting process, indexed by time.
#[derive(Debug, Clone)]
pub struct PostgresDeadlineStore {
    store: PostgresEventStore,
    setup: Arc<OnceCell<()>>,
    set_sql: String,
    clear_sql: String,
    due_sql: String,
}

impl PostgresDeadlineStore {
    /// The deadline store in `store`'s schema.
    pub fn new(store: &PostgresEventStore) -> Self {
        let s = store.schema();
        Self {
            store: store.clone(),
            setup: Arc::new(OnceCell::new()),
            set_sql: format!(
                "INSERT INTO {s}.process_deadlines (manager, process_id, due_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (manager, process_id) DO UPDATE SET due_at = EXCLUDED.due_at"
            ),
            clear_sql: format!("DELETE FROM {s}.process_deadlines WHERE manager = $1 AND process_id = $2"),
            due_sql: format!(
                "SELECT process_id, due_at FROM {s}.process_deadlines WHERE manager = $1 AND due_at <= $2 \
                 ORDER BY due_at LIMIT $3"
            ),
        }
    }

    async fn setup(&self) -> Result<(), StoreError> {
        self.setup
            .get_or_try_init(|| async {
                let s = self.store.schema();
                let mut tx = self.store.pool().begin().await.map_err(|e| backend("begin", e))?;
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(format!("es-process-deadlines-{s}"))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| backend("lock deadline setup", e))?;
                sqlx::query(&format!(
                    "CREATE TABLE IF NOT EXISTS {s}.process_deadlines (manager TEXT NOT NULL, process_id TEXT NOT NULL, \
                     due_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (manager, process_id))"
                ))
                .execute(&mut *tx)
                .await
                .map_err(|e| backend("create process_deadlines", e))?;
                sqlx::query(&format!(
                    "CREATE INDEX IF NOT EXISTS process_deadlines_due_idx ON {s}.process_deadlines (manager, due_at)"
                ))
                .execute(&mut *tx)
                .await
                .map_err(|e| backend("index process_deadlines", e))?;
                tx.commit().await.map_err(|e| backend("commit deadline setup", e))
            })
            .await
            .copied()
    }
}

#[async_trait]
impl DeadlineStore for PostgresDeadlineStore {
    #[tracing::instrument(level = "debug", name = "es.pg.deadline.set", skip(self))]
    async fn set(&self, manager: &str, process_id: &StreamId, at: Option<DateTime<Utc>>) -> Result<(), StoreError> {
        self.setup().await?;
        let q = match at {
            Some(at) => sqlx::query(&self.set_sql)
                .bind(manager)
                .bind(process_id.as_str())
                .bind(at),
            None => sqlx::query(&self.clear_sql).bind(manager).bind(process_id.as_str()),
        };
        q.execute(self.store.pool())
            .await
            .map_err(|e| backend("set process deadline", e))?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", name = "es.pg.deadline.due", skip(self))]
    async fn due(
        &self,
        manager: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(StreamId, DateTime<Utc>)>, StoreError> {
        self.setup().await?;
        let rows = sqlx::query(&self.due_sql)
            .bind(manager)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(self.store.pool())
            .await
            .map_err(|e| backend("read due deadlines", e))?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get(0).map_err(|e| backend("decode deadline", e))?;
                let at: DateTime<Utc> = r.try_get(1).map_err(|e| backend("decode deadline", e))?;
                Ok((StreamId::from(id), at))
            })
            .collect()
    }
}
