//! Optimistic-concurrency expectations for an append.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What the writer believes about the stream's current version.
///
/// Versions are 1-based: a stream with three events is at version 3; a stream
/// that does not exist is at version 0.
///
/// ```
/// use es_core::ExpectedVersion;
/// assert!(ExpectedVersion::NoStream.accepts(0));
/// assert!(!ExpectedVersion::NoStream.accepts(2));
/// assert!(ExpectedVersion::Exact(2).accepts(2));
/// assert!(ExpectedVersion::StreamExists.accepts(1));
/// assert!(ExpectedVersion::Any.accepts(7));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check: append at the end, whatever it is.
    Any,
    /// The stream must not exist yet (version 0).
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream must be exactly at this version (0 means "no stream").
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream currently at `current` satisfies this expectation.
    pub fn accepts(self, current: u64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => current == 0,
            Self::StreamExists => current > 0,
            Self::Exact(v) => current == v,
        }
    }

    /// The exact version this expectation pins, if it pins one.
    pub fn exact(self) -> Option<u64> {
        match self {
            Self::NoStream => Some(0),
            Self::Exact(v) => Some(v),
            Self::Any | Self::StreamExists => None,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no stream"),
            Self::StreamExists => f.write_str("stream exists"),
            Self::Exact(v) => write!(f, "{v}"),
        }
    }
}
