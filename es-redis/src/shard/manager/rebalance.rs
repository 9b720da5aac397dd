//! The rebalance round: one instance at a time marks the shards to move
//! from the most to the least loaded instances.

use redis::aio::ConnectionManager;

use super::{read, ShardManager};
use crate::backend::Idempotency;
use crate::shard::plan::rebalance_moves;
use crate::shard::scripts::scripts;
use es_core::LockManager;

impl ShardManager {
    /// One rebalancer at a time: marks the shards to move.
    pub(super) async fn rebalance(&self) {
        let view = read(&self.inner.view).clone();
        let moves = rebalance_moves(&view, &self.inner.config);
        if moves.is_empty() {
            return;
        }
        let lock = match self
            .inner
            .locks
            .try_acquire("rebalance", self.inner.config.rebalance_interval * 3)
            .await
        {
            Ok(Some(lock)) => lock,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "rebalance lock unavailable");
                return;
            }
        };
        for m in moves {
            let Some(record) = view.shards.get(m.shard as usize) else {
                continue;
            };
            let key = self.shard_key(m.shard);
            let (from, to, token) = (m.from.clone(), m.to.clone(), record.token);
            let marked = self
                .call(
                    "mark shard for handover",
                    Idempotency::Idempotent,
                    move |mut c: ConnectionManager| {
                        let mut inv = scripts().mark_rebalancing.prepare_invoke();
                        inv.key(&key).arg(&from).arg(token).arg(&to);
                        async move { inv.invoke_async::<i64>(&mut c).await }
                    },
                )
                .await;
            if let Ok(1) = marked {
                tracing::info!(shard = m.shard, from = %m.from, to = %m.to, "moving shard");
            }
        }
        let _ = lock.release().await;
    }
}
