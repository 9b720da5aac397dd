//! The [`EventStore`] trait: append with optimistic concurrency, read a
//! stream, read the global log.

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::{ExpectedVersion, NewEvent, RecordedEvent, ShardFence, StoreError, StreamId};

/// Default number of events fetched per round trip by the paging readers.
pub const DEFAULT_READ_BATCH: usize = 1000;

/// The outcome of a successful append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// Version of the stream's first appended event.
    pub first_version: u64,
    /// Version of the stream after the append (its last event's version).
    pub new_version: u64,
    /// Global positions of the appended events, in order; empty when the
    /// store acknowledges appends before they reach the global log (see
    /// [`EventStore::defers_global_positions`]).
    pub positions: Vec<u64>,
}

/// Which events of the global log to read. Empty lists mean "all".
///
/// ```
/// use es_core::EventFilter;
/// let f = EventFilter::all().event_types(["MoneyDeposited"]).stream_types(["account"]);
/// assert!(f.matches("account", "MoneyDeposited"));
/// assert!(!f.matches("account", "AccountClosed"));
/// assert!(EventFilter::all().matches("any", "Thing"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFilter {
    /// Only these event types (all when empty).
    pub event_types: Vec<String>,
    /// Only these stream types (all when empty).
    pub stream_types: Vec<String>,
}

impl EventFilter {
    /// Every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// Restricts to the given event types.
    #[must_use]
    pub fn event_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Restricts to the given stream types.
    #[must_use]
    pub fn stream_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.stream_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// This filter narrowed to `event_types` (intersected with its own event
    /// types, if it has any); used by selective replays.
    #[must_use]
    pub fn narrowed_to(&self, event_types: Vec<String>) -> Self {
        let event_types = if self.event_types.is_empty() {
            event_types
        } else {
            event_types
                .into_iter()
                .filter(|t| self.event_types.contains(t))
                .collect()
        };
        Self {
            event_types,
            stream_types: self.stream_types.clone(),
        }
    }

    /// Whether the filter lets every event through.
    pub fn is_all(&self) -> bool {
        self.event_types.is_empty() && self.stream_types.is_empty()
    }

