//! Which version of each stream a consumer has already handled.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use es_core::{BoxError, StreamId};

/// Remembers, per stream, the last version a projection handled (applied,
/// filtered out or dead-lettered), so that redelivered events are skipped.
///
/// The consumer asks before applying and records after. Keep it where the
/// read model is (same transaction, ideally) to make redelivery after a
/// restart harmless too; [`InMemoryDedup`] only covers one process's life.
#[async_trait]
pub trait DedupStore: Send + Sync + 'static {
    /// The last handled version of `stream`, if any.
    async fn last_version(&self, stream: &StreamId) -> Result<Option<u64>, BoxError>;
    /// Records that `version` of `stream` was handled.
    async fn record(&self, stream: &StreamId, version: u64) -> Result<(), BoxError>;
}

/// A [`DedupStore`] in memory: one entry per stream seen.
///
/// It lasts a process and knows only what its own member handled: for a
/// group of one member. With several, a partition that comes back to a
/// member after another one handled some of its streams meets versions
/// this store has not seen, and takes every later event of those streams
/// for an early one (skipped). Give a group of several members a store
/// they share, next to the read model.
#[derive(Debug, Default)]
pub struct InMemoryDedup {
    versions: Mutex<HashMap<StreamId, u64>>,
}

impl InMemoryDedup {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl DedupStore for InMemoryDedup {
    async fn last_version(&self, stream: &StreamId) -> Result<Option<u64>, BoxError> {
        let map = self.versions.lock().map_err(|_| "dedup map poisoned")?;
        Ok(map.get(stream).copied())
    }

    async fn record(&self, stream: &StreamId, version: u64) -> Result<(), BoxError> {
        let mut map = self.versions.lock().map_err(|_| "dedup map poisoned")?;
        let v = map.entry(stream.clone()).or_insert(version);
        *v = (*v).max(version);
        Ok(())
    }
}

/// What to do with an event given the last handled version of its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not seen yet and next in line (or the stream is unknown): apply.
    Apply,
    /// Already handled: skip.
    Duplicate,
    /// An earlier version is missing: it was not delivered yet (a
    /// publisher republishes from the first unacknowledged event, so this
    /// one comes again after it): skip for now.
    Early,
}

pub(crate) fn verdict(last: Option<u64>, version: u64) -> Verdict {
    match last {
        Some(last) if version <= last => Verdict::Duplicate,
        Some(last) if version > last + 1 => Verdict::Early,
        _ => Verdict::Apply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(verdict(None, 5), Verdict::Apply);
        assert_eq!(verdict(Some(4), 5), Verdict::Apply);
        assert_eq!(verdict(Some(5), 5), Verdict::Duplicate);
        assert_eq!(verdict(Some(5), 2), Verdict::Duplicate);
        assert_eq!(verdict(Some(5), 7), Verdict::Early);
    }

    #[tokio::test]
    async fn in_memory_store_keeps_the_highest_version() {
        let d = InMemoryDedup::new();
        let s = StreamId::from("s");
        assert_eq!(d.last_version(&s).await.unwrap(), None);
        d.record(&s, 3).await.unwrap();
        d.record(&s, 2).await.unwrap();
        assert_eq!(d.last_version(&s).await.unwrap(), Some(3));
    }
}
