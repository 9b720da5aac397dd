//! [`SqliteProjectionUnit`]: a page of events, the checkpoint and dead
//! letters in one transaction.

use std::sync::Arc;

use async_trait::async_trait;
use es_core::{
    Advance, DeadLetter, EventFilter, ProjectionRunner, ProjectionUnit, RecordedEvent, StoreError, UnitError,
};
use sqlx::{Sqlite, Transaction};
use tokio::sync::OnceCell;

use super::SqliteProjector;
use crate::checkpoint::{SqliteCheckpointStore, REMOVE_DEAD_LETTER};
use crate::error::{backend, retry_transient};
use crate::gate::Turn;
use crate::sql::{self, signed, unsigned};
use crate::SqliteEventStore;

/// The dead letters of one projection after a position.
const DROP_LETTERS_AFTER: &str = "DELETE FROM dead_letters WHERE projection = ?1 AND global_position > ?2";

/// Creates the checkpoint row if missing and reads it.
const LOCK: &str = "INSERT INTO checkpoints (projection, position, updated_at) VALUES (?1, 0, ?2) \
     ON CONFLICT (projection) DO UPDATE SET projection = excluded.projection RETURNING position";

const ADVANCE: &str = "UPDATE checkpoints SET position = ?2, updated_at = ?3, last_error = NULL, failed_at = NULL \
     WHERE projection = ?1";

const FAIL: &str = "INSERT INTO checkpoints (projection, position, updated_at, last_error, failed_at) \
     VALUES (?1, 0, ?3, ?2, ?3) \
     ON CONFLICT (projection) DO UPDATE SET last_error = excluded.last_error, failed_at = excluded.failed_at";

/// es-core's `ProjectionUnit` for a [`SqliteProjector`]: the rows a page
/// writes, the checkpoint move and dead letters commit in one
/// transaction.
///
/// Each transaction starts with `BEGIN IMMEDIATE`, which takes SQLite's
/// write lock of the database, and then compares the stored checkpoint
/// with the position the runner read from; if another runner (another
/// instance on the same file) moved it, nothing is applied and the runner
/// continues from there. So any number of runners may run the same
/// projection: every event is applied exactly once. The write lock also
/// means a page's transaction and the event writer's take turns: keep
/// pages short (`ProjectionConfig::batch_size`) where appends must not
/// wait.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use async_trait::async_trait;
/// use es_core::{BoxError, EventStore, ExpectedVersion, NewEvent, RecordedEvent};
/// use es_sqlite::{SqliteConfig, SqliteEventStore, SqliteProjectionUnit, SqliteProjector};
/// use sqlx::SqliteConnection;
///
/// struct Counts;
/// #[async_trait]
/// impl SqliteProjector for Counts {
///     fn name(&self) -> &str { "counts" }
///     async fn setup(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
///         sqlx::query("CREATE TABLE IF NOT EXISTS counts (stream_id TEXT PRIMARY KEY, n INTEGER NOT NULL)")
///             .execute(tx).await?;
///         Ok(())
///     }
///     async fn apply(&self, tx: &mut SqliteConnection, e: &RecordedEvent) -> Result<(), BoxError> {
///         sqlx::query("INSERT INTO counts VALUES (?1, 1) ON CONFLICT (stream_id) DO UPDATE SET n = n + 1")
///             .bind(e.stream_id.as_str()).execute(tx).await?;
///         Ok(())
///     }
///     async fn reset(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
///         sqlx::query("DELETE FROM counts").execute(tx).await?;
///         Ok(())
///     }
/// }
///
/// let store = SqliteEventStore::connect("sqlite::memory:", SqliteConfig::default()).await.unwrap();
/// for _ in 0..3 {
///     store.append("cart", &"cart-1".into(), ExpectedVersion::Any,
///                  vec![NewEvent::new("ItemAdded", serde_json::json!({}))]).await.unwrap();
/// }
/// let runner = SqliteProjectionUnit::new(&store, Arc::new(Counts)).runner();
/// let report = runner.catch_up().await.unwrap();
/// assert_eq!(report.applied, 3);
/// let n: i64 = sqlx::query_scalar("SELECT n FROM counts").fetch_one(store.pool()).await.unwrap();
/// assert_eq!(n, 3);
/// # });
/// ```
pub struct SqliteProjectionUnit<P: ?Sized> {
    store: SqliteEventStore,
    projector: Arc<P>,
    setup: OnceCell<()>,
}

fn now() -> i64 {
    sql::micros(chrono::Utc::now())
}

