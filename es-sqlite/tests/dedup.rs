//! Idempotency keys in the SQLite file: one `Started` per key among
//! concurrent callers, outcomes replayed across a reopen, expiry.
mod common;

use std::sync::Arc;
use std::time::Duration;

use es_core::{CommandDeduplicator, DedupStatus};
use es_sqlite::testing::TempDatabase;
use es_sqlite::{SqliteConfig, SqliteDeduplicator};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_begin_wins_and_the_outcome_survives_a_reopen() {
    let temp = TempDatabase::new("dedup");
    let store = common::open(&temp, SqliteConfig::default()).await;
    let dedup = Arc::new(
        SqliteDeduplicator::new(&store, Duration::from_secs(3600), Duration::from_secs(30))
            .await
            .unwrap(),
    );
    // Two connections' worth of racers (the pool) on one key.
    let racers: Vec<_> = (0..16)
        .map(|_| {
            let dedup = Arc::clone(&dedup);
            tokio::spawn(async move { dedup.begin("k").await.unwrap() })
        })
        .collect();
    let mut claims = Vec::new();
    for r in racers {
        match r.await.unwrap() {
            DedupStatus::Started(claim) => claims.push(claim),
            DedupStatus::InProgress => {}
            DedupStatus::Completed(v) => panic!("nothing completed yet: {v}"),
        }
    }
    assert_eq!(claims.len(), 1, "exactly one caller may run the command");
    dedup.complete("k", &claims[0], &json!({"status": 201})).await.unwrap();
    assert_eq!(
        dedup.begin("k").await.unwrap(),
        DedupStatus::Completed(json!({"status": 201}))
    );
    // Abandoning a completed key changes nothing; an in-flight one is freed.
    dedup.abandon("k", &claims[0]).await.unwrap();
    assert!(matches!(dedup.begin("k").await.unwrap(), DedupStatus::Completed(_)));
    let other = dedup.begin("other").await.unwrap().into_claim().expect("started");
    dedup.abandon("other", &other).await.unwrap();
    assert!(dedup.begin("other").await.unwrap().is_started());
    store.shutdown().await;
    drop(store);

    let store = common::open(&temp, SqliteConfig::default()).await;
    let dedup = SqliteDeduplicator::new(&store, Duration::from_secs(3600), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        dedup.begin("k").await.unwrap(),
        DedupStatus::Completed(json!({"status": 201})),
        "a restart still answers the retry with the first outcome"
    );
    assert!(
        dedup.begin("other").await.unwrap().is_started(),
        "a key in progress when its process died is free again"
    );
}

#[tokio::test]
async fn expired_outcomes_and_dead_in_flight_keys_start_again() {
    let temp = TempDatabase::new("dedup-expiry");
    let store = common::open(&temp, SqliteConfig::default()).await;
    let dedup = SqliteDeduplicator::new(&store, Duration::from_millis(50), Duration::from_millis(50))
        .await
        .unwrap();
    let done = dedup.begin("done").await.unwrap().into_claim().expect("started");
    dedup.complete("done", &done, &json!(1)).await.unwrap();
    assert!(dedup.begin("stuck").await.unwrap().is_started());
    assert_eq!(dedup.begin("stuck").await.unwrap(), DedupStatus::InProgress);
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(dedup.begin("done").await.unwrap().is_started(), "window over");
    assert!(dedup.begin("stuck").await.unwrap().is_started(), "its owner died");
}

#[tokio::test]
async fn claims_conform() {
    let temp = TempDatabase::new("dedup-claims");
    let store = common::open(&temp, SqliteConfig::default()).await;
    let ttl = Duration::from_secs(1);
    let dedup = SqliteDeduplicator::new(&store, Duration::from_secs(3600), ttl)
        .await
        .unwrap();
    es_core::conformance::deduplicator_claims(&dedup, ttl).await;
    store.shutdown().await;
}

/// Readiness: the check answers while the file's pool is open and fails
/// once it is closed.
#[tokio::test]
async fn check_fails_once_the_database_is_gone() {
    let temp = TempDatabase::new("dedup-check");
    let store = common::open(&temp, SqliteConfig::default()).await;
    let dedup = SqliteDeduplicator::new(&store, Duration::from_secs(3600), Duration::from_secs(1))
        .await
        .unwrap();
    dedup.check().await.unwrap();
    store.pool().close().await;
    let err = dedup.check().await.unwrap_err();
    assert!(
        matches!(err, es_core::DedupError::Unavailable { operation: "check", .. }),
        "{err}"
    );
}

/// A file written before claims were kept gains the column; its outcomes
/// are still answered, and its keys follow the claims.
#[tokio::test]
async fn a_file_from_before_claims_is_upgraded() {
    let temp = TempDatabase::new("dedup-upgrade");
    let store = common::open(&temp, SqliteConfig::default()).await;
    sqlx::raw_sql(
        "CREATE TABLE dedup_keys (key TEXT PRIMARY KEY, outcome TEXT, since_ms INTEGER NOT NULL); \
         INSERT INTO dedup_keys (key, outcome, since_ms) VALUES ('old', '{\"n\":1}', CAST(strftime('%s', 'now') AS INTEGER) * 1000)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let ttl = Duration::from_secs(1);
    let dedup = SqliteDeduplicator::new(&store, Duration::from_secs(3600), ttl)
        .await
        .unwrap();
    assert_eq!(
        dedup.begin("old").await.unwrap(),
        DedupStatus::Completed(json!({ "n": 1 }))
    );
    es_core::conformance::deduplicator_claims(&dedup, ttl).await;
    store.shutdown().await;
}

/// Keys past their window are deleted as completions go on, so the file
/// does not grow by one row per key for ever.
#[tokio::test]
async fn expired_keys_are_purged_as_completions_go_on() {
    let temp = TempDatabase::new("dedup-purge");
    let store = common::open(&temp, SqliteConfig::default()).await;
    let dedup = SqliteDeduplicator::new(&store, Duration::from_millis(1), Duration::from_millis(1))
        .await
        .unwrap();
    let rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM dedup_keys")
            .fetch_one(store.pool())
            .await
            .unwrap()
    };
    for i in 0..1500 {
        let key = format!("k{i}");
        let claim = dedup.begin(&key).await.unwrap().into_claim().expect("started");
        dedup.complete(&key, &claim, &json!({"status": 200})).await.unwrap();
    }
    // The purge started by the completions runs in the background.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rows().await >= 1500 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        rows().await < 1500,
        "a purge ran among the completions: {} rows",
        rows().await
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    dedup.purge_expired().await.unwrap();
    assert_eq!(rows().await, 0, "every key is past its window");
    store.shutdown().await;
}
