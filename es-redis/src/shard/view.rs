//! What the cluster looks like in Redis: instance registrations and shard
//! records, as read at one moment.

use std::collections::BTreeMap;

use es_core::ShardId;
use serde::{Deserialize, Serialize};

/// The state of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ShardStatus {
    /// Nobody owns it; any instance under its fair share may take it.
    Available,
    /// Owned under a live lease.
    Assigned,
    /// Owned, and being handed to another instance: the owner finishes
    /// the commands in flight and releases it.
    Rebalancing,
    /// Its owner's lease ran out (the owner died or stalled); the next
    /// instance to take it raises the store's fence above the old token.
    Failed,
}

impl ShardStatus {
    /// The name stored in Redis and shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "Available",
            Self::Assigned => "Assigned",
            Self::Rebalancing => "Rebalancing",
            Self::Failed => "Failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "Assigned" => Self::Assigned,
            "Rebalancing" => Self::Rebalancing,
            "Failed" => Self::Failed,
            _ => Self::Available,
        }
    }
}

/// One shard's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// The shard.
    pub shard: ShardId,
    /// Its status as stored (see [`ShardRecord::status_at`] for the status
    /// a reader should act on).
    pub status: ShardStatus,
    /// The owning instance, if any.
    pub owner: Option<String>,
    /// The fencing token of the latest acquisition (only grows).
    pub token: u64,
    /// When the owner's lease ends, in milliseconds since the Unix epoch
    /// (0 without an owner).
    pub lease_expires_at_ms: i64,
    /// The instance a rebalance hands the shard to, if any.
    pub target: Option<String>,
    /// When it was last released, in milliseconds since the Unix epoch (0
    /// if never).
    pub released_at_ms: i64,
}

impl ShardRecord {
    /// The status at `now_ms`: an owned shard whose lease ran out is
    /// [`ShardStatus::Failed`].
    pub fn status_at(&self, now_ms: i64) -> ShardStatus {
        match self.status {
            ShardStatus::Assigned | ShardStatus::Rebalancing if self.lease_expires_at_ms <= now_ms => {
                ShardStatus::Failed
            }
            s => s,
        }
    }

    /// The owner while its lease is live.
    pub fn live_owner(&self, now_ms: i64) -> Option<&str> {
        match self.status_at(now_ms) {
            ShardStatus::Assigned | ShardStatus::Rebalancing => self.owner.as_deref(),
            _ => None,
        }
    }
}

/// One instance's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// The instance id (unique per process start).
    pub id: String,
    /// Where other instances reach it (for example `http://10.0.0.5:8080`).
    pub address: String,
    /// Shards it owned at its last heartbeat.
    pub load: u32,
    /// When its registration lapses unless renewed, in milliseconds since
    /// the Unix epoch.
    pub expires_at_ms: i64,
}

/// The cluster at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// When it was read, in milliseconds since the Unix epoch.
    pub now_ms: i64,
    /// Registered instances, by id (live and lapsed).
    pub instances: BTreeMap<String, InstanceRecord>,
    /// Every shard, in order.
    pub shards: Vec<ShardRecord>,
}

impl ClusterView {
    /// Instances whose registration is live, by id.
    pub fn live_instances(&self) -> impl Iterator<Item = &InstanceRecord> {
        self.instances.values().filter(move |i| i.expires_at_ms > self.now_ms)
    }

    /// The live owner of `shard` and its address, if any.
    pub fn owner_of(&self, shard: ShardId) -> Option<&InstanceRecord> {
        let owner = self.shards.get(shard as usize)?.live_owner(self.now_ms)?;
        self.instances.get(owner).filter(|i| i.expires_at_ms > self.now_ms)
    }

    /// How many shards each live instance owns under a live lease.
    pub fn counts(&self) -> BTreeMap<String, u32> {
        let mut counts: BTreeMap<String, u32> = self.live_instances().map(|i| (i.id.clone(), 0)).collect();
        for s in &self.shards {
            if let Some(n) = s.live_owner(self.now_ms).and_then(|o| counts.get_mut(o)) {
                *n += 1;
            }
        }
        counts
    }
}
