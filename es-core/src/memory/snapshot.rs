use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use super::{read, write};
use crate::{Snapshot, SnapshotStore, StoreError, StreamId};

/// In-memory [`SnapshotStore`]; clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct InMemorySnapshotStore {
    snapshots: Arc<RwLock<HashMap<StreamId, Snapshot>>>,
}

impl InMemorySnapshotStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SnapshotStore for InMemorySnapshotStore {
    async fn save(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let mut map = write(&self.snapshots);
        match map.get(&snapshot.stream_id) {
            Some(existing) if existing.version > snapshot.version => {}
            _ => {
                map.insert(snapshot.stream_id.clone(), snapshot);
            }
        }
        Ok(())
    }

    async fn load(&self, stream_id: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        Ok(read(&self.snapshots).get(stream_id).cloned())
    }
}
