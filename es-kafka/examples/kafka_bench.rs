//! Publish throughput and commit-to-ack lag of both capture methods under
//! the standard bank workload (docs/bench/WORKLOAD.md, `--mix deposit`):
//! C workers each issue K deposits (read the version, append with
//! optimistic concurrency, retry on conflict) while the outbox poller or
//! the CDC relay publishes. Prints one JSON line, then verifies the topic
//! (every stored event present, each stream in version order; exit 1
//! otherwise).
//!
//! Kafka is rdkafka's in-process mock cluster unless
//! KAFKA_BOOTSTRAP_SERVERS names a broker.
//!
//! ```text
//! cargo run --release -p es-kafka --example kafka_bench -- --method outbox --accounts 1000 --concurrency 16 --ops-per-worker 500
//! cargo run --release -p es-kafka --example kafka_bench -- --method cdc --accounts 1000 --concurrency 16 --ops-per-worker 500
//! # a backlog of 40,000 events over 5 streams, drained, refilled and drained again
//! cargo run --release -p es-kafka --example kafka_bench -- --method outbox --backlog --refills 1 --accounts 5 --concurrency 5 --ops-per-worker 8000
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use es_core::{EventStore, ExpectedVersion, NewEvent, StoreError, StreamId};
use es_kafka::message::decode_envelope;
use es_kafka::{CdcConfig, CdcRelay, KafkaPublisher, OutboxConfig, OutboxPoller, PublisherConfig, TopicNaming};
use es_postgres::{EventStoreConfig, PostgresEventStore};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Method {
    Outbox,
    Cdc,
}

#[derive(Parser, Debug)]
struct Args {
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    #[arg(long, value_enum, default_value = "outbox")]
    method: Method,
    #[arg(long, default_value_t = 1000)]
    accounts: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, default_value_t = 500)]
    ops_per_worker: usize,
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Append everything first, then time publishing the backlog (the
    /// publish ceiling; lags then include the wait and are not reported).
    #[arg(long)]
    backlog: bool,
    /// With --backlog: after the first drain, append the same load again
    /// and time draining it, this many times (the table then holds the
    /// dead rows of the earlier cycles, as after an outage and its drain).
    #[arg(long, default_value_t = 0)]
    refills: usize,
}

enum Capture {
    Outbox(OutboxPoller),
    Cdc(CdcRelay),
}

impl Capture {
    /// One round; (transactions or rows claimed, published, lags).
    async fn round(&self) -> (usize, usize, Vec<Duration>) {
        match self {
            Capture::Outbox(p) => match p.poll_once().await {
                Ok(o) => (o.claimed, o.published, o.lags),
                Err(e) => {
                    eprintln!("poll: {e}");
                    (0, 0, Vec::new())
                }
            },
            Capture::Cdc(r) => match r.relay_once().await {
                Ok(o) => (o.transactions, o.published, o.lags),
                Err(e) => {
                    eprintln!("relay: {e}");
                    (0, 0, Vec::new())
                }
            },
        }
    }
}

