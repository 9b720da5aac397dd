//! Projections: read models built from the global log.
//!
//! One engine, [`ProjectionRunner`], drives every projection: catch-up,
//! live following, full / incremental / selective replay, and retry then
//! stop or dead-letter. What it drives is a [`ProjectionUnit`]: the piece
//! that applies a page of events and moves the checkpoint *atomically*.
//!
//! - [`ProjectorUnit`] runs a [`Projector`] (untyped, any side effects)
//!   with a [`CheckpointStore`]; in-process read models use it with the
//!   in-memory checkpoint store.
//! - es-postgres's `PgProjectionUnit` commits the read model rows and the
//!   checkpoint in one transaction.
//!
//! Handlers usually want typed events: implement [`TypedProjector`] and
//! wrap it in [`Typed`], which decodes (and upcasts) each event into an
//! [`EventEnvelope`]; an event that does not decode goes the dead-letter
//! path. The untyped [`Projector`] stays for cross-aggregate projections.

mod checkpoint;
mod error;
mod page;
mod page_failure;
mod projector;
mod runner;
mod typed;
mod unit;
mod view;

pub(crate) use checkpoint::drop_letters_after;
pub use checkpoint::{CheckpointStore, DeadLetter};
pub use error::ProjectionError;
pub use page::checkpoint_after_page;
pub use page_failure::PageFailure;
pub use projector::{Projector, ProjectorUnit};
pub use runner::{OnFailure, Progress, ProjectionConfig, ProjectionReport, ProjectionRunner, ReplayMode};
pub use typed::{EventEnvelope, Typed, TypedProjector, Undecodable};
pub use unit::{apply_keeping_prefix, Advance, ProjectionUnit, UnitError};
pub use view::{InMemoryViews, View};
