//! Appends whose outcome the writer did not learn: the connection killed
//! while the statement waits, or the caller gone before the answer. The
//! retry with the same event ids is recognised, and each event is stored
//! exactly once.
mod common;

use std::sync::Arc;

use es_core::{AppendResult, EventStore, ExpectedVersion, NewEvent, RetryPolicy, StoreError, StreamId};
use es_postgres::{EventStoreConfig, PostgresEventStore};
use serde_json::json;

async fn store(prefix: &str, transient_retry: RetryPolicy) -> Arc<PostgresEventStore> {
    Arc::new(
        common::store_with(EventStoreConfig {
            batch_processor_count: 1,
            max_connections: 4,
            transient_retry,
            ..EventStoreConfig::with_schema(common::schema(prefix))
        })
        .await,
    )
}

async fn copies(observer: &sqlx::PgPool, store: &PostgresEventStore, event: &NewEvent) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {}.events WHERE event_id = $1",
        store.schema()
    ))
    .bind(event.event_id)
    .fetch_one(observer)
    .await
    .unwrap()
}

/// Starts an append of `event` to stream `u` whose statement waits behind
/// a table lock, then kills the backend running it.
async fn append_and_kill(
    store: &Arc<PostgresEventStore>,
    observer: &sqlx::PgPool,
    event: &NewEvent,
) -> (
    sqlx::Transaction<'static, sqlx::Postgres>,
    tokio::task::JoinHandle<Result<AppendResult, StoreError>>,
    i32,
) {
    let blocker = common::lock_events(observer, store.schema()).await;
    let append = tokio::spawn({
        let (store, event) = (Arc::clone(store), event.clone());
        async move {
            store
                .append("t", &StreamId::from("u"), ExpectedVersion::NoStream, vec![event])
                .await
        }
    });
    let writer = common::wait_for_blocked(observer, store.schema(), 1).await[0];
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(writer)
        .fetch_one(observer)
        .await
        .unwrap();
    assert!(killed, "the writer's backend was terminated");
    (blocker, append, writer)
}

/// The store retries the killed statement itself, on a fresh connection,
/// with the same event ids: stored once. The caller's own retry of the
/// same append is then recognised as the same append.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_append_retried_by_the_store_is_stored_once() {
    let store = store("kill", RetryPolicy::default()).await;
    let observer = common::observer().await;
    let event = NewEvent::new("Happened", json!({ "n": 1 }));
    let (blocker, append, killed) = append_and_kill(&store, &observer, &event).await;
    // The retry waits behind the same lock, on another backend.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while common::wait_for_blocked(&observer, store.schema(), 1)
        .await
        .contains(&killed)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed backend never went away"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    blocker.rollback().await.unwrap();
    let first = append.await.unwrap().unwrap();
    assert_eq!(first.new_version, 1);
    let again = store
        .append(
            "t",
            &StreamId::from("u"),
            ExpectedVersion::NoStream,
            vec![event.clone()],
        )
        .await
        .unwrap();
    assert_eq!(again.positions, first.positions, "recognised as the same append");
    assert_eq!(copies(&observer, &store, &event).await, 1);
}

/// Without retries in the store, the caller learns only that the append
/// failed; retrying it with the same event ids stores it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_append_retried_by_the_caller_is_stored_once() {
    let store = store("killc", RetryPolicy::never()).await;
    let observer = common::observer().await;
    let event = NewEvent::new("Happened", json!({ "n": 1 }));
    let (blocker, append, _) = append_and_kill(&store, &observer, &event).await;
    let failed = append.await.unwrap();
    assert!(failed.is_err(), "the caller saw the failure: {failed:?}");
    blocker.rollback().await.unwrap();
    let mut results = Vec::new();
    for _ in 0..2 {
        results.push(
            store
                .append(
                    "t",
                    &StreamId::from("u"),
                    ExpectedVersion::NoStream,
                    vec![event.clone()],
                )
                .await
                .unwrap(),
        );
    }
    assert_eq!(results[0].new_version, 1);
    assert_eq!(results[1].positions, results[0].positions, "the repeat is recognised");
    assert_eq!(copies(&observer, &store, &event).await, 1);
}

/// The caller gives up while its statement waits; the statement commits
/// afterwards. Its retry finds the append stored and is answered as it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_committed_after_the_caller_gave_up_is_recognised() {
    let store = store("gone", RetryPolicy::default()).await;
    let observer = common::observer().await;
    let event = NewEvent::new("Happened", json!({ "n": 1 }));
    let blocker = common::lock_events(&observer, store.schema()).await;
    let id = StreamId::from("u");
    {
        let mut append = Box::pin(tokio::task::unconstrained(store.append(
            "t",
            &id,
            ExpectedVersion::NoStream,
            vec![event.clone()],
        )));
        assert!(futures::poll!(append.as_mut()).is_pending());
        common::wait_for_blocked(&observer, store.schema(), 1).await;
        // Dropped: the caller will never hear the outcome.
    }
    blocker.rollback().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while copies(&observer, &store, &event).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned append was never written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let retry = store
        .append("t", &id, ExpectedVersion::NoStream, vec![event.clone()])
        .await
        .unwrap();
    assert_eq!(retry.new_version, 1, "answered as the stored append");
    assert_eq!(copies(&observer, &store, &event).await, 1);
}
