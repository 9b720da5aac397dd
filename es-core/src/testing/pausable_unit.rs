//! [`PausableUnit`]: a projection unit whose pages can be held back, for
//! tests of several runners sharing one projection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use crate::projection::{Advance, DeadLetter, ProjectionUnit, UnitError};
use crate::{EventFilter, RecordedEvent, StoreError};

/// One runner's handle on a [`ProjectionUnit`] that several runners share
/// (their units write the same read model and checkpoint). While paused,
/// its [`apply`](ProjectionUnit::apply) calls wait *before* reaching the
/// shared unit (holding no transaction or lock meanwhile), so a test can
/// give each runner a stretch of the log alone; it counts the events its
/// own calls applied (a page refused because another runner moved the
/// checkpoint first counts nothing), so a test can assert that every
/// runner did work.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use es_core::testing::PausableUnit;
/// use es_core::*;
///
/// struct Nothing;
/// #[async_trait::async_trait]
/// impl Projector for Nothing {
///     fn name(&self) -> &str { "nothing" }
///     async fn apply(&self, _: &RecordedEvent) -> Result<(), BoxError> { Ok(()) }
/// }
///
/// let store = Arc::new(InMemoryEventStore::new());
/// store.append("t", &StreamId::from("s"), ExpectedVersion::Any, vec![NewEvent::new("E", serde_json::json!(1))]).await.unwrap();
/// // Two runners of one projection (one read model, one checkpoint).
/// let shared = Arc::new(ProjectorUnit::new(Arc::new(Nothing), Arc::new(InMemoryCheckpointStore::new())));
/// let (a, b) = (PausableUnit::new(shared.clone()), PausableUnit::new(shared));
/// b.pause(true); // only `a` applies pages for now
/// ProjectionRunner::new(store.clone(), a.clone()).catch_up().await.unwrap();
/// ProjectionRunner::new(store, b.clone()).catch_up().await.unwrap(); // nothing left
/// assert_eq!((a.applied(), b.applied()), (1, 0));
/// # });
/// ```
pub struct PausableUnit {
    inner: Arc<dyn ProjectionUnit>,
    applied: AtomicUsize,
    paused: tokio::sync::watch::Sender<bool>,
}

impl PausableUnit {
    /// A handle on `inner`, running.
    pub fn new(inner: Arc<dyn ProjectionUnit>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            applied: AtomicUsize::new(0),
            paused: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Holds back (`true`) or lets through (`false`) this handle's pages.
    pub fn pause(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    /// The events this handle's `apply` calls applied so far.
    pub fn applied(&self) -> usize {
        self.applied.load(Ordering::SeqCst)
    }
}

impl std::fmt::Debug for PausableUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PausableUnit")
            .field("unit", &self.inner.name())
            .field("applied", &self.applied())
            .field("paused", &*self.paused.borrow())
            .finish()
    }
}

#[async_trait]
impl ProjectionUnit for PausableUnit {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn filter(&self) -> EventFilter {
        self.inner.filter()
    }
    async fn position(&self) -> Result<u64, StoreError> {
        self.inner.position().await
    }
    async fn apply(&self, events: &[RecordedEvent], advance: Option<Advance>) -> Result<(), UnitError> {
        // The sender lives in `self`, so the wait ends only on `pause(false)`.
        let _ = self.paused.subscribe().wait_for(|p| !*p).await;
        self.inner.apply(events, advance).await?;
        self.applied.fetch_add(events.len(), Ordering::SeqCst);
        Ok(())
    }
    async fn dead_letter(&self, letter: DeadLetter, advance: Option<Advance>) -> Result<(), UnitError> {
        self.inner.dead_letter(letter, advance).await
    }
    async fn reset(&self) -> Result<(), UnitError> {
        self.inner.reset().await
    }
    async fn seek(&self, position: u64) -> Result<(), StoreError> {
        self.inner.seek(position).await
    }
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner.dead_letters().await
    }
    async fn resolve_dead_letter(&self, position: u64, event: Option<&RecordedEvent>) -> Result<bool, UnitError> {
        self.inner.resolve_dead_letter(position, event).await
    }
    async fn record_failure(&self, error: &str) -> Result<(), StoreError> {
        self.inner.record_failure(error).await
    }
}
