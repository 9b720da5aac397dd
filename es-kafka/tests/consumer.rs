//! The projection consumer: order, duplicates, resume from committed
//! offsets, dead letters, a message consumed again after a failure, and a
//! group splitting partitions.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{Kafka, PATIENCE};
use es_core::{BoxError, Metadata, Projector, RecordedEvent, RetryPolicy, StreamId};
use es_kafka::message::{header_str, headers};
use es_kafka::{ConsumerConfig, DedupStore, Handled, InMemoryDedup, KafkaProjectionConsumer};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use serde_json::json;

/// Records what it applied; fails on `Poison` events.
#[derive(Default)]
struct Recorder {
    applied: Mutex<Vec<(String, u64)>>,
    attempts_on_poison: Mutex<u32>,
}

#[async_trait]
impl Projector for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    async fn apply(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        if event.event_type == "Poison" {
            *self.attempts_on_poison.lock().unwrap() += 1;
            return Err("cannot digest poison".into());
        }
        self.applied
            .lock()
            .unwrap()
            .push((event.stream_id.to_string(), event.version));
        Ok(())
    }
}

fn event(stream: &str, version: u64, event_type: &str) -> RecordedEvent {
    RecordedEvent {
        global_position: version,
        stream_id: StreamId::from(stream),
        stream_type: "account".into(),
        version,
        event_id: uuid::Uuid::now_v7(),
        event_type: event_type.into(),
        schema_version: 1,
        payload: json!({"v": version}),
        metadata: Metadata::default(),
        recorded_at: chrono::Utc::now(),
    }
}

fn config(kafka: &Kafka, group: &str, topic: &str) -> ConsumerConfig {
    ConsumerConfig {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        },
        ..ConsumerConfig::new(&kafka.bootstrap, group, vec![topic.to_owned()])
    }
}

async fn next(c: &KafkaProjectionConsumer) -> Handled {
    tokio::time::timeout(PATIENCE, c.next())
        .await
        .expect("a message within PATIENCE")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn applies_in_order_absorbs_duplicates_and_resumes_after_committed_offsets() {
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 1).await;
    let publisher = kafka.publisher();
    let batch: Vec<_> = (1..=3).map(|v| event("s1", v, "Deposited")).collect();
    assert!(publisher.publish(&batch).await.iter().all(Result::is_ok));
    // A republished batch (a poller or relay restarted before its mark).
    assert!(publisher.publish(&batch).await.iter().all(Result::is_ok));

    let group = common::unique("g");
    let projector = Arc::new(Recorder::default());
    let c = KafkaProjectionConsumer::new(
        config(&kafka, &group, &topic),
        projector.clone(),
        Arc::new(InMemoryDedup::new()),
    )
    .unwrap();
    let mut handled = Vec::new();
    for _ in 0..6 {
        handled.push(next(&c).await);
    }
    assert_eq!(handled.iter().filter(|h| **h == Handled::Applied).count(), 3);
    assert_eq!(handled.iter().filter(|h| **h == Handled::Duplicate).count(), 3);
    assert_eq!(
        *projector.applied.lock().unwrap(),
        vec![("s1".into(), 1), ("s1".into(), 2), ("s1".into(), 3)]
    );
    c.commit().await.unwrap();
    drop(c);

    // A new member of the group, with an empty dedup store, starts after
    // the committed offsets: it sees only what is new.
    assert!(publisher
        .publish(&[event("s1", 4, "Deposited")])
        .await
        .iter()
        .all(Result::is_ok));
    let projector2 = Arc::new(Recorder::default());
    let c2 = KafkaProjectionConsumer::new(
        config(&kafka, &group, &topic),
        projector2.clone(),
        Arc::new(InMemoryDedup::new()),
    )
    .unwrap();
    assert_eq!(next(&c2).await, Handled::Applied);
    assert_eq!(*projector2.applied.lock().unwrap(), vec![("s1".into(), 4)]);
}

/// A dedup store whose first lookups or records fail (a database blip).
struct FlakyDedup {
    failures_left: Mutex<u32>,
    record_failures_left: Mutex<u32>,
    inner: InMemoryDedup,
}

fn take_failure(left: &Mutex<u32>) -> bool {
    let mut left = left.lock().unwrap();
    let failing = *left > 0;
    *left = left.saturating_sub(1);
    failing
}

#[async_trait]
impl DedupStore for FlakyDedup {
    async fn last_version(&self, stream: &StreamId) -> Result<Option<u64>, BoxError> {
        if take_failure(&self.failures_left) {
            return Err("dedup store unreachable".into());
        }
        self.inner.last_version(stream).await
    }
    async fn record(&self, stream: &StreamId, version: u64) -> Result<(), BoxError> {
        if take_failure(&self.record_failures_left) {
            return Err("dedup store unreachable".into());
        }
        self.inner.record(stream, version).await
    }
}

