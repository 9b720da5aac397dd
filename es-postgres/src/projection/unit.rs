//! [`PgProjectionUnit`]: a page of events, the checkpoint and dead letters
//! in one transaction.

use std::sync::Arc;

use async_trait::async_trait;
use es_core::{
    Advance, DeadLetter, EventFilter, ProjectionRunner, ProjectionUnit, RecordedEvent, StoreError, UnitError,
};
use sqlx::{Postgres, Transaction};
use tokio::sync::OnceCell;

use super::TransactionalProjector;
use crate::checkpoint::PostgresCheckpointStore;
use crate::column::bigint;
use crate::error::backend;
use crate::PostgresEventStore;

/// es-core's `ProjectionUnit` for a [`TransactionalProjector`]: the rows a
/// page writes, the checkpoint move and dead letters commit in one
/// transaction.
///
/// Each transaction first takes the projection's turn (a
/// transaction-scoped advisory lock, which gives it no transaction id, so
/// a page that writes late does not hide what others commit from the
/// log's readers) and compares the checkpoint with the position the
/// runner read from; if another runner
/// (another server instance) moved it, nothing is applied and the runner
/// continues from there. So any number of instances may run the same
/// projection: every event is applied exactly once.
///
/// ```no_run
/// # async fn demo(store: es_postgres::PostgresEventStore, projector: std::sync::Arc<dyn es_postgres::TransactionalProjector>) -> Result<(), Box<dyn std::error::Error>> {
/// use es_postgres::PgProjectionUnit;
///
/// let runner = PgProjectionUnit::new(&store, projector).runner();
/// let report = runner.catch_up().await?;
/// println!("applied {} events, checkpoint {}", report.applied, report.position);
/// # Ok(()) }
/// ```
pub struct PgProjectionUnit<P: ?Sized> {
    store: PostgresEventStore,
    projector: Arc<P>,
    setup: OnceCell<()>,
    sql: UnitSql,
}

struct UnitSql {
    /// The unit's turn: a transaction-scoped advisory lock, which (unlike
    /// a row lock) gives the transaction no transaction id, so a page
    /// whose apply writes late (a process manager issuing commands
    /// through other connections) does not hold back every reader of the
    /// log, whose visible positions stop below the oldest transaction id
    /// in flight.
    turn: String,
    read: String,
    /// Creates the checkpoint row when it is missing (row-locked).
    lock: String,
    advance: String,
    /// Moves the checkpoint only from where the turn found it.
    advance_from: String,
    dead_letter: String,
    fail: String,
    remove_letter: String,
    drop_letters_after: String,
}

impl<P: TransactionalProjector + ?Sized> PgProjectionUnit<P> {
    /// The unit of `projector` over `store`'s log, keeping its checkpoint
    /// in the store's schema.
    pub fn new(store: &PostgresEventStore, projector: Arc<P>) -> Self {
        let s = store.schema();
        Self {
            store: store.clone(),
            projector,
            setup: OnceCell::new(),
            sql: UnitSql {
                turn: format!("SELECT pg_advisory_xact_lock(hashtext('es-projection-unit-{s}'), hashtext($1))"),
                read: format!("SELECT position FROM {s}.checkpoints WHERE projection = $1"),
                lock: format!(
                    "INSERT INTO {s}.checkpoints (projection, position) VALUES ($1, 0) \
                     ON CONFLICT (projection) DO UPDATE SET projection = EXCLUDED.projection RETURNING position"
                ),
                advance: format!(
                    "UPDATE {s}.checkpoints SET position = $2, updated_at = now(), last_error = NULL, failed_at = NULL \
                     WHERE projection = $1"
                ),
                advance_from: format!(
                    "UPDATE {s}.checkpoints SET position = $2, updated_at = now(), last_error = NULL, failed_at = NULL \
                     WHERE projection = $1 AND position = $3"
                ),
                dead_letter: PostgresCheckpointStore::dead_letter_sql(s),
                fail: format!(
                    "INSERT INTO {s}.checkpoints (projection, position, last_error, failed_at) VALUES ($1, 0, $2, now()) \
                     ON CONFLICT (projection) DO UPDATE SET last_error = EXCLUDED.last_error, failed_at = now()"
                ),
                remove_letter: format!("DELETE FROM {s}.dead_letters WHERE projection = $1 AND global_position = $2"),
                drop_letters_after: format!(
                    "DELETE FROM {s}.dead_letters WHERE projection = $1 AND global_position > $2"
                ),
            },
        }
    }

