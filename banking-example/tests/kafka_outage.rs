//! The server process publishing to Kafka through an outage, for both
//! capture methods: the real `banking-example` binary on PostgreSQL,
//! publishing to rdkafka's mock cluster (in this test process, reached over
//! TCP); deposits from 6 clients over 30 accounts; the broker is taken down
//! for 10 s under load and brought back. Every acknowledged event reaches
//! the topic in stream order, `/health/ready` says Kafka publishing is down
//! during the cut and up after it, and the backlog drains at 5,000 events/s
//! or faster (the bound below). Then SIGTERM with a backlog (broker down
//! again): the process exits within its grace period, and a process
//! restarted while the broker is still down reports the outage and the
//! wait (`es_kafka_seconds_since_last_publish`), then publishes what was
//! left once it is back. And with CDC, what the server commits
//! right after start-up is published even when an open write transaction
//! holds up the creation of the relay's replication slot.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{pg_env, ServerProcess};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const TOPIC: &str = "banking.account.events";
const PARTITIONS: i32 = 4;
const ACCOUNTS: usize = 30;
const CLIENTS: usize = 6;
/// Slowest acceptable drain, events per second (what the bound allows).
const MIN_DRAIN_RATE: f64 = 5_000.0;
/// Time before the drain can start: the producer reconnects with a
/// back-off capped at 1 s, the loop's own back-off after failed rounds is
/// capped at 1 s, and a round that gave up just before the restore leaves
/// its messages queued, so the next waits for them (up to the 2 s wait
/// set here) before it claims more; plus 11 s of
/// scheduling slack for a debug build on a loaded 2-core machine (a CI run
/// took 8.47 s against a bound of 8.38 s with 4 s). A stalled poller never
/// drains at all, so the guard still catches it.
const RECONNECT_ALLOWANCE: Duration = Duration::from_secs(15);
/// A hang guard for any wait (not a speed check).
const PATIENCE: Duration = Duration::from_secs(120);

