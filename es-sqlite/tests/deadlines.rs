//! `SqliteDeadlineStore` passes es-core's deadline checks, and its
//! deadlines are in the file: a store opened again sees them.

use chrono::{DateTime, Utc};
use es_core::{DeadlineStore, StreamId};
use es_sqlite::testing::TempDatabase;
use es_sqlite::{SqliteConfig, SqliteDeadlineStore, SqliteEventStore};

#[tokio::test]
async fn deadlines_pass_the_checks_and_survive_reopening_the_file() {
    let db = TempDatabase::new("deadlines");
    let store = SqliteEventStore::connect(&db.url(), SqliteConfig::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    es_core::conformance::deadline_store(&SqliteDeadlineStore::new(&store)).await;
    store.shutdown().await;
    drop(store);
    let again = SqliteEventStore::connect(&db.url(), SqliteConfig::default())
        .await
        .unwrap();
    let at: DateTime<Utc> = "2026-01-01T00:00:30Z".parse().unwrap();
    let due = SqliteDeadlineStore::new(&again).due("m", at, 10).await.unwrap();
    assert_eq!(due.len(), 3, "{due:?}");
    assert_eq!(due[0].0, StreamId::from("early"));
}
