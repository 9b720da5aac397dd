//! Projections: read models built from the global log, with checkpoints,
//! replay and dead-lettering.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::BoxError;
use crate::{EventFilter, EventStore, RecordedEvent, RetryPolicy, StoreError, StreamId};

/// Builds a read model from events of the global log.
///
/// The runner calls [`apply`](Projector::apply) once per event in global
/// order and saves its checkpoint after each batch, so after a crash up to
/// one batch is applied again: make `apply` idempotent (upserts keyed by
/// stream version), or use a backend's transactional runner, which commits
/// the read model and the checkpoint together.
#[async_trait]
pub trait Projector: Send + Sync + 'static {
    /// Unique name; the key of the checkpoint.
    fn name(&self) -> &str;
    /// The events this projector wants (all by default).
    fn filter(&self) -> EventFilter {
        EventFilter::all()
    }
    /// Applies one event to the read model.
    async fn apply(&self, event: &RecordedEvent) -> Result<(), BoxError>;
    /// Clears the read model, before a full rebuild.
    async fn reset(&self) -> Result<(), BoxError> {
        Ok(())
    }
}

/// An event a projector failed on too often, set aside so the projection
/// could move on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The projection that failed.
    pub projection: String,
    /// Global position of the event.
    pub global_position: u64,
    /// Its stream.
    pub stream_id: StreamId,
    /// Its stream version.
    pub version: u64,
    /// Its id.
    pub event_id: Uuid,
    /// Its type.
    pub event_type: String,
    /// The last error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was dead-lettered.
    pub failed_at: DateTime<Utc>,
}

/// Stores each projection's position in the global log and its dead letters.
#[async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    /// The last position the projection has fully applied (0: none).
    async fn load(&self, projection: &str) -> Result<u64, StoreError>;
    /// Records the last position applied.
    async fn save(&self, projection: &str, position: u64) -> Result<(), StoreError>;
    /// Records a dead-lettered event.
    async fn dead_letter(&self, letter: DeadLetter) -> Result<(), StoreError>;
    /// The dead letters of a projection, oldest first.
    async fn dead_letters(&self, projection: &str) -> Result<Vec<DeadLetter>, StoreError>;
}

/// What a runner does with an event its projector keeps failing on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Record it as a dead letter and move on.
    #[default]
    DeadLetter,
    /// Stop the runner with an error; the checkpoint stays before the event.
    Stop,
}

/// Settings of a [`ProjectionRunner`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionConfig {
    /// Events read per round trip.
    pub batch_size: usize,
    /// How long a following runner waits for a wake-up before polling.
    pub poll_interval: Duration,
    /// Retries of a failing `apply`.
    pub retry: RetryPolicy,
    /// What to do when the retries are exhausted.
    pub on_failure: OnFailure,
}

impl Default for ProjectionConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            retry: RetryPolicy {
                max_attempts: 5,
                initial_delay: Duration::from_millis(20),
                ..RetryPolicy::default()
            },
            on_failure: OnFailure::DeadLetter,
        }
    }
}

/// How a replay starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayMode {
    /// Reset the read model and apply the whole log again.
    Full,
    /// Move the checkpoint back to `position` and apply everything after it.
    From(u64),
    /// Apply again only events of these types after `from`, up to the
    /// current checkpoint; the checkpoint does not move.
    Selective {
        /// The event types to apply again.
        event_types: Vec<String>,
        /// Start after this position.
        from: u64,
    },
}

/// Errors of a [`ProjectionRunner`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// Reading the log or the checkpoint failed.
    #[error("projection {projection}: {source}")]
    Store {
        /// The projection.
        projection: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The projector failed on an event and the runner is set to stop.
    #[error("projection {projection} stopped at position {position} ({event_type}): {error}")]
    Stopped {
        /// The projection.
        projection: String,
        /// Position of the event.
        position: u64,
        /// Its type.
        event_type: String,
        /// The projector's last error.
        error: String,
    },
    /// Resetting the read model failed.
    #[error("projection {projection}: reset failed: {error}")]
    Reset {
        /// The projection.
        projection: String,
        /// The projector's error.
        error: String,
    },
}

/// Where a reader of the global log stands after one page, and whether
/// another page may follow.
///
/// `head_before_read` must be [`EventStore::head_position`] read *before*
/// the page. A full page ends at its last event. A short page means every
/// matching event up to that head was in it, so the reader may move to the
/// head even past events its filter skipped — never past one it has not
/// considered (the gap-safe log only grows at or above the head).
///
/// ```
/// # use es_core::checkpoint_after_page;
/// assert_eq!(checkpoint_after_page(10, 50, &[], 100), (50, false));
/// ```
pub fn checkpoint_after_page(
    position: u64,
    head_before_read: u64,
    page: &[RecordedEvent],
    page_size: usize,
) -> (u64, bool) {
    let full = page.len() >= page_size;
    let next = match page.last() {
        Some(last) if full => last.global_position,
        Some(last) => last.global_position.max(head_before_read),
        None => head_before_read.max(position),
    };
    (next, full)
}

/// Runs a [`Projector`] over an [`EventStore`]'s global log.
///
/// [`catch_up`](ProjectionRunner::catch_up) applies everything after the
/// checkpoint; [`run`](ProjectionRunner::run) catches up and then follows new
/// events until shut down; [`replay`](ProjectionRunner::replay) rebuilds.
pub struct ProjectionRunner<S: ?Sized, P: ?Sized, C: ?Sized> {
    store: Arc<S>,
    projector: Arc<P>,
    checkpoints: Arc<C>,
    config: ProjectionConfig,
}

