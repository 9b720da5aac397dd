//! A projection consumer that crashes after applying events but before
//! committing their offsets: the group delivers them again, and the
//! de-duplication kept next to the read model makes each event applied
//! exactly once.
//!
//! A crash has to be a real one: dropping a `KafkaProjectionConsumer`
//! closes the librdkafka consumer, and closing commits the stored offsets.
//! So the first consumer runs in a child process (this test binary again,
//! running only [`child_consumer`]) that is killed with SIGKILL while its
//! projector is blocked.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{Kafka, PATIENCE};
use es_core::{BoxError, Metadata, Projector, RecordedEvent, StreamId};
use es_kafka::{ConsumerConfig, DedupStore, Handled, KafkaProjectionConsumer};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Set (to the child's settings) only in the child process.
const CHILD_ENV: &str = "ES_KAFKA_REDELIVERY_CHILD";
/// Printed by the child once its projector is blocked.
const BLOCKED: &str = "es-kafka-redelivery-child: blocked";

/// A read model in PostgreSQL: every apply is a row (no unique key, so a
/// second apply of an event is a second row), and the de-duplication
/// store next to it.
struct ReadModel {
    pool: PgPool,
    schema: String,
    /// In the child: applies this many events, then blocks forever.
    block_after: Option<usize>,
    applied_here: AtomicUsize,
}

impl ReadModel {
    async fn open(schema: &str, block_after: Option<usize>) -> Arc<Self> {
        common::ensure_database().await;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&common::database_url())
            .await
            .unwrap();
        Arc::new(Self {
            pool,
            schema: schema.to_owned(),
            block_after,
            applied_here: AtomicUsize::new(0),
        })
    }

    async fn create(&self) {
        let s = &self.schema;
        for ddl in [
            format!("CREATE SCHEMA {s}"),
            format!(
                "CREATE TABLE {s}.applied (n bigserial PRIMARY KEY, stream_id text NOT NULL, version bigint NOT NULL)"
            ),
            format!("CREATE TABLE {s}.handled (stream_id text PRIMARY KEY, version bigint NOT NULL)"),
        ] {
            sqlx::query(&ddl).execute(&self.pool).await.unwrap();
        }
    }

    /// Every apply, in order.
    async fn applies(&self) -> Vec<(String, i64)> {
        sqlx::query_as(&format!(
            "SELECT stream_id, version FROM {}.applied ORDER BY n",
            self.schema
        ))
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    async fn drop_schema(&self) {
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&self.pool)
            .await
            .unwrap();
    }
}

#[async_trait]
impl Projector for ReadModel {
    fn name(&self) -> &str {
        "redelivery"
    }

    async fn apply(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        if self.block_after == Some(self.applied_here.load(Ordering::SeqCst)) {
            // Everything before this event was applied and recorded, and
            // its offset stored; nothing was committed (commit interval of
            // an hour). Tell the parent, then hang until killed.
            println!("{BLOCKED}");
            std::future::pending::<()>().await;
        }
        sqlx::query(&format!(
            "INSERT INTO {}.applied (stream_id, version) VALUES ($1, $2)",
            self.schema
        ))
        .bind(event.stream_id.as_str())
        .bind(event.version as i64)
        .execute(&self.pool)
        .await?;
        self.applied_here.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait]
impl DedupStore for ReadModel {
    async fn last_version(&self, stream: &StreamId) -> Result<Option<u64>, BoxError> {
        let v: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT version FROM {}.handled WHERE stream_id = $1",
            self.schema
        ))
        .bind(stream.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(v.map(|v| v as u64))
    }

