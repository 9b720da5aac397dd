//! PostgreSQL-specific guarantees beyond the conformance suite.
mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use es_core::conformance::settled_read_all;
use es_core::{EventFilter, EventStore, ExpectedVersion, NewEvent, StoreError, StreamId};
use es_postgres::{EventStoreConfig, PostgresEventStore};
use futures::TryStreamExt;
use serde_json::json;

fn ev(n: u64) -> NewEvent {
    NewEvent::new("Happened", json!({ "n": n }))
}

/// A transaction holding an earlier position stays open while a later one
/// commits: the reader waits at the gap, then delivers both, in order,
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn global_log_reader_waits_at_the_gap_then_delivers_both_in_order() {
    let store = common::store().await;
    store
        .append("t", &StreamId::from("before"), ExpectedVersion::NoStream, vec![ev(0)])
        .await
        .unwrap();
    let mut delivered: Vec<u64> = settled_read_all(&store, 0, 100, &EventFilter::all(), 1)
        .await
        .iter()
        .map(|e| e.global_position)
        .collect();
    let checkpoint = *delivered.last().unwrap();

    // Writer A: opens a transaction and appends (takes the earlier position).
    let mut slow = store.pool().begin().await.unwrap();
    let a = store
        .append_in_transaction(
            &mut slow,
            "t",
            &StreamId::from("slow"),
            ExpectedVersion::NoStream,
            vec![ev(1)],
        )
        .await
        .unwrap();
    // Writer B: appends later and commits first.
    let b = store
        .append("t", &StreamId::from("fast"), ExpectedVersion::NoStream, vec![ev(2)])
        .await
        .unwrap();
    assert!(a.positions[0] < b.positions[0], "A holds the earlier position");

    // B is committed, but the reader must not pass A's open position.
    let seen = store.read_all(checkpoint, 100, &EventFilter::all()).await.unwrap();
    assert!(seen.is_empty(), "reader waits at the gap, got {seen:?}");
    assert_eq!(store.head_position().await.unwrap(), checkpoint);
    let direct: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}.events", store.schema()))
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(direct, 2, "B really is committed");
    assert_eq!(
        store.committed_position().await.unwrap(),
        b.positions[0],
        "the committed position counts B, hidden behind the gap"
    );

    slow.commit().await.unwrap();
    let seen = settled_read_all(&store, checkpoint, 100, &EventFilter::all(), 2).await;
    let positions: Vec<u64> = seen.iter().map(|e| e.global_position).collect();
    assert_eq!(positions, vec![a.positions[0], b.positions[0]], "both, in order");
    assert_eq!(
        store.head_position().await.unwrap(),
        store.committed_position().await.unwrap()
    );
    delivered.extend(&positions);
    let again = store
        .read_all(*delivered.last().unwrap(), 100, &EventFilter::all())
        .await
        .unwrap();
    assert!(again.is_empty(), "nothing delivered twice");
}

/// A rolled-back transactional append leaves no trace and no gap that
/// blocks readers.
#[tokio::test]
async fn rolled_back_append_is_never_seen() {
    let store = common::store().await;
    let mut tx = store.pool().begin().await.unwrap();
    store
        .append_in_transaction(
            &mut tx,
            "t",
            &StreamId::from("x"),
            ExpectedVersion::NoStream,
            vec![ev(1)],
        )
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let b = store
        .append("t", &StreamId::from("y"), ExpectedVersion::NoStream, vec![ev(2)])
        .await
        .unwrap();
    let all = settled_read_all(&store, 0, 100, &EventFilter::all(), 1).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].global_position, b.positions[0]);
    assert_eq!(store.stream_version(&StreamId::from("x")).await.unwrap(), 0);
}

