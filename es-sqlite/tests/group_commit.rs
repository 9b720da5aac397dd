//! Group commit: appends queued while the writer is busy go out together,
//! in one transaction, each answered on its own (conflicts, replays and
//! duplicates do not fail the others); concurrent appenders share
//! transactions and none is lost; shutdown writes whatever is queued.
mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{ev, hold_write_lock, open, release};
use es_core::{AppendResult, EventStore, ExpectedVersion, NewEvent, StoreError, StreamId};
use es_sqlite::testing::TempDatabase;
use es_sqlite::{SqliteConfig, SqliteEventStore};
use futures::TryStreamExt;

type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = Result<AppendResult, StoreError>> + Send>>;

/// Puts an append on the writer's queue and returns its answer, still to
/// come (the first poll enqueues it).
async fn queue(
    store: &Arc<SqliteEventStore>,
    stream: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Pending {
    let (store, id) = (Arc::clone(store), StreamId::from(stream));
    let mut append: Pending = Box::pin(tokio::task::unconstrained(async move {
        store.append("t", &id, expected, events).await
    }));
    assert!(futures::poll!(append.as_mut()).is_pending());
    append
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_queued_behind_a_busy_writer_commit_together_and_are_answered_one_by_one() {
    let temp = TempDatabase::new("gc");
    let store = Arc::new(open(&temp, SqliteConfig::default()).await);
    // Already stored: a two-event append to be replayed, and an event whose
    // id a new append reuses.
    let stored = vec![ev(1), ev(2)];
    let original = store
        .append(
            "t",
            &StreamId::from("replayed"),
            ExpectedVersion::NoStream,
            stored.clone(),
        )
        .await
        .unwrap();
    let taken = ev(3);
    store
        .append(
            "t",
            &StreamId::from("owner"),
            ExpectedVersion::NoStream,
            vec![taken.clone()],
        )
        .await
        .unwrap();
    let before = store.writer_stats();

    let lock = hold_write_lock(&temp).await;
    let first = tokio::spawn({
        let store = Arc::clone(&store);
        async move {
            store
                .append("t", &StreamId::from("first"), ExpectedVersion::NoStream, vec![ev(0)])
                .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let ok_a = queue(&store, "a", ExpectedVersion::NoStream, vec![ev(10)]).await;
    let conflict_a = queue(&store, "a", ExpectedVersion::NoStream, vec![ev(11)]).await;
    let next_a = queue(&store, "a", ExpectedVersion::Exact(1), vec![ev(12), ev(13)]).await;
    let replay = queue(&store, "replayed", ExpectedVersion::NoStream, stored.clone()).await;
    // Its second event's id is stored elsewhere: none of its events may stay.
    let duplicate = queue(&store, "c", ExpectedVersion::NoStream, vec![ev(14), taken.clone()]).await;
    let exists_b = queue(&store, "b", ExpectedVersion::StreamExists, vec![ev(15)]).await;
    let any_b = queue(&store, "b", ExpectedVersion::Any, vec![ev(16)]).await;
    release(lock).await;

    first.await.unwrap().unwrap();
    let ok_a = ok_a.await.unwrap();
    assert_eq!((ok_a.first_version, ok_a.new_version), (1, 1));
    match conflict_a.await {
        Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, 1, "sees the append before it in the batch"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let next_a = next_a.await.unwrap();
    assert_eq!((next_a.first_version, next_a.new_version), (2, 3));
    assert_eq!(replay.await.unwrap(), original, "a replay answers the original result");
    match duplicate.await {
        Err(StoreError::DuplicateEventId { event_id, .. }) => assert_eq!(event_id, taken.event_id),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    assert!(matches!(exists_b.await, Err(StoreError::Conflict { actual: 0, .. })));
    assert_eq!(any_b.await.unwrap().new_version, 1);

    let after = store.writer_stats();
    assert_eq!(after.appends - before.appends, 8);
    assert!(
        after.transactions - before.transactions <= 2,
        "the queued appends were committed together: {before:?} -> {after:?}"
    );
    assert_eq!(after.events - before.events, 1 + 1 + 2 + 1, "first, a, a (2), b");
    assert_eq!(store.stream_version(&StreamId::from("c")).await.unwrap(), 0);
    assert_eq!(store.stream_version(&StreamId::from("a")).await.unwrap(), 3);
    assert_eq!(store.stream_version(&StreamId::from("replayed")).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_share_transactions_and_none_is_lost() {
    let temp = TempDatabase::new("many");
    let store = open(&temp, SqliteConfig::default()).await;
    const TASKS: u64 = 32;
    const APPENDS: u64 = 40;
    let before = store.writer_stats();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = StreamId::from(format!("s{t}"));
                let mut positions = Vec::new();
                for v in 0..APPENDS {
                    let r = store
                        .append("t", &id, ExpectedVersion::Exact(v), vec![ev(v)])
                        .await
                        .unwrap();
                    assert_eq!(r.new_version, v + 1);
                    positions.extend(r.positions);
                }
                positions
            })
        })
        .collect();
    let mut positions = HashSet::new();
    for t in tasks {
        for p in t.await.unwrap() {
            assert!(positions.insert(p), "position {p} given twice");
        }
    }
    let after = store.writer_stats();
    assert_eq!(after.appends - before.appends, TASKS * APPENDS);
    assert_eq!(after.events - before.events, TASKS * APPENDS);
    assert!(
        after.transactions - before.transactions < TASKS * APPENDS,
        "appends shared transactions: {after:?}"
    );
    let log: Vec<_> = store
        .read_all_stream(0, &es_core::EventFilter::all())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(log.len() as u64, TASKS * APPENDS);
    assert_eq!(log.iter().map(|e| e.global_position).collect::<HashSet<_>>(), positions);
    for t in 0..TASKS {
        let versions: Vec<u64> = log
            .iter()
            .filter(|e| e.stream_id.as_str() == format!("s{t}"))
            .map(|e| e.version)
            .collect();
        assert_eq!(versions, (1..=APPENDS).collect::<Vec<_>>(), "stream s{t} in log order");
    }
}

/// Shutdown while appends are queued behind a busy writer: new appends
/// are refused at once, the queued ones are all written, then shutdown
/// returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_writes_the_queued_appends() {
    let temp = TempDatabase::new("sd");
    let store = Arc::new(open(&temp, SqliteConfig::default()).await);
    let lock = hold_write_lock(&temp).await;
    let mut queued = Vec::new();
    for i in 1..=4 {
        queued.push(queue(&store, &format!("queued{i}"), ExpectedVersion::NoStream, vec![ev(i)]).await);
    }
    let mut shutdown = Box::pin(store.shutdown());
    // The first poll closes the queue; shutdown then waits for the writer.
    assert!(futures::poll!(shutdown.as_mut()).is_pending());
    let late = store
        .append("t", &StreamId::from("late"), ExpectedVersion::NoStream, vec![ev(9)])
        .await;
    assert!(matches!(late, Err(StoreError::Unavailable { .. })), "{late:?}");
    release(lock).await;
    let ((), results) = tokio::join!(shutdown, futures::future::join_all(queued));
    for r in results {
        assert_eq!(r.unwrap().new_version, 1, "a queued append was written");
    }
    let streams: Vec<String> = sqlx::query_scalar("SELECT stream_id FROM events ORDER BY stream_id")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(streams, ["queued1", "queued2", "queued3", "queued4"]);
}

/// An append the database refuses for a reason of its own (here a
/// trigger; in life a full disk) fails the batch's transaction: the batch
/// is written again append by append, so only that append fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_the_database_refuses_fails_alone() {
    let temp = TempDatabase::new("refused");
    let store = Arc::new(open(&temp, SqliteConfig::default()).await);
    sqlx::query(
        "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.event_type = 'Refused' \
         BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let lock = hold_write_lock(&temp).await;
    let before = queue(&store, "before", ExpectedVersion::NoStream, vec![ev(1)]).await;
    let refused = queue(
        &store,
        "refused",
        ExpectedVersion::NoStream,
        vec![ev(2), NewEvent::new("Refused", serde_json::json!({}))],
    )
    .await;
    let after = queue(&store, "after", ExpectedVersion::NoStream, vec![ev(3), ev(4)]).await;
    release(lock).await;
    assert_eq!(before.await.unwrap().new_version, 1);
    match refused.await {
        Err(StoreError::Backend { source, .. }) => {
            assert!(source.to_string().contains("refused by a trigger"), "{source}");
        }
        other => panic!("expected the database's refusal, got {other:?}"),
    }
    assert_eq!(after.await.unwrap().new_version, 2);
    for (stream, version) in [("before", 1), ("refused", 0), ("after", 2)] {
        assert_eq!(
            store.stream_version(&StreamId::from(stream)).await.unwrap(),
            version,
            "{stream}"
        );
    }
}

/// Appends to distinct streams with exact expectations share one INSERT:
/// the ones whose stream is elsewhere are refused on their own, the others
/// get positions that follow their versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_written_by_one_statement_are_answered_one_by_one() {
    let temp = TempDatabase::new("group");
    let store = Arc::new(open(&temp, SqliteConfig::default()).await);
    store
        .append("t", &StreamId::from("at-one"), ExpectedVersion::NoStream, vec![ev(0)])
        .await
        .unwrap();
    let lock = hold_write_lock(&temp).await;
    let first = tokio::spawn({
        let store = Arc::clone(&store);
        async move {
            store
                .append("t", &StreamId::from("first"), ExpectedVersion::NoStream, vec![ev(1)])
                .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let before = store.writer_stats();
    let x = queue(&store, "x", ExpectedVersion::NoStream, vec![ev(2)]).await;
    let stale = queue(&store, "at-one", ExpectedVersion::Exact(5), vec![ev(3)]).await;
    let z = queue(&store, "z", ExpectedVersion::NoStream, vec![ev(4), ev(5), ev(6)]).await;
    let next = queue(&store, "at-one", ExpectedVersion::Exact(1), vec![ev(7)]).await;
    release(lock).await;
    first.await.unwrap().unwrap();
    let x = x.await.unwrap();
    match stale.await {
        Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, 1),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let z = z.await.unwrap();
    let next = next.await.unwrap();
    assert_eq!((x.new_version, z.new_version, next.new_version), (1, 3, 2));
    let after = store.writer_stats();
    assert!(after.transactions - before.transactions <= 2, "{before:?} -> {after:?}");
    for (stream, result) in [("x", &x), ("z", &z), ("at-one", &next)] {
        let read = store.read_stream_batch(&StreamId::from(stream), 1, 10).await.unwrap();
        let stored: Vec<u64> = read
            .iter()
            .filter(|e| e.version >= result.first_version)
            .map(|e| e.global_position)
            .collect();
        assert_eq!(
            stored, result.positions,
            "{stream}: answered positions are the stored ones"
        );
        assert!(
            stored.windows(2).all(|w| w[0] < w[1]),
            "{stream}: positions follow versions"
        );
    }
}

const QUEUE_LENGTH: &str = "es_sqlite_append_queue_length";

/// The queue-length gauge follows the writer: once the appends of a burst
/// are taken, it reads 0, not the burst's depth. (A current-thread
/// runtime: the writer runs on the test's thread, so it records into the
/// test's recorder, and it cannot take an append before the test yields.)
#[tokio::test]
async fn the_queue_length_gauge_reads_zero_once_the_queue_drains() {
    let gauges = es_core::testing::GaugeRecorder::default();
    let _recorder = metrics::set_default_local_recorder(&gauges);
    let temp = TempDatabase::new("gauge");
    let store = Arc::new(open(&temp, SqliteConfig::default()).await);
    let mut queued = Vec::new();
    for i in 0..4 {
        queued.push(queue(&store, &format!("g{i}"), ExpectedVersion::NoStream, vec![ev(i)]).await);
    }
    assert_eq!(
        gauges.get(QUEUE_LENGTH, &[]),
        Some(3.0),
        "the fourth append found three queued"
    );
    for r in futures::future::join_all(queued).await {
        assert_eq!(r.unwrap().new_version, 1);
    }
    assert_eq!(
        gauges.get(QUEUE_LENGTH, &[]),
        Some(0.0),
        "every queued append was taken: the gauge does not keep the burst's depth"
    );
}