/// Reads the topic in the background: (stream, version) with the instant
/// it arrived.
struct TopicReader {
    seen: Arc<Mutex<Vec<(String, u64, Instant)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TopicReader {
    fn start(bootstrap: &str) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("outage-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(TOPIC, p, Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                    let envelope: Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
                    let stream = envelope["stream_id"].as_str().unwrap_or_default().to_owned();
                    let version = envelope["version"].as_u64().unwrap_or_default();
                    s.lock().unwrap().push((stream, version, Instant::now()));
                }
            }
        });
        Self {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until every (stream, 1..=n) is on the topic; returns the
    /// instant the last missing one arrived and the messages in arrival
    /// order.
    async fn complete(&self, expected: &BTreeMap<String, u64>) -> (Instant, Vec<(String, u64)>) {
        let want: u64 = expected.values().sum();
        let deadline = Instant::now() + PATIENCE;
        loop {
            {
                let seen = self.seen.lock().unwrap();
                let mut have = HashSet::new();
                let mut last = None;
                for (s, v, at) in seen.iter() {
                    if expected.get(s).is_some_and(|n| *v >= 1 && v <= n) && have.insert((s.clone(), *v)) {
                        last = Some(*at);
                    }
                }
                if have.len() as u64 == want {
                    let order = seen.iter().map(|(s, v, _)| (s.clone(), *v)).collect();
                    return (last.unwrap_or_else(Instant::now), order);
                }
                assert!(
                    Instant::now() < deadline,
                    "{} of {want} events on the topic after waiting",
                    have.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TopicReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Per stream, the versions must appear in order (a repeat of an earlier
/// version, from an at-least-once retry, is allowed; a gap or a step back
/// to an unseen version is not).
fn assert_stream_order(order: &[(String, u64)]) {
    let mut high: BTreeMap<&str, u64> = BTreeMap::new();
    for (s, v) in order {
        let h = high.entry(s.as_str()).or_insert(0);
        assert!(*v <= *h + 1, "{s}: version {v} after {h}");
        *h = (*h).max(*v);
    }
}

/// Registers a user, opens `ACCOUNTS` accounts; returns the token and ids.
async fn open_accounts(http: &Client, base: &str) -> (String, Vec<String>) {
    let username = format!("u{}@outage.example", uuid::Uuid::new_v4().simple());
    let password = "correct horse battery staple";
    let r = http
        .post(format!("{base}/auth/register"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = http
        .post(format!("{base}/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for i in 0..ACCOUNTS {
        let r = http
            .post(format!("{base}/accounts"))
            .bearer_auth(&token)
            .header("x-client-id", "outage")
            .json(&json!({"owner_name": format!("owner {i}"), "initial_balance": 0}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    (token, ids)
}

/// Deposits from `CLIENTS` clients, about 1,000 requests/s in all, until
/// `stop`; returns the deposits acknowledged per account. Every deposit
/// carries an Idempotency-Key and is retried with it until it has an answer.
async fn deposit_until(http: Client, base: String, token: String, ids: Vec<String>, stop: Arc<AtomicBool>) -> Vec<u64> {
    let acked: Arc<Vec<AtomicU64>> = Arc::new(ids.iter().map(|_| AtomicU64::new(0)).collect());
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (http, base, token, ids, stop, acked) = (
            http.clone(),
            base.clone(),
            token.clone(),
            ids.clone(),
            Arc::clone(&stop),
            Arc::clone(&acked),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = c;
            let mut tick = tokio::time::interval(Duration::from_millis(CLIENTS as u64));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let i = n % ids.len();
                n += CLIENTS;
                let key = uuid::Uuid::new_v4().to_string();
                loop {
                    let r = http
                        .post(format!("{base}/accounts/{}/deposit", ids[i]))
                        .bearer_auth(&token)
                        .header("x-client-id", format!("c{c}"))
                        .header("idempotency-key", &key)
                        .json(&json!({"amount": 1}))
                        .send()
                        .await;
                    match r.map(|r| r.status()) {
                        Ok(StatusCode::OK) => {
                            acked[i].fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Ok(s) => panic!("deposit answered {s}"),
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    acked.iter().map(|a| a.load(Ordering::Relaxed)).collect()
}

async fn readiness(http: &Client, base: &str) -> (StatusCode, Value) {
    let r = http.get(format!("{base}/health/ready")).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// The operations listener's `/metrics` text.
async fn scrape(http: &Client, admin: &str) -> String {
    http.get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Polls `/health/ready` until the `kafka_publishing` component is `want`.
async fn publishing_becomes(http: &Client, base: &str, want: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = readiness(http, base).await;
        let component = &body["components"]["kafka_publishing"];
        if component["status"] == want {
            let expected = if want == "up" {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            if status == expected {
                return component.clone();
            }
        }
        assert!(Instant::now() < deadline, "kafka_publishing never {want}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a scenario publishes through: a mock broker with the topic, a
/// reader of the topic, and the server's environment (its own schema,
/// publishing with `method` to that broker, its own replication slot).
struct Publishing {
    mock: MockCluster<'static, DefaultProducerContext>,
    reader: TopicReader,
    env: Vec<(&'static str, String)>,
    slot: String,
    http: Client,
}

impl Publishing {
    async fn set_up(method: &str, slot_prefix: &str) -> Self {
        common::pg::ensure_database().await;
        let mock: MockCluster<'static, DefaultProducerContext> = MockCluster::new(1).unwrap();
        mock.create_topic(TOPIC, PARTITIONS, 1).unwrap();
        let bootstrap = mock.bootstrap_servers();
        let slot = format!("{slot_prefix}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut env = pg_env(&common::pg::schema());
        env.extend([
            ("KAFKA_BROKERS", bootstrap.clone()),
            ("DATA_CAPTURE_METHOD", method.to_owned()),
            ("CDC_SLOT_NAME", slot.clone()),
        ]);
        let reader = TopicReader::start(&bootstrap);
        Self {
            mock,
            reader,
            env,
            slot,
            http: Client::new(),
        }
    }
}

async fn outage_scenario(method: &str) {
    let Publishing {
        mock,
        reader,
        mut env,
        slot,
        http,
    } = Publishing::set_up(method, "es_outage").await;
    env.extend([
        ("KAFKA_MESSAGE_TIMEOUT_MS", "2000".to_owned()),
        ("PUBLISH_UNHEALTHY_AFTER_ROUNDS", "2".to_owned()),
        ("SHUTDOWN_GRACE_SECS", "2".to_owned()),
    ]);
    let mut server = ServerProcess::start(&env).await;
    publishing_becomes(&http, &server.admin, "up").await;
    let (token, ids) = open_accounts(&http, &server.base).await;

    // Load, then the cut under load, then the load goes on a little.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(deposit_until(
        http.clone(),
        server.base.clone(),
        token.clone(),
        ids.clone(),
        Arc::clone(&stop),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    mock.broker_down(1).unwrap();
    let cut = Instant::now();
    let down = publishing_becomes(&http, &server.admin, "down").await;
    assert!(
        down["details"]["last_error"].is_string(),
        "the reason is reported: {down}"
    );
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(cut.elapsed())).await;
    let (_, ready) = readiness(&http, &server.admin).await;
    let backlog = &ready["components"]["kafka_publishing"]["details"];
    let backlog_events = backlog["backlog_events"]
        .as_u64()
        .or_else(|| backlog["lag_events"].as_u64())
        .unwrap_or(0);
    mock.broker_up(1).unwrap();
    let restored = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let acked = load.await.unwrap();
    let load_stopped = Instant::now();

    // Account i: AccountCreated (version 1) and its acknowledged deposits.
    let expected: BTreeMap<String, u64> = ids.iter().zip(&acked).map(|(id, n)| (id.clone(), 1 + n)).collect();
    let total: u64 = expected.values().sum();
    let (complete_at, order) = reader.complete(&expected).await;
    assert_stream_order(&order);
    let drained_in = complete_at.saturating_duration_since(restored);
    let bound = RECONNECT_ALLOWANCE
        + load_stopped.saturating_duration_since(restored)
        + Duration::from_secs_f64(total as f64 / MIN_DRAIN_RATE);
    eprintln!(
        "{method}: {total} events ({} deposits), backlog at restore {backlog_events}, complete {:.2} s after the broker came back (bound {:.2} s), {:.2} s after the load stopped",
        total - ACCOUNTS as u64,
        drained_in.as_secs_f64(),
        bound.as_secs_f64(),
        complete_at.saturating_duration_since(load_stopped).as_secs_f64()
    );
    assert!(drained_in <= bound, "drained in {drained_in:?}, bound {bound:?}");
    publishing_becomes(&http, &server.admin, "up").await;
    let metrics = scrape(&http, &server.admin).await;
    assert!(
        metrics.contains("es_kafka_failed_rounds_total"),
        "failed rounds are counted"
    );
    assert!(metrics.contains("es_kafka_seconds_since_last_publish"));

    // SIGTERM with a backlog: broker down again, a few more deposits.
    mock.broker_down(1).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let more = tokio::spawn(deposit_until(
        http.clone(),
        server.base.clone(),
        token.clone(),
        ids.clone(),
        Arc::clone(&stop),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let more = more.await.unwrap();
    let took = server.terminate(PATIENCE).await;
    // Grace 2 s for requests + 2 s for the publishing round, plus start-up
    // of the shutdown on a loaded machine.
    assert!(took < Duration::from_secs(15), "exit took {took:?} after SIGTERM");

    // Restarted while the broker is still down: the new process, which has
    // published nothing yet, reports the outage and how long it has been
    // waiting, then publishes what was left once the broker is back.
    let server = ServerProcess::start(&env).await;
    publishing_becomes(&http, &server.admin, "down").await;
    let metrics = scrape(&http, &server.admin).await;
    let waiting = metrics
        .lines()
        .filter(|l| l.starts_with("es_kafka_seconds_since_last_publish"))
        .filter_map(common::metrics::parse_sample)
        .map(|(_, _, v)| v)
        .fold(0.0, f64::max);
    assert!(waiting > 0.0, "the wait since start-up is reported: {metrics}");
    mock.broker_up(1).unwrap();
    let expected: BTreeMap<String, u64> = expected
        .iter()
        .zip(&more)
        .map(|((id, n), m)| (id.clone(), n + m))
        .collect();
    let (_, order) = reader.complete(&expected).await;
    assert_stream_order(&order);
    drop(server);
    if method == "cdc_debezium" {
        drop_slot(&slot).await;
    }
}

/// One test, the two methods one after the other: each runs a server
/// under load, and two at once would measure each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_capture_methods_publish_everything_through_a_broker_outage() {
    outage_scenario("outbox_poller").await;
    outage_scenario("cdc_debezium").await;
}

/// Drops a test's replication slot (the killed process's backend may hold
/// it for a moment).
async fn drop_slot(slot: &str) {
    let pool = sqlx::PgPool::connect(&common::pg::database_url()).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(slot)
        .execute(&pool)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "slot {slot} stays active");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The relay decodes only what commits after its slot was created, and
/// creating the slot waits for every write transaction running on the
/// cluster. The server must not take a command before the slot exists:
/// here a write transaction stays open for 3 s while the server starts.
/// Had the server answered meanwhile, accounts are opened at once (their
/// events commit before the slot exists); otherwise once it answers.
/// Either way every account's first event must reach the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cdc_publishes_what_the_server_takes_right_after_start_up() {
    let Publishing {
        mock: _mock,
        reader,
        env,
        slot,
        http,
    } = Publishing::set_up("cdc_debezium", "es_startup").await;

    let pool = sqlx::PgPool::connect(&common::pg::database_url()).await.unwrap();
    let mut open = pool.begin().await.unwrap();
    sqlx::query("SELECT txid_current()").execute(&mut *open).await.unwrap();
    let starting = tokio::spawn(async move { ServerProcess::start(&env).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (server, ids) = if starting.is_finished() {
        let server = starting.await.unwrap();
        let (_, ids) = open_accounts(&http, &server.base).await;
        open.rollback().await.unwrap();
        (server, ids)
    } else {
        open.rollback().await.unwrap();
        let server = starting.await.unwrap();
        let (_, ids) = open_accounts(&http, &server.base).await;
        (server, ids)
    };
    let expected: BTreeMap<String, u64> = ids.iter().map(|id| (id.clone(), 1)).collect();
    reader.complete(&expected).await;
    drop(server);
    drop_slot(&slot).await;
}
