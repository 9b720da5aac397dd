//! Projections whose read model lives in PostgreSQL: the read model and
//! the checkpoint are written in the same transaction, so a crash never
//! applies an event twice or skips one.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use es_core::{
    BoxError, DeadLetter, EventFilter, EventStore, OnFailure, ProjectionConfig, ProjectionError, RecordedEvent,
    ReplayMode, StoreError,
};
use sqlx::{PgConnection, Postgres, Transaction};

use crate::checkpoint::PostgresCheckpointStore;
use crate::error::backend;
use crate::PostgresEventStore;

/// A projector that writes its read model with the runner's transaction.
#[async_trait]
pub trait TransactionalProjector: Send + Sync + 'static {
    /// Unique name; the key of the checkpoint.
    fn name(&self) -> &str;
    /// The events this projector wants (all by default).
    fn filter(&self) -> EventFilter {
        EventFilter::all()
    }
    /// Applies one event, writing through `tx` only.
    async fn apply(&self, tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), BoxError>;
    /// Clears the read model, before a full rebuild (in the same
    /// transaction that resets the checkpoint).
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError>;
}

/// Runs a [`TransactionalProjector`]: each batch of events, and the
/// checkpoint after it, commit in one transaction.
///
/// Catch-up, live following (LISTEN/NOTIFY with polling as the fallback),
/// full rebuild, incremental replay from a position and selective replay of
/// some event types work as in es-core's `ProjectionRunner`. An event the
/// projector keeps failing on is retried with backoff, each attempt in a
/// fresh transaction, then dead-lettered (with the checkpoint moving past
/// it in the same transaction) or stops the runner, by configuration.
pub struct PgProjectionRunner<P: TransactionalProjector> {
    store: PostgresEventStore,
    projector: Arc<P>,
    config: ProjectionConfig,
    save_checkpoint: String,
    dead_letter: String,
}

impl<P: TransactionalProjector> PgProjectionRunner<P> {
    /// A runner with the default configuration.
    pub fn new(store: PostgresEventStore, projector: Arc<P>) -> Self {
        let schema = store.schema().to_owned();
        Self {
            store,
            projector,
            config: ProjectionConfig::default(),
            save_checkpoint: PostgresCheckpointStore::save_sql(&schema),
            dead_letter: PostgresCheckpointStore::dead_letter_sql(&schema),
        }
    }

    /// Replaces the configuration.
    #[must_use]
    pub fn with_config(mut self, config: ProjectionConfig) -> Self {
        self.config = config;
        self
    }

    fn err(&self, source: StoreError) -> ProjectionError {
        ProjectionError::Store {
            projection: self.projector.name().to_owned(),
            source,
        }
    }

