//! Extension points of the command path: validators before an append,
//! handlers after it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Aggregate, Metadata, StreamId};

/// Checks the events a command produced before they are appended.
///
/// Runs after [`Aggregate::handle`] accepted the command; an `Err` rejects
/// the command with [`RepositoryError::Invalid`](crate::RepositoryError::Invalid)
/// and nothing is appended. Use it for cross-cutting rules (limits, policy)
/// that do not belong in one aggregate.
pub trait EventValidator<A: Aggregate>: Send + Sync + 'static {
    /// `Ok` to let the events through, `Err(reason)` to reject the command.
    fn validate(&self, state: &A, events: &[A::Event]) -> Result<(), String>;
}

impl<A, F> EventValidator<A> for F
where
    A: Aggregate,
    F: Fn(&A, &[A::Event]) -> Result<(), String> + Send + Sync + 'static,
{
    fn validate(&self, state: &A, events: &[A::Event]) -> Result<(), String> {
        self(state, events)
    }
}

/// One event as committed, typed, with its envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct CommittedEvent<E> {
    /// The event.
    pub event: E,
    /// Its id.
    pub event_id: Uuid,
    /// Its stream version.
    pub version: u64,
    /// Its global position.
    pub global_position: u64,
    /// Its metadata.
    pub metadata: Metadata,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// Runs after a successful append, before the command's caller is
/// answered (so a read model it updates is current when the caller sees
/// the result: read-your-writes).
///
/// Failures are logged and do not fail the command: the events are
/// already committed. Anything that must not be lost belongs in a
/// projection (which has a checkpoint) instead.
#[async_trait]
pub trait EventHandler<A: Aggregate>: Send + Sync + 'static {
    /// Called with the stream, the state after the events, and the events.
    async fn on_committed(
        &self,
        stream_id: &StreamId,
        state: &A,
        events: &[CommittedEvent<A::Event>],
    ) -> Result<(), crate::error::BoxError>;
}
