use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use uuid::Uuid;

use super::{read, write};
use crate::store::{check_replay, validate_append};
use crate::{
    AppendResult, EventFilter, EventStore, ExpectedVersion, NewEvent, RecordedEvent, ShardFence, StoreError, StreamId,
};

/// A thread-safe in-memory [`EventStore`] with a global log and wake-ups for
/// live readers.
///
/// Appends are serialized by one lock, so global positions are assigned in
/// commit order and the log has no gaps. Clones share the same data.
///
/// ```
/// # tokio_test_block_on(async {
/// use es_core::{EventStore, ExpectedVersion, InMemoryEventStore, NewEvent, StreamId};
/// use serde_json::json;
///
/// let store = InMemoryEventStore::new();
/// let id = StreamId::from("counter-1");
/// let res = store
///     .append("counter", &id, ExpectedVersion::NoStream, vec![NewEvent::new("Incremented", json!(1))])
///     .await
///     .unwrap();
/// assert_eq!(res.new_version, 1);
/// assert!(store
///     .append("counter", &id, ExpectedVersion::NoStream, vec![NewEvent::new("Incremented", json!(2))])
///     .await
///     .unwrap_err()
///     .is_conflict());
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone)]
pub struct InMemoryEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    data: RwLock<Data>,
    head: watch::Sender<u64>,
}

#[derive(Default)]
struct Data {
    /// The global log; position p is at index p - 1.
    log: Vec<Arc<RecordedEvent>>,
    /// Positions of each stream's events, in version order.
    streams: HashMap<StreamId, Vec<u64>>,
    /// Position of every stored event id.
    ids: HashMap<Uuid, u64>,
    /// The fence of each shard that has one.
    fences: HashMap<u32, u64>,
}

impl Default for InMemoryEventStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for InMemoryEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let data = read(&self.inner.data);
        f.debug_struct("InMemoryEventStore")
            .field("events", &data.log.len())
            .field("streams", &data.streams.len())
            .finish()
    }
}

impl InMemoryEventStore {
    /// An empty store.
    pub fn new() -> Self {
        let (head, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                data: RwLock::new(Data::default()),
                head,
            }),
        }
    }

    /// Number of events stored.
    pub fn len(&self) -> usize {
        read(&self.inner.data).log.len()
    }

    /// Whether no event is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends under the write lock, refused when `fence` is stale.
    fn append_checked(
        &self,
        stream_type: &str,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        fence: Option<ShardFence>,
    ) -> Result<AppendResult, StoreError> {
        validate_append(stream_id, &events)?;
        let mut data = write(&self.inner.data);
        if events.iter().any(|e| data.ids.contains_key(&e.event_id)) {
            let stored: Vec<_> = events
                .iter()
                .map(|e| {
                    data.ids.get(&e.event_id).map(|&p| {
                        let rec = &data.log[(p - 1) as usize];
                        (rec.stream_id.clone(), rec.version, p)
                    })
                })
                .collect();
            if let Some(result) = check_replay(stream_id, expected, &events, &stored)? {
                return Ok(result);
            }
        }
        if let Some(fence) = fence {
            let current = data.fences.get(&fence.shard).copied().unwrap_or(0);
            if current > fence.token {
                return Err(StoreError::Fenced {
                    shard: fence.shard,
                    token: fence.token,
                    current,
                });
            }
        }
        let current = data.streams.get(stream_id).map_or(0, |s| s.len() as u64);
        if !expected.accepts(current) {
            return Err(StoreError::Conflict {
                stream_id: stream_id.clone(),
                expected,
                actual: current,
            });
        }
        let mut positions = Vec::with_capacity(events.len());
        for (i, e) in events.into_iter().enumerate() {
            let position = data.log.len() as u64 + 1;
            data.ids.insert(e.event_id, position);
            data.log.push(Arc::new(RecordedEvent {
                global_position: position,
                stream_id: stream_id.clone(),
                stream_type: stream_type.to_owned(),
                version: current + 1 + i as u64,
                event_id: e.event_id,
                event_type: e.event_type,
                schema_version: e.schema_version,
                payload: e.payload,
                metadata: e.metadata,
                recorded_at: e.recorded_at,
            }));
            positions.push(position);
        }
        data.streams.entry(stream_id.clone()).or_default().extend(&positions);
        let head = data.log.len() as u64;
        drop(data);
        // Appends that raced may publish out of order: the head only moves
        // forward.
        self.inner.head.send_if_modified(|h| {
            let moved = head > *h;
            *h = (*h).max(head);
            moved
        });
        Ok(AppendResult {
            first_version: current + 1,
            new_version: current + positions.len() as u64,
            positions,
        })
    }
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    #[tracing::instrument(level = "debug", name = "es.memory.append", skip_all, fields(stream_id = %stream_id, events = events.len()))]
    async fn append(
        &self,
        stream_type: &str,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        self.append_checked(stream_type, stream_id, expected, events, None)
    }

    #[tracing::instrument(level = "debug", name = "es.memory.append_fenced", skip_all, fields(stream_id = %stream_id, shard = fence.shard, token = fence.token))]
    async fn append_fenced(
        &self,
        stream_type: &str,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        fence: ShardFence,
    ) -> Result<AppendResult, StoreError> {
        self.append_checked(stream_type, stream_id, expected, events, Some(fence))
    }

    async fn raise_fence(&self, fence: ShardFence) -> Result<(), StoreError> {
        let mut data = write(&self.inner.data);
        let current = data.fences.entry(fence.shard).or_insert(0);
        if *current > fence.token {
            return Err(StoreError::Fenced {
                shard: fence.shard,
                token: fence.token,
                current: *current,
            });
        }
        *current = fence.token;
        Ok(())
    }

    async fn read_stream_batch(
        &self,
        stream_id: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let data = read(&self.inner.data);
        let Some(positions) = data.streams.get(stream_id) else {
            return Ok(Vec::new());
        };
        let start = from_version.max(1) as usize - 1;
        Ok(positions
            .iter()
            .skip(start)
            .take(max_count)
            .map(|&p| RecordedEvent::clone(&data.log[(p - 1) as usize]))
            .collect())
    }

    async fn read_all(
        &self,
        after_position: u64,
        max_count: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let data = read(&self.inner.data);
        let start = (after_position as usize).min(data.log.len());
        Ok(data.log[start..]
            .iter()
            .filter(|e| filter.matches(&e.stream_type, &e.event_type))
            .take(max_count)
            .map(|e| RecordedEvent::clone(e))
            .collect())
    }

    async fn find_event(&self, event_id: Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        let data = read(&self.inner.data);
        Ok(data
            .ids
            .get(&event_id)
            .map(|&p| RecordedEvent::clone(&data.log[(p - 1) as usize])))
    }

    async fn stream_version(&self, stream_id: &StreamId) -> Result<u64, StoreError> {
        Ok(read(&self.inner.data)
            .streams
            .get(stream_id)
            .map_or(0, |s| s.len() as u64))
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        Ok(*self.inner.head.borrow())
    }

    async fn wait_for_events(&self, after_position: u64, timeout: Duration) -> Result<(), StoreError> {
        let mut rx = self.inner.head.subscribe();
        // Either outcome (new events or timeout) is fine for the caller.
        let _ = tokio::time::timeout(timeout, rx.wait_for(|&head| head > after_position)).await;
        Ok(())
    }
}
