//! [`View`]: a serde read model per stream, kept by the library.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{EventEnvelope, TypedProjector};
use crate::error::BoxError;
use crate::{Aggregate, StreamId, Versioned};

/// A read model of one stream, folded from its events and stored as JSON
/// by a view store ([`InMemoryViews`] here, es-postgres's `PgViews` in a
/// table it creates): a read model without writing SQL.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use es_core::*;
/// use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Serialize, Deserialize)]
/// # enum CounterEvent { Added(u64) }
/// # impl DomainEvent for CounterEvent { fn event_type(&self) -> &'static str { "Added" } }
/// # #[derive(Debug, Clone, Default, Serialize, Deserialize)]
/// # struct Counter;
/// # impl Aggregate for Counter {
/// #     const TYPE: &'static str = "counter";
/// #     type Command = u64; type Event = CounterEvent; type Error = std::convert::Infallible;
/// #     fn handle(&self, n: &u64) -> Result<Vec<CounterEvent>, Self::Error> { Ok(vec![CounterEvent::Added(*n)]) }
/// #     fn apply(&mut self, _: &CounterEvent) {}
/// # }
///
/// #[derive(Debug, Clone, Default, Serialize, Deserialize)]
/// struct Summary { adds: u32, total: u64 }
///
/// impl View for Summary {
///     type Aggregate = Counter;
///     fn apply(&mut self, e: &EventEnvelope<CounterEvent>) {
///         let CounterEvent::Added(n) = e.event;
///         self.adds += 1;
///         self.total += n;
///     }
/// }
///
/// let store = Arc::new(InMemoryEventStore::new());
/// let repo = Repository::<Counter>::builder(store.clone()).build();
/// repo.execute("c1", 5).await.unwrap();
/// repo.execute("c1", 2).await.unwrap();
/// let views = Arc::new(InMemoryViews::<Summary>::new("counter_summary"));
/// let unit = ProjectorUnit::new(Arc::new(Typed::new(views.clone())), Arc::new(InMemoryCheckpointStore::new()));
/// ProjectionRunner::new(store, Arc::new(unit)).catch_up().await.unwrap();
/// let c1 = views.get(&StreamId::from("c1")).unwrap();
/// assert_eq!((c1.version, c1.state.adds, c1.state.total), (2, 2, 7));
/// # });
/// ```
pub trait View: Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The aggregate whose streams this view summarizes.
    type Aggregate: Aggregate;
    /// Folds one event into the view.
    fn apply(&mut self, event: &EventEnvelope<<Self::Aggregate as Aggregate>::Event>);
}

/// [`View`]s kept in process memory, by stream id; a [`TypedProjector`].
pub struct InMemoryViews<V> {
    name: String,
    views: RwLock<HashMap<StreamId, Arc<Versioned<V>>>>,
}

impl<V: View> InMemoryViews<V> {
    /// An empty view store; `name` is the projection's (checkpoint key).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            views: RwLock::default(),
        }
    }

    /// The view of `stream_id` and the version it reflects.
    pub fn get(&self, stream_id: impl Into<StreamId>) -> Option<Arc<Versioned<V>>> {
        let stream_id: StreamId = stream_id.into();
        self.views
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&stream_id)
            .cloned()
    }

    /// How many streams have a view.
    pub fn len(&self) -> usize {
        self.views
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether there is no view.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl<V: View> TypedProjector for InMemoryViews<V> {
    type Aggregate = V::Aggregate;

    fn name(&self) -> &str {
        &self.name
    }

    async fn apply(&self, e: &EventEnvelope<<V::Aggregate as Aggregate>::Event>) -> Result<(), BoxError> {
        let mut views = self.views.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = views.get(&e.stream_id);
        if current.is_some_and(|v| v.version >= e.version) {
            return Ok(());
        }
        let mut next = current.map_or_else(
            || Versioned {
                state: V::default(),
                version: 0,
            },
            |v| v.as_ref().clone(),
        );
        next.state.apply(e);
        next.version = e.version;
        views.insert(e.stream_id.clone(), Arc::new(next));
        Ok(())
    }

    async fn reset(&self) -> Result<(), BoxError> {
        self.views
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        Ok(())
    }
}
