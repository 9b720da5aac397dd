//! [`FencedStore`]: an [`EventStore`] whose appends carry their shard's
//! fence.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::ShardFence;
use crate::{AppendResult, EventFilter, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamId};

/// Tells a [`FencedStore`] which fence a stream's appends are written under.
pub trait FenceSource: Send + Sync + 'static {
    /// The fence for appends to `stream_id`: `Ok(None)` appends without a
    /// fence (as a plain store does), `Err` refuses the append before it
    /// reaches the store (typically [`StoreError::NotShardOwner`] when this
    /// process does not own the stream's shard right now).
    fn fence_for(&self, stream_id: &StreamId) -> Result<Option<ShardFence>, StoreError>;
}

/// An [`EventStore`] that appends through
/// [`append_fenced`](EventStore::append_fenced) with the fence its
/// [`FenceSource`] gives for the stream; reads go straight to the inner
/// store.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use es_core::{
///     EventStore, ExpectedVersion, FenceSource, FencedStore, InMemoryEventStore, NewEvent, ShardFence, StoreError,
///     StreamId,
/// };
///
/// /// Writes every stream under shard 0, token 1.
/// struct Token1;
/// impl FenceSource for Token1 {
///     fn fence_for(&self, _: &StreamId) -> Result<Option<ShardFence>, StoreError> {
///         Ok(Some(ShardFence::new(0, 1)))
///     }
/// }
///
/// let inner = Arc::new(InMemoryEventStore::new());
/// let store = FencedStore::new(inner.clone(), Arc::new(Token1));
/// inner.raise_fence(ShardFence::new(0, 1)).await.unwrap();
/// let id = StreamId::from("s");
/// store.append("t", &id, ExpectedVersion::NoStream, vec![NewEvent::new("E", serde_json::json!(1))]).await.unwrap();
/// // A newer owner raises the fence: this writer is refused from now on.
/// inner.raise_fence(ShardFence::new(0, 2)).await.unwrap();
/// let refused = store.append("t", &id, ExpectedVersion::Exact(1), vec![NewEvent::new("E", serde_json::json!(2))]).await;
/// assert!(matches!(refused, Err(StoreError::Fenced { shard: 0, token: 1, current: 2 })));
/// assert_eq!(inner.stream_version(&id).await.unwrap(), 1);
/// # });
/// ```
pub struct FencedStore<S: EventStore + ?Sized = dyn EventStore> {
    inner: Arc<S>,
    source: Arc<dyn FenceSource>,
}

impl<S: EventStore + ?Sized> FencedStore<S> {
    /// Fences the appends of `inner` with what `source` says.
    pub fn new(inner: Arc<S>, source: Arc<dyn FenceSource>) -> Self {
        Self { inner, source }
    }

    /// The store underneath.
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }
}

#[async_trait]
impl<S: EventStore + ?Sized> EventStore for FencedStore<S> {
    async fn append(
        &self,
        stream_type: &str,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        match self.source.fence_for(stream_id)? {
            Some(fence) => {
                self.inner
                    .append_fenced(stream_type, stream_id, expected, events, fence)
                    .await
            }
            None => self.inner.append(stream_type, stream_id, expected, events).await,
        }
    }

    async fn append_fenced(
        &self,
        stream_type: &str,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        fence: ShardFence,
    ) -> Result<AppendResult, StoreError> {
        self.inner
            .append_fenced(stream_type, stream_id, expected, events, fence)
            .await
    }

    async fn raise_fence(&self, fence: ShardFence) -> Result<(), StoreError> {
        self.inner.raise_fence(fence).await
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

    async fn locate_events(&self, ids: &[uuid::Uuid]) -> Result<Vec<Option<(StreamId, u64, u64)>>, StoreError> {
        self.inner.locate_events(ids).await
    }

    fn defers_global_positions(&self) -> bool {
        self.inner.defers_global_positions()
    }

    async fn stream_version(&self, stream_id: &StreamId) -> Result<u64, StoreError> {
        self.inner.stream_version(stream_id).await
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        self.inner.head_position().await
    }

    async fn committed_position(&self) -> Result<u64, StoreError> {
        self.inner.committed_position().await
    }

    async fn wait_for_events(&self, after_position: u64, timeout: Duration) -> Result<(), StoreError> {
        self.inner.wait_for_events(after_position, timeout).await
    }

    fn read_page_size(&self) -> usize {
        self.inner.read_page_size()
    }
}
