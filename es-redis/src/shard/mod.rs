//! Shard ownership across server instances, fenced by the store.
//!
//! Streams are spread over `shard_count` shards by a stable hash
//! ([`es_core::shard_of`]). Each shard is owned by at most one live instance
//! at a time under a lease in Redis, with a fencing token that only grows;
//! the owner raises the event store's fence to its token before it handles
//! a command, and appends through a [`FencedStore`](es_core::FencedStore),
//! so a stale owner (paused past its lease) is refused by the store itself.
//! See [`ShardManager`] for the protocol and [`plan`] for its decisions.
//!
//! Redis keys (under [`ShardConfig::key_prefix`]): `config:shard_count`,
//! `instances` (a hash of registrations), `shard:<n>` (a hash per shard)
//! and `lock:rebalance`.
//!
//! **Changing the shard count** of a running cluster is refused
//! ([`ShardError::ShardCountMismatch`]): it would move streams between
//! shards while their owners hold them. To migrate, stop every instance,
//! delete the keys under the prefix (or pick a new prefix), and start the
//! instances with the new count; the store's fences of the old shards stay
//! and are raised again by the new owners.

mod config;
mod error;
mod manager;
pub mod plan;
mod scripts;
mod view;

pub use config::{InvalidShardConfig, ShardConfig, MIN_REBALANCE_INTERVAL};
pub use error::ShardError;
pub use manager::{InstanceInfo, Route, ShardManager, ShardPermit, PRUNE_AFTER_LEASES};
pub use view::{ClusterView, InstanceRecord, ShardRecord, ShardStatus};
