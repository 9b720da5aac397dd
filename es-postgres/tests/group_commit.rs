//! Group commit: appends queued while the writer is busy go out together,
//! in one statement, and shutdown writes whatever is queued.
mod common;

use std::sync::Arc;

use es_core::{EventStore, ExpectedVersion, NewEvent, StoreError, StreamId};
use es_postgres::{EventStoreConfig, PostgresEventStore};
use serde_json::json;

fn ev(n: u64) -> NewEvent {
    NewEvent::new("Happened", json!({ "n": n }))
}

/// One batch processor that takes whatever is queued, at once.
async fn single_writer(prefix: &str) -> Arc<PostgresEventStore> {
    Arc::new(
        common::store_with(EventStoreConfig {
            batch_processor_count: 1,
            batch_size: 100,
            batch_timeout_ms: 0,
            max_batch_queue_size: 100,
            max_connections: 4,
            ..EventStoreConfig::with_schema(common::schema(prefix))
        })
        .await,
    )
}

/// The transaction id that wrote each stream's events, per stream.
async fn writers(observer: &sqlx::PgPool, schema: &str) -> Vec<(String, String)> {
    sqlx::query_as(&format!(
        "SELECT stream_id, xmin::text FROM {schema}.events ORDER BY global_position"
    ))
    .fetch_all(observer)
    .await
    .unwrap()
}

/// The writer's first statement waits behind a table lock while five more
/// appends queue; once the lock goes, the five are written in one
/// transaction (one statement): their rows share one `xmin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_queued_behind_a_busy_writer_are_written_in_one_statement() {
    let store = single_writer("gc").await;
    let observer = common::observer().await;
    let blocker = common::lock_events(&observer, store.schema()).await;
    let first = tokio::spawn({
        let store = Arc::clone(&store);
        async move {
            store
                .append("t", &StreamId::from("first"), ExpectedVersion::NoStream, vec![ev(0)])
                .await
        }
    });
    common::wait_for_blocked(&observer, store.schema(), 1).await;

    let ids: Vec<StreamId> = (1..=5).map(|i| StreamId::from(format!("queued{i}"))).collect();
    // The first poll puts each append on the queue; its answer waits.
    let queued = common::queue_appends(&store, &ids, |i| vec![ev(i as u64 + 1)]).await;
    blocker.rollback().await.unwrap();
    first.await.unwrap().unwrap();
    for r in futures::future::join_all(queued).await {
        assert_eq!(r.unwrap().new_version, 1);
    }

    let rows = writers(&observer, store.schema()).await;
    assert_eq!(rows.len(), 6);
    let first_xid = &rows.iter().find(|(s, _)| s == "first").unwrap().1;
    let batch: std::collections::HashSet<&String> = rows.iter().filter(|(s, _)| s != "first").map(|(_, x)| x).collect();
    assert_eq!(batch.len(), 1, "the queued appends were written together: {rows:?}");
    assert!(!batch.contains(first_xid), "apart from the statement that was running");
}

/// Shutdown while appends are queued behind a busy writer: new appends
/// are refused at once, the queued ones are all written, then shutdown
/// returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_writes_the_queued_appends() {
    let store = single_writer("sd").await;
    let observer = common::observer().await;
    let blocker = common::lock_events(&observer, store.schema()).await;
    let first = tokio::spawn({
        let store = Arc::clone(&store);
        async move {
            store
                .append("t", &StreamId::from("first"), ExpectedVersion::NoStream, vec![ev(0)])
                .await
        }
    });
    common::wait_for_blocked(&observer, store.schema(), 1).await;
    let ids: Vec<StreamId> = (1..=4).map(|i| StreamId::from(format!("queued{i}"))).collect();
    let mut queued = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let mut append = Box::pin(tokio::task::unconstrained(store.append(
            "t",
            id,
            ExpectedVersion::NoStream,
            vec![ev(i as u64 + 1)],
        )));
        assert!(futures::poll!(append.as_mut()).is_pending());
        queued.push(append);
    }

    let mut shutdown = Box::pin(store.shutdown());
    // The first poll closes the queue; shutdown then waits for the writer.
    assert!(futures::poll!(shutdown.as_mut()).is_pending());
    let late = store
        .append("t", &StreamId::from("late"), ExpectedVersion::NoStream, vec![ev(9)])
        .await;
    assert!(matches!(late, Err(StoreError::Unavailable { .. })), "{late:?}");

    blocker.rollback().await.unwrap();
    let ((), results, first) = tokio::join!(shutdown, futures::future::join_all(queued), first);
    first.unwrap().unwrap();
    for r in results {
        assert_eq!(r.unwrap().new_version, 1, "a queued append was written");
    }
    let rows = writers(&observer, store.schema()).await;
    let mut streams: Vec<&str> = rows.iter().map(|(s, _)| s.as_str()).collect();
    streams.sort_unstable();
    assert_eq!(streams, ["first", "queued1", "queued2", "queued3", "queued4"]);
}
