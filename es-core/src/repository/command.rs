//! What goes into and comes out of [`Repository::execute`](super::Repository::execute).

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::{Aggregate, AppendResult, CodecError, CommittedEvent, FencingToken, Metadata, StoreError, StreamId};

/// Per-command context: metadata for the events, optional expected version
/// and optional command id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandContext {
    /// Metadata copied onto every event of the command.
    pub metadata: Metadata,
    /// When set, the command fails with [`RepositoryError::Conflict`] unless
    /// the stream is at exactly this version (no retry).
    pub expected_version: Option<u64>,
    /// When set, the command is applied at most once per stream: its event
    /// ids are derived from this id, so the store itself recognises a
    /// repeat (even after a crash between commit and reply) and the
    /// repeat returns [`CommandOutcome::already_applied`].
    pub command_id: Option<Uuid>,
}

impl CommandContext {
    /// Returns `self` with an expected version.
    #[must_use]
    pub fn expect_version(mut self, version: u64) -> Self {
        self.expected_version = Some(version);
        self
    }

    /// Returns `self` with a command id (idempotency key).
    #[must_use]
    pub fn with_command_id(mut self, id: Uuid) -> Self {
        self.command_id = Some(id);
        self
    }

    /// Returns `self` with metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Returns `self` fenced by a lock's token: the token is recorded on
    /// every event (header [`FENCING_TOKEN_HEADER`](crate::FENCING_TOKEN_HEADER)),
    /// and the command fails with [`RepositoryError::Fenced`] instead of
    /// appending when the stream already holds events of a newer token
    /// (a newer lock holder wrote while this one was stalled).
    #[must_use]
    pub fn with_fencing_token(mut self, token: FencingToken) -> Self {
        self.metadata
            .headers
            .insert(super::fence::FENCING_TOKEN_HEADER.to_owned(), token.to_string());
        self
    }

    /// The fencing token set by [`with_fencing_token`](Self::with_fencing_token).
    pub fn fencing_token(&self) -> Option<FencingToken> {
        super::fence::token_of(&self.metadata)
    }

    /// The id of the `index`-th event this command appends to `stream_id`:
    /// derived from the command id when there is one (UUIDv5 of the stream
    /// and the index, so the same command id on two streams never
    /// collides), else a fresh UUIDv7.
    pub fn event_id(&self, stream_id: impl Into<StreamId>, index: usize) -> Uuid {
        match self.command_id {
            Some(cid) => {
                let stream_id: StreamId = stream_id.into();
                let mut name = Vec::with_capacity(stream_id.as_str().len() + 9);
                name.extend_from_slice(stream_id.as_str().as_bytes());
                name.push(0);
                name.extend_from_slice(&(index as u64).to_be_bytes());
                Uuid::new_v5(&cid, &name)
            }
            None => Uuid::now_v7(),
        }
    }
}

/// The result of an accepted command.
#[derive(Debug, Clone)]
pub struct CommandOutcome<A: Aggregate> {
    /// The state after the command.
    pub state: A,
    /// The stream version after the command.
    pub version: u64,
    /// The events recorded (empty when the command was a no-op or had
    /// already been applied).
    pub events: Vec<CommittedEvent<A::Event>>,
    /// Positions and versions of the append, if something was appended.
    pub append: Option<AppendResult>,
    /// `true` when the command id had already been applied: nothing new was
    /// recorded and `state` is the current state.
    pub already_applied: bool,
    /// How many times the command was decided again after a version
    /// conflict (0 when the first decision stood).
    pub conflict_retries: u32,
}

