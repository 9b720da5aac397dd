//! Read-your-writes, on the read side: a command answers from its own
//! outcome as soon as its events are committed; a read that follows it,
//! on any instance, still sees them.
//!
//! - `GET /accounts/{id}` compares the row's version with the stream's
//!   ([`view_is_current`]); a row behind its stream is not served, the
//!   account is folded from the log instead.
//! - `GET /accounts` waits until the projection has passed every
//!   committed event ([`wait_for_committed`], bounded by
//!   `READ_YOUR_WRITES_WAIT_MS`).
//!
//! So commands do not wait for the projection's transaction, and reads
//! pay only when the projection is actually behind.

use es_core::StreamId;
use uuid::Uuid;

use super::state::AppState;

/// Whether a read-model row at `version` shows every event of account
/// `id` committed so far. When the stream's version cannot be read, the
/// row is taken as current (the read model is the fallback of a store
/// that is down, not the other way round).
pub(crate) async fn view_is_current(state: &AppState, id: Uuid, version: u64) -> bool {
    match state.repo.store().stream_version(&StreamId::from(&id)).await {
        Ok(stream) => stream <= version,
        Err(e) => {
            tracing::warn!(account_id = %id, error = %e, "stream version unavailable; serving the read model as is");
            true
        }
    }
}

/// Waits (at most `READ_YOUR_WRITES_WAIT_MS`) until the projection has
/// applied every event committed before the call, so that a list shows
/// every command answered before it was asked. Past the wait the list is
/// served as it is and `read_your_writes_timeouts_total` counts it.
pub(crate) async fn wait_for_committed(state: &AppState) {
    let wait = state.config.read_your_writes_wait;
    if wait.is_zero() {
        return;
    }
    let committed = match state.repo.store().committed_position().await {
        Ok(position) => position,
        Err(e) => {
            tracing::warn!(error = %e, "committed position unavailable; serving the read model as is");
            return;
        }
    };
    if state.projection.known_position() >= committed {
        return;
    }
    if !state.projection.wait_for(committed, wait).await {
        tracing::warn!(
            position = committed,
            ?wait,
            "account read model did not reach the committed events in time"
        );
        metrics::counter!("read_your_writes_timeouts_total").increment(1);
    }
}
