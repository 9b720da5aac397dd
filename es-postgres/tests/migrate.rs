//! Migrations: several processes starting at once on a schema that does
//! not exist yet all succeed and leave one correct schema.
mod common;

use es_core::{EventStore, ExpectedVersion, NewEvent, StreamId};
use es_postgres::{EventStoreConfig, PostgresEventStore};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;

/// A store on its own pool, as another process would have, not migrated.
async fn unmigrated(schema: &str) -> PostgresEventStore {
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&common::database_url())
        .await
        .unwrap();
    PostgresEventStore::with_pool(pool, EventStoreConfig::with_schema(schema)).unwrap()
}

async fn tables(observer: &sqlx::PgPool, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name",
    )
    .bind(schema)
    .fetch_all(observer)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_migrations_racing_on_a_fresh_schema_all_succeed() {
    common::ensure_database().await.unwrap();
    let observer = common::observer().await;
    // The schema a migration run by the test helper creates, for reference.
    let reference = common::store().await;
    let expected = tables(&observer, reference.schema()).await;
    assert!(expected.contains(&"events".to_owned()) && expected.contains(&"schema_migrations".to_owned()));
    // Every migration, each once, as the helper's run recorded them.
    let every_migration: Vec<i32> = sqlx::query_scalar(&format!(
        "SELECT version FROM {}.schema_migrations ORDER BY version",
        reference.schema()
    ))
    .fetch_all(&observer)
    .await
    .unwrap();
    assert_eq!(every_migration, (1..=every_migration.len() as i32).collect::<Vec<_>>());
    assert!(every_migration.len() >= 3, "{every_migration:?}");

    for round in 0..3 {
        let schema = common::schema(&format!("mig{round}"));
        let mut stores = Vec::new();
        for _ in 0..6 {
            stores.push(unmigrated(&schema).await);
        }
        assert!(
            tables(&observer, &schema).await.is_empty(),
            "the schema does not exist yet"
        );
        let results = futures::future::join_all(stores.iter().map(es_postgres::PostgresEventStore::migrate)).await;
        for r in results {
            r.unwrap();
        }
        assert_eq!(tables(&observer, &schema).await, expected, "one complete schema");
        let applied: Vec<i32> = sqlx::query_scalar(&format!(
            "SELECT version FROM {schema}.schema_migrations ORDER BY version"
        ))
        .fetch_all(&observer)
        .await
        .unwrap();
        assert_eq!(applied, every_migration, "each migration recorded once");
        // Running it again changes nothing, and the schema works.
        stores[0].migrate().await.unwrap();
        let r = stores[1]
            .append(
                "t",
                &StreamId::from("s"),
                ExpectedVersion::NoStream,
                vec![NewEvent::new("Happened", json!({}))],
            )
            .await
            .unwrap();
        assert_eq!(r.new_version, 1);
        assert_eq!(stores[2].stream_version(&StreamId::from("s")).await.unwrap(), 1);
    }
}