/// 32 tasks append to one stream at once, each retrying on conflict: the
/// stream is a gapless 1..N and every loser was told it lost with the
/// real version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_racing_writers_produce_a_gapless_stream() {
    let store = Arc::new(common::store().await);
    let id = StreamId::from("contended");
    let mut tasks = Vec::new();
    for t in 0..32u64 {
        let store = Arc::clone(&store);
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut losses = 0;
            let mut expected = 0;
            let event = ev(t);
            loop {
                match store
                    .append("t", &id, ExpectedVersion::Exact(expected), vec![event.clone()])
                    .await
                {
                    Ok(r) => return (r.new_version, losses),
                    Err(StoreError::Conflict { actual, .. }) => {
                        assert!(actual > expected, "loser told a newer real version");
                        losses += 1;
                        expected = actual;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    let mut versions = HashSet::new();
    let mut total_losses = 0;
    for t in tasks {
        let (v, losses) = t.await.unwrap();
        assert!(versions.insert(v), "version {v} won twice");
        total_losses += losses;
    }
    assert_eq!(versions, (1..=32).collect::<HashSet<u64>>());
    let stored: Vec<u64> = store
        .read_stream(&id, 1)
        .map_ok(|e| e.version)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(stored, (1..=32).collect::<Vec<_>>());
    assert!(total_losses > 0, "the writers really raced");
}

/// Holds the store's single writer inside its first statement (behind a
/// table lock) so that the appends queued meanwhile form one batch.
async fn busy_writer(
    store: &Arc<PostgresEventStore>,
    observer: &sqlx::PgPool,
) -> (
    sqlx::Transaction<'static, sqlx::Postgres>,
    tokio::task::JoinHandle<Result<es_core::AppendResult, StoreError>>,
) {
    let blocker = common::lock_events(observer, store.schema()).await;
    let first = tokio::spawn({
        let store = Arc::clone(store);
        async move {
            store
                .append("t", &StreamId::from("first"), ExpectedVersion::NoStream, vec![ev(0)])
                .await
        }
    });
    common::wait_for_blocked(observer, store.schema(), 1).await;
    (blocker, first)
}

/// One writer taking everything queued into one batch.
async fn batching_store(prefix: &str) -> Arc<PostgresEventStore> {
    Arc::new(
        common::store_with(EventStoreConfig {
            batch_size: 100,
            batch_timeout_ms: 0,
            batch_processor_count: 1,
            max_connections: 4,
            ..EventStoreConfig::with_schema(common::schema(prefix))
        })
        .await,
    )
}

/// In one group commit (the appends queue behind a busy writer, so they
/// are one batch), a conflicting append fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_conflict_in_a_batch_does_not_fail_the_others() {
    let store = batching_store("b").await;
    let observer = common::observer().await;
    store
        .append("t", &StreamId::from("taken"), ExpectedVersion::NoStream, vec![ev(0)])
        .await
        .unwrap();
    let (blocker, first) = busy_writer(&store, &observer).await;
    let ids: Vec<StreamId> = (0..20u64)
        .map(|i| StreamId::from(if i == 7 { "taken".to_owned() } else { format!("s{i}") }))
        .collect();
    let queued = common::queue_appends(&store, &ids, |i| vec![ev(i as u64), ev(i as u64 + 100)]).await;
    blocker.rollback().await.unwrap();
    first.await.unwrap().unwrap();
    for (i, r) in futures::future::join_all(queued).await.into_iter().enumerate() {
        if i == 7 {
            assert!(matches!(r, Err(StoreError::Conflict { actual: 1, .. })), "{r:?}");
        } else {
            assert_eq!(r.unwrap().new_version, 2);
        }
    }
    // A reused event id (unique violation) also fails alone.
    let dup = ev(1);
    store
        .append("t", &StreamId::from("d1"), ExpectedVersion::NoStream, vec![dup.clone()])
        .await
        .unwrap();
    let (blocker, _) = {
        let blocker = common::lock_events(&observer, store.schema()).await;
        let held = tokio::spawn({
            let store = Arc::clone(&store);
            async move {
                store
                    .append("t", &StreamId::from("second"), ExpectedVersion::NoStream, vec![ev(0)])
                    .await
            }
        });
        common::wait_for_blocked(&observer, store.schema(), 1).await;
        (blocker, held)
    };
    let ids: Vec<StreamId> = (0..10u64).map(|i| StreamId::from(format!("u{i}"))).collect();
    let queued = common::queue_appends(&store, &ids, |i| {
        if i == 3 {
            vec![ev(i as u64), dup.clone()]
        } else {
            vec![ev(i as u64)]
        }
    })
    .await;
    blocker.rollback().await.unwrap();
    for (i, r) in futures::future::join_all(queued).await.into_iter().enumerate() {
        if i == 3 {
            assert!(matches!(r, Err(StoreError::DuplicateEventId { .. })), "{r:?}");
        } else {
            r.unwrap();
        }
    }
    assert_eq!(store.stream_version(&StreamId::from("u3")).await.unwrap(), 0);
}

/// A full queue makes callers wait rather than grow memory; the wait is
/// bounded (`enqueue_timeout`), and what was queued is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_queue_applies_bounded_backpressure() {
    let store = Arc::new(
        common::store_with(EventStoreConfig {
            max_batch_queue_size: 2,
            batch_size: 1,
            batch_processor_count: 1,
            enqueue_timeout: Duration::from_millis(200),
            max_connections: 3,
            ..EventStoreConfig::with_schema(common::schema("q"))
        })
        .await,
    );
    let observer = common::observer().await;
    let (blocker, first) = busy_writer(&store, &observer).await;
    // Two appends fill the queue.
    let ids: Vec<StreamId> = (0..2u64).map(|i| StreamId::from(format!("bp{i}"))).collect();
    let queued = common::queue_appends(&store, &ids, |i| vec![ev(i as u64)]).await;
    // The next one waits for room, then gives up: nothing of it is stored.
    let refused = store
        .append("t", &StreamId::from("refused"), ExpectedVersion::NoStream, vec![ev(9)])
        .await;
    assert!(matches!(refused, Err(StoreError::Unavailable { .. })), "{refused:?}");
    blocker.rollback().await.unwrap();
    first.await.unwrap().unwrap();
    for r in futures::future::join_all(queued).await {
        assert_eq!(r.unwrap().new_version, 1, "a queued append is written");
    }
    let stored = settled_read_all(&*store, 0, 100, &EventFilter::all(), 3).await;
    let streams: Vec<&str> = stored.iter().map(|e| e.stream_id.as_str()).collect();
    assert_eq!(
        streams,
        ["first", "bp0", "bp1"],
        "every success is stored, the refusal is not"
    );
}

const QUEUE_LENGTH: &str = "es_postgres_append_queue_length";

/// The queue-length gauge follows the batch processors: once a burst that
/// queued behind a busy writer is written, it reads 0, not the burst's
/// depth. (A current-thread runtime: the store's tasks run on the test's
/// thread, so they record into its recorder.)
#[tokio::test]
async fn the_queue_length_gauge_reads_zero_once_the_queue_drains() {
    let gauges = es_core::testing::GaugeRecorder::default();
    let _recorder = metrics::set_default_local_recorder(&gauges);
    let store = Arc::new(
        common::store_with(EventStoreConfig {
            batch_size: 1,
            batch_processor_count: 1,
            max_connections: 4,
            ..EventStoreConfig::with_schema(common::schema("g"))
        })
        .await,
    );
    let observer = common::observer().await;
    let (blocker, first) = busy_writer(&store, &observer).await;
    // Three appends queue behind the busy writer.
    let ids: Vec<StreamId> = (0..3u64).map(|i| StreamId::from(format!("g{i}"))).collect();
    let queued = common::queue_appends(&store, &ids, |i| vec![ev(i as u64)]).await;
    assert_eq!(
        gauges.get(QUEUE_LENGTH, &[]),
        Some(2.0),
        "the third append found two queued"
    );
    blocker.rollback().await.unwrap();
    first.await.unwrap().unwrap();
    for r in futures::future::join_all(queued).await {
        r.unwrap();
    }
    assert_eq!(
        gauges.get(QUEUE_LENGTH, &[]),
        Some(0.0),
        "every queued append was taken: the gauge does not keep the burst's depth"
    );
}

/// Longer than any test runs: a waiter only returns early when woken.
const FOREVER: Duration = Duration::from_secs(3600);

/// Live readers are woken by NOTIFY without waiting for the poll interval.
///
/// The listener wakes readers once when its LISTEN is established, and a
/// wake-up with nothing new to read is allowed, so the test first makes
/// sure the store listens (its waiter is woken by a NOTIFY of the test's
/// own, no append involved); then a reader waits, an hour per wait,
/// looking again after every wake-up, until it reads the appended event.
/// Only the append's notification can end that within the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listen_notify_wakes_waiting_readers() {
    let store = Arc::new(common::store().await);
    let head = store.head_position().await.unwrap();

    // Warm up: nothing is appended, so only a wake-up from the listener
    // (its first, or one for a NOTIFY sent here) ends this wait, and
    // either comes only once LISTEN is established.
    let warm = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.wait_for_events(head, FOREVER).await }
    });
    let channel = format!("es_events_{}", store.schema());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !warm.is_finished() {
        assert!(std::time::Instant::now() < deadline, "the store never listened");
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(&channel)
            .execute(store.pool())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    warm.await.unwrap().unwrap();
    assert_eq!(store.head_position().await.unwrap(), head, "nothing was appended");

    let waiter = tokio::spawn({
        let store = Arc::clone(&store);
        async move {
            loop {
                store.wait_for_events(head, FOREVER).await.unwrap();
                let seen = store.read_all(head, 10, &EventFilter::all()).await.unwrap();
                if !seen.is_empty() {
                    return seen;
                }
            }
        }
    });
    // Give the reader time to start waiting (were it to look only after
    // the append, it would read the event without being woken).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "nothing to read yet");
    let appended = store
        .append("t", &StreamId::from("n"), ExpectedVersion::NoStream, vec![ev(1)])
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the append's notification woke the waiting reader")
        .unwrap();
    let positions: Vec<u64> = seen.iter().map(|e| e.global_position).collect();
    assert_eq!(positions, appended.positions, "when woken, the event is readable");
}

