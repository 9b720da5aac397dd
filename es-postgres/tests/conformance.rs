//! The PostgreSQL store passes es-core's conformance suite.
mod common;

async fn fresh_store() -> es_postgres::PostgresEventStore {
    common::store().await
}

es_core::event_store_conformance!(fresh_store, fencing);

mod dedup {
    use std::time::Duration;

    use es_core::{CommandDeduplicator, DedupStatus};
    use es_postgres::PostgresDeduplicator;
    use serde_json::json;

    const WINDOW: Duration = Duration::from_secs(3600);
    const IN_FLIGHT: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn claims_conform() {
        let store = super::common::store().await;
        let dedup = PostgresDeduplicator::new(&store, WINDOW, IN_FLIGHT).await.unwrap();
        es_core::conformance::deduplicator_claims(&dedup, IN_FLIGHT).await;
    }

    /// Of many concurrent `begin`s of one key, from two deduplicators (as
    /// from two processes), one starts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_of_many_concurrent_begins_starts() {
        let store = super::common::store().await;
        let a = PostgresDeduplicator::new(&store, WINDOW, IN_FLIGHT).await.unwrap();
        let b = PostgresDeduplicator::new(&store, WINDOW, IN_FLIGHT).await.unwrap();
        let begins = (0..40).map(|i| {
            let dedup = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { dedup.begin("k").await.unwrap() })
        });
        let statuses: Vec<DedupStatus> = futures::future::try_join_all(begins).await.unwrap();
        let started = statuses.iter().filter(|s| s.is_started()).count();
        assert_eq!(started, 1, "{statuses:?}");
        assert_eq!(statuses.len() - started, 39);
        assert!(statuses.iter().all(|s| s.is_started() || *s == DedupStatus::InProgress));
    }

    /// A table written before claims were kept gains the column; its
    /// outcomes are still answered, and its keys follow the claims.
    #[tokio::test]
    async fn a_table_from_before_claims_is_upgraded() {
        let store = super::common::store().await;
        let s = store.schema();
        sqlx::raw_sql(&format!(
            "CREATE TABLE {s}.dedup_keys (key TEXT PRIMARY KEY, outcome TEXT, \
             since TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()); \
             INSERT INTO {s}.dedup_keys (key, outcome) VALUES ('old', '{{\"n\":1}}')"
        ))
        .execute(store.pool())
        .await
        .unwrap();
        let dedup = PostgresDeduplicator::new(&store, WINDOW, IN_FLIGHT).await.unwrap();
        assert_eq!(
            dedup.begin("old").await.unwrap(),
            DedupStatus::Completed(json!({ "n": 1 }))
        );
        es_core::conformance::deduplicator_claims(&dedup, IN_FLIGHT).await;
    }
}
