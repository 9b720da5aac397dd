use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use super::{read, write};
use crate::{CheckpointStore, DeadLetter, StoreError};

/// In-memory [`CheckpointStore`]; clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct InMemoryCheckpointStore {
    inner: Arc<RwLock<Data>>,
}

#[derive(Debug, Default)]
struct Data {
    positions: HashMap<String, u64>,
    dead: HashMap<String, Vec<DeadLetter>>,
}

impl InMemoryCheckpointStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl CheckpointStore for InMemoryCheckpointStore {
    async fn load(&self, projection: &str) -> Result<u64, StoreError> {
        Ok(read(&self.inner).positions.get(projection).copied().unwrap_or(0))
    }

    async fn save(&self, projection: &str, position: u64) -> Result<(), StoreError> {
        write(&self.inner).positions.insert(projection.to_owned(), position);
        Ok(())
    }

    async fn dead_letter(&self, letter: DeadLetter) -> Result<(), StoreError> {
        let mut data = write(&self.inner);
        let letters = data.dead.entry(letter.projection.clone()).or_default();
        letters.retain(|l| l.global_position != letter.global_position);
        letters.push(letter);
        letters.sort_by_key(|l| l.global_position);
        Ok(())
    }

    async fn dead_letters(&self, projection: &str) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(read(&self.inner).dead.get(projection).cloned().unwrap_or_default())
    }

    async fn remove_dead_letter(&self, projection: &str, global_position: u64) -> Result<bool, StoreError> {
        let mut data = write(&self.inner);
        let Some(letters) = data.dead.get_mut(projection) else {
            return Ok(false);
        };
        let before = letters.len();
        letters.retain(|l| l.global_position != global_position);
        Ok(letters.len() != before)
    }
}
