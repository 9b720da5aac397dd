#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The sqlx this crate is built with: transactional projectors receive
/// its connections (`&mut sqlx::PgConnection`).
pub use sqlx;

mod batcher;
mod checkpoint;
mod column;
mod config;
mod dedup;
mod error;
mod health;
mod held_back;
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
pub use held_back::{HeldBack, HELD_BACK_COUNT_LIMIT};
pub use process::{PgProcess, PostgresDeadlineStore};
pub use projection::{
    projection_statuses, BlueGreen, BlueGreenError, PageFailure, PgProjectionUnit, PgTyped, PgTypedProjector, PgViews,
    ProjectionStatus, SwitchOutcome, TransactionalProjector,
};
pub use snapshot::{BackgroundSnapshotter, PostgresSnapshotStore, SnapshotterConfig};
pub use store::PostgresEventStore;
