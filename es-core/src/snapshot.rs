//! Snapshots: a stored aggregate state at a version, so loading reads only
//! the events after it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{StoreError, StreamId};

/// An aggregate's serialized state at a stream version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The stream the state belongs to.
    pub stream_id: StreamId,
    /// The stream (aggregate) type.
    pub stream_type: String,
    /// The stream version the state includes (all events up to it).
    pub version: u64,
    /// The aggregate's [`SNAPSHOT_VERSION`](crate::Aggregate::SNAPSHOT_VERSION)
    /// when the snapshot was taken; a mismatch discards the snapshot.
    pub schema_version: u32,
    /// The serialized state.
    pub state: Value,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
}

/// Stores the newest snapshot of each stream.
///
/// `save` never replaces a snapshot with an older one (a lower version), so
/// concurrent snapshotters cannot move a stream's snapshot backwards.
#[async_trait]
pub trait SnapshotStore: Send + Sync + 'static {
    /// Stores a snapshot unless a newer one is already stored.
    async fn save(&self, snapshot: Snapshot) -> Result<(), StoreError>;
    /// The newest snapshot of a stream, if any.
    async fn load(&self, stream_id: &StreamId) -> Result<Option<Snapshot>, StoreError>;
}

/// When the repository takes a snapshot.
///
/// ```
/// use es_core::SnapshotPolicy;
/// let p = SnapshotPolicy::EveryNEvents(100);
/// assert!(p.should_snapshot(99, 100));
/// assert!(p.should_snapshot(98, 105)); // crossed 100
/// assert!(!p.should_snapshot(100, 150));
/// assert!(!SnapshotPolicy::Never.should_snapshot(0, 1000));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotPolicy {
    /// Never snapshot.
    #[default]
    Never,
    /// Snapshot each time the stream's version crosses a multiple of N.
    EveryNEvents(u64),
}

impl SnapshotPolicy {
    /// Whether an append that moved a stream from `old_version` to
    /// `new_version` calls for a snapshot.
    pub fn should_snapshot(self, old_version: u64, new_version: u64) -> bool {
        match self {
            Self::Never => false,
            Self::EveryNEvents(0) => false,
            Self::EveryNEvents(n) => old_version / n != new_version / n,
        }
    }
}