    /// The projector.
    pub fn projector(&self) -> &Arc<P> {
        &self.projector
    }

    /// Runs the projector's [`setup`](TransactionalProjector::setup) (its
    /// DDL) in a transaction, once per unit; every other operation calls it
    /// first.
    pub async fn setup(&self) -> Result<(), StoreError> {
        self.setup
            .get_or_try_init(|| async {
                let mut tx = self.begin().await?;
                // Concurrent `CREATE TABLE IF NOT EXISTS` of one table can
                // fail on PostgreSQL's catalog; instances starting together
                // take turns.
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(format!("es-projection-setup-{}", self.store.schema()))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| backend("lock projection setup", e))?;
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

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.store
            .pool()
            .begin()
            .await
            .map_err(|e| backend("begin projection transaction", e))
    }

    /// Takes the projection's turn and reads the checkpoint; with an
    /// advance, checks it.
    async fn lock(&self, tx: &mut Transaction<'static, Postgres>, advance: Option<Advance>) -> Result<u64, UnitError> {
        let name = self.projector.name();
        sqlx::query(&self.sql.turn)
            .bind(name)
            .execute(&mut **tx)
            .await
            .map_err(|e| backend("lock projection", e))?;
        let found: Option<i64> = sqlx::query_scalar(&self.sql.read)
            .bind(name)
            .fetch_optional(&mut **tx)
            .await
            .map_err(|e| backend("read checkpoint", e))?;
        let stored = match found {
            Some(p) => p,
            None => sqlx::query_scalar(&self.sql.lock)
                .bind(name)
                .fetch_one(&mut **tx)
                .await
                .map_err(|e| backend("create checkpoint", e))?,
        };
        let stored = stored.max(0) as u64;
        match advance {
            Some(a) if a.from != stored => Err(UnitError::Moved { position: stored }),
            _ => Ok(stored),
        }
    }

    /// Drops the dead letters of events after `position`, which a replay
    /// from there meets again.
    async fn drop_letters_after(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        position: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(&self.sql.drop_letters_after)
            .bind(self.projector.name())
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .execute(&mut **tx)
            .await
            .map_err(|e| backend("drop dead letters", e))?;
        Ok(())
    }

    async fn move_to(&self, tx: &mut Transaction<'static, Postgres>, position: u64) -> Result<(), StoreError> {
        sqlx::query(&self.sql.advance)
            .bind(self.projector.name())
            .bind(bigint(position))
            .execute(&mut **tx)
            .await
            .map_err(|e| backend("save checkpoint", e))?;
        Ok(())
    }

    /// Moves the checkpoint from `from` (where [`lock`](Self::lock) found
    /// it) to `to`; [`UnitError::Moved`] when something else moved it
    /// meanwhile (a checkpoint store writing without the unit's turn), and
    /// the caller rolls back.
    async fn move_from(&self, tx: &mut Transaction<'static, Postgres>, from: u64, to: u64) -> Result<(), UnitError> {
        let name = self.projector.name();
        let moved = sqlx::query(&self.sql.advance_from)
            .bind(name)
            .bind(bigint(to))
            .bind(bigint(from))
            .execute(&mut **tx)
            .await
            .map_err(|e| backend("save checkpoint", e))?
            .rows_affected();
        if moved == 1 {
            return Ok(());
        }
        let now: Option<i64> = sqlx::query_scalar(&self.sql.read)
            .bind(name)
            .fetch_optional(&mut **tx)
            .await
            .map_err(|e| backend("read checkpoint", e))?;
        Err(UnitError::Moved {
            position: now.unwrap_or(0).max(0) as u64,
        })
    }

    /// One transaction: lock, apply, move, commit.
    async fn try_apply(&self, events: &[RecordedEvent], advance: Option<Advance>) -> Result<(), UnitError> {
        let mut tx = self.begin().await?;
        let from = self.lock(&mut tx, advance).await?;
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
            if let Err(e) = self.move_from(&mut tx, from, a.to).await {
                let _ = tx.rollback().await;
                return Err(e);
            }
        }
        tx.commit().await.map_err(|e| backend("commit projection page", e))?;
        Ok(())
    }
}

