//! The outbox poller's promises under the cases that break naive pollers:
//! a failure in the middle of a stream while the rest of the batch is
//! acknowledged, and an older transaction (smaller global position) that
//! commits after a younger one. Checked on the database rows and on the
//! topic, through the public API only.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{append_n, assert_complete_in_order, versions_by_stream, Kafka};
use es_core::{EventStore, ExpectedVersion, NewEvent, StreamId};
use es_kafka::{KafkaPublisher, OutboxConfig, OutboxPoller};
use es_postgres::PostgresEventStore;
use serde_json::json;

fn poller(store: &PostgresEventStore, publisher: Arc<KafkaPublisher>) -> OutboxPoller {
    OutboxPoller::new(
        store.pool().clone(),
        publisher,
        OutboxConfig::with_schema(store.schema()),
    )
    .unwrap()
}

/// Polls until no row is pending (rows of open transactions are not
/// pending yet: nobody can see them).
async fn drain(p: &OutboxPoller) {
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        let o = p.poll_once().await.unwrap();
        if o.claimed == 0 {
            if p.status().await.unwrap().pending == 0 {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "rows stay pending");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

/// One outbox row as the poller left it.
#[derive(Debug, Clone, PartialEq)]
struct RowState {
    stream_id: String,
    version: i64,
    global_position: i64,
    published: bool,
    attempts: i32,
    last_error: Option<String>,
    parked: bool,
}

/// `(stream, version, position, published, attempts, last_error, parked)`.
type RowTuple = (String, i64, i64, bool, i32, Option<String>, bool);

async fn rows(store: &PostgresEventStore) -> Vec<RowState> {
    let rows: Vec<RowTuple> = sqlx::query_as(&format!(
        "SELECT stream_id, version, global_position, published_at IS NOT NULL, attempts, last_error, \
                parked_at IS NOT NULL \
         FROM {}.outbox ORDER BY stream_id, version",
        store.schema()
    ))
    .fetch_all(store.pool())
    .await
    .unwrap();
    rows.into_iter()
        .map(
            |(stream_id, version, global_position, published, attempts, last_error, parked)| RowState {
                stream_id,
                version,
                global_position,
                published,
                attempts,
                last_error,
                parked,
            },
        )
        .collect()
}

fn row<'a>(rows: &'a [RowState], stream: &str, version: i64) -> &'a RowState {
    rows.iter()
        .find(|r| r.stream_id == stream && r.version == version)
        .unwrap_or_else(|| panic!("no outbox row {stream} v{version} in {rows:?}"))
}

async fn append_one(store: &PostgresEventStore, stream: &str, payload: serde_json::Value) {
    let id = StreamId::from(stream);
    let current = store.stream_version(&id).await.unwrap();
    let expected = if current == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(current)
    };
    store
        .append("account", &id, expected, vec![NewEvent::new("Deposited", payload)])
        .await
        .unwrap();
}

/// Larger than `message.max.bytes` of [`limited_publisher`], smaller than
/// the default.
fn oversized() -> serde_json::Value {
    json!({ "memo": "x".repeat(20_000) })
}