    fn db(&self, operation: &'static str) -> impl Fn(sqlx::Error) -> ProjectionError + '_ {
        move |e| self.err(backend(operation, e))
    }

    /// The checkpoint.
    pub async fn position(&self) -> Result<u64, ProjectionError> {
        es_core::CheckpointStore::load(&PostgresCheckpointStore::new(&self.store), self.projector.name())
            .await
            .map_err(|e| self.err(e))
    }

    async fn save_checkpoint(&self, tx: &mut Transaction<'_, Postgres>, position: u64) -> Result<(), ProjectionError> {
        sqlx::query(&self.save_checkpoint)
            .bind(self.projector.name())
            .bind(position as i64)
            .execute(&mut **tx)
            .await
            .map_err(self.db("save checkpoint"))?;
        Ok(())
    }

    /// Applies every event after the checkpoint; returns how many.
    #[tracing::instrument(name = "es.pg.projection.catch_up", skip(self), fields(projection = self.projector.name()))]
    pub async fn catch_up(&self) -> Result<u64, ProjectionError> {
        let filter = self.projector.filter();
        let mut position = self.position().await?;
        let mut applied = 0;
        loop {
            let head = self.store.head_position().await.map_err(|e| self.err(e))?;
            let batch = self
                .store
                .read_all(position, self.config.batch_size, &filter)
                .await
                .map_err(|e| self.err(e))?;
            let (next, full) = es_core::checkpoint_after_page(position, head, &batch, self.config.batch_size);
            if !batch.is_empty() {
                applied += self.apply_batch(&batch, next).await?;
            } else if next != position {
                let mut tx = self.store.pool().begin().await.map_err(self.db("begin"))?;
                self.save_checkpoint(&mut tx, next).await?;
                tx.commit().await.map_err(self.db("commit"))?;
            }
            position = next;
            if !full {
                return Ok(applied);
            }
        }
    }

    /// Applies a batch and the checkpoint `next` in one transaction; on a
    /// failure, falls back to one transaction per event.
    async fn apply_batch(&self, batch: &[RecordedEvent], next: u64) -> Result<u64, ProjectionError> {
        let mut tx = self.store.pool().begin().await.map_err(self.db("begin"))?;
        let mut failed = false;
        for event in batch {
            if let Err(e) = self.projector.apply(&mut tx, event).await {
                tracing::debug!(position = event.global_position, error = %e, "batch failed; applying one by one");
                failed = true;
                break;
            }
        }
        if !failed {
            self.save_checkpoint(&mut tx, next).await?;
            tx.commit().await.map_err(self.db("commit"))?;
            return Ok(batch.len() as u64);
        }
        tx.rollback().await.map_err(self.db("rollback"))?;
        for event in batch {
            self.apply_one(event).await?;
        }
        let mut tx = self.store.pool().begin().await.map_err(self.db("begin"))?;
        self.save_checkpoint(&mut tx, next).await?;
        tx.commit().await.map_err(self.db("commit"))?;
        Ok(batch.len() as u64)
    }

    /// One event with retries, each in its own transaction with the
    /// checkpoint; dead-letters or stops when retries run out.
    async fn apply_one(&self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let mut attempt = 1;
        loop {
            let mut tx = self.store.pool().begin().await.map_err(self.db("begin"))?;
            let error = match self.projector.apply(&mut tx, event).await {
                Ok(()) => {
                    self.save_checkpoint(&mut tx, event.global_position).await?;
                    tx.commit().await.map_err(self.db("commit"))?;
                    return Ok(());
                }
                Err(e) => e.to_string(),
            };
            tx.rollback().await.map_err(self.db("rollback"))?;
            if self.config.retry.should_retry(attempt) {
                tokio::time::sleep(self.config.retry.delay_after(attempt)).await;
                attempt += 1;
                continue;
            }
            if self.config.on_failure == OnFailure::Stop {
                return Err(ProjectionError::Stopped {
                    projection: self.projector.name().to_owned(),
                    position: event.global_position,
                    event_type: event.event_type.clone(),
                    error,
                });
            }
            tracing::error!(projection = self.projector.name(), position = event.global_position, %error, "event dead-lettered");
            metrics::counter!("es_postgres_projection_dead_letters_total").increment(1);
            let letter = DeadLetter {
                projection: self.projector.name().to_owned(),
                global_position: event.global_position,
                stream_id: event.stream_id.clone(),
                version: event.version,
                event_id: event.event_id,
                event_type: event.event_type.clone(),
                error,
                attempts: attempt,
                failed_at: chrono::Utc::now(),
            };
            let mut tx = self.store.pool().begin().await.map_err(self.db("begin"))?;
            PostgresCheckpointStore::insert_dead_letter(&mut *tx, &self.dead_letter, &letter)
                .await
                .map_err(self.db("record dead letter"))?;
            self.save_checkpoint(&mut tx, event.global_position).await?;
            tx.commit().await.map_err(self.db("commit"))?;
            return Ok(());
        }
    }

    /// Catches up, then follows new events until `shutdown` completes.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ProjectionError> {
        tokio::pin!(shutdown);
        loop {
            self.catch_up().await?;
            let position = self.position().await?;
            let lag_start = std::time::Instant::now();
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                waited = self.store.wait_for_events(position, self.config.poll_interval) => {
                    waited.map_err(|e| self.err(e))?;
                }
            }
            metrics::histogram!("es_postgres_projection_wait_seconds", "projection" => self.projector.name().to_owned())
                .record(lag_start.elapsed().as_secs_f64());
        }
    }

    /// Replays by `mode`; returns how many events were applied.
    #[tracing::instrument(name = "es.pg.projection.replay", skip(self), fields(projection = self.projector.name()))]
    pub async fn replay(&self, mode: ReplayMode) -> Result<u64, ProjectionError> {
        match mode {
            ReplayMode::Full => {
                let mut tx = self.store.pool().begin().await.map_err(self.db("begin"))?;
                self.projector
                    .reset(&mut tx)
                    .await
                    .map_err(|e| ProjectionError::Reset {
                        projection: self.projector.name().to_owned(),
                        error: e.to_string(),
                    })?;
                self.save_checkpoint(&mut tx, 0).await?;
                tx.commit().await.map_err(self.db("commit"))?;
                self.catch_up().await
            }
            ReplayMode::From(position) => {
                let mut tx = self.store.pool().begin().await.map_err(self.db("begin"))?;
                self.save_checkpoint(&mut tx, position).await?;
                tx.commit().await.map_err(self.db("commit"))?;
                self.catch_up().await
            }
            ReplayMode::Selective { event_types, from } => {
                let until = self.position().await?;
                let base = self.projector.filter();
                let filter = EventFilter {
                    event_types: if base.event_types.is_empty() {
                        event_types
                    } else {
                        event_types
                            .into_iter()
                            .filter(|t| base.event_types.contains(t))
                            .collect()
                    },
                    stream_types: base.stream_types,
                };
                if filter.event_types.is_empty() {
                    return Ok(0);
                }
                let mut position = from;
                let mut applied = 0;
                loop {
                    let batch: Vec<_> = self
                        .store
                        .read_all(position, self.config.batch_size, &filter)
                        .await
                        .map_err(|e| self.err(e))?
                        .into_iter()
                        .filter(|e| e.global_position <= until)
                        .collect();
                    let Some(last) = batch.last().map(|e| e.global_position) else {
                        return Ok(applied);
                    };
                    let mut tx = self.store.pool().begin().await.map_err(self.db("begin"))?;
                    for event in &batch {
                        self.projector
                            .apply(&mut tx, event)
                            .await
                            .map_err(|e| ProjectionError::Stopped {
                                projection: self.projector.name().to_owned(),
                                position: event.global_position,
                                event_type: event.event_type.clone(),
                                error: e.to_string(),
                            })?;
                    }
                    tx.commit().await.map_err(self.db("commit"))?;
                    applied += batch.len() as u64;
                    position = last;
                }
            }
        }
    }
}
