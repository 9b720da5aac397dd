//! Test support: PostgreSQL schemas per test (like es-postgres' tests) and
//! Kafka — rdkafka's in-process mock cluster, or a real broker when
//! `KAFKA_BOOTSTRAP_SERVERS` is set.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use es_core::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamId};
use es_kafka::message::{decode_envelope, header_str, headers};
use es_kafka::{KafkaPublisher, PublisherConfig, TopicNaming};
use es_postgres::{EventStoreConfig, PostgresEventStore};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{Offset, TopicPartitionList};
use sqlx::postgres::PgPoolOptions;

/// Upper bound on any wait in a test (a hang guard, not an assertion on
/// speed).
pub(crate) const PATIENCE: Duration = Duration::from_secs(90);

pub(crate) use es_postgres::testing::database_url;

pub(crate) async fn ensure_database() {
    es_postgres::testing::ensure_database().await.expect("test database");
}

pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
        .chars()
        .take(40)
        .collect()
}

/// A migrated store in a fresh schema.
pub(crate) async fn store(outbox: bool) -> PostgresEventStore {
    ensure_database().await;
    let config = EventStoreConfig {
        outbox,
        max_connections: 6,
        ..EventStoreConfig::with_schema(unique("k"))
    };
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&database_url())
        .await
        .expect("connect");
    let store = PostgresEventStore::with_pool(pool, config).expect("store");
    store.migrate().await.expect("migrate");
    store
}

/// Appends `n` events to `stream`, one append each.
pub(crate) async fn append_n(store: &PostgresEventStore, stream_type: &str, stream: &str, n: u64) {
    let id = StreamId::from(stream);
    for i in 0..n {
        let current = store.stream_version(&id).await.expect("version");
        let expected = if current == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(current)
        };
        store
            .append(
                stream_type,
                &id,
                expected,
                vec![NewEvent::new("Deposited", serde_json::json!({"i": i}))],
            )
            .await
            .expect("append");
    }
}

/// Kafka for one test.
pub(crate) struct Kafka {
    pub mock: Option<MockCluster<'static, DefaultProducerContext>>,
    pub bootstrap: String,
    /// Topic template unique to the test.
    pub topics: TopicNaming,
}

impl Kafka {
    pub(crate) fn start() -> Self {
        let prefix = unique("t").replace('_', "-");
        let topics = TopicNaming::new(format!("{prefix}.{{stream_type}}.events"));
        match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
            Ok(bootstrap) if !bootstrap.is_empty() => Self {
                mock: None,
                bootstrap,
                topics,
            },
            _ => {
                let mock = MockCluster::new(1).expect("mock cluster");
                let bootstrap = mock.bootstrap_servers();
                Self {
                    mock: Some(mock),
                    bootstrap,
                    topics,
                }
            }
        }
    }

    pub(crate) fn is_mock(&self) -> bool {
        self.mock.is_some()
    }

    pub(crate) async fn create_topic(&self, topic: &str, partitions: i32) {
        if let Some(mock) = &self.mock {
            mock.create_topic(topic, partitions, 1).expect("create topic");
        } else {
            let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                .set("bootstrap.servers", &self.bootstrap)
                .create()
                .expect("admin");
            let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
            let r = admin
                .create_topics([&t], &AdminOptions::new())
                .await
                .expect("create topics");
            for x in r {
                if let Err((name, e)) = x {
                    assert_eq!(e, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists, "create {name}");
                }
            }
        }
    }

    /// Creates the topic of `stream_type` and returns its name.
    pub(crate) async fn topic(&self, stream_type: &str, partitions: i32) -> String {
        let t = self.topics.topic_for(stream_type);
        self.create_topic(&t, partitions).await;
        t
    }

    pub(crate) fn publisher_config(&self) -> PublisherConfig {
        PublisherConfig {
            bootstrap_servers: self.bootstrap.clone(),
            client_id: "es-kafka-test".into(),
            topics: self.topics.clone(),
            message_timeout: Duration::from_secs(3),
            extra: BTreeMap::from([("reconnect.backoff.max.ms".to_owned(), "200".to_owned())]),
            ..PublisherConfig::default()
        }
    }

    pub(crate) fn publisher(&self) -> Arc<KafkaPublisher> {
        Arc::new(KafkaPublisher::new(&self.publisher_config()).expect("publisher"))
    }

    /// Everything in `topic` now (up to the high watermarks), in partition
    /// then offset order, without joining a consumer group.
    pub(crate) async fn read_topic(&self, topic: &str) -> Vec<Read> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader");
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let partitions: Vec<i32> = md.topics()[0]
            .partitions()
            .iter()
            .map(rdkafka::metadata::MetadataPartition::id)
            .collect();
        let mut high = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            let (_, h) = consumer
                .fetch_watermarks(topic, *p, Duration::from_secs(10))
                .expect("watermarks");
            high.insert(*p, h);
            tpl.add_partition_offset(topic, *p, Offset::Beginning).expect("tpl");
        }
        consumer.assign(&tpl).expect("assign");
        let total: i64 = high.values().sum();
        let mut out: Vec<Read> = Vec::new();
        let deadline = std::time::Instant::now() + PATIENCE;
        // Some brokers (tansu 0.6) report high watermarks that lag what a
        // fetch returns: after reaching them, keep reading until the topic
        // has been quiet for a moment.
        let mut quiet_since: Option<std::time::Instant> = None;
        loop {
            if (out.len() as i64) >= total {
                let since = *quiet_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= Duration::from_millis(500) {
                    break;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "read {} of {total} messages of {topic}",
                out.len()
            );
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    quiet_since = None;
                    let h = m.headers().expect("headers");
                    out.push(Read {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: String::from_utf8(m.key().expect("key").to_vec()).expect("utf8 key"),
                        event: decode_envelope(m.payload().expect("payload")).expect("envelope"),
                        event_id_header: header_str(h, headers::EVENT_ID),
                        version_header: header_str(h, headers::STREAM_VERSION),
                    });
                }
                Some(Err(e)) => panic!("read error: {e}"),
                None => tokio::task::yield_now().await,
            }
        }
        out.sort_by_key(|r| (r.partition, r.offset));
        out
    }
}

