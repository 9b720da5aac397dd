//! Cache warming: preloading states into L1 (and L2) in the background.

use std::fmt::Display;
use std::future::Future;

use es_core::{Aggregate, StateCache, StreamId, Versioned};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::l2;
use super::state_cache::RedisStateCache;

/// What a warming run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WarmReport {
    /// Keys asked for.
    pub requested: usize,
    /// Keys found in L1 or L2 (now in L1).
    pub from_cache: usize,
    /// Keys loaded by the loader (now in L1 and L2).
    pub from_source: usize,
    /// Keys neither cached nor loadable (or with no loader).
    pub missing: usize,
    /// Keys whose loader failed.
    pub failed: usize,
}

/// Logs progress about every tenth of the work.
fn progress(done: usize, total: usize, report: &WarmReport) {
    let step = (total / 10).max(1);
    if done.is_multiple_of(step) || done == total {
        tracing::info!(
            done,
            total,
            from_cache = report.from_cache,
            from_source = report.from_source,
            missing = report.missing,
            "cache warming progress"
        );
    }
}

impl<A: Aggregate> RedisStateCache<A> {
    /// Copies the given streams' states from L2 into L1 in a background
    /// task; progress and the final report are logged (`es.redis.cache.warm`
    /// span). Needs a tokio runtime.
    pub fn warm(&self, keys: Vec<StreamId>) -> JoinHandle<WarmReport> {
        self.warm_with(keys, |_id| async { Ok::<_, std::convert::Infallible>(None) })
    }

    /// Like [`warm`](Self::warm); keys not in Redis are loaded by `loader`
    /// (e.g. `Repository::load`) and written to both levels. Loader errors
    /// are counted and logged; warming goes on.
    pub fn warm_with<F, Fut, E>(&self, keys: Vec<StreamId>, loader: F) -> JoinHandle<WarmReport>
    where
        F: Fn(StreamId) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<Versioned<A>>, E>> + Send,
        E: Display + Send,
    {
        let cache = self.clone();
        let span = tracing::info_span!("es.redis.cache.warm", stream_type = A::TYPE, keys = keys.len());
        tokio::spawn(async move { cache.run_warm(keys, loader).await }.instrument(span))
    }

    /// Warms L1 with the `limit` streams most recently written to L2 by any
    /// process sharing this Redis (tracked when `recent_keys > 0`).
    pub fn warm_recent(&self, limit: usize) -> JoinHandle<WarmReport> {
        let cache = self.clone();
        let span = tracing::info_span!("es.redis.cache.warm_recent", stream_type = A::TYPE, limit);
        tokio::spawn(
            async move {
                let keys = match l2::recent(&cache.inner.backend, &cache.inner.recent_key, limit).await {
                    Ok(keys) => keys.into_iter().map(StreamId::from).collect(),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list recent keys; nothing warmed");
                        Vec::new()
                    }
                };
                let none = |_id| async { Ok::<_, std::convert::Infallible>(None) };
                cache.run_warm(keys, none).await
            }
            .instrument(span),
        )
    }

    async fn run_warm<F, Fut, E>(&self, keys: Vec<StreamId>, loader: F) -> WarmReport
    where
        F: Fn(StreamId) -> Fut,
        Fut: Future<Output = Result<Option<Versioned<A>>, E>>,
        E: Display,
    {
        let total = keys.len();
        let mut report = WarmReport {
            requested: total,
            ..WarmReport::default()
        };
        tracing::info!(total, "cache warming started");
        for (i, id) in keys.into_iter().enumerate() {
            if self.get(&id).await.is_some() {
                report.from_cache += 1;
            } else {
                match loader(id.clone()).await {
                    Ok(Some(state)) => {
                        self.put(&id, &state).await;
                        report.from_source += 1;
                    }
                    Ok(None) => report.missing += 1,
                    Err(e) => {
                        tracing::warn!(stream_id = %id, error = %e, "warming loader failed");
                        report.failed += 1;
                    }
                }
            }
            progress(i + 1, total, &report);
        }
        tracing::info!(?report, "cache warming finished");
        report
    }
}
