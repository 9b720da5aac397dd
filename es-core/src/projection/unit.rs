//! [`ProjectionUnit`]: applies a page of events and moves the checkpoint
//! atomically — what the one runner is parameterised by.

use async_trait::async_trait;

use crate::{BoxError, DeadLetter, EventFilter, RecordedEvent, StoreError};

/// A checkpoint move: from the position the runner last saw to the new one.
///
/// The unit compares `from` with the stored checkpoint in the same atomic
/// step that applies the events, so two runners of one projection (two
/// server instances) never apply an event twice: the second gets
/// [`UnitError::Moved`] and carries on from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advance {
    /// The checkpoint the runner expects to be stored.
    pub from: u64,
    /// The checkpoint to store.
    pub to: u64,
}

/// Why a [`ProjectionUnit`] did not apply a page.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    /// The projector failed. The first `applied` events of the page were
    /// applied (and, with an [`Advance`], the checkpoint moved to the last
    /// of them); nothing after them was.
    #[error("projector failed{}: {error}", index.map(|i| format!(" on event {i} of the page")).unwrap_or_default())]
    Apply {
        /// How many leading events were applied.
        applied: usize,
        /// The index in the page of the event that failed, when known
        /// (then equal to `applied`); `None` when the page failed as a
        /// whole (a projector that writes a page at once).
        index: Option<usize>,
        /// The projector's error.
        error: BoxError,
    },
    /// The stored checkpoint is not `Advance::from`: another runner of the
    /// same projection moved it. Nothing was applied.
    #[error("checkpoint moved to {position} by another runner")]
    Moved {
        /// The stored checkpoint.
        position: u64,
    },
    /// The backend failed (connection, transaction); nothing was applied.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies pages of events to a read model and keeps its checkpoint and
/// dead letters, each operation atomic.
///
/// Implemented by [`ProjectorUnit`](crate::ProjectorUnit) (a
/// [`Projector`](crate::Projector) plus a
/// [`CheckpointStore`](crate::CheckpointStore)) and by backends (es-postgres's
/// `PgProjectionUnit`: rows and checkpoint in one transaction).
#[async_trait]
pub trait ProjectionUnit: Send + Sync + 'static {
    /// Unique name: the key of the checkpoint and the dead letters.
    fn name(&self) -> &str;
    /// The events the projection wants.
    fn filter(&self) -> EventFilter;
    /// The stored checkpoint: the last position applied (0: none).
    async fn position(&self) -> Result<u64, StoreError>;
    /// Applies `events` (in order) and, with `advance`, moves the
    /// checkpoint — all or, on [`UnitError::Apply`], the reported prefix.
    /// `events` may be empty (a page the filter left empty moves the
    /// checkpoint only).
    async fn apply(&self, events: &[RecordedEvent], advance: Option<Advance>) -> Result<(), UnitError>;
    /// Records a dead letter and, with `advance`, moves the checkpoint past
    /// its event, atomically.
    async fn dead_letter(&self, letter: DeadLetter, advance: Option<Advance>) -> Result<(), UnitError>;
    /// Clears the read model, drops its dead letters and sets the
    /// checkpoint to 0, atomically: the replay meets those events again.
    async fn reset(&self) -> Result<(), UnitError>;
    /// Sets the checkpoint to `position` (replay from there) and drops the
    /// dead letters of events after it, which the replay meets again.
    async fn seek(&self, position: u64) -> Result<(), StoreError>;
    /// The dead letters, oldest first.
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError>;
    /// Removes the dead letter at `position` — after applying `event` first
    /// when given (a retry), atomically; whether there was one.
    async fn resolve_dead_letter(&self, position: u64, event: Option<&RecordedEvent>) -> Result<bool, UnitError>;
    /// Records that the runner stopped on `error` (shown to operators until
    /// the next page applies). The default keeps nothing.
    async fn record_failure(&self, error: &str) -> Result<(), StoreError> {
        let _ = error;
        Ok(())
    }
}

/// Runs one transactional attempt at a page and, when the projector
/// failed at a known event, a second attempt at the events before it, so
/// the unit reports them applied and the runner retries only the failing
/// one: the contract of [`UnitError::Apply`] for units whose transaction
/// rolls back on a failure (es-postgres, es-sqlite). `attempt` applies a
/// slice of `events` (all or nothing) with its checkpoint move.
pub async fn apply_keeping_prefix<'a, F, Fut>(
    events: &'a [RecordedEvent],
    advance: Option<Advance>,
    attempt: F,
) -> Result<(), UnitError>
where
    F: Fn(&'a [RecordedEvent], Option<Advance>) -> Fut,
    Fut: std::future::Future<Output = Result<(), UnitError>>,
{
    match attempt(events, advance).await {
        Err(UnitError::Apply {
            index: Some(i), error, ..
        }) if i > 0 && i < events.len() => {
            let prefix = advance.map(|a| Advance {
                from: a.from,
                to: events[i - 1].global_position,
            });
            match attempt(&events[..i], prefix).await {
                Ok(()) => Err(UnitError::Apply {
                    applied: i,
                    index: Some(i),
                    error,
                }),
                Err(UnitError::Apply { .. }) => Err(UnitError::Apply {
                    applied: 0,
                    index: None,
                    error,
                }),
                Err(other) => Err(other),
            }
        }
        Err(UnitError::Apply { index, error, .. }) => Err(UnitError::Apply {
            applied: 0,
            index: index.filter(|i| *i == 0),
            error,
        }),
        other => other,
    }
}