impl<P: SqliteProjector + ?Sized> SqliteProjectionUnit<P> {
    /// The unit of `projector` over `store`'s log, keeping its checkpoint
    /// in the store's database.
    pub fn new(store: &SqliteEventStore, projector: Arc<P>) -> Self {
        Self {
            store: store.clone(),
            projector,
            setup: OnceCell::new(),
        }
    }

    /// The projector.
    pub fn projector(&self) -> &Arc<P> {
        &self.projector
    }

    /// Runs the projector's [`setup`](SqliteProjector::setup) (its DDL) in
    /// a write transaction, once per unit; every other operation calls it
    /// first. Units starting together take turns on the write lock.
    pub async fn setup(&self) -> Result<(), StoreError> {
        self.setup
            .get_or_try_init(|| async {
                let _turn = self.turn().await;
                let mut tx = self.begin().await?;
                self.projector
                    .setup(&mut tx)
                    .await
                    .map_err(|e| StoreError::backend("projection setup", e))?;
                tx.commit().await.map_err(|e| backend("commit projection setup", e))
            })
            .await
            .copied()
    }

    /// A runner of this unit over the same store.
    pub fn runner(self) -> ProjectionRunner {
        ProjectionRunner::new(Arc::new(self.store.clone()), Arc::new(self))
    }

    /// This process's turn at writing the file; take it before
    /// [`begin`](Self::begin) and keep it until the transaction ends.
    async fn turn(&self) -> Turn {
        self.store.inner.gate.enter().await
    }

    /// A write transaction (`BEGIN IMMEDIATE`: the write lock first, so
    /// reading the checkpoint and writing the page cannot be overtaken).
    async fn begin(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        let pool = self.store.pool();
        retry_transient(
            &self.store.config().transient_retry,
            "begin projection transaction",
            || pool.begin_with("BEGIN IMMEDIATE"),
        )
        .await
    }

    /// Reads the checkpoint (creating it at 0); with an advance, checks it.
    async fn lock(&self, tx: &mut Transaction<'static, Sqlite>, advance: Option<Advance>) -> Result<u64, UnitError> {
        let stored: i64 = sqlx::query_scalar(LOCK)
            .bind(self.projector.name())
            .bind(now())
            .fetch_one(&mut **tx)
            .await
            .map_err(|e| backend("lock checkpoint", e))?;
        let stored = unsigned(stored);
        match advance {
            Some(a) if a.from != stored => Err(UnitError::Moved { position: stored }),
            _ => Ok(stored),
        }
    }

    /// Drops the dead letters of events after `position`, which a replay
    /// from there meets again.
    async fn drop_letters_after(&self, tx: &mut Transaction<'static, Sqlite>, position: u64) -> Result<(), StoreError> {
        sqlx::query(DROP_LETTERS_AFTER)
            .bind(self.projector.name())
            .bind(signed(position))
            .execute(&mut **tx)
            .await
            .map_err(|e| backend("drop dead letters", e))?;
        Ok(())
    }

    async fn move_to(&self, tx: &mut Transaction<'static, Sqlite>, position: u64) -> Result<(), StoreError> {
        sqlx::query(ADVANCE)
            .bind(self.projector.name())
            .bind(signed(position))
            .bind(now())
            .execute(&mut **tx)
            .await
            .map_err(|e| backend("save checkpoint", e))?;
        Ok(())
    }

    /// One transaction: lock, apply, move, commit.
    async fn try_apply(&self, events: &[RecordedEvent], advance: Option<Advance>) -> Result<(), UnitError> {
        let _turn = self.turn().await;
        let mut tx = self.begin().await?;
        self.lock(&mut tx, advance).await?;
        if !events.is_empty() {
            if let Err(failure) = self.projector.apply_page(&mut tx, events).await {
                let _ = tx.rollback().await;
                return Err(UnitError::Apply {
                    applied: 0,
                    index: failure.index,
                    error: failure.error,
                });
            }
        }
        if let Some(a) = advance {
            self.move_to(&mut tx, a.to).await?;
        }
        tx.commit().await.map_err(|e| backend("commit projection page", e))?;
        Ok(())
    }
}

#[async_trait]
impl<P: SqliteProjector + ?Sized> ProjectionUnit for SqliteProjectionUnit<P> {
    fn name(&self) -> &str {
        self.projector.name()
    }

    fn filter(&self) -> EventFilter {
        self.projector.filter()
    }

