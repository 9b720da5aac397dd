//! Fencing: a command decided under a lock carries the lock's fencing
//! token, and is refused once the stream holds events written under a
//! newer token.
//!
//! The check reads the newest token among the events the command's state
//! was built from (version `v`), and the append pins exactly version `v`:
//! if the append goes through, no newer token was in the stream when it
//! was written. A stale holder (its lease expired during a pause while a
//! newer holder wrote) therefore never writes, not even after catching up
//! on a version conflict.

use futures::TryStreamExt;

use crate::{EventStore, FencingToken, Metadata, StoreError, StreamId};

/// The event-metadata header carrying the fencing token of the lock under
/// which a command was decided (set it with
/// [`CommandContext::with_fencing_token`](crate::CommandContext::with_fencing_token)).
pub const FENCING_TOKEN_HEADER: &str = "fencing_token";

/// The fencing token recorded in `metadata`, if any.
pub(crate) fn token_of(metadata: &Metadata) -> Option<FencingToken> {
    metadata.headers.get(FENCING_TOKEN_HEADER)?.parse().ok()
}

/// The newest fencing token among the first `version` events of a stream.
///
/// Tokens only grow along a stream (every fenced append checks this
/// first), so the last event's token is the newest; only when the last
/// event was written without a token is the stream read from the start.
pub(crate) async fn newest_token<S: EventStore + ?Sized>(
    store: &S,
    id: &StreamId,
    version: u64,
) -> Result<Option<FencingToken>, StoreError> {
    if version == 0 {
        return Ok(None);
    }
    let last = store.read_stream_batch(id, version, 1).await?;
    if let Some(token) = last.first().and_then(|e| token_of(&e.metadata)) {
        return Ok(Some(token));
    }
    let mut newest = None;
    let mut events = store.read_stream(id, 1);
    while let Some(e) = events.try_next().await? {
        if e.version > version {
            break;
        }
        newest = newest.max(token_of(&e.metadata));
    }
    Ok(newest)
}

/// The fencing floor while one batch is decided: the newest token of the
/// stream (read once, on the first fenced command) and of the batch's
/// accepted commands so far.
#[derive(Default)]
pub(crate) struct Fence {
    /// `None` until read; then the stream's newest token, if any.
    #[allow(clippy::option_option, reason = "not read yet differs from read and absent")]
    stored: Option<Option<FencingToken>>,
    batch: Option<FencingToken>,
}

impl Fence {
    /// `Some(newer)` when a command fenced by `token` must be refused
    /// because the stream (at `version`) or the batch already holds a newer
    /// token.
    pub(crate) async fn newer_than<S: EventStore + ?Sized>(
        &mut self,
        store: &S,
        id: &StreamId,
        version: u64,
        token: FencingToken,
    ) -> Result<Option<FencingToken>, StoreError> {
        let stored = if let Some(t) = self.stored {
            t
        } else {
            let t = newest_token(store, id, version).await?;
            self.stored = Some(t);
            t
        };
        Ok(stored.max(self.batch).filter(|&newest| newest > token))
    }

    /// Records the token of an accepted command of the batch.
    pub(crate) fn accepted(&mut self, token: Option<FencingToken>) {
        self.batch = self.batch.max(token);
    }
}