/// A follower in another process (its own store, so its own LISTEN
/// connection) keeps up with bursts of concurrent appends by wake-ups
/// alone: batches carry the notification in their own statement, and a
/// trailing NOTIFY covers the statements after the last carried one. A
/// missed wake-up would leave the follower waiting out its 120 s timeout,
/// far beyond the 30 s this test allows per round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_elsewhere_is_woken_for_the_last_events_of_every_burst() {
    let writer = Arc::new(common::store().await);
    let follower = common::store_with(EventStoreConfig {
        max_connections: 6,
        ..EventStoreConfig::with_schema(writer.schema())
    })
    .await;
    let mut position = follower.head_position().await.unwrap();
    let mut seen = 0usize;
    for round in 0..6u64 {
        let bursts = (0..8u64).map(|w| {
            let writer = Arc::clone(&writer);
            tokio::spawn(async move {
                let stream = StreamId::from(format!("r{round}-w{w}"));
                for i in 0..10u64 {
                    let expected = if i == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exact(i)
                    };
                    writer.append("t", &stream, expected, vec![ev(i)]).await.unwrap();
                }
            })
        });
        for b in bursts.collect::<Vec<_>>() {
            b.await.unwrap();
        }
        let expected = (round as usize + 1) * 80;
        let caught_up = tokio::time::timeout(Duration::from_secs(30), async {
            while seen < expected {
                follower
                    .wait_for_events(position, Duration::from_secs(120))
                    .await
                    .unwrap();
                let page = follower.read_all(position, 1000, &EventFilter::all()).await.unwrap();
                seen += page.len();
                if let Some(last) = page.last() {
                    position = last.global_position;
                }
            }
        })
        .await;
        assert!(
            caught_up.is_ok(),
            "round {round}: the follower saw {seen} of {expected} events: a wake-up was missed"
        );
        assert_eq!(seen, expected);
    }
}

