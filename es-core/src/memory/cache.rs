use std::time::Duration;

use async_trait::async_trait;
use moka::sync::Cache;

use crate::{Aggregate, StateCache, StreamId, Versioned};

/// A bounded in-process [`StateCache`] (moka: TinyLFU admission, LRU
/// eviction, optional time-to-idle).
///
/// ```
/// use es_core::InMemoryStateCache;
/// # #[derive(Default, Clone, serde::Serialize, serde::Deserialize)] struct A;
/// # impl es_core::Aggregate for A { const TYPE: &'static str = "a"; type Command = ();
/// #   type Event = E; type Error = std::fmt::Error;
/// #   fn handle(&self, _: &()) -> Result<Vec<E>, std::fmt::Error> { Ok(vec![]) } fn apply(&mut self, _: &E) {} }
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)] struct E;
/// # impl es_core::DomainEvent for E { fn event_type(&self) -> &'static str { "E" } }
/// let cache: InMemoryStateCache<A> = InMemoryStateCache::new(10_000);
/// ```
pub struct InMemoryStateCache<A: Aggregate> {
    cache: Cache<StreamId, Versioned<A>>,
}

impl<A: Aggregate> std::fmt::Debug for InMemoryStateCache<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryStateCache")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl<A: Aggregate> InMemoryStateCache<A> {
    /// A cache holding at most `max_entries` states.
    pub fn new(max_entries: u64) -> Self {
        Self {
            cache: Cache::builder().max_capacity(max_entries).build(),
        }
    }

    /// A cache whose entries also expire after `idle` without access.
    pub fn with_time_to_idle(max_entries: u64, idle: Duration) -> Self {
        Self {
            cache: Cache::builder().max_capacity(max_entries).time_to_idle(idle).build(),
        }
    }
}

#[async_trait]
impl<A: Aggregate> StateCache<A> for InMemoryStateCache<A> {
    async fn get(&self, stream_id: &StreamId) -> Option<Versioned<A>> {
        self.cache.get(stream_id)
    }

    async fn put(&self, stream_id: &StreamId, state: &Versioned<A>) {
        self.cache
            .entry(stream_id.clone())
            .and_compute_with(|existing| match existing {
                Some(e) if e.value().version > state.version => moka::ops::compute::Op::Nop,
                _ => moka::ops::compute::Op::Put(state.clone()),
            });
    }

    async fn invalidate(&self, stream_id: &StreamId) {
        self.cache.invalidate(stream_id);
    }
}
