//! [`SqliteProjector`]: writes its read model with the unit's transaction.

use async_trait::async_trait;
use es_core::{BoxError, EventFilter, PageFailure, RecordedEvent};
use sqlx::SqliteConnection;

/// A projector that writes its read model through the transaction it is
/// given, so the rows and the checkpoint commit together — the SQLite
/// counterpart of es-postgres's `TransactionalProjector`.
///
/// Its tables belong in [`setup`](Self::setup) (`CREATE TABLE IF NOT
/// EXISTS …`), which [`SqliteProjectionUnit`](crate::SqliteProjectionUnit)
/// runs once before the first page.
///
/// ```
/// use async_trait::async_trait;
/// use es_core::{BoxError, RecordedEvent};
/// use es_sqlite::SqliteProjector;
/// use sqlx::SqliteConnection;
///
/// /// Events per stream.
/// struct Counts;
///
/// #[async_trait]
/// impl SqliteProjector for Counts {
///     fn name(&self) -> &str { "counts" }
///     async fn setup(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
///         sqlx::query("CREATE TABLE IF NOT EXISTS counts (stream_id TEXT PRIMARY KEY, n INTEGER NOT NULL)")
///             .execute(tx).await?;
///         Ok(())
///     }
///     async fn apply(&self, tx: &mut SqliteConnection, e: &RecordedEvent) -> Result<(), BoxError> {
///         sqlx::query("INSERT INTO counts VALUES (?1, 1) ON CONFLICT (stream_id) DO UPDATE SET n = n + 1")
///             .bind(e.stream_id.as_str()).execute(tx).await?;
///         Ok(())
///     }
///     async fn reset(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
///         sqlx::query("DELETE FROM counts").execute(tx).await?;
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait SqliteProjector: Send + Sync + 'static {
    /// Unique name; the key of the checkpoint.
    fn name(&self) -> &str;
    /// The events this projector wants (all by default).
    fn filter(&self) -> EventFilter {
        EventFilter::all()
    }
    /// Creates the read model's tables and indexes; must be idempotent.
    async fn setup(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
        let _ = tx;
        Ok(())
    }
    /// Applies one event, writing through `tx` only.
    async fn apply(&self, tx: &mut SqliteConnection, event: &RecordedEvent) -> Result<(), BoxError>;
    /// Applies a page of events, writing through `tx` only. The default
    /// calls [`apply`](Self::apply) per event; override it to write a page
    /// with a few set-based statements.
    async fn apply_page(&self, tx: &mut SqliteConnection, events: &[RecordedEvent]) -> Result<(), PageFailure> {
        for (i, event) in events.iter().enumerate() {
            self.apply(tx, event).await.map_err(|e| PageFailure::at(i, e))?;
        }
        Ok(())
    }
    /// Clears the read model before a full rebuild (in the transaction that
    /// resets the checkpoint).
    async fn reset(&self, tx: &mut SqliteConnection) -> Result<(), BoxError>;
}