/// A message whose handling failed is consumed again by the next call,
/// not passed over: the caller may retry after an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_that_failed_is_consumed_again_by_the_next_call() {
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 1).await;
    let batch: Vec<_> = (1..=2).map(|v| event("f1", v, "Deposited")).collect();
    assert!(kafka.publisher().publish(&batch).await.iter().all(Result::is_ok));
    let projector = Arc::new(Recorder::default());
    let c = KafkaProjectionConsumer::new(
        config(&kafka, &common::unique("g"), &topic),
        projector.clone(),
        Arc::new(FlakyDedup {
            failures_left: Mutex::new(1),
            record_failures_left: Mutex::new(0),
            inner: InMemoryDedup::new(),
        }),
    )
    .unwrap();
    let failed = tokio::time::timeout(PATIENCE, c.next())
        .await
        .expect("a message within PATIENCE");
    assert!(matches!(failed, Err(es_kafka::ConsumerError::Dedup(_))), "{failed:?}");
    assert_eq!(next(&c).await, Handled::Applied);
    assert_eq!(next(&c).await, Handled::Applied);
    assert_eq!(
        *projector.applied.lock().unwrap(),
        vec![("f1".into(), 1), ("f1".into(), 2)],
        "version 1 is applied after the failure, before version 2"
    );
}

/// Recording the handled version fails after the projector applied the
/// event: the record is retried, so the event is not consumed and applied
/// a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_record_after_an_apply_is_retried_not_applied_again() {
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 1).await;
    let batch: Vec<_> = (1..=2).map(|v| event("r1", v, "Deposited")).collect();
    assert!(kafka.publisher().publish(&batch).await.iter().all(Result::is_ok));
    let projector = Arc::new(Recorder::default());
    let c = KafkaProjectionConsumer::new(
        config(&kafka, &common::unique("g"), &topic),
        projector.clone(),
        Arc::new(FlakyDedup {
            failures_left: Mutex::new(0),
            record_failures_left: Mutex::new(2),
            inner: InMemoryDedup::new(),
        }),
    )
    .unwrap();
    assert_eq!(next(&c).await, Handled::Applied);
    assert_eq!(next(&c).await, Handled::Applied);
    assert_eq!(
        *projector.applied.lock().unwrap(),
        vec![("r1".into(), 1), ("r1".into(), 2)],
        "each version applied once"
    );
}

