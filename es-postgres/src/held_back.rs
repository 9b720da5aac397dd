//! [`HeldBack`]: committed events the global log does not show yet.
//!
//! Readers stop below the oldest transaction still writing anywhere in the
//! PostgreSQL cluster (the gap-safe log, see the README). A writing
//! transaction left open, in this database or another one, holds every
//! reader back: the events committed after it stay unread, and the head
//! position and the projections' lag both stop moving, so lag alone reads
//! 0. This is the signal that does not: how many committed events wait
//! behind the limit, and since when.

use std::time::Duration;

use es_core::StoreError;

use crate::error::backend;
use crate::PostgresEventStore;

/// Most held-back events [`PostgresEventStore::held_back`] counts (it
/// reads no further: the count is bounded work for a health check).
pub const HELD_BACK_COUNT_LIMIT: u64 = 100_000;

/// Committed events that readers of the log cannot see yet.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HeldBack {
    /// How many (at most [`HELD_BACK_COUNT_LIMIT`]).
    pub events: u64,
    /// Since the first of them was recorded (`None` when there is none).
    pub for_how_long: Option<Duration>,
}

impl PostgresEventStore {
    /// The committed events that readers of the log do not see yet,
    /// because a transaction that began before them is still writing
    /// somewhere in the cluster. Usually none for more than a few
    /// milliseconds; alert when they wait for seconds.
    ///
    /// ```no_run
    /// # async fn f(store: es_postgres::PostgresEventStore) -> Result<(), es_core::StoreError> {
    /// let held = store.held_back().await?;
    /// if held.for_how_long.is_some_and(|d| d.as_secs() > 30) {
    ///     eprintln!("{} events wait behind an open transaction", held.events);
    /// }
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(level = "debug", name = "es.pg.held_back", skip_all)]
    pub async fn held_back(&self) -> Result<HeldBack, StoreError> {
        let (events, seconds): (i64, Option<f64>) = sqlx::query_as(&self.inner.sql.held_back)
            .bind(HELD_BACK_COUNT_LIMIT as i64)
            .fetch_one(self.pool())
            .await
            .map_err(|e| backend("held back events", e))?;
        Ok(HeldBack {
            events: events.max(0) as u64,
            // `try_`: a `recorded_at` of `-infinity` (written by hand) gives an
            // infinite age, which `from_secs_f64` would panic on.
            for_how_long: seconds.and_then(|s| Duration::try_from_secs_f64(s.max(0.0)).ok()),
        })
    }
}