    async fn record(&self, stream: &StreamId, version: u64) -> Result<(), BoxError> {
        sqlx::query(&format!(
            "INSERT INTO {}.handled (stream_id, version) VALUES ($1, $2) \
             ON CONFLICT (stream_id) DO UPDATE SET version = GREATEST({0}.handled.version, excluded.version)",
            self.schema
        ))
        .bind(stream.as_str())
        .bind(version as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// What the child needs, passed in `CHILD_ENV` as `bootstrap|group|topic|schema|n`.
struct ChildArgs {
    bootstrap: String,
    group: String,
    topic: String,
    schema: String,
    block_after: usize,
}

impl ChildArgs {
    fn encode(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}",
            self.bootstrap, self.group, self.topic, self.schema, self.block_after
        )
    }

    fn decode(s: &str) -> Self {
        let parts: Vec<&str> = s.split('|').collect();
        assert_eq!(parts.len(), 5, "{CHILD_ENV}={s}");
        Self {
            bootstrap: parts[0].into(),
            group: parts[1].into(),
            topic: parts[2].into(),
            schema: parts[3].into(),
            block_after: parts[4].parse().unwrap(),
        }
    }
}

/// Consumer settings of both processes. The session timeout bounds how long
/// the group waits for the killed member before handing its partitions on.
fn config(bootstrap: &str, group: &str, topic: &str, commit_interval: Duration) -> ConsumerConfig {
    ConsumerConfig {
        commit_interval,
        extra: [("session.timeout.ms".to_owned(), "10000".to_owned())].into(),
        ..ConsumerConfig::new(bootstrap, group, vec![topic.to_owned()])
    }
}

fn event(stream: &str, version: u64) -> RecordedEvent {
    RecordedEvent {
        global_position: version,
        stream_id: StreamId::from(stream),
        stream_type: "account".into(),
        version,
        event_id: uuid::Uuid::now_v7(),
        event_type: "Deposited".into(),
        schema_version: 1,
        payload: serde_json::json!({"v": version}),
        metadata: Metadata::default(),
        recorded_at: chrono::Utc::now(),
    }
}

/// The first consumer, in its own process. Only does something when the
/// parent test started this binary with `CHILD_ENV` set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of a_consumer_killed_before_committing_gets_the_events_again_and_applies_each_once"]
async fn child_consumer() {
    let Ok(args) = std::env::var(CHILD_ENV) else {
        return;
    };
    let args = ChildArgs::decode(&args);
    let model = ReadModel::open(&args.schema, Some(args.block_after)).await;
    let consumer = KafkaProjectionConsumer::new(
        config(&args.bootstrap, &args.group, &args.topic, Duration::from_secs(3600)),
        model.clone(),
        model,
    )
    .unwrap();
    consumer.run(std::future::pending()).await.unwrap();
    unreachable!("the projector blocks until the process is killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_killed_before_committing_gets_the_events_again_and_applies_each_once() {
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 2).await;
    let schema = common::unique("redeliver");
    let model = ReadModel::open(&schema, None).await;
    model.create().await;

    // 3 streams x 4 versions over 2 partitions.
    let events: Vec<_> = (1..=4).flat_map(|v| ["r1", "r2", "r3"].map(|s| event(s, v))).collect();
    assert!(kafka.publisher().publish(&events).await.iter().all(Result::is_ok));
    let total = events.len();
    let block_after = 7;

    let group = common::unique("g");
    let args = ChildArgs {
        bootstrap: kafka.bootstrap.clone(),
        group: group.clone(),
        topic: topic.clone(),
        schema: schema.clone(),
        block_after,
    };
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "child_consumer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, args.encode())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(BLOCKED) {
                return;
            }
        }
        panic!("the child exited before blocking: {:?}", child.wait().await);
    })
    .await
    .expect("the child to apply its events and block");
    let applied_by_child = model.applies().await;
    assert_eq!(applied_by_child.len(), block_after);

    // The crash: no close, no commit.
    child.kill().await.unwrap();

    // A new member of the same group starts where the group's committed
    // offsets are (none): every event comes again.
    let consumer = KafkaProjectionConsumer::new(
        config(&kafka.bootstrap, &group, &topic, Duration::from_millis(500)),
        model.clone(),
        model.clone(),
    )
    .unwrap();
    let mut handled = Vec::new();
    for _ in 0..total {
        let h = tokio::time::timeout(PATIENCE, consumer.next())
            .await
            .expect("a redelivered or new event within PATIENCE")
            .unwrap();
        handled.push(h);
    }
    let count = |what: Handled| handled.iter().filter(|h| **h == what).count();
    assert_eq!(
        (count(Handled::Duplicate), count(Handled::Applied)),
        (block_after, total - block_after),
        "the child's events were redelivered and skipped: {handled:?}"
    );

    // Raw applies across both processes: each event exactly once, each
    // stream in version order.
    let applies = model.applies().await;
    assert_eq!(applies.len(), total, "{applies:?}");
    assert_eq!(&applies[..block_after], &applied_by_child[..]);
    let distinct: BTreeSet<_> = applies.iter().cloned().collect();
    assert_eq!(distinct.len(), total, "an event was applied twice: {applies:?}");
    for stream in ["r1", "r2", "r3"] {
        let versions: Vec<i64> = applies.iter().filter(|(s, _)| s == stream).map(|(_, v)| *v).collect();
        assert_eq!(versions, vec![1, 2, 3, 4], "stream {stream}");
    }
    drop(consumer);
    model.drop_schema().await;
}