/// A message of a stream whose value does not decode, but whose key and
/// version header say where it belongs: dead-lettered, and the stream's
/// later versions are applied, not held back as early for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_undecodable_message_does_not_hold_its_stream_back() {
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 1).await;
    let cfg = config(&kafka, &common::unique("g"), &topic);
    kafka.create_topic(&cfg.dead_letter_topic, 1).await;
    let publisher = kafka.publisher();
    assert!(publisher
        .publish(&[event("u", 1, "Deposited")])
        .await
        .iter()
        .all(Result::is_ok));
    publisher
        .producer()
        .send(
            FutureRecord::to(&topic).key("u").payload("not json").headers(
                rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                    key: headers::STREAM_VERSION,
                    value: Some("2"),
                }),
            ),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(publisher
        .publish(&[event("u", 3, "Deposited")])
        .await
        .iter()
        .all(Result::is_ok));
    let projector = Arc::new(Recorder::default());
    let c = KafkaProjectionConsumer::new(cfg, projector.clone(), Arc::new(InMemoryDedup::new())).unwrap();
    let mut handled = Vec::new();
    for _ in 0..3 {
        handled.push(next(&c).await);
    }
    assert_eq!(handled, vec![Handled::Applied, Handled::DeadLettered, Handled::Applied]);
    assert_eq!(
        *projector.applied.lock().unwrap(),
        vec![("u".into(), 1), ("u".into(), 3)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_ahead_of_a_missing_version_waits_for_the_republication() {
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 1).await;
    let publisher = kafka.publisher();
    // v2 was lost the first time; the publisher republishes from v2.
    let order = [
        event("s", 1, "D"),
        event("s", 3, "D"),
        event("s", 2, "D"),
        event("s", 3, "D"),
    ];
    assert!(publisher.publish(&order).await.iter().all(Result::is_ok));
    let projector = Arc::new(Recorder::default());
    let c = KafkaProjectionConsumer::new(
        config(&kafka, &common::unique("g"), &topic),
        projector.clone(),
        Arc::new(InMemoryDedup::new()),
    )
    .unwrap();
    let mut handled = Vec::new();
    for _ in 0..4 {
        handled.push(next(&c).await);
    }
    assert_eq!(
        handled,
        vec![Handled::Applied, Handled::Early, Handled::Applied, Handled::Applied]
    );
    assert_eq!(
        *projector.applied.lock().unwrap(),
        vec![("s".into(), 1), ("s".into(), 2), ("s".into(), 3)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_events_go_to_the_dead_letter_topic_with_the_error_and_consumption_moves_on() {
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 1).await;
    let group = common::unique("g");
    let cfg = config(&kafka, &group, &topic);
    kafka.create_topic(&cfg.dead_letter_topic, 1).await;
    let publisher = kafka.publisher();
    let events = [
        event("s", 1, "Deposited"),
        event("s", 2, "Poison"),
        event("s", 3, "Deposited"),
    ];
    assert!(publisher.publish(&events).await.iter().all(Result::is_ok));
    // And a message that is not an envelope at all.
    publisher
        .producer()
        .send(
            FutureRecord::to(&topic).key("junk").payload("not json"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let projector = Arc::new(Recorder::default());
    let c = KafkaProjectionConsumer::new(cfg.clone(), projector.clone(), Arc::new(InMemoryDedup::new())).unwrap();
    let mut handled = Vec::new();
    for _ in 0..4 {
        handled.push(next(&c).await);
    }
    assert_eq!(
        handled,
        vec![
            Handled::Applied,
            Handled::DeadLettered,
            Handled::Applied,
            Handled::DeadLettered
        ]
    );
    assert_eq!(*projector.attempts_on_poison.lock().unwrap(), 3);
    assert_eq!(
        *projector.applied.lock().unwrap(),
        vec![("s".into(), 1), ("s".into(), 3)]
    );

    let dead: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("group.id", common::unique("dlt"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    dead.subscribe(&[&cfg.dead_letter_topic]).unwrap();
    let mut letters = Vec::new();
    let deadline = std::time::Instant::now() + PATIENCE;
    while letters.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "dead letters not found");
        if let Some(m) = dead.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            let h = m.headers().unwrap();
            letters.push((
                header_str(h, headers::EVENT_TYPE),
                header_str(h, headers::ERROR),
                header_str(h, headers::ATTEMPTS),
            ));
        }
    }
    assert_eq!(
        letters[0],
        (
            Some("Poison".into()),
            Some("cannot digest poison".into()),
            Some("3".into())
        )
    );
    assert_eq!(letters[1].0, None);
    assert!(
        letters[1].1.as_deref().unwrap().starts_with("undecodable envelope"),
        "{letters:?}"
    );
}

/// A member's settings, with a short session timeout when the cluster is
/// rdkafka's mock. Its group coordinator answers a follower whose SyncGroup
/// arrives after the leader's with INVALID_REQUEST (it completes the sync as
/// soon as the leader has handed out the assignments); that follower
/// rejoins, and the coordinator then waits `session.timeout.ms` minus one
/// second (44 s with the default 45 s) before it forms the next generation,
/// even when every member has already rejoined. The race is lost in most
/// runs on a busy machine, and two such waits in a row outlast PATIENCE.
/// A real broker waits only for the members, so it keeps the defaults.
fn group_member_config(kafka: &Kafka, group: &str, topic: &str) -> ConsumerConfig {
    let mut c = config(kafka, group, topic);
    if kafka.is_mock() {
        c.extra.insert("session.timeout.ms".into(), "6000".into());
        c.extra.insert("heartbeat.interval.ms".into(), "500".into());
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_of_one_group_split_the_partitions() {
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 4).await;
    let group = common::unique("g");
    let projector = Arc::new(Recorder::default());
    // One store for the group, as a persistent one would be: a partition
    // moving to the other member after a rebalance, with offsets not yet
    // committed, is not applied twice.
    let dedup = Arc::new(InMemoryDedup::new());
    let make = || {
        Arc::new(
            KafkaProjectionConsumer::new(
                group_member_config(&kafka, &group, &topic),
                projector.clone(),
                dedup.clone(),
            )
            .unwrap(),
        )
    };
    let (a, b) = (make(), make());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let spawn = |c: Arc<KafkaProjectionConsumer>| {
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            c.run(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        })
    };
    let (ta, tb) = (spawn(a.clone()), spawn(b.clone()));
    common::eventually("both members to own partitions", || async {
        let (pa, pb) = (a.assignment().unwrap(), b.assignment().unwrap());
        (!pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 4).then_some(())
    })
    .await;
    let events: Vec<_> = (0..40).map(|i| event(&format!("s{i}"), 1, "Deposited")).collect();
    assert!(kafka.publisher().publish(&events).await.iter().all(Result::is_ok));
    common::eventually("all events applied", || async {
        (projector.applied.lock().unwrap().len() >= 40).then_some(())
    })
    .await;
    stop_tx.send(true).unwrap();
    ta.await.unwrap().unwrap();
    tb.await.unwrap().unwrap();
    // Raw applies, not a de-duplicated view: a duplicate or a loss fails.
    let applied = projector.applied.lock().unwrap().clone();
    assert_eq!(applied.len(), 40, "each event applied exactly once: {applied:?}");
    let distinct: std::collections::BTreeSet<_> = applied.into_iter().collect();
    let expected: std::collections::BTreeSet<_> = (0..40).map(|i| (format!("s{i}"), 1)).collect();
    assert_eq!(distinct, expected, "every event applied");
}
