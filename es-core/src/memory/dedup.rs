use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use async_trait::async_trait;
use serde_json::Value;

use super::lock;
use crate::clock::deadline;
use crate::{Clock, CommandDeduplicator, DedupError, DedupStatus, SystemClock};

/// In-process [`CommandDeduplicator`] with a time window; clones share
/// the same keys. Expired entries are swept on writes, so memory stays
/// bounded by the keys of one window.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use es_core::{CommandDeduplicator, DedupStatus, InMemoryDeduplicator};
/// use std::time::Duration;
/// let dedup = InMemoryDeduplicator::new(Duration::from_secs(3600), Duration::from_secs(30));
/// assert_eq!(dedup.begin("k").await.unwrap(), DedupStatus::Started);
/// assert_eq!(dedup.begin("k").await.unwrap(), DedupStatus::InProgress);
/// dedup.complete("k", &serde_json::json!({"ok": true})).await.unwrap();
/// assert_eq!(dedup.begin("k").await.unwrap(), DedupStatus::Completed(serde_json::json!({"ok": true})));
/// # });
/// ```
#[derive(Clone)]
pub struct InMemoryDeduplicator {
    inner: Arc<Inner>,
}

struct Inner {
    window: Duration,
    in_flight_ttl: Duration,
    clock: Arc<dyn Clock>,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<String, (Option<Value>, DateTime<Utc>)>,
    writes: u64,
}

impl std::fmt::Debug for InMemoryDeduplicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryDeduplicator")
            .field("window", &self.inner.window)
            .finish_non_exhaustive()
    }
}

impl InMemoryDeduplicator {
    /// Outcomes are kept for `window`; an in-flight mark expires after
    /// `in_flight_ttl`.
    pub fn new(window: Duration, in_flight_ttl: Duration) -> Self {
        Self::with_clock(window, in_flight_ttl, Arc::new(SystemClock))
    }

    /// Like [`new`](Self::new), with windows measured on `clock` (a
    /// [`ManualClock`](crate::ManualClock) in tests).
    pub fn with_clock(window: Duration, in_flight_ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Inner {
                window,
                in_flight_ttl,
                clock,
                entries: Mutex::default(),
            }),
        }
    }
}

impl Entries {
    fn sweep(&mut self, now: DateTime<Utc>) {
        self.writes += 1;
        if self.writes % 1024 == 0 {
            self.map.retain(|_, (_, expiry)| *expiry > now);
        }
    }
}

#[async_trait]
impl CommandDeduplicator for InMemoryDeduplicator {
    async fn begin(&self, key: &str) -> Result<DedupStatus, DedupError> {
        let now = self.inner.clock.now();
        let mut entries = lock(&self.inner.entries);
        match entries.map.get(key) {
            Some((Some(outcome), expiry)) if *expiry > now => return Ok(DedupStatus::Completed(outcome.clone())),
            Some((None, expiry)) if *expiry > now => return Ok(DedupStatus::InProgress),
            _ => {}
        }
        entries.sweep(now);
        entries
            .map
            .insert(key.to_owned(), (None, deadline(now, self.inner.in_flight_ttl)));
        Ok(DedupStatus::Started)
    }

    async fn complete(&self, key: &str, outcome: &Value) -> Result<(), DedupError> {
        let now = self.inner.clock.now();
        let mut entries = lock(&self.inner.entries);
        entries.sweep(now);
        entries.map.insert(
            key.to_owned(),
            (Some(outcome.clone()), deadline(now, self.inner.window)),
        );
        Ok(())
    }

    async fn abandon(&self, key: &str) -> Result<(), DedupError> {
        let mut entries = lock(&self.inner.entries);
        if matches!(entries.map.get(key), Some((None, _))) {
            entries.map.remove(key);
        }
        Ok(())
    }
}
