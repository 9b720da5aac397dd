//! Checkpoints and dead letters of projections.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{RecordedEvent, StoreError, StreamId};

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

impl DeadLetter {
    /// The dead letter of `event` for `projection`.
    pub fn of(projection: &str, event: &RecordedEvent, error: String, attempts: u32) -> Self {
        Self {
            projection: projection.to_owned(),
            global_position: event.global_position,
            stream_id: event.stream_id.clone(),
            version: event.version,
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            error,
            attempts,
            failed_at: Utc::now(),
        }
    }
}

/// Stores each projection's position in the global log and its dead
/// letters, for a [`ProjectorUnit`](crate::ProjectorUnit).
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
    /// Removes the dead letter at `global_position`; whether there was one.
    async fn remove_dead_letter(&self, projection: &str, global_position: u64) -> Result<bool, StoreError>;
}

/// Drops the dead letters of `projection` after `position` (a replay from
/// there meets their events again): for units that keep their letters in a
/// [`CheckpointStore`].
pub(crate) async fn drop_letters_after<C: CheckpointStore + ?Sized>(
    checkpoints: &C,
    projection: &str,
    position: u64,
) -> Result<(), StoreError> {
    for letter in checkpoints.dead_letters(projection).await? {
        if letter.global_position > position {
            checkpoints
                .remove_dead_letter(projection, letter.global_position)
                .await?;
        }
    }
    Ok(())
}