/// Why a command was not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepositoryError<E: std::error::Error + 'static> {
    /// The aggregate rejected the command.
    #[error(transparent)]
    Rejected(E),
    /// A validator rejected the command's events.
    #[error("events rejected by validator: {0}")]
    Invalid(String),
    /// The stream was not at the expected version (the caller's expected
    /// version, or the loaded one after all retries).
    #[error("version conflict on stream {stream_id}: expected {expected}, actual {actual}")]
    Conflict {
        /// The stream.
        stream_id: StreamId,
        /// The version the command was decided on.
        expected: u64,
        /// The version found in the store.
        actual: u64,
    },
    /// A stored event or snapshot cannot be decoded.
    #[error("cannot decode stream {stream_id} at version {version}: {source}")]
    Corrupt {
        /// The stream.
        stream_id: StreamId,
        /// The version of the bad record.
        version: u64,
        /// Why.
        #[source]
        source: CodecError,
    },
    /// The stream belongs to another aggregate type: its events were
    /// written as `found`, and this repository loads `expected`. Nothing
    /// was decided or appended. A caller that takes ids from outside
    /// (another aggregate's id given where an account's is expected, say)
    /// treats it as "no such aggregate".
    #[error("stream {stream_id} is a {found} stream, not a {expected} stream")]
    WrongType {
        /// The stream.
        stream_id: StreamId,
        /// The aggregate type this repository loads ([`Aggregate::TYPE`](crate::Aggregate::TYPE)).
        expected: &'static str,
        /// The stream type its events were written with.
        found: String,
    },
    /// The command was decided under a lock whose fencing token is older
    /// than one already recorded in the stream: its holder lost the lock
    /// while a newer holder wrote. Nothing was appended; not retried.
    #[error("stream {stream_id} holds events of fencing token {newer}, newer than this command's {token}")]
    Fenced {
        /// The stream.
        stream_id: StreamId,
        /// The command's fencing token.
        token: FencingToken,
        /// The newer token found in the stream.
        newer: FencingToken,
    },
    /// The store failed.
    #[error(transparent)]
    Store(Arc<StoreError>),
    /// The command's task ended without an answer (a panic in user code).
    #[error("command aborted before completion: {0}")]
    Aborted(String),
}

impl<E: std::error::Error + 'static> RepositoryError<E> {
    /// Whether this is a version conflict.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }
}

impl<E: std::error::Error + 'static> RepositoryError<E> {
    /// A copy of a failure that concerns a whole batch (a domain rejection,
    /// which concerns one command, becomes [`RepositoryError::Aborted`]).
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Self::Rejected(e) => Self::Aborted(e.to_string()),
            Self::Invalid(r) => Self::Invalid(r.clone()),
            Self::Conflict {
                stream_id,
                expected,
                actual,
            } => Self::Conflict {
                stream_id: stream_id.clone(),
                expected: *expected,
                actual: *actual,
            },
            Self::Corrupt {
                stream_id,
                version,
                source,
            } => Self::Corrupt {
                stream_id: stream_id.clone(),
                version: *version,
                source: source.clone(),
            },
            Self::WrongType {
                stream_id,
                expected,
                found,
            } => Self::WrongType {
                stream_id: stream_id.clone(),
                expected,
                found: found.clone(),
            },
            Self::Fenced {
                stream_id,
                token,
                newer,
            } => Self::Fenced {
                stream_id: stream_id.clone(),
                token: *token,
                newer: *newer,
            },
            Self::Store(e) => Self::Store(Arc::clone(e)),
            Self::Aborted(r) => Self::Aborted(r.clone()),
        }
    }
}

impl<E: std::error::Error + 'static> From<StoreError> for RepositoryError<E> {
    fn from(e: StoreError) -> Self {
        Self::Store(Arc::new(e))
    }
}

/// A decision that may use outside services (an async `handle`).
///
/// Implement it for commands that need I/O to decide (an exchange rate, a
/// fraud check) and run them with
/// [`Repository::execute_with`](super::Repository::execute_with). Like
/// `handle`, it may run more than once after a concurrency conflict.
#[async_trait]
pub trait Decide<A: Aggregate>: Send + Sync + 'static {
    /// Decides the events for the current state.
    async fn decide(&self, state: &A) -> Result<Vec<A::Event>, A::Error>;
}

/// [`Decide`] by the aggregate's pure [`Aggregate::handle`].
pub(crate) struct Handle<A: Aggregate>(pub A::Command);

#[async_trait]
impl<A: Aggregate> Decide<A> for Handle<A> {
    async fn decide(&self, state: &A) -> Result<Vec<A::Event>, A::Error> {
        state.handle(&self.0)
    }
}