/// A reader waiting at a gap held by a transaction that appends nothing
/// (any transaction with an id holds back the visible limit) is woken soon
/// after it ends, though no notification comes then.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_waiting_at_a_gap_is_woken_when_it_closes() {
    let store = Arc::new(common::store().await);
    let head = store.head_position().await.unwrap();
    let mut unrelated = store.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *unrelated)
        .await
        .unwrap();
    store
        .append("t", &StreamId::from("behind"), ExpectedVersion::NoStream, vec![ev(1)])
        .await
        .unwrap();
    let waiter = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.wait_for_events(head, Duration::from_secs(120)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the event is hidden while the gap is open");
    unrelated.commit().await.unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(30), waiter).await;
    assert!(
        matches!(woken, Ok(Ok(Ok(())))),
        "woken after the gap closed, not by the 120 s timeout: {woken:?}"
    );
    assert!(store.head_position().await.unwrap() > head);
}

/// Batch processors keep their connections between statements only when
/// the pool leaves some for readers: with a pool of 3 and 2 processors,
/// reads still get through while appends never pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_pool_still_serves_readers_under_continuous_appends() {
    let store = Arc::new(
        common::store_with(EventStoreConfig {
            max_connections: 3,
            batch_processor_count: 2,
            ..EventStoreConfig::with_schema(common::schema("small"))
        })
        .await,
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appenders: Vec<_> = (0..8u64)
        .map(|w| {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            tokio::spawn(async move {
                let stream = StreamId::from(format!("busy-{w}"));
                let mut version = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let expected = if version == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exact(version)
                    };
                    store.append("t", &stream, expected, vec![ev(version)]).await.unwrap();
                    version += 1;
                }
                version
            })
        })
        .collect();
    let reads = tokio::time::timeout(Duration::from_secs(30), async {
        for _ in 0..20 {
            store.stream_version(&StreamId::from("busy-0")).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut written = 0;
    for a in appenders {
        written += a.await.unwrap();
    }
    assert!(reads.is_ok(), "readers starved while appends kept coming");
    assert!(written > 0);
}

#[tokio::test]
async fn invalid_schema_names_are_refused() {
    common::ensure_database().await.unwrap();
    let pool = sqlx::PgPool::connect_lazy(&common::database_url()).unwrap();
    let r = es_postgres::PostgresEventStore::with_pool(pool, EventStoreConfig::with_schema("x; drop table y"));
    assert!(matches!(r, Err(es_postgres::SetupError::InvalidSchema(_))));
}

/// Connections killed under the store (a server restart, a failover) are
/// transient failures: the append is retried on a fresh connection and
/// succeeds exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_survive_killed_connections() {
    let store = common::store().await;
    let id = StreamId::from("survivor");
    store
        .append("t", &id, ExpectedVersion::NoStream, vec![ev(1)])
        .await
        .unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1 AND pid <> pg_backend_pid()) k",
    )
    .bind(store.schema())
    .fetch_one(&sqlx::PgPool::connect(&common::database_url()).await.unwrap())
    .await
    .unwrap();
    assert!(killed >= 1, "the store's connections were killed");
    // Reads retry too (each on a connection that may have been killed).
    assert_eq!(store.stream_version(&id).await.unwrap(), 1);
    let r = store
        .append("t", &id, ExpectedVersion::Exact(1), vec![ev(2)])
        .await
        .unwrap();
    assert_eq!(r.new_version, 2);
    let events: Vec<_> = store.read_stream(&id, 1).try_collect().await.unwrap();
    assert_eq!(events.len(), 2);
}

