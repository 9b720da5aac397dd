//! The PostgreSQL store passes es-core's conformance suite.
mod common;

async fn fresh_store() -> es_postgres::PostgresEventStore {
    common::store().await
}

es_core::event_store_conformance!(fresh_store, fencing);

mod dedup {
    use std::process::Stdio;
    use std::time::Duration;

    use es_core::{CommandDeduplicator, DedupError, DedupStatus};
    use es_postgres::{EventStoreConfig, PostgresDeduplicator, PostgresEventStore};
    use serde_json::json;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    const WINDOW: Duration = Duration::from_secs(3600);
    const IN_FLIGHT: Duration = Duration::from_secs(1);
    /// The claims check: three calls must finish within it while the
    /// other tests load the same PostgreSQL (1 s was once too short in CI).
    const CLAIMS_IN_FLIGHT: Duration = Duration::from_secs(3);
    const SCHEMA_VAR: &str = "ES_PG_DEDUP_SCHEMA";
    const STALLED: &str = "dedup::a_stalled_process_whose_key_a_retry_took_changes_nothing";

    /// The stalled process: begins the key, says so, waits for a line on
    /// stdin (stalled past the in-flight TTL meanwhile), then completes
    /// and abandons it and prints what its `complete` answered.
    async fn stalled_holder(schema: String) {
        let pool = sqlx::PgPool::connect(&super::common::database_url()).await.unwrap();
        let store = PostgresEventStore::with_pool(pool, EventStoreConfig::with_schema(schema)).unwrap();
        let dedup = PostgresDeduplicator::new(&store, WINDOW, IN_FLIGHT).await.unwrap();
        let claim = dedup.begin("k").await.unwrap().into_claim().expect("the key is free");
        println!("STARTED");
        let mut go = String::new();
        BufReader::new(tokio::io::stdin()).read_line(&mut go).await.unwrap();
        let completed = dedup.complete("k", &claim, &json!("stalled")).await;
        dedup.abandon("k", &claim).await.unwrap();
        match completed {
            Err(DedupError::ClaimLost { .. }) => println!("OUTCOME lost"),
            other => println!("OUTCOME {other:?}"),
        }
    }

    /// A process holding a key stalls past the in-flight TTL; a retry in
    /// another process takes the key and completes it. The stalled
    /// process's late `complete` is refused and its `abandon` changes
    /// nothing: the retry's outcome stands. (The test runs its own binary
    /// again as the stalled process.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_process_whose_key_a_retry_took_changes_nothing() {
        if let Ok(schema) = std::env::var(SCHEMA_VAR) {
            return stalled_holder(schema).await;
        }
        let store = super::common::store().await;
        let dedup = PostgresDeduplicator::new(&store, WINDOW, IN_FLIGHT).await.unwrap();
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", STALLED, "--nocapture", "--test-threads=1"])
            .env(SCHEMA_VAR, store.schema())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next_line = async move |prefix: &str| loop {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .expect("the stalled process answers")
                .unwrap()
                .expect("the stalled process prints its line");
            // libtest's own output may share the line.
            if let Some(at) = line.find(prefix) {
                return line[at..].to_owned();
            }
        };
        next_line("STARTED").await;
        assert_eq!(dedup.begin("k").await.unwrap(), DedupStatus::InProgress);
        tokio::time::sleep(IN_FLIGHT + IN_FLIGHT / 2).await;
        let retry = dedup.begin("k").await.unwrap().into_claim().expect("the mark expired");
        dedup.complete("k", &retry, &json!("retry")).await.unwrap();
        child.stdin.take().unwrap().write_all(b"go\n").await.unwrap();
        assert_eq!(next_line("OUTCOME").await, "OUTCOME lost");
        assert!(child.wait().await.unwrap().success());
        assert_eq!(dedup.begin("k").await.unwrap(), DedupStatus::Completed(json!("retry")));
    }

    #[tokio::test]
    async fn claims_conform() {
        let store = super::common::store().await;
        let dedup = PostgresDeduplicator::new(&store, WINDOW, CLAIMS_IN_FLIGHT)
            .await
            .unwrap();
        es_core::conformance::deduplicator_claims(&dedup, CLAIMS_IN_FLIGHT).await;
    }

    /// Readiness: the check answers while the database does and fails
    /// once the pool can no longer reach it.
    #[tokio::test]
    async fn check_fails_once_the_database_is_gone() {
        let store = super::common::store().await;
        let dedup = PostgresDeduplicator::new(&store, WINDOW, IN_FLIGHT).await.unwrap();
        dedup.check().await.unwrap();
        store.pool().close().await;
        let err = dedup.check().await.unwrap_err();
        assert!(
            matches!(err, es_core::DedupError::Unavailable { operation: "check", .. }),
            "{err}"
        );
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
        let dedup = PostgresDeduplicator::new(&store, WINDOW, CLAIMS_IN_FLIGHT)
            .await
            .unwrap();
        assert_eq!(
            dedup.begin("old").await.unwrap(),
            DedupStatus::Completed(json!({ "n": 1 }))
        );
        es_core::conformance::deduplicator_claims(&dedup, CLAIMS_IN_FLIGHT).await;
    }
}
