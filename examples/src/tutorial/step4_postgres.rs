//! Step 4: the same repository on PostgreSQL.

use std::sync::Arc;

use es_core::{EventStore, Repository, SnapshotPolicy};
use es_postgres::{EventStoreConfig, PostgresEventStore, PostgresSnapshotStore, SetupError};

use super::step1_account::Account;

// ANCHOR: connect
/// Accounts in PostgreSQL schema `schema` (created and migrated if needed),
/// with a snapshot every 100 events.
pub async fn postgres_accounts(
    database_url: &str,
    schema: &str,
) -> Result<(PostgresEventStore, Repository<Account>), SetupError> {
    let pg = PostgresEventStore::connect(database_url, EventStoreConfig::with_schema(schema)).await?;
    pg.migrate().await?;
    let store: Arc<dyn EventStore> = Arc::new(pg.clone());
    let accounts = Repository::<Account>::builder(store)
        .snapshots(
            Arc::new(PostgresSnapshotStore::new(&pg)),
            SnapshotPolicy::EveryNEvents(100),
        )
        .build();
    Ok((pg, accounts))
}
// ANCHOR_END: connect
