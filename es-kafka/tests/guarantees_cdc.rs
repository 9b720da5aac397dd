//! The built-in CDC relay's slot position, read from `pg_replication_slots`
//! on the real PostgreSQL: it reaches the last relayed commit, and it never
//! passes a transaction Kafka acknowledged only in part. Every test uses
//! its own slot and drops it, also when it fails.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{append_n, assert_complete_in_order, relay, versions_by_stream, with_slot, Kafka, PATIENCE};
use es_core::{EventStore, ExpectedVersion, NewEvent, StreamId};
use es_kafka::{CdcRelay, KafkaPublisher};
use es_postgres::PostgresEventStore;
use futures::FutureExt;
use serde_json::json;
use sqlx::PgPool;

/// An LSN (`X/Y`) as a number, to compare positions.
fn lsn(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').unwrap_or_else(|| panic!("not an lsn: {text}"));
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// `confirmed_flush_lsn` of the slot, from `pg_replication_slots`.
async fn confirmed(pool: &PgPool, slot: &str) -> u64 {
    let text: Option<String> =
        sqlx::query_scalar("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1")
            .bind(slot)
            .fetch_one(pool)
            .await
            .unwrap();
    lsn(&text.expect("a logical slot has a confirmed position"))
}

/// One transaction still decodable from the slot that inserted events of
/// this test's schema: its commit LSN and the `(stream, version)` inserted.
#[derive(Debug, Clone, PartialEq)]
struct Pending {
    commit: u64,
    events: Vec<(String, u64)>,
}

/// Peeks the slot (consumes nothing) for this schema's transactions, in
/// commit order. Other tests' transactions in the same database are
/// decoded too and left out.
async fn pending(store: &PostgresEventStore, slot: &str) -> Vec<Pending> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT lsn::text, data FROM pg_logical_slot_peek_changes($1, NULL, NULL, 'skip-empty-xacts', '1')",
    )
    .bind(slot)
    .fetch_all(store.pool())
    .await
    .unwrap();
    let prefix = format!("table {}.events: INSERT: ", store.schema());
    let field = |line: &str, name: &str, end: char| -> String {
        let start = line.find(name).unwrap_or_else(|| panic!("{name} in {line}")) + name.len();
        line[start..].split(end).next().unwrap().to_owned()
    };
    let (mut out, mut open) = (Vec::new(), Vec::new());
    for (at, data) in rows {
        if data.starts_with("BEGIN") {
            open.clear();
        } else if data.starts_with(&prefix) {
            let stream = field(&data, " stream_id[text]:'", '\'');
            let version = field(&data, " version[bigint]:", ' ').parse().unwrap();
            open.push((stream, version));
        } else if data.starts_with("COMMIT") && !open.is_empty() {
            out.push(Pending {
                commit: lsn(&at),
                events: std::mem::take(&mut open),
            });
        }
    }
    out
}

/// Relay rounds until `n` events of this schema were acknowledged.
async fn relay_until_published(r: &CdcRelay, n: usize) {
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut published = 0;
    while published < n {
        assert!(std::time::Instant::now() < deadline, "{published} of {n} relayed");
        published += r.relay_once().await.unwrap().published;
    }
}

/// A publisher whose producer refuses messages over 8000 bytes: a
/// message-specific failure.
fn limited_publisher(kafka: &Kafka) -> Arc<KafkaPublisher> {
    let mut config = kafka.publisher_config();
    config.extra.insert("message.max.bytes".into(), "8000".into());
    Arc::new(KafkaPublisher::new(&config).unwrap())
}

fn small(i: u32) -> NewEvent {
    NewEvent::new("Deposited", json!({ "i": i }))
}

fn oversized() -> NewEvent {
    NewEvent::new("Deposited", json!({ "memo": "x".repeat(20_000) }))
}

