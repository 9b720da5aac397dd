//! Step 4, embedded: the same repository on an SQLite file.

use std::sync::Arc;

use es_core::{EventStore, Repository, SnapshotPolicy};
use es_sqlite::{SetupError, SqliteConfig, SqliteEventStore, SqliteSnapshotStore};

use super::step1_account::Account;

// ANCHOR: connect
/// Accounts in the SQLite file at `path` (a path or an `sqlite://` URL;
/// the file, its directory and its tables are created if needed).
pub async fn sqlite_accounts(path: &str) -> Result<(SqliteEventStore, Repository<Account>), SetupError> {
    let db = SqliteEventStore::connect(path, SqliteConfig::default()).await?;
    let store: Arc<dyn EventStore> = Arc::new(db.clone());
    let accounts = Repository::<Account>::builder(store)
        .snapshots(
            Arc::new(SqliteSnapshotStore::new(&db)),
            SnapshotPolicy::EveryNEvents(100),
        )
        .build();
    Ok((db, accounts))
}
// ANCHOR_END: connect
