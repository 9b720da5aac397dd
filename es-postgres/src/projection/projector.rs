//! [`TransactionalProjector`]: writes its read model with the unit's
//! transaction.

use async_trait::async_trait;
use es_core::{BoxError, EventFilter, PageFailure, RecordedEvent};
use sqlx::PgConnection;

/// A projector that writes its read model through the transaction it is
/// given, so the rows and the checkpoint commit together.
///
/// Its tables belong in [`setup`](Self::setup) (`CREATE TABLE IF NOT
/// EXISTS …`), which [`PgProjectionUnit`](crate::PgProjectionUnit) runs once
/// before the first page. Qualify them with the event store's schema
/// ([`PostgresEventStore::schema`](crate::PostgresEventStore::schema)) so
/// tests and tenants stay apart.
#[async_trait]
pub trait TransactionalProjector: Send + Sync + 'static {
    /// Unique name; the key of the checkpoint.
    fn name(&self) -> &str;
    /// The events this projector wants (all by default).
    fn filter(&self) -> EventFilter {
        EventFilter::all()
    }
    /// Creates the read model's tables and indexes; must be idempotent.
    async fn setup(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        let _ = tx;
        Ok(())
    }
    /// Applies one event, writing through `tx` only.
    async fn apply(&self, tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), BoxError>;
    /// Applies a page of events, writing through `tx` only. The default
    /// calls [`apply`](Self::apply) per event; override it to write a page
    /// with a few set-based statements (rebuilds run much faster).
    async fn apply_page(&self, tx: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), PageFailure> {
        for (i, event) in events.iter().enumerate() {
            self.apply(tx, event).await.map_err(|e| PageFailure::at(i, e))?;
        }
        Ok(())
    }
    /// Clears the read model before a full rebuild (in the transaction that
    /// resets the checkpoint).
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError>;
}