/// A publisher whose producer refuses messages over 8000 bytes: a
/// message-specific failure (the message, not the broker, is at fault).
fn limited_publisher(kafka: &Kafka) -> Arc<KafkaPublisher> {
    let mut config = kafka.publisher_config();
    config.extra.insert("message.max.bytes".into(), "8000".into());
    Arc::new(KafkaPublisher::new(&config).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_failure_mid_stream_only_the_acknowledged_prefix_is_marked_then_all_drains_in_order() {
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 3).await;
    let store = common::store(true).await;
    append_n(&store, "account", "a", 2).await;
    append_one(&store, "m", json!({"i": 1})).await;
    append_one(&store, "m", oversized()).await;
    append_one(&store, "m", json!({"i": 3})).await;
    append_one(&store, "m", json!({"i": 4})).await;
    append_n(&store, "account", "z", 2).await;

    // One batch holds everything: m v1 is acknowledged, m v2 is refused,
    // m v3..4 must not count even if sent; a and z are unaffected.
    let p = poller(&store, limited_publisher(&kafka));
    p.migrate().await.unwrap();
    p.poll_once().await.unwrap();

    let after = rows(&store).await;
    for (stream, version) in [("a", 1), ("a", 2), ("m", 1), ("z", 1), ("z", 2)] {
        let r = row(&after, stream, version);
        assert!(r.published, "{r:?} published");
        assert_eq!((r.attempts, r.parked), (0, false), "{r:?}");
    }
    let failed = row(&after, "m", 2);
    assert!(!failed.published && !failed.parked, "{failed:?}");
    assert_eq!(
        failed.attempts, 1,
        "the failing row has its attempt counted: {failed:?}"
    );
    let error = failed.last_error.as_deref().unwrap_or_default();
    assert!(
        error.to_lowercase().contains("too large"),
        "the failing row carries its error: {failed:?}"
    );
    for version in [3, 4] {
        let r = row(&after, "m", version);
        assert_eq!(
            (r.published, r.attempts, r.last_error.as_deref(), r.parked),
            (false, 0, None, false),
            "rows behind the failure are untouched: {r:?}"
        );
    }

    // The cause fixed (a producer with the default limit): the rest of m
    // drains, in order, and nothing acknowledged before is sent again.
    let fixed = poller(&store, kafka.publisher());
    drain(&fixed).await;
    assert!(rows(&store).await.iter().all(|r| r.published));
    let reads = kafka.read_topic(&topic).await;
    assert_eq!(
        versions_by_stream(&reads),
        BTreeMap::from([
            ("a".into(), vec![1, 2]),
            ("m".into(), vec![1, 2, 3, 4]),
            ("z".into(), vec![1, 2]),
        ]),
        "each event once, in stream order"
    );
    let big = reads.iter().find(|r| r.key == "m" && r.event.version == 2).unwrap();
    assert_eq!(big.event.payload, oversized());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_older_transaction_committing_after_a_younger_one_is_published_once_in_order() {
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 2).await;
    let store = common::store(true).await;
    append_n(&store, "account", "a", 1).await;
    let p = poller(&store, kafka.publisher());
    // Before T1: creating the index would wait for T1's commit.
    p.migrate().await.unwrap();

    // T1 takes its global position (its transaction id) first ...
    let mut t1 = store.pool().begin().await.unwrap();
    let t1_append = store
        .append_in_transaction(
            &mut t1,
            "account",
            &StreamId::from("a"),
            ExpectedVersion::Exact(1),
            vec![
                NewEvent::new("Deposited", json!({"t": 1})),
                NewEvent::new("Deposited", json!({"t": 1})),
            ],
        )
        .await
        .unwrap();
    // ... T2 (two transactions on stream b) commits while T1 is open.
    append_n(&store, "account", "b", 2).await;

    drain(&p).await;
    let while_open = rows(&store).await;
    assert_eq!(
        while_open
            .iter()
            .map(|r| (r.stream_id.as_str(), r.version, r.published))
            .collect::<Vec<_>>(),
        vec![("a", 1, true), ("b", 1, true), ("b", 2, true)],
        "everything committed is published while T1 is open"
    );
    let b_first = row(&while_open, "b", 1).global_position;
    assert!(
        t1_append.positions.iter().all(|p| (*p as i64) < b_first),
        "T1 holds smaller positions than what committed before it: {:?} / {b_first}",
        t1_append.positions
    );

    // T1 commits after b's rows were published; a later append follows.
    t1.commit().await.unwrap();
    drain(&p).await;
    append_n(&store, "account", "a", 1).await;
    drain(&p).await;

    let all = rows(&store).await;
    assert_eq!(all.len(), 6);
    assert!(all.iter().all(|r| r.published), "nothing left behind: {all:?}");
    let reads = kafka.read_topic(&topic).await;
    assert_eq!(
        versions_by_stream(&reads),
        BTreeMap::from([("a".into(), vec![1, 2, 3, 4]), ("b".into(), vec![1, 2])]),
        "each event once, in stream order"
    );
    assert_complete_in_order(&reads, &BTreeMap::from([("a".into(), 4), ("b".into(), 2)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_refused_max_attempts_times_is_parked_and_blocks_only_its_stream_until_unparked() {
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 2).await;
    let store = common::store(true).await;
    append_one(&store, "m", oversized()).await;
    append_one(&store, "m", json!({"i": 2})).await;
    append_n(&store, "account", "z", 1).await;
    let limited = OutboxPoller::new(
        store.pool().clone(),
        limited_publisher(&kafka),
        OutboxConfig {
            max_attempts: 2,
            ..OutboxConfig::with_schema(store.schema())
        },
    )
    .unwrap();
    limited.migrate().await.unwrap();

    limited.poll_once().await.unwrap();
    let first = rows(&store).await;
    assert_eq!(
        (row(&first, "m", 1).attempts, row(&first, "m", 1).parked),
        (1, false),
        "{first:?}"
    );
    limited.poll_once().await.unwrap();
    let second = rows(&store).await;
    let head = row(&second, "m", 1);
    assert_eq!(
        (head.published, head.attempts, head.parked),
        (false, 2, true),
        "{head:?}"
    );
    let behind = row(&second, "m", 2);
    assert_eq!(
        (behind.published, behind.attempts, behind.parked),
        (false, 0, false),
        "{behind:?}"
    );
    assert!(row(&second, "z", 1).published);
    let status = limited.status().await.unwrap();
    assert_eq!((status.pending, status.parked), (1, 1));
    let parked = &status.parked_rows[0];
    assert_eq!(
        (parked.stream_id.as_str(), parked.version, parked.attempts),
        ("m", 1, 2)
    );
    assert!(parked.last_error.to_lowercase().contains("too large"), "{parked:?}");
    // Operators' tools read the same without a poller or a Kafka client.
    let read = es_kafka::outbox::outbox_status(store.pool(), store.schema())
        .await
        .unwrap();
    assert_eq!(
        (read.pending, read.parked, &read.parked_rows),
        (status.pending, status.parked, &status.parked_rows)
    );
    assert!(read.oldest_pending_age.is_some(), "m 2 is pending: {read:?}");
    let refused = es_kafka::outbox::outbox_status(store.pool(), "no;such").await;
    assert!(matches!(refused, Err(es_kafka::OutboxError::Setup(_))), "{refused:?}");

    // Other streams flow; m stays behind its parked head, even for a
    // poller that could publish it.
    append_n(&store, "account", "z", 1).await;
    let fixed = poller(&store, kafka.publisher());
    fixed.poll_once().await.unwrap();
    fixed.poll_once().await.unwrap();
    let third = rows(&store).await;
    assert!(row(&third, "z", 2).published, "{third:?}");
    assert!(
        !row(&third, "m", 1).published && !row(&third, "m", 2).published,
        "{third:?}"
    );

    assert!(fixed.unpark(parked.global_position).await.unwrap());
    drain(&fixed).await;
    assert!(rows(&store).await.iter().all(|r| r.published && !r.parked));
    let reads = kafka.read_topic(&topic).await;
    assert_eq!(
        versions_by_stream(&reads),
        BTreeMap::from([("m".into(), vec![1, 2]), ("z".into(), vec![1, 2])]),
        "each event once, in stream order"
    );
}

/// Appends `n` small events to `stream` in one append.
async fn append_many(store: &PostgresEventStore, stream: &str, n: u64) {
    let id = StreamId::from(stream);
    let current = store.stream_version(&id).await.unwrap();
    let events = (0..n).map(|i| NewEvent::new("Deposited", json!({ "i": i }))).collect();
    store
        .append("account", &id, ExpectedVersion::Exact(current), events)
        .await
        .unwrap();
}

/// Rows of `stream` a claim's window can still see: unpublished, neither
/// parked nor held.
async fn in_window(store: &PostgresEventStore, stream: &str) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {}.outbox WHERE stream_id = $1 AND published_at IS NULL \
         AND parked_at IS NULL AND held_at IS NULL",
        store.schema()
    ))
    .bind(stream)
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// Parks the head of `stream` (an oversized event appended first) with a
/// poller that gives up after one refusal; returns its position.
async fn park_head(store: &PostgresEventStore, kafka: &Kafka, stream: &str) -> u64 {
    append_one(store, stream, oversized()).await;
    let limited = OutboxPoller::new(
        store.pool().clone(),
        limited_publisher(kafka),
        OutboxConfig {
            max_attempts: 1,
            ..OutboxConfig::with_schema(store.schema())
        },
    )
    .unwrap();
    limited.migrate().await.unwrap();
    let o = limited.poll_once().await.unwrap();
    assert_eq!(o.parked, 1, "{o:?}");
    let status = limited.status().await.unwrap();
    status
        .parked_rows
        .iter()
        .find(|r| r.stream_id == stream)
        .map_or_else(|| panic!("{stream} is not parked: {status:?}"), |r| r.global_position)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_behind_a_parked_row_leave_the_claim_window_until_it_is_unparked() {
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 2).await;
    let store = common::store(true).await;
    let parked = park_head(&store, &kafka, "m").await;
    append_many(&store, "m", 300).await;
    append_n(&store, "account", "z", 1).await;
    assert_eq!(in_window(&store, "m").await, 300);

    // A claim that sees the blocked rows holds them: later claims do not
    // walk them again. Other streams are published as before.
    let fixed = poller(&store, kafka.publisher());
    let o = fixed.poll_once().await.unwrap();
    assert_eq!((o.claimed, o.published), (1, 1), "z only: {o:?}");
    assert_eq!(in_window(&store, "m").await, 0);
    let status = fixed.status().await.unwrap();
    assert_eq!(
        (status.pending, status.parked, status.held),
        (300, 1, 300),
        "{status:?}"
    );

    // Rows appended later are held by the next claim that sees them.
    append_many(&store, "m", 5).await;
    assert_eq!(in_window(&store, "m").await, 5);
    let o = fixed.poll_once().await.unwrap();
    assert_eq!(o.claimed, 0, "{o:?}");
    assert_eq!(in_window(&store, "m").await, 0);
    assert_eq!(fixed.status().await.unwrap().held, 305);

    // Releasing the parked row makes them pending again; they follow it.
    assert!(fixed.unpark(parked).await.unwrap());
    assert!(!fixed.unpark(parked).await.unwrap(), "no longer parked");
    let status = fixed.status().await.unwrap();
    assert_eq!((status.pending, status.parked, status.held), (306, 0, 0), "{status:?}");
    drain(&fixed).await;
    let reads = kafka.read_topic(&topic).await;
    assert_eq!(
        versions_by_stream(&reads),
        BTreeMap::from([("m".into(), (1..=306).collect()), ("z".into(), vec![1])]),
        "each event once, in stream order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unpark_while_a_claim_holds_its_stream_leaves_no_row_held() {
    let kafka = Kafka::start();
    let store = common::store(true).await;
    let parked = park_head(&store, &kafka, "r").await;
    for _ in 0..6 {
        append_many(&store, "r", 5_000).await;
    }
    // The claim sees the stream blocked and holds its 30,000 rows; the
    // unpark comes while that statement runs. It waits for the hold and
    // then releases what it held: without that wait it would release
    // nothing yet and the hold would then strand every row.
    let fixed = poller(&store, kafka.publisher());
    let polling = {
        let fixed = fixed.clone();
        tokio::spawn(async move { fixed.poll_once().await })
    };
    let watcher = store.pool().clone();
    let seen = common::eventually("the hold statement runs", || {
        let watcher = watcher.clone();
        let done = polling.is_finished();
        async move {
            assert!(!done, "the claim ended before its hold was seen running");
            let running: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
                 AND query LIKE '%SET held_at = now()%' AND pid <> pg_backend_pid()",
            )
            .fetch_one(&watcher)
            .await
            .unwrap();
            (running > 0).then_some(())
        }
    });
    seen.await;
    assert!(fixed.unpark(parked).await.unwrap());
    polling.await.unwrap().unwrap();
    let status = fixed.status().await.unwrap();
    assert_eq!(
        (status.pending, status.parked, status.held),
        (30_001, 0, 0),
        "{status:?}"
    );
    assert_eq!(in_window(&store, "r").await, 30_001);
}
