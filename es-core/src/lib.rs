//! # es-core — the event-sourcing kernel
//!
//! The traits every backend implements, real in-memory backends, a
//! repository that runs commands with optimistic concurrency, and a test
//! kit for your own aggregates. No database or network dependencies.
//!
//! ## Concepts
//! - An [`Aggregate`] decides (`handle`, pure) and evolves (`apply`,
//!   infallible). Its facts are [`DomainEvent`]s.
//! - An [`EventStore`] keeps each aggregate's events as a stream with
//!   gapless versions 1..n, and every event of every stream in a global log
//!   ordered by position. Appends are atomic, checked against an
//!   [`ExpectedVersion`], and idempotent by event id.
//! - The [`Repository`] loads state (cache or [`Snapshot`] plus newer
//!   events), decides, appends, retries on conflict ([`RetryPolicy`]), runs
//!   [`EventValidator`]s before and [`EventHandler`]s after the append.
//!   Commands to one stream are serialized and batched in process.
//! - [`Upcaster`]s turn old stored payloads into today's shape on read.
//! - A projection builds a read model from the global log: one engine,
//!   [`ProjectionRunner`], drives a [`ProjectionUnit`] (a page of events
//!   and the checkpoint, atomically) through catch-up, live following,
//!   replay, retries and dead letters. Write a [`TypedProjector`] to get
//!   decoded events, or an untyped [`Projector`] across aggregates.
//! - A process manager ([`ProcessManager`], a saga) drives a workflow
//!   across aggregates from the global log, on the same runner: each step
//!   under a command id derived from (process, step), so a retried step
//!   applies once; deadlines by an injectable clock ([`ProcessDriver`]).
//! - A [`LockManager`] hands out expiring locks with fencing tokens.
//!
//! ## Quick start
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use es_core::{Aggregate, DomainEvent, InMemoryEventStore, Repository, RepositoryError};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Default, Clone, Serialize, Deserialize)]
//! struct Wallet { balance: i64 }
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! enum WalletEvent { Credited { amount: i64 }, Debited { amount: i64 } }
//!
//! impl DomainEvent for WalletEvent {
//!     fn event_type(&self) -> &'static str {
//!         match self { Self::Credited { .. } => "Credited", Self::Debited { .. } => "Debited" }
//!     }
//! }
//!
//! enum WalletCommand { Credit(i64), Debit(i64) }
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("insufficient funds")]
//! struct InsufficientFunds;
//!
//! impl Aggregate for Wallet {
//!     const TYPE: &'static str = "wallet";
//!     type Command = WalletCommand;
//!     type Event = WalletEvent;
//!     type Error = InsufficientFunds;
//!
//!     fn handle(&self, cmd: &WalletCommand) -> Result<Vec<WalletEvent>, InsufficientFunds> {
//!         match *cmd {
//!             WalletCommand::Credit(amount) => Ok(vec![WalletEvent::Credited { amount }]),
//!             WalletCommand::Debit(amount) if amount > self.balance => Err(InsufficientFunds),
//!             WalletCommand::Debit(amount) => Ok(vec![WalletEvent::Debited { amount }]),
//!         }
//!     }
//!
//!     fn apply(&mut self, event: &WalletEvent) {
//!         match event {
//!             WalletEvent::Credited { amount } => self.balance += amount,
//!             WalletEvent::Debited { amount } => self.balance -= amount,
//!         }
//!     }
//! }
//!
//! let repo = Repository::<Wallet>::builder(Arc::new(InMemoryEventStore::new())).build();
//! repo.execute("w-1", WalletCommand::Credit(100)).await.unwrap();
//! let err = repo.execute("w-1", WalletCommand::Debit(500)).await.unwrap_err();
//! assert!(matches!(err, RepositoryError::Rejected(InsufficientFunds)));
//! let out = repo.execute("w-1", WalletCommand::Debit(30)).await.unwrap();
//! assert_eq!((out.state.balance, out.version), (70, 2));
//! # });
//! ```
//!
//! ## Features
//! - `testing`: [`testing`] — given/when/then and proptest helpers.
//! - `conformance`: [`conformance`] — the suite every `EventStore` passes.
//!
//! The repository and the lock guard spawn tasks: they need a tokio runtime.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod aggregate;
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
pub use dedup::{CommandDeduplicator, DedupError, DedupStatus};
pub use error::{BoxError, StoreError};
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
    apply_keeping_prefix, checkpoint_after_page, Advance, CheckpointStore, DeadLetter, EventEnvelope, InMemoryViews,
    OnFailure, PageFailure, Progress, ProjectionConfig, ProjectionError, ProjectionReport, ProjectionRunner,
    ProjectionUnit, Projector, ProjectorUnit, ReplayMode, Typed, TypedProjector, Undecodable, UnitError, View,
};
pub use repository::{
    CommandContext, CommandOutcome, Decide, Repository, RepositoryBuilder, RepositoryError, FENCING_TOKEN_HEADER,
};
pub use retry::RetryPolicy;
pub use shard::{jump_consistent_hash, shard_of, stream_hash, FenceSource, FencedStore, ShardFence, ShardId};
pub use snapshot::{Snapshot, SnapshotPolicy, SnapshotStore};
pub use store::{check_replay, validate_append, AppendResult, EventFilter, EventStore, DEFAULT_READ_BATCH};
pub use subscription::subscribe;
pub use upcast::{FnUpcaster, UpcastError, Upcaster, UpcasterRegistry};
pub use version::ExpectedVersion;
