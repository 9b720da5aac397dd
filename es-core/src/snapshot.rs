//! Snapshots: a stored aggregate state at a version, so loading reads only
//! the events after it.

use std::sync::Arc;

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

/// A [`SnapshotStore`] and the [`SnapshotPolicy`] that decides when the
/// repository writes to it, handed to
/// [`RepositoryBuilder::snapshotter`](crate::RepositoryBuilder::snapshotter)
/// as one (the same as
/// [`RepositoryBuilder::snapshots`](crate::RepositoryBuilder::snapshots)
/// with the two apart).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use es_core::{
///     Aggregate, DomainEvent, InMemoryEventStore, InMemorySnapshotStore, Repository, SnapshotPolicy,
///     SnapshotStore, Snapshotter,
/// };
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Default, Clone, Serialize, Deserialize)]
/// struct Counter { value: u64 }
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum Event { Added(u64) }
/// impl DomainEvent for Event { fn event_type(&self) -> &'static str { "Added" } }
/// impl Aggregate for Counter {
///     const TYPE: &'static str = "counter";
///     type Command = u64;
///     type Event = Event;
///     type Error = std::convert::Infallible;
///     fn handle(&self, n: &u64) -> Result<Vec<Event>, Self::Error> { Ok(vec![Event::Added(*n)]) }
///     fn apply(&mut self, Event::Added(n): &Event) { self.value += n }
/// }
///
/// let snapshots = Arc::new(InMemorySnapshotStore::new());
/// let snapshotter = Snapshotter::new(snapshots.clone(), SnapshotPolicy::EveryNEvents(2));
/// assert_eq!(snapshotter.policy(), SnapshotPolicy::EveryNEvents(2));
/// let repo = Repository::<Counter>::builder(Arc::new(InMemoryEventStore::new()))
///     .snapshotter(snapshotter)
///     .build();
/// repo.execute("c-1", 2).await.unwrap();
/// repo.execute("c-1", 3).await.unwrap();
/// // The snapshot at version 2 is saved in the background.
/// let mut saved = None;
/// for _ in 0..2000 {
///     saved = snapshots.load(&"c-1".into()).await.unwrap();
///     if saved.is_some() {
///         break;
///     }
///     tokio::time::sleep(std::time::Duration::from_millis(5)).await;
/// }
/// assert_eq!(saved.map(|s| s.version), Some(2));
/// # });
/// ```
#[derive(Clone)]
pub struct Snapshotter {
    store: Arc<dyn SnapshotStore>,
    policy: SnapshotPolicy,
}

impl Snapshotter {
    /// Snapshots into `store` by `policy`.
    pub fn new(store: Arc<dyn SnapshotStore>, policy: SnapshotPolicy) -> Self {
        Self { store, policy }
    }

    /// The snapshot store.
    pub fn store(&self) -> &Arc<dyn SnapshotStore> {
        &self.store
    }

    /// When snapshots are taken.
    pub fn policy(&self) -> SnapshotPolicy {
        self.policy
    }
}

impl std::fmt::Debug for Snapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshotter")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}
