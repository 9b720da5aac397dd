//! Cluster mode: several server instances share PostgreSQL and Redis and
//! split the accounts between them by shard ([`es_redis::ShardManager`]).
//!
//! - Each instance owns some shards under a lease; a command for an account
//!   is handled by the owner of the account's shard only. A request that
//!   reaches another instance is forwarded to the owner
//!   ([`api::forwarding`](crate::api::forwarding)), so clients behind any load balancer need not know.
//! - Appends carry the owner's fencing token and PostgreSQL refuses a stale
//!   one, so an owner paused past its lease cannot write after a new owner
//!   took over; its request is answered 503 (`Retry-After`) and the
//!   client's retry, with the same `Idempotency-Key`, reaches the new owner.
//! - While a shard has no owner (an instance died and its lease has not run
//!   out), its commands are answered 503 with `Retry-After`.

mod config;

pub use config::ClusterConfig;

use std::sync::Arc;

use es_core::{EventStore, ShardId, StreamId, SystemClock};
use es_redis::{InstanceInfo, Route, ShardError, ShardManager, ShardPermit};
use uuid::Uuid;

/// This instance's part in the cluster.
#[derive(Clone)]
pub struct Cluster {
    /// The shard manager (leases, routing, fences).
    pub manager: ShardManager,
    client: reqwest::Client,
}

/// The cluster's counters and gauge, at zero until something happens, so
/// `/metrics` lists each of them from the start (the metrics recorder must
/// be installed first).
fn zero_metrics() {
    use es_redis::telemetry::{SHARDS_OWNED, SHARD_ACQUISITIONS, SHARD_LEASE_LOSSES, SHARD_REBALANCES};
    for name in [
        SHARD_ACQUISITIONS,
        SHARD_REBALANCES,
        SHARD_LEASE_LOSSES,
        "cluster_forwarded_requests_total",
        "cluster_unavailable_total",
        "cluster_fenced_appends_total",
        "es_postgres_fenced_appends_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    metrics::gauge!(SHARDS_OWNED).increment(0.0);
}

impl Cluster {
    /// Joins the cluster: registers as `advertise_url`, takes a first share
    /// of the shards (raising the store's fence of each) and keeps the
    /// protocol running in the background.
    pub async fn join(
        config: &ClusterConfig,
        advertise_url: String,
        store: Arc<dyn EventStore>,
    ) -> Result<Self, ShardError> {
        let me = InstanceInfo {
            id: format!(
                "{}-{}",
                advertise_url.trim_start_matches("http://"),
                &Uuid::now_v7().simple().to_string()[20..]
            ),
            address: advertise_url,
        };
        zero_metrics();
        let manager = ShardManager::connect(config.shards.clone(), me, store, Arc::new(SystemClock)).await?;
        if let Err(e) = manager.tick().await {
            tracing::warn!(error = %e, "first shard round failed; retrying in the background");
        }
        manager.spawn();
        tracing::info!(
            instance = %manager.instance().id,
            shards = ?manager.owned_shards().keys().collect::<Vec<_>>(),
            "joined the cluster"
        );
        // An owner that does not answer within the failover window (a
        // paused process still accepts connections) has lost its shards by
        // then: the caller is answered 503 (502 without a key) and its
        // retry reaches the new owner, rather than waiting for the request
        // timeout.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .connect_timeout(config.shards.lock_timeout)
            .timeout(forward_timeout(&config.shards))
            .build()
            .map_err(|e| ShardError::Config {
                reason: format!("HTTP client for forwarding: {e}"),
            })?;
        Ok(Self { manager, client })
    }

    /// A fresh account id whose shard this instance owns now, with the
    /// permit to handle it (`None` when it owns no shard).
    pub fn fresh_local_account(&self) -> Option<(Uuid, ShardPermit)> {
        let owned = self.manager.owned_shards();
        if owned.is_empty() {
            return None;
        }
        // Each try lands in an owned shard with probability owned/shards.
        for _ in 0..10_000 {
            let id = Uuid::now_v7();
            let shard: ShardId = self.manager.shard_of(StreamId::from(id.to_string()));
            if owned.contains_key(&shard) {
                if let Route::Local(permit) = self.manager.route_shard(shard) {
                    return Some((id, permit));
                }
            }
        }
        None
    }

    /// The HTTP client forwarded requests go through.
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

/// How long a forwarded request waits for the owner's answer: the lease
/// TTL plus a rebalance interval, the time in which another instance takes
/// over the shards of an owner that stopped renewing them.
pub fn forward_timeout(shards: &es_redis::ShardConfig) -> std::time::Duration {
    shards.lock_timeout + shards.rebalance_interval
}
