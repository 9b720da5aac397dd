//! Shards: streams spread over a fixed number of shards by a stable hash,
//! and the fence that lets the store refuse a shard's stale owner.
//!
//! When several processes share a store, each shard is owned by one of them
//! at a time (es-redis's shard manager hands out ownership with a lease and
//! a **fencing token** that only grows). A lease cannot stop a process that
//! was paused past it from writing afterwards, so the store checks the
//! token: a new owner raises the shard's fence to its token
//! ([`EventStore::raise_fence`](crate::EventStore::raise_fence)) before it
//! handles a command, and every append of an owner carries its
//! [`ShardFence`] ([`EventStore::append_fenced`](crate::EventStore::append_fenced));
//! the store refuses it with [`StoreError::Fenced`](crate::StoreError::Fenced)
//! once the fence is higher. [`FencedStore`] does this for every append of
//! an [`EventStore`](crate::EventStore), given a [`FenceSource`].

mod fenced_store;
mod hash;

pub use fenced_store::{FenceSource, FencedStore};
pub use hash::{jump_consistent_hash, shard_of, stream_hash};

use serde::{Deserialize, Serialize};

/// A shard number, `0..shard_count`.
pub type ShardId = u32;

/// The shard and fencing token an owner writes under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShardFence {
    /// The shard written to.
    pub shard: ShardId,
    /// The writer's fencing token for it (tokens only grow).
    pub token: u64,
}

impl ShardFence {
    /// The fence of `shard` at `token`.
    pub fn new(shard: ShardId, token: u64) -> Self {
        Self { shard, token }
    }
}
