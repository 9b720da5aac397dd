use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use async_trait::async_trait;
use moka::ops::compute::Op;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use moka::Expiry;
use serde_json::Value;

use crate::clock::deadline;
use crate::{Clock, CommandDeduplicator, DedupClaim, DedupError, DedupStatus, SystemClock};

/// Default memory bound of an [`InMemoryDeduplicator`]: 64 MiB of keys
/// and outcomes (about 30,000 typical HTTP responses).
pub const DEFAULT_DEDUP_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

/// In-process [`CommandDeduplicator`] with a time window and a memory
/// bound; clones share the same keys.
///
/// Entries live in a moka cache weighted by their size in bytes (key and
/// outcome): past `capacity_bytes` the least recently used entries are
/// evicted, and every entry expires by itself at the end of its window
/// (an in-flight mark after `in_flight_ttl`). An evicted outcome only
/// loses its exact replay: the repository derives event ids from the
/// key, so the command still cannot apply twice. Several processes do not
/// share it: use a database or Redis de-duplicator for that.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use es_core::{CommandDeduplicator, DedupStatus, InMemoryDeduplicator};
/// use std::time::Duration;
/// let dedup = InMemoryDeduplicator::new(Duration::from_secs(3600), Duration::from_secs(30));
/// let DedupStatus::Started(claim) = dedup.begin("k").await.unwrap() else { unreachable!() };
/// assert_eq!(dedup.begin("k").await.unwrap(), DedupStatus::InProgress);
/// dedup.complete("k", &claim, &serde_json::json!({"ok": true})).await.unwrap();
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
    entries: Cache<String, Entry>,
}

/// An in-flight mark (`outcome: None`) or a completed outcome, valid
/// until `expiry` on the injected clock; `ttl` tells moka when to drop it.
/// `claim` is the holder that marked it.
#[derive(Clone)]
struct Entry {
    outcome: Option<Arc<Value>>,
    claim: DedupClaim,
    expiry: DateTime<Utc>,
    ttl: Duration,
    weight: u32,
}

struct EntryExpiry;

impl Expiry<String, Entry> for EntryExpiry {
    fn expire_after_create(&self, _key: &String, value: &Entry, _created_at: Instant) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Entry,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

impl std::fmt::Debug for InMemoryDeduplicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryDeduplicator")
            .field("window", &self.inner.window)
            .finish_non_exhaustive()
    }
}

/// The weight of an entry: its key and outcome in bytes, plus a fixed
/// overhead for the map and the entry itself.
fn weight(key: &str, outcome: Option<&Value>) -> u32 {
    let outcome = outcome.map_or(0, |v| serde_json::to_string(v).map_or(0, |s| s.len()));
    u32::try_from(key.len() + outcome + 128).unwrap_or(u32::MAX)
}

impl InMemoryDeduplicator {
    /// Outcomes are kept for `window`; an in-flight mark expires after
    /// `in_flight_ttl`; at most [`DEFAULT_DEDUP_CAPACITY_BYTES`] are kept.
    pub fn new(window: Duration, in_flight_ttl: Duration) -> Self {
        Self::with_clock(window, in_flight_ttl, Arc::new(SystemClock))
    }

    /// Like [`new`](Self::new), holding at most about `capacity_bytes` of
    /// keys and outcomes.
    pub fn bounded(window: Duration, in_flight_ttl: Duration, capacity_bytes: u64) -> Self {
        Self::build(window, in_flight_ttl, Arc::new(SystemClock), capacity_bytes)
    }

    /// Like [`new`](Self::new), with windows measured on `clock` (a
    /// [`ManualClock`](crate::ManualClock) in tests).
    pub fn with_clock(window: Duration, in_flight_ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        Self::build(window, in_flight_ttl, clock, DEFAULT_DEDUP_CAPACITY_BYTES)
    }