fn setup_failed(e: StoreError) -> UnitError {
    UnitError::Store(e)
}

#[async_trait]
impl<P: TransactionalProjector + ?Sized> ProjectionUnit for PgProjectionUnit<P> {
    fn name(&self) -> &str {
        self.projector.name()
    }

    fn filter(&self) -> EventFilter {
        self.projector.filter()
    }

    async fn position(&self) -> Result<u64, StoreError> {
        self.setup().await?;
        es_core::CheckpointStore::load(&PostgresCheckpointStore::new(&self.store), self.projector.name()).await
    }

    #[tracing::instrument(level = "debug", name = "es.pg.projection.apply", skip_all, fields(projection = self.projector.name(), events = events.len()))]
    async fn apply(&self, events: &[RecordedEvent], advance: Option<Advance>) -> Result<(), UnitError> {
        self.setup().await.map_err(setup_failed)?;
        es_core::backend::apply_keeping_prefix(events, advance, |page, advance| self.try_apply(page, advance)).await
    }

    async fn dead_letter(&self, letter: DeadLetter, advance: Option<Advance>) -> Result<(), UnitError> {
        self.setup().await.map_err(setup_failed)?;
        let mut tx = self.begin().await?;
        let from = self.lock(&mut tx, advance).await?;
        PostgresCheckpointStore::insert_dead_letter(&mut *tx, &self.sql.dead_letter, &letter)
            .await
            .map_err(|e| backend("record dead letter", e))?;
        if let Some(a) = advance {
            self.move_from(&mut tx, from, a.to).await?;
        }
        tx.commit().await.map_err(|e| backend("commit dead letter", e))?;
        metrics::counter!("es_postgres_projection_dead_letters_total").increment(1);
        Ok(())
    }

    async fn reset(&self) -> Result<(), UnitError> {
        self.setup().await.map_err(setup_failed)?;
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

    async fn seek(&self, position: u64) -> Result<(), StoreError> {
        self.setup().await?;
        let mut tx = self.begin().await?;
        self.lock(&mut tx, None).await.map_err(|e| match e {
            UnitError::Store(e) => e,
            other => StoreError::backend("lock checkpoint", other),
        })?;
        self.move_to(&mut tx, position).await?;
        self.drop_letters_after(&mut tx, position).await?;
        tx.commit().await.map_err(|e| backend("commit checkpoint", e))
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        es_core::CheckpointStore::dead_letters(&PostgresCheckpointStore::new(&self.store), self.projector.name()).await
    }

    async fn resolve_dead_letter(&self, position: u64, event: Option<&RecordedEvent>) -> Result<bool, UnitError> {
        self.setup().await.map_err(setup_failed)?;
        let mut tx = self.begin().await?;
        self.lock(&mut tx, None).await?;
        let removed = sqlx::query(&self.sql.remove_letter)
            .bind(self.projector.name())
            .bind(bigint(position))
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
        sqlx::query(&self.sql.fail)
            .bind(self.projector.name())
            .bind(error)
            .execute(self.store.pool())
            .await
            .map_err(|e| backend("record projection failure", e))?;
        Ok(())
    }
}
