//! Typed transactional projections: decoded events of one aggregate.

use std::sync::Arc;

use async_trait::async_trait;
use es_core::{Aggregate, BoxError, EventCodec, EventEnvelope, EventFilter, RecordedEvent};
use sqlx::SqliteConnection;

use super::{PageFailure, SqliteProjector};

/// The events of `P`'s aggregate.
pub(crate) type EventOf<P> = <<P as SqliteTypedProjector>::Aggregate as Aggregate>::Event;

/// A projection of one aggregate type into SQLite whose handler receives
/// decoded, upcast events; run it through [`SqliteTyped`].
///
/// ```
/// use async_trait::async_trait;
/// use es_core::{Aggregate, BoxError, EventEnvelope};
/// use es_sqlite::SqliteTypedProjector;
/// use sqlx::SqliteConnection;
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
/// # enum CounterEvent { Added(i64) }
/// # impl es_core::DomainEvent for CounterEvent { fn event_type(&self) -> &'static str { "Added" } }
/// # #[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
/// # struct Counter;
/// # impl Aggregate for Counter {
/// #     const TYPE: &'static str = "counter";
/// #     type Command = i64; type Event = CounterEvent; type Error = std::convert::Infallible;
/// #     fn handle(&self, n: &i64) -> Result<Vec<CounterEvent>, Self::Error> { Ok(vec![CounterEvent::Added(*n)]) }
/// #     fn apply(&mut self, _: &CounterEvent) {}
/// # }
///
/// /// Totals per counter.
/// struct Totals;
///
/// #[async_trait]
/// impl SqliteTypedProjector for Totals {
///     type Aggregate = Counter;
///     fn name(&self) -> &str { "counter_totals" }
///     async fn setup(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
///         sqlx::query("CREATE TABLE IF NOT EXISTS counter_totals (id TEXT PRIMARY KEY, total INTEGER NOT NULL)")
///             .execute(tx).await?;
///         Ok(())
///     }
///     async fn apply(&self, tx: &mut SqliteConnection, e: &EventEnvelope<CounterEvent>) -> Result<(), BoxError> {
///         let CounterEvent::Added(n) = e.event;
///         sqlx::query("INSERT INTO counter_totals VALUES (?1, ?2) \
///                      ON CONFLICT (id) DO UPDATE SET total = total + excluded.total")
///             .bind(e.stream_id.as_str()).bind(n).execute(tx).await?;
///         Ok(())
///     }
///     async fn reset(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
///         sqlx::query("DELETE FROM counter_totals").execute(tx).await?;
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait SqliteTypedProjector: Send + Sync + 'static {
    /// The aggregate whose events this projection reads.
    type Aggregate: Aggregate;
    /// Unique name; the key of the checkpoint.
    fn name(&self) -> &str;
    /// Creates the read model's tables and indexes; must be idempotent.
    async fn setup(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
        let _ = tx;
        Ok(())
    }
    /// Applies one decoded event, writing through `tx` only.
    async fn apply(&self, tx: &mut SqliteConnection, event: &EventEnvelope<EventOf<Self>>) -> Result<(), BoxError>;
    /// Applies a page of decoded events; the default calls
    /// [`apply`](Self::apply) per event.
    async fn apply_page(
        &self,
        tx: &mut SqliteConnection,
        events: &[EventEnvelope<EventOf<Self>>],
    ) -> Result<(), PageFailure> {
        for (i, event) in events.iter().enumerate() {
            self.apply(tx, event).await.map_err(|e| PageFailure::at(i, e))?;
        }
        Ok(())
    }
    /// Clears the read model before a full rebuild.
    async fn reset(&self, tx: &mut SqliteConnection) -> Result<(), BoxError>;
}

/// Runs a [`SqliteTypedProjector`] as a [`SqliteProjector`]: reads only
/// its aggregate's stream type and decodes every event (upcasting first);
/// an event that does not decode fails with es-core's `Undecodable`, which
/// the runner dead-letters or stops on without retrying.
pub struct SqliteTyped<P: ?Sized> {
    codec: EventCodec,
    inner: Arc<P>,
}

impl<P: SqliteTypedProjector + ?Sized> SqliteTyped<P> {
    /// Wraps `projector`, decoding without upcasters.
    pub fn new(projector: Arc<P>) -> Self {
        Self {
            codec: EventCodec::default(),
            inner: projector,
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
impl<P: SqliteTypedProjector + ?Sized> SqliteProjector for SqliteTyped<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().stream_types([<P::Aggregate as Aggregate>::TYPE])
    }

    async fn setup(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
        self.inner.setup(tx).await
    }

    async fn apply(&self, tx: &mut SqliteConnection, event: &RecordedEvent) -> Result<(), BoxError> {
        let envelope = EventEnvelope::decode(&self.codec, event)?;
        self.inner.apply(tx, &envelope).await
    }

    async fn apply_page(&self, tx: &mut SqliteConnection, events: &[RecordedEvent]) -> Result<(), PageFailure> {
        let decoded = EventEnvelope::decode_page(&self.codec, events)?;
        self.inner.apply_page(tx, &decoded).await
    }

    async fn reset(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
        self.inner.reset(tx).await
    }
}
