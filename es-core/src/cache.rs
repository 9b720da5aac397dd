//! The aggregate-state cache the repository consults before reading events.

use async_trait::async_trait;

use crate::{Aggregate, StreamId};

/// An aggregate state together with the stream version it includes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Versioned<A> {
    /// The state after applying events 1..=version.
    pub state: A,
    /// The stream version the state includes (0: nothing applied).
    pub version: u64,
}

/// A cache of aggregate states keyed by stream id.
///
/// A cached state is only ever a starting point: the repository reads the
/// events after its version before a decision counts (see
/// [`Repository`](crate::Repository)), so a stale entry costs time, never
/// correctness. Implementations must never let `put` replace an entry with
/// an older version, and must treat their own failures as misses (a cache
/// is never a reason for a command to fail).
#[async_trait]
pub trait StateCache<A: Aggregate>: Send + Sync + 'static {
    /// The cached state, if any.
    async fn get(&self, stream_id: &StreamId) -> Option<Versioned<A>>;
    /// Stores a state unless a newer version is cached.
    async fn put(&self, stream_id: &StreamId, state: &Versioned<A>);
    /// Drops the entry (after a conflict, or when it is known to be stale).
    async fn invalidate(&self, stream_id: &StreamId);
}