    async fn position(&self) -> Result<u64, StoreError> {
        self.setup().await?;
        es_core::CheckpointStore::load(&SqliteCheckpointStore::new(&self.store), self.projector.name()).await
    }

    #[tracing::instrument(level = "debug", name = "es.sqlite.projection.apply", skip_all, fields(projection = self.projector.name(), events = events.len()))]
    async fn apply(&self, events: &[RecordedEvent], advance: Option<Advance>) -> Result<(), UnitError> {
        self.setup().await?;
        es_core::backend::apply_keeping_prefix(events, advance, |page, advance| self.try_apply(page, advance)).await
    }

    #[tracing::instrument(level = "debug", name = "es.sqlite.projection.dead_letter", skip_all, fields(projection = self.projector.name(), position = letter.global_position))]
    async fn dead_letter(&self, letter: DeadLetter, advance: Option<Advance>) -> Result<(), UnitError> {
        self.setup().await?;
        let _turn = self.turn().await;
        let mut tx = self.begin().await?;
        self.lock(&mut tx, advance).await?;
        SqliteCheckpointStore::insert_dead_letter(&mut *tx, &letter)
            .await
            .map_err(|e| backend("record dead letter", e))?;
        if let Some(a) = advance {
            self.move_to(&mut tx, a.to).await?;
        }
        tx.commit().await.map_err(|e| backend("commit dead letter", e))?;
        metrics::counter!("es_sqlite_projection_dead_letters_total").increment(1);
        Ok(())
    }

    #[tracing::instrument(name = "es.sqlite.projection.reset", skip_all, fields(projection = self.projector.name()))]
    async fn reset(&self) -> Result<(), UnitError> {
        self.setup().await?;
        let _turn = self.turn().await;
        let mut tx = self.begin().await?;
        self.lock(&mut tx, None).await?;
        self.projector.reset(&mut tx).await.map_err(|error| UnitError::Apply {
            applied: 0,
            index: None,
            error,
        })?;
        self.move_to(&mut tx, 0).await?;
        self.drop_letters_after(&mut tx, 0).await?;
        tx.commit().await.map_err(|e| backend("commit projection reset", e))?;
        Ok(())
    }

    #[tracing::instrument(name = "es.sqlite.projection.seek", skip(self), fields(projection = self.projector.name()))]
    async fn seek(&self, position: u64) -> Result<(), StoreError> {
        self.setup().await?;
        let _turn = self.turn().await;
        let mut tx = self.begin().await?;
        sqlx::query_scalar::<_, i64>(LOCK)
            .bind(self.projector.name())
            .bind(now())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| backend("lock checkpoint", e))?;
        self.move_to(&mut tx, position).await?;
        self.drop_letters_after(&mut tx, position).await?;
        tx.commit().await.map_err(|e| backend("commit checkpoint", e))
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        es_core::CheckpointStore::dead_letters(&SqliteCheckpointStore::new(&self.store), self.projector.name()).await
    }

    #[tracing::instrument(name = "es.sqlite.projection.resolve_dead_letter", skip(self, event), fields(projection = self.projector.name()))]
    async fn resolve_dead_letter(&self, position: u64, event: Option<&RecordedEvent>) -> Result<bool, UnitError> {
        self.setup().await?;
        let _turn = self.turn().await;
        let mut tx = self.begin().await?;
        self.lock(&mut tx, None).await?;
        let removed = sqlx::query(REMOVE_DEAD_LETTER)
            .bind(self.projector.name())
            .bind(signed(position))
            .execute(&mut *tx)
            .await
            .map_err(|e| backend("remove dead letter", e))?
            .rows_affected();
        if removed == 0 {
            return Ok(false);
        }
        if let Some(event) = event {
            if let Err(failure) = self.projector.apply_page(&mut tx, std::slice::from_ref(event)).await {
                let _ = tx.rollback().await;
                return Err(UnitError::Apply {
                    applied: 0,
                    index: Some(0),
                    error: failure.error,
                });
            }
        }
        tx.commit().await.map_err(|e| backend("commit dead letter", e))?;
        Ok(true)
    }

    async fn record_failure(&self, error: &str) -> Result<(), StoreError> {
        let _turn = self.turn().await;
        retry_transient(
            &self.store.config().transient_retry,
            "record projection failure",
            || {
                sqlx::query(FAIL)
                    .bind(self.projector.name())
                    .bind(error)
                    .bind(now())
                    .execute(self.store.pool())
            },
        )
        .await?;
        Ok(())
    }
}
