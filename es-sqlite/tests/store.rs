//! The store on a real file: opening creates what is missing, a reopened
//! file holds everything, waiting readers are woken by this process's
//! writer and see another store's appends by polling, snapshots and
//! checkpoints persist, a file from a newer version is refused.
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{ev, open};
use es_core::NewEvent;
use es_core::{
    CheckpointStore, DeadLetter, EventFilter, EventStore, ExpectedVersion, Snapshot, SnapshotStore, StreamId,
};
use es_sqlite::testing::TempDatabase;
use es_sqlite::{SetupError, SqliteCheckpointStore, SqliteConfig, SqliteEventStore, SqliteSnapshotStore};
use futures::TryStreamExt;

fn snapshot(stream: &str, version: u64) -> Snapshot {
    Snapshot {
        stream_id: StreamId::from(stream),
        stream_type: "account".into(),
        version,
        schema_version: 3,
        state: serde_json::json!({ "balance": version * 10 }),
        taken_at: chrono::DateTime::from_timestamp_micros(1_764_000_000_000_000 + version as i64).unwrap(),
    }
}

#[tokio::test]
async fn a_reopened_file_holds_everything_and_positions_continue() {
    let temp = TempDatabase::new("reopen");
    let store = open(&temp, SqliteConfig::default()).await;
    for i in 0..20u64 {
        store
            .append(
                "account",
                &StreamId::from(format!("acc-{}", i % 4)),
                ExpectedVersion::Any,
                vec![ev(i), ev(i + 100)],
            )
            .await
            .unwrap();
    }
    SqliteSnapshotStore::new(&store)
        .save(snapshot("acc-1", 10))
        .await
        .unwrap();
    let checkpoints = SqliteCheckpointStore::new(&store);
    checkpoints.save("balances", 17).await.unwrap();
    let log: Vec<_> = store
        .read_all_stream(0, &EventFilter::all())
        .try_collect()
        .await
        .unwrap();
    let head = store.head_position().await.unwrap();
    store.shutdown().await;
    store.pool().close().await;
    drop((store, checkpoints));

    let reopened = open(&temp, SqliteConfig::default()).await;
    let again: Vec<_> = reopened
        .read_all_stream(0, &EventFilter::all())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(again.len(), 40);
    assert_eq!(again, log, "every event with every field");
    assert_eq!(reopened.head_position().await.unwrap(), head);
    assert_eq!(reopened.stream_version(&StreamId::from("acc-3")).await.unwrap(), 10);
    assert_eq!(
        SqliteSnapshotStore::new(&reopened)
            .load(&StreamId::from("acc-1"))
            .await
            .unwrap(),
        Some(snapshot("acc-1", 10))
    );
    assert_eq!(
        SqliteCheckpointStore::new(&reopened).load("balances").await.unwrap(),
        17
    );
    let next = reopened
        .append(
            "account",
            &StreamId::from("acc-0"),
            ExpectedVersion::Exact(10),
            vec![ev(99)],
        )
        .await
        .unwrap();
    assert!(next.positions[0] > head, "positions continue after the old head");
    assert_eq!(next.new_version, 11);
}

#[tokio::test]
async fn a_plain_path_and_its_missing_directories_are_created() {
    let temp = TempDatabase::new("dirs");
    let path = temp.dir().join("nested").join("deeper").join("bank.db");
    let store = SqliteEventStore::connect(path.to_str().unwrap(), SqliteConfig::default())
        .await
        .unwrap();
    store
        .append("t", &StreamId::from("s"), ExpectedVersion::NoStream, vec![ev(1)])
        .await
        .unwrap();
    assert!(path.exists());
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    // `migrate` after `connect` (the es-postgres habit) changes nothing.
    store.migrate().await.unwrap();
    let migrations: i64 = sqlx::query_scalar("SELECT count(*) FROM schema_migrations")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(migrations, 1);
}

#[tokio::test]
async fn the_synchronous_setting_reaches_every_connection() {
    let temp = TempDatabase::new("sync");
    for (setting, level) in [
        (es_sqlite::Synchronous::Off, 0),
        (es_sqlite::Synchronous::Normal, 1),
        (es_sqlite::Synchronous::Full, 2),
    ] {
        let store = open(
            &temp,
            SqliteConfig {
                synchronous: setting,
                ..SqliteConfig::default()
            },
        )
        .await;
        let got: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(got, level, "{setting:?}");
        store.shutdown().await;
        store.pool().close().await;
    }
}

