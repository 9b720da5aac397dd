use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;

use super::lock;
use crate::{CommandDeduplicator, DedupError, DedupStatus};

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
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<String, (Option<Value>, Instant)>,
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
        Self {
            inner: Arc::new(Inner {
                window,
                in_flight_ttl,
                entries: Mutex::default(),
            }),
        }
    }
}

impl Entries {
    fn sweep(&mut self, now: Instant) {
        self.writes += 1;
        if self.writes % 1024 == 0 {
            self.map.retain(|_, (_, expiry)| *expiry > now);
        }
    }
}

#[async_trait]
impl CommandDeduplicator for InMemoryDeduplicator {
    async fn begin(&self, key: &str) -> Result<DedupStatus, DedupError> {
        let now = Instant::now();
        let mut entries = lock(&self.inner.entries);
        match entries.map.get(key) {
            Some((Some(outcome), expiry)) if *expiry > now => return Ok(DedupStatus::Completed(outcome.clone())),
            Some((None, expiry)) if *expiry > now => return Ok(DedupStatus::InProgress),
            _ => {}
        }
        entries.sweep(now);
        entries
            .map
            .insert(key.to_owned(), (None, now + self.inner.in_flight_ttl));
        Ok(DedupStatus::Started)
    }

    async fn complete(&self, key: &str, outcome: &Value) -> Result<(), DedupError> {
        let now = Instant::now();
        let mut entries = lock(&self.inner.entries);
        entries.sweep(now);
        entries
            .map
            .insert(key.to_owned(), (Some(outcome.clone()), now + self.inner.window));
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