/// A writing transaction left open holds the log back: the events
/// committed after it are counted as held back, with their age, while the
/// head stays where it was; once it ends, nothing is held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_committed_behind_an_open_transaction_are_reported_held_back() {
    let store = batching_store("held").await;
    let mut open = store.pool().begin().await.unwrap();
    store
        .append_in_transaction(
            &mut open,
            "t",
            &StreamId::from("open"),
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Happened", json!({}))],
        )
        .await
        .unwrap();
    let head = store.head_position().await.unwrap();
    for i in 0..3 {
        store
            .append(
                "t",
                &StreamId::from(format!("after{i}")),
                ExpectedVersion::NoStream,
                vec![NewEvent::new("Happened", json!({ "i": i }))],
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = store.held_back().await.unwrap();
    assert!(held.events >= 3, "{held:?}");
    assert!(held.for_how_long.unwrap() >= Duration::from_millis(250), "{held:?}");
    assert_eq!(
        store.head_position().await.unwrap(),
        head,
        "the head waits at the open transaction"
    );
    open.rollback().await.unwrap();
    // (Other tests' transactions may hold the log back for a moment.)
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let held = store.held_back().await.unwrap();
        if held.events == 0 {
            assert_eq!(held.for_how_long, None);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still held back: {held:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An append of 2^20 events, more than one transaction can number under
/// the position scheme (`(xid << 20) + row`), is refused before it is
/// queued, directly and in a caller's transaction; nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_of_more_events_than_a_transaction_numbers_is_refused() {
    let store = batching_store("rows").await;
    let id = StreamId::from("huge");
    let events = || {
        (0..1usize << 20)
            .map(|i| NewEvent::new("Happened", json!({ "i": i })))
            .collect::<Vec<_>>()
    };
    let r = store.append("t", &id, ExpectedVersion::NoStream, events()).await;
    match r {
        Err(StoreError::InvalidAppend { reason, .. }) => assert!(reason.contains("at most 1048575"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let mut tx = store.pool().begin().await.unwrap();
    let r = store
        .append_in_transaction(&mut tx, "t", &id, ExpectedVersion::NoStream, events())
        .await;
    assert!(matches!(r, Err(StoreError::InvalidAppend { .. })), "{r:?}");
    tx.rollback().await.unwrap();
    assert_eq!(store.stream_version(&id).await.unwrap(), 0);
}

/// An append PostgreSQL cannot store (a NUL in a JSON string) fails alone,
/// with a clear error, before it joins a batch; the appends queued around
/// it are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unstorable_data_fails_alone_with_a_clear_error() {
    let store = batching_store("nul").await;
    let observer = common::observer().await;
    let (blocker, first) = busy_writer(&store, &observer).await;
    let ids: Vec<StreamId> = (0..8u64).map(|i| StreamId::from(format!("n{i}"))).collect();
    let mut queued = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let payload = if i == 5 {
            json!({ "text": "nul \u{0} here" })
        } else {
            json!({ "n": i })
        };
        let mut append = Box::pin(tokio::task::unconstrained(store.append(
            "t",
            id,
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Happened", payload)],
        )));
        if i == 5 {
            // Refused at once, while the writer is still busy.
            match futures::poll!(append.as_mut()) {
                std::task::Poll::Ready(r) => {
                    assert!(matches!(r, Err(StoreError::InvalidAppend { .. })), "{r:?}");
                }
                std::task::Poll::Pending => panic!("the unstorable append was queued"),
            }
            continue;
        }
        assert!(futures::poll!(append.as_mut()).is_pending());
        queued.push(append);
    }
    blocker.rollback().await.unwrap();
    first.await.unwrap().unwrap();
    for r in futures::future::join_all(queued).await {
        assert_eq!(r.unwrap().new_version, 1);
    }
    assert_eq!(store.stream_version(&StreamId::from("n5")).await.unwrap(), 0);
}

/// A negative position in a row written by hand (or restored from a
/// dump) is reported, not read as a number near `u64::MAX` that a
/// checkpoint would then keep; a dead letter at one too.
#[tokio::test]
async fn negative_positions_written_by_hand_are_errors() {
    let store = common::store().await;
    let id = StreamId::from("negative");
    store
        .append("t", &id, ExpectedVersion::NoStream, vec![ev(1)])
        .await
        .unwrap();
    let s = store.schema();
    sqlx::query(&format!(
        "UPDATE {s}.events SET global_position = -7 WHERE stream_id = 'negative'"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    let read: Result<Vec<_>, _> = store.read_stream(&id, 1).try_collect().await;
    match read {
        Err(StoreError::Corrupt {
            stream_id,
            version,
            reason,
        }) => {
            assert_eq!((stream_id, version), (id.clone(), 1));
            assert!(reason.contains("negative value -7"), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    sqlx::query(&format!(
        "INSERT INTO {s}.dead_letters (projection, global_position, stream_id, version, event_id, event_type, \
         error, attempts, failed_at) VALUES ('p', -3, 'negative', 1, gen_random_uuid(), 't', 'e', 1, now())"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    let letters = es_core::CheckpointStore::dead_letters(&es_postgres::PostgresCheckpointStore::new(&store), "p").await;
    let e = letters.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("negative value -3"), "{e}");
}
