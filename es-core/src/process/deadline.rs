//! [`DeadlineStore`]: when waiting processes must be woken, kept so that
//! it survives a restart.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{StoreError, StreamId};

/// The deadlines of processes, by process manager and process id: at most
/// one per process, the latest [`set`](Self::set) wins.
///
/// Implemented in memory ([`InMemoryDeadlines`]), and by es-postgres and
/// es-sqlite in a table of their own.
#[async_trait]
pub trait DeadlineStore: Send + Sync + 'static {
    /// Sets (`Some`) or clears (`None`) the deadline of a process.
    async fn set(&self, manager: &str, process_id: &StreamId, at: Option<DateTime<Utc>>) -> Result<(), StoreError>;
    /// Up to `limit` processes whose deadline is at or before `now`,
    /// earliest first.
    async fn due(
        &self,
        manager: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(StreamId, DateTime<Utc>)>, StoreError>;
}

/// [`DeadlineStore`] in process memory; clones share the data.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use es_core::{DeadlineStore, InMemoryDeadlines, StreamId};
/// let d = InMemoryDeadlines::new();
/// let at = "2026-01-01T00:00:10Z".parse().unwrap();
/// d.set("transfers", &StreamId::from("t-1"), Some(at)).await.unwrap();
/// assert!(d.due("transfers", "2026-01-01T00:00:09Z".parse().unwrap(), 10).await.unwrap().is_empty());
/// assert_eq!(d.due("transfers", at, 10).await.unwrap().len(), 1);
/// d.set("transfers", &StreamId::from("t-1"), None).await.unwrap();
/// assert!(d.due("transfers", at, 10).await.unwrap().is_empty());
/// # });
/// ```
#[derive(Debug, Clone, Default)]
pub struct InMemoryDeadlines {
    inner: Arc<Mutex<HashMap<String, Index>>>,
}

#[derive(Debug, Default)]
struct Index {
    by_id: HashMap<StreamId, DateTime<Utc>>,
    by_time: BTreeSet<(DateTime<Utc>, StreamId)>,
}

impl InMemoryDeadlines {
    /// No deadlines.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl DeadlineStore for InMemoryDeadlines {
    async fn set(&self, manager: &str, process_id: &StreamId, at: Option<DateTime<Utc>>) -> Result<(), StoreError> {
        let mut all = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let index = all.entry(manager.to_owned()).or_default();
        if let Some(old) = index.by_id.remove(process_id) {
            index.by_time.remove(&(old, process_id.clone()));
        }
        if let Some(at) = at {
            index.by_id.insert(process_id.clone(), at);
            index.by_time.insert((at, process_id.clone()));
        }
        Ok(())
    }

    async fn due(
        &self,
        manager: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(StreamId, DateTime<Utc>)>, StoreError> {
        let all = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(all
            .get(manager)
            .map(|index| {
                index
                    .by_time
                    .iter()
                    .take_while(|(at, _)| *at <= now)
                    .take(limit)
                    .map(|(at, id)| (id.clone(), *at))
                    .collect()
            })
            .unwrap_or_default())
    }
}
