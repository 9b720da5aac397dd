//! Helpers for backend authors: the shared rules every [`EventStore`] and
//! [`ProjectionUnit`] implementation follows, so that all backends refuse,
//! replay and page the same way. Applications do not need them.
//!
//! - [`validate_append`]: the shape checks of an append (a stream id every
//!   backend can store, events present, no NUL character anywhere in them,
//!   no event id twice), before any backend work.
//! - [`check_replay`]: whether an append whose ids are already stored is a
//!   replay of the same append (idempotent success) or a duplicate.
//! - [`checkpoint_after_page`]: how far a reader of the gap-safe global log
//!   may move its checkpoint after a page.
//! - [`apply_keeping_prefix`]: the contract of a transactional unit whose
//!   projector failed at one event (keep the events before it).
//!
//! The backend conformance suite (feature `conformance`) checks the
//! behaviour they implement.
//!
//! ```
//! use es_core::backend::checkpoint_after_page;
//! // An empty page read below head 50: the reader may move to the head.
//! assert_eq!(checkpoint_after_page(10, 50, &[], 100), (50, false));
//! ```
//!
//! [`EventStore`]: crate::EventStore
//! [`ProjectionUnit`]: crate::ProjectionUnit

pub use crate::projection::{apply_keeping_prefix, checkpoint_after_page};
pub use crate::store::{check_replay, validate_append};
