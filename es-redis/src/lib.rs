//! # es-redis — Redis for es-core: two-level cache, de-duplication, locks
//!
//! - [`RedisStateCache`] — es-core's [`StateCache`](es_core::StateCache)
//!   with L1 in process (moka; LRU, LFU or TTL) and L2 in Redis; write-
//!   through from the repository, invalidation on conflicts, warming, and
//!   read-your-own-writes across processes sharing one Redis.
//! - [`QueryCache`] — cached query results with explicit invalidation,
//!   [`InvalidateOnEvents`] to invalidate on commits.
//! - [`RedisDeduplicator`] — es-core's
//!   [`CommandDeduplicator`](es_core::CommandDeduplicator) (idempotency
//!   keys), failing closed when Redis is down.
//! - [`RedisLockManager`] — es-core's [`LockManager`](es_core::LockManager)
//!   with fencing tokens; [`LockedRepository`] for pessimistic hot streams.
//! - [`ShardManager`] — shard ownership across server instances: leases
//!   and fencing tokens in Redis, the store's fence raised by each new
//!   owner, routing of streams to their owners, rebalancing.
//!
//! Every Redis call goes through a [`RedisBackend`]: lazy connections, a
//! circuit breaker, load shedding, timeouts and retries of idempotent
//! calls. The cache survives Redis going away (it degrades to the store
//! and resumes by itself); de-duplication and locks report it as errors.
//!
//! ## Example
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use es_core::{Aggregate, DomainEvent, InMemoryEventStore, Repository, CommandDeduplicator};
//! use es_redis::{CacheConfig, DedupConfig, LockConfig, LockedRepository, RedisDeduplicator,
//!     RedisLockManager, RedisStateCache};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Default, Clone, Serialize, Deserialize)]
//! struct Counter { value: u64 }
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! enum Event { Added(u64) }
//! impl DomainEvent for Event { fn event_type(&self) -> &'static str { "Added" } }
//! impl Aggregate for Counter {
//!     const TYPE: &'static str = "counter";
//!     type Command = u64;
//!     type Event = Event;
//!     type Error = std::convert::Infallible;
//!     fn handle(&self, n: &u64) -> Result<Vec<Event>, Self::Error> { Ok(vec![Event::Added(*n)]) }
//!     fn apply(&mut self, Event::Added(n): &Event) { self.value += n }
//! }
//!
//! // Two-level cache in front of the store.
//! let cache = RedisStateCache::<Counter>::new(CacheConfig::default())?;
//! let repo = Repository::<Counter>::builder(Arc::new(InMemoryEventStore::new()))
//!     .cache(Arc::new(cache))
//!     .build();
//! repo.execute("c-1", 2).await?;
//!
//! // Idempotency keys: the command runs once per key.
//! let dedup = RedisDeduplicator::new(DedupConfig::default())?;
//! let outcome = dedup
//!     .run("request-42", Duration::from_secs(5), || async {
//!         let out = repo.execute("c-1", 3).await?;
//!         Ok::<_, es_core::RepositoryError<std::convert::Infallible>>(serde_json::json!({ "version": out.version }))
//!     })
//!     .await?;
//! assert_eq!(outcome["version"], 2);
//!
//! // Pessimistic mode for a hot stream shared by several processes.
//! let locks = Arc::new(RedisLockManager::new(LockConfig::default())?);
//! let locked = LockedRepository::new(repo.clone(), locks, Duration::from_secs(5));
//! let out = locked.execute("c-1", 1).await?;
//! assert!(out.events[0].metadata.headers.contains_key(es_redis::FENCING_TOKEN_HEADER));
//! # Ok(()) }
//! ```
//!
//! ## Design notes
//! - The cache is never trusted: es-core's repository verifies a cached
//!   state by the append's exact expected version (or by reading the tail
//!   before a rejection), so a stale entry costs time, never correctness.
//! - Fencing tokens: a lock bounds concurrency only under normal timing;
//!   the token (recorded in event metadata) and, above all, the event
//!   store's optimistic concurrency check make a stale holder harmless.
//! - Nothing reads the environment; all configuration is plain structs
//!   with `Default`. Metrics go through the `metrics` facade (names in
//!   [`telemetry`]), logs and spans through `tracing`; nothing is printed.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod backend;
mod cache;
mod circuit;
mod config;
mod dedup;
mod error;
mod lock;
mod locked_repository;
pub mod shard;
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
    ClusterView, InstanceInfo, InstanceRecord, Route, ShardConfig, ShardError, ShardManager, ShardPermit, ShardRecord,
    ShardStatus,
};
pub use write_behind::{Durability, Flusher, WriteBehindConfig, WriteBehindStore};
