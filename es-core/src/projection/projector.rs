//! The untyped [`Projector`] and [`ProjectorUnit`], which runs one with a
//! [`CheckpointStore`].

use std::sync::Arc;

use async_trait::async_trait;

use super::{drop_letters_after, Advance, CheckpointStore, DeadLetter, ProjectionUnit, UnitError};
use crate::error::BoxError;
use crate::{EventFilter, RecordedEvent, StoreError};

/// Builds a read model from events of the global log, one
/// [`RecordedEvent`] at a time (the untyped form, for projections across
/// aggregates; see [`TypedProjector`](crate::TypedProjector) for decoded events).
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

/// A [`ProjectionUnit`] made of a [`Projector`] and a [`CheckpointStore`].
///
/// Events are applied one by one, then the checkpoint is saved. With an
/// in-process read model and [`InMemoryCheckpointStore`](crate::InMemoryCheckpointStore)
/// both live and die together, so the pair is atomic; with a durable
/// checkpoint store and external side effects a crash between the two
/// applies up to one page again: make `apply` idempotent then.
/// Operations of one unit are serialized, so several runners of it in one
/// process never apply an event twice.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
/// use es_core::*;
///
/// #[derive(Default)]
/// struct Count(AtomicU64);
/// #[async_trait::async_trait]
/// impl Projector for Count {
///     fn name(&self) -> &str { "count" }
///     async fn apply(&self, _: &RecordedEvent) -> Result<(), BoxError> {
///         self.0.fetch_add(1, Ordering::Relaxed);
///         Ok(())
///     }
/// }
///
/// let store = Arc::new(InMemoryEventStore::new());
/// store.append("t", &StreamId::from("s"), ExpectedVersion::Any, vec![NewEvent::new("E", serde_json::json!(1))]).await.unwrap();
/// let count = Arc::new(Count::default());
/// let unit = ProjectorUnit::new(count.clone(), Arc::new(InMemoryCheckpointStore::new()));
/// let runner = ProjectionRunner::new(store, Arc::new(unit));
/// let report = runner.catch_up().await.unwrap();
/// assert_eq!((report.applied, report.dead_lettered), (1, 0));
/// assert_eq!(count.0.load(Ordering::Relaxed), 1);
/// # });
/// ```
pub struct ProjectorUnit<P: ?Sized, C: ?Sized> {
    projector: Arc<P>,
    checkpoints: Arc<C>,
    serial: tokio::sync::Mutex<()>,
}

impl<P: ?Sized, C: ?Sized> ProjectorUnit<P, C>
where
    P: Projector,
    C: CheckpointStore,
{
    /// A unit of `projector` keeping its checkpoint in `checkpoints`.
    pub fn new(projector: Arc<P>, checkpoints: Arc<C>) -> Self {
        Self {
            projector,
            checkpoints,
            serial: tokio::sync::Mutex::new(()),
        }
    }

    async fn check(&self, advance: Option<Advance>) -> Result<(), UnitError> {
        if let Some(a) = advance {
            let stored = self.checkpoints.load(self.projector.name()).await?;
            if stored != a.from {
                return Err(UnitError::Moved { position: stored });
            }
        }
        Ok(())
    }
}

#[async_trait]
impl<P: ?Sized, C: ?Sized> ProjectionUnit for ProjectorUnit<P, C>
where
    P: Projector,
    C: CheckpointStore,
{
    fn name(&self) -> &str {
        self.projector.name()
    }

    fn filter(&self) -> EventFilter {
        self.projector.filter()
    }

    async fn position(&self) -> Result<u64, StoreError> {
        self.checkpoints.load(self.projector.name()).await
    }

    async fn apply(&self, events: &[RecordedEvent], advance: Option<Advance>) -> Result<(), UnitError> {
        let _serial = self.serial.lock().await;
        self.check(advance).await?;
        for (i, event) in events.iter().enumerate() {
            if let Err(error) = self.projector.apply(event).await {
                if let (Some(_), Some(prev)) = (advance, i.checked_sub(1)) {
                    self.checkpoints
                        .save(self.projector.name(), events[prev].global_position)
                        .await?;
                }
                return Err(UnitError::Apply {
                    applied: i,
                    index: Some(i),
                    error,
                });
            }
        }
        if let Some(a) = advance {
            self.checkpoints.save(self.projector.name(), a.to).await?;
        }
        Ok(())
    }

    async fn dead_letter(&self, letter: DeadLetter, advance: Option<Advance>) -> Result<(), UnitError> {
        let _serial = self.serial.lock().await;
        self.check(advance).await?;
        self.checkpoints.dead_letter(letter).await?;
        if let Some(a) = advance {
            self.checkpoints.save(self.projector.name(), a.to).await?;
        }
        Ok(())
    }

    async fn reset(&self) -> Result<(), UnitError> {
        let _serial = self.serial.lock().await;
        self.projector.reset().await.map_err(|error| UnitError::Apply {
            applied: 0,
            index: None,
            error,
        })?;
        self.checkpoints.save(self.projector.name(), 0).await?;
        drop_letters_after(&*self.checkpoints, self.projector.name(), 0).await?;
        Ok(())
    }

    async fn seek(&self, position: u64) -> Result<(), StoreError> {
        let _serial = self.serial.lock().await;
        self.checkpoints.save(self.projector.name(), position).await?;
        drop_letters_after(&*self.checkpoints, self.projector.name(), position).await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.checkpoints.dead_letters(self.projector.name()).await
    }

    async fn resolve_dead_letter(&self, position: u64, event: Option<&RecordedEvent>) -> Result<bool, UnitError> {
        let _serial = self.serial.lock().await;
        let known = self
            .checkpoints
            .dead_letters(self.projector.name())
            .await?
            .iter()
            .any(|l| l.global_position == position);
        if !known {
            return Ok(false);
        }
        if let Some(event) = event {
            self.projector.apply(event).await.map_err(|error| UnitError::Apply {
                applied: 0,
                index: Some(0),
                error,
            })?;
        }
        Ok(self
            .checkpoints
            .remove_dead_letter(self.projector.name(), position)
            .await?)
    }
}
