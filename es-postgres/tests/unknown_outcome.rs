//! Appends whose outcome the writer did not learn: the connection killed
//! while the statement waits, the answer lost after the commit, or the
//! caller gone before the answer. The retry with the same event ids is
//! recognised, and each event is stored exactly once.
mod common;

use common::proxy::Proxy;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

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
/// with the same event ids; the caller's own retry of the same append is
/// then recognised as the same append.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_append_is_retried_by_the_store_and_its_repeat_recognised() {
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

/// The statement commits but its answer never reaches the store (the
/// connection breaks on the way back): the store's retry on a new
/// connection finds the events already stored and answers with them, as
/// the first attempt would have; nothing is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_whose_answer_is_lost_after_its_commit_is_answered_from_the_store() {
    let observer = common::observer().await;
    let direct = sqlx::postgres::PgConnectOptions::from_str(&common::database_url()).unwrap();
    let proxy = Proxy::start(direct.get_host().to_owned(), direct.get_port()).await;
    let schema = common::schema("lost");
    // One connection: the warm-up below prepares the append statement on
    // the connection the held append then uses (a statement still being
    // prepared would wait for its held answer before it ever ran).
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect_with(
            direct
                .clone()
                .host("127.0.0.1")
                .port(proxy.port)
                .application_name(&schema),
        )
        .await
        .unwrap();
    let config = EventStoreConfig {
        batch_processor_count: 1,
        max_connections: 1,
        transient_retry: RetryPolicy {
            max_attempts: 10,
            initial_delay: Duration::from_millis(20),
            ..RetryPolicy::default()
        },
        ..EventStoreConfig::with_schema(schema.clone())
    };
    let store = Arc::new(PostgresEventStore::with_pool(pool, config).unwrap());
    store.migrate().await.unwrap();
    store
        .append(
            "t",
            &StreamId::from("warm-up"),
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Happened", json!({ "n": 0 }))],
        )
        .await
        .unwrap();
    // The first append carries the listeners' notification, and so does
    // any append at least 2 ms after the last that did: waiting makes the
    // held append use the statement the warm-up prepared. (Within 2 ms it
    // would use the plain one, whose first parse waits behind the lock and
    // then for its held answer, so it would never run.)
    tokio::time::sleep(Duration::from_millis(20)).await;
    let event = NewEvent::new("Happened", json!({ "n": 1 }));

    // The statement is running (it waits behind a lock) when the proxy
    // starts holding the answers back.
    let blocker = common::lock_events(&observer, &schema).await;
    let append = tokio::spawn({
        let (store, event) = (Arc::clone(&store), event.clone());
        async move {
            store
                .append("t", &StreamId::from("u"), ExpectedVersion::NoStream, vec![event])
                .await
        }
    });
    common::wait_for_blocked(&observer, &schema, 1).await;
    proxy.hold(true);
    blocker.rollback().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while copies(&observer, &store, &event).await == 0 {
        assert!(std::time::Instant::now() < deadline, "the append never committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!append.is_finished(), "the answer was held back");
    // The answer is lost: the connection breaks before it gets through.
    proxy.cut();
    proxy.hold(false);

    let answered = tokio::time::timeout(Duration::from_secs(60), append)
        .await
        .expect("the append was answered")
        .unwrap()
        .expect("the retry recognised the committed append");
    let stored: i64 = sqlx::query_scalar(&format!(
        "SELECT global_position FROM {schema}.events WHERE event_id = $1"
    ))
    .bind(event.event_id)
    .fetch_one(&observer)
    .await
    .unwrap();
    assert_eq!((answered.first_version, answered.new_version), (1, 1));
    assert_eq!(answered.positions, vec![stored as u64], "answered with what is stored");
    assert_eq!(copies(&observer, &store, &event).await, 1);
}
