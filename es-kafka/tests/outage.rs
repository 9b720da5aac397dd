//! Both publishing loops through a broker outage (the mock cluster's broker
//! taken down while appends continue, then brought back): every event
//! reaches the topic in stream order, nothing is parked, the health record
//! reports the failed rounds while Kafka is down and recovers after; the
//! log's readers are not held up by a round waiting for the broker.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{append_n, assert_complete_in_order, eventually, Kafka};
use es_core::{EventFilter, EventStore};
use es_kafka::{CdcConfig, CdcRelay, HealthSnapshot, OutboxConfig, OutboxPoller};
use es_postgres::PostgresEventStore;
use futures::FutureExt;
use tokio::sync::watch;

const STREAMS: usize = 12;

/// Appends to `STREAMS` streams round-robin until `stop`; returns the
/// version each stream reached.
async fn append_until(store: PostgresEventStore, stop: Arc<AtomicBool>) -> BTreeMap<String, u64> {
    let mut versions = BTreeMap::new();
    let mut round = 0_u64;
    while !stop.load(Ordering::Relaxed) {
        for s in 0..STREAMS {
            let stream = format!("s{s:02}");
            append_n(&store, "account", &stream, 1).await;
            *versions.entry(stream).or_insert(0) += 1;
        }
        round += 1;
        if round.is_multiple_of(4) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    versions
}

/// Runs the outage scenario around a publishing loop: load before, during
/// and after the broker is down; `health` reads the loop's record.
async fn outage<H>(kafka: &Kafka, store: &PostgresEventStore, topic: &str, health: H)
where
    H: Fn() -> HealthSnapshot,
{
    let mock = kafka.mock.as_ref().expect("mock cluster");
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(append_until(store.clone(), Arc::clone(&stop)));
    eventually("first publishes", || async {
        (health().published_total > 0).then_some(())
    })
    .await;

    mock.broker_down(1).unwrap();
    // Deliveries time out (message_timeout 3 s in tests): rounds fail and
    // the record turns unhealthy (unhealthy_after = 2).
    let down = eventually("unhealthy while the broker is down", || async {
        let h = health();
        (!h.healthy).then_some(h)
    })
    .await;
    assert!(down.consecutive_failed_rounds >= 2, "{down:?}");
    assert!(down.last_error.is_some(), "{down:?}");
    mock.broker_up(1).unwrap();
    eventually("healthy again", || async { health().healthy.then_some(()) }).await;
    stop.store(true, Ordering::Relaxed);
    let expected = load.await.unwrap();
    let total: u64 = expected.values().sum();

    eventually("everything published", || async {
        (health().published_total >= total).then_some(())
    })
    .await;
    let reads = kafka.read_topic(topic).await;
    assert_complete_in_order(&reads, &expected);
}

fn stopper() -> (watch::Sender<bool>, impl std::future::Future<Output = ()>) {
    let (tx, mut rx) = watch::channel(false);
    (tx, async move {
        let _ = rx.wait_for(|s| *s).await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_outbox_poller_resumes_after_an_outage_and_parks_nothing() {
    let kafka = Kafka::start();
    if !kafka.is_mock() {
        eprintln!("skipped: needs the mock cluster to take the broker down");
        return;
    }
    let topic = kafka.topic("account", 3).await;
    let store = common::store(true).await;
    let poller = OutboxPoller::new(
        store.pool().clone(),
        kafka.publisher(),
        OutboxConfig {
            max_attempts: 1,
            unhealthy_after: 2,
            ..OutboxConfig::with_schema(store.schema())
        },
    )
    .unwrap();
    poller.migrate().await.unwrap();
    let (stop, shutdown) = stopper();
    let running = poller.clone();
    let task = tokio::spawn(async move { running.run(shutdown).await });

    outage(&kafka, &store, &topic, || poller.health()).await;
    let status = poller.status().await.unwrap();
    assert_eq!(
        (status.pending, status.parked),
        (0, 0),
        "max_attempts 1, yet nothing parked"
    );

    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cdc_relay_resumes_after_an_outage() {
    let kafka = Kafka::start();
    if !kafka.is_mock() {
        eprintln!("skipped: needs the mock cluster to take the broker down");
        return;
    }
    let topic = kafka.topic("account", 3).await;
    let store = common::store(false).await;
    let slot = common::unique("es_outage");
    let relay = CdcRelay::new(
        store.pool().clone(),
        kafka.publisher(),
        CdcConfig {
            unhealthy_after: 2,
            ..CdcConfig::new(store.schema(), slot)
        },
    )
    .unwrap();
    relay.ensure_slot().await.unwrap();
    let (stop, shutdown) = stopper();
    let running = relay.clone();
    let task = tokio::spawn(async move { running.run(shutdown).await });

    let outcome = std::panic::AssertUnwindSafe(outage(&kafka, &store, &topic, || relay.health()))
        .catch_unwind()
        .await;
    stop.send(true).unwrap();
    task.await.unwrap();
    let status = relay.status().await;
    relay.drop_slot().await.unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    let status = status.unwrap();
    assert_eq!(status.lag_events, Some(0), "{status:?}");
}

/// A relay started while the broker is down reports what waits before it
/// has published anything: its lag counts from the first event its failed
/// round read (before, `lag_events` stayed `None` until a first publish,
/// for as long as the outage lasted).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_started_during_an_outage_reports_its_lag_before_any_publish() {
    let kafka = &Kafka::start();
    if !kafka.is_mock() {
        eprintln!("skipped: needs the mock cluster to take the broker down");
        return;
    }
    let mock = kafka.mock.as_ref().expect("mock cluster");
    let topic = &kafka.topic("account", 3).await;
    let store = &common::store(false).await;
    common::with_slot(store, kafka, |slot| async move {
        let relay = common::relay(store, kafka.publisher(), &slot);
        mock.broker_down(1).unwrap();
        append_n(store, "account", "a", 5).await;
        assert_eq!(relay.status().await.unwrap().lag_events, None, "nothing read yet");
        assert!(relay.relay_once().await.is_err(), "the broker is down");
        assert_eq!(relay.status().await.unwrap().lag_events, Some(5));
        append_n(store, "account", "b", 2).await;
        assert_eq!(relay.status().await.unwrap().lag_events, Some(7));

        mock.broker_up(1).unwrap();
        // Rounds until one finds nothing left to publish.
        eventually("everything published after the outage", || async {
            relay.relay_once().await.ok().filter(|o| o.transactions == 0)
        })
        .await;
        assert_eq!(relay.status().await.unwrap().lag_events, Some(0));
        let reads = kafka.read_topic(topic).await;
        assert_complete_in_order(&reads, &BTreeMap::from([("a".to_owned(), 5), ("b".to_owned(), 2)]));
    })
    .await;
}

/// A round waiting for a broker that is down: the log's readers go on
/// meanwhile, and a shutdown returns within the grace period and leaves
/// the rows pending for the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_during_an_outage_returns_within_the_grace_period_and_leaves_rows_pending() {
    let kafka = Kafka::start();
    if !kafka.is_mock() {
        eprintln!("skipped: needs the mock cluster to take the broker down");
        return;
    }
    let topic = kafka.topic("account", 2).await;
    let store = common::store(true).await;
    append_n(&store, "account", "g1", 3).await;
    let mut slow = kafka.publisher_config();
    slow.message_timeout = Duration::from_secs(300); // librdkafka's default
    let poller = OutboxPoller::new(
        store.pool().clone(),
        Arc::new(es_kafka::KafkaPublisher::new(&slow).unwrap()),
        OutboxConfig {
            shutdown_grace: Duration::from_millis(200),
            ..OutboxConfig::with_schema(store.schema())
        },
    )
    .unwrap();
    poller.migrate().await.unwrap();
    let mock = kafka.mock.as_ref().unwrap();
    mock.broker_down(1).unwrap();
    let (stop, shutdown) = stopper();
    let running = poller.clone();
    let task = tokio::spawn(async move { running.run(shutdown).await });
    // Wait until a round owns the stream (its claim holds the stream's
    // advisory lock, keyed on the schema's outbox and the stream id).
    eventually("a round in progress", || async {
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted \
             AND classid = ((hashtext($1)::bigint + 4294967296) % 4294967296)::oid \
             AND objid = ((hashtext('g1')::bigint + 4294967296) % 4294967296)::oid",
        )
        .bind(format!("{}.outbox", store.schema()))
        .fetch_one(store.pool())
        .await
        .unwrap();
        (held > 0).then_some(())
    })
    .await;
    // The round waits for Kafka without holding up the log's readers: an
    // event appended now is read at once (a claim holding a transaction id
    // hid it until the round ended, here for the 300 s message timeout).
    append_n(&store, "account", "g2", 1).await;
    eventually("the log's readers see what was appended during the round", || async {
        let log = store.read_all(0, 100, &EventFilter::all()).await.unwrap();
        log.iter().any(|e| e.stream_id.as_str() == "g2").then_some(())
    })
    .await;
    let asked = std::time::Instant::now();
    stop.send(true).unwrap();
    // Without the grace the round would wait for the 300 s message timeout.
    tokio::time::timeout(common::PATIENCE, task)
        .await
        .expect("run returned after shutdown")
        .unwrap();
    let took = asked.elapsed();
    // The 200 ms grace, plus the round's clean-up on a busy machine.
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    mock.broker_up(1).unwrap();
    assert_eq!(poller.status().await.unwrap().pending, 4, "left for the next start");
    let next = OutboxPoller::new(
        store.pool().clone(),
        kafka.publisher(),
        OutboxConfig::with_schema(store.schema()),
    )
    .unwrap();
    eventually("the next start publishes them", || async {
        next.poll_once().await.unwrap();
        (next.status().await.unwrap().pending == 0).then_some(())
    })
    .await;
    let reads = kafka.read_topic(&topic).await;
    assert_complete_in_order(&reads, &BTreeMap::from([("g1".into(), 3), ("g2".into(), 1)]));
}

/// Committing while the broker is down waits for librdkafka, but off the
/// runtime's threads and only up to `commit_timeout`: on a one-thread
/// runtime, other tasks go on meanwhile, and the commit then fails. (It
/// used to block the runtime's thread until the broker came back.)
#[tokio::test(flavor = "current_thread")]
async fn a_commit_during_an_outage_holds_up_nothing_and_times_out() {
    let kafka = Kafka::start();
    if !kafka.is_mock() {
        eprintln!("skipped: needs the mock cluster to take the broker down");
        return;
    }
    let topic = kafka.topic("account", 1).await;
    let event = es_core::RecordedEvent {
        global_position: 1,
        stream_id: es_core::StreamId::from("c1"),
        stream_type: "account".into(),
        version: 1,
        event_id: uuid::Uuid::now_v7(),
        event_type: "Deposited".into(),
        schema_version: 1,
        payload: serde_json::json!({}),
        metadata: es_core::Metadata::default(),
        recorded_at: chrono::Utc::now(),
    };
    assert!(kafka.publisher().publish(&[event]).await.iter().all(Result::is_ok));
    struct Nothing;
    #[async_trait::async_trait]
    impl es_core::Projector for Nothing {
        fn name(&self) -> &str {
            "nothing"
        }
        async fn apply(&self, _: &es_core::RecordedEvent) -> Result<(), es_core::BoxError> {
            Ok(())
        }
    }
    let consumer = es_kafka::KafkaProjectionConsumer::new(
        es_kafka::ConsumerConfig {
            commit_timeout: Duration::from_secs(1),
            ..es_kafka::ConsumerConfig::new(&kafka.bootstrap, common::unique("g"), vec![topic])
        },
        Arc::new(Nothing),
        Arc::new(es_kafka::InMemoryDedup::new()),
    )
    .unwrap();
    tokio::time::timeout(common::PATIENCE, consumer.next())
        .await
        .expect("the message")
        .unwrap();
    kafka.mock.as_ref().unwrap().broker_down(1).unwrap();
    let ticks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = tokio::spawn({
        let ticks = Arc::clone(&ticks);
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    tokio::task::yield_now().await;
    let started = std::time::Instant::now();
    let committed = consumer.commit().await;
    let took = started.elapsed();
    ticker.abort();
    let ticks = ticks.load(Ordering::SeqCst);
    kafka.mock.as_ref().unwrap().broker_up(1).unwrap();
    assert!(committed.is_err(), "{committed:?}");
    assert!(took < Duration::from_secs(10), "the commit waited {took:?}");
    assert!(ticks >= 20, "the runtime ticked only {ticks} times in {took:?}");
}