/// Appends stream `q` in one transaction whose middle event
/// [`limited_publisher`] refuses: v1 is acknowledged before it, v3 not.
async fn append_refused_in_the_middle(store: &PostgresEventStore) {
    store
        .append(
            "account",
            &StreamId::from("q"),
            ExpectedVersion::NoStream,
            vec![small(1), oversized(), small(3)],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_slot_advances_to_at_least_the_last_relayed_commit() {
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 3).await;
    let store = common::store(false).await;
    let (store, kafka) = (&store, &kafka);
    with_slot(store, kafka, |slot| async move {
        append_n(store, "account", "c1", 3).await;
        append_n(store, "account", "c2", 2).await;
        let before = confirmed(store.pool(), &slot).await;
        let waiting = pending(store, &slot).await;
        assert_eq!(waiting.len(), 5, "{waiting:?}");
        let last = waiting.last().unwrap().commit;
        assert!(before < last, "the slot starts before the appends");

        let r = relay(store, kafka.publisher(), &slot);
        relay_until_published(&r, 5).await;
        let after = confirmed(store.pool(), &slot).await;
        assert!(
            after >= last,
            "once every event is acknowledged the slot is at or past the last commit: {after:X} < {last:X}"
        );
        assert_eq!(pending(store, &slot).await, vec![], "nothing is decoded again");
        let reads = kafka.read_topic(&topic).await;
        assert_eq!(
            versions_by_stream(&reads),
            BTreeMap::from([("c1".into(), vec![1, 2, 3]), ("c2".into(), vec![1, 2])])
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_slot_never_passes_a_transaction_acknowledged_in_part() {
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 3).await;
    let store = common::store(false).await;
    let (store, kafka) = (&store, &kafka);
    with_slot(store, kafka, |slot| async move {
        let before = confirmed(store.pool(), &slot).await;
        // Two transactions Kafka will acknowledge whole ...
        append_n(store, "account", "a", 2).await;
        // ... one with an event Kafka refuses in the middle: q v1 is
        // acknowledged before it ...
        append_refused_in_the_middle(store).await;
        // ... and one behind it that would be acknowledged whole.
        append_n(store, "account", "c", 1).await;

        let waiting = pending(store, &slot).await;
        assert_eq!(waiting.len(), 4, "{waiting:?}");
        let (whole, partial, behind) = (waiting[1].commit, waiting[2].commit, waiting[3].commit);
        assert!(before < whole);

        let r = relay(store, limited_publisher(kafka), &slot);
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "the oversized event was never refused"
            );
            match r.relay_once().await {
                Err(_) => break,
                Ok(o) => assert!(o.transactions > 0, "everything relayed, the oversized event too: {o:?}"),
            }
        }
        let held = confirmed(store.pool(), &slot).await;
        assert!(
            held >= whole,
            "the slot moves past the fully acknowledged transactions: {held:X} < {whole:X}"
        );
        assert!(
            held < partial,
            "the slot stays before the partly acknowledged transaction: {held:X} >= {partial:X}"
        );
        assert_eq!(
            pending(store, &slot).await.iter().map(|p| p.commit).collect::<Vec<_>>(),
            vec![partial, behind],
            "the partly acknowledged transaction and the one behind it are decoded again"
        );
        let acked: Vec<(String, u64)> = kafka
            .read_topic(&topic)
            .await
            .iter()
            .map(|r| (r.key.clone(), r.event.version))
            .collect();
        assert!(
            acked.contains(&("q".to_owned(), 1)),
            "part of the transaction was acknowledged: {acked:?}"
        );
        assert!(!acked.contains(&("q".to_owned(), 2)), "{acked:?}");

        // Recovered (a producer with the default limit): the rest goes out
        // and the slot reaches the last commit; per stream, the topic holds
        // every version in order (the acknowledged part again: at least once).
        let fixed = relay(store, kafka.publisher(), &slot);
        relay_until_published(&fixed, 4).await;
        let after = confirmed(store.pool(), &slot).await;
        assert!(after >= behind, "{after:X} < {behind:X}");
        let reads = kafka.read_topic(&topic).await;
        assert_complete_in_order(
            &reads,
            &BTreeMap::from([("a".into(), 2), ("c".into(), 1), ("q".into(), 3)]),
        );
        let big = reads.iter().find(|r| r.key == "q" && r.event.version == 2).unwrap();
        assert_eq!(big.event.payload, json!({ "memo": "x".repeat(20_000) }));
    })
    .await;
}

/// A round Kafka acknowledges in part: the events of the transactions
/// acknowledged whole count as published (the slot moved past them and
/// never reads them again), those of the transaction acknowledged in part
/// do not (they are published again each round), and the rounds stuck on
/// the refused event turn the record unhealthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_round_acknowledged_in_part_counts_what_the_slot_passed() {
    let kafka = Kafka::start();
    let _topic = kafka.topic("account", 3).await;
    let store = common::store(false).await;
    let (store, kafka) = (&store, &kafka);
    with_slot(store, kafka, |slot| async move {
        append_n(store, "account", "a", 2).await;
        append_refused_in_the_middle(store).await;
        let r = CdcRelay::new(
            store.pool().clone(),
            limited_publisher(kafka),
            es_kafka::CdcConfig {
                unhealthy_after: 2,
                backoff: es_core::RetryPolicy {
                    initial_delay: std::time::Duration::from_millis(10),
                    max_delay: std::time::Duration::from_millis(50),
                    ..es_kafka::CdcConfig::new(store.schema(), &slot).backoff
                },
                ..es_kafka::CdcConfig::new(store.schema(), &slot)
            },
        )
        .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = r.clone();
        let task = tokio::spawn(async move {
            running
                .run(async {
                    let _ = stopped.await;
                })
                .await;
        });
        let deadline = std::time::Instant::now() + PATIENCE;
        let stuck = loop {
            let h = r.health();
            if !h.healthy && h.failed_rounds_total >= 3 {
                break h;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never stuck on the refused event: {h:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let _ = stop.send(());
        task.await.unwrap();
        assert_eq!(
            stuck.published_total, 2,
            "a's two events count once, q's acknowledged first event does not: {stuck:?}"
        );
        assert!(stuck.last_publish_at.is_some(), "{stuck:?}");
        assert!(
            stuck
                .last_error
                .as_deref()
                .is_some_and(|e| e.to_lowercase().contains("too large")),
            "{stuck:?}"
        );
    })
    .await;
}

/// The relay's database idle while another database of the cluster
/// writes: the slot still moves along (it would keep all that WAL
/// otherwise), and what is appended afterwards is relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_slot_moves_along_while_other_databases_write() {
    common::ensure_database().await;
    let shared = PgPool::connect(&common::database_url()).await.unwrap();
    let database = common::unique("es_kafka_idle");
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(&shared)
        .await
        .unwrap();
    let url = match common::database_url().rsplit_once('/') {
        Some((server, rest)) => match rest.split_once('?') {
            Some((_, query)) => format!("{server}/{database}?{query}"),
            None => format!("{server}/{database}"),
        },
        None => panic!("no database in the test URL"),
    };
    // The database is dropped whatever happens (as the slot is).
    let outcome = std::panic::AssertUnwindSafe(idle_database_scenario(&url, &shared))
        .catch_unwind()
        .await;
    sqlx::query(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .execute(&shared)
        .await
        .unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn idle_database_scenario(url: &str, shared: &PgPool) {
    let store = PostgresEventStore::connect(url, es_postgres::EventStoreConfig::with_schema("bank".to_owned()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 1).await;
    let (store_ref, kafka_ref, shared_ref) = (&store, &kafka, shared);
    with_slot(store_ref, kafka_ref, |slot| async move {
        let r = relay(store_ref, kafka_ref.publisher(), &slot);
        assert_eq!(r.relay_once().await.unwrap().transactions, 0);
        let before = confirmed(store_ref.pool(), &slot).await;
        // Another database writes (and flushes).
        let scratch = common::unique("idle_wal");
        for statement in [
            format!("CREATE TABLE {scratch} (x int)"),
            format!("INSERT INTO {scratch} SELECT generate_series(1, 1000)"),
            format!("DROP TABLE {scratch}"),
        ] {
            sqlx::query(&statement).execute(shared_ref).await.unwrap();
        }
        let written: String = sqlx::query_scalar("SELECT pg_current_wal_flush_lsn()::text")
            .fetch_one(shared_ref)
            .await
            .unwrap();
        let idle = r.relay_once().await.unwrap();
        assert_eq!(idle.transactions, 0, "nothing of this database to relay");
        let after = confirmed(store_ref.pool(), &slot).await;
        assert!(
            after >= lsn(&written) && after > before,
            "the slot moved past the other database's WAL: {before:X} -> {after:X}, written up to {written}"
        );
        // Appended after the move: relayed.
        append_n(store_ref, "account", "late", 2).await;
        relay_until_published(&r, 2).await;
        let reads = kafka_ref.read_topic(&topic).await;
        assert_eq!(
            versions_by_stream(&reads),
            BTreeMap::from([("late".into(), vec![1, 2])])
        );
    })
    .await;
    store.pool().close().await;
}
