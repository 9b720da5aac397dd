//! The outbox poller against the real PostgreSQL and Kafka (mock cluster,
//! or the broker named by KAFKA_BOOTSTRAP_SERVERS).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{append_n, assert_complete_in_order, Kafka};
use es_core::{EventStore, ExpectedVersion, NewEvent, StreamId};
use es_kafka::outbox::Retention;
use es_kafka::{KafkaPublisher, OutboxConfig, OutboxPoller};
use es_postgres::PostgresEventStore;
use serde_json::json;

fn poller(store: &PostgresEventStore, publisher: Arc<KafkaPublisher>, config: OutboxConfig) -> OutboxPoller {
    OutboxPoller::new(
        store.pool().clone(),
        publisher,
        OutboxConfig {
            schema: store.schema().into(),
            ..config
        },
    )
    .unwrap()
}

/// Polls until no row is pending. A claim that another poller (or a
/// dropped claim whose rollback is still on its way) holds is waited for.
async fn drain(p: &OutboxPoller) -> usize {
    let mut published = 0;
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        let o = p.poll_once().await.unwrap();
        assert_eq!(o.failed, 0, "{o:?}");
        published += o.published;
        if o.claimed == 0 {
            if p.status().await.unwrap().pending == 0 {
                return published;
            }
            assert!(std::time::Instant::now() < deadline, "rows stay pending");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishes_committed_events_in_stream_order_and_nothing_rolled_back() {
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 3).await;
    let store = common::store(true).await;
    append_n(&store, "account", "a1", 5).await;
    append_n(&store, "account", "a2", 3).await;
    // A conflicting append and a rolled-back transactional append.
    let conflict = store
        .append(
            "account",
            &StreamId::from("a1"),
            ExpectedVersion::Exact(1),
            vec![NewEvent::new("X", json!({}))],
        )
        .await;
    assert!(conflict.is_err());
    let mut tx = store.pool().begin().await.unwrap();
    store
        .append_in_transaction(
            &mut tx,
            "account",
            &StreamId::from("ghost"),
            ExpectedVersion::NoStream,
            vec![NewEvent::new("X", json!({}))],
        )
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let p = poller(
        &store,
        kafka.publisher(),
        OutboxConfig {
            max_streams: 1,
            batch_size: 2,
            ..OutboxConfig::default()
        },
    );
    p.migrate().await.unwrap();
    assert_eq!(drain(&p).await, 8);

    let reads = kafka.read_topic(&topic).await;
    assert_eq!(reads.len(), 8, "exactly once without failures");
    assert_complete_in_order(&reads, &BTreeMap::from([("a1".into(), 5), ("a2".into(), 3)]));
    for r in &reads {
        assert_eq!(
            r.event_id_header.as_deref(),
            Some(r.event.event_id.to_string().as_str())
        );
        assert_eq!(r.version_header, Some(r.event.version.to_string()));
    }
    // Marked, not deleted (default retention); nothing pending.
    let status = p.status().await.unwrap();
    assert_eq!((status.pending, status.parked), (0, 0));
    let marked: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {}.outbox WHERE published_at IS NOT NULL",
        store.schema()
    ))
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(marked, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pollers_own_disjoint_streams_and_publish_each_event_once_in_order() {
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 4).await;
    let store = common::store(true).await;
    let mut expected = BTreeMap::new();
    for s in 0..6 {
        append_n(&store, "account", &format!("s{s}"), 4).await;
        expected.insert(format!("s{s}"), 4);
    }
    let publisher = kafka.publisher();
    let config = OutboxConfig {
        max_streams: 2,
        batch_size: 8,
        ..OutboxConfig::default()
    };
    let a = poller(&store, publisher.clone(), config.clone());
    let b = poller(&store, publisher.clone(), config.clone());
    a.migrate().await.unwrap();

    // Deterministic part: while A holds a claim, B claims other streams only.
    let claim_a = a.claim().await.unwrap();
    let claim_b = b.claim().await.unwrap();
    let streams = |c: &es_kafka::outbox::Claim| {
        c.events()
            .iter()
            .map(|e| e.stream_id.to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(streams(&claim_a).len(), 2);
    assert_eq!(streams(&claim_b).len(), 2);
    assert!(
        streams(&claim_a).is_disjoint(&streams(&claim_b)),
        "{:?} / {:?}",
        streams(&claim_a),
        streams(&claim_b)
    );
    drop(claim_b);
    let done = a.finish(claim_a).await.unwrap();
    assert_eq!(done.published, 8);

    // Racing part: three pollers drain the rest concurrently.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let p = poller(&store, publisher.clone(), config.clone());
        tasks.push(tokio::spawn(async move { drain(&p).await }));
    }
    let mut total = 8;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 24);
    let reads = kafka.read_topic(&topic).await;
    assert_eq!(reads.len(), 24, "no claimed row is published twice");
    assert_complete_in_order(&reads, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poller_killed_after_publishing_but_before_marking_is_made_good_on_restart() {
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 2).await;
    let store = common::store(true).await;
    append_n(&store, "account", "k1", 3).await;
    append_n(&store, "account", "k2", 2).await;
    let publisher = kafka.publisher();
    let first = poller(&store, publisher.clone(), OutboxConfig::default());
    first.migrate().await.unwrap();

    // Publish and get every acknowledgement, then die before marking.
    let claim = first.claim().await.unwrap();
    let events = claim.events();
    assert_eq!(events.len(), 5);
    assert!(publisher.publish(&events).await.iter().all(Result::is_ok));
    drop(claim); // the claiming transaction rolls back, like a killed process
    drop(first);

    let second = poller(
        &store,
        publisher.clone(),
        OutboxConfig {
            retention: Retention::DeleteOnPublish,
            ..OutboxConfig::default()
        },
    );
    assert_eq!(
        drain(&second).await,
        5,
        "everything is published again, nothing skipped"
    );
    let reads = kafka.read_topic(&topic).await;
    assert_eq!(reads.len(), 10);
    assert_complete_in_order(&reads, &BTreeMap::from([("k1".into(), 3), ("k2".into(), 2)]));
    let left: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}.outbox", store.schema()))
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(left, 0, "DeleteOnPublish removes published rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_outage_counts_no_attempts_and_parks_nothing() {
    let kafka = Kafka::start();
    if !kafka.is_mock() {
        eprintln!("skipped: needs the mock cluster to take the broker down");
        return;
    }
    let topic = kafka.topic("account", 2).await;
    let store = common::store(true).await;
    append_n(&store, "account", "o1", 2).await;
    let p = poller(
        &store,
        kafka.publisher(),
        OutboxConfig {
            max_attempts: 1,
            ..OutboxConfig::default()
        },
    );
    p.migrate().await.unwrap();
    let mock = kafka.mock.as_ref().unwrap();

    // Broker down: deliveries time out (message_timeout 3 s in tests).
    mock.broker_down(1).unwrap();
    for _ in 0..2 {
        let o = p.poll_once().await.unwrap();
        assert_eq!((o.claimed, o.published, o.failed, o.parked), (2, 0, 2, 0), "{o:?}");
    }
    mock.broker_up(1).unwrap();
    let attempts: Vec<i32> = sqlx::query_scalar(&format!(
        "SELECT attempts FROM {}.outbox ORDER BY version",
        store.schema()
    ))
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(attempts, vec![0, 0], "an outage is no row's fault");
    assert_eq!(p.status().await.unwrap().parked, 0);
    assert_eq!(drain(&p).await, 2);
    let reads = kafka.read_topic(&topic).await;
    assert_complete_in_order(&reads, &BTreeMap::from([("o1".into(), 2)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poller_killed_while_waiting_for_acks_leaves_its_rows_pending() {
    let kafka = Kafka::start();
    if !kafka.is_mock() {
        eprintln!("skipped: needs the mock cluster to take the broker down");
        return;
    }
    let topic = kafka.topic("account", 2).await;
    let store = common::store(true).await;
    append_n(&store, "account", "w1", 3).await;
    let publisher = kafka.publisher();
    let first = poller(&store, publisher.clone(), OutboxConfig::default());
    first.migrate().await.unwrap();
    let mock = kafka.mock.as_ref().unwrap();
    mock.broker_down(1).unwrap();

    // The messages are handed to the producer; no ack can come back.
    let claim = first.claim().await.unwrap();
    let events = claim.events();
    tokio::select! {
        _ = publisher.publish(&events) => panic!("acknowledged while the broker is down"),
        () = tokio::time::sleep(std::time::Duration::from_millis(300)) => {}
    }
    drop(claim); // killed between publish and ack
    drop(first);
    mock.broker_up(1).unwrap();

    let second = poller(&store, kafka.publisher(), OutboxConfig::default());
    assert_eq!(drain(&second).await, 3);
    let reads = kafka.read_topic(&topic).await;
    assert_complete_in_order(&reads, &BTreeMap::from([("w1".into(), 3)]));
}
