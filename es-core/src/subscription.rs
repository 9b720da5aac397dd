//! Live subscriptions to the global log, for any [`EventStore`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};

use crate::{EventFilter, EventStore, RecordedEvent, StoreError};

/// Follows the global log after `after_position`: yields every stored
/// matching event, then new ones as they are appended, forever.
///
/// Built on [`EventStore::read_all`] and [`EventStore::wait_for_events`], so
/// it inherits the store's gap-safety: no event is skipped or repeated.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::{sync::Arc, time::Duration};
/// use futures::StreamExt;
/// use es_core::{subscribe, EventFilter, EventStore, ExpectedVersion, InMemoryEventStore, NewEvent, StreamId};
///
/// let store = Arc::new(InMemoryEventStore::new());
/// let mut live = subscribe(store.clone(), 0, EventFilter::all(), Duration::from_secs(1));
/// store.append("t", &StreamId::from("s"), ExpectedVersion::Any, vec![NewEvent::new("E", serde_json::json!(1))]).await.unwrap();
/// let first = live.next().await.unwrap().unwrap();
/// assert_eq!(first.global_position, 1);
/// # });
/// ```
pub fn subscribe<S>(
    store: Arc<S>,
    after_position: u64,
    filter: EventFilter,
    poll_interval: Duration,
) -> BoxStream<'static, Result<RecordedEvent, StoreError>>
where
    S: EventStore + ?Sized,
{
    struct State<S: ?Sized> {
        store: Arc<S>,
        position: u64,
        buffer: VecDeque<RecordedEvent>,
        filter: EventFilter,
    }
    let init = State {
        store,
        position: after_position,
        buffer: VecDeque::new(),
        filter,
    };
    stream::unfold(init, move |mut st| async move {
        loop {
            if let Some(event) = st.buffer.pop_front() {
                return Some((Ok(event), st));
            }
            let head = match st.store.head_position().await {
                Ok(h) => h,
                Err(e) => return Some((Err(e), st)),
            };
            let page_size = st.store.read_page_size();
            match st.store.read_all(st.position, page_size, &st.filter).await {
                Ok(batch) => {
                    let (next, _) = crate::backend::checkpoint_after_page(st.position, head, &batch, page_size);
                    st.position = next;
                    if batch.is_empty() {
                        if let Err(e) = st.store.wait_for_events(st.position, poll_interval).await {
                            return Some((Err(e), st));
                        }
                    }
                    st.buffer.extend(batch);
                }
                Err(e) => return Some((Err(e), st)),
            }
        }
    })
    .boxed()
}
