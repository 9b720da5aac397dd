#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The sqlx this crate is built with (its connections reach SQLite
/// projectors).
pub use sqlx;

mod batcher;
mod checkpoint;
mod config;
mod deadline;
mod dedup;
mod error;
mod gate;
mod migrate;
mod projection;
mod snapshot;
mod sql;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use batcher::WriterStats;
pub use checkpoint::SqliteCheckpointStore;
pub use config::{SqliteConfig, Synchronous};
pub use deadline::SqliteDeadlineStore;
pub use dedup::SqliteDeduplicator;
pub use error::SetupError;
pub use projection::{PageFailure, SqliteProjectionUnit, SqliteProjector, SqliteTyped, SqliteTypedProjector};
pub use snapshot::SqliteSnapshotStore;
pub use store::SqliteEventStore;
