//! Projections whose read model lives in PostgreSQL.
//!
//! [`PgProjectionUnit`] is es-core's `ProjectionUnit` for them: each page of
//! events, the checkpoint move and (for a failing event) the dead letter
//! commit in one transaction, so a crash never applies an event twice or
//! skips one, and two runners of one projection (two server instances)
//! never both apply a page. Run it with es-core's `ProjectionRunner`.
//!
//! - [`TransactionalProjector`]: the untyped form, any event of the log.
//! - [`PgTypedProjector`] (run through [`PgTyped`]): decoded events of one
//!   aggregate.
//! - [`PgViews`]: a serde view per stream id in a table the library
//!   creates — a read model without writing SQL.
//! - [`BlueGreen`]: build version 2 of a projection beside version 1 and
//!   switch readers atomically.
//! - [`projection_statuses`]: position, lag and failure of each projection.

mod blue_green;
mod projector;
mod status;
mod typed;
mod unit;
mod views;

pub use blue_green::{BlueGreen, BlueGreenError, SwitchOutcome};
pub use es_core::PageFailure;
pub use projector::TransactionalProjector;
pub use status::{projection_statuses, ProjectionStatus};
pub use typed::{PgTyped, PgTypedProjector};
pub use unit::PgProjectionUnit;
pub use views::PgViews;
