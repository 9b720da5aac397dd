#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod aggregate;
pub mod backend;
mod cache;
mod clock;
mod codec;
mod dedup;
mod error;
mod event;
mod hooks;
mod lock;
pub mod memory;
mod process;
mod projection;
mod repository;
mod retry;
mod shard;
mod snapshot;
mod store;
mod subscription;
mod upcast;
mod version;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "testing")]
pub mod testing;

/// The `#[async_trait]` attribute the async traits of this crate use
/// (projectors, handlers, stores): implement them with
/// `#[es_core::async_trait]` without adding the crate yourself.
pub use async_trait::async_trait;

pub use aggregate::{Aggregate, DomainEvent};
pub use cache::{StateCache, Versioned};
pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::{CodecError, EventCodec};
pub use dedup::{CommandDeduplicator, DedupClaim, DedupError, DedupStatus};
pub use error::{BoxError, SharedError, StoreError};
/// The store's error, under the name the docs use: `es_core::Error` is
/// [`StoreError`] (e.g. `Error::Conflict { stream_id, expected, actual }`).
pub type Error = StoreError;
/// `#[derive(DomainEvent)]`: `event_type` is each variant's name (or
/// `#[event(name = "...")]`), `schema_version` is `#[event(version = N)]`
/// (default 1). Feature `derive`, on by default.
#[cfg(feature = "derive")]
pub use es_derive::DomainEvent;
pub use event::{Metadata, NewEvent, RecordedEvent, StreamId};
pub use hooks::{CommittedEvent, EventHandler, EventValidator};
pub use lock::{FencingToken, Lease, LockError, LockGuard, LockManager, LockRetry};
pub use memory::{
    InMemoryCheckpointStore, InMemoryDeduplicator, InMemoryEventStore, InMemoryLockManager, InMemorySnapshotStore,
    InMemoryStateCache, DEFAULT_DEDUP_CAPACITY_BYTES,
};
pub use process::{
    step_command_id, DeadlineStore, InMemoryDeadlines, ProcessConfig, ProcessDriver, ProcessError, ProcessManager,
    ProcessUnit, Step,
};
pub use projection::{
    Advance, CheckpointStore, DeadLetter, EventEnvelope, InMemoryViews, OnFailure, PageFailure, Progress,
    ProjectionConfig, ProjectionError, ProjectionReport, ProjectionRunner, ProjectionUnit, Projector, ProjectorUnit,
    ReplayMode, Typed, TypedProjector, Undecodable, UnitError, View,
};
pub use repository::{
    CommandContext, CommandOutcome, Decide, Repository, RepositoryBuilder, RepositoryError, FENCING_TOKEN_HEADER,
};
pub use retry::{Attempts, RetryPolicy};
pub use shard::{jump_consistent_hash, shard_of, stream_hash, FenceSource, FencedStore, ShardFence, ShardId};
pub use snapshot::{Snapshot, SnapshotPolicy, SnapshotStore, Snapshotter};
pub use store::{AppendResult, EventFilter, EventStore, DEFAULT_READ_BATCH, MAX_STREAM_ID_BYTES};
pub use subscription::subscribe;
pub use upcast::{FnUpcaster, UpcastError, Upcaster, UpcasterRegistry};
pub use version::ExpectedVersion;
