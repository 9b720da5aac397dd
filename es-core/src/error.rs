//! Errors of the store-level traits.

use uuid::Uuid;

use crate::{ExpectedVersion, StreamId};

/// Boxed source error of a backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// One backend failure reported to several callers (each append of a
/// batch that failed as a whole, say). It displays as the error itself,
/// which stays reachable, with its type, as its
/// [`source`](std::error::Error::source): callers can still tell an
/// unreachable database from a bug by walking the sources.
///
/// ```
/// use es_core::{SharedError, StoreError};
/// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// let text = refused.to_string();
/// let shared = SharedError::new(refused);
/// let answers: Vec<StoreError> = (0..2).map(|_| StoreError::backend("append", shared.clone())).collect();
/// for answer in &answers {
///     assert!(answer.to_string().contains(&text), "{answer}");
///     let cause = std::error::Error::source(answer).and_then(std::error::Error::source);
///     assert!(cause.is_some_and(|e| e.is::<std::io::Error>()));
/// }
/// ```
#[derive(Debug, Clone)]
pub struct SharedError(std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>);

impl SharedError {
    /// Shares `error`; clones report the same error.
    pub fn new(error: impl Into<BoxError>) -> Self {
        Self(std::sync::Arc::from(error.into()))
    }
}

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Errors of [`EventStore`](crate::EventStore), snapshot, checkpoint and
/// cache backends.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The stream was not at the expected version; nothing was written.
    #[error("version conflict on stream {stream_id}: expected {expected}, actual {actual}")]
    Conflict {
        /// The stream appended to.
        stream_id: StreamId,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The real current version (0 when the stream does not exist).
        actual: u64,
    },
    /// An event id of the append is already stored, but not as this same
    /// append at this same place; nothing was written.
    #[error("event {event_id} is already stored in stream {stored_stream_id} at version {stored_version}")]
    DuplicateEventId {
        /// The offending event id.
        event_id: Uuid,
        /// Where it is stored.
        stored_stream_id: StreamId,
        /// At which version.
        stored_version: u64,
    },
    /// The append itself is malformed (for example, it has no events).
    #[error("invalid append to stream {stream_id}: {reason}")]
    InvalidAppend {
        /// The stream appended to.
        stream_id: StreamId,
        /// What is wrong.
        reason: String,
    },
    /// A stored record cannot be read back.
    #[error("corrupt record in stream {stream_id} at version {version}: {reason}")]
    Corrupt {
        /// Stream of the record.
        stream_id: StreamId,
        /// Version of the record.
        version: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The backend is overloaded or shutting down; the operation was not
    /// attempted (safe to retry).
    #[error("store unavailable during {operation}: {reason}")]
    Unavailable {
        /// The operation refused.
        operation: &'static str,
        /// Why.
        reason: String,
    },
    /// A fenced append was refused: the shard's fence is above the
    /// writer's token, so another process owns the shard now. Nothing was
    /// written; the command belongs to the new owner.
    #[error("append fenced off: shard {shard} is at token {current}, the writer holds {token}")]
    Fenced {
        /// The shard of the stream.
        shard: u32,
        /// The writer's token.
        token: u64,
        /// The shard's current fence.
        current: u64,
    },
    /// This process does not own the stream's shard right now (it never
    /// did, its lease ran out, or it is handing the shard over); nothing
    /// was written.
    #[error("this process does not own shard {shard}")]
    NotShardOwner {
        /// The shard of the stream.
        shard: u32,
    },
    /// A write-behind log and the store disagree about a stream (for
    /// example Redis lost acknowledged state and re-read an older version
    /// from the store): appends to the stream are refused, nothing is
    /// overwritten, until an operator reconciles it.
    #[error("stream {stream_id} diverged between the write-behind log and the store: {reason}")]
    Diverged {
        /// The stream.
        stream_id: StreamId,
        /// What disagrees.
        reason: String,
    },
    /// The backend does not implement this operation.
    #[error("this store does not support {operation}")]
    Unsupported {
        /// The operation refused.
        operation: &'static str,
    },
    /// The backend failed (I/O, database, network). The operation may or may
    /// not have taken effect if it was a write: retry with the same event
    /// ids, which is safe because appends are idempotent.
    #[error("store backend failed during {operation}: {source}")]
    Backend {
        /// The operation that failed.
        operation: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// Wraps a backend error with the operation it interrupted.
    pub fn backend(operation: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            operation,
            source: source.into(),
        }
    }

    /// Whether this error is a version conflict.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }
}
