//! Typed transactional projections: decoded events of one aggregate.

use std::sync::Arc;

use async_trait::async_trait;
use es_core::{Aggregate, BoxError, EventCodec, EventEnvelope, EventFilter, RecordedEvent};
use sqlx::PgConnection;

use super::{PageFailure, TransactionalProjector};

/// The events of `P`'s aggregate.
pub(crate) type EventOf<P> = <<P as PgTypedProjector>::Aggregate as Aggregate>::Event;

/// A projection of one aggregate type into PostgreSQL whose handler
/// receives decoded, upcast events; run it through [`PgTyped`].
///
/// ```no_run
/// use async_trait::async_trait;
/// use es_core::{Aggregate, BoxError, EventEnvelope};
/// use es_postgres::{PageFailure, PgTypedProjector};
/// use sqlx::PgConnection;
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
/// /// Totals per counter, in `app.counter_totals`.
/// struct Totals;
///
/// #[async_trait]
/// impl PgTypedProjector for Totals {
///     type Aggregate = Counter;
///     fn name(&self) -> &str { "counter_totals" }
///     async fn setup(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
///         sqlx::query("CREATE TABLE IF NOT EXISTS app.counter_totals (id TEXT PRIMARY KEY, total BIGINT NOT NULL)")
///             .execute(tx).await?;
///         Ok(())
///     }
///     async fn apply(&self, tx: &mut PgConnection, e: &EventEnvelope<CounterEvent>) -> Result<(), BoxError> {
///         let CounterEvent::Added(n) = e.event;
///         sqlx::query("INSERT INTO app.counter_totals VALUES ($1, $2) \
///                      ON CONFLICT (id) DO UPDATE SET total = counter_totals.total + EXCLUDED.total")
///             .bind(e.stream_id.as_str()).bind(n).execute(tx).await?;
///         Ok(())
///     }
///     async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
///         sqlx::query("TRUNCATE app.counter_totals").execute(tx).await?;
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait PgTypedProjector: Send + Sync + 'static {
    /// The aggregate whose events this projection reads.
    type Aggregate: Aggregate;
    /// Unique name; the key of the checkpoint.
    fn name(&self) -> &str;
    /// Creates the read model's tables and indexes; must be idempotent.
    async fn setup(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        let _ = tx;
        Ok(())
    }
    /// Applies one decoded event, writing through `tx` only.
    async fn apply(&self, tx: &mut PgConnection, event: &EventEnvelope<EventOf<Self>>) -> Result<(), BoxError>;
    /// Applies a page of decoded events; the default calls
    /// [`apply`](Self::apply) per event. Override it to write the page with
    /// a few set-based statements.
    async fn apply_page(
        &self,
        tx: &mut PgConnection,
        events: &[EventEnvelope<EventOf<Self>>],
    ) -> Result<(), PageFailure> {
        for (i, event) in events.iter().enumerate() {
            self.apply(tx, event).await.map_err(|e| PageFailure::at(i, e))?;
        }
        Ok(())
    }
    /// Clears the read model before a full rebuild.
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError>;
}

/// Runs a [`PgTypedProjector`] as a [`TransactionalProjector`]: reads only
/// its aggregate's stream type and decodes every event (upcasting first);
/// an event that does not decode fails with es-core's `Undecodable`, which
/// the runner dead-letters or stops on without retrying.
pub struct PgTyped<P: ?Sized> {
    codec: EventCodec,
    inner: Arc<P>,
}

impl<P: PgTypedProjector + ?Sized> PgTyped<P> {
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
impl<P: PgTypedProjector + ?Sized> TransactionalProjector for PgTyped<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().stream_types([<P::Aggregate as Aggregate>::TYPE])
    }

    async fn setup(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        self.inner.setup(tx).await
    }

    async fn apply(&self, tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), BoxError> {
        let envelope = EventEnvelope::decode(&self.codec, event)?;
        self.inner.apply(tx, &envelope).await
    }

    async fn apply_page(&self, tx: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), PageFailure> {
        let decoded = EventEnvelope::decode_page(&self.codec, events)?;
        self.inner.apply_page(tx, &decoded).await
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        self.inner.reset(tx).await
    }
}
