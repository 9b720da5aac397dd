//! The server on all real backends at once: PostgreSQL (events, users),
//! Redis (state cache, de-duplication, rate limits, blacklist) and Kafka
//! (rdkafka's in-process mock cluster) with the outbox poller. Two server
//! instances share them, like two replicas behind a load balancer.

mod common;

use std::time::{Duration, Instant};

use banking_example::config::DataCaptureMethod;
use banking_example::{Backends, RunningServer};
use common::{pg, read, Api};
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

/// Every message of `account` in the topic, as (version, event type), once
/// `expected` of them have arrived.
fn read_topic(bootstrap: &str, account: &str, expected: usize) -> Vec<(u64, String)> {
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
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            if m.key() != Some(account.as_bytes()) {
                continue;
            }
            let envelope: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            got.push((
                envelope["version"].as_u64().unwrap(),
                envelope["event_type"].as_str().unwrap().to_owned(),
            ));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_postgres_redis_and_kafka() {
    let kafka = MockCluster::<DefaultProducerContext>::new(1).unwrap();
    kafka.create_topic(TOPIC, 2, 1).unwrap();
    let mut config = pg::config(&pg::schema()).await;
    config.redis_url = Some(std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()));
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
    let (_, view) = read(on_b.get(&format!("/accounts/{id}/events")).await).await;
    assert_eq!(view["events"].as_array().unwrap().len(), 22);

    // Every event reached Kafka, once, in stream order.
    let bootstrap = kafka.bootstrap_servers();
    let account = id.clone();
    let published = tokio::task::spawn_blocking(move || read_topic(&bootstrap, &account, 22))
        .await
        .unwrap();
    let versions: Vec<u64> = published.iter().map(|(v, _)| *v).collect();
    assert_eq!(versions, (1..=22).collect::<Vec<_>>(), "{published:?}");
    assert_eq!(published[0].1, "AccountCreated");

    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