impl<S: ?Sized, P: ?Sized, C: ?Sized> Clone for ProjectionRunner<S, P, C> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            projector: Arc::clone(&self.projector),
            checkpoints: Arc::clone(&self.checkpoints),
            config: self.config.clone(),
        }
    }
}

impl<S, P, C> ProjectionRunner<S, P, C>
where
    S: EventStore + ?Sized,
    P: Projector + ?Sized,
    C: CheckpointStore + ?Sized,
{
    /// A runner with the default configuration.
    pub fn new(store: Arc<S>, projector: Arc<P>, checkpoints: Arc<C>) -> Self {
        Self {
            store,
            projector,
            checkpoints,
            config: ProjectionConfig::default(),
        }
    }

    /// Replaces the configuration.
    #[must_use]
    pub fn with_config(mut self, config: ProjectionConfig) -> Self {
        self.config = config;
        self
    }

    fn store_err(&self, source: StoreError) -> ProjectionError {
        ProjectionError::Store {
            projection: self.projector.name().to_owned(),
            source,
        }
    }

    /// The checkpoint: last position applied.
    pub async fn position(&self) -> Result<u64, ProjectionError> {
        self.checkpoints
            .load(self.projector.name())
            .await
            .map_err(|e| self.store_err(e))
    }

    /// Applies every event after the checkpoint up to the current head;
    /// returns how many events were applied.
    #[tracing::instrument(name = "es.projection.catch_up", skip(self), fields(projection = self.projector.name()))]
    pub async fn catch_up(&self) -> Result<u64, ProjectionError> {
        let mut position = self.position().await?;
        let filter = self.projector.filter();
        let mut applied = 0;
        loop {
            let head = self.store.head_position().await.map_err(|e| self.store_err(e))?;
            let batch = self
                .store
                .read_all(position, self.config.batch_size, &filter)
                .await
                .map_err(|e| self.store_err(e))?;
            let (next, full) = checkpoint_after_page(position, head, &batch, self.config.batch_size);
            for event in &batch {
                self.apply_with_retry(event).await?;
                applied += 1;
            }
            if next != position {
                position = next;
                self.checkpoints
                    .save(self.projector.name(), position)
                    .await
                    .map_err(|e| self.store_err(e))?;
            }
            if !full {
                return Ok(applied);
            }
        }
    }

    /// Catches up, then follows new events until `shutdown` completes.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ProjectionError> {
        tokio::pin!(shutdown);
        loop {
            self.catch_up().await?;
            let position = self.position().await?;
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                waited = self.store.wait_for_events(position, self.config.poll_interval) => {
                    waited.map_err(|e| self.store_err(e))?;
                }
            }
        }
    }

    /// Replays by `mode`; returns how many events were applied.
    #[tracing::instrument(name = "es.projection.replay", skip(self), fields(projection = self.projector.name()))]
    pub async fn replay(&self, mode: ReplayMode) -> Result<u64, ProjectionError> {
        let name = self.projector.name().to_owned();
        match mode {
            ReplayMode::Full => {
                self.projector.reset().await.map_err(|e| ProjectionError::Reset {
                    projection: name.clone(),
                    error: e.to_string(),
                })?;
                self.checkpoints.save(&name, 0).await.map_err(|e| self.store_err(e))?;
                self.catch_up().await
            }
            ReplayMode::From(position) => {
                self.checkpoints
                    .save(&name, position)
                    .await
                    .map_err(|e| self.store_err(e))?;
                self.catch_up().await
            }
            ReplayMode::Selective { event_types, from } => {
                let until = self.position().await?;
                let base = self.projector.filter();
                let wanted: Vec<String> = if base.event_types.is_empty() {
                    event_types
                } else {
                    event_types
                        .into_iter()
                        .filter(|t| base.event_types.contains(t))
                        .collect()
                };
                if wanted.is_empty() {
                    return Ok(0);
                }
                let filter = EventFilter {
                    event_types: wanted,
                    stream_types: base.stream_types,
                };
                let mut position = from;
                let mut applied = 0;
                'pages: loop {
                    let batch = self
                        .store
                        .read_all(position, self.config.batch_size, &filter)
                        .await
                        .map_err(|e| self.store_err(e))?;
                    let full = batch.len() >= self.config.batch_size;
                    for event in &batch {
                        if event.global_position > until {
                            break 'pages;
                        }
                        self.apply_with_retry(event).await?;
                        applied += 1;
                        position = event.global_position;
                    }
                    if !full {
                        break;
                    }
                }
                Ok(applied)
            }
        }
    }

    async fn apply_with_retry(&self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let mut attempt = 1;
        loop {
            let err = match self.projector.apply(event).await {
                Ok(()) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if self.config.retry.should_retry(attempt) {
                tracing::warn!(projection = self.projector.name(), position = event.global_position, attempt, error = %err, "projector failed; retrying");
                tokio::time::sleep(self.config.retry.delay_after(attempt)).await;
                attempt += 1;
                continue;
            }
            return match self.config.on_failure {
                OnFailure::Stop => Err(ProjectionError::Stopped {
                    projection: self.projector.name().to_owned(),
                    position: event.global_position,
                    event_type: event.event_type.clone(),
                    error: err,
                }),
                OnFailure::DeadLetter => {
                    tracing::error!(projection = self.projector.name(), position = event.global_position, attempts = attempt, error = %err, "event dead-lettered");
                    self.checkpoints
                        .dead_letter(DeadLetter {
                            projection: self.projector.name().to_owned(),
                            global_position: event.global_position,
                            stream_id: event.stream_id.clone(),
                            version: event.version,
                            event_id: event.event_id,
                            event_type: event.event_type.clone(),
                            error: err,
                            attempts: attempt,
                            failed_at: Utc::now(),
                        })
                        .await
                        .map_err(|e| self.store_err(e))
                }
            };
        }
    }
}
