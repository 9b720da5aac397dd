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
    let mut started = 0;
    for r in racers {
        match r.await.unwrap() {
            DedupStatus::Started => started += 1,
            DedupStatus::InProgress => {}
            DedupStatus::Completed(v) => panic!("nothing completed yet: {v}"),
        }
    }
    assert_eq!(started, 1, "exactly one caller may run the command");
    dedup.complete("k", &json!({"status": 201})).await.unwrap();
    assert_eq!(
        dedup.begin("k").await.unwrap(),
        DedupStatus::Completed(json!({"status": 201}))
    );
    // Abandoning a completed key changes nothing; an in-flight one is freed.
    dedup.abandon("k").await.unwrap();
    assert!(matches!(dedup.begin("k").await.unwrap(), DedupStatus::Completed(_)));
    assert_eq!(dedup.begin("other").await.unwrap(), DedupStatus::Started);
    dedup.abandon("other").await.unwrap();
    assert_eq!(dedup.begin("other").await.unwrap(), DedupStatus::Started);
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
    assert_eq!(
        dedup.begin("other").await.unwrap(),
        DedupStatus::Started,
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
    assert_eq!(dedup.begin("done").await.unwrap(), DedupStatus::Started);
    dedup.complete("done", &json!(1)).await.unwrap();
    assert_eq!(dedup.begin("stuck").await.unwrap(), DedupStatus::Started);
    assert_eq!(dedup.begin("stuck").await.unwrap(), DedupStatus::InProgress);
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(dedup.begin("done").await.unwrap(), DedupStatus::Started, "window over");
    assert_eq!(
        dedup.begin("stuck").await.unwrap(),
        DedupStatus::Started,
        "its owner died"
    );
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
        assert_eq!(dedup.begin(&key).await.unwrap(), DedupStatus::Started);
        dedup.complete(&key, &json!({"status": 200})).await.unwrap();
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