    /// Whether an event of this stream type and event type passes.
    pub fn matches(&self, stream_type: &str, event_type: &str) -> bool {
        (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
            && (self.stream_types.is_empty() || self.stream_types.iter().any(|t| t == stream_type))
    }
}

/// An append-only store of event streams with a global log.
///
/// Guarantees every implementation must give (checked by the conformance
/// suite, `es_core::conformance` with the `conformance` feature):
/// - **Atomic appends**: all events of one append are stored, or none.
/// - **Optimistic concurrency**: an append whose [`ExpectedVersion`] does
///   not hold fails with [`StoreError::Conflict`] carrying the real version,
///   and stores nothing. Versions are 1-based and gapless per stream.
/// - **Idempotency by event id**: re-sending an append whose event ids are
///   already stored, in the same stream, in the same order, at a place its
///   expected version allows, returns the original [`AppendResult`] and
///   stores nothing; an id stored anywhere else is
///   [`StoreError::DuplicateEventId`].
/// - **Gap-safe global log**: [`read_all`](EventStore::read_all) returns
///   events in global-position order and never returns a position while a
///   smaller one may still appear, so a reader that remembers the last
///   position it saw never skips an event.
///
/// Implementors write the bounded batch readers; the unbounded paging
/// streams ([`read_stream`](EventStore::read_stream),
/// [`read_all_stream`](EventStore::read_all_stream)) are provided.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends events to a stream of the given type.
    async fn append(
        &self,
        stream_type: &str,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError>;

    /// Appends like [`append`](EventStore::append), but only while `fence`
    /// is current: the append is refused with [`StoreError::Fenced`] (and
    /// stores nothing) when the shard's fence was raised above
    /// `fence.token`. The check is atomic with the append, so once
    /// [`raise_fence`](EventStore::raise_fence) to a higher token has
    /// returned, no append under a lower token can still be stored.
    ///
    /// Stores that cannot fence refuse with [`StoreError::Unsupported`]
    /// (the default), never append unfenced.
    async fn append_fenced(
        &self,
        stream_type: &str,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        fence: ShardFence,
    ) -> Result<AppendResult, StoreError> {
        let _ = (stream_type, stream_id, expected, events, fence);
        Err(StoreError::Unsupported {
            operation: "fenced append",
        })
    }

    /// Raises the fence of `fence.shard` to `fence.token` (a new owner does
    /// this before it handles a command). Raising to the current token
    /// again is a no-op; a token below the current fence is refused with
    /// [`StoreError::Fenced`]. Waits for appends under the old fence that
    /// are in flight, so none of them is stored after this returns.
    async fn raise_fence(&self, fence: ShardFence) -> Result<(), StoreError> {
        let _ = fence;
        Err(StoreError::Unsupported {
            operation: "raise fence",
        })
    }

    /// Reads at most `max_count` events of a stream with version
    /// `>= from_version`, in version order.
    async fn read_stream_batch(
        &self,
        stream_id: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads at most `max_count` events of the global log with position
    /// `> after_position` that pass the filter, in position order.
    async fn read_all(
        &self,
        after_position: u64,
        max_count: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The stored event with this id, if any.
    async fn find_event(&self, event_id: uuid::Uuid) -> Result<Option<RecordedEvent>, StoreError>;

    /// Where each of `ids` is stored, in the order of `ids`: the stream,
    /// version and global position of the event, or `None` when no event
    /// has that id. The shape [`check_replay`] takes. The default asks
    /// [`find_event`](EventStore::find_event) once per id; backends answer
    /// with one query.
    async fn locate_events(&self, ids: &[uuid::Uuid]) -> Result<Vec<Option<(StreamId, u64, u64)>>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(
                self.find_event(*id)
                    .await?
                    .map(|e| (e.stream_id, e.version, e.global_position)),
            );
        }
        Ok(out)
    }

    /// Whether [`append`](EventStore::append) acknowledges events before
    /// they have global positions (write-behind stores). If so, its
    /// [`AppendResult::positions`] is empty, stream reads show
    /// `global_position` 0 for events not yet in the global log, and
    /// [`read_all`](EventStore::read_all) sees an event only once it
    /// reached the log; everything else (versions, conflicts, idempotency,
    /// reading one's own writes) holds as soon as the append returns.
    fn defers_global_positions(&self) -> bool {
        false
    }

    /// Current version of a stream (0 when it does not exist).
    async fn stream_version(&self, stream_id: &StreamId) -> Result<u64, StoreError>;

    /// Highest global position a reader may currently see (0 when empty).
    async fn head_position(&self) -> Result<u64, StoreError>;

    /// Highest global position of any committed event (0 when empty),
    /// counting events a reader cannot see yet because a transaction
    /// holding a lower position is still in flight. A reader that waits
    /// until it has passed this position has seen every append
    /// acknowledged before the call: read-your-writes for a query that
    /// does not know which writes to wait for (a list, say). The default
    /// is [`head_position`](EventStore::head_position), right for stores
    /// whose log never hides a committed event.
    async fn committed_position(&self) -> Result<u64, StoreError> {
        self.head_position().await
    }

    /// Waits until events after `after_position` may be readable, or until
    /// `timeout`. Backends with a wake-up mechanism return early; the default
    /// just sleeps (polling), so the conformance suite's
    /// `wait_for_events_wakes` refuses a store that keeps it: its readers
    /// would see each append only at the end of their wait.
    async fn wait_for_events(&self, after_position: u64, timeout: Duration) -> Result<(), StoreError> {
        let _ = after_position;
        tokio::time::sleep(timeout).await;
        Ok(())
    }

    /// Events fetched per round trip by the paging readers.
    fn read_page_size(&self) -> usize {
        DEFAULT_READ_BATCH
    }

    /// Reads a stream from `from_version` to its end, page by page, never
    /// holding more than one page in memory.
    fn read_stream<'a>(
        &'a self,
        stream_id: &'a StreamId,
        from_version: u64,
    ) -> BoxStream<'a, Result<RecordedEvent, StoreError>> {
        paged(
            self.read_page_size(),
            from_version.max(1),
            move |from, n| self.read_stream_batch(stream_id, from, n),
            |e| e.version + 1,
        )
    }

    /// Reads the global log after `after_position` to its current end, page
    /// by page.
    fn read_all_stream<'a>(
        &'a self,
        after_position: u64,
        filter: &'a EventFilter,
    ) -> BoxStream<'a, Result<RecordedEvent, StoreError>> {
        paged(
            self.read_page_size(),
            after_position,
            move |after, n| self.read_all(after, n, filter),
            |e| e.global_position,
        )
    }
}

