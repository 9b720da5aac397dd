use std::sync::{Arc, Mutex};
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
    /// Each stream's slot is created once and then updated in place: a
    /// moka write (admission, housekeeping) per command would cost more
    /// than the rest of the cache hit.
    cache: Cache<StreamId, Slot<A>>,
}

type Slot<A> = Arc<Mutex<Versioned<A>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        self.cache.get(stream_id).map(|slot| lock(&slot).clone())
    }

    async fn put(&self, stream_id: &StreamId, state: &Versioned<A>) {
        // Never replace a newer state with an older one.
        let slot = self
            .cache
            .get_with_by_ref(stream_id, || Arc::new(Mutex::new(state.clone())));
        let mut current = lock(&slot);
        if current.version <= state.version {
            *current = state.clone();
        }
    }

    async fn invalidate(&self, stream_id: &StreamId) {
        self.cache.invalidate(stream_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Counter(u64);
    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    struct Added;
    impl crate::DomainEvent for Added {
        fn event_type(&self) -> &'static str {
            "Added"
        }
    }
    impl Aggregate for Counter {
        const TYPE: &'static str = "counter";
        type Command = ();
        type Event = Added;
        type Error = std::fmt::Error;
        fn handle(&self, (): &()) -> Result<Vec<Added>, std::fmt::Error> {
            Ok(vec![Added])
        }
        fn apply(&mut self, _: &Added) {
            self.0 += 1;
        }
    }

    fn at(version: u64) -> Versioned<Counter> {
        Versioned {
            state: Counter(version),
            version,
        }
    }

    #[tokio::test]
    async fn a_put_never_replaces_a_newer_state_and_invalidate_forgets() {
        let cache = InMemoryStateCache::<Counter>::new(10);
        let id = StreamId::from("c");
        assert!(cache.get(&id).await.is_none());
        cache.put(&id, &at(3)).await;
        cache.put(&id, &at(2)).await;
        assert_eq!(cache.get(&id).await.map(|v| v.version), Some(3));
        cache.put(&id, &at(5)).await;
        assert_eq!(cache.get(&id).await, Some(at(5)));
        cache.invalidate(&id).await;
        assert!(cache.get(&id).await.is_none());
        cache.put(&id, &at(1)).await;
        assert_eq!(cache.get(&id).await.map(|v| v.version), Some(1));
    }
}
