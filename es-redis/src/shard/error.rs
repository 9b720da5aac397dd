//! [`ShardError`]: why the shard manager could not do something.

use es_core::{ShardId, StoreError};

use crate::RedisError;

/// Errors of the [`ShardManager`](super::ShardManager).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// The cluster in Redis was created with another number of shards.
    /// Changing it would move streams between shards under their owners'
    /// feet; see the crate docs for how to migrate.
    #[error(
        "this instance is configured with {configured} shards but the cluster under key prefix {prefix:?} has {cluster}; \
         the shard count of a running cluster cannot change"
    )]
    ShardCountMismatch {
        /// This instance's `shard_count`.
        configured: u32,
        /// The cluster's.
        cluster: u32,
        /// The key prefix of the cluster.
        prefix: String,
    },
    /// The configuration cannot work.
    #[error("invalid shard configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// A Redis call of the protocol failed.
    #[error("shard protocol call {operation} failed: {source}")]
    Redis {
        /// The call.
        operation: &'static str,
        /// Redis's error.
        #[source]
        source: RedisError,
    },
    /// The store refused or failed to raise a shard's fence; the shard was
    /// given up.
    #[error("raising the store's fence of shard {shard} failed: {source}")]
    Fence {
        /// The shard.
        shard: ShardId,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}