/// Builds a stream that pages through a batch reader until a short page.
///
/// As soon as a full page arrives, the next page is requested, and it is
/// polled whenever the consumer asks for an item: the backend reads and
/// sends page N+1 while the consumer works through page N.
fn paged<'a, F, Fut>(
    page: usize,
    start: u64,
    fetch: F,
    next_cursor: fn(&RecordedEvent) -> u64,
) -> BoxStream<'a, Result<RecordedEvent, StoreError>>
where
    F: Fn(u64, usize) -> Fut + Send + 'a,
    Fut: std::future::Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send + 'a,
{
    use std::task::Poll;
    let mut current = Vec::new().into_iter();
    let mut pending: Option<std::pin::Pin<Box<Fut>>> = Some(Box::pin(fetch(start, page)));
    let mut arrived: Option<Result<Vec<RecordedEvent>, StoreError>> = None;
    stream::poll_fn(move |cx| loop {
        if arrived.is_none() {
            if let Some(fut) = pending.as_mut() {
                if let Poll::Ready(result) = fut.as_mut().poll(cx) {
                    pending = None;
                    arrived = Some(result);
                }
            }
        }
        if let Some(event) = current.next() {
            return Poll::Ready(Some(Ok(event)));
        }
        match arrived.take() {
            Some(Ok(batch)) => {
                if let Some(last) = batch.last() {
                    if batch.len() >= page {
                        pending = Some(Box::pin(fetch(next_cursor(last), page)));
                    }
                }
                current = batch.into_iter();
                if current.len() == 0 && pending.is_none() {
                    return Poll::Ready(None);
                }
            }
            Some(Err(e)) => {
                pending = None;
                return Poll::Ready(Some(Err(e)));
            }
            None if pending.is_some() => return Poll::Pending,
            None => return Poll::Ready(None),
        }
    })
    .boxed()
}

/// The longest stream id an append takes, in bytes: every backend stores
/// it (PostgreSQL indexes it, and refuses index rows over about 2.7 kB).
pub const MAX_STREAM_ID_BYTES: usize = 1024;

/// Checks the shape of an append before any backend work: a stream id of
/// 1 to [`MAX_STREAM_ID_BYTES`] bytes without NUL, events, no NUL
/// character in an event's type, payload or metadata, and no event id
/// twice. Backends call this so that all of them refuse the same appends
/// the same way.
pub fn validate_append(stream_id: &StreamId, events: &[NewEvent]) -> Result<(), StoreError> {
    let id = stream_id.as_str();
    if id.is_empty() || id.len() > MAX_STREAM_ID_BYTES || id.contains('\0') {
        return Err(StoreError::InvalidAppend {
            stream_id: stream_id.clone(),
            reason: format!("a stream id is 1 to {MAX_STREAM_ID_BYTES} bytes without NUL"),
        });
    }
    if events.is_empty() {
        return Err(StoreError::InvalidAppend {
            stream_id: stream_id.clone(),
            reason: "no events to append".into(),
        });
    }
    if let Some(e) = events.iter().find(|e| holds_nul(e)) {
        return Err(StoreError::InvalidAppend {
            stream_id: stream_id.clone(),
            reason: format!(
                "event {} has a NUL character in its type, payload or metadata (PostgreSQL's jsonb cannot store one)",
                e.event_id
            ),
        });
    }
    // One event (the common case) cannot repeat an id: no set to build.
    if events.len() > 1 {
        let mut seen: std::collections::HashSet<uuid::Uuid, foldhash::fast::RandomState> =
            std::collections::HashSet::with_capacity_and_hasher(events.len(), foldhash::fast::RandomState::default());
        if let Some(dup) = events.iter().find(|e| !seen.insert(e.event_id)) {
            return Err(StoreError::InvalidAppend {
                stream_id: stream_id.clone(),
                reason: format!("event id {} appears twice in one append", dup.event_id),
            });
        }
    }
    Ok(())
}

/// Whether the event's type, payload or metadata holds a NUL character
/// (in a string or an object key): every backend refuses those alike.
fn holds_nul(event: &NewEvent) -> bool {
    let m = &event.metadata;
    if event.event_type.contains('\0')
        || m.actor_id.as_deref().is_some_and(|a| a.contains('\0'))
        || m.headers.iter().any(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return true;
    }
    // Iterative, so a deeply nested payload built in code cannot overflow
    // the stack.
    let mut pending = vec![&event.payload];
    while let Some(v) = pending.pop() {
        match v {
            serde_json::Value::String(s) if s.contains('\0') => return true,
            serde_json::Value::Array(items) => pending.extend(items),
            serde_json::Value::Object(fields) => {
                for (k, v) in fields {
                    if k.contains('\0') {
                        return true;
                    }
                    pending.push(v);
                }
            }
            _ => {}
        }
    }
    false
}

