//! Errors of the projection runner.

use crate::StoreError;

/// Errors of a [`ProjectionRunner`](crate::ProjectionRunner).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// Reading the log or writing the checkpoint failed.
    #[error("projection {projection}: {source}")]
    Store {
        /// The projection.
        projection: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The projector failed on an event and the runner is set to stop
    /// ([`OnFailure::Stop`](crate::OnFailure::Stop), the default); the
    /// checkpoint stays before the event.
    #[error(
        "projection {projection} stopped at position {position} ({event_type}) after {attempts} attempt(s): {error}"
    )]
    Stopped {
        /// The projection.
        projection: String,
        /// Position of the event.
        position: u64,
        /// Its type.
        event_type: String,
        /// Attempts made.
        attempts: u32,
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
    /// A replay from a position was asked to start past the checkpoint:
    /// the events in between were never applied, and moving the checkpoint
    /// forward would pass over them.
    #[error("projection {projection}: cannot replay from {position}, past its checkpoint {checkpoint}")]
    PastCheckpoint {
        /// The projection.
        projection: String,
        /// The position asked for.
        position: u64,
        /// The projection's checkpoint.
        checkpoint: u64,
    },
    /// There is no event at the position asked for (retrying a dead letter
    /// of an event that no longer exists).
    #[error("projection {projection}: no event at position {position}")]
    NoSuchEvent {
        /// The projection.
        projection: String,
        /// The position.
        position: u64,
    },
}
