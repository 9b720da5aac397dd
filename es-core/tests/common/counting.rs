//! An [`EventStore`] that delegates to the in-memory store and counts what
//! the repository asks of it: appends, the conflicts it answered, and when
//! (tokio time, so a paused clock shows the repository's backoff exactly).
//! It can also answer the first `n` appends with a conflict, as a store
//! with a busy competitor would.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use es_core::{
    AppendResult, EventFilter, EventStore, ExpectedVersion, InMemoryEventStore, NewEvent, RecordedEvent, StoreError,
    StreamId,
};

#[derive(Default)]
pub(crate) struct CountingStore {
    pub inner: InMemoryEventStore,
    appends: AtomicUsize,
    conflicts: AtomicUsize,
    inject_conflicts: AtomicU64,
    append_times: Mutex<Vec<(StreamId, tokio::time::Instant)>>,
}

impl CountingStore {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Answers the next `n` appends with a conflict (nothing written).
    pub(crate) fn inject_conflicts(&self, n: u64) {
        self.inject_conflicts.store(n, Ordering::SeqCst);
    }

    /// Appends asked of the store.
    pub(crate) fn appends(&self) -> usize {
        self.appends.load(Ordering::SeqCst)
    }

    /// Appends answered with a conflict.
    pub(crate) fn conflicts(&self) -> usize {
        self.conflicts.load(Ordering::SeqCst)
    }

    /// When each append to `stream` was asked, in order.
    pub(crate) fn append_times(&self, stream: &str) -> Vec<tokio::time::Instant> {
        let times = self.append_times.lock().unwrap();
        times
            .iter()
            .filter(|(s, _)| s.as_str() == stream)
            .map(|(_, t)| *t)
            .collect()
    }
}

#[async_trait]
impl EventStore for CountingStore {
    async fn append(
        &self,
        stream_type: &str,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        self.append_times
            .lock()
            .unwrap()
            .push((stream_id.clone(), tokio::time::Instant::now()));
        let injected = self
            .inject_conflicts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let result = if injected {
            Err(StoreError::Conflict {
                stream_id: stream_id.clone(),
                expected,
                actual: self.inner.stream_version(stream_id).await?,
            })
        } else {
            self.inner.append(stream_type, stream_id, expected, events).await
        };
        if matches!(result, Err(StoreError::Conflict { .. })) {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
        }
        result
    }

    async fn read_stream_batch(
        &self,
        stream_id: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream_batch(stream_id, from_version, max_count).await
    }

    async fn read_all(
        &self,
        after_position: u64,
        max_count: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after_position, max_count, filter).await
    }

    async fn find_event(&self, event_id: uuid::Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        self.inner.find_event(event_id).await
    }

    async fn stream_version(&self, stream_id: &StreamId) -> Result<u64, StoreError> {
        self.inner.stream_version(stream_id).await
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        self.inner.head_position().await
    }

    async fn wait_for_events(&self, after_position: u64, timeout: Duration) -> Result<(), StoreError> {
        self.inner.wait_for_events(after_position, timeout).await
    }
}
