//! Projections whose read model lives in the store's SQLite database.
//!
//! [`SqliteProjectionUnit`] is es-core's `ProjectionUnit` for them: each
//! page of events, the checkpoint move and (for a failing event) the dead
//! letter commit in one transaction, so a crash never applies an event
//! twice or skips one, and two runners of one projection (two instances on
//! the same file) never both apply a page. Run it with es-core's
//! `ProjectionRunner`.
//!
//! - [`SqliteProjector`]: the untyped form, any event of the log.
//! - [`SqliteTypedProjector`] (run through [`SqliteTyped`]): decoded events
//!   of one aggregate.

mod projector;
mod typed;
mod unit;

pub use es_core::PageFailure;
pub use projector::SqliteProjector;
pub use typed::{SqliteTyped, SqliteTypedProjector};
pub use unit::SqliteProjectionUnit;
