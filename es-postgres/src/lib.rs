//! # es-postgres — the PostgreSQL backend of es-core
#![deny(missing_docs)]

mod batcher;
mod config;
mod error;
mod migrate;
mod notify;
mod sql;
mod store;
mod transaction;

pub use config::EventStoreConfig;
pub use error::SetupError;
pub use store::PostgresEventStore;
