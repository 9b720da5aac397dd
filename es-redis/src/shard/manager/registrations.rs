//! The instances' registrations in Redis: each instance's heartbeat (held
//! back while its store cannot fence), and the pruning of those that lapsed
//! long ago.

use std::sync::atomic::Ordering;

use redis::aio::ConnectionManager;

use super::{millis, read, ShardManager};
use crate::backend::Idempotency;
use crate::shard::scripts::scripts;
use crate::shard::{ClusterView, InstanceRecord, ShardError};

/// Lock timeouts after its last heartbeat at which an instance that owns
/// no shard is taken off the registrations (5 minutes by default).
pub const PRUNE_AFTER_LEASES: i64 = 60;

impl ShardManager {
    /// Heartbeats, unless this instance owns no shard, its store failed the
    /// last fence it tried to raise, and a read of the store fails too. A
    /// live instance that cannot take its fair share would hold those shards
    /// back from everyone (the others stop at their own share); letting its
    /// registration lapse grows the others' shares until its store answers
    /// again.
    /// Returns whether it registered.
    pub(super) async fn heartbeat_while_serving(&self, now: i64) -> Result<bool, ShardError> {
        if self.inner.store_failing.load(Ordering::SeqCst) && read(&self.inner.owned).is_empty() {
            match self.inner.store.head_position().await {
                Ok(_) => {
                    self.inner.store_failing.store(false, Ordering::SeqCst);
                    tracing::info!("the store answers again: registering for shards");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the store cannot fence: not registering, so the others take the shards");
                    return Ok(false);
                }
            }
            // The probe may have waited long: `shutdown` may have
            // deregistered this instance meanwhile.
            if self.is_stopped() {
                return Ok(false);
            }
        }
        self.heartbeat(now).await?;
        Ok(true)
    }

    /// Registers this instance again (address, shards held, expiry).
    pub(super) async fn heartbeat(&self, now: i64) -> Result<(), ShardError> {
        let record = InstanceRecord {
            id: self.inner.me.id.clone(),
            address: self.inner.me.address.clone(),
            load: u32::try_from(read(&self.inner.owned).len()).unwrap_or(u32::MAX),
            expires_at_ms: now + millis(self.inner.config.lock_timeout),
        };
        let json = serde_json::to_string(&record).map_err(|e| ShardError::Config {
            reason: format!("cannot encode the registration: {e}"),
        })?;
        let key = self.key("instances");
        let id = self.inner.me.id.clone();
        self.call("heartbeat", Idempotency::Idempotent, move |mut c: ConnectionManager| {
            let (key, id, json) = (key.clone(), id.clone(), json.clone());
            async move {
                redis::cmd("HSET")
                    .arg(key)
                    .arg(id)
                    .arg(json)
                    .query_async::<i64>(&mut c)
                    .await
            }
        })
        .await?;
        Ok(())
    }

    /// Deletes the registrations of instances that lapsed long ago
    /// ([`PRUNE_AFTER_LEASES`] lock timeouts) and own no shard: a killed
    /// instance never deregisters, and instance ids are new at each start,
    /// so the hash every round reads would otherwise only grow.
    pub(super) async fn prune_registrations(&self, view: &ClusterView) {
        let cutoff = view
            .now_ms
            .saturating_sub(millis(self.inner.config.lock_timeout).saturating_mul(PRUNE_AFTER_LEASES));
        let lapsed: Vec<String> = view
            .instances
            .iter()
            .filter(|(id, r)| {
                r.expires_at_ms < cutoff && !view.shards.iter().any(|s| s.owner.as_deref() == Some(id.as_str()))
            })
            .map(|(id, _)| id.clone())
            .collect();
        let key = self.key("instances");
        for id in lapsed {
            let key = key.clone();
            let pruned = self
                .call(
                    "prune registration",
                    Idempotency::Idempotent,
                    move |mut c: ConnectionManager| {
                        let mut inv = scripts().prune_instance.prepare_invoke();
                        inv.key(&key).arg(&id).arg(cutoff);
                        async move { inv.invoke_async::<i64>(&mut c).await }
                    },
                )
                .await;
            if let Err(e) = pruned {
                tracing::debug!(error = %e, "could not prune a lapsed registration");
            }
        }
    }
}
