//! Typed projections: handlers receive decoded events of one aggregate.

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Projector;
use crate::error::BoxError;
use crate::{Aggregate, CodecError, DomainEvent, EventCodec, EventFilter, Metadata, RecordedEvent, StreamId};

/// A decoded event with its place in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct EventEnvelope<E> {
    /// Position in the global log.
    pub global_position: u64,
    /// The stream (aggregate id).
    pub stream_id: StreamId,
    /// The stream's version after this event.
    pub version: u64,
    /// The event's id.
    pub event_id: Uuid,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Correlation, causation, actor and headers.
    pub metadata: Metadata,
    /// The event, upcast to today's schema and decoded.
    pub event: E,
}

impl<E: DomainEvent> EventEnvelope<E> {
    /// Decodes `event` with `codec` (upcasting first).
    pub fn decode(codec: &EventCodec, event: &RecordedEvent) -> Result<Self, Undecodable> {
        let decoded = codec.decode(event).map_err(|source| Undecodable {
            global_position: event.global_position,
            source,
        })?;
        Ok(Self {
            global_position: event.global_position,
            stream_id: event.stream_id.clone(),
            version: event.version,
            event_id: event.event_id,
            recorded_at: event.recorded_at,
            metadata: event.metadata.clone(),
            event: decoded,
        })
    }
}

impl<E: DomainEvent> EventEnvelope<E> {
    /// Decodes a page of events; the first that does not decode fails the
    /// page at its index (with [`Undecodable`]).
    pub fn decode_page(codec: &EventCodec, events: &[RecordedEvent]) -> Result<Vec<Self>, super::PageFailure> {
        events
            .iter()
            .enumerate()
            .map(|(i, event)| Self::decode(codec, event).map_err(|e| super::PageFailure::at(i, e)))
            .collect()
    }
}

/// An event that does not decode into the projection's event type. The
/// runner does not retry it: it stops or dead-letters at once.
#[derive(Debug, thiserror::Error)]
#[error("event at position {global_position} does not decode: {source}")]
pub struct Undecodable {
    /// Its position.
    pub global_position: u64,
    /// The codec's error.
    #[source]
    pub source: CodecError,
}

/// A projection of one aggregate type whose handler receives typed events.
///
/// Wrap it in [`Typed`] to run it (in a [`ProjectorUnit`](crate::ProjectorUnit));
/// es-postgres has the transactional counterpart.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::{Arc, Mutex};
/// use es_core::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// enum CounterEvent { Added(u64) }
/// impl DomainEvent for CounterEvent { fn event_type(&self) -> &'static str { "Added" } }
/// #[derive(Debug, Clone, Default, Serialize, Deserialize)]
/// struct Counter(u64);
/// impl Aggregate for Counter {
///     const TYPE: &'static str = "counter";
///     type Command = u64;
///     type Event = CounterEvent;
///     type Error = std::convert::Infallible;
///     fn handle(&self, n: &u64) -> Result<Vec<CounterEvent>, Self::Error> { Ok(vec![CounterEvent::Added(*n)]) }
///     fn apply(&mut self, CounterEvent::Added(n): &CounterEvent) { self.0 += n; }
/// }
///
/// /// The total over every counter.
/// #[derive(Default)]
/// struct Total(Mutex<u64>);
/// #[async_trait::async_trait]
/// impl TypedProjector for Total {
///     type Aggregate = Counter;
///     fn name(&self) -> &str { "total" }
///     async fn apply(&self, e: &EventEnvelope<CounterEvent>) -> Result<(), BoxError> {
///         let CounterEvent::Added(n) = e.event;
///         *self.0.lock().unwrap() += n;
///         Ok(())
///     }
/// }
///
/// let store = Arc::new(InMemoryEventStore::new());
/// let repo = Repository::<Counter>::builder(store.clone()).build();
/// repo.execute("c1", 5).await.unwrap();
/// repo.execute("c2", 7).await.unwrap();
/// let total = Arc::new(Total::default());
/// let unit = ProjectorUnit::new(Arc::new(Typed::new(total.clone())), Arc::new(InMemoryCheckpointStore::new()));
/// ProjectionRunner::new(store, Arc::new(unit)).catch_up().await.unwrap();
/// assert_eq!(*total.0.lock().unwrap(), 12);
/// # });
/// ```
#[async_trait]
pub trait TypedProjector: Send + Sync + 'static {
    /// The aggregate whose events this projection reads.
    type Aggregate: Aggregate;
    /// Unique name; the key of the checkpoint.
    fn name(&self) -> &str;
    /// Applies one decoded event.
    async fn apply(&self, event: &EventEnvelope<<Self::Aggregate as Aggregate>::Event>) -> Result<(), BoxError>;
    /// Clears the read model, before a full rebuild.
    async fn reset(&self) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Runs a [`TypedProjector`] as a [`Projector`]: reads only the
/// aggregate's stream type and decodes each event through an
/// [`EventCodec`] (with the upcasters given to [`with_codec`](Typed::with_codec)).
pub struct Typed<P: ?Sized> {
    codec: EventCodec,
    inner: Arc<P>,
    _marker: PhantomData<fn()>,
}

impl<P: TypedProjector + ?Sized> Typed<P> {
    /// Wraps `projector`, decoding without upcasters.
    pub fn new(projector: Arc<P>) -> Self {
        Self {
            codec: EventCodec::default(),
            inner: projector,
            _marker: PhantomData,
        }
    }

    /// Decodes with `codec` (its upcasters run first).
    #[must_use]
    pub fn with_codec(mut self, codec: EventCodec) -> Self {
        self.codec = codec;
        self
    }

    /// The wrapped projector.
    pub fn inner(&self) -> &Arc<P> {
        &self.inner
    }
}

#[async_trait]
impl<P: TypedProjector + ?Sized> Projector for Typed<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().stream_types([<P::Aggregate as Aggregate>::TYPE])
    }

    async fn apply(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        let envelope = EventEnvelope::decode(&self.codec, event)?;
        self.inner.apply(&envelope).await
    }

    async fn reset(&self) -> Result<(), BoxError> {
        self.inner.reset().await
    }
}