#[tokio::test]
async fn a_file_migrated_by_a_newer_version_is_refused() {
    let temp = TempDatabase::new("newer");
    let store = open(&temp, SqliteConfig::default()).await;
    sqlx::query("INSERT INTO schema_migrations (version, description, applied_at) VALUES (99, 'future', 0)")
        .execute(store.pool())
        .await
        .unwrap();
    store.shutdown().await;
    store.pool().close().await;
    match SqliteEventStore::connect(&temp.url(), SqliteConfig::default()).await {
        Err(SetupError::NewerSchema { found, known }) => assert_eq!((found, known), (99, 1)),
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

/// With a poll interval of an hour, only the writer's wake-up can end the
/// wait in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_reader_is_woken_by_the_writer() {
    let store = es_sqlite::testing::temp_store(SqliteConfig {
        poll_interval: Duration::from_secs(3600),
        ..SqliteConfig::default()
    })
    .await
    .unwrap();
    let head = store.head_position().await.unwrap();
    let follower = tokio::spawn({
        let store = store.clone();
        async move {
            store.wait_for_events(head, Duration::from_secs(3600)).await.unwrap();
            store.read_all(head, 10, &EventFilter::all()).await.unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    store
        .append("t", &StreamId::from("wake"), ExpectedVersion::NoStream, vec![ev(1)])
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .expect("the follower was woken")
        .unwrap();
    assert_eq!(got.len(), 1);
}

/// A store on the same file as another process would be: its writer
/// never commits, so only polling can show it the other's append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_reader_sees_another_writers_appends_by_polling() {
    let temp = TempDatabase::new("poll");
    let writer = open(&temp, SqliteConfig::default()).await;
    let reader = Arc::new(
        open(
            &temp,
            SqliteConfig {
                poll_interval: Duration::from_millis(20),
                ..SqliteConfig::default()
            },
        )
        .await,
    );
    let follower = tokio::spawn({
        let reader = Arc::clone(&reader);
        async move {
            reader.wait_for_events(0, Duration::from_secs(3600)).await.unwrap();
            reader.read_all(0, 10, &EventFilter::all()).await.unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    writer
        .append("t", &StreamId::from("other"), ExpectedVersion::NoStream, vec![ev(1)])
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .expect("the follower saw the append")
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        reader.writer_stats().transactions,
        0,
        "the reader's own writer wrote nothing"
    );
}

/// Polling (every 10 ms) finds nothing: the wait lasts its timeout, and
/// ends then.
#[tokio::test]
async fn wait_for_events_returns_at_its_timeout_when_nothing_comes() {
    const WAIT: Duration = Duration::from_millis(200);
    let store = es_sqlite::testing::memory_store(SqliteConfig {
        poll_interval: Duration::from_millis(10),
        ..SqliteConfig::default()
    })
    .await
    .unwrap();
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), store.wait_for_events(0, WAIT))
        .await
        .expect("the wait ends at its timeout")
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed + Duration::from_millis(5) >= WAIT,
        "returned after {elapsed:?}, before its timeout of {WAIT:?}"
    );
    assert!(store.read_all(0, 10, &EventFilter::all()).await.unwrap().is_empty());
}

#[tokio::test]
async fn snapshots_never_move_backwards() {
    let store = es_sqlite::testing::memory_store(SqliteConfig::default()).await.unwrap();
    let snapshots = SqliteSnapshotStore::new(&store);
    let id = StreamId::from("acc");
    assert_eq!(snapshots.load(&id).await.unwrap(), None);
    snapshots.save(snapshot("acc", 5)).await.unwrap();
    snapshots.save(snapshot("acc", 3)).await.unwrap();
    assert_eq!(snapshots.load(&id).await.unwrap(), Some(snapshot("acc", 5)));
    snapshots.save(snapshot("acc", 8)).await.unwrap();
    assert_eq!(snapshots.load(&id).await.unwrap(), Some(snapshot("acc", 8)));
}

#[tokio::test]
async fn checkpoints_and_dead_letters_round_trip() {
    let store = es_sqlite::testing::memory_store(SqliteConfig::default()).await.unwrap();
    let checkpoints = SqliteCheckpointStore::new(&store);
    assert_eq!(checkpoints.load("p").await.unwrap(), 0);
    checkpoints.save("p", 42).await.unwrap();
    checkpoints.save("q", 7).await.unwrap();
    assert_eq!(checkpoints.load("p").await.unwrap(), 42);
    let letter = |position: u64, attempts: u32| DeadLetter {
        projection: "p".into(),
        global_position: position,
        stream_id: StreamId::from("s"),
        version: position,
        event_id: uuid::Uuid::now_v7(),
        event_type: "Happened".into(),
        error: format!("failed {attempts} times"),
        attempts,
        failed_at: chrono::DateTime::from_timestamp_micros(1_764_000_000_000_000).unwrap(),
    };
    checkpoints.dead_letter(letter(9, 1)).await.unwrap();
    checkpoints.dead_letter(letter(4, 2)).await.unwrap();
    let again = letter(9, 3);
    checkpoints.dead_letter(again.clone()).await.unwrap();
    let letters = checkpoints.dead_letters("p").await.unwrap();
    assert_eq!(letters.iter().map(|l| l.global_position).collect::<Vec<_>>(), [4, 9]);
    assert_eq!(letters[1].attempts, 3);
    assert_eq!(letters[1].error, again.error);
    assert!(checkpoints.dead_letters("q").await.unwrap().is_empty());
    assert!(checkpoints.remove_dead_letter("p", 4).await.unwrap());
    assert!(!checkpoints.remove_dead_letter("p", 4).await.unwrap());
    assert_eq!(checkpoints.dead_letters("p").await.unwrap().len(), 1);
}

/// A payload or metadata that no longer parses is reported as corrupt,
/// naming the stream and version.
#[tokio::test]
async fn a_corrupt_row_is_reported_with_its_place() {
    let store = es_sqlite::testing::memory_store(SqliteConfig::default()).await.unwrap();
    let id = StreamId::from("broken");
    store
        .append("t", &id, ExpectedVersion::NoStream, vec![ev(1), ev(2)])
        .await
        .unwrap();
    sqlx::query("UPDATE events SET payload = '{not json' WHERE version = 2")
        .execute(store.pool())
        .await
        .unwrap();
    match store.read_stream_batch(&id, 1, 10).await {
        Err(es_core::StoreError::Corrupt {
            stream_id,
            version,
            reason,
        }) => {
            assert_eq!((stream_id, version), (id.clone(), 2));
            assert!(reason.starts_with("payload"), "{reason}");
        }
        other => panic!("expected a corrupt record, got {other:?}"),
    }
    // Broken metadata too; a payload that is JSON `null` is no corruption.
    let other = StreamId::from("other");
    let null = NewEvent::new("Nothing", serde_json::Value::Null);
    store
        .append("t", &other, ExpectedVersion::NoStream, vec![null.clone(), ev(3)])
        .await
        .unwrap();
    assert_eq!(
        store.find_event(null.event_id).await.unwrap().unwrap().payload,
        serde_json::Value::Null
    );
    sqlx::query("UPDATE events SET metadata = 'nope' WHERE stream_id = 'other' AND version = 2")
        .execute(store.pool())
        .await
        .unwrap();
    match store.read_all(0, 10, &EventFilter::all()).await {
        Err(es_core::StoreError::Corrupt { stream_id, reason, .. }) => {
            assert_eq!(stream_id, id, "the log's first corrupt event is the broken payload");
            assert!(reason.starts_with("payload"), "{reason}");
        }
        other => panic!("expected a corrupt record, got {other:?}"),
    }
    match store.read_stream_batch(&other, 1, 10).await {
        Err(es_core::StoreError::Corrupt { version, reason, .. }) => {
            assert_eq!(version, 2);
            assert!(reason.starts_with("metadata"), "{reason}");
        }
        other => panic!("expected a corrupt record, got {other:?}"),
    }
}

/// An append longer than one INSERT statement (1,000 events) is still all
/// or nothing, and its positions follow its versions.
#[tokio::test]
async fn long_appends_keep_positions_in_version_order_and_fail_whole() {
    let store = es_sqlite::testing::temp_store(SqliteConfig::default()).await.unwrap();
    let id = StreamId::from("long");
    let events: Vec<_> = (0..2500).map(ev).collect();
    let r = store
        .append("t", &id, ExpectedVersion::NoStream, events.clone())
        .await
        .unwrap();
    assert_eq!((r.first_version, r.new_version), (1, 2500));
    let read = store.read_stream_batch(&id, 1, 5000).await.unwrap();
    assert_eq!(read.len(), 2500);
    for (i, (e, p)) in read.iter().zip(&r.positions).enumerate() {
        assert_eq!(
            (e.version, e.global_position, e.event_id),
            (i as u64 + 1, *p, events[i].event_id)
        );
    }
    assert!(r.positions.windows(2).all(|w| w[0] < w[1]));
    // Its last event's id is stored already: none of the 2,101 goes in.
    let mut reused: Vec<_> = (0..2100).map(ev).collect();
    reused.push(events[0].clone());
    let other = StreamId::from("other");
    let dup = store.append("t", &other, ExpectedVersion::NoStream, reused).await;
    assert!(
        matches!(dup, Err(es_core::StoreError::DuplicateEventId { .. })),
        "{dup:?}"
    );
    assert_eq!(store.stream_version(&other).await.unwrap(), 0);
    // Replayed whole, it answers the original result.
    let again = store.append("t", &id, ExpectedVersion::NoStream, events).await.unwrap();
    assert_eq!(again, r);
    let any = store
        .append("t", &id, ExpectedVersion::Any, (0..1200).map(ev).collect())
        .await
        .unwrap();
    assert_eq!((any.first_version, any.new_version), (2501, 3700));
    assert_eq!(store.head_position().await.unwrap(), *any.positions.last().unwrap());
}
