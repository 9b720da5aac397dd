//! Crashes injected into an event store, for property tests of code that
//! must survive a crash between any two steps (process managers above
//! all).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use proptest::prelude::*;

use crate::{AppendResult, EventFilter, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamId};

/// Where an injected crash hits an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// The append fails and stores nothing.
    Before,
    /// The append is stored, and the caller gets an error: the reply was
    /// lost (the process died after the commit).
    After,
}

/// A proptest strategy of crash plans: up to `max_crashes` crashes at
/// appends numbered `1..=appends`, each [`Crash::Before`] or
/// [`Crash::After`].
pub fn crash_plan(appends: u64, max_crashes: usize) -> impl Strategy<Value = BTreeMap<u64, Crash>> {
    proptest::collection::btree_map(
        1..=appends.max(1),
        prop_oneof![Just(Crash::Before), Just(Crash::After)],
        0..=max_crashes,
    )
}

/// An [`EventStore`] that fails planned appends (numbered from 1 in the
/// order they reach it) before or after storing them, and otherwise
/// passes everything to the store it wraps (the durable state that
/// outlives the "crash": build your repositories, runners and drivers
/// again over the same store to "restart").
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use es_core::testing::{Crash, CrashingStore};
/// use es_core::*;
/// let inner = Arc::new(InMemoryEventStore::new());
/// let store = CrashingStore::new(inner.clone(), [(1, Crash::After)].into_iter().collect());
/// let e = NewEvent::new("E", serde_json::json!(1));
/// assert!(store.append("t", &StreamId::from("s"), ExpectedVersion::Any, vec![e]).await.is_err());
/// assert!(store.take_crashed());
/// assert_eq!(inner.stream_version(&StreamId::from("s")).await.unwrap(), 1);
/// # });
/// ```
pub struct CrashingStore {
    inner: Arc<dyn EventStore>,
    plan: Mutex<BTreeMap<u64, Crash>>,
    appends: AtomicU64,
    crashed: AtomicBool,
}

impl CrashingStore {
    /// Wraps `inner` with `plan` (append number → crash).
    pub fn new(inner: Arc<dyn EventStore>, plan: BTreeMap<u64, Crash>) -> Self {
        Self {
            inner,
            plan: Mutex::new(plan),
            appends: AtomicU64::new(0),
            crashed: AtomicBool::new(false),
        }
    }

    /// Whether a crash was injected since the last call (and clears it).
    pub fn take_crashed(&self) -> bool {
        self.crashed.swap(false, Ordering::SeqCst)
    }

    /// Appends seen so far.
    pub fn appends(&self) -> u64 {
        self.appends.load(Ordering::SeqCst)
    }
}

fn injected(when: &'static str) -> StoreError {
    StoreError::backend("injected crash", when)
}

#[async_trait]
impl EventStore for CrashingStore {
    async fn append(
        &self,
        stream_type: &str,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        let n = self.appends.fetch_add(1, Ordering::SeqCst) + 1;
        let crash = self
            .plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&n);
        match crash {
            None => self.inner.append(stream_type, stream_id, expected, events).await,
            Some(Crash::Before) => {
                self.crashed.store(true, Ordering::SeqCst);
                Err(injected("before the append"))
            }
            Some(Crash::After) => {
                let stored = self.inner.append(stream_type, stream_id, expected, events).await;
                self.crashed.store(true, Ordering::SeqCst);
                stored.and(Err(injected("after the append (reply lost)")))
            }
        }
    }

    async fn read_stream_batch(
        &self,
        stream_id: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream_batch(stream_id, from_version, max_count).await
    }

    async fn read_all(
        &self,
        after_position: u64,
        max_count: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after_position, max_count, filter).await
    }

    async fn find_event(&self, event_id: uuid::Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        self.inner.find_event(event_id).await
    }

    async fn stream_version(&self, stream_id: &StreamId) -> Result<u64, StoreError> {
        self.inner.stream_version(stream_id).await
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        self.inner.head_position().await
    }

    async fn committed_position(&self) -> Result<u64, StoreError> {
        self.inner.committed_position().await
    }
}