fn pct(sorted: &[Duration], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1].as_micros()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let schema = format!("kbench_{}", uuid::Uuid::new_v4().simple())
        .chars()
        .take(30)
        .collect::<String>();
    let store = PostgresEventStore::connect(
        &args.database_url,
        EventStoreConfig {
            outbox: args.method == Method::Outbox,
            ..EventStoreConfig::with_schema(&schema)
        },
    )
    .await?;
    store.migrate().await?;

    let mock;
    let bootstrap = match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        Ok(b) if !b.is_empty() => b,
        _ => {
            mock = rdkafka::mocking::MockCluster::new(1)?;
            mock.create_topic(&format!("{schema}.account.events"), args.partitions, 1)?;
            mock.bootstrap_servers()
        }
    };
    let topics = TopicNaming::new(format!("{schema}.{{stream_type}}.events"));
    let topic = topics.topic_for("account");
    let publisher = Arc::new(KafkaPublisher::new(&PublisherConfig {
        bootstrap_servers: bootstrap.clone(),
        topics,
        ..PublisherConfig::default()
    })?);
    let slot = format!("{schema}_slot");
    let capture = Arc::new(match args.method {
        Method::Outbox => {
            let p = OutboxPoller::new(
                store.pool().clone(),
                publisher.clone(),
                OutboxConfig::with_schema(&schema),
            )?;
            p.migrate().await?;
            Capture::Outbox(p)
        }
        Method::Cdc => {
            let r = CdcRelay::new(store.pool().clone(), publisher.clone(), CdcConfig::new(&schema, &slot))?;
            r.ensure_slot().await?;
            Capture::Cdc(r)
        }
    });

    // Setup, not timed: open the accounts and publish them.
    let ids: Vec<StreamId> = (0..args.accounts).map(|i| StreamId::from(format!("acc-{i}"))).collect();
    for id in &ids {
        store
            .append(
                "account",
                id,
                ExpectedVersion::NoStream,
                vec![NewEvent::new("AccountOpened", json!({"balance": "1000.00"}))],
            )
            .await?;
    }
    let mut setup_published = 0;
    while setup_published < args.accounts {
        setup_published += capture.round().await.1;
    }

    // Timed phase: workers append while the capture publishes.
    let done = Arc::new(AtomicBool::new(false));
    let conflicts = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<Instant>();
    let backlog = args.backlog;
    let publisher_task = {
        let (capture, done) = (capture.clone(), done.clone());
        tokio::spawn(async move {
            let publish_start = if backlog {
                go_rx.await.unwrap_or_else(|_| Instant::now())
            } else {
                started
            };
            let (mut published, mut lags, mut last_ack) = (0usize, Vec::new(), Instant::now());
            loop {
                let finished = done.load(Ordering::Acquire);
                let (claimed, n, l) = capture.round().await;
                if n > 0 {
                    last_ack = Instant::now();
                }
                published += n;
                lags.extend(l);
                if claimed == 0 {
                    if finished {
                        return (published, lags, last_ack - publish_start);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    append_phase(&store, &ids, args.concurrency, args.ops_per_worker, 0, &conflicts).await?;
    let appended_secs = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Release);
    let _ = go_tx.send(Instant::now());
    let (mut published, mut lags, publish_time) = publisher_task.await?;
    let secs = publish_time.as_secs_f64();
    // Drain/refill cycles: the same load again, drained with the dead rows
    // of the cycles before it still in the table and its indexes.
    let mut cycles = vec![json!({"published": published, "secs": secs, "per_sec": published as f64 / secs})];
    for cycle in 1..=if backlog { args.refills } else { 0 } {
        append_phase(&store, &ids, args.concurrency, args.ops_per_worker, cycle, &conflicts).await?;
        let t = Instant::now();
        let (mut n, mut last_ack) = (0usize, Instant::now());
        loop {
            let (claimed, p, _) = capture.round().await;
            if p > 0 {
                last_ack = Instant::now();
            }
            n += p;
            if claimed == 0 {
                break;
            }
        }
        let secs = (last_ack - t).as_secs_f64();
        published += n;
        cycles.push(json!({"published": n, "secs": secs, "per_sec": n as f64 / secs}));
    }
    lags.sort();
    if backlog {
        lags.clear();
    }
    let ops = args.concurrency * args.ops_per_worker * (1 + if backlog { args.refills } else { 0 });
    let events_in_store: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.events"))
        .fetch_one(store.pool())
        .await?;
    println!(
        "{}",
        json!({
            "system": format!("es-kafka/{}", match args.method { Method::Outbox => "outbox_poller", Method::Cdc => "cdc_builtin" }),
            "scenario": if backlog { "uniform_backlog" } else { "uniform" }, "mix": "deposit", "accounts": args.accounts, "concurrency": args.concurrency,
            "ops": ops, "accepted": ops, "rejected": 0, "conflict_retries": conflicts.load(Ordering::Relaxed),
            "append_secs": appended_secs, "append_ops_per_sec": ops as f64 / appended_secs,
            "published": published, "publish_secs": secs, "published_per_sec": published as f64 / secs,
            "lag_p50_us": pct(&lags, 50.0), "lag_p90_us": pct(&lags, 90.0), "lag_p99_us": pct(&lags, 99.0),
            "lag_max_us": lags.last().map_or(0, Duration::as_micros), "events_in_store": events_in_store,
            "drain_cycles": cycles,
            "kafka": if std::env::var("KAFKA_BOOTSTRAP_SERVERS").is_ok() { "broker" } else { "mock_cluster" },
        })
    );

    // Verification: the topic holds every stored event, each stream in order.
    let ok = verify(&bootstrap, &topic, events_in_store as usize).await;
    if let Capture::Cdc(r) = &*capture {
        r.drop_slot().await?;
    }
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(store.pool())
        .await?;
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

/// `concurrency` workers each append `ops` deposits to random accounts
/// (read the version, append, retry on conflict).
async fn append_phase(
    store: &PostgresEventStore,
    ids: &[StreamId],
    concurrency: usize,
    ops: usize,
    cycle: usize,
    conflicts: &Arc<AtomicU64>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let (store, ids, conflicts) = (store.clone(), ids.to_vec(), conflicts.clone());
        workers.push(tokio::spawn(async move {
            let mut rng = fastrand_like((cycle * concurrency + w) as u64 + 1);
            for _ in 0..ops {
                let id = &ids[(rng() % ids.len() as u64) as usize];
                let cents = 100 + rng() % 9901;
                loop {
                    let v = store.stream_version(id).await?;
                    let e = NewEvent::new(
                        "MoneyDeposited",
                        json!({"amount": format!("{}.{:02}", cents / 100, cents % 100)}),
                    );
                    match store.append("account", id, ExpectedVersion::Exact(v), vec![e]).await {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok::<(), StoreError>(())
        }));
    }
    for w in workers {
        w.await??;
    }
    Ok(())
}

/// A tiny xorshift generator (the workload needs no cryptographic randomness).
fn fastrand_like(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

#[allow(clippy::unused_async, reason = "called like the other async steps of the run")]
async fn verify(bootstrap: &str, topic: &str, expected: usize) -> bool {
    let consumer: BaseConsumer = match ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kbench-verify")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("verify: {e}");
            return false;
        }
    };
    let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) else {
        return false;
    };
    let mut tpl = TopicPartitionList::new();
    let mut total = 0;
    for p in md.topics()[0].partitions() {
        let Ok((_, high)) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10)) else {
            return false;
        };
        total += high;
        let _ = tpl.add_partition_offset(topic, p.id(), Offset::Beginning);
    }
    if consumer.assign(&tpl).is_err() {
        return false;
    }
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    let (mut read, mut distinct, mut bad) = (0, 0, 0);
    while read < total {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => {
                read += 1;
                let Ok(e) = decode_envelope(m.payload().unwrap_or_default()) else {
                    bad += 1;
                    continue;
                };
                let l = last.entry(e.stream_id.to_string()).or_insert(0);
                if e.version == *l + 1 {
                    *l = e.version;
                    distinct += 1;
                } else if e.version > *l + 1 {
                    bad += 1;
                }
            }
            _ => break,
        }
    }
    let ok = distinct == expected && bad == 0;
    eprintln!(
        "verify: {read} messages, {distinct} distinct in order, {bad} out of order, expected {expected}: {}",
        if ok { "OK" } else { "FAILED" }
    );
    ok
}