/// One message read back.
#[derive(Debug, Clone)]
pub(crate) struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub event: RecordedEvent,
    pub event_id_header: Option<String>,
    pub version_header: Option<String>,
}

/// Per stream, the versions in the order they appear on the topic.
pub(crate) fn versions_by_stream(reads: &[Read]) -> BTreeMap<String, Vec<u64>> {
    let mut m: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in reads {
        assert_eq!(r.key, r.event.stream_id.as_str(), "key is the stream id");
        m.entry(r.key.clone()).or_default().push(r.event.version);
    }
    m
}

/// Checks at-least-once in stream order: dropping repeats of versions
/// already seen, each stream reads 1..=n exactly.
pub(crate) fn assert_complete_in_order(reads: &[Read], expected: &BTreeMap<String, u64>) {
    let by_stream = versions_by_stream(reads);
    assert_eq!(
        by_stream.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "streams on the topic"
    );
    for (stream, versions) in by_stream {
        let mut firsts = Vec::new();
        for v in versions {
            if v > firsts.last().copied().unwrap_or(0) {
                firsts.push(v);
            } else {
                assert!(firsts.contains(&v), "{stream}: version {v} out of order");
            }
        }
        assert_eq!(firsts, (1..=expected[&stream]).collect::<Vec<_>>(), "stream {stream}");
    }
}

/// Runs `f` until it returns `Some`, yielding in between, at most PATIENCE.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(std::time::Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A relay of `store`'s events through `slot`.
pub(crate) fn relay(store: &PostgresEventStore, publisher: Arc<KafkaPublisher>, slot: &str) -> es_kafka::CdcRelay {
    es_kafka::CdcRelay::new(
        store.pool().clone(),
        publisher,
        es_kafka::CdcConfig::new(store.schema(), slot),
    )
    .expect("relay")
}

/// Runs `body` with a fresh slot of its own name and drops the slot
/// afterwards, even if `body` panics (slots belong to the whole cluster).
pub(crate) async fn with_slot<F, Fut>(store: &PostgresEventStore, kafka: &Kafka, body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    use futures::FutureExt;
    let slot = unique("es_kafka_test");
    assert!(relay(store, kafka.publisher(), &slot)
        .ensure_slot()
        .await
        .expect("slot"));
    let outcome = std::panic::AssertUnwindSafe(body(slot.clone())).catch_unwind().await;
    relay(store, kafka.publisher(), &slot)
        .drop_slot()
        .await
        .expect("drop slot");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
