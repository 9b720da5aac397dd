//! The server on all real backends at once: PostgreSQL (events, users),
//! Redis (state cache, de-duplication, rate limits, blacklist) and Kafka
//! (rdkafka's in-process mock cluster) with the outbox poller. Two server
//! instances share them, like two replicas behind a load balancer.

mod common;

use std::time::{Duration, Instant};

use banking_example::config::DataCaptureMethod;
use banking_example::{Backends, RunningServer};
use common::{pg, read, redis, Api};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use reqwest::StatusCode;
use serde_json::{json, Value};

const TOPIC: &str = "banking.account.events";

async fn start(config: &banking_example::AppConfig) -> RunningServer {
    let backends = Backends::from_config(config).await.unwrap();
    assert_eq!(
        (backends.names.store.as_str(), backends.names.dedup.as_str()),
        ("postgres", "redis")
    );
    banking_example::start(config.clone(), backends).await.unwrap()
}

/// One published event: (event id, version, event type).
type Published = (uuid::Uuid, u64, String);

/// How long the topic must stay silent, once every expected event has
/// arrived, before it counts as drained.
const QUIET: Duration = Duration::from_secs(3);

/// Drains the topic: reads every message of both partitions until at
/// least `expected` messages have arrived and then none for [`QUIET`]
/// (bounded overall). Returns those of `account`, in arrival order, and
/// how many messages of other keys there were.
fn drain_topic(bootstrap: &str, account: &str, expected: usize) -> (Vec<Published>, usize) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "full-stack-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let mut others = 0;
    let mut last = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline && (got.len() < expected || last.elapsed() < QUIET) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last = Instant::now();
                if m.key() != Some(account.as_bytes()) {
                    others += 1;
                    continue;
                }
                let envelope: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                got.push((
                    envelope["event_id"].as_str().unwrap().parse().unwrap(),
                    envelope["version"].as_u64().unwrap(),
                    envelope["event_type"].as_str().unwrap().to_owned(),
                ));
            }
            Some(Err(e)) => panic!("consuming {TOPIC}: {e}"),
            None => {}
        }
    }
    (got, others)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_postgres_redis_and_kafka() {
    if !redis::required().await {
        return;
    }
    let kafka = MockCluster::<DefaultProducerContext>::new(1).unwrap();
    kafka.create_topic(TOPIC, 2, 1).unwrap();
    let mut config = pg::config(&pg::schema()).await;
    config.redis_url = Some(redis::url());
    config.kafka_brokers = Some(kafka.bootstrap_servers());
    config.data_capture_method = DataCaptureMethod::OutboxPoller;
    let a = start(&config).await;
    let b = start(&config).await;

    let on_a = Api::new(&a, "full-a").await;
    let on_b = on_a.on(&b);
    let id = on_a.open("Grace", json!(100)).await;

    // An idempotent retry that lands on the other instance replays the
    // first answer (Redis de-duplication), and the money moves once.
    let path = format!("/accounts/{id}/deposit");
    let (s1, first) = read(on_a.post_keyed(&path, "dep-1", json!({"amount": 10})).await).await;
    let (s2, again) = read(on_b.post_keyed(&path, "dep-1", json!({"amount": 10})).await).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK), "{first} {again}");
    assert_eq!(first, again);
    assert_eq!(first["balance"].to_string(), "110.00");

    // Concurrent deposits through both instances: no lost update, even
    // though each instance caches the account (stale caches only cost
    // retries).
    let mut tasks = Vec::new();
    for i in 0..20 {
        let api = if i % 2 == 0 {
            on_a.as_client(&format!("c{i}"))
        } else {
            on_b.as_client(&format!("c{i}"))
        };
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            read(api.post(&path, json!({"amount": 1})).await).await
        }));
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (_, view) = read(on_b.get(&format!("/accounts/{id}/events?limit=1000")).await).await;
    assert_eq!(view["events"].as_array().unwrap().len(), 22);

    // Every event reached Kafka exactly once, in stream order: the topic
    // is drained, not read up to the expected count.
    let stored = server_events(&a, &id).await;
    assert_eq!(stored.len(), 22);
    let bootstrap = kafka.bootstrap_servers();
    let account = id.clone();
    let (published, others) = tokio::task::spawn_blocking(move || drain_topic(&bootstrap, &account, 22))
        .await
        .unwrap();
    assert_eq!(others, 0, "messages of accounts this test never touched");
    let mut ids: Vec<uuid::Uuid> = published.iter().map(|(e, _, _)| *e).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        published.len(),
        "an event was published twice: {published:?}"
    );
    assert_eq!(published, stored, "the topic differs from the stream");
    assert_eq!(published[0].2, "AccountCreated");

    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// The account's stream as stored: (event id, version, event type).
async fn server_events(server: &RunningServer, id: &str) -> Vec<Published> {
    let events = server
        .state
        .repo
        .store()
        .read_stream_batch(&id.into(), 1, 1000)
        .await
        .unwrap();
    events
        .into_iter()
        .map(|e| (e.event_id, e.version, e.event_type))
        .collect()
}
