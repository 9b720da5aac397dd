//! # es-postgres — the PostgreSQL backend of es-core
//!
//! - [`PostgresEventStore`]: es-core's `EventStore`, passing its conformance
//!   suite. Appends are **group-committed** (many appends, one statement,
//!   one commit) with optimistic concurrency inside that same statement,
//!   and the global log is **gap-safe** for readers.
//! - [`PostgresSnapshotStore`] and a [`BackgroundSnapshotter`].
//! - [`PgProjectionUnit`]: es-core's projection runner commits a
//!   [`TransactionalProjector`]'s (or a typed [`PgTypedProjector`]'s) page
//!   of rows and its checkpoint in one transaction; [`PgViews`] keeps serde
//!   views without SQL; [`BlueGreen`] rebuilds beside the serving version
//!   and switches readers atomically; [`projection_statuses`] for operators.
//!   [`PostgresCheckpointStore`] keeps checkpoints of at-least-once
//!   projectors.
//! - [`PgProcess`] runs es-core's process managers in the transactional
//!   unit (one instance drives a page at a time), with deadlines in
//!   [`PostgresDeadlineStore`].
//! - An optional outbox table written in the append's own statement.
//! - [`PostgresDeduplicator`]: idempotency keys shared by every process
//!   on the database.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use es_core::{EventStore, ExpectedVersion, NewEvent, StreamId};
//! use es_postgres::{EventStoreConfig, PostgresEventStore};
//!
//! let store = PostgresEventStore::connect(
//!     "postgres://postgres@127.0.0.1:5432/postgres",
//!     EventStoreConfig::with_schema("bank"),
//! ).await?;
//! store.migrate().await?;
//! let r = store
//!     .append("account", &StreamId::from("acc-1"), ExpectedVersion::NoStream,
//!             vec![NewEvent::new("AccountCreated", serde_json::json!({"owner": "Ada"}))])
//!     .await?;
//! assert_eq!(r.new_version, 1);
//! // Use it behind es-core's repository like any other store:
//! let store: Arc<dyn EventStore> = Arc::new(store);
//! # Ok(()) }
//! ```
//!
//! ## Gap-safe global log
//! A global position is `(id of the writing transaction << 20) + index of
//! the row in that transaction`. Readers only read positions below
//! `pg_snapshot_xmin(pg_current_snapshot()) << 20`: every transaction with
//! a smaller id has finished, and any transaction that commits later has a
//! larger id, hence larger positions. So a reader that remembers the last
//! position it saw can never skip an event that commits late, and never
//! sees one twice. The price: a long-running *writing* transaction
//! anywhere in the cluster holds readers back (not writers) until it ends;
//! keep write transactions short and watch projection lag.
//!
//! See the crate README for the table design, `EXPLAIN` plans and
//! benchmark figures.
#![deny(missing_docs)]

/// The sqlx this crate is built with: transactional projectors receive
/// its connections (`&mut sqlx::PgConnection`).
pub use sqlx;

mod batcher;
mod checkpoint;
mod config;
mod dedup;
mod error;
mod health;
mod migrate;
mod notify;
mod process;
mod projection;
mod snapshot;
mod sql;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod transaction;

pub use checkpoint::PostgresCheckpointStore;
pub use config::EventStoreConfig;
pub use dedup::PostgresDeduplicator;
pub use error::SetupError;
pub use health::Health;
pub use process::{PgProcess, PostgresDeadlineStore};
pub use projection::{
    projection_statuses, BlueGreen, BlueGreenError, PageFailure, PgProjectionUnit, PgTyped, PgTypedProjector, PgViews,
    ProjectionStatus, SwitchOutcome, TransactionalProjector,
};
pub use snapshot::{BackgroundSnapshotter, PostgresSnapshotStore, SnapshotterConfig};
pub use store::PostgresEventStore;
