//! `PostgresDeadlineStore` passes es-core's deadline checks, and its
//! deadlines outlive the store value (a restart).

use chrono::{DateTime, Utc};
use es_core::{DeadlineStore, StreamId};
use es_postgres::testing::{fresh_schema, store};
use es_postgres::{EventStoreConfig, PostgresDeadlineStore};

#[tokio::test]
async fn deadlines_pass_the_checks_and_survive_a_new_store() {
    let schema = fresh_schema("deadlines");
    let pg = store(EventStoreConfig::with_schema(schema.clone())).await.unwrap();
    es_core::conformance::deadline_store(&PostgresDeadlineStore::new(&pg)).await;
    drop(pg);
    let again = store(EventStoreConfig::with_schema(schema)).await.unwrap();
    let at: DateTime<Utc> = "2026-01-01T00:00:30Z".parse().unwrap();
    let due = PostgresDeadlineStore::new(&again).due("m", at, 10).await.unwrap();
    assert_eq!(due.len(), 3, "{due:?}");
    assert_eq!(due[0].0, StreamId::from("early"));
}
