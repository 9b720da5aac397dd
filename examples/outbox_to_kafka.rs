//! Outbox to Kafka: es-postgres writes each event to an outbox table in the
//! append's own statement; es-kafka's `OutboxPoller` publishes the rows
//! with an idempotent producer and marks them only after Kafka acked, so
//! every committed event reaches Kafka at least once, in stream order.
//!
//! Kafka here is rdkafka's in-process mock cluster (set
//! `KAFKA_BOOTSTRAP_SERVERS` to use a real broker). Needs PostgreSQL:
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! everything goes in the schema `outbox_example`.
//!
//! Run with `cargo run -p es-examples --example outbox_to_kafka`.

use std::sync::Arc;
use std::time::Duration;

use es_core::Repository;
use es_examples::shopping_cart::{Cart, CartCommand};
use es_kafka::rdkafka::config::ClientConfig;
use es_kafka::rdkafka::consumer::{Consumer, StreamConsumer};
use es_kafka::rdkafka::mocking::MockCluster;
use es_kafka::rdkafka::Message;
use es_kafka::{KafkaPublisher, OutboxConfig, OutboxPoller, PublisherConfig, TopicNaming};
use es_postgres::{EventStoreConfig, PostgresEventStore};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let config = EventStoreConfig {
        outbox: true,
        ..EventStoreConfig::with_schema("outbox_example")
    };
    let store = PostgresEventStore::connect(&url, config).await?;
    store.migrate().await?;

    // A topic per run, so a second run reads only its own messages.
    let run = uuid::Uuid::now_v7().simple().to_string();
    let topics = TopicNaming::new(format!("example-{run}.{{stream_type}}.events"));
    let topic = topics.topic_for("cart");
    // Kafka: a real broker, or the mock cluster (kept alive until the end).
    let mock;
    let bootstrap = match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        Ok(servers) if !servers.is_empty() => servers,
        _ => {
            mock = MockCluster::new(1)?;
            mock.create_topic(&topic, 2, 1)?;
            mock.bootstrap_servers()
        }
    };
    let publisher = Arc::new(KafkaPublisher::new(&PublisherConfig {
        bootstrap_servers: bootstrap.clone(),
        topics,
        ..PublisherConfig::default()
    })?);
    let poller = OutboxPoller::new(
        store.pool().clone(),
        publisher,
        OutboxConfig::with_schema("outbox_example"),
    )?;
    poller.migrate().await?;

    // Commands append events and their outbox rows in one statement.
    let carts = Repository::<Cart>::builder(Arc::new(store.clone())).build();
    let cart = format!("cart-{run}");
    carts
        .execute(
            &cart,
            CartCommand::Add {
                sku: "apple".into(),
                quantity: 2,
            },
        )
        .await?;
    carts.execute(&cart, CartCommand::CheckOut).await?;

    // One round of the poller (a server runs `poller.run(shutdown)`).
    let mut published = 0;
    for _ in 0..50 {
        published += poller.poll_once().await?.published;
        if published >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("published {published} events to {topic}");

    // Read them back: key = stream id, value = the event envelope as JSON.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", format!("example-{run}"))
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[&topic])?;
    let mut types = Vec::new();
    while types.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await??;
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        let value: serde_json::Value = serde_json::from_slice(message.payload().unwrap_or_default())?;
        println!("{key}: {} v{}", value["event_type"], value["version"]);
        assert_eq!(key, cart);
        types.push(value["event_type"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(types, ["ItemAdded", "CheckedOut"], "in stream order");
    store.shutdown().await;
    Ok(())
}