/// Decides whether an append whose first event id is already stored is a
/// replay of that same append (idempotent success) or a duplicate.
///
/// `stored` are the stored events found for the append's ids, in the
/// append's order (`None` where an id is not stored). Backends call this so
/// that every one of them answers retries the same way.
pub fn check_replay(
    stream_id: &StreamId,
    expected: ExpectedVersion,
    events: &[NewEvent],
    stored: &[Option<(StreamId, u64, u64)>],
) -> Result<Option<AppendResult>, StoreError> {
    let Some(Some((first_stream, first_version, _))) = stored.first() else {
        // The first id is new: if any other id is stored, it is a duplicate.
        return match stored.iter().zip(events).find_map(|(s, e)| s.as_ref().map(|s| (s, e))) {
            Some(((sid, v, _), e)) => Err(StoreError::DuplicateEventId {
                event_id: e.event_id,
                stored_stream_id: sid.clone(),
                stored_version: *v,
            }),
            None => Ok(None),
        };
    };
    let mut positions = Vec::with_capacity(stored.len());
    for (i, (slot, event)) in stored.iter().zip(events).enumerate() {
        match slot {
            Some((sid, v, pos)) if sid == stream_id && *v == first_version + i as u64 => positions.push(*pos),
            Some((sid, v, _)) => {
                return Err(StoreError::DuplicateEventId {
                    event_id: event.event_id,
                    stored_stream_id: sid.clone(),
                    stored_version: *v,
                })
            }
            None => {
                return Err(StoreError::DuplicateEventId {
                    event_id: events[0].event_id,
                    stored_stream_id: first_stream.clone(),
                    stored_version: *first_version,
                })
            }
        }
    }
    let prior = first_version - 1;
    if !expected.accepts(prior) {
        return Err(StoreError::DuplicateEventId {
            event_id: events[0].event_id,
            stored_stream_id: first_stream.clone(),
            stored_version: *first_version,
        });
    }
    Ok(Some(AppendResult {
        first_version: *first_version,
        new_version: first_version + events.len() as u64 - 1,
        positions,
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use futures::TryStreamExt;

    use super::*;

    fn recorded(version: u64) -> RecordedEvent {
        RecordedEvent {
            global_position: version,
            stream_id: StreamId::from("s"),
            stream_type: "t".into(),
            version,
            event_id: uuid::Uuid::now_v7(),
            event_type: "E".into(),
            schema_version: 1,
            payload: serde_json::Value::Null,
            metadata: crate::Metadata::default(),
            recorded_at: chrono::Utc::now(),
        }
    }

    /// A reader over versions 1..=total that fails at `fail_from`, counting
    /// its calls.
    fn reader(
        total: u64,
        fail_from: Option<u64>,
        calls: Arc<AtomicUsize>,
    ) -> impl Fn(u64, usize) -> futures::future::Ready<Result<Vec<RecordedEvent>, StoreError>> {
        move |from, n| {
            calls.fetch_add(1, Ordering::SeqCst);
            if fail_from.is_some_and(|f| from >= f) {
                return futures::future::ready(Err(StoreError::Unavailable {
                    operation: "read",
                    reason: "reader down".into(),
                }));
            }
            futures::future::ready(Ok((from..=total).take(n).map(recorded).collect()))
        }
    }

    #[tokio::test]
    async fn pages_through_every_event_once_in_order_even_when_the_last_page_is_full() {
        for total in [0u64, 1, 9, 10, 11, 30, 31] {
            let calls = Arc::new(AtomicUsize::new(0));
            let read: Vec<_> = paged(10, 1, reader(total, None, Arc::clone(&calls)), |e| e.version + 1)
                .try_collect()
                .await
                .expect("read");
            assert_eq!(
                read.iter().map(|e| e.version).collect::<Vec<_>>(),
                (1..=total).collect::<Vec<_>>()
            );
            // One call per full page, plus the short (or empty) last one.
            assert_eq!(calls.load(Ordering::SeqCst) as u64, total / 10 + 1, "total {total}");
        }
    }

    #[tokio::test]
    async fn the_next_page_is_requested_before_the_current_one_is_consumed() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut events = paged(10, 1, reader(25, None, Arc::clone(&calls)), |e| e.version + 1);
        let first = events.try_next().await.expect("read").expect("an event");
        assert_eq!(first.version, 1);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "page 2 requested while page 1 is being read"
        );
    }

    #[tokio::test]
    async fn a_failing_page_is_reported_after_the_pages_before_it_and_ends_the_stream() {
        let calls = Arc::new(AtomicUsize::new(0));
        let items: Vec<_> = paged(10, 1, reader(35, Some(21), Arc::clone(&calls)), |e| e.version + 1)
            .collect()
            .await;
        assert_eq!(items.len(), 21);
        assert!(items[..20].iter().all(Result::is_ok));
        assert!(matches!(items[20], Err(StoreError::Unavailable { .. })));
    }
}