    fn build(window: Duration, in_flight_ttl: Duration, clock: Arc<dyn Clock>, capacity_bytes: u64) -> Self {
        let entries = Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|_key: &String, entry: &Entry| entry.weight)
            .expire_after(EntryExpiry)
            // Retries come soon after the first request: keep the newest.
            .eviction_policy(EvictionPolicy::lru())
            .build();
        Self {
            inner: Arc::new(Inner {
                window,
                in_flight_ttl,
                clock,
                entries,
            }),
        }
    }

    /// Approximate bytes held now (after pending evictions ran).
    pub fn weighted_size(&self) -> u64 {
        self.inner.entries.run_pending_tasks();
        self.inner.entries.weighted_size()
    }

    /// Keys held now (after pending evictions ran).
    pub fn len(&self) -> u64 {
        self.inner.entries.run_pending_tasks();
        self.inner.entries.entry_count()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl CommandDeduplicator for InMemoryDeduplicator {
    async fn begin(&self, key: &str) -> Result<DedupStatus, DedupError> {
        let now = self.inner.clock.now();
        let claim = DedupClaim::new();
        let mut status = DedupStatus::Started(claim.clone());
        let ttl = self.inner.in_flight_ttl;
        // Atomic per key: one caller gets `Started`.
        self.inner
            .entries
            .entry_by_ref(key)
            .and_compute_with(|current| match current.map(moka::Entry::into_value) {
                Some(Entry {
                    outcome: Some(outcome),
                    expiry,
                    ..
                }) if expiry > now => {
                    status = DedupStatus::Completed(Value::clone(&outcome));
                    Op::Nop
                }
                Some(Entry {
                    outcome: None, expiry, ..
                }) if expiry > now => {
                    status = DedupStatus::InProgress;
                    Op::Nop
                }
                _ => Op::Put(Entry {
                    outcome: None,
                    claim: claim.clone(),
                    expiry: deadline(now, ttl),
                    ttl,
                    weight: weight(key, None),
                }),
            });
        Ok(status)
    }

    async fn complete(&self, key: &str, claim: &DedupClaim, outcome: &Value) -> Result<(), DedupError> {
        let now = self.inner.clock.now();
        let mut held = true;
        self.inner
            .entries
            .entry_by_ref(key)
            .and_compute_with(|current| match current.map(moka::Entry::into_value) {
                // This very outcome, kept already: a retried call.
                Some(entry) if entry.expiry > now && entry.outcome.as_deref() == Some(outcome) => Op::Nop,
                // Another holder's live mark, or a live outcome, stays.
                Some(entry) if entry.expiry > now && (entry.outcome.is_some() || entry.claim != *claim) => {
                    held = false;
                    Op::Nop
                }
                _ => Op::Put(Entry {
                    outcome: Some(Arc::new(outcome.clone())),
                    claim: claim.clone(),
                    expiry: deadline(now, self.inner.window),
                    ttl: self.inner.window,
                    weight: weight(key, Some(outcome)),
                }),
            });
        if held {
            Ok(())
        } else {
            Err(DedupError::ClaimLost { key: key.to_owned() })
        }
    }

    async fn abandon(&self, key: &str, claim: &DedupClaim) -> Result<(), DedupError> {
        self.inner
            .entries
            .entry_by_ref(key)
            .and_compute_with(|current| match current.map(moka::Entry::into_value) {
                Some(Entry {
                    outcome: None,
                    claim: holder,
                    ..
                }) if holder == *claim => Op::Remove,
                _ => Op::Nop,
            });
        Ok(())
    }

    async fn renew(&self, key: &str, claim: &DedupClaim) -> Result<bool, DedupError> {
        let now = self.inner.clock.now();
        let ttl = self.inner.in_flight_ttl;
        let mut held = false;
        self.inner
            .entries
            .entry_by_ref(key)
            .and_compute_with(|current| match current.map(moka::Entry::into_value) {
                Some(entry) if entry.outcome.is_none() && entry.claim == *claim && entry.expiry > now => {
                    held = true;
                    Op::Put(Entry {
                        expiry: deadline(now, ttl),
                        ..entry
                    })
                }
                _ => Op::Nop,
            });
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_stays_within_capacity_whatever_the_number_of_keys() {
        let capacity = 1024 * 1024;
        let dedup = InMemoryDeduplicator::bounded(Duration::from_secs(24 * 3600), Duration::from_secs(30), capacity);
        let outcome = serde_json::json!({"status": 200, "body": {"balance": "12.34", "id": "x".repeat(200)}});
        for i in 0..50_000 {
            let key = format!("idem:client:{i}");
            let claim = dedup.begin(&key).await.unwrap().into_claim().unwrap();
            dedup.complete(&key, &claim, &outcome).await.unwrap();
        }
        assert!(
            dedup.weighted_size() <= capacity,
            "{} bytes held, capacity {capacity}",
            dedup.weighted_size()
        );
        assert!(dedup.len() < 50_000 / 4, "{} keys held", dedup.len());
        // The newest key is still answered.
        assert!(matches!(
            dedup.begin("idem:client:49999").await.unwrap(),
            DedupStatus::Completed(_)
        ));
    }
}
