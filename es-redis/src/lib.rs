#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod cache;
mod circuit;
mod config;
mod dedup;
mod error;
mod lock;
mod locked_repository;
pub mod shard;
mod shared_setting;
pub mod telemetry;
pub mod write_behind;

pub use backend::{Idempotency, RedisBackend, SharedBackend};
pub use cache::{InvalidateOnEvents, QueryCache, RedisStateCache, WarmReport};
pub use circuit::{CircuitBreaker, CircuitState, LoadShedder};
pub use config::{
    CacheConfig, DedupConfig, EvictionPolicy, LockConfig, RedisConfig, ResilienceConfig, WhenUnavailable,
};
pub use dedup::{RedisDeduplicator, RunError};
pub use error::RedisError;
pub use lock::RedisLockManager;
pub use locked_repository::{LockedError, LockedRepository, FENCING_TOKEN_HEADER};
pub use shard::{
    ClusterView, InstanceInfo, InstanceRecord, InvalidShardConfig, Route, ShardConfig, ShardError, ShardManager,
    ShardPermit, ShardRecord, ShardStatus, PRUNE_AFTER_LEASES,
};
pub use write_behind::{Durability, Flusher, WriteBehindConfig, WriteBehindStore};
